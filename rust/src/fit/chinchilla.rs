//! The Chinchilla loss law L(N, D) = E + A / N^alpha + B / D^beta, fitted as Hoffmann et
//! al. and Epoch AI's replication do: minimise sum_i Huber_delta(log L_hat_i - log L_i) with
//! log L_hat = LSE(a - alpha log N, b - beta log D, e) (A = e^a, B = e^b, E = e^e), by L-BFGS
//! from every point of a grid of starts, keeping the best. Parameters are ordered
//! [a, b, e, alpha, beta] throughout.
use rayon::prelude::*;

use super::bootstrap::{resample_counts, Resample};
use super::lbfgs::{minimize, LbfgsOptions};
use super::rng::Rng;
use crate::error::{Error, Result};
use crate::numeric::huber;

pub const PARAMS: usize = 5;
pub type Params = [f64; PARAMS];

/// The observations in log space, with a weight (bootstrap multiplicity) per row.
#[derive(Debug, Clone, PartialEq)]
pub struct LossData {
    pub log_n: Vec<f64>,
    pub log_d: Vec<f64>,
    pub log_loss: Vec<f64>,
}

impl LossData {
    /// From N, D and loss (all positive and finite), refusing designs the law cannot be
    /// identified from: fewer than 6 points, or fewer than 3 distinct N or D (with two
    /// values, A, alpha and E trade off exactly).
    pub fn new(n: &[f64], d: &[f64], loss: &[f64]) -> Result<Self> {
        if n.len() != d.len() || n.len() != loss.len() {
            return Err(Error::Invalid("N, D and loss must have one value per point".into()));
        }
        if n.iter().chain(d).chain(loss).any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::InsufficientData(
                "N, D and loss must be positive and finite".into(),
            ));
        }
        if n.len() <= PARAMS {
            return Err(Error::InsufficientData(format!(
                "too few points for the Chinchilla law: {} (its 5 parameters need at least 6)",
                n.len()
            )));
        }
        for (name, values) in [("N", n), ("D", d)] {
            let mut distinct: Vec<f64> = values.to_vec();
            distinct.sort_by(f64::total_cmp);
            distinct.dedup();
            if distinct.len() < 3 {
                return Err(Error::InsufficientData(format!(
                    "the Chinchilla law needs at least 3 distinct values of {name} (got {}): its coefficient, exponent and E are not identifiable",
                    distinct.len()
                )));
            }
        }
        Ok(LossData {
            log_n: n.iter().map(|v| v.ln()).collect(),
            log_d: d.iter().map(|v| v.ln()).collect(),
            log_loss: loss.iter().map(|v| v.ln()).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.log_n.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log_n.is_empty()
    }
}

/// The objective and its gradient at `p`, each row weighted by `weights[i]`.
pub fn objective(p: &[f64], data: &LossData, weights: &[f64], delta: f64, grad: &mut [f64]) -> f64 {
    let [a, b, e, alpha, beta] = [p[0], p[1], p[2], p[3], p[4]];
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut total = 0.0;
    for (i, &w) in weights.iter().enumerate().take(data.len()) {
        if w == 0.0 {
            continue;
        }
        let (ln, ld) = (data.log_n[i], data.log_d[i]);
        let t1 = a - alpha * ln;
        let t2 = b - beta * ld;
        let m = t1.max(t2).max(e);
        let (x1, x2, x3) = ((t1 - m).exp(), (t2 - m).exp(), (e - m).exp());
        let s = x1 + x2 + x3;
        let r = m + s.ln() - data.log_loss[i];
        let (value, psi) = huber(r, delta);
        total += w * value;
        let k = w * psi / s;
        grad[0] += k * x1;
        grad[1] += k * x2;
        grad[2] += k * x3;
        grad[3] -= k * x1 * ln;
        grad[4] -= k * x2 * ld;
    }
    total
}

/// Hoffmann et al.'s grid: alpha, beta in 0..2 by 0.5, e in -1..1 by 0.5, a, b in 0..25
/// by 5: 4,500 starts.
pub fn default_grid() -> Vec<Params> {
    let half = |lo: f64, n: usize, step: f64| (0..n).map(move |i| lo + step * i as f64);
    let mut grid = Vec::with_capacity(4500);
    for a in half(0.0, 6, 5.0) {
        for b in half(0.0, 6, 5.0) {
            for e in half(-1.0, 5, 0.5) {
                for alpha in half(0.0, 5, 0.5) {
                    for beta in half(0.0, 5, 0.5) {
                        grid.push([a, b, e, alpha, beta]);
                    }
                }
            }
        }
    }
    grid
}

/// The optimiser settings for this objective: with delta = 1e-3 its values are tiny
/// (~1e-5 a point), so scipy's relative-to-1 `ftol` would stop far from the minimum.
pub fn default_lbfgs() -> LbfgsOptions {
    LbfgsOptions {
        gtol: 1e-10,
        ftol: 1e-15,
        max_iterations: 2_000,
        max_evaluations: 6_000,
        ..LbfgsOptions::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    pub params: Params,
    pub objective: f64,
    pub converged: bool,
    pub iterations: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChinchillaFit {
    pub best: Solution,
    /// How many starts ended with a converged, finite solution.
    pub starts_converged: usize,
    pub starts: usize,
    /// Bootstrap draws (NaN rows where no start gave a finite fit).
    pub draws: Vec<Params>,
    pub failed: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChinchillaOptions {
    pub delta: f64,
    pub lbfgs: LbfgsOptions,
    pub draws: usize,
    pub seed: u64,
    /// Bootstrap draws start from the full-data optimum and from the best of the distinct
    /// grid solutions, this many in all: a full grid per draw would cost 4,500 times more
    /// for the same answer whenever the landscape has a few basins.
    pub bootstrap_starts: usize,
}

impl Default for ChinchillaOptions {
    fn default() -> Self {
        ChinchillaOptions {
            delta: 1e-3,
            lbfgs: default_lbfgs(),
            draws: 0,
            seed: 42,
            bootstrap_starts: 8,
        }
    }
}

fn solve(data: &LossData, weights: &[f64], start: &Params, opts: &ChinchillaOptions) -> Solution {
    let r = minimize(|p, g| objective(p, data, weights, opts.delta, g), start, &opts.lbfgs);
    let mut params = [0.0; PARAMS];
    params.copy_from_slice(&r.x);
    Solution {
        params,
        objective: r.f,
        converged: r.converged && r.f.is_finite(),
        iterations: r.iterations,
    }
}

/// The lowest finite objective (the earliest start on ties, so the answer is deterministic).
fn best_of(solutions: &[Solution]) -> Option<&Solution> {
    solutions
        .iter()
        .filter(|s| s.objective.is_finite())
        .min_by(|x, y| x.objective.total_cmp(&y.objective))
}

/// Fit from every start in parallel, keep the best; then bootstrap (rows resampled).
pub fn fit(data: &LossData, starts: &[Params], opts: &ChinchillaOptions) -> Result<ChinchillaFit> {
    if starts.is_empty() {
        return Err(Error::Invalid("the Chinchilla fit needs at least one start".into()));
    }
    if !(opts.delta > 0.0 && opts.delta.is_finite()) {
        return Err(Error::Invalid(format!(
            "the Huber delta must be positive, got {}",
            opts.delta
        )));
    }
    let ones = vec![1.0; data.len()];
    let solutions: Vec<Solution> = starts.par_iter().map(|s| solve(data, &ones, s, opts)).collect();
    let best = best_of(&solutions).cloned().ok_or_else(|| {
        Error::InsufficientData("the Chinchilla fit diverged from every start (non-finite objective)".into())
    })?;
    let starts_converged = solutions.iter().filter(|s| s.converged).count();

    // Warm starts of the draws: the distinct local optima, best first.
    let mut ranked: Vec<&Solution> = solutions.iter().filter(|s| s.objective.is_finite()).collect();
    ranked.sort_by(|x, y| x.objective.total_cmp(&y.objective));
    let mut warm: Vec<Params> = Vec::new();
    for s in ranked {
        if warm.len() >= opts.bootstrap_starts.max(1) {
            break;
        }
        let distinct = warm.iter().all(|w| {
            w.iter()
                .zip(&s.params)
                .any(|(a, b)| (a - b).abs() > 1e-3 * (1.0 + a.abs()))
        });
        if distinct {
            warm.push(s.params);
        }
    }

    let n = data.len();
    let cells: Vec<usize> = (0..n).collect();
    let draws: Vec<Option<Params>> = (0..opts.draws)
        .into_par_iter()
        .map(|b| {
            let mut rng = Rng::stream(opts.seed, b as u64);
            let mut counts = vec![0.0; n];
            resample_counts(&mut rng, &cells, n, Resample::Rows, &mut counts);
            let fits: Vec<Solution> = warm.iter().map(|s| solve(data, &counts, s, opts)).collect();
            best_of(&fits).map(|s| s.params)
        })
        .collect();
    let failed = draws.iter().filter(|d| d.is_none()).count();
    let draws = draws.into_iter().map(|d| d.unwrap_or([f64::NAN; PARAMS])).collect();
    Ok(ChinchillaFit {
        best,
        starts_converged,
        starts: starts.len(),
        draws,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch's refit of Chinchilla: E 1.82, A 482.01, B 2085.43, alpha 0.3478, beta 0.3658.
    fn truth() -> Params {
        [482.01f64.ln(), 2085.43f64.ln(), 1.82f64.ln(), 0.3478, 0.3658]
    }

    fn synthetic(noise: f64) -> LossData {
        let t = truth();
        let mut rng = Rng::new(11);
        let (mut n, mut d, mut l) = (vec![], vec![], vec![]);
        for i in 0..6 {
            for j in 0..6 {
                let nn = 1e8 * 4f64.powi(i);
                let dd = 2e9 * 4f64.powi(j);
                let e = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                let exact = t[2].exp() + t[0].exp() / nn.powf(t[3]) + t[1].exp() / dd.powf(t[4]);
                n.push(nn);
                d.push(dd);
                l.push(exact * (1.0 + noise * e));
            }
        }
        LossData::new(&n, &d, &l).unwrap()
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let data = synthetic(0.01);
        let w: Vec<f64> = (0..data.len()).map(|i| (i % 3) as f64).collect();
        let p = [5.0, 8.0, 0.3, 0.4, 0.3];
        // delta large enough that every residual is in the quadratic zone, then small.
        for delta in [10.0, 1e-3] {
            let mut g = [0.0; 5];
            objective(&p, &data, &w, delta, &mut g);
            for k in 0..5 {
                let h = 1e-6;
                let (mut up, mut dn) = (p, p);
                up[k] += h;
                dn[k] -= h;
                let mut scratch = [0.0; 5];
                let numeric = (objective(&up, &data, &w, delta, &mut scratch)
                    - objective(&dn, &data, &w, delta, &mut scratch))
                    / (2.0 * h);
                assert!(
                    (numeric - g[k]).abs() <= 1e-6 * (1.0 + g[k].abs()),
                    "delta {delta} k {k}: {numeric} vs {}",
                    g[k]
                );
            }
        }
    }

    #[test]
    fn recovers_a_noiseless_truth_from_the_grid() {
        let data = synthetic(0.0);
        // A coarse sub-grid keeps the debug-build test quick; the full grid is exercised
        // from Python against scipy.
        let starts: Vec<Params> = default_grid().into_iter().step_by(37).collect();
        let fit = fit(&data, &starts, &ChinchillaOptions::default()).unwrap();
        for (k, (got, want)) in fit.best.params.iter().zip(truth()).enumerate() {
            assert!(
                (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                "param {k}: {got} vs {want} ({:?})",
                fit.best
            );
        }
    }

    #[test]
    fn bootstrap_draws_are_deterministic_and_spread_around_the_fit() {
        let data = synthetic(0.004);
        let start = [[6.0, 7.5, 0.5, 0.3, 0.3]];
        let opts = ChinchillaOptions {
            draws: 64,
            seed: 7,
            ..Default::default()
        };
        let a = fit(&data, &start, &opts).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let b = pool.install(|| fit(&data, &start, &opts).unwrap());
        assert_eq!(a, b);
        assert_eq!((a.draws.len(), a.failed), (64, 0));
        let alphas: Vec<f64> = a.draws.iter().map(|p| p[3]).collect();
        let mean = alphas.iter().sum::<f64>() / 64.0;
        let sd = (alphas.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 63.0).sqrt();
        assert!(
            sd > 0.0 && (mean - a.best.params[3]).abs() < 3.0 * sd + 1e-9,
            "mean {mean} sd {sd}"
        );
    }

    /// The message of a refusal that blames the data (`Error::InsufficientData`: exit 1 on
    /// the command line), failing on any other outcome.
    fn data_refusal<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::InsufficientData(m)) => m,
            other => panic!("expected Error::InsufficientData, got {other:?}"),
        }
    }

    #[test]
    fn refuses_unidentifiable_designs() {
        let n = [1e8, 1e8, 2e8, 2e8, 1e8, 2e8, 1e8];
        let d = [1e9, 2e9, 3e9, 4e9, 5e9, 6e9, 7e9];
        let e = data_refusal(LossData::new(&n, &d, &[3.0; 7]));
        assert!(e.contains("3 distinct values of N"), "{e}");
        let e = data_refusal(LossData::new(&[1e8, 2e8, 3e8], &[1e9, 2e9, 3e9], &[3.0; 3]));
        assert!(e.contains("too few points"), "{e}");
        let e = data_refusal(LossData::new(&[1e8; 7], &d, &[-1.0; 7]));
        assert!(e.contains("positive"), "{e}");
    }

    #[test]
    fn a_fit_that_diverges_from_every_start_blames_the_data_and_bad_options_do_not() {
        let data = synthetic(0.0);
        // no start has a finite objective
        let e = data_refusal(fit(&data, &[[f64::NAN; 5]], &ChinchillaOptions::default()));
        assert!(e.contains("diverged from every start"), "{e}");
        // what the caller passed stays Error::Invalid
        let bad_delta = ChinchillaOptions {
            delta: -1.0,
            ..Default::default()
        };
        assert!(matches!(fit(&data, &[truth()], &bad_delta), Err(Error::Invalid(_))));
        assert!(matches!(
            fit(&data, &[], &ChinchillaOptions::default()),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            LossData::new(&[1e8; 7], &[1e9; 6], &[3.0; 7]),
            Err(Error::Invalid(_))
        ));
    }
}
