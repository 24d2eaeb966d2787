//! W&B chart CSV exports: a wide table with a `Step` column and, per run, a
//! `"<run name> - <metric>"` column with `__MIN` / `__MAX` companions (the extremes of the
//! points a chart bucket averages), empty where a run has no value. One file holds several
//! runs; each run is read from its own columns. (W&B *history* exports are long tables with
//! `_step`: the JSONL / CSV readers take them.)
use super::series::{RunParse, LOSS, VAL_LOSS};
use super::tabular::{LOSS_KEYS, VAL_KEYS};
use super::text::parse_f64;
use super::MetricSelection;

const STEP_COLUMN: &str = "Step";
const SEPARATOR: &str = " - ";
const COMPANIONS: &[&str] = &["__MIN", "__MAX"];

/// (run name, metric) of a value column; None for the step, the companions and others.
fn split_column(name: &str) -> Option<(&str, &str)> {
    if COMPANIONS.iter().any(|c| name.ends_with(c)) {
        return None;
    }
    // Metric names hold '-' but not " - "; run names may: split at the last one.
    name.rsplit_once(SEPARATOR)
        .filter(|(run, metric)| !run.is_empty() && !metric.is_empty())
}

fn header(data: &[u8]) -> Option<Vec<String>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut rec = csv::StringRecord::new();
    rdr.read_record(&mut rec).ok()?;
    Some(
        rec.iter()
            .map(|s| s.trim_start_matches('\u{feff}').trim().to_string())
            .collect(),
    )
}

/// The run names of a chart export, in column order; None when `head` (the start of a CSV
/// file) is not one: its first column must be `Step` and every other `<run> - <metric>`.
pub fn runs_in(head: &[u8]) -> Option<Vec<String>> {
    // Only complete header lines count: a chart export's header may be long.
    let line_end = memchr::memchr(b'\n', head)?;
    let cols = header(&head[..=line_end])?;
    let (first, rest) = cols.split_first()?;
    if first != STEP_COLUMN || rest.is_empty() || !rest.iter().all(|c| c.contains(SEPARATOR)) {
        return None;
    }
    let mut runs: Vec<String> = Vec::new();
    for (run, _) in rest.iter().filter_map(|c| split_column(c)) {
        if !runs.iter().any(|r| r == run) {
            runs.push(run.to_string());
        }
    }
    (!runs.is_empty()).then_some(runs)
}

/// The metric a W&B metric name is stored as: the training and validation losses by their
/// usual names, the rest as they are.
fn metric_name<'a>(metric: &'a str, sel: &MetricSelection) -> &'a str {
    match &sel.loss {
        Some(k) if k == metric => LOSS,
        None if LOSS_KEYS.contains(&metric) => LOSS,
        _ if VAL_KEYS.contains(&metric) => VAL_LOSS,
        _ => metric,
    }
}

/// Read the columns of run `run` from a chart export.
pub fn parse(data: &[u8], file: &str, run: &str, sel: &MetricSelection, out: &mut RunParse) {
    // W&B writes no newline after the last row. A last row cut short (a copy still being
    // written) could still parse, but W&B quotes every cell: a complete row ends in a quote
    // and has every field.
    let complete_tail = |tail: &[u8]| {
        let fields = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(tail)
            .byte_records()
            .next();
        let header_fields = header(data).map_or(0, |h| h.len());
        tail.trim_ascii_end().ends_with(b"\"") && fields.is_some_and(|r| r.is_ok_and(|r| r.len() == header_fields))
    };
    let (body, tail) = match memchr::memrchr(b'\n', data) {
        Some(i) if i + 1 < data.len() && !complete_tail(&data[i + 1..]) => (&data[..=i], &data[i + 1..]),
        _ => (data, &data[data.len()..]),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(body);
    let cols: Vec<String> = match rdr.headers() {
        Ok(h) => h
            .iter()
            .map(|s| s.trim_start_matches('\u{feff}').trim().to_string())
            .collect(),
        Err(e) => {
            out.malformed(file, 1, || format!("unreadable header: {e}"));
            return;
        }
    };
    let Some(step_col) = cols.iter().position(|c| c == STEP_COLUMN) else {
        out.malformed(file, 1, || "no 'Step' column: not a W&B chart export".into());
        return;
    };
    let mine: Vec<(usize, String)> = cols
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            split_column(c)
                .filter(|(r, _)| *r == run)
                .map(|(_, m)| (i, metric_name(m, sel).to_string()))
        })
        .collect();
    super::tabular::for_each_record(&mut rdr, file, out, |record, line, out| {
        let cell = |i: usize| record.get(i).map(<[u8]>::trim_ascii).unwrap_or_default();
        // Empty cells are runs without a value at this step.
        let values: Vec<(usize, &[u8])> = mine
            .iter()
            .enumerate()
            .map(|(k, (i, _))| (k, cell(*i)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if values.is_empty() {
            return;
        }
        let Some(step) = parse_f64(cell(step_col)).filter(|s| s.is_finite() && *s >= 0.0) else {
            let text = String::from_utf8_lossy(cell(step_col)).into_owned();
            out.malformed(file, line, || format!("column 'Step': '{text}' is not a step number"));
            return;
        };
        for (k, text) in values {
            let (i, metric) = &mine[k];
            match parse_f64(text) {
                Some(v) => out.push(metric, step as i64, v, None, None),
                None => {
                    let text = String::from_utf8_lossy(text).into_owned();
                    out.malformed(file, line, || {
                        format!("column '{}': '{text}' is not a number", cols[*i])
                    });
                }
            }
        }
    });
    if !tail.trim_ascii().is_empty() {
        let line = body.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        out.malformed(file, line, || {
            "truncated last line (is the file still being written?)".into()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: &str = "\"Step\",\"run-b - train/loss\",\"run-b - train/loss__MIN\",\"run-b - train/loss__MAX\",\"run-a - train/loss\",\"run-a - train/loss__MIN\",\"run-a - train/loss__MAX\",\"run-a - eval/loss\"\n\
\"10\",\"3.5\",\"3.4\",\"3.6\",\"\",\"\",\"\",\"\"\n\
\"20\",\"3.0\",\"2.9\",\"3.1\",\"4.0\",\"4.0\",\"4.0\",\"4.2\"\n\
\"30\",\"\",\"\",\"\",\"x\",\"\",\"\",\"\"\n\
\"40\",\"2.5\",\"2.5\",\"2.5\",\"\",\"\",\"\",\"\"";

    #[test]
    fn one_file_several_runs() {
        assert_eq!(
            runs_in(EXPORT.as_bytes()),
            Some(vec!["run-b".to_string(), "run-a".to_string()])
        );
        assert_eq!(runs_in(b"step,loss\n1,2\n"), None);
        assert_eq!(runs_in(b"\"Step\",\"a - loss\""), None); // no complete header line
        let mut b = RunParse::default();
        parse(EXPORT.as_bytes(), "w", "run-b", &MetricSelection::default(), &mut b);
        assert_eq!(b.series[LOSS].series.steps, vec![10, 20, 40]); // a last row without newline
        assert_eq!(b.series[LOSS].series.values, vec![3.5, 3.0, 2.5]);
        assert_eq!(b.series.len(), 1);
        assert_eq!(b.malformed, 0);
        let mut a = RunParse::default();
        parse(EXPORT.as_bytes(), "w", "run-a", &MetricSelection::default(), &mut a);
        assert_eq!(a.series[LOSS].series.steps, vec![20]);
        assert_eq!(a.series[VAL_LOSS].series.values, vec![4.2]);
        assert_eq!(a.malformed, 1);
        assert!(
            a.messages[0].starts_with("w:4: column 'run-a - train/loss'"),
            "{:?}",
            a.messages
        );
        // a last row cut short
        let cut = &EXPORT[..EXPORT.len() - 6];
        let mut c = RunParse::default();
        parse(cut.as_bytes(), "w", "run-b", &MetricSelection::default(), &mut c);
        assert_eq!(c.series[LOSS].series.steps, vec![10, 20]);
        assert!(c.messages[0].contains("truncated"), "{:?}", c.messages);
    }
}
