//! The records the store keeps: a run's configuration and its row in the runs table.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Sequence length assumed when neither the log nor the config gives one (Step Law's).
pub const DEFAULT_SEQ_LEN: i64 = 2048;

/// How a configuration field is stored: its Parquet / Polars type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Int,
    Float,
    Text,
}

impl FieldKind {
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Int => "int",
            FieldKind::Float => "float",
            FieldKind::Text => "text",
        }
    }
}

/// One configuration field of a run: its column name, type, unit, the names other tools give
/// it (matched case-insensitively) and what it means.
#[derive(Debug, Clone, Copy)]
pub struct ConfigField {
    pub name: &'static str,
    pub kind: FieldKind,
    pub unit: &'static str,
    pub aliases: &'static [&'static str],
    pub doc: &'static str,
}

/// A field's value, whatever its type.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Int(i64),
    Float(f64),
    Text(String),
}

/// The Rust types a configuration field can have: how its text form is parsed.
pub trait FieldType: Sized + Clone {
    const KIND: FieldKind;
    fn parse(field: &str, text: &str) -> Result<Self>;
    fn value(self) -> FieldValue;
}

impl FieldType for i64 {
    const KIND: FieldKind = FieldKind::Int;
    fn parse(field: &str, text: &str) -> Result<Self> {
        parse_int(field, text)
    }
    fn value(self) -> FieldValue {
        FieldValue::Int(self)
    }
}

impl FieldType for f64 {
    const KIND: FieldKind = FieldKind::Float;
    fn parse(field: &str, text: &str) -> Result<Self> {
        parse_float(field, text)
    }
    fn value(self) -> FieldValue {
        FieldValue::Float(self)
    }
}

impl FieldType for String {
    const KIND: FieldKind = FieldKind::Text;
    fn parse(_field: &str, text: &str) -> Result<Self> {
        Ok(text.to_string())
    }
    fn value(self) -> FieldValue {
        FieldValue::Text(self)
    }
}

/// Declares the configuration fields once: the `RunConfig` struct (serialised under the column
/// names), `CONFIG_FIELDS` (name, type, unit, aliases, doc: the runs table's configuration
/// columns, the names readers and sidecar configs are matched against, `sl.RUN_FIELDS` in
/// Python), and the code that sets, reads, tests and merges them by name.
macro_rules! config_fields {
    ($( $field:ident: $ty:ty => $name:literal, unit $unit:literal, aliases [$($alias:literal),* $(,)?], $doc:literal; )*) => {
        /// A run's configuration. Every field is optional: sources fill in what they know,
        /// later sources overriding earlier ones, and [`RunConfig::derive`] completes the rest.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct RunConfig {
            $(
                #[doc = $doc]
                #[serde(rename = $name)]
                pub $field: Option<$ty>,
            )*
            /// Configuration keys that are no run field, as text (typed columns in Python).
            #[serde(default)]
            pub tags: BTreeMap<String, String>,
        }

        /// Every configuration field of a run, in the runs table's column order.
        pub const CONFIG_FIELDS: &[ConfigField] = &[
            $( ConfigField { name: $name, kind: <$ty as FieldType>::KIND, unit: $unit, aliases: &[$($alias),*], doc: $doc }, )*
        ];

        impl RunConfig {
            /// The value of the field whose column is `name` (None when unset or no field).
            pub fn get(&self, name: &str) -> Option<FieldValue> {
                match name {
                    $( $name => self.$field.clone().map(FieldType::value), )*
                    _ => None,
                }
            }

            /// Whether the field whose column is `name` has a value.
            pub fn is_set(&self, name: &str) -> bool {
                match name {
                    $( $name => self.$field.is_some(), )*
                    _ => false,
                }
            }

            /// Overlay `other` on `self`: every field `other` knows replaces ours.
            pub fn merge_from(&mut self, other: &RunConfig) {
                $( if other.$field.is_some() { self.$field = other.$field.clone(); } )*
                for (k, v) in &other.tags {
                    self.tags.insert(k.clone(), v.clone());
                }
            }

            /// Parse `text` into the field whose column is `name`.
            fn set_field(&mut self, name: &str, text: &str) -> Result<()> {
                match name {
                    $( $name => self.$field = Some(<$ty as FieldType>::parse(name, text)?), )*
                    other => return Err(Error::Invalid(format!("no configuration field '{other}'"))),
                }
                Ok(())
            }
        }
    };
}

config_fields! {
    n_params: i64 => "N", unit "parameters",
        aliases ["n", "n_params", "num_params", "non_embedding_params"],
        "Non-embedding parameters (Step Law's N; numl (4 h^2 + 3 h ffnh) for a dense SwiGLU model).";
    tokens: i64 => "D", unit "tokens",
        aliases ["d", "train_tokens", "tokens", "num_tokens", "data_size"],
        "Training tokens of the run's budget (steps x bs_tokens), not the tokens seen at a point.";
    lr: f64 => "lr", unit "learning rate",
        aliases ["learning_rate", "peak_lr", "max_lr", "lr_max"],
        "Peak learning rate.";
    bs: i64 => "bs", unit "sequences",
        aliases ["global_batch_size", "gbs", "batch_size", "global_batch"],
        "Global batch size in sequences (bs_tokens is the batch in tokens).";
    seq_len: i64 => "seq_len", unit "tokens",
        aliases ["seq_length", "max_seq_len", "block_size", "sequence_length", "seq"],
        "Sequence length (DEFAULT_SEQ_LEN when nothing gives one).";
    bs_tokens: i64 => "bs_tokens", unit "tokens",
        aliases ["batch_tokens", "tokens_per_batch"],
        "Global batch size in tokens (bs x seq_len).";
    steps: i64 => "steps", unit "steps",
        aliases ["train_iters", "max_steps", "total_steps", "ti", "num_iterations", "max_iters", "iters"],
        "Planned optimizer steps.";
    lr_min: f64 => "lr_min", unit "learning rate",
        aliases ["min_lr", "mlr", "min_learning_rate", "lr_final"],
        "Final (floor) learning rate of the decay.";
    h: i64 => "h", unit "",
        aliases ["hidden_size", "d_model", "n_embd", "hidden_dim", "dim"],
        "Hidden size.";
    ffnh: i64 => "ffnh", unit "",
        aliases ["ffn_hidden_size", "intermediate_size", "d_ff", "ffn_dim"],
        "FFN hidden size.";
    numh: i64 => "numh", unit "",
        aliases ["num_attention_heads", "n_head", "n_heads", "num_heads"],
        "Attention heads.";
    numl: i64 => "numl", unit "",
        aliases ["num_layers", "num_hidden_layers", "n_layer", "n_layers"],
        "Layers.";
    n_experts: i64 => "n_experts", unit "",
        aliases ["num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"],
        "Experts of a MoE model.";
    top_k: i64 => "top_k", unit "",
        aliases ["moe_router_topk", "num_experts_per_tok", "topk", "moe_top_k"],
        "Experts each token is routed to.";
    recipe: String => "recipe", unit "",
        aliases ["data_recipe", "dataset", "data"],
        "Data recipe label.";
}

/// The canonical name of a configuration key, if it is one the runs table has a column for.
pub fn canonical_field(key: &str) -> Option<&'static str> {
    CONFIG_FIELDS.iter().find_map(|f| {
        let hit = f.name == key || f.aliases.iter().any(|a| a.eq_ignore_ascii_case(key));
        hit.then_some(f.name)
    })
}

/// The names trainers give the series a reader looks for, best first: declared here once for
/// every reader (JSONL / CSV columns, TensorBoard tags, text-log fields), matched exactly.
pub mod metric_names {
    /// The training loss.
    pub const LOSS: &[&str] = &[
        "loss",
        "train/loss",
        "train_loss",
        "training_loss",
        "lm loss",
        "lm_loss",
        "train/lm_loss",
        "train loss",
        "training loss",
        "reduced_train_loss",
        "train/loss_avg",
        "loss/train",
        "Loss/train",
        "train/loss_step",
        "epoch_loss",
        "cross_ent_loss",
        "trl",
    ];
    /// The validation loss (stored as `val_loss`, never mixed with the training loss).
    pub const VAL_LOSS: &[&str] = &[
        "val_loss",
        "val/loss",
        "eval_loss",
        "eval/loss",
        "validation_loss",
        "validation/loss",
        "valid/loss",
        "val loss",
        "validation loss",
        "valid loss",
        "eval loss",
        "loss/val",
        "Loss/val",
        "tel",
    ];
    /// The learning rate.
    pub const LR: &[&str] = &[
        "lr",
        "learning_rate",
        "learning rate",
        "train/lr",
        "train/learning_rate",
        "lr-Adam",
        "lr-AdamW",
    ];
    /// The step.
    pub const STEP: &[&str] = &[
        "step",
        "_step",
        "iteration",
        "iter",
        "global_step",
        "trainer/global_step",
        "Step",
    ];
    /// Tokens seen at a point (not the run's budget D).
    pub const TOKENS: &[&str] = &["tokens", "consumed_tokens", "train/tokens", "num_tokens", "tokens_seen"];

    /// Every role and its names, for the Python side and the docs.
    pub const ROLES: &[(&str, &[&str])] = &[
        ("loss", LOSS),
        ("val_loss", VAL_LOSS),
        ("lr", LR),
        ("step", STEP),
        ("tokens", TOKENS),
    ];

    /// The role of a series name (`loss`, `val_loss`, `lr`, `step`, `tokens`), if it has one.
    pub fn role(name: &str) -> Option<&'static str> {
        ROLES
            .iter()
            .find_map(|(role, names)| names.contains(&name).then_some(*role))
    }
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
        match canonical_field(key) {
            Some(field) => self.set_field(field, value),
            None => {
                if keep_unknown {
                    self.tags.insert(key.to_string(), value.to_string());
                }
                Ok(())
            }
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
    fn every_field_and_alias_is_declared_once() {
        let mut seen = std::collections::HashMap::new();
        for f in CONFIG_FIELDS {
            for name in std::iter::once(&f.name).chain(f.aliases) {
                let owner = *seen.entry(name.to_ascii_lowercase()).or_insert(f.name);
                assert_eq!(owner, f.name, "'{name}' names two fields");
            }
            assert_eq!(canonical_field(f.name), Some(f.name));
        }
        let mut c = RunConfig::default();
        for f in CONFIG_FIELDS {
            let text = if f.kind == FieldKind::Text { "web" } else { "7" };
            c.set(f.aliases.first().unwrap_or(&f.name), text, false).unwrap();
            assert!(c.is_set(f.name), "{}", f.name);
            let want = match f.kind {
                FieldKind::Int => FieldValue::Int(7),
                FieldKind::Float => FieldValue::Float(7.0),
                FieldKind::Text => FieldValue::Text("web".into()),
            };
            assert_eq!(c.get(f.name), Some(want), "{}", f.name);
        }
        let mut other = RunConfig::default();
        other.merge_from(&c);
        assert_eq!(other, c);
    }

    #[test]
    fn the_runs_table_has_a_column_of_each_field_with_its_type() {
        use crate::store::table::Kind;
        for f in CONFIG_FIELDS {
            let fields = crate::store::run_fields();
            let col = fields.iter().find(|c| c.name == f.name);
            let col = col.unwrap_or_else(|| panic!("the runs table has no column {}", f.name));
            let kind = match f.kind {
                FieldKind::Int => Kind::Int64,
                FieldKind::Float => Kind::Float64,
                FieldKind::Text => Kind::Utf8,
            };
            assert!(col.kind == kind && col.nullable, "{}: {:?}", f.name, col.kind);
        }
    }

    #[test]
    fn readers_use_the_declared_metric_names() {
        use crate::ingest::{nanogpt, tabular, tfevents};
        let lists: [(&str, &[&str], &[&str]); 10] = [
            ("tabular loss", tabular::LOSS_KEYS, metric_names::LOSS),
            ("tabular val", tabular::VAL_KEYS, metric_names::VAL_LOSS),
            ("tabular lr", tabular::LR_KEYS, metric_names::LR),
            ("tabular step", tabular::STEP_KEYS, metric_names::STEP),
            ("tabular tokens", tabular::TOKEN_KEYS, metric_names::TOKENS),
            ("tfevents loss", tfevents::LOSS_TAGS, metric_names::LOSS),
            ("tfevents val", tfevents::VAL_TAGS, metric_names::VAL_LOSS),
            ("tfevents lr", tfevents::LR_TAGS, metric_names::LR),
            ("nanogpt loss", nanogpt::LOSS_KEYS, metric_names::LOSS),
            ("nanogpt val", nanogpt::VAL_KEYS, metric_names::VAL_LOSS),
        ];
        for (what, reader, declared) in lists {
            for name in reader {
                assert!(
                    declared.contains(name),
                    "{what}: '{name}' is not in model::metric_names"
                );
            }
        }
        // a validation loss is one for every reader (it was not for CSV / JSONL)
        assert_eq!(metric_names::role("validation/loss"), Some("val_loss"));
        assert_eq!(metric_names::role("train/loss"), Some("loss"));
    }

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
