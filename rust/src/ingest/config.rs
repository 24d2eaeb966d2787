//! A run's configuration from its name (a template), a sidecar config file, and the user's
//! overrides; and its status from its loss curve.
use std::path::Path;

use regex::Regex;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{canonical_field, status, RunConfig};
use crate::store::Series;

/// Sidecar files read for a run's configuration, in the order they are tried.
pub const SIDECARS: &[&str] = &["config.json", "config.yaml", "config.yml", "args.json", "hparams.yaml"];

/// How a run's name encodes its configuration.
#[derive(Debug, Clone)]
pub enum NameTemplate {
    /// Step Law names: `_`-separated tokens such as `h960`, `ffnh9368`, `numl7`,
    /// `lr3.453e-04`, `bs736`, `ti66342`, `mlr1.00e-05`, wherever they stand.
    StepLaw,
    /// A user's template such as `{*}_lr{lr}_bs{bs}_seed{seed}`: `{field}` captures a value
    /// (unknown fields become tags), `{*}` matches anything.
    Pattern(Regex),
}

/// Step Law's name tokens (prefix, field); longest prefixes first so `ffnh` is not `h`.
const STEP_LAW_TOKENS: &[(&str, &str)] = &[
    ("ffnh", "ffnh"),
    ("numh", "numh"),
    ("numl", "numl"),
    ("mlr", "lr_min"),
    ("seq", "seq_len"),
    ("lr", "lr"),
    ("bs", "bs"),
    ("ti", "steps"),
    ("h", "h"),
];

impl NameTemplate {
    pub fn parse(template: Option<&str>) -> Result<NameTemplate> {
        let Some(t) = template else {
            return Ok(NameTemplate::StepLaw);
        };
        if t == "steplaw" {
            return Ok(NameTemplate::StepLaw);
        }
        let mut re = String::from("^");
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            re.push_str(&regex::escape(&rest[..open]));
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| Error::Invalid(format!("name template '{t}': '{{' without '}}'")))?;
            let name = &rest[open + 1..open + close];
            if name == "*" {
                re.push_str(".*?");
            } else if !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
            {
                re.push_str(&format!("(?P<{name}>.+?)"));
            } else {
                return Err(Error::Invalid(format!(
                    "name template '{t}': bad field name '{{{name}}}'"
                )));
            }
            rest = &rest[open + close + 1..];
        }
        re.push_str(&regex::escape(rest));
        re.push('$');
        Regex::new(&re)
            .map(NameTemplate::Pattern)
            .map_err(|e| Error::Invalid(format!("name template '{t}': {e}")))
    }

    /// The configuration a name encodes (empty when it does not match).
    pub fn read(&self, name: &str) -> Result<RunConfig> {
        let mut c = RunConfig::default();
        match self {
            NameTemplate::StepLaw => {
                for token in name.split('_') {
                    for (prefix, field) in STEP_LAW_TOKENS {
                        if let Some(v) = token.strip_prefix(prefix) {
                            let v = name_number(v);
                            if v.parse::<f64>().is_ok() && v.starts_with(|ch: char| ch.is_ascii_digit()) {
                                c.set(field, &v, false)?;
                                break;
                            }
                        }
                    }
                }
            }
            NameTemplate::Pattern(re) => {
                if let Some(caps) = re.captures(name) {
                    for field in re.capture_names().flatten() {
                        if let Some(m) = caps.name(field) {
                            c.set(field, &name_number(m.as_str()), true)
                                .map_err(|e| Error::parse(format!("run name '{name}'"), e.to_string()))?;
                        }
                    }
                }
            }
        }
        Ok(c)
    }
}

/// A number as run names write it: `1em2` (a minus sign is awkward in names) is `1e-2`,
/// `3p5em4` is `3.5e-4`; anything else stays as it is.
fn name_number(v: &str) -> std::borrow::Cow<'_, str> {
    let Some((mantissa, exp)) = v.split_once("em") else {
        return v.into();
    };
    let mantissa = mantissa.replacen('p', ".", 1);
    let is_num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if is_num(&mantissa) && !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit()) {
        format!("{mantissa}e-{exp}").into()
    } else {
        v.into()
    }
}

/// A W&B config.yaml entry, `{desc: ..., value: ...}`, is its value.
fn unwrap_wandb(v: &Value) -> &Value {
    match v {
        Value::Object(m) if m.contains_key("value") && m.keys().all(|k| k == "value" || k == "desc") => &m["value"],
        _ => v,
    }
}

/// A config value as text: numbers and strings as they are, booleans `true` / `false`, a list
/// as its JSON; None for null and nested objects (whose keys are read one by one).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(_) => Some(v.to_string()),
        Value::Null | Value::Object(_) => None,
    }
}

/// A (possibly nested) config (a sidecar config.json / yaml, a W&B config) as a run's
/// configuration. A run field's key (any alias) is looked for at every depth, shallowest first,
/// and the first value found wins; every other key with a value is kept as a tag, its path
/// joined with '.' (`optimizer.beta2`; a deeper repeat of a field's key too, so nothing is
/// dropped). W&B's own `_wandb` entry (its versions and runtime) is no configuration. A value
/// a field cannot hold is passed to `bad` with its key's path, and the rest still read.
pub fn config_from_value(root: &Value, bad: impl FnMut(&str, Error)) -> RunConfig {
    match unwrap_wandb(root) {
        Value::Object(map) => config_from_map(map, bad),
        _ => RunConfig::default(),
    }
}

/// [`config_from_value`] of a config that is a map.
pub fn config_from_map(root: &serde_json::Map<String, Value>, mut bad: impl FnMut(&str, Error)) -> RunConfig {
    let mut c = RunConfig::default();
    let mut seen = std::collections::HashSet::new();
    let mut level: Vec<(String, &serde_json::Map<String, Value>)> = vec![(String::new(), root)];
    while !level.is_empty() {
        let mut next = Vec::new();
        for (prefix, map) in level {
            for (k, v) in map {
                if prefix.is_empty() && k == "_wandb" {
                    continue;
                }
                let v = unwrap_wandb(v);
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (canonical_field(k), scalar_text(v)) {
                    (Some(field), Some(text)) if seen.insert(field) => {
                        if let Err(e) = c.set(field, &text, false) {
                            bad(&path, e);
                        }
                    }
                    (_, Some(text)) => {
                        c.tags.insert(path, text);
                    }
                    (_, None) => {
                        if let Value::Object(m) = v {
                            next.push((path, m));
                        }
                    }
                }
            }
        }
        level = next;
    }
    c
}

/// The first sidecar config file in the first of `dirs` that has one.
pub fn sidecar_path(dirs: &[&Path]) -> Option<std::path::PathBuf> {
    dirs.iter()
        .find_map(|d| SIDECARS.iter().map(|n| d.join(n)).find(|p| p.is_file()))
}

/// Read the first sidecar config found in `dir`, if any.
pub fn read_sidecar(dir: &Path) -> Result<Option<(RunConfig, std::path::PathBuf)>> {
    for name in SIDECARS {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let value: Value = if name.ends_with(".json") {
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::parse(format!("{}:{}", path.display(), e.line()), format!("invalid JSON: {e}")))?
        } else {
            // serde-saphyr: linear time and bounded depth on any input (serde_yaml, deprecated,
            // took minutes on a 200 KB nested file, holding the store's lock meanwhile).
            serde_saphyr::from_slice(&bytes)
                .map_err(|e| Error::parse(path.display().to_string(), format!("invalid YAML: {e}")))?
        };
        let mut first_bad = None;
        let config = config_from_value(&value, |key, e| {
            first_bad.get_or_insert_with(|| Error::parse(format!("{}: key '{key}'", path.display()), e.to_string()));
        });
        return match first_bad {
            Some(e) => Err(e),
            None => Ok(Some((config, path))),
        };
    }
    Ok(None)
}

/// complete / incomplete / diverged, from the training-loss series and the planned steps.
///
/// Diverged: a NaN or infinite loss anywhere, a tail (median of the last five points)
/// above 1.5x the lowest loss reached (the run gave back most of what it learned), or a last
/// point above 3x it (a blow-up at the very end still ruins the final loss).
/// Incomplete: the last step is more than one log interval short of the planned steps
/// (Step Law's rule). Without planned steps a run counts as complete.
/// A negative loss is no cross-entropy (a summed or shifted quantity taken for the loss):
/// such a run is never complete; it counts as diverged (left out of the analysis).
pub fn run_status(loss: &Series, planned_steps: Option<i64>) -> &'static str {
    if loss.values.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return status::DIVERGED;
    }
    let min = loss.values.iter().copied().fold(f64::INFINITY, f64::min);
    let mut tail: Vec<f64> = loss.values[loss.len().saturating_sub(5)..].to_vec();
    tail.sort_by(|a, b| a.total_cmp(b));
    if let Some(&median) = tail.get(tail.len() / 2) {
        let last = loss.values[loss.len() - 1];
        if min > 0.0 && (median > 1.5 * min || last > 3.0 * min) {
            return status::DIVERGED;
        }
    }
    completion_status(loss, planned_steps)
}

/// complete / incomplete from the steps alone: for a run judged on a series that is no loss
/// (an eval-only export of accuracies, which rise), where a rise says nothing of divergence.
pub fn completion_status(series: &Series, planned_steps: Option<i64>) -> &'static str {
    let loss = series;
    let (Some(planned), Some(&last)) = (planned_steps, loss.steps.last()) else {
        return status::COMPLETE;
    };
    let interval = match loss.steps[..] {
        [a, b, ..] => b - a,
        _ => 0,
    };
    if last < planned - interval {
        status::INCOMPLETE
    } else {
        status::COMPLETE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_step_law_names() {
        let c = NameTemplate::StepLaw
            .read("step2v2_0618_h960_ffnh9368_numh15_numl7_lr3.453e-04_bs736_ti66342_mlr1.00e-05")
            .unwrap();
        assert_eq!(
            (c.h, c.ffnh, c.numh, c.numl),
            (Some(960), Some(9368), Some(15), Some(7))
        );
        assert_eq!(
            (c.lr, c.bs, c.steps, c.lr_min),
            (Some(3.453e-4), Some(736), Some(66342), Some(1e-5))
        );
    }

    #[test]
    fn wandb_and_hf_config_files() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "_wandb: {desc: null, value: {cli_version: 0.16.0}}\nlr: {desc: null, value: 0.0003}\nglobal_batch_size: {desc: null, value: 512}\n";
        std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
        let (c, _) = read_sidecar(dir.path()).unwrap().unwrap();
        assert_eq!((c.lr, c.bs), (Some(3e-4), Some(512)));
        std::fs::write(dir.path().join("config.json"), r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 24, "num_attention_heads": 16}"#).unwrap();
        let (c, _) = read_sidecar(dir.path()).unwrap().unwrap();
        assert_eq!(
            (c.h, c.ffnh, c.numl, c.numh),
            (Some(2048), Some(5504), Some(24), Some(16))
        );
    }

    #[test]
    fn every_other_config_key_is_a_tag_nested_keys_joined_with_dots() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "_wandb: {desc: null, value: {cli_version: 0.16.0}}\nlr: {desc: null, value: 0.0003}\n\
                    moe_name: {desc: null, value: e8k1}\noptimizer: {desc: null, value: {name: adamw, beta2: 0.95, lr: 0.1}}\n\
                    use_bias: {value: false}\nwindows: [1, 2]\nnothing: null\n";
        std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
        let (c, _) = read_sidecar(dir.path()).unwrap().unwrap();
        assert_eq!(c.lr, Some(3e-4));
        let tags: Vec<(&str, &str)> = c.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            tags,
            [
                ("moe_name", "e8k1"),
                ("optimizer.beta2", "0.95"),
                ("optimizer.lr", "0.1"), // a deeper repeat of a field's key: kept, not the lr
                ("optimizer.name", "adamw"),
                ("use_bias", "false"),
                ("windows", "[1,2]"),
            ]
        );
        // a bad value of a field still names the file and the key's path
        std::fs::write(dir.path().join("config.json"), r#"{"model": {"num_layers": "many"}}"#).unwrap();
        let e = read_sidecar(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("model.num_layers"), "{e}");
    }

    #[test]
    fn pathological_yaml_is_an_error_naming_the_file_not_a_hang() {
        // 200 KB of nested flow sequences: serde_yaml's scanner took minutes (quadratic).
        let dir = tempfile::tempdir().unwrap();
        let n = 100_000;
        let yaml = format!("lr: {}{}\n", "[".repeat(n), "]".repeat(n));
        std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
        let e = read_sidecar(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.yaml") && e.contains("invalid YAML"), "{e}");
        // Deep block nesting under a generous limit still reads.
        let deep: String = (0..40)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect::<String>()
            + &"  ".repeat(40)
            + "lr: 0.001\n";
        std::fs::write(dir.path().join("config.yaml"), deep).unwrap();
        assert_eq!(read_sidecar(dir.path()).unwrap().unwrap().0.lr, Some(1e-3));
    }

    #[test]
    fn user_templates_capture_fields_and_tags() {
        let t = NameTemplate::parse(Some("{*}-lr{lr}-bs{bs}-seed{seed}")).unwrap();
        let c = t.read("gpt2-small-lr0.001-bs64-seed3").unwrap();
        assert_eq!((c.lr, c.bs), (Some(0.001), Some(64)));
        assert_eq!(c.tags["seed"], "3");
        assert!(NameTemplate::parse(Some("{lr")).is_err());
        // numbers as names write them (modded-nanogpt sweeps: lr1em2, b9em1)
        let t = NameTemplate::parse(Some("sh-{*}-lr{lr}-wd{wd}-b{beta}-{*}")).unwrap();
        let c = t
            .read("sh-origpinv-s3375-lr1em2-wd010-b9em1-ge15-record-130563a2")
            .unwrap();
        assert_eq!(c.lr, Some(1e-2));
        assert_eq!((c.tags["wd"].as_str(), c.tags["beta"].as_str()), ("010", "9e-1"));
        let c = NameTemplate::StepLaw.read("run_lr3p5em4_bs128").unwrap();
        assert_eq!((c.lr, c.bs), (Some(3.5e-4), Some(128)));
        assert_eq!(name_number("gem2"), "gem2");
        assert_eq!(name_number("1em"), "1em");
        let bad = NameTemplate::parse(Some("lr{lr}")).unwrap();
        assert!(bad.read("lrfast").is_err());
    }

    fn series(values: &[f64]) -> Series {
        Series {
            steps: (1..=values.len() as i64).map(|s| s * 10).collect(),
            values: values.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(run_status(&series(&[5.0, 4.0, 3.0]), Some(30)), status::COMPLETE);
        assert_eq!(run_status(&series(&[5.0, 4.0, 3.0]), Some(40)), status::COMPLETE); // one interval short
        assert_eq!(run_status(&series(&[5.0, 4.0, 3.0]), Some(100)), status::INCOMPLETE);
        assert_eq!(run_status(&series(&[5.0, f64::NAN, 3.0]), None), status::DIVERGED);
        assert_eq!(run_status(&series(&[5.0, 4.0, -0.5]), None), status::DIVERGED);
        // an accuracy rises: no divergence, only completeness
        let acc = series(&[0.1, 0.3, 0.5, 0.6, 0.7]);
        assert_eq!(completion_status(&acc, Some(50)), status::COMPLETE);
        assert_eq!(completion_status(&acc, Some(100)), status::INCOMPLETE);
        assert_eq!(
            run_status(&series(&[9.0, 3.0, 2.5, 6.0, 7.0, 7.5]), None),
            status::DIVERGED
        );
    }
}
