//! Bindings of the forecast's per-step work (`crate::forecast`). Arrays cross as bytes of
//! native-endian float64 (numpy's `tobytes()` / `frombuffer`): a run's per-step lr is 20k-120k
//! values, and a list would cost more to build than the sums themselves.
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::Error;
use crate::forecast::{self, Decay, Schedule, WsdShape};

fn floats_of(what: &str, bytes: &[u8]) -> Result<Vec<f64>, Error> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Error::Invalid(format!(
            "annealing_areas: {what} must be float64 bytes, got {} bytes (not a multiple of 8)",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_ne_bytes(c.try_into().expect("chunks of 8")))
        .collect())
}

fn bytes_of<'py>(py: Python<'py>, v: &[f64]) -> Bound<'py, PyBytes> {
    let raw: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
    PyBytes::new(py, &raw)
}

/// S1 (lr area) and S2 (annealing area, momentum `lam`) of the per-step `lr` at the positions
/// `at` (nondecreasing, between steps interpolated as numpy.interp): float64 bytes in and out.
#[pyfunction]
#[pyo3(signature = (lr, at, lam = 0.999))]
fn annealing_areas<'py>(
    py: Python<'py>,
    lr: &[u8],
    at: &[u8],
    lam: f64,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let (s1, s2) = py.detach(|| {
        let (lr, at) = (floats_of("lr", lr)?, floats_of("at", at)?);
        forecast::annealing_areas_at(&lr, lam, &at)
    })?;
    Ok((bytes_of(py, &s1), bytes_of(py, &s2)))
}

/// A `steplaw_db.curve.Schedule` from its fields (validated there).
#[allow(clippy::too_many_arguments)]
fn schedule_of(
    peak: f64,
    total_steps: usize,
    warmup_steps: usize,
    decay: &str,
    floor: f64,
    warmup_start: f64,
    decay_start: Option<usize>,
    decay_steps: Option<usize>,
    wsd_shape: &str,
) -> Result<Schedule, Error> {
    let decay = match decay {
        "cosine" => Decay::Cosine,
        "linear" => Decay::Linear,
        "constant" => Decay::Constant,
        "wsd" => {
            let start = decay_start.ok_or_else(|| Error::Invalid("a wsd schedule needs decay_start".into()))?;
            let shape = match wsd_shape {
                "linear" => WsdShape::Linear,
                "exponential" => WsdShape::Exponential,
                "cosine" => WsdShape::Cosine,
                other => return Err(Error::Invalid(format!("unknown wsd_shape '{other}'"))),
            };
            let length = decay_steps.unwrap_or(total_steps.saturating_sub(start));
            Decay::Wsd { start, length, shape }
        }
        other => return Err(Error::Invalid(format!("unknown lr decay '{other}'"))),
    };
    if warmup_steps >= total_steps {
        return Err(Error::Invalid(format!(
            "need warmup_steps < total_steps, got {warmup_steps} and {total_steps}"
        )));
    }
    Ok(Schedule {
        peak,
        total_steps,
        warmup_steps,
        warmup_start,
        floor,
        decay,
    })
}

/// The lr of a `steplaw_db.curve.Schedule` (its fields) at steps `start` .. n - 1, or, with
/// `steps` (int64 bytes), at those steps; float64 bytes.
#[pyfunction]
#[pyo3(signature = (peak, total_steps, warmup_steps, decay, floor, warmup_start, decay_start, decay_steps, wsd_shape, n, start = 0, steps = None))]
#[allow(clippy::too_many_arguments)]
fn schedule_lr<'py>(
    py: Python<'py>,
    peak: f64,
    total_steps: usize,
    warmup_steps: usize,
    decay: &str,
    floor: f64,
    warmup_start: f64,
    decay_start: Option<usize>,
    decay_steps: Option<usize>,
    wsd_shape: &str,
    n: usize,
    start: usize,
    steps: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let sched = schedule_of(
        peak,
        total_steps,
        warmup_steps,
        decay,
        floor,
        warmup_start,
        decay_start,
        decay_steps,
        wsd_shape,
    )?;
    let lr = py.detach(|| match steps {
        None => Ok(sched.lr_range(start, n)),
        Some(raw) if raw.len().is_multiple_of(8) => Ok(raw
            .chunks_exact(8)
            .map(|c| i64::from_ne_bytes(c.try_into().expect("chunks of 8")))
            .map(|t| sched.lr_at(t.max(0) as usize))
            .collect()),
        Some(raw) => Err(Error::Invalid(format!(
            "schedule_lr: steps must be int64 bytes, got {} bytes",
            raw.len()
        ))),
    })?;
    Ok(bytes_of(py, &lr))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(annealing_areas, m)?)?;
    m.add_function(wrap_pyfunction!(schedule_lr, m)?)?;
    Ok(())
}
