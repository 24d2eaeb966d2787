//! Schedule-aware loss-curve laws: laws that give the loss at every step from the
//! per-step learning rate, fitted on a few full curves and used to predict the curve of
//! any other schedule. Two forms: the Multi-Power Law (`mpl`) and the LR-annealing law of
//! Tissue et al. (`annealing`). Fitted by minimising sum_i Huber_delta(ln L_i - ln L_hat_i)
//! over every point of every curve (the MPL authors' objective), by L-BFGS.
pub mod annealing;
pub mod mpl;

use crate::error::{Error, Result};
use crate::fit::lbfgs::{minimize, LbfgsOptions};
use crate::numeric::{huber, solve_dense};

pub use mpl::Method;

/// One curve: the learning rate at every step 0..=last evaluated step, the steps where
/// the loss is evaluated (logged), and optionally the measured loss there.
#[derive(Debug, Clone)]
pub struct Curve {
    lr: Vec<f64>,
    /// prefix[s] = sum of lr[0..=s].
    prefix: Vec<f64>,
    steps: Vec<usize>,
    loss: Option<Vec<f64>>,
    /// Steps k >= 1 where lr[k] != lr[k-1]: the only ones the MPL loss drop sums over.
    changes: Vec<usize>,
}

impl Curve {
    /// Validates: `lr` finite, >= 0 at step 0 and > 0 after it (the MPL takes eta^-gamma);
    /// `steps` strictly increasing, covered by `lr`, with a positive area sum(lr[0..=s]);
    /// `loss` (if any) one finite positive value per step.
    pub fn new(lr: Vec<f64>, steps: Vec<usize>, loss: Option<Vec<f64>>) -> Result<Curve> {
        if steps.is_empty() {
            return Err(Error::Invalid("a curve needs at least one step".into()));
        }
        if steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Invalid("a curve's steps must be strictly increasing".into()));
        }
        let last = *steps.last().unwrap();
        if last >= lr.len() {
            return Err(Error::Invalid(format!(
                "the learning rate is known for steps 0..{} but the curve has a point at step {last}",
                lr.len().saturating_sub(1)
            )));
        }
        let mut lr = lr;
        lr.truncate(last + 1);
        if let Some(bad) = lr.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(Error::Invalid(format!(
                "the learning rate at step {bad} is {} (must be finite and >= 0)",
                lr[bad]
            )));
        }
        if let Some(bad) = lr.iter().skip(1).position(|v| *v <= 0.0) {
            return Err(Error::Invalid(format!(
                "the learning rate is 0 at step {} : the laws need a positive learning rate after step 0",
                bad + 1
            )));
        }
        if let Some(loss) = &loss {
            if loss.len() != steps.len() {
                return Err(Error::Invalid(format!(
                    "{} loss values for {} steps",
                    loss.len(),
                    steps.len()
                )));
            }
            if let Some(i) = loss.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(Error::Invalid(format!(
                    "the loss at step {} is {} (must be finite and > 0)",
                    steps[i], loss[i]
                )));
            }
        }
        let mut prefix = Vec::with_capacity(lr.len());
        let mut sum = 0.0;
        for v in &lr {
            sum += v;
            prefix.push(sum);
        }
        if prefix[steps[0]] <= 0.0 {
            return Err(Error::Invalid(format!(
                "no learning-rate area before step {}: the laws are undefined there (S1 = 0)",
                steps[0]
            )));
        }
        let changes = (1..lr.len()).filter(|&k| lr[k] != lr[k - 1]).collect();
        Ok(Curve {
            lr,
            prefix,
            steps,
            loss,
            changes,
        })
    }

    pub fn lr(&self) -> &[f64] {
        &self.lr
    }
    pub fn steps(&self) -> &[usize] {
        &self.steps
    }
    pub fn loss(&self) -> Option<&[f64]> {
        self.loss.as_deref()
    }
    pub fn changes(&self) -> &[usize] {
        &self.changes
    }
    /// sum of lr[0..=s].
    pub fn prefix(&self, s: usize) -> f64 {
        self.prefix[s]
    }
    /// S1(s), the learning-rate area up to and including step s.
    pub fn area(&self, s: usize) -> f64 {
        self.prefix[s]
    }
}

/// A law's form and its fixed settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Form {
    Mpl(Method),
    Annealing { lambda: f64 },
}

impl Form {
    pub fn n_params(&self) -> usize {
        match self {
            Form::Mpl(_) => mpl::PARAMS,
            Form::Annealing { .. } => annealing::PARAMS,
        }
    }

    pub fn names(&self) -> &'static [&'static str] {
        match self {
            Form::Mpl(_) => &mpl::NAMES,
            Form::Annealing { .. } => &annealing::NAMES,
        }
    }

    fn check(&self, p: &[f64]) -> Result<()> {
        if p.len() != self.n_params() {
            return Err(Error::Invalid(format!(
                "this law has {} parameters [{}], got {}",
                self.n_params(),
                self.names().join(", "),
                p.len()
            )));
        }
        if p.iter().any(|v| !v.is_finite()) {
            return Err(Error::Invalid("the law's parameters must be finite".into()));
        }
        if let Form::Annealing { lambda } = self {
            if !(0.0..1.0).contains(lambda) {
                return Err(Error::Invalid(format!("lambda must be in [0, 1), got {lambda}")));
            }
        }
        Ok(())
    }

    /// Predictions at the curve's steps, and the Jacobian (row-major, n_params per step)
    /// when asked.
    fn evaluate(&self, p: &[f64], curve: &Curve, jacobian: Option<&mut Vec<f64>>) -> Vec<f64> {
        match (self, jacobian) {
            (Form::Mpl(method), None) => mpl::evaluate(p, curve, *method, None),
            (Form::Mpl(method), Some(out)) => {
                let mut rows = Vec::new();
                let pred = mpl::evaluate(p, curve, *method, Some(&mut rows));
                *out = rows.into_iter().flatten().collect();
                pred
            }
            (Form::Annealing { lambda }, None) => annealing::evaluate(p, curve, *lambda, None),
            (Form::Annealing { lambda }, Some(out)) => {
                let mut rows = Vec::new();
                let pred = annealing::evaluate(p, curve, *lambda, Some(&mut rows));
                *out = rows.into_iter().flatten().collect();
                pred
            }
        }
    }
}

/// The law's loss at each of the curve's steps.
pub fn predict(form: Form, p: &[f64], curve: &Curve) -> Result<Vec<f64>> {
    form.check(p)?;
    Ok(form.evaluate(p, curve, None))
}

/// Predictions and their Jacobian (one row of n_params per step).
pub fn predict_with_jacobian(form: Form, p: &[f64], curve: &Curve) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    form.check(p)?;
    let mut jac = Vec::new();
    let pred = form.evaluate(p, curve, Some(&mut jac));
    Ok((pred, jac.chunks(form.n_params()).map(<[f64]>::to_vec).collect()))
}

/// sum over curves and points of Huber_delta(ln loss - ln prediction) at the natural
/// parameters `p`; `grad` (same length as p) receives its gradient. +inf where a
/// prediction is not positive.
pub fn objective(form: Form, p: &[f64], curves: &[Curve], delta: f64, grad: &mut [f64]) -> Result<f64> {
    form.check(p)?;
    if curves.iter().any(|c| c.loss.is_none()) {
        return Err(Error::Invalid("every curve of a fit needs its measured loss".into()));
    }
    if !(delta > 0.0 && delta.is_finite()) {
        return Err(Error::Invalid(format!("the Huber delta must be positive, got {delta}")));
    }
    Ok(objective_unchecked(form, p, curves, delta, grad))
}

fn objective_unchecked(form: Form, p: &[f64], curves: &[Curve], delta: f64, grad: &mut [f64]) -> f64 {
    let n = form.n_params();
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut total = 0.0;
    let mut jac = Vec::new();
    for curve in curves {
        let pred = form.evaluate(p, curve, Some(&mut jac));
        for (i, (&l_hat, &l)) in pred.iter().zip(curve.loss.as_deref().unwrap_or_default()).enumerate() {
            if !(l_hat > 0.0 && l_hat.is_finite()) {
                return f64::INFINITY;
            }
            let (rho, psi) = huber(l.ln() - l_hat.ln(), delta);
            total += rho;
            // d rho / d l_hat = psi * d(ln l - ln l_hat)/d l_hat = -psi / l_hat
            let w = -psi / l_hat;
            for (g, d) in grad.iter_mut().zip(&jac[i * n..(i + 1) * n]) {
                *g += w * d;
            }
        }
    }
    total
}

#[derive(Debug, Clone)]
pub struct FitOptions {
    pub delta: f64,
    /// Starting parameter vectors (natural scale); empty: the automatic starts (see `fit`).
    pub starts: Vec<Vec<f64>>,
    pub max_iterations: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            delta: 1e-3,
            starts: Vec::new(),
            max_iterations: 3000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FitResult {
    pub params: Vec<f64>,
    /// sum of Huber terms at `params`.
    pub objective: f64,
    pub points: usize,
    pub iterations: usize,
    pub evaluations: usize,
    pub converged: bool,
    pub termination: String,
    /// Index of the start that gave the best fit, and all starts tried.
    pub best_start: usize,
    pub starts: Vec<Vec<f64>>,
}

/// L-BFGS iterations from each start before the best one is run to convergence.
const SCREEN_ITERATIONS: usize = 40;

/// The automatic MPL starts' (C, beta, gamma): the authors' single start (1, 0.5, 0.5)
/// and two on either side, since the drop term's shape is the least identified part.
const MPL_SHAPE_STARTS: [[f64; 3]; 3] = [[1.0, 0.5, 0.5], [3.0, 0.4, 0.7], [0.3, 0.8, 0.3]];

/// Fit the law to the curves. Without explicit starts, each start is built as the MPL
/// authors do: fix the nonlinear shape (MPL: C, beta, gamma from MPL_SHAPE_STARTS;
/// annealing: nothing), and for alpha on a grid solve the remaining linear coefficients
/// (L0, A and B or C) by least squares; keep the best alpha. Then L-BFGS on every
/// parameter (positive parameters in log space): SCREEN_ITERATIONS from each start, then
/// the lowest to convergence.
pub fn fit(form: Form, curves: &[Curve], opts: &FitOptions) -> Result<FitResult> {
    if curves.is_empty() {
        return Err(Error::InsufficientData("no curves to fit".into()));
    }
    let points: usize = curves.iter().map(|c| c.steps.len()).sum();
    let n = form.n_params();
    if points <= n {
        return Err(Error::InsufficientData(format!(
            "too few points to fit the law's {n} parameters: {points}"
        )));
    }
    let mut dummy = vec![0.0; n];
    objective(form, &vec![1.0; n], curves, opts.delta, &mut dummy)?; // validates curves and delta
    let starts = if opts.starts.is_empty() {
        automatic_starts(form, curves)?
    } else {
        opts.starts.clone()
    };
    if starts.is_empty() {
        return Err(Error::InsufficientData(
            "no usable start: the curves do not look like decreasing loss curves".into(),
        ));
    }
    for s in &starts {
        form.check(s)?;
        if s[1..].iter().any(|v| *v <= 0.0) {
            return Err(Error::Invalid(
                "every parameter but L0 must be positive in a start".into(),
            ));
        }
    }
    let scale = 1.0 / (points as f64 * opts.delta * opts.delta);
    let to_natural = |x: &[f64]| -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(i, v)| if i == 0 { *v } else { v.exp() })
            .collect()
    };
    let lbfgs = LbfgsOptions {
        gtol: 1e-7,
        ftol: 1e-12,
        max_iterations: opts.max_iterations,
        max_evaluations: 4 * opts.max_iterations,
        ..Default::default()
    };

    let mut g_nat = vec![0.0; n];
    let mut run = |x0: &[f64], lbfgs: &LbfgsOptions| {
        minimize(
            |x: &[f64], g: &mut [f64]| {
                let p = to_natural(x);
                let f = objective_unchecked(form, &p, curves, opts.delta, &mut g_nat);
                for i in 0..n {
                    g[i] = scale * g_nat[i] * if i == 0 { 1.0 } else { p[i] };
                }
                scale * f
            },
            x0,
            lbfgs,
        )
    };
    // A short run from every start, then the best one to convergence: the starts differ
    // mostly in the drop term's shape, and a few dozen iterations tell them apart.
    let short = LbfgsOptions {
        max_iterations: SCREEN_ITERATIONS.min(lbfgs.max_iterations),
        ..lbfgs.clone()
    };
    let mut screened: Option<(usize, crate::fit::lbfgs::LbfgsResult)> = None;
    let mut used = (0, 0);
    for (index, start) in starts.iter().enumerate() {
        let x0: Vec<f64> = start
            .iter()
            .enumerate()
            .map(|(i, v)| if i == 0 { *v } else { v.ln() })
            .collect();
        let r = if starts.len() == 1 {
            run(&x0, &lbfgs)
        } else {
            run(&x0, &short)
        };
        used = (used.0 + r.iterations, used.1 + r.evaluations);
        if r.f.is_finite() && screened.as_ref().is_none_or(|(_, b)| r.f < b.f) {
            screened = Some((index, r));
        }
    }
    let (best_start, mut r) = screened.ok_or_else(|| {
        Error::InsufficientData("the fit failed from every start (the prediction was never positive)".into())
    })?;
    if starts.len() > 1 && !r.converged {
        let x0 = r.x.clone();
        r = run(&x0, &lbfgs);
        used = (used.0 + r.iterations, used.1 + r.evaluations);
    }
    Ok(FitResult {
        params: to_natural(&r.x),
        objective: r.f / scale,
        points,
        iterations: used.0,
        evaluations: used.1,
        converged: r.converged,
        termination: format!("{:?}", r.termination),
        best_start,
        starts,
    })
}

/// Least squares of y on three columns (tiny ridge on the scaled normal equations, so a
/// column that is constant zero, e.g. the drop term of constant-lr curves, gets 0).
fn least_squares3(cols: [&[f64]; 3], y: &[f64]) -> [f64; 3] {
    let norms: Vec<f64> = cols
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300))
        .collect();
    let mut a = [[0.0; 3]; 3];
    let mut b = [0.0; 3];
    for r in 0..3 {
        for c in 0..3 {
            a[r][c] = cols[r].iter().zip(cols[c]).map(|(x, y)| x * y).sum::<f64>() / (norms[r] * norms[c]);
        }
        a[r][r] += 1e-10;
        b[r] = cols[r].iter().zip(y).map(|(x, y)| x * y).sum::<f64>() / norms[r];
    }
    // Only non-finite data makes the ridged system unsolvable: NaN starts, as before.
    let x = solve_dense(a, b).unwrap_or([f64::NAN; 3]);
    std::array::from_fn(|i| x[i] / norms[i])
}

fn automatic_starts(form: Form, curves: &[Curve]) -> Result<Vec<Vec<f64>>> {
    let loss: Vec<f64> = curves.iter().flat_map(|c| c.loss.clone().unwrap_or_default()).collect();
    let area: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.steps.iter().map(|&s| c.area(s)).collect::<Vec<_>>())
        .collect();
    let ones = vec![1.0; loss.len()];
    let (lo, hi) = loss
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let lr_max = curves.iter().flat_map(|c| c.lr.iter()).fold(0.0f64, |a, &v| a.max(v));
    // Where the data cannot set the drop coefficient (e.g. only constant-lr curves): a
    // drop of the order of the loss range over the lr range.
    let fallback_drop = ((hi - lo) / lr_max).max(1e-12);

    // The third column, fixed by the shape: MPL's LD(s) (its B column) or minus S2.
    let mut shapes: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    match form {
        Form::Mpl(_) => {
            for [c, beta, gamma] in MPL_SHAPE_STARTS {
                let p = [0.0, 0.0, 0.0, 1.0, c, beta, gamma];
                let ld: Vec<f64> = curves.iter().flat_map(|cu| form.evaluate(&p, cu, None)).collect();
                shapes.push((ld, vec![c, beta, gamma]));
            }
        }
        Form::Annealing { lambda } => {
            let s2: Vec<f64> = curves
                .iter()
                .flat_map(|c| annealing::annealing_area(c, lambda))
                .collect();
            shapes.push((s2.iter().map(|v| -v).collect(), Vec::new()));
        }
    }
    let mut starts = Vec::new();
    for (third, shape) in shapes {
        let mut best: Option<(f64, Vec<f64>)> = None;
        for i in 1..=40 {
            let alpha = 0.05 * i as f64;
            let power: Vec<f64> = area.iter().map(|s| s.powf(-alpha)).collect();
            let [l0, a, k] = least_squares3([&ones, &power, &third], &loss);
            if !(a > 0.0 && l0.is_finite()) {
                continue;
            }
            let k = if k > 0.0 { k } else { fallback_drop };
            let sse: f64 = (0..loss.len())
                .map(|j| (l0 + a * power[j] + k * third[j] - loss[j]).powi(2))
                .sum();
            if best.as_ref().is_none_or(|b| sse < b.0) {
                let mut p = vec![l0, a, alpha, k];
                p.extend(&shape);
                best = Some((sse, p));
            }
        }
        if let Some((_, p)) = best {
            starts.push(p);
        }
    }
    Ok(starts)
}

#[cfg(test)]
pub(crate) mod tests;
