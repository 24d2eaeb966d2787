//! The only code that touches Python: argument conversion, releasing the GIL around the
//! core's work, and mapping `Error` onto `steplaw_db.errors`.
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

mod curve;
mod fit;
mod forecast;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::error::Error;
use crate::finals::final_losses;
use crate::ingest::summary::{import_summaries, SummaryOptions, SummaryRow};
use crate::ingest::{ingest, Format, IngestOptions, IngestReport, MetricSelection, Restarts};
use crate::smooth::{At, Smoothing, Width};
use crate::store::{self, runs_table_bytes};

/// Raise the `steplaw_db.errors` class that matches `e` (a pure-Python hierarchy, so its
/// classes can also derive from OSError / ValueError): `?` carries core errors across the
/// boundary.
impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let class = match &e {
            Error::Io { .. } | Error::Store { .. } => "StoreError",
            Error::Locked { .. } => "StoreLockedError",
            Error::Parse { .. } => "ParseError",
            Error::Invalid(_) => "InvalidArgumentError",
            Error::InsufficientData(_) => "InsufficientDataError",
            Error::Internal(_) => "InternalError",
        };
        let message = e.to_string();
        Python::attach(|py| {
            let made = py
                .import("steplaw_db.errors")
                .and_then(|m| m.getattr(class))
                .and_then(|cls| cls.call1((message.clone(),)));
            match made {
                Ok(obj) => PyErr::from_value(obj),
                Err(_) => PyRuntimeError::new_err(message),
            }
        })
    }
}

/// Seconds to wait for the store's lock (negative or NaN: not at all).
fn wait_of(secs: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(secs.max(0.0))
        .map_err(|_| Error::Invalid(format!("wait must be a finite number of seconds, got {secs}")))
}

fn report_dict<'py>(py: Python<'py>, r: &IngestReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("runs_found", r.runs_found)?;
    d.set_item("added", r.added)?;
    d.set_item("updated", r.updated)?;
    d.set_item("moved", r.moved)?;
    d.set_item("unchanged", r.unchanged)?;
    d.set_item("failed", r.failed.clone())?;
    d.set_item("points", r.points)?;
    d.set_item("bytes_read", r.bytes_read)?;
    d.set_item("malformed_lines", r.malformed_lines)?;
    d.set_item("warnings", r.warnings.clone())?;
    d.set_item("skipped_files", r.skipped_files.clone())?;
    d.set_item("replaced_points", r.replaced_points)?;
    d.set_item("notes", r.notes.clone())?;
    d.set_item("seconds", r.seconds)?;
    d.set_item("version", r.version)?;
    d.set_item("committed", r.committed)?;
    Ok(d)
}

/// One series of a checkpoint table's run, as `import_summaries` takes it: (metric, steps,
/// values, tokens seen; empty when the table has none).
type CheckpointSeries = (String, Vec<i64>, Vec<f64>, Vec<i64>);
#[pyclass(module = "steplaw_db._native", name = "Store", frozen)]
struct PyStore {
    inner: store::Store,
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (path, create = true, force = false))]
    fn new(path: PathBuf, create: bool, force: bool) -> PyResult<Self> {
        Ok(PyStore {
            inner: store::Store::open_with(path, create, force)?,
        })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    /// Ingest runs found under `paths`; the options as `steplaw_db.Store.ingest` documents
    /// them (keyword-only: a misspelt option is a TypeError).
    #[pyo3(signature = (
        paths, *, format = None, metric = None, metrics = Vec::new(), name_template = None, set = Vec::new(),
        recipe = None, seq_len = crate::model::DEFAULT_SEQ_LEN, force = false, strict = false, progress = false,
        wait = 0.0, restarts = "split",
    ))]
    #[allow(clippy::too_many_arguments)]
    fn ingest<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        format: Option<&str>,
        metric: Option<String>,
        metrics: Vec<String>,
        name_template: Option<String>,
        set: Vec<(String, String)>,
        recipe: Option<String>,
        seq_len: i64,
        force: bool,
        strict: bool,
        progress: bool,
        wait: f64,
        restarts: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opts = IngestOptions {
            format: format.map(Format::from_name).transpose()?,
            metrics: MetricSelection {
                loss: metric,
                extra: metrics,
            },
            name_template,
            set,
            recipe,
            seq_len,
            force,
            strict,
            progress,
            wait: wait_of(wait)?,
            restarts: Restarts::from_name(restarts)?,
        };
        let store = self.inner.clone();
        let report = py.detach(move || ingest(&store, &paths, &opts))?;
        report_dict(py, &report)
    }

    /// Import summary rows given as columns of equal length: run `names`, `fields` (per row,
    /// (field, text) pairs), `final_loss` and `smooth_loss` (None where unknown).
    #[pyo3(signature = (
        source, *, names, fields, final_loss, smooth_loss, name_template = None, set = Vec::new(), recipe = None,
        seq_len = crate::model::DEFAULT_SEQ_LEN, wait = 0.0, series = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn import_summaries<'py>(
        &self,
        py: Python<'py>,
        source: String,
        names: Vec<String>,
        fields: Vec<Vec<(String, String)>>,
        final_loss: Vec<Option<f64>>,
        smooth_loss: Vec<Option<f64>>,
        name_template: Option<String>,
        set: Vec<(String, String)>,
        recipe: Option<String>,
        seq_len: i64,
        wait: f64,
        series: Option<Vec<Vec<CheckpointSeries>>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let n = names.len();
        let mut series = series.unwrap_or_else(|| vec![Vec::new(); n]).into_iter();
        if [fields.len(), final_loss.len(), smooth_loss.len(), series.len()]
            .iter()
            .any(|&k| k != n)
        {
            return Err(Error::Invalid(
                "import_summaries: names, fields, final_loss and smooth_loss must have one length".into(),
            )
            .into());
        }
        let rows: Vec<SummaryRow> = names
            .into_iter()
            .zip(fields)
            .zip(final_loss.into_iter().zip(smooth_loss))
            .map(|((name, fields), (final_loss, smooth_loss))| SummaryRow {
                name,
                fields,
                final_loss,
                smooth_loss,
                // (metric, steps, values, tokens): a checkpoint table's points of this run
                series: (series.next().unwrap_or_default().into_iter())
                    .map(|(metric, steps, values, tokens)| store::Series {
                        metric,
                        steps,
                        values,
                        tokens,
                        lr: Vec::new(),
                    })
                    .collect(),
            })
            .collect();
        let opts = SummaryOptions {
            name_template,
            set,
            recipe,
            seq_len,
            wait: wait_of(wait)?,
        };
        let store = self.inner.clone();
        let report = py.detach(move || import_summaries(&store, &source, &rows, &opts))?;
        report_dict(py, &report)
    }

    /// The newest version: its runs file and its segments, each with the runs written to it
    /// and those still live in it (None when all are).
    /// Every file named is verified first (size and checksum, once per process), so the
    /// Polars readers of these paths never decode damaged bytes.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = py.detach(|| {
            let m = self.inner.latest()?;
            self.inner.verify_files(&m).map(|_| m)
        })?;
        let root = self.inner.root();
        let d = PyDict::new(py);
        d.set_item("version", m.version)?;
        d.set_item("n_runs", m.runs.len())?;
        // A version committed as a delta has no runs table file of its own: None (`runs_table`).
        let runs_file = m.runs_file.as_ref().filter(|_| m.runs_table_current());
        d.set_item("runs_file", runs_file.map(|f| root.join(f)))?;
        let segments = PyList::empty(py);
        for seg in &m.segments {
            let live: HashSet<i64> = m
                .runs
                .iter()
                .filter(|r| r.segment.as_deref() == Some(seg.file.as_str()))
                .map(|r| r.run_id)
                .collect();
            let s = PyDict::new(py);
            s.set_item("file", root.join(&seg.file))?;
            s.set_item("rows", seg.rows)?;
            s.set_item("run_ids", seg.run_ids.clone())?;
            if live.len() == seg.run_ids.len() {
                s.set_item("live_runs", py.None())?;
            } else {
                let mut ids: Vec<i64> = live.into_iter().collect();
                ids.sort_unstable();
                s.set_item("live_runs", ids)?;
            }
            segments.append(s)?;
        }
        d.set_item("segments", segments)?;
        Ok(d)
    }

    /// The newest version's runs table, as Parquet bytes built from its run records.
    fn runs_table<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let store = self.inner.clone();
        let bytes = py.detach(move || runs_table_bytes(&store.latest_shared()?.runs))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The points of `run_ids` (of `metric` only, if given), reading only the row groups that
    /// hold them: columns as lists (`tokens` and `lr` with None for null), the metric column as
    /// `metric_names` and `metric_rows` (consecutive rows of each name).
    #[pyo3(signature = (run_ids, metric = None))]
    fn points<'py>(&self, py: Python<'py>, run_ids: Vec<i64>, metric: Option<String>) -> PyResult<Bound<'py, PyDict>> {
        let store = self.inner.clone();
        let p = py.detach(move || store.points(&run_ids, metric.as_deref()))?;
        let d = PyDict::new(py);
        d.set_item("run_id", &p.run_id)?;
        d.set_item("step", &p.step)?;
        d.set_item(
            "tokens",
            p.tokens.iter().map(|&t| (t >= 0).then_some(t)).collect::<Vec<_>>(),
        )?;
        d.set_item("value", &p.value)?;
        d.set_item(
            "lr",
            p.lr.iter().map(|&x| x.is_finite().then_some(x)).collect::<Vec<_>>(),
        )?;
        d.set_item(
            "metric_names",
            p.metric.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        )?;
        d.set_item("metric_rows", p.metric.iter().map(|(_, k)| *k).collect::<Vec<_>>())?;
        Ok(d)
    }

    /// Final losses of every run: columns as lists (run_id, raw_loss, loss, step,
    /// points_used, origin), and the runs file of the version read.
    #[pyo3(signature = (*, metric, smooth, width, unit, weight, at_kind, at_value))]
    #[allow(clippy::too_many_arguments)]
    fn final_losses<'py>(
        &self,
        py: Python<'py>,
        metric: String,
        smooth: &str,
        width: Option<f64>,
        unit: &str,
        weight: Option<f64>,
        at_kind: &str,
        at_value: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let width = width.map(|w| Width::new(w, unit)).transpose()?;
        let smoothing = Smoothing::new(smooth, width, weight)?;
        let at = match at_kind {
            "end" => At::End,
            "step" => At::Step(at_value as i64),
            "tokens" => At::Tokens(at_value as i64),
            "fraction" => At::Fraction(at_value),
            other => return Err(Error::Invalid(format!("unknown budget kind '{other}'")).into()),
        };
        let store = self.inner.clone();
        let (rows, runs_table) = py.detach(move || {
            let manifest = store.latest_shared()?;
            let rows = final_losses(&store, &manifest, &metric, smoothing, at)?;
            Ok::<_, Error>((rows, runs_table_bytes(&manifest.runs)?))
        })?;
        let d = PyDict::new(py);
        // The runs table of the same version, so the caller joins what was read.
        d.set_item("runs_table", PyBytes::new(py, &runs_table))?;
        d.set_item("run_id", rows.iter().map(|r| r.run_id).collect::<Vec<_>>())?;
        d.set_item("raw_loss", rows.iter().map(|r| r.raw_loss).collect::<Vec<_>>())?;
        d.set_item("loss", rows.iter().map(|r| r.loss).collect::<Vec<_>>())?;
        d.set_item("step", rows.iter().map(|r| r.step).collect::<Vec<_>>())?;
        d.set_item("points_used", rows.iter().map(|r| r.points_used).collect::<Vec<_>>())?;
        d.set_item("origin", rows.iter().map(|r| r.origin).collect::<Vec<_>>())?;
        Ok(d)
    }

    /// Check manifests, the runs table and every segment (size, checksum, rows per run);
    /// `deep` also decodes every segment. Damage is reported in the dict, not raised.
    #[pyo3(signature = (deep = false))]
    fn check<'py>(&self, py: Python<'py>, deep: bool) -> PyResult<Bound<'py, PyDict>> {
        let store = self.inner.clone();
        let r = py.detach(move || store.check(deep))?;
        let d = PyDict::new(py);
        d.set_item("version", r.version)?;
        d.set_item("deep", r.deep)?;
        d.set_item("manifests_checked", r.manifests_checked)?;
        d.set_item("files_checked", r.files_checked)?;
        d.set_item("bytes_checked", r.bytes_checked)?;
        d.set_item("unverified", r.unverified.clone())?;
        let damaged = PyList::empty(py);
        for dmg in &r.damaged {
            let item = PyDict::new(py);
            item.set_item("file", &dmg.file)?;
            item.set_item("kind", dmg.kind.name())?;
            item.set_item("detail", &dmg.detail)?;
            item.set_item("recovery", &dmg.recovery)?;
            let runs = PyList::empty(py);
            for run in &dmg.runs {
                let rd = PyDict::new(py);
                rd.set_item("run_id", run.run_id)?;
                rd.set_item("name", &run.name)?;
                rd.set_item("source", &run.source)?;
                rd.set_item("source_exists", run.source_exists)?;
                runs.append(rd)?;
            }
            item.set_item("runs", runs)?;
            damaged.append(item)?;
        }
        d.set_item("damaged", damaged)?;
        d.set_item("text", r.to_string())?;
        Ok(d)
    }

    /// Remove the runs selected by name or glob, source path (or below it), run id, or a
    /// missing source, in one commit (none with `dry_run`): {removed, version, committed}.
    #[pyo3(signature = (*, names = Vec::new(), sources = Vec::new(), run_ids = Vec::new(), missing_source = false,
        dry_run = false, wait = 0.0))]
    #[allow(clippy::too_many_arguments)]
    fn remove<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        sources: Vec<String>,
        run_ids: Vec<i64>,
        missing_source: bool,
        dry_run: bool,
        wait: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let wait = wait_of(wait)?;
        let sel = store::RemoveSelection {
            names,
            sources,
            run_ids,
            missing_source,
        };
        let store = self.inner.clone();
        let r = py.detach(move || store.remove(&sel, dry_run, wait))?;
        let d = PyDict::new(py);
        d.set_item("removed", r.removed)?;
        d.set_item("version", r.version)?;
        d.set_item("committed", r.committed)?;
        Ok(d)
    }

    /// `keep`: how many versions stay readable (the new one included); None: every version
    /// that was the newest in the last 15 minutes, so readers that opened one can finish.
    #[pyo3(signature = (wait = 0.0, keep = None))]
    fn compact<'py>(&self, py: Python<'py>, wait: f64, keep: Option<usize>) -> PyResult<Bound<'py, PyDict>> {
        let wait = wait_of(wait)?;
        let keep = keep.map_or_else(store::Keep::default, store::Keep::Versions);
        let store = self.inner.clone();
        let r = py.detach(move || store.compact_with(wait, keep))?;
        let d = PyDict::new(py);
        d.set_item("version", r.version)?;
        d.set_item("segments_rewritten", r.segments_rewritten)?;
        d.set_item("files_removed", r.files_removed)?;
        d.set_item("bytes_freed", r.bytes_freed)?;
        d.set_item("versions_kept", r.versions_kept)?;
        Ok(d)
    }

    /// Set damaged newest manifests aside, roll back to the newest intact version, rewrite a
    /// damaged runs table; say which runs were lost.
    #[pyo3(signature = (wait = 0.0))]
    fn repair<'py>(&self, py: Python<'py>, wait: f64) -> PyResult<Bound<'py, PyDict>> {
        let wait = wait_of(wait)?;
        let store = self.inner.clone();
        let r = py.detach(move || store.repair(wait))?;
        let d = PyDict::new(py);
        d.set_item("version", r.version)?;
        d.set_item("set_aside", r.set_aside.clone())?;
        d.set_item(
            "lost",
            r.lost
                .iter()
                .map(|a| (a.run_id, a.name.clone(), a.source.clone()))
                .collect::<Vec<_>>(),
        )?;
        d.set_item("lost_known", r.lost_known)?;
        d.set_item("runs_table_rewritten", r.runs_table_rewritten)?;
        d.set_item("text", r.to_string())?;
        Ok(d)
    }
}

/// Quadratic fits of many cells' landscapes (see `crate::cells`): one dict per cell, or
/// None where the points cannot identify a quadratic.
#[pyfunction]
#[pyo3(signature = (cell, x, y, z, draws, seed))]
fn fit_cells<'py>(
    py: Python<'py>,
    cell: Vec<usize>,
    x: Vec<f64>,
    y: Vec<f64>,
    z: Vec<f64>,
    draws: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyList>> {
    if [x.len(), y.len(), z.len()].iter().any(|&n| n != cell.len()) {
        return Err(Error::Invalid("fit_cells: cell, x, y and z must have one length".into()).into());
    }
    let fits = py.detach(move || crate::cells::fit_cells(&cell, &x, &y, &z, draws, seed));
    let out = PyList::empty(py);
    for (fit, spread) in fits {
        let Some(q) = fit else {
            out.append(py.None())?;
            continue;
        };
        let d = PyDict::new(py);
        d.set_item("coef", q.coef.to_vec())?;
        d.set_item("centre", q.centre)?;
        d.set_item("hessian", q.hessian.iter().map(|r| r.to_vec()).collect::<Vec<_>>())?;
        d.set_item("convex", q.convex)?;
        d.set_item("vertex", q.vertex)?;
        d.set_item("r2", q.r2)?;
        d.set_item("points", q.points)?;
        if let Some(s) = spread {
            d.set_item("sd", s.sd)?;
            d.set_item("x_interval", s.x_interval)?;
            d.set_item("y_interval", s.y_interval)?;
            d.set_item("draws", s.draws)?;
            d.set_item("non_convex_draws", s.non_convex)?;
        }
        out.append(d)?;
    }
    Ok(out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fit_cells, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyStore>()?;
    fit::register(m)?;
    curve::register(m)?;
    forecast::register(m)?;
    Ok(())
}
