//! The only code that touches Python: argument conversion, releasing the GIL around the
//! core's work, and mapping `Error` onto `steplaw_db.errors`.
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

mod curve;
mod fit;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::error::Error;
use crate::finals::final_losses;
use crate::ingest::summary::{import_summaries, SummaryOptions, SummaryRow};
use crate::ingest::{ingest, Format, IngestOptions, IngestReport, MetricSelection};
use crate::smooth::{At, Smoothing, Width};
use crate::store;

/// Raise the `steplaw_db.errors` class that matches `e` (a pure-Python hierarchy, so its
/// classes can also derive from OSError / ValueError).
fn to_py(e: Error) -> PyErr {
    let class = match &e {
        Error::Io { .. } | Error::Store { .. } => "StoreError",
        Error::Locked { .. } => "StoreLockedError",
        Error::Parse { .. } => "ParseError",
        Error::Invalid(_) => "InvalidArgumentError",
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

fn get<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        Some(v) if !v.is_none() => Ok(Some(v.extract::<T>().map_err(Into::into)?)),
        _ => Ok(None),
    }
}

fn pairs(d: &Bound<'_, PyDict>, key: &str) -> PyResult<Vec<(String, String)>> {
    Ok(get::<Vec<(String, String)>>(d, key)?.unwrap_or_default())
}

fn wait_of(d: &Bound<'_, PyDict>) -> PyResult<Duration> {
    let secs = get::<f64>(d, "wait")?.unwrap_or(0.0).max(0.0);
    Ok(Duration::from_secs_f64(secs))
}

fn report_dict<'py>(py: Python<'py>, r: &IngestReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("runs_found", r.runs_found)?;
    d.set_item("added", r.added)?;
    d.set_item("updated", r.updated)?;
    d.set_item("unchanged", r.unchanged)?;
    d.set_item("failed", r.failed.clone())?;
    d.set_item("points", r.points)?;
    d.set_item("bytes_read", r.bytes_read)?;
    d.set_item("malformed_lines", r.malformed_lines)?;
    d.set_item("warnings", r.warnings.clone())?;
    d.set_item("seconds", r.seconds)?;
    d.set_item("version", r.version)?;
    d.set_item("committed", r.committed)?;
    Ok(d)
}

#[pyclass(module = "steplaw_db._native", name = "Store", frozen)]
struct PyStore {
    inner: store::Store,
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (path, create = true))]
    fn new(path: PathBuf, create: bool) -> PyResult<Self> {
        Ok(PyStore {
            inner: store::Store::open(path, create).map_err(to_py)?,
        })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    /// Ingest runs found under `paths`; `options` as `steplaw_db.Store.ingest` documents.
    fn ingest<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        options: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opts = IngestOptions {
            format: get::<String>(options, "format")?
                .map(|f| Format::from_name(&f))
                .transpose()
                .map_err(to_py)?,
            metrics: MetricSelection {
                loss: get(options, "metric")?,
                extra: get::<Vec<String>>(options, "metrics")?.unwrap_or_default(),
            },
            name_template: get(options, "name_template")?,
            set: pairs(options, "set")?,
            recipe: get(options, "recipe")?,
            seq_len: get(options, "seq_len")?.unwrap_or(crate::model::DEFAULT_SEQ_LEN),
            force: get(options, "force")?.unwrap_or(false),
            strict: get(options, "strict")?.unwrap_or(false),
            progress: get(options, "progress")?.unwrap_or(false),
            wait: wait_of(options)?,
        };
        let store = self.inner.clone();
        let report = py.detach(move || ingest(&store, &paths, &opts)).map_err(to_py)?;
        report_dict(py, &report)
    }

    /// Import summary rows: each a dict with `name`, `fields` (list of (field, text)),
    /// `final_loss`, `smooth_loss`.
    fn import_summaries<'py>(
        &self,
        py: Python<'py>,
        source: String,
        rows: &Bound<'py, PyList>,
        options: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let rows: Vec<SummaryRow> = rows
            .iter()
            .map(|r| {
                let d = r.cast::<PyDict>()?;
                Ok(SummaryRow {
                    name: get(d, "name")?.unwrap_or_default(),
                    fields: pairs(d, "fields")?,
                    final_loss: get(d, "final_loss")?,
                    smooth_loss: get(d, "smooth_loss")?,
                })
            })
            .collect::<PyResult<_>>()?;
        let opts = SummaryOptions {
            name_template: get(options, "name_template")?,
            set: pairs(options, "set")?,
            recipe: get(options, "recipe")?,
            seq_len: get(options, "seq_len")?.unwrap_or(crate::model::DEFAULT_SEQ_LEN),
            wait: wait_of(options)?,
        };
        let store = self.inner.clone();
        let report = py
            .detach(move || import_summaries(&store, &source, &rows, &opts))
            .map_err(to_py)?;
        report_dict(py, &report)
    }

    /// The newest version: its runs file and its segments, each with the runs written to it
    /// and those still live in it (None when all are).
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = py.detach(|| self.inner.latest()).map_err(to_py)?;
        let root = self.inner.root();
        let d = PyDict::new(py);
        d.set_item("version", m.version)?;
        d.set_item("n_runs", m.runs.len())?;
        d.set_item("runs_file", m.runs_file.as_ref().map(|f| root.join(f)))?;
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

    /// Final losses of every run: columns as lists (run_id, raw_loss, loss, step,
    /// points_used, origin), and the runs file of the version read.
    #[pyo3(signature = (metric, smooth, width, unit, weight, at_kind, at_value))]
    #[allow(clippy::too_many_arguments)]
    fn final_losses<'py>(
        &self,
        py: Python<'py>,
        metric: String,
        smooth: String,
        width: Option<f64>,
        unit: String,
        weight: Option<f64>,
        at_kind: String,
        at_value: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let width = width.map(|w| Width::new(w, &unit)).transpose().map_err(to_py)?;
        let smoothing = Smoothing::new(&smooth, width, weight).map_err(to_py)?;
        let at = match at_kind.as_str() {
            "end" => At::End,
            "step" => At::Step(at_value as i64),
            "tokens" => At::Tokens(at_value as i64),
            "fraction" => At::Fraction(at_value),
            other => return Err(to_py(Error::Invalid(format!("unknown budget kind '{other}'")))),
        };
        let store = self.inner.clone();
        let (rows, manifest) = py
            .detach(move || {
                let manifest = store.latest()?;
                final_losses(&store, &manifest, &metric, smoothing, at).map(|rows| (rows, manifest))
            })
            .map_err(to_py)?;
        let d = PyDict::new(py);
        // The runs table of the same version, so the caller joins what was read.
        d.set_item(
            "runs_file",
            manifest.runs_file.as_ref().map(|f| self.inner.root().join(f)),
        )?;
        d.set_item("run_id", rows.iter().map(|r| r.run_id).collect::<Vec<_>>())?;
        d.set_item("raw_loss", rows.iter().map(|r| r.raw_loss).collect::<Vec<_>>())?;
        d.set_item("loss", rows.iter().map(|r| r.loss).collect::<Vec<_>>())?;
        d.set_item("step", rows.iter().map(|r| r.step).collect::<Vec<_>>())?;
        d.set_item("points_used", rows.iter().map(|r| r.points_used).collect::<Vec<_>>())?;
        d.set_item("origin", rows.iter().map(|r| r.origin).collect::<Vec<_>>())?;
        Ok(d)
    }

    #[pyo3(signature = (wait = 0.0))]
    fn compact<'py>(&self, py: Python<'py>, wait: f64) -> PyResult<Bound<'py, PyDict>> {
        let store = self.inner.clone();
        let r = py
            .detach(move || store.compact(Duration::from_secs_f64(wait.max(0.0))))
            .map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("version", r.version)?;
        d.set_item("segments_rewritten", r.segments_rewritten)?;
        d.set_item("files_removed", r.files_removed)?;
        d.set_item("bytes_freed", r.bytes_freed)?;
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
        return Err(to_py(Error::Invalid(
            "fit_cells: cell, x, y and z must have one length".into(),
        )));
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
    Ok(())
}
