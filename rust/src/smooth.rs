//! Final losses: the loss of one curve at its end (or at an earlier budget), smoothed.
//!
//! Every mode estimates the loss at one point of a noisy curve from the points before it.
//! `StepLaw` is the public Step Law definition, kept exact so numbers can be compared with
//! theirs; `Robust` is the default (see docs/final-loss.md for the comparison on curves
//! with a known truth).
use crate::error::{Error, Result};
pub use crate::model::Curve;
use crate::numeric::{huber_weight, HUBER_T, MAD_PER_SD};

/// A window width, in the unit the user thinks in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Width {
    Steps(f64),
    Tokens(f64),
    /// A fraction of the curve's last step (of the budget evaluated, with `At`).
    Fraction(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Smoothing {
    /// The last logged value.
    None,
    /// Step Law's `smooth loss`: the last <= 32,768 entries, window = min(100, 1% of the
    /// entries), sigma = window / log interval (their mixed units, kept), a reflect-mode
    /// Gaussian (scipy's gaussian_filter1d, truncate 4) over the whole tail, read at the
    /// entry evaluated.
    StepLaw,
    /// A one-sided Gaussian kernel mean at the end, sigma = width.
    Gaussian(Width),
    /// TensorBoard's debiased exponential moving average with this weight (0.6 there).
    Ema(f64),
    /// The mean over the last `width` of the curve (in tokens where the curve has them).
    TailMean(Width),
    /// Local linear regression at the end over the last `width`, tricube kernel, Huber
    /// weights by IRLS: no boundary bias on a still-falling curve, and a loss spike gets a
    /// small weight instead of moving the answer.
    Robust(Width),
}

/// Where on the curve the final loss is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    End,
    Step(i64),
    Tokens(i64),
    /// A fraction of the run's planned steps (of its last step when not planned).
    Fraction(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinalLoss {
    /// The last raw value at or before the budget.
    pub raw: f64,
    pub smoothed: f64,
    /// The step the loss is read at.
    pub step: i64,
    /// How many points carry weight in the estimate.
    pub points_used: usize,
}

/// Step Law's constants (log_analysis.py).
const STEPLAW_MAX_ENTRIES: usize = 32_768;
const STEPLAW_WINDOW: f64 = 100.0;
/// scipy.ndimage's default truncation of a Gaussian kernel, in sigmas.
const TRUNCATE: f64 = 4.0;
const IRLS_ITERATIONS: usize = 10;
/// Relative change of the estimate at which IRLS stops (far below any loss difference that matters).
const CONVERGED: f64 = 1e-7;

/// The default width of the `gaussian`, `tail-mean` and `robust` modes: a fraction of the run.
pub const DEFAULT_WIDTH: f64 = 0.1;
/// TensorBoard's default smoothing weight.
pub const DEFAULT_EMA_WEIGHT: f64 = 0.6;
pub const MODES: &[&str] = &["robust", "steplaw", "gaussian", "ema", "tail-mean", "none"];

impl Width {
    /// `value` in `unit` ("fraction", "steps" or "tokens").
    pub fn new(value: f64, unit: &str) -> Result<Width> {
        Ok(match unit {
            "fraction" => Width::Fraction(value),
            "steps" => Width::Steps(value),
            "tokens" => Width::Tokens(value),
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown width unit '{unit}' (fraction, steps, tokens)"
                )))
            }
        })
    }
}

impl Smoothing {
    /// A mode by name with its width (or EMA weight); defaults where not given.
    pub fn new(mode: &str, width: Option<Width>, weight: Option<f64>) -> Result<Smoothing> {
        let width = width.unwrap_or(Width::Fraction(DEFAULT_WIDTH));
        let s = match mode {
            "robust" => Smoothing::Robust(width),
            "steplaw" => Smoothing::StepLaw,
            "gaussian" => Smoothing::Gaussian(width),
            "ema" => Smoothing::Ema(weight.unwrap_or(DEFAULT_EMA_WEIGHT)),
            "tail-mean" => Smoothing::TailMean(width),
            "none" => Smoothing::None,
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown smoothing '{mode}' ({})",
                    MODES.join(", ")
                )))
            }
        };
        s.validate()?;
        Ok(s)
    }

    /// Whether the mode reads token counts (a width in tokens, or the tail-mean's fraction
    /// of tokens).
    pub fn uses_tokens(&self) -> bool {
        match self {
            Smoothing::Gaussian(w) | Smoothing::Robust(w) => matches!(w, Width::Tokens(_)),
            Smoothing::TailMean(w) => !matches!(w, Width::Steps(_)),
            _ => false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad_width = |w: &Width| match *w {
            Width::Steps(x) | Width::Tokens(x) => !(x > 0.0 && x.is_finite()),
            Width::Fraction(x) => !(x > 0.0 && x <= 1.0),
        };
        match self {
            Smoothing::Gaussian(w) | Smoothing::TailMean(w) | Smoothing::Robust(w) if bad_width(w) => {
                Err(Error::Invalid(format!(
                    "smoothing width must be positive (a fraction in (0, 1]), got {w:?}"
                )))
            }
            Smoothing::Ema(weight) if !(0.0..1.0).contains(weight) => {
                Err(Error::Invalid(format!("EMA weight must be in [0, 1), got {weight}")))
            }
            _ => Ok(()),
        }
    }
}

/// Number of leading points at or before the budget `at`.
fn cut(curve: &Curve, at: At, planned_steps: Option<i64>) -> Result<usize> {
    let steps = curve.steps;
    Ok(match at {
        At::End => steps.len(),
        At::Step(s) => steps.partition_point(|&x| x <= s),
        At::Fraction(f) => {
            let total = planned_steps.or(steps.last().copied()).unwrap_or(0) as f64;
            steps.partition_point(|&x| x as f64 <= f * total + 1e-9)
        }
        At::Tokens(t) => {
            if curve.tokens.len() != steps.len() {
                return Err(no_tokens());
            }
            curve.tokens.partition_point(|&x| x <= t)
        }
    })
}

/// The final loss of `curve` at `at`; None when no point lies at or before it.
pub fn final_loss(
    curve: &Curve,
    smoothing: Smoothing,
    at: At,
    planned_steps: Option<i64>,
) -> Result<Option<FinalLoss>> {
    let end = cut(curve, at, planned_steps)?;
    if end == 0 {
        return Ok(None);
    }
    let steps = &curve.steps[..end];
    let values = &curve.values[..end];
    let last = end - 1;
    let (smoothed, used) = match smoothing {
        Smoothing::None => (values[last], 1),
        Smoothing::StepLaw => steplaw(curve.steps, curve.values, last),
        Smoothing::Ema(weight) => (ema(values, weight), end),
        Smoothing::Gaussian(w) => {
            let sigma = width_in_steps(curve, end, w)?;
            gaussian_one_sided(steps, values, sigma)
        }
        Smoothing::TailMean(w) => tail_mean(curve, end, w)?,
        Smoothing::Robust(w) => {
            let h = width_in_steps(curve, end, w)?;
            robust_local_linear(steps, values, h)
        }
    };
    Ok(Some(FinalLoss {
        raw: values[last],
        smoothed,
        step: steps[last],
        points_used: used,
    }))
}

/// A width as a number of steps at the end of the first `end` points.
fn width_in_steps(curve: &Curve, end: usize, w: Width) -> Result<f64> {
    let last_step = curve.steps[end - 1] as f64;
    Ok(match w {
        Width::Steps(x) => x,
        Width::Fraction(f) => f * last_step,
        Width::Tokens(t) => {
            // Tokens per step from the curve itself, at its end (batch sizes may ramp).
            match curve.tokens.get(end - 1).copied() {
                Some(tok) if tok > 0 && last_step > 0.0 => t * last_step / tok as f64,
                _ => return Err(no_tokens()),
            }
        }
    })
}

/// scipy.ndimage's 'reflect' boundary: (d c b a | a b c d | d c b a), periodic beyond.
fn reflect(i: i64, n: i64) -> usize {
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - 1 - m }) as usize
}

/// The Step Law smoothed value at entry `at` of the tail of the curve.
fn steplaw(steps: &[i64], values: &[f64], at: usize) -> (f64, usize) {
    let start = values.len().saturating_sub(STEPLAW_MAX_ENTRIES);
    let (steps, values) = (&steps[start..], &values[start..]);
    let Some(at) = at.checked_sub(start) else {
        // The budget lies before the tail they read: their code finds no entry.
        return (f64::NAN, 0);
    };
    let n = values.len();
    if n < 2 {
        return (values[at], 1);
    }
    let log_interval = (steps[1] - steps[0]) as f64;
    let window = STEPLAW_WINDOW.min(0.01 * n as f64);
    let sigma = window / log_interval;
    let radius = (TRUNCATE * sigma + 0.5) as i64;
    let weights: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let acc: f64 = (-radius..=radius)
        .zip(&weights)
        .map(|(k, w)| w * values[reflect(at as i64 + k, n as i64)])
        .sum();
    (acc / total, (2 * radius + 1).min(n as i64) as usize)
}

fn ema(values: &[f64], weight: f64) -> f64 {
    let mut last = 0.0;
    let mut debias = 1.0;
    for &x in values {
        last = last * weight + (1.0 - weight) * x;
        debias *= weight;
    }
    last / (1.0 - debias)
}

fn gaussian_one_sided(steps: &[i64], values: &[f64], sigma: f64) -> (f64, usize) {
    let end = *steps.last().unwrap() as f64;
    if sigma.is_nan() || sigma <= 0.0 {
        return (*values.last().unwrap(), 1);
    }
    let (mut acc, mut total, mut used) = (0.0, 0.0, 0);
    for (&s, &v) in steps.iter().zip(values).rev() {
        let u = (end - s as f64) / sigma;
        if u > TRUNCATE {
            break;
        }
        let w = (-0.5 * u * u).exp();
        acc += w * v;
        total += w;
        used += 1;
    }
    (acc / total, used)
}

fn tail_mean(curve: &Curve, end: usize, w: Width) -> Result<(f64, usize)> {
    let has_tokens = curve.tokens.len() == curve.steps.len();
    // "The last fraction of tokens": measured in tokens where the curve has them.
    let position: Vec<f64> = match w {
        Width::Tokens(_) | Width::Fraction(_) if has_tokens => curve.tokens[..end].iter().map(|&t| t as f64).collect(),
        Width::Tokens(_) => return Err(no_tokens()),
        _ => curve.steps[..end].iter().map(|&s| s as f64).collect(),
    };
    let last = position[end - 1];
    let span = match w {
        Width::Fraction(f) => f * last,
        Width::Steps(x) | Width::Tokens(x) => x,
    };
    let first = position.partition_point(|&p| p <= last - span).min(end - 1);
    let tail = &curve.values[first..end];
    Ok((tail.iter().sum::<f64>() / tail.len() as f64, tail.len()))
}

fn no_tokens() -> Error {
    Error::Invalid("a width or budget in tokens needs token counts, and this curve has none".into())
}

/// Running sums of a weighted least-squares line y = a + b x. One pass suffices: x lies in
/// [-1, 0] (window units) and y varies little around its level, so the textbook formulas lose
/// only a few of the sixteen digits.
#[derive(Default)]
struct LineSums {
    w: f64,
    wx: f64,
    wy: f64,
    wxx: f64,
    wxy: f64,
}

impl LineSums {
    fn add(&mut self, w: f64, x: f64, y: f64) {
        self.w += w;
        self.wx += w * x;
        self.wy += w * y;
        self.wxx += w * x * x;
        self.wxy += w * x * y;
    }

    /// (a, b), or None without weight; a flat line through the mean when x has no spread.
    fn line(&self) -> Option<(f64, f64)> {
        if self.w.is_nan() || self.w <= 0.0 {
            return None;
        }
        let (mx, my) = (self.wx / self.w, self.wy / self.w);
        let sxx = self.wxx - self.wx * mx;
        if sxx <= 1e-300 {
            return Some((my, 0.0));
        }
        let b = (self.wxy - self.wx * my) / sxx;
        Some((my - b * mx, b))
    }
}

fn weighted_line(x: &[f64], y: &[f64], w: &[f64]) -> Option<(f64, f64)> {
    let mut sums = LineSums::default();
    for ((&xi, &yi), &wi) in x.iter().zip(y).zip(w) {
        sums.add(wi, xi, yi);
    }
    sums.line()
}

/// The median of non-negative numbers given by their bit patterns (`f64::to_bits`), by
/// selection: for non-negative floats the bits order as the numbers do, and integer
/// comparisons make the selection (once per IRLS iteration) about twice as fast.
fn median_of_non_negative(bits: &mut [u64]) -> f64 {
    let n = bits.len();
    let (_, &mut upper, _) = bits.select_nth_unstable(n / 2);
    let upper = f64::from_bits(upper);
    if n % 2 == 1 {
        upper
    } else {
        // The lower middle is the largest of the half below.
        let lower = bits[..n / 2].iter().copied().max().map_or(upper, f64::from_bits);
        0.5 * (lower + upper)
    }
}

/// Local linear fit at the last step over the window `h` (in steps), with tricube kernel
/// weights and Huber robustness weights (scale from the MAD of the residuals).
fn robust_local_linear(steps: &[i64], values: &[f64], h: f64) -> (f64, usize) {
    let n = steps.len();
    let end = steps[n - 1] as f64;
    let first = if h > 0.0 {
        steps.partition_point(|&s| (end - s as f64) >= h)
    } else {
        n - 1
    };
    // Fewer than 3 points cannot tell noise from slope: use what there is.
    let first = first.min(n.saturating_sub(3));
    // x in window units, 0 at the end: the intercept is the answer.
    let scale = if h > 0.0 { h } else { 1.0 };
    let x: Vec<f64> = steps[first..].iter().map(|&s| (s as f64 - end) / scale).collect();
    let y = &values[first..];
    if y.iter().any(|v| !v.is_finite()) {
        return (f64::NAN, y.len());
    }
    let kernel: Vec<f64> = x
        .iter()
        .map(|&u| (1.0 - u.abs().min(1.0).powi(3)).powi(3).max(1e-12))
        .collect();
    let Some(mut fit) = weighted_line(&x, y, &kernel) else {
        return (values[n - 1], 1);
    };
    let mut residuals = vec![0.0; y.len()];
    let mut scratch = vec![0u64; y.len()];
    for _ in 0..IRLS_ITERATIONS {
        for (((r, a), &xi), &yi) in residuals.iter_mut().zip(scratch.iter_mut()).zip(&x).zip(y) {
            *r = yi - fit.0 - fit.1 * xi;
            *a = r.abs().to_bits();
        }
        let sigma = median_of_non_negative(&mut scratch) / MAD_PER_SD;
        if sigma.is_nan() || sigma <= 0.0 {
            break;
        }
        let c = HUBER_T * sigma;
        // The Huber weights and the weighted sums of the next line in one pass.
        let mut sums = LineSums::default();
        for (((&ki, r), &xi), &yi) in kernel.iter().zip(&residuals).zip(&x).zip(y) {
            let wi = ki * huber_weight(*r, c);
            sums.add(wi, xi, yi);
        }
        let Some(next) = sums.line() else { break };
        let moved = (next.0 - fit.0).abs();
        fit = next;
        if moved <= CONVERGED * fit.0.abs().max(1e-300) {
            break;
        }
    }
    (fit.0, y.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve<'a>(steps: &'a [i64], values: &'a [f64]) -> Curve<'a> {
        Curve {
            steps,
            values,
            tokens: &[],
        }
    }

    #[test]
    fn reflect_matches_scipy_convention() {
        let n = 4;
        let got: Vec<usize> = (-5..10).map(|i| reflect(i, n)).collect();
        // ... b c d | a b c d | d c b a | a b c d ...
        assert_eq!(got, vec![3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1]);
    }

    #[test]
    fn robust_is_exact_on_a_line_and_ignores_a_spike() {
        let steps: Vec<i64> = (1..=200).map(|i| i * 10).collect();
        let mut values: Vec<f64> = steps.iter().map(|&s| 3.0 - 1e-4 * s as f64).collect();
        let c = curve(&steps, &values);
        let f = final_loss(&c, Smoothing::Robust(Width::Fraction(0.1)), At::End, None)
            .unwrap()
            .unwrap();
        assert!((f.smoothed - (3.0 - 0.2)).abs() < 1e-12, "{f:?}");
        values[195] += 5.0; // a spike near the end
        let c = curve(&steps, &values);
        let f = final_loss(&c, Smoothing::Robust(Width::Fraction(0.1)), At::End, None)
            .unwrap()
            .unwrap();
        assert!((f.smoothed - 2.8).abs() < 1e-3, "{f:?}");
    }

    #[test]
    fn budgets_cut_the_curve() {
        let steps = [10, 20, 30, 40];
        let values = [4.0, 3.0, 2.0, 1.0];
        let tokens = [100, 200, 300, 400];
        let c = Curve {
            steps: &steps,
            values: &values,
            tokens: &tokens,
        };
        let at = |a| final_loss(&c, Smoothing::None, a, Some(40)).unwrap().map(|f| f.raw);
        assert_eq!(at(At::End), Some(1.0));
        assert_eq!(at(At::Step(25)), Some(3.0));
        assert_eq!(at(At::Tokens(300)), Some(2.0));
        assert_eq!(at(At::Fraction(0.5)), Some(3.0));
        assert_eq!(at(At::Step(5)), None);
        let bare = curve(&steps, &values);
        assert!(final_loss(&bare, Smoothing::None, At::Tokens(1), None).is_err());
    }

    #[test]
    fn ema_debiased_and_tail_mean() {
        let steps = [1, 2, 3, 4];
        let values = [1.0, 1.0, 1.0, 1.0];
        let c = curve(&steps, &values);
        let f = final_loss(&c, Smoothing::Ema(0.9), At::End, None).unwrap().unwrap();
        assert!((f.smoothed - 1.0).abs() < 1e-12);
        let values = [4.0, 3.0, 2.0, 1.0];
        let c = curve(&steps, &values);
        let f = final_loss(&c, Smoothing::TailMean(Width::Steps(1.5)), At::End, None)
            .unwrap()
            .unwrap();
        assert_eq!((f.smoothed, f.points_used), (1.5, 2));
    }
}
