//! Hugging Face Trainer state (`trainer_state.json`): `log_history` holds training entries
//! (`loss`, `learning_rate`, `grad_norm`), evaluation entries (`eval_loss`, `eval_<set>_loss`,
//! ...) and one closing summary (`train_loss`: the mean over the whole run, not a point).
//! The model's `config.json` beside it gives the shape (read as a sidecar).
use serde_json::{Map, Value};

use super::series::{RunParse, LOSS, MAX_MESSAGES, VAL_LOSS};
use super::MetricSelection;

pub const FILE_NAME: &str = "trainer_state.json";

/// Keys of an entry that are never a metric: its position and bookkeeping.
const NOT_METRICS: &[&str] = &["step", "epoch", "learning_rate", "num_input_tokens_seen", "total_flos"];

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        // Python's json writes NaN/Infinity bare; they arrive quoted (see `parse`).
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn bad(out: &mut RunParse, file: &str, entry: usize, what: String) {
    out.malformed += 1;
    if out.messages.len() < MAX_MESSAGES {
        out.messages.push(format!("{file}: log_history[{entry}]: {what}"));
    }
}

pub fn parse(data: &[u8], file: &str, sel: &MetricSelection, out: &mut RunParse) {
    // Python writes NaN and Infinity, which JSON has no words for: quote them (outside
    // strings they can only be those values).
    let state: Map<String, Value> = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(first) => {
            let patched = std::str::from_utf8(data)
                .ok()
                .map(quote_non_finite)
                .map(|s| serde_json::from_str(&s));
            match patched {
                Some(Ok(v)) => v,
                _ => {
                    out.malformed(file, first.line() as u64, || {
                        format!("not a trainer_state.json object: {first}")
                    });
                    return;
                }
            }
        }
    };
    let Some(history) = state.get("log_history").and_then(Value::as_array) else {
        out.malformed(file, 1, || "no 'log_history' list: not a Trainer state file".into());
        return;
    };
    if let Some(max) = state.get("max_steps").and_then(number).filter(|m| *m > 0.0) {
        out.planned_steps = Some(max as i64);
    }
    for (i, entry) in history.iter().enumerate() {
        let Some(e) = entry.as_object() else {
            bad(out, file, i, "not an object".into());
            continue;
        };
        let Some(step) = e.get("step").and_then(number).filter(|s| s.is_finite() && *s >= 0.0) else {
            bad(out, file, i, "no 'step' number".into());
            continue;
        };
        let step = step as i64;
        // The closing summary repeats the step with run-level averages: not a point.
        if e.contains_key("train_runtime") {
            continue;
        }
        let lr = e.get("learning_rate").and_then(number);
        let tokens = e.get("num_input_tokens_seen").and_then(number).map(|t| t as i64);
        let loss_key = sel.loss.as_deref().unwrap_or("loss");
        for (k, v) in e {
            if NOT_METRICS.contains(&k.as_str()) {
                continue;
            }
            let metric = if k == loss_key {
                LOSS
            } else if k == "eval_loss" {
                VAL_LOSS
            } else if (k.starts_with("eval_") && k.ends_with("_loss")) || sel.extra.iter().any(|x| x == k) {
                k.as_str()
            } else {
                continue;
            };
            match number(v) {
                Some(x) => out.push(metric, step, x, if metric == LOSS { lr } else { None }, tokens),
                None if v.is_null() => {}
                None => bad(out, file, i, format!("'{k}': not a number ({v})")),
            }
        }
    }
}

fn quote_non_finite(text: &str) -> String {
    text.replace("-Infinity", "\"-inf\"")
        .replace("Infinity", "\"inf\"")
        .replace("NaN", "\"NaN\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = r#"{
      "best_metric": null, "epoch": 1.0, "global_step": 30, "max_steps": 30, "logging_steps": 10,
      "log_history": [
        {"epoch": 0.3, "grad_norm": 1.5, "learning_rate": 5e-05, "loss": 2.5, "step": 10},
        {"epoch": 0.3, "eval_loss": 2.6, "eval_wiki_loss": 2.7, "eval_runtime": 1.2, "step": 10},
        {"epoch": 0.6, "grad_norm": 1.1, "learning_rate": 2.5e-05, "loss": NaN, "step": 20},
        {"epoch": 0.9, "learning_rate": 0.0, "loss": 2.1, "step": 30},
        {"epoch": 1.0, "step": 30, "train_loss": 2.3, "train_runtime": 100.0, "total_flos": 1e15},
        {"epoch": 1.0, "loss": "oops", "step": 31},
        {"loss": 1.0}
      ]}"#;

    #[test]
    fn training_and_eval_entries_apart_and_the_summary_skipped() {
        let mut out = RunParse::default();
        parse(STATE.as_bytes(), "ts", &MetricSelection::default(), &mut out);
        let loss = &out.series[LOSS].series;
        assert_eq!(loss.steps, vec![10, 20, 30]);
        assert_eq!((loss.values[0], loss.values[2]), (2.5, 2.1));
        assert!(loss.values[1].is_nan());
        assert_eq!(loss.lr, vec![5e-5, 2.5e-5, 0.0]);
        assert_eq!(out.series[VAL_LOSS].series.values, vec![2.6]);
        assert_eq!(out.series["eval_wiki_loss"].series.values, vec![2.7]);
        assert_eq!(out.planned_steps, Some(30));
        assert_eq!(out.malformed, 2, "{:?}", out.messages);
        assert!(out.messages[0].contains("log_history[5]"), "{:?}", out.messages);
    }

    #[test]
    fn not_a_state_file() {
        for text in ["", "[1, 2]", "{\"a\": 1}", "{\"log_history\": [", "\u{0}\u{1}"] {
            let mut out = RunParse::default();
            parse(text.as_bytes(), "ts", &MetricSelection::default(), &mut out);
            assert!(out.series.is_empty() && out.malformed == 1, "{text}");
        }
    }
}
