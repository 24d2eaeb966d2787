//! Final losses of every run of a store, in parallel over runs.

use crate::error::Result;
use crate::model::{status, RunId};
use crate::smooth::{final_loss, At, Curve, Smoothing};
use crate::store::{visit_metric, Manifest, Store};

#[derive(Debug, Clone, PartialEq)]
pub struct FinalRow {
    pub run_id: RunId,
    pub raw_loss: f64,
    pub loss: f64,
    /// The step the loss is read at (None for summary-only runs without one).
    pub step: Option<i64>,
    pub points_used: usize,
    /// Where the value comes from: "curve" or "imported".
    pub origin: &'static str,
}

/// One row per run that has a value at the budget: from its curve of `metric`, or for
/// summary-only runs the imported final loss (the smoothed one when the table had it).
/// `manifest` is the version to read (the newest: `store.latest()`).
pub fn final_losses(
    store: &Store,
    manifest: &Manifest,
    metric: &str,
    smoothing: Smoothing,
    at: At,
) -> Result<Vec<FinalRow>> {
    smoothing.validate()?;
    let needs_tokens = matches!(at, At::Tokens(_)) || smoothing.uses_tokens();
    let planned: std::collections::HashMap<RunId, Option<i64>> =
        manifest.runs.iter().map(|r| (r.run_id, r.config.steps)).collect();
    let final_of = |id: RunId, curve: Curve| final_loss(&curve, smoothing, at, planned.get(&id).copied().flatten());
    let visited = visit_metric(store.root(), manifest, metric, needs_tokens, &final_of)?;
    let mut rows = Vec::with_capacity(visited.len());
    for (run_id, result) in visited {
        if let Some(f) = result? {
            rows.push(FinalRow {
                run_id,
                raw_loss: f.raw,
                loss: f.smoothed,
                step: Some(f.step),
                points_used: f.points_used,
                origin: "curve",
            });
        }
    }
    // Summary-only runs have no curve: their imported value stands for the end of the run.
    if at == At::End || matches!(at, At::Fraction(f) if f >= 1.0) {
        for r in manifest.runs.iter().filter(|r| r.status == status::SUMMARY_ONLY) {
            let Some(loss) = r.smooth_loss.or(r.final_loss) else {
                continue;
            };
            rows.push(FinalRow {
                run_id: r.run_id,
                raw_loss: r.final_loss.unwrap_or(loss),
                loss,
                step: r.final_step.or(r.config.steps),
                points_used: 0,
                origin: "imported",
            });
        }
    }
    Ok(rows)
}
