//! `import-table`: runs known only by a summary row (configuration and final loss, no curve),
//! such as the public Step Law CSV; or, from a table with one row per checkpoint, runs whose
//! rows Python grouped, with one point per checkpoint.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::config::{run_status, NameTemplate};
use super::series::LOSS;
use super::IngestReport;
use crate::error::Result;
use crate::model::{now_us, run_id_for, status, RunConfig, RunId, RunRecord};
use crate::store::{Series, Store};

/// One row of a summary table, its columns already mapped to run fields.
#[derive(Debug, Clone, Default)]
pub struct SummaryRow {
    pub name: String,
    /// (field, value) pairs: configuration fields (any alias) or free-form tags.
    pub fields: Vec<(String, String)>,
    pub final_loss: Option<f64>,
    pub smooth_loss: Option<f64>,
    /// A checkpoint table's run: one point per checkpoint, each series by step (empty: a
    /// summary-only run, its final loss `final_loss`).
    pub series: Vec<Series>,
}

/// Series as a run's points must be: named, steps ascending and unique, lengths that agree.
fn check_series(series: &[Series]) -> std::result::Result<(), String> {
    for s in series {
        if s.values.len() != s.steps.len()
            || !(s.tokens.is_empty() || s.tokens.len() == s.steps.len())
            || !(s.lr.is_empty() || s.lr.len() == s.steps.len())
        {
            return Err(format!(
                "series '{}': steps, values, tokens and lr differ in length",
                s.metric
            ));
        }
        if let Some(w) = s.steps.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!(
                "series '{}': two checkpoints at step {} (or steps out of order): rows of two runs grouped as one?",
                s.metric, w[1]
            ));
        }
    }
    Ok(())
}

pub struct SummaryOptions {
    pub name_template: Option<String>,
    pub set: Vec<(String, String)>,
    pub recipe: Option<String>,
    pub seq_len: i64,
    pub wait: Duration,
}

/// Import `rows` read from the table at `source` (its path: part of each run's identity, so
/// importing the same table again replaces its runs instead of adding them twice).
pub fn import_summaries(
    store: &Store,
    source: &str,
    rows: &[SummaryRow],
    opts: &SummaryOptions,
) -> Result<IngestReport> {
    let t0 = Instant::now();
    let template = NameTemplate::parse(opts.name_template.as_deref())?;
    let overrides = RunConfig::overrides(&opts.set, opts.recipe.as_deref())?;
    let mut tx = store.begin(opts.wait)?;
    let mut writer = None;
    let mut report = IngestReport {
        runs_found: rows.len(),
        version: tx.base.version,
        ..Default::default()
    };
    let existing: HashMap<RunId, usize> = tx.base.runs.iter().enumerate().map(|(i, r)| (r.run_id, i)).collect();
    let mut runs = tx.base.runs.clone();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let location = format!("{source}:{}", i + 2); // header is line 1
                                                      // Names repeat in some tables: the k-th repeat gets its own identity.
        let count = seen.entry(row.name.clone()).or_insert(0);
        *count += 1;
        let key = if *count == 1 {
            format!("{source}#{}", row.name)
        } else {
            format!("{source}#{}@{count}", row.name)
        };
        let mut config = match template.read(&row.name) {
            Ok(c) => c,
            Err(e) => {
                report.failed.push((location, e.to_string()));
                continue;
            }
        };
        let mut from_row = RunConfig::default();
        if let Err(e) = row.fields.iter().try_for_each(|(k, v)| from_row.set(k, v, true)) {
            report.failed.push((location, e.to_string()));
            continue;
        }
        config.merge_from(&from_row);
        config.merge_from(&overrides);
        if let Err(e) = config.derive(opts.seq_len) {
            report.failed.push((location, e.to_string()));
            continue;
        }
        if let Err(e) = check_series(&row.series) {
            report.failed.push((location, e));
            continue;
        }
        // A checkpoint table's run is judged on its curve: it stops early (incomplete) or not.
        let loss = row.series.iter().find(|s| s.metric == LOSS);
        let row_status = match loss {
            Some(loss) => run_status(loss, config.steps),
            None if row.final_loss.or(row.smooth_loss).is_some_and(|v| !v.is_finite()) => status::DIVERGED,
            None if row.series.is_empty() => status::SUMMARY_ONLY,
            None => run_status(&row.series[0], config.steps),
        };
        let final_loss = match loss {
            Some(loss) => loss.values.iter().rev().find(|v| v.is_finite()).copied(),
            None => row.final_loss,
        };
        let fingerprint_src = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}",
            row.name, row.fields, row.final_loss, row.smooth_loss, row.series
        );
        let record = RunRecord {
            run_id: run_id_for(&key),
            name: row.name.clone(),
            source: key,
            format: if row.series.is_empty() {
                "summary"
            } else {
                "checkpoints"
            }
            .into(),
            fingerprint: format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(fingerprint_src.as_bytes())),
            config,
            n_points: row.series.iter().map(|s| s.len() as u64).sum(),
            final_step: loss.or(row.series.first()).and_then(|s| s.steps.last().copied()),
            final_loss,
            smooth_loss: row.smooth_loss,
            status: row_status.into(),
            ingested_at_us: now_us(),
            n_malformed: 0,
            segment: None,
            files: vec![],
        };
        let slot = match existing.get(&record.run_id) {
            Some(&j) if runs[j].fingerprint == record.fingerprint => {
                report.unchanged += 1;
                continue;
            }
            Some(&j) => {
                report.updated += 1;
                Some(j)
            }
            None => {
                report.added += 1;
                None
            }
        };
        let mut record = record;
        if !row.series.is_empty() {
            if writer.is_none() {
                writer = Some(tx.segment_writer(0)?);
            }
            let w = writer.as_mut().expect("just made");
            record.segment = Some(w.add_run(record.run_id, &row.series).map_err(|e| tx.write_failed(e))?);
            report.points += record.n_points;
        }
        match slot {
            Some(j) => runs[j] = record,
            None => runs.push(record),
        }
    }
    if let Some(w) = writer {
        let entries = w.finish().map_err(|e| tx.write_failed(e))?;
        tx.add_segments(entries);
    }
    if report.added + report.updated > 0 {
        report.version = tx.commit(runs)?.version;
        report.committed = true;
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, steps: Vec<i64>, values: Vec<f64>) -> SummaryRow {
        SummaryRow {
            name: name.into(),
            fields: vec![("lr".into(), "1e-3".into()), ("total_steps".into(), "400".into())],
            series: vec![Series {
                metric: LOSS.into(),
                tokens: steps.iter().map(|s| s * 1000).collect(),
                steps,
                values,
                lr: vec![],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn checkpoint_runs_have_their_points_and_a_status_from_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), true).unwrap();
        let opts = SummaryOptions {
            name_template: None,
            set: vec![],
            recipe: None,
            seq_len: 2048,
            wait: Duration::ZERO,
        };
        let rows = [
            row("full", vec![100, 200, 300, 400], vec![4.0, 3.5, 3.2, 3.0]),
            row("short", vec![100, 200], vec![4.1, 3.6]),
            row("bad", vec![100, 100], vec![4.1, 3.6]),
        ];
        let report = import_summaries(&store, "t.csv", &rows, &opts).unwrap();
        assert_eq!((report.added, report.points), (2, 6));
        assert!(report.failed[0].0.ends_with(":4") && report.failed[0].1.contains("two checkpoints at step 100"));
        let runs = store.latest().unwrap().runs;
        let full = runs.iter().find(|r| r.name == "full").unwrap();
        let short = runs.iter().find(|r| r.name == "short").unwrap();
        assert_eq!(
            (full.status.as_str(), full.final_loss, full.final_step),
            ("complete", Some(3.0), Some(400))
        );
        assert_eq!((short.status.as_str(), short.n_points), ("incomplete", 2));
        assert!(full.segment.is_some() && full.format == "checkpoints");
        let again = import_summaries(&store, "t.csv", &rows[..2], &opts).unwrap();
        assert_eq!((again.unchanged, again.added, again.updated), (2, 0, 0));
    }
}
