//! The records the store keeps: a run's configuration and its row in the runs table.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Sequence length assumed when neither the log nor the config gives one (Step Law's).
pub const DEFAULT_SEQ_LEN: i64 = 2048;

/// A run's configuration. Every field is optional: sources fill in what they know,
/// later sources overriding earlier ones, and [`RunConfig::derive`] completes the rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "N")]
    pub n_params: Option<i64>,
    #[serde(rename = "D")]
    pub tokens: Option<i64>,
    pub lr: Option<f64>,
    pub bs: Option<i64>,
    pub seq_len: Option<i64>,
    pub bs_tokens: Option<i64>,
    pub steps: Option<i64>,
    pub lr_min: Option<f64>,
    pub h: Option<i64>,
    pub ffnh: Option<i64>,
    pub numh: Option<i64>,
    pub numl: Option<i64>,
    pub n_experts: Option<i64>,
    pub top_k: Option<i64>,
    pub recipe: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The canonical configuration fields and the names other tools give them
/// (Megatron, Hugging Face, nanoGPT, Step Law run names).
const FIELD_ALIASES: &[(&str, &[&str])] = &[
    ("N", &["n", "n_params", "num_params", "non_embedding_params"]),
    ("D", &["d", "train_tokens", "tokens", "num_tokens", "data_size"]),
    ("lr", &["learning_rate", "peak_lr", "max_lr", "lr_max"]),
    ("bs", &["global_batch_size", "gbs", "batch_size", "global_batch"]),
    (
        "seq_len",
        &["seq_length", "max_seq_len", "block_size", "sequence_length", "seq"],
    ),
    ("bs_tokens", &["batch_tokens", "tokens_per_batch"]),
    (
        "steps",
        &[
            "train_iters",
            "max_steps",
            "total_steps",
            "ti",
            "num_iterations",
            "max_iters",
            "iters",
        ],
    ),
    ("lr_min", &["min_lr", "mlr", "min_learning_rate", "lr_final"]),
    ("h", &["hidden_size", "d_model", "n_embd", "hidden_dim", "dim"]),
    ("ffnh", &["ffn_hidden_size", "intermediate_size", "d_ff", "ffn_dim"]),
    ("numh", &["num_attention_heads", "n_head", "n_heads", "num_heads"]),
    ("numl", &["num_layers", "num_hidden_layers", "n_layer", "n_layers"]),
    (
        "n_experts",
        &[
            "num_experts",
            "num_local_experts",
            "n_routed_experts",
            "moe_num_experts",
        ],
    ),
    (
        "top_k",
        &["moe_router_topk", "num_experts_per_tok", "topk", "moe_top_k"],
    ),
    ("recipe", &["data_recipe", "dataset", "data"]),
];

/// The canonical name of a configuration key, if it is one the runs table has a column for.
pub fn canonical_field(key: &str) -> Option<&'static str> {
    FIELD_ALIASES.iter().find_map(|(canon, aliases)| {
        let hit = *canon == key || aliases.iter().any(|a| a.eq_ignore_ascii_case(key));
        hit.then_some(*canon)
    })
}

fn parse_int(field: &str, value: &str) -> Result<i64> {
    let v = value.trim();
    if let Ok(i) = v.parse::<i64>() {
        return Ok(i);
    }
    // Counts are often written as floats ("1e11", "2.0e10").
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
        _ => Err(Error::Invalid(format!(
            "field '{field}': expected an integer, got '{value}'"
        ))),
    }
}

fn parse_float(field: &str, value: &str) -> Result<f64> {
    value
        .trim()
        .parse::<f64>()
        .map_err(|_| Error::Invalid(format!("field '{field}': expected a number, got '{value}'")))
}

impl RunConfig {
    /// Set a field from its text form. A known field (under any alias) is parsed and checked;
    /// an unknown key goes to `tags` when `keep_unknown` is set and is otherwise ignored.
    pub fn set(&mut self, key: &str, value: &str, keep_unknown: bool) -> Result<()> {
        let Some(field) = canonical_field(key) else {
            if keep_unknown {
                self.tags.insert(key.to_string(), value.to_string());
            }
            return Ok(());
        };
        match field {
            "lr" => self.lr = Some(parse_float(field, value)?),
            "lr_min" => self.lr_min = Some(parse_float(field, value)?),
            "recipe" => self.recipe = Some(value.to_string()),
            _ => {
                let v = parse_int(field, value)?;
                *self.int_field(field) = Some(v);
            }
        }
        Ok(())
    }

    fn int_field(&mut self, field: &str) -> &mut Option<i64> {
        match field {
            "N" => &mut self.n_params,
            "D" => &mut self.tokens,
            "bs" => &mut self.bs,
            "seq_len" => &mut self.seq_len,
            "bs_tokens" => &mut self.bs_tokens,
            "steps" => &mut self.steps,
            "h" => &mut self.h,
            "ffnh" => &mut self.ffnh,
            "numh" => &mut self.numh,
            "numl" => &mut self.numl,
            "n_experts" => &mut self.n_experts,
            "top_k" => &mut self.top_k,
            other => unreachable!("not an integer field: {other}"),
        }
    }

    /// Overlay `other` on `self`: every field `other` knows replaces ours.
    pub fn merge_from(&mut self, other: &RunConfig) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f.clone(); } )* };
        }
        take!(
            n_params, tokens, lr, bs, seq_len, bs_tokens, steps, lr_min, h, ffnh, numh, numl, n_experts, top_k, recipe
        );
        for (k, v) in &other.tags {
            self.tags.insert(k.clone(), v.clone());
        }
    }

    /// Fill in what follows from the rest: N from the dense shape, batch in tokens,
    /// and D from steps x batch tokens. Explicit values are never overwritten. A product
    /// that does not fit an i64 is an error naming the fields, never a wrapped value.
    pub fn derive(&mut self, default_seq_len: i64) -> Result<()> {
        if self.seq_len.is_none() {
            self.seq_len = Some(default_seq_len);
        }
        if self.n_params.is_none() {
            if let (Some(h), Some(ffnh), Some(numl)) = (self.h, self.ffnh, self.numl) {
                // Q, K, V, O (4 h^2) and a SwiGLU FFN (3 h ffnh) per layer; no embeddings.
                let per_layer = h
                    .checked_mul(h)
                    .and_then(|hh| hh.checked_mul(4))
                    .zip(h.checked_mul(ffnh).and_then(|x| x.checked_mul(3)))
                    .and_then(|(a, b)| a.checked_add(b));
                self.n_params = Some(per_layer.and_then(|p| p.checked_mul(numl)).ok_or_else(|| {
                    overflow(
                        "N = numl x (4 h^2 + 3 h ffnh)",
                        &[("h", h), ("ffnh", ffnh), ("numl", numl)],
                    )
                })?);
            }
        }
        if self.bs_tokens.is_none() {
            if let (Some(bs), Some(seq)) = (self.bs, self.seq_len) {
                let bt = bs
                    .checked_mul(seq)
                    .ok_or_else(|| overflow("bs_tokens = bs x seq_len", &[("bs", bs), ("seq_len", seq)]))?;
                self.bs_tokens = Some(bt);
            }
        }
        if self.bs.is_none() {
            if let (Some(bt), Some(seq)) = (self.bs_tokens, self.seq_len) {
                if seq > 0 && bt % seq == 0 {
                    self.bs = Some(bt / seq);
                }
            }
        }
        if self.tokens.is_none() {
            if let (Some(steps), Some(bt)) = (self.steps, self.bs_tokens) {
                let d = steps
                    .checked_mul(bt)
                    .ok_or_else(|| overflow("D = steps x bs_tokens", &[("steps", steps), ("bs_tokens", bt)]))?;
                self.tokens = Some(d);
            }
        }
        Ok(())
    }

    /// The user's `--set key=value` overrides (and `--recipe`) as a config, checked: a
    /// value that does not parse, or a non-positive N, D, lr, batch or length, is an error.
    pub fn overrides(set: &[(String, String)], recipe: Option<&str>) -> Result<RunConfig> {
        let mut c = RunConfig::default();
        for (k, v) in set {
            c.set(k, v, true)
                .map_err(|e| Error::Invalid(format!("--set {k}={v}: {e}")))?;
        }
        if let Some(r) = recipe {
            c.recipe = Some(r.to_string());
        }
        c.check_positive().map_err(|e| Error::Invalid(format!("--set: {e}")))?;
        Ok(c)
    }

    /// Refuse values no run can have in the fields the analysis divides by or takes logs
    /// of: N, D, lr, bs, seq_len, bs_tokens and steps must be positive (a user's `--set`,
    /// checked before anything is read).
    pub fn check_positive(&self) -> Result<()> {
        let ints = [
            ("N", self.n_params),
            ("D", self.tokens),
            ("bs", self.bs),
            ("seq_len", self.seq_len),
            ("bs_tokens", self.bs_tokens),
            ("steps", self.steps),
        ];
        for (field, v) in ints {
            if let Some(v) = v.filter(|v| *v <= 0) {
                return Err(Error::Invalid(format!("field '{field}' must be positive, got {v}")));
            }
        }
        if let Some(lr) = self.lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
            return Err(Error::Invalid(format!(
                "field 'lr' must be a positive number, got {lr}"
            )));
        }
        Ok(())
    }
}

fn overflow(what: &str, values: &[(&str, i64)]) -> Error {
    let given: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Error::Invalid(format!("{what} does not fit a 64-bit integer ({})", given.join(", ")))
}

/// Size and modification time of one source file: the cheap part of a run's fingerprint,
/// enough to skip an unchanged file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
}

/// Run status, as the runs table spells it.
pub mod status {
    pub const COMPLETE: &str = "complete";
    pub const INCOMPLETE: &str = "incomplete";
    pub const DIVERGED: &str = "diverged";
    pub const SUMMARY_ONLY: &str = "summary-only";
}

/// One row of the runs table, plus what the store needs to keep it current.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: RunId,
    pub name: String,
    pub source: String,
    pub format: String,
    /// xxh3 of the run's source bytes (or of the imported row).
    pub fingerprint: String,
    #[serde(flatten)]
    pub config: RunConfig,
    pub n_points: u64,
    pub final_step: Option<i64>,
    /// Last finite training-loss value (raw), or the imported final loss.
    pub final_loss: Option<f64>,
    /// The smoothed final loss an imported summary table gives (Step Law's `smooth loss`).
    pub smooth_loss: Option<f64>,
    pub status: String,
    pub ingested_at_us: i64,
    pub n_malformed: u64,
    /// Segment file holding this run's points (None for summary-only runs).
    pub segment: Option<String>,
    pub files: Vec<FileStat>,
}

/// One curve of a run: steps ascending and unique; `tokens` empty or as long as `steps`.
#[derive(Debug, Clone, Copy)]
pub struct Curve<'a> {
    pub steps: &'a [i64],
    pub values: &'a [f64],
    pub tokens: &'a [i64],
}

/// A run's identity: a 63-bit hash, so it is a plain non-negative Int64 in every table
/// (integer ids keep the points table small and fast to write and join).
pub type RunId = i64;

/// The stable id of the run whose source key (absolute path, or table#name) is `key`.
pub fn run_id_for(key: &str) -> RunId {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) >> 1) as i64
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_n_d_and_batch_tokens_like_step_law() {
        let mut c = RunConfig::default();
        for (k, v) in [
            ("h", "960"),
            ("ffnh", "9368"),
            ("numl", "7"),
            ("bs", "736"),
            ("ti", "66342"),
        ] {
            c.set(k, v, false).unwrap();
        }
        c.derive(DEFAULT_SEQ_LEN).unwrap();
        assert_eq!(c.n_params, Some(214_663_680)); // the public CSV's N for this shape
        assert_eq!(c.bs_tokens, Some(736 * 2048));
        assert_eq!(c.tokens, Some(66342 * 736 * 2048));
    }

    #[test]
    fn aliases_and_unknown_keys() {
        let mut c = RunConfig::default();
        c.set("hidden_size", "1024", false).unwrap();
        c.set("train_tokens", "1e11", false).unwrap();
        c.set("color", "blue", true).unwrap();
        c.set("ignored", "x", false).unwrap();
        assert_eq!(c.h, Some(1024));
        assert_eq!(c.tokens, Some(100_000_000_000));
        assert_eq!(c.tags.get("color").map(String::as_str), Some("blue"));
        assert!(!c.tags.contains_key("ignored"));
        assert!(c.set("numl", "seven", false).is_err());
    }

    #[test]
    fn products_that_overflow_are_errors_naming_the_fields() {
        // 2^62 steps x 2048-token batches wrapped to a negative D before.
        let mut c = RunConfig {
            steps: Some(1 << 62),
            bs: Some(1),
            ..Default::default()
        };
        let e = c.derive(DEFAULT_SEQ_LEN).unwrap_err().to_string();
        assert!(
            e.contains("D = steps x bs_tokens") && e.contains("steps=4611686018427387904"),
            "{e}"
        );
        assert_eq!(c.tokens, None);
        let mut c = RunConfig {
            h: Some(1 << 40),
            ffnh: Some(4),
            numl: Some(2),
            ..Default::default()
        };
        assert!(c.derive(DEFAULT_SEQ_LEN).unwrap_err().to_string().contains("N = numl"));
        let mut c = RunConfig {
            bs: Some(i64::MAX / 2),
            ..Default::default()
        };
        assert!(c
            .derive(DEFAULT_SEQ_LEN)
            .unwrap_err()
            .to_string()
            .contains("bs_tokens = bs x seq_len"));
    }

    #[test]
    fn non_positive_values_are_refused_by_check_positive() {
        for (k, v) in [
            ("N", "0"),
            ("D", "-5"),
            ("lr", "0"),
            ("lr", "-1e-3"),
            ("bs", "0"),
            ("seq_len", "-2048"),
        ] {
            let mut c = RunConfig::default();
            c.set(k, v, false).unwrap();
            let e = c.check_positive().unwrap_err().to_string();
            assert!(e.contains(&format!("'{k}'")) && e.contains("positive"), "{k}={v}: {e}");
        }
        let mut c = RunConfig::default();
        c.set("lr", "3e-4", false).unwrap();
        c.set("N", "1e8", false).unwrap();
        c.check_positive().unwrap();
    }
}
