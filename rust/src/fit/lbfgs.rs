//! A small limited-memory BFGS minimiser (Nocedal & Wright, Numerical Optimization, 2nd ed.,
//! algorithms 7.4 and 3.5/3.6): two-loop recursion for the direction, a strong Wolfe line
//! search with safeguarded cubic interpolation for the step. Unconstrained; the objective
//! returns its value and fills the gradient in one call, so shared work (the model's
//! predictions) is done once per point.

/// Stopping rules and memory. The defaults follow scipy's L-BFGS-B (`maxcor` 10,
/// `ftol` 2.2e-9, `gtol` 1e-5) so fits can be compared with it.
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsOptions {
    /// Number of (s, y) pairs kept.
    pub memory: usize,
    pub max_iterations: usize,
    /// Total objective evaluations allowed, line searches included.
    pub max_evaluations: usize,
    /// Converged when max |gradient| <= gtol.
    pub gtol: f64,
    /// Converged when (f_old - f_new) / max(|f_old|, |f_new|, 1) <= ftol.
    pub ftol: f64,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            memory: 10,
            max_iterations: 15_000,
            max_evaluations: 15_000,
            gtol: 1e-5,
            ftol: 2.220446049250313e-9,
        }
    }
}

/// Why the minimiser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Gradient,
    FunctionChange,
    MaxIterations,
    MaxEvaluations,
    /// No step along the search direction (even steepest descent) satisfied the Wolfe
    /// conditions: usually the objective is flat to rounding, or not smooth there.
    LineSearchFailed,
    /// The objective was not finite at the starting point.
    NonFiniteStart,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsResult {
    /// The best point found (the last accepted iterate).
    pub x: Vec<f64>,
    pub f: f64,
    pub gradient: Vec<f64>,
    pub iterations: usize,
    pub evaluations: usize,
    /// True when a gradient or function-change criterion was met.
    pub converged: bool,
    pub termination: Termination,
}

const C1: f64 = 1e-4;
const C2: f64 = 0.9;
const MAX_LINE_SEARCH_EVALUATIONS: usize = 30;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// The objective restricted to the search line: evaluates at x + step * d, counting calls.
struct Line<'a, F> {
    f: &'a mut F,
    x: &'a [f64],
    d: &'a [f64],
    point: Vec<f64>,
    grad: Vec<f64>,
    evaluations: usize,
}

impl<F: FnMut(&[f64], &mut [f64]) -> f64> Line<'_, F> {
    /// (value, directional derivative) at `step`; the point and gradient stay in `self`.
    fn eval(&mut self, step: f64) -> (f64, f64) {
        for ((p, x), d) in self.point.iter_mut().zip(self.x).zip(self.d) {
            *p = x + step * d;
        }
        self.evaluations += 1;
        let v = (self.f)(&self.point, &mut self.grad);
        let slope = dot(&self.grad, self.d);
        if v.is_finite() && slope.is_finite() {
            (v, slope)
        } else {
            (f64::INFINITY, f64::NAN)
        }
    }
}

/// Minimiser of the cubic through (a, fa, da) and (b, fb, db), if it lies strictly
/// inside the interval; otherwise None (the caller bisects).
fn cubic_min(a: f64, fa: f64, da: f64, b: f64, fb: f64, db: f64) -> Option<f64> {
    let d1 = da + db - 3.0 * (fa - fb) / (a - b);
    let disc = d1 * d1 - da * db;
    if disc.is_nan() || disc < 0.0 {
        return None;
    }
    let d2 = (b - a).signum() * disc.sqrt();
    let t = b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2);
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    (t.is_finite() && t > lo && t < hi).then_some(t)
}

/// A step satisfying the strong Wolfe conditions, with its value (the point and gradient
/// are left in `line`); None when none was found within the evaluation budget.
fn strong_wolfe<F: FnMut(&[f64], &mut [f64]) -> f64>(
    line: &mut Line<'_, F>,
    f0: f64,
    d0: f64,
    first: f64,
) -> Option<f64> {
    let (mut prev, mut f_prev, mut d_prev) = (0.0, f0, d0);
    let mut step = first;
    for i in 0..MAX_LINE_SEARCH_EVALUATIONS {
        let (fs, ds) = line.eval(step);
        // Too far (overflow), or no sufficient decrease: look between the last good step and
        // this one.
        if !fs.is_finite() || fs > f0 + C1 * step * d0 || (i > 0 && fs >= f_prev) {
            return zoom(
                line,
                f0,
                d0,
                (prev, f_prev, d_prev),
                (step, fs, ds),
                MAX_LINE_SEARCH_EVALUATIONS - i - 1,
            );
        }
        if ds.abs() <= -C2 * d0 {
            return Some(fs);
        }
        if ds >= 0.0 {
            return zoom(
                line,
                f0,
                d0,
                (step, fs, ds),
                (prev, f_prev, d_prev),
                MAX_LINE_SEARCH_EVALUATIONS - i - 1,
            );
        }
        (prev, f_prev, d_prev) = (step, fs, ds);
        step *= 2.0;
    }
    None
}

/// Algorithm 3.6: shrink the bracket [lo, hi] (lo has the lower value and satisfies the
/// sufficient-decrease condition) until a strong Wolfe step is found.
fn zoom<F: FnMut(&[f64], &mut [f64]) -> f64>(
    line: &mut Line<'_, F>,
    f0: f64,
    d0: f64,
    mut lo: (f64, f64, f64),
    mut hi: (f64, f64, f64),
    budget: usize,
) -> Option<f64> {
    for _ in 0..budget {
        let width = (hi.0 - lo.0).abs();
        if width <= 1e-16 * lo.0.abs().max(1e-300) {
            break;
        }
        let trial = if hi.1.is_finite() {
            cubic_min(lo.0, lo.1, lo.2, hi.0, hi.1, hi.2)
        } else {
            None
        };
        // Keep the trial away from the ends so the bracket keeps shrinking.
        let margin = 0.1 * width;
        let step = match trial {
            Some(t) if (t - lo.0).abs() > margin && (t - hi.0).abs() > margin => t,
            _ => 0.5 * (lo.0 + hi.0),
        };
        let (fs, ds) = line.eval(step);
        if !fs.is_finite() || fs > f0 + C1 * step * d0 || fs >= lo.1 {
            hi = (step, fs, ds);
        } else {
            if ds.abs() <= -C2 * d0 {
                return Some(fs);
            }
            if ds * (hi.0 - lo.0) >= 0.0 {
                hi = lo;
            }
            lo = (step, fs, ds);
        }
    }
    // The bracket collapsed: accept the best point seen if it decreased f at all, so a
    // nearly flat (or kinked) objective still makes progress.
    if lo.0 > 0.0 && lo.1 < f0 {
        let (fs, _) = line.eval(lo.0);
        return Some(fs);
    }
    None
}

/// Minimise `f` from `x0`. `f(x, grad)` returns the value at x and writes the gradient.
pub fn minimize<F: FnMut(&[f64], &mut [f64]) -> f64>(mut f: F, x0: &[f64], opts: &LbfgsOptions) -> LbfgsResult {
    let n = x0.len();
    let mut x = x0.to_vec();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut evaluations = 1;
    let finish = |x: Vec<f64>, f: f64, g: Vec<f64>, iterations, evaluations, termination| LbfgsResult {
        x,
        f,
        gradient: g,
        iterations,
        evaluations,
        converged: matches!(termination, Termination::Gradient | Termination::FunctionChange),
        termination,
    };
    if !fx.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return finish(x, fx, g, 0, evaluations, Termination::NonFiniteStart);
    }
    if max_abs(&g) <= opts.gtol {
        return finish(x, fx, g, 0, evaluations, Termination::Gradient);
    }
    let m = opts.memory.max(1);
    // The last m pairs s = x_new - x, y = g_new - g and 1 / (y.s), oldest first.
    let mut s_hist: Vec<Vec<f64>> = Vec::with_capacity(m);
    let mut y_hist: Vec<Vec<f64>> = Vec::with_capacity(m);
    let mut rho: Vec<f64> = Vec::with_capacity(m);
    let mut alpha = vec![0.0; m];
    let mut d = vec![0.0; n];

    for iteration in 1..=opts.max_iterations {
        // Two-loop recursion: d = -H g, H the inverse-Hessian approximation.
        d.iter_mut().zip(&g).for_each(|(di, gi)| *di = -gi);
        for j in (0..s_hist.len()).rev() {
            alpha[j] = rho[j] * dot(&s_hist[j], &d);
            d.iter_mut().zip(&y_hist[j]).for_each(|(di, yi)| *di -= alpha[j] * yi);
        }
        if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, y) / dot(y, y);
            d.iter_mut().for_each(|di| *di *= gamma);
        }
        for j in 0..s_hist.len() {
            let beta = rho[j] * dot(&y_hist[j], &d);
            d.iter_mut()
                .zip(&s_hist[j])
                .for_each(|(di, si)| *di += (alpha[j] - beta) * si);
        }
        let mut slope = dot(&g, &d);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (rounding in the memory): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            d.iter_mut().zip(&g).for_each(|(di, gi)| *di = -gi);
            slope = dot(&g, &d);
        }
        let first = if s_hist.is_empty() {
            (1.0 / max_abs(&g).max(f64::MIN_POSITIVE)).min(1.0)
        } else {
            1.0
        };

        let mut line = Line {
            f: &mut f,
            x: &x,
            d: &d,
            point: vec![0.0; n],
            grad: vec![0.0; n],
            evaluations: 0,
        };
        let found = strong_wolfe(&mut line, fx, slope, first);
        let (point, grad, used) = (line.point, line.grad, line.evaluations);
        evaluations += used;
        let Some(f_new) = found else {
            if !s_hist.is_empty() {
                // Retry once from steepest descent with a fresh memory.
                s_hist.clear();
                y_hist.clear();
                rho.clear();
                continue;
            }
            return finish(x, fx, g, iteration - 1, evaluations, Termination::LineSearchFailed);
        };

        let s: Vec<f64> = point.iter().zip(&x).map(|(p, xi)| p - xi).collect();
        let y: Vec<f64> = grad.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let f_old = fx;
        x = point;
        g = grad;
        fx = f_new;
        // Keep the pair only when it carries positive curvature (always true under exact
        // Wolfe steps; guards against rounding).
        if sy > 1e-12 * dot(&y, &y).sqrt() * dot(&s, &s).sqrt() {
            if s_hist.len() == m {
                s_hist.remove(0);
                y_hist.remove(0);
                rho.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
            rho.push(1.0 / sy);
        }

        if max_abs(&g) <= opts.gtol {
            return finish(x, fx, g, iteration, evaluations, Termination::Gradient);
        }
        if (f_old - fx) / f_old.abs().max(fx.abs()).max(1.0) <= opts.ftol {
            return finish(x, fx, g, iteration, evaluations, Termination::FunctionChange);
        }
        if evaluations >= opts.max_evaluations {
            return finish(x, fx, g, iteration, evaluations, Termination::MaxEvaluations);
        }
    }
    finish(x, fx, g, opts.max_iterations, evaluations, Termination::MaxIterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(x: &[f64], g: &mut [f64]) -> f64 {
        let n = x.len();
        let mut f = 0.0;
        g.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..n - 1 {
            let a = x[i + 1] - x[i] * x[i];
            let b = 1.0 - x[i];
            f += 100.0 * a * a + b * b;
            g[i] += -400.0 * x[i] * a - 2.0 * b;
            g[i + 1] += 200.0 * a;
        }
        f
    }

    #[test]
    fn rosenbrock_from_the_classic_start() {
        let opts = LbfgsOptions {
            gtol: 1e-9,
            ftol: 0.0,
            ..Default::default()
        };
        let r = minimize(rosenbrock, &[-1.2, 1.0], &opts);
        assert!(r.converged, "{r:?}");
        assert!((r.x[0] - 1.0).abs() < 1e-6 && (r.x[1] - 1.0).abs() < 1e-6, "{r:?}");
        assert!(r.iterations < 100, "{} iterations", r.iterations);
    }

    #[test]
    fn rosenbrock_in_ten_dimensions() {
        let opts = LbfgsOptions {
            gtol: 1e-8,
            ftol: 0.0,
            ..Default::default()
        };
        let x0: Vec<f64> = (0..10).map(|i| if i % 2 == 0 { -1.2 } else { 1.0 }).collect();
        let r = minimize(rosenbrock, &x0, &opts);
        assert!(r.converged, "{r:?}");
        assert!(r.x.iter().all(|v| (v - 1.0).abs() < 1e-5), "{r:?}");
    }

    #[test]
    fn ill_conditioned_quadratic_reaches_its_exact_minimum() {
        // f = sum_i c_i (x_i - i)^2 with curvatures over six orders of magnitude.
        let c = [1e-3, 1.0, 10.0, 1e3];
        let quad = |x: &[f64], g: &mut [f64]| {
            let mut f = 0.0;
            for i in 0..x.len() {
                let r = x[i] - i as f64;
                f += c[i] * r * r;
                g[i] = 2.0 * c[i] * r;
            }
            f
        };
        let opts = LbfgsOptions {
            gtol: 1e-12,
            ftol: 0.0,
            ..Default::default()
        };
        let r = minimize(quad, &[10.0, -3.0, 7.0, 0.5], &opts);
        assert!(r.converged, "{r:?}");
        for (i, v) in r.x.iter().enumerate() {
            assert!((v - i as f64).abs() < 1e-6, "x[{i}] = {v}");
        }
        // A quadratic in 4 variables: BFGS with exact-ish line searches needs few steps.
        assert!(r.iterations <= 30, "{} iterations", r.iterations);
    }

    #[test]
    fn stops_at_once_on_a_stationary_start_and_reports_a_non_finite_one() {
        let r = minimize(
            |x: &[f64], g: &mut [f64]| {
                g[0] = 2.0 * x[0];
                x[0] * x[0]
            },
            &[0.0],
            &LbfgsOptions::default(),
        );
        assert_eq!((r.iterations, r.termination), (0, Termination::Gradient));
        let r = minimize(
            |_: &[f64], g: &mut [f64]| {
                g[0] = 0.0;
                f64::NAN
            },
            &[1.0],
            &LbfgsOptions::default(),
        );
        assert!(!r.converged);
        assert_eq!(r.termination, Termination::NonFiniteStart);
    }

    #[test]
    fn backs_off_from_overflow_along_the_line() {
        // exp(x) + exp(-x) overflows for large steps; the minimum is at 0.
        let f = |x: &[f64], g: &mut [f64]| {
            g[0] = (10.0 * x[0]).exp() * 10.0 - (-x[0]).exp();
            (10.0 * x[0]).exp() + (-x[0]).exp()
        };
        let r = minimize(
            f,
            &[-50.0],
            &LbfgsOptions {
                gtol: 1e-10,
                ..Default::default()
            },
        );
        let exact = (0.1f64).ln() / 11.0; // 10 e^{10x} = e^{-x}
        assert!((r.x[0] - exact).abs() < 1e-6, "{r:?}");
    }
}
