//! Bindings of the fitting engine (`crate::fit`): lists and `LinearModel`s in, lists and dicts out; the
//! Python side (`steplaw_db.fit`) builds the frames and the law objects.
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::error::Error;
use crate::fit::bootstrap::{fit_models, BootstrapOptions, Resample};
use crate::fit::chinchilla::{self, ChinchillaOptions, LossData, Params, PARAMS};
use crate::fit::linear::{cell_index, Method, Model};

/// One log-space linear model for `fit_linear`: `target` regressed on `regressors`, whose
/// `columns` (one per regressor) and `y` are already logs; optional `weights` per row.
#[pyclass(module = "steplaw_db._native", name = "LinearModel", frozen)]
struct PyLinearModel {
    model: Model,
}

#[pymethods]
impl PyLinearModel {
    #[new]
    #[pyo3(signature = (*, target, regressors, columns, y, weights = None))]
    fn new(
        target: String,
        regressors: Vec<String>,
        columns: Vec<Vec<f64>>,
        y: Vec<f64>,
        weights: Option<Vec<f64>>,
    ) -> Self {
        PyLinearModel {
            model: Model {
                target,
                regressors,
                columns,
                y,
                weights,
            },
        }
    }

    #[getter]
    fn target(&self) -> &str {
        &self.model.target
    }

    fn __repr__(&self) -> String {
        format!(
            "LinearModel({} ~ {}, {} rows)",
            self.model.target,
            self.model.regressors.join(" + "),
            self.model.y.len()
        )
    }
}

/// Fit log-space linear models sharing their rows, then bootstrap them.
/// `models`: `LinearModel`s; `cells`: a label per row. Returns `fits` (per model: `coef`,
/// `r2`, `scale`, `iterations`, `converged`), `draws` (per model: a coefficient list per
/// draw) and `failed`.
#[pyfunction]
#[pyo3(signature = (models, cells, method = "ols", huber_t = 1.345, draws = 0, resample = "rows", seed = 42))]
#[allow(clippy::too_many_arguments)]
fn fit_linear<'py>(
    py: Python<'py>,
    models: Vec<PyRef<'py, PyLinearModel>>,
    cells: Vec<u64>,
    method: &str,
    huber_t: f64,
    draws: usize,
    resample: &str,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let models: Vec<Model> = models.iter().map(|m| m.model.clone()).collect();
    let method = Method::from_name(method, huber_t)?;
    let boot = BootstrapOptions {
        draws,
        resample: Resample::from_name(resample)?,
        seed,
    };
    let (cells, _) = cell_index(&cells);
    let report = py.detach(move || fit_models(&models, &cells, method, &boot))?;
    let out = PyDict::new(py);
    let fits = PyList::empty(py);
    for f in &report.fits {
        let d = PyDict::new(py);
        d.set_item("coef", f.coef.clone())?;
        d.set_item("r2", f.r2)?;
        d.set_item("scale", f.scale)?;
        d.set_item("iterations", f.iterations)?;
        d.set_item("converged", f.converged)?;
        fits.append(d)?;
    }
    out.set_item("fits", fits)?;
    out.set_item("draws", report.draws)?;
    out.set_item("failed", report.failed)?;
    Ok(out)
}

fn params_of(v: &[f64]) -> Result<Params, Error> {
    v.try_into().map_err(|_| {
        Error::Invalid(format!(
            "a Chinchilla start needs {PARAMS} values [a, b, e, alpha, beta], got {}",
            v.len()
        ))
    })
}

/// Fit L = E + A/N^alpha + B/D^beta (Huber in log space) from `starts` (default: the
/// 4,500-point grid) and bootstrap it. Parameters are [a, b, e, alpha, beta] with
/// A = e^a, B = e^b, E = e^e.
#[pyfunction]
#[pyo3(signature = (n, d, loss, delta = 1e-3, starts = None, draws = 0, seed = 42, bootstrap_starts = 8))]
#[allow(clippy::too_many_arguments)]
fn fit_chinchilla<'py>(
    py: Python<'py>,
    n: Vec<f64>,
    d: Vec<f64>,
    loss: Vec<f64>,
    delta: f64,
    starts: Option<Vec<Vec<f64>>>,
    draws: usize,
    seed: u64,
    bootstrap_starts: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let data = LossData::new(&n, &d, &loss)?;
    let starts: Vec<Params> = match starts {
        Some(s) => s.iter().map(|v| params_of(v)).collect::<Result<_, _>>()?,
        None => chinchilla::default_grid(),
    };
    let opts = ChinchillaOptions {
        delta,
        draws,
        seed,
        bootstrap_starts,
        ..Default::default()
    };
    let fit = py.detach(move || chinchilla::fit(&data, &starts, &opts))?;
    let out = PyDict::new(py);
    out.set_item("params", fit.best.params.to_vec())?;
    out.set_item("objective", fit.best.objective)?;
    out.set_item("converged", fit.best.converged)?;
    out.set_item("iterations", fit.best.iterations)?;
    out.set_item("starts", fit.starts)?;
    out.set_item("starts_converged", fit.starts_converged)?;
    out.set_item("draws", fit.draws.iter().map(|p| p.to_vec()).collect::<Vec<_>>())?;
    out.set_item("failed", fit.failed)?;
    Ok(out)
}

/// The Chinchilla objective and its gradient at `params` (unit weights), for checks
/// against an independent implementation.
#[pyfunction]
#[pyo3(signature = (params, n, d, loss, delta = 1e-3))]
fn chinchilla_objective(
    params: Vec<f64>,
    n: Vec<f64>,
    d: Vec<f64>,
    loss: Vec<f64>,
    delta: f64,
) -> PyResult<(f64, Vec<f64>)> {
    let p = params_of(&params)?;
    let data = LossData::new(&n, &d, &loss)?;
    let mut grad = vec![0.0; PARAMS];
    let value = chinchilla::objective(&p, &data, &vec![1.0; data.len()], delta, &mut grad);
    Ok((value, grad))
}

/// Hoffmann et al.'s 4,500 starts, [a, b, e, alpha, beta] each.
#[pyfunction]
fn chinchilla_grid() -> Vec<Vec<f64>> {
    chinchilla::default_grid().iter().map(|p| p.to_vec()).collect()
}

/// The configuration fields of a run, declared once in `crate::model`: one dict each (`name`,
/// `type`: int, float or text, `unit`, `aliases`, `doc`), in the runs table's column order.
#[pyfunction]
fn run_fields<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for f in crate::model::CONFIG_FIELDS {
        let d = PyDict::new(py);
        d.set_item("name", f.name)?;
        d.set_item("type", f.kind.name())?;
        d.set_item("unit", f.unit)?;
        d.set_item("aliases", f.aliases.to_vec())?;
        d.set_item("doc", f.doc)?;
        out.append(d)?;
    }
    Ok(out)
}

/// The series names every reader recognises, by role (`loss`, `val_loss`, `lr`, `step`,
/// `tokens`), best first.
#[pyfunction]
fn metric_names<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (role, names) in crate::model::metric_names::ROLES {
        d.set_item(role, names.to_vec())?;
    }
    Ok(d)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DEFAULT_SEQ_LEN", crate::model::DEFAULT_SEQ_LEN)?;
    m.add_function(wrap_pyfunction!(run_fields, m)?)?;
    m.add_function(wrap_pyfunction!(metric_names, m)?)?;
    m.add_class::<PyLinearModel>()?;
    m.add_function(wrap_pyfunction!(fit_linear, m)?)?;
    m.add_function(wrap_pyfunction!(fit_chinchilla, m)?)?;
    m.add_function(wrap_pyfunction!(chinchilla_objective, m)?)?;
    m.add_function(wrap_pyfunction!(chinchilla_grid, m)?)?;
    Ok(())
}
