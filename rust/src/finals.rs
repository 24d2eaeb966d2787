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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{ingest, IngestOptions};
    use crate::store::SegmentLayout;

    /// Run `k`'s loss curve: `n` steps of a falling curve with a wobble (so that smoothing
    /// depends on every point), and on every other run a `val_loss` too (row groups then mix
    /// metrics).
    fn write_run(dir: &std::path::Path, k: usize, n: usize) -> (Vec<i64>, Vec<f64>) {
        let run = dir.join(format!("run{k:02}"));
        std::fs::create_dir(&run).unwrap();
        let with_val = k.is_multiple_of(2);
        let mut csv = String::from(if with_val {
            "step,loss,val_loss\n"
        } else {
            "step,loss\n"
        });
        let (mut steps, mut values) = (Vec::new(), Vec::new());
        for s in 1..=n as i64 {
            let v = 2.0 + 5.0 / (s as f64 + 1.0) + 0.01 * (s as f64 * (k as f64 + 0.5)).sin();
            csv.push_str(&format!("{s},{v:?}"));
            if with_val {
                csv.push_str(&format!(",{:?}", v + 0.1));
            }
            csv.push('\n');
            steps.push(s);
            values.push(v);
        }
        std::fs::write(run.join("metrics.csv"), csv).unwrap();
        (steps, values)
    }

    /// Whatever the layout (runs split across row groups, over several groups, groups of a
    /// row) and however many workers read the groups in whatever order, every run's final
    /// loss is the one of its whole curve, bit for bit, and runs come in the same order.
    #[test]
    fn final_losses_do_not_depend_on_the_segment_layout_or_the_workers() {
        let logs = tempfile::tempdir().unwrap();
        let lengths = [1, 2, 3, 7, 30, 31, 64, 65, 97, 150, 9, 40, 5, 120, 33, 1, 77, 18];
        let curves: Vec<_> = lengths
            .iter()
            .enumerate()
            .map(|(k, &n)| write_run(logs.path(), k, n))
            .collect();
        let layouts = [
            SegmentLayout::default(),
            SegmentLayout {
                segment_rows: 100,
                row_group_rows: 32,
            },
            SegmentLayout {
                segment_rows: 23,
                row_group_rows: 5,
            },
            SegmentLayout {
                segment_rows: 10_000,
                row_group_rows: 7,
            },
            SegmentLayout {
                segment_rows: 10_000,
                row_group_rows: 1,
            },
        ];
        let smoothings = [
            Smoothing::new("robust", None, None).unwrap(),
            Smoothing::new("steplaw", None, None).unwrap(),
            Smoothing::new("ema", None, None).unwrap(),
        ];
        for layout in layouts {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), true).unwrap().with_layout(layout);
            let report = ingest(&store, &[logs.path().to_path_buf()], &IngestOptions::default()).unwrap();
            assert_eq!(report.added, lengths.len(), "{layout:?}: {:?}", report.failed);
            let m = store.latest().unwrap();
            let groups: usize = m
                .segments
                .iter()
                .map(|s| crate::store::table::row_groups(&dir.path().join(&s.file)).unwrap())
                .sum();
            for smoothing in smoothings {
                for at in [At::End, At::Step(50)] {
                    // The expected rows: each run's whole curve, as written.
                    let mut want: Vec<(RunId, u64, u64, i64, usize)> = Vec::new();
                    for (k, (steps, values)) in curves.iter().enumerate() {
                        let r = m.runs.iter().find(|r| r.name == format!("run{k:02}")).unwrap();
                        let curve = Curve {
                            steps,
                            values,
                            tokens: &[],
                        };
                        if let Some(f) = final_loss(&curve, smoothing, at, r.config.steps).unwrap() {
                            want.push((r.run_id, f.raw.to_bits(), f.smoothed.to_bits(), f.step, f.points_used));
                        }
                    }
                    want.sort();
                    let mut order = None;
                    for workers in [1, 2, 5] {
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().unwrap();
                        let rows = pool
                            .install(|| final_losses(&store, &m, "loss", smoothing, at))
                            .unwrap();
                        let mut got: Vec<_> = rows
                            .iter()
                            .map(|r| {
                                assert_eq!(r.origin, "curve");
                                (
                                    r.run_id,
                                    r.raw_loss.to_bits(),
                                    r.loss.to_bits(),
                                    r.step.unwrap(),
                                    r.points_used,
                                )
                            })
                            .collect();
                        let ids: Vec<RunId> = got.iter().map(|r| r.0).collect();
                        assert_eq!(
                            *order.get_or_insert(ids.clone()),
                            ids,
                            "{layout:?}, {workers} workers: order"
                        );
                        got.sort();
                        let what =
                            format!("{layout:?} ({groups} row groups), {smoothing:?} at {at:?}, {workers} workers");
                        assert_eq!(got, want, "{what}");
                    }
                }
            }
        }
    }
}
