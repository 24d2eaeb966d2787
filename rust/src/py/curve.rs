//! Bindings of the loss-curve laws (`crate::curve`): per-step learning rates, steps and
//! losses as lists in, lists and dicts out; `steplaw_db.curve` builds the objects.
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::curve::{self, Curve, FitOptions, Form, Method};
use crate::error::Error;

fn form_of(name: &str, lam: f64, method: &str) -> Result<Form, Error> {
    match name {
        "mpl" => Ok(Form::Mpl(Method::from_name(method)?)),
        "annealing" => Ok(Form::Annealing { lambda: lam }),
        other => Err(Error::Invalid(format!(
            "unknown curve law '{other}' (expected mpl or annealing)"
        ))),
    }
}

/// (lr per step, steps, loss) triples to validated curves.
fn curves_of(curves: Vec<(Vec<f64>, Vec<usize>, Vec<f64>)>) -> Result<Vec<Curve>, Error> {
    curves
        .into_iter()
        .enumerate()
        .map(|(i, (lr, steps, loss))| {
            Curve::new(lr, steps, Some(loss)).map_err(|e| Error::Invalid(format!("curve {i}: {e}")))
        })
        .collect()
}

/// The law's loss at `steps` given the per-step `lr` (index = step); with `jacobian`, also
/// the partial derivatives in each parameter (one row per step).
#[pyfunction]
#[pyo3(signature = (form, params, lr, steps, lam = 0.999, method = "auto", jacobian = false))]
#[allow(clippy::too_many_arguments)]
fn curve_predict(
    py: Python<'_>,
    form: &str,
    params: Vec<f64>,
    lr: Vec<f64>,
    steps: Vec<usize>,
    lam: f64,
    method: &str,
    jacobian: bool,
) -> PyResult<Py<PyAny>> {
    let form = form_of(form, lam, method)?;
    let curve = Curve::new(lr, steps, None)?;
    if jacobian {
        let (pred, jac) = py.detach(|| curve::predict_with_jacobian(form, &params, &curve))?;
        Ok((pred, jac).into_pyobject(py)?.into_any().unbind())
    } else {
        let pred = py.detach(|| curve::predict(form, &params, &curve))?;
        Ok(pred.into_pyobject(py)?.into_any().unbind())
    }
}

/// sum of Huber_delta(ln loss - ln prediction) over the curves, and its gradient in the
/// natural parameters.
#[pyfunction]
#[pyo3(signature = (form, params, curves, delta = 1e-3, lam = 0.999, method = "auto"))]
fn curve_objective(
    py: Python<'_>,
    form: &str,
    params: Vec<f64>,
    curves: Vec<(Vec<f64>, Vec<usize>, Vec<f64>)>,
    delta: f64,
    lam: f64,
    method: &str,
) -> PyResult<(f64, Vec<f64>)> {
    let form = form_of(form, lam, method)?;
    let curves = curves_of(curves)?;
    let mut grad = vec![0.0; form.n_params()];
    let value = py.detach(|| curve::objective(form, &params, &curves, delta, &mut grad))?;
    Ok((value, grad))
}

/// Fit the law to the curves by L-BFGS from `starts` (None: automatic starts). Returns
/// `params`, `names`, `objective`, `points`, `iterations`, `evaluations`, `converged`,
/// `termination`, `best_start`, `starts`.
#[pyfunction]
#[pyo3(signature = (form, curves, delta = 1e-3, lam = 0.999, method = "auto", starts = None, max_iterations = 3000))]
#[allow(clippy::too_many_arguments)]
fn curve_fit<'py>(
    py: Python<'py>,
    form: &str,
    curves: Vec<(Vec<f64>, Vec<usize>, Vec<f64>)>,
    delta: f64,
    lam: f64,
    method: &str,
    starts: Option<Vec<Vec<f64>>>,
    max_iterations: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let form = form_of(form, lam, method)?;
    let curves = curves_of(curves)?;
    let opts = FitOptions {
        delta,
        starts: starts.unwrap_or_default(),
        max_iterations,
    };
    let r = py.detach(|| curve::fit(form, &curves, &opts))?;
    let d = PyDict::new(py);
    d.set_item("params", r.params)?;
    d.set_item("names", form.names().to_vec())?;
    d.set_item("objective", r.objective)?;
    d.set_item("points", r.points)?;
    d.set_item("iterations", r.iterations)?;
    d.set_item("evaluations", r.evaluations)?;
    d.set_item("converged", r.converged)?;
    d.set_item("termination", r.termination)?;
    d.set_item("best_start", r.best_start)?;
    d.set_item("starts", r.starts)?;
    Ok(d)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(curve_predict, m)?)?;
    m.add_function(wrap_pyfunction!(curve_objective, m)?)?;
    m.add_function(wrap_pyfunction!(curve_fit, m)?)?;
    Ok(())
}
