//! `import-table`: runs known only by a summary row (configuration and final loss, no curve),
//! such as the public Step Law CSV.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::config::NameTemplate;
use super::IngestReport;
use crate::error::Result;
use crate::model::{now_us, run_id_for, status, RunConfig, RunId, RunRecord};
use crate::store::Store;

/// One row of a summary table, its columns already mapped to run fields.
#[derive(Debug, Clone, Default)]
pub struct SummaryRow {
    pub name: String,
    /// (field, value) pairs: configuration fields (any alias) or free-form tags.
    pub fields: Vec<(String, String)>,
    pub final_loss: Option<f64>,
    pub smooth_loss: Option<f64>,
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
    let tx = store.begin(opts.wait)?;
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
        let row_status = if row.final_loss.or(row.smooth_loss).is_some_and(|v| !v.is_finite()) {
            status::DIVERGED
        } else {
            status::SUMMARY_ONLY
        };
        let fingerprint_src = format!(
            "{:?}|{:?}|{:?}|{:?}",
            row.name, row.fields, row.final_loss, row.smooth_loss
        );
        let record = RunRecord {
            run_id: run_id_for(&key),
            name: row.name.clone(),
            source: key,
            format: "summary".into(),
            fingerprint: format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(fingerprint_src.as_bytes())),
            config,
            n_points: 0,
            final_step: None,
            final_loss: row.final_loss,
            smooth_loss: row.smooth_loss,
            status: row_status.into(),
            ingested_at_us: now_us(),
            n_malformed: 0,
            segment: None,
            files: vec![],
        };
        match existing.get(&record.run_id) {
            Some(&j) if runs[j].fingerprint == record.fingerprint => report.unchanged += 1,
            Some(&j) => {
                runs[j] = record;
                report.updated += 1;
            }
            None => {
                runs.push(record);
                report.added += 1;
            }
        }
    }
    if report.added + report.updated > 0 {
        report.version = tx.commit(runs)?.version;
        report.committed = true;
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}
