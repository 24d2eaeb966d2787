//! Metric files with named columns: JSONL (one object a line) and long CSV (a header, then
//! one row a step). Both map their column names the same way.
use serde_json::Value;

use super::series::{RunParse, LOSS, VAL_LOSS};
use super::text::parse_f64;
use super::MetricSelection;
use crate::model::metric_names;

// The names every reader recognises, declared once (model::metric_names): a column such as
// `validation/loss` is a val loss here as it is for TensorBoard.
pub const STEP_KEYS: &[&str] = metric_names::STEP;
pub const LOSS_KEYS: &[&str] = metric_names::LOSS;
pub const LR_KEYS: &[&str] = metric_names::LR;
pub const TOKEN_KEYS: &[&str] = metric_names::TOKENS;
pub const VAL_KEYS: &[&str] = metric_names::VAL_LOSS;

/// Which column plays which part, resolved once per file from its names.
struct Roles {
    step: usize,
    loss: Option<usize>,
    lr: Option<usize>,
    tokens: Option<usize>,
    val: Option<usize>,
    extra: Vec<(usize, String)>,
}

fn pick(names: &[&str], candidates: &[&str]) -> Option<usize> {
    candidates.iter().find_map(|c| names.iter().position(|n| n == c))
}

fn roles(names: &[&str], sel: &MetricSelection) -> Option<Roles> {
    let loss = match &sel.loss {
        Some(k) => names.iter().position(|n| n == k),
        None => pick(names, LOSS_KEYS),
    };
    Some(Roles {
        step: pick(names, STEP_KEYS)?,
        loss,
        lr: pick(names, LR_KEYS),
        tokens: pick(names, TOKEN_KEYS),
        val: pick(names, VAL_KEYS),
        extra: sel
            .extra
            .iter()
            .filter_map(|e| names.iter().position(|n| n == e).map(|i| (i, e.clone())))
            .collect(),
    })
}

/// Whether a metric file's first record names a training-loss column (default names): such
/// files are whole runs, so several in one directory are several runs.
pub fn has_training_loss(head: &[u8], jsonl: bool) -> bool {
    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let names: Vec<String> = if jsonl {
        let line = quote_non_finite(&String::from_utf8_lossy(first));
        match serde_json::from_str::<Value>(line.trim()) {
            Ok(Value::Object(map)) => map.keys().cloned().collect(),
            _ => return false,
        }
    } else {
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_reader(first);
        match rdr.records().next() {
            Some(Ok(record)) => record.iter().map(|s| s.trim().to_string()).collect(),
            _ => return false,
        }
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    pick(&names, STEP_KEYS).is_some() && pick(&names, LOSS_KEYS).is_some()
}

fn emit(r: &Roles, step: i64, get: &dyn Fn(usize) -> Option<f64>, out: &mut RunParse) {
    let lr = r.lr.and_then(get);
    let tokens = r.tokens.and_then(get).map(|t| t as i64);
    if let Some(v) = r.loss.and_then(get) {
        out.push(LOSS, step, v, lr, tokens);
    }
    if let Some(v) = r.val.and_then(get) {
        out.push(VAL_LOSS, step, v, None, tokens);
    }
    for (i, name) in &r.extra {
        if let Some(v) = get(*i) {
            out.push(name, step, v, lr, tokens);
        }
    }
}

fn json_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        // Python's json writes NaN/Infinity bare; they are turned into strings before parsing.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Python's `json.dumps` writes NaN, Infinity and -Infinity, which are not JSON.
fn quote_non_finite(line: &str) -> String {
    line.replace("-Infinity", "\"-inf\"")
        .replace("Infinity", "\"inf\"")
        .replace("NaN", "\"NaN\"")
}

/// Rows whose steps go back without repeating one (several writers, a shuffled export) are
/// only out of order: they are sorted by step. Rows that log a step again are a restart and
/// stay in file order (the restart rule). Returns whether the rows were sorted.
fn in_step_order<T>(rows: &mut [(i64, T)]) -> bool {
    if rows.windows(2).all(|w| w[0].0 <= w[1].0) {
        return false;
    }
    let mut steps: Vec<i64> = rows.iter().map(|r| r.0).collect();
    steps.sort_unstable();
    if steps.windows(2).any(|w| w[0] == w[1]) {
        return false;
    }
    rows.sort_by_key(|r| r.0);
    true
}

/// A JSONL row read: its columns' roles and its object.
type JsonRow = (Roles, serde_json::Map<String, Value>);

fn sorted_note(file: &str, out: &mut RunParse) {
    out.notes.push(format!(
        "{file}: rows out of step order (no step repeated, so no restart): sorted by step"
    ));
}

pub fn parse_jsonl(data: &[u8], file: &str, sel: &MetricSelection, out: &mut RunParse) {
    let mut rows: Vec<(i64, JsonRow)> = Vec::new();
    let mut line_no = 0u64;
    for raw in data.split(|&b| b == b'\n') {
        line_no += 1;
        let line = raw.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let obj: serde_json::Map<String, Value> = match serde_json::from_slice(line) {
            Ok(o) => o,
            Err(first) => match std::str::from_utf8(line)
                .ok()
                .map(quote_non_finite)
                .map(|s| serde_json::from_str(&s))
            {
                Some(Ok(o)) => o,
                _ => {
                    out.malformed(file, line_no, || format!("not a JSON object: {first}"));
                    continue;
                }
            },
        };
        let names: Vec<&str> = obj.keys().map(String::as_str).collect();
        let Some(r) = roles(&names, sel) else {
            out.malformed(file, line_no, || {
                format!("no step field (one of {})", STEP_KEYS.join(", "))
            });
            continue;
        };
        let Some(step) = obj
            .values()
            .nth(r.step)
            .and_then(json_number)
            .filter(|s| s.is_finite() && *s >= 0.0)
        else {
            out.malformed(file, line_no, || {
                format!("field '{}': not a step number", names[r.step])
            });
            continue;
        };
        rows.push((step as i64, (r, obj)));
    }
    if in_step_order(&mut rows) {
        sorted_note(file, out);
    }
    for (step, (r, obj)) in rows {
        let values: Vec<&Value> = obj.values().collect();
        emit(&r, step, &|i| json_number(values[i]), out);
    }
}

/// An evaluation JSONL beside a run's other logs (T5X's `inference_eval/<task>-metrics.jsonl`:
/// `{"step": 10000, "perplexity": 1.08, "accuracy": ...}`): every number but the step is a
/// metric of its own, `<prefix><key>`.
pub fn parse_jsonl_metrics(data: &[u8], file: &str, prefix: &str, out: &mut RunParse) {
    let mut rows: Vec<(i64, Vec<(String, f64)>)> = Vec::new();
    for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let line = raw.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let parsed = serde_json::from_slice::<serde_json::Map<String, Value>>(line).or_else(|first| {
            std::str::from_utf8(line)
                .ok()
                .and_then(|s| serde_json::from_str(&quote_non_finite(s)).ok())
                .ok_or(first)
        });
        let obj = match parsed {
            Ok(o) => o,
            Err(e) => {
                out.malformed(file, line_no, || format!("not a JSON object: {e}"));
                continue;
            }
        };
        let Some((step_key, step)) = STEP_KEYS.iter().find_map(|k| obj.get(*k).map(|v| (*k, json_number(v)))) else {
            out.malformed(file, line_no, || {
                format!("no step field (one of {})", STEP_KEYS.join(", "))
            });
            continue;
        };
        let Some(step) = step.filter(|s| s.is_finite() && *s >= 0.0) else {
            out.malformed(file, line_no, || format!("field '{step_key}': not a step number"));
            continue;
        };
        let values = obj
            .iter()
            .filter(|(k, _)| k.as_str() != step_key)
            .filter_map(|(k, v)| json_number(v).map(|x| (format!("{prefix}{k}"), x)))
            .collect();
        rows.push((step as i64, values));
    }
    if in_step_order(&mut rows) {
        sorted_note(file, out);
    }
    for (step, values) in rows {
        for (metric, v) in values {
            out.push(&metric, step, v, None, None);
        }
    }
}

pub fn parse_csv(data: &[u8], file: &str, sel: &MetricSelection, out: &mut RunParse) {
    // A last row without its newline may be cut short (a file still being written), and a
    // cut number still parses: it is kept only when it is whole (see `whole_last_row`).
    let (body, tail) = match memchr::memrchr(b'\n', data) {
        Some(i) if i + 1 < data.len() => (&data[..=i], &data[i + 1..]),
        _ => (data, &data[data.len()..]),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(body);
    let header: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(|s| s.trim().to_string()).collect(),
        Err(e) => {
            out.malformed(file, 1, || format!("unreadable header: {e}"));
            return;
        }
    };
    let names: Vec<&str> = header.iter().map(String::as_str).collect();
    let Some(r) = roles(&names, sel) else {
        out.malformed(file, 1, || format!("no step column (one of {})", STEP_KEYS.join(", ")));
        return;
    };
    // The step of a row that has every column, else None (counted).
    let step_of = |record: &csv::ByteRecord, line: u64, out: &mut RunParse| -> Option<i64> {
        if record.len() != header.len() {
            let n = record.len();
            out.malformed(file, line, || {
                format!("{n} fields where the header has {}", header.len())
            });
            return None;
        }
        let Some(step) = parse_f64(record[r.step].trim_ascii()).filter(|s| s.is_finite() && *s >= 0.0) else {
            out.malformed(file, line, || format!("column '{}': not a step number", names[r.step]));
            return None;
        };
        Some(step as i64)
    };
    let mut rows: Vec<(i64, csv::ByteRecord)> = Vec::new();
    for_each_record(&mut rdr, file, out, |record, line, out| {
        if let Some(step) = step_of(record, line, out) {
            rows.push((step, record.clone()));
        }
    });
    if !tail.trim_ascii().is_empty() {
        let line = body.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let mut tail_rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(tail);
        let mut record = csv::ByteRecord::new();
        let read = tail_rdr.read_byte_record(&mut record).unwrap_or(false);
        if read && whole_last_row(&record, rows.last().map(|r| &r.1), header.len()) {
            if let Some(step) = step_of(&record, line, out) {
                rows.push((step, record));
            }
        } else {
            out.malformed(file, line, || {
                "truncated last line (no newline, and fewer fields or a shorter last value than the row \
                 before: is the file still being written?)"
                    .into()
            });
        }
    }
    if in_step_order(&mut rows) {
        sorted_note(file, out);
    }
    for (step, record) in &rows {
        emit(&r, *step, &|i| parse_f64(record[i].trim_ascii()), out);
    }
}

/// Is a last row without its newline whole? It has every column, and its last value is
/// written at least as long as the row before's (numbers printed alike have one width: a value
/// cut short, `2.87` of `2.8765` or `1.0e-0` of `1.0e-04`, is shorter). A first row has no
/// row before: every column is enough.
fn whole_last_row(record: &csv::ByteRecord, before: Option<&csv::ByteRecord>, columns: usize) -> bool {
    let Some(last) = record.iter().next_back() else {
        return false;
    };
    record.len() == columns
        && !last.trim_ascii().is_empty()
        && before.is_none_or(|b| {
            b.iter()
                .next_back()
                .is_some_and(|p| last.trim_ascii().len() >= p.trim_ascii().len())
        })
}

/// Hand each CSV record and its line number to `row`; an unreadable row is counted as
/// malformed and skipped.
pub(super) fn for_each_record<R: std::io::Read>(
    rdr: &mut csv::Reader<R>,
    file: &str,
    out: &mut RunParse,
    mut row: impl FnMut(&csv::ByteRecord, u64, &mut RunParse),
) {
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                out.malformed(file, line, || format!("unreadable row: {e}"));
                continue;
            }
        }
        rows += 1;
        let line = record.position().map_or(rows + 1, |p| p.line());
        row(&record, line, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: fn(&[u8], &str, &MetricSelection, &mut RunParse), s: &str) -> RunParse {
        let mut out = RunParse::default();
        f(s.as_bytes(), "m", &MetricSelection::default(), &mut out);
        out
    }

    #[test]
    fn jsonl_with_aliases_nan_and_bad_lines() {
        let p = run(
            parse_jsonl,
            "{\"_step\": 1, \"train/loss\": 3.0, \"lr\": 0.1}\n{\"_step\": 2, \"train/loss\": NaN}\n{\"_step\": 3, \"train/lo\n{\"_step\": 4, \"eval/loss\": 2.5}\n",
        );
        let s = &p.series[LOSS].series;
        assert_eq!(s.steps, vec![1, 2]);
        assert!(s.values[1].is_nan());
        assert_eq!(p.series[VAL_LOSS].series.values, vec![2.5]);
        assert_eq!(p.malformed, 1);
        assert!(p.messages[0].starts_with("m:3:"), "{:?}", p.messages);
    }

    #[test]
    fn csv_with_lr_empty_cells_and_short_rows() {
        let p = run(parse_csv, "step,loss,lr\n1,3.0,0.1\n2,,0.1\n3,2.5\n4,2.4,0.05\n");
        let s = &p.series[LOSS].series;
        assert_eq!(s.steps, vec![1, 4]);
        assert_eq!(s.lr, vec![0.1, 0.05]);
        assert_eq!(p.malformed, 1);
        assert!(p.messages[0].starts_with("m:4:"), "{:?}", p.messages);
    }

    #[test]
    fn out_of_order_rows_are_sorted_and_a_restart_is_not() {
        // 100 rows written by several processes, out of order: every one kept
        let mut text = String::new();
        for k in 0..100 {
            let s = (k * 37) % 100;
            text += &format!("{{\"step\": {s}, \"loss\": {}}}\n", 10.0 - s as f64 / 10.0);
        }
        let p = run(parse_jsonl, &text);
        assert_eq!(p.series[LOSS].series.steps, (0..100).collect::<Vec<_>>());
        assert_eq!(p.replaced(), 0);
        assert!(p.notes[0].contains("sorted"), "{:?}", p.notes);
        let p = run(parse_csv, "step,loss\n3,2.7\n1,2.9\n2,2.8\n");
        assert_eq!(p.series[LOSS].series.values, vec![2.9, 2.8, 2.7]);
        // a restart logs steps again: the later log wins
        let p = run(parse_csv, "step,loss\n1,2.9\n2,2.8\n3,2.7\n2,2.85\n3,2.75\n");
        assert_eq!(p.series[LOSS].series.values, vec![2.9, 2.85, 2.75]);
        assert!(p.notes.is_empty());
    }

    #[test]
    fn eval_jsonl_keeps_every_metric() {
        let mut p = RunParse::default();
        let text = "{\"step\": 0, \"perplexity\": 1.83, \"accuracy\": 0.1}\n{\"step\": 10000, \"perplexity\": 1.08, \"name\": \"x\"}\n{\"perplexity\": 1}\n";
        parse_jsonl_metrics(text.as_bytes(), "m", "inference_eval/pile/", &mut p);
        assert_eq!(p.series["inference_eval/pile/perplexity"].series.steps, vec![0, 10000]);
        assert_eq!(p.series["inference_eval/pile/accuracy"].series.values, vec![0.1]);
        assert_eq!(p.series.len(), 2);
        assert_eq!(p.malformed, 1);
    }

    #[test]
    fn csv_unterminated_last_row_is_kept_when_whole_else_skipped() {
        let p = run(parse_csv, "step,loss\n1,3.0\n2,2.9");
        assert_eq!((p.series[LOSS].series.steps.clone(), p.malformed), (vec![1, 2], 0));
        for cut in [
            "step,loss\n1,3.0\n2,2",
            "step,loss\n1,3.0\n2",
            "step,loss,lr\n1,3.0,1.0e-04\n2,2.9,1.0e-0",
        ] {
            let p = run(parse_csv, cut);
            assert_eq!(p.series[LOSS].series.steps, vec![1], "{cut}");
            assert_eq!(p.malformed, 1, "{cut}");
            assert!(p.messages[0].contains("truncated last line"), "{:?}", p.messages);
        }
        // a single row without its newline: no row before to compare, every column is enough
        let p = run(parse_csv, "step,loss\n1,3.0");
        assert_eq!(p.series[LOSS].series.steps, vec![1]);
    }
}
