//! Bootstrap of the power-law fits: each draw resamples the rows (or whole cells) with
//! replacement, expressed as a multiplicity per row, and refits every model on it. Draw b
//! uses its own random stream of (seed, b) and draws are collected in order, so the result
//! is the same for a seed whatever the number of threads.
use rayon::prelude::*;

use super::linear::{check_model, fit_weighted, LinearFit, Method, Model, Workspace};
use super::rng::Rng;
use crate::error::{Error, Result};

/// What a bootstrap draw resamples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// Individual samples (the Step Law reference procedure).
    Rows,
    /// Whole cells with all their samples: honest when samples within a cell are not
    /// independent (they share N and D).
    Cells,
}

impl Resample {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "rows" => Ok(Resample::Rows),
            "cells" => Ok(Resample::Cells),
            other => Err(Error::Invalid(format!(
                "unknown bootstrap resampling '{other}' (rows, cells)"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapOptions {
    pub draws: usize,
    pub resample: Resample,
    pub seed: u64,
}

/// Fill `counts` with the multiplicity of each row in one resample.
pub fn resample_counts(rng: &mut Rng, cells: &[usize], n_cells: usize, resample: Resample, counts: &mut [f64]) {
    counts.iter_mut().for_each(|c| *c = 0.0);
    match resample {
        Resample::Rows => {
            for _ in 0..counts.len() {
                counts[rng.below(counts.len())] += 1.0;
            }
        }
        Resample::Cells => {
            let mut times = vec![0.0; n_cells];
            for _ in 0..n_cells {
                times[rng.below(n_cells)] += 1.0;
            }
            for (c, cell) in counts.iter_mut().zip(cells) {
                *c = times[*cell];
            }
        }
    }
}

/// Fits of several models sharing their rows (e.g. log lr and log batch on the same
/// near-optimal samples), with bootstrap draws.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearReport {
    pub fits: Vec<LinearFit>,
    /// Per model: one coefficient vector per draw (NaN where the resampled design was
    /// singular, e.g. all drawn cells shared one N).
    pub draws: Vec<Vec<Vec<f64>>>,
    /// Draws in which at least one model could not be fitted.
    pub failed: usize,
}

/// Validate, fit each model on all rows, then bootstrap. `cells[i]` is row i's cell (dense
/// ids from `linear::cell_index`).
pub fn fit_models(models: &[Model], cells: &[usize], method: Method, boot: &BootstrapOptions) -> Result<LinearReport> {
    if models.is_empty() {
        return Err(Error::Invalid("nothing to fit: no model given".into()));
    }
    let n = cells.len();
    let n_cells = cells.iter().max().map_or(0, |m| m + 1);
    let mut fits = Vec::with_capacity(models.len());
    let mut ws = Workspace::default();
    for model in models {
        check_model(model, cells)?;
        let base: Vec<f64> = (0..n).map(|i| model.weights.as_ref().map_or(1.0, |w| w[i])).collect();
        let fit = fit_weighted(model, &base, method, &mut ws)
            .ok_or_else(|| Error::InsufficientData(format!("{}: the design is singular", model.target)))?;
        fits.push(fit);
    }
    let per_draw: Vec<Vec<Option<Vec<f64>>>> = (0..boot.draws)
        .into_par_iter()
        .map_init(
            || (Workspace::default(), vec![0.0; n], vec![0.0; n]),
            |(ws, counts, base), b| {
                let mut rng = Rng::stream(boot.seed, b as u64);
                resample_counts(&mut rng, cells, n_cells, boot.resample, counts);
                models
                    .iter()
                    .map(|model| {
                        for i in 0..n {
                            base[i] = counts[i] * model.weights.as_ref().map_or(1.0, |w| w[i]);
                        }
                        fit_weighted(model, base, method, ws).map(|f| f.coef)
                    })
                    .collect()
            },
        )
        .collect();
    let failed = per_draw.iter().filter(|d| d.iter().any(Option::is_none)).count();
    let draws = models
        .iter()
        .enumerate()
        .map(|(m, model)| {
            per_draw
                .iter()
                .map(|d| d[m].clone().unwrap_or_else(|| vec![f64::NAN; model.terms()]))
                .collect()
        })
        .collect();
    Ok(LinearReport { fits, draws, failed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numeric::HUBER_T;

    /// 12 cells over 4 N and 6 D, 5 samples each: log lr = 4 - 0.75 log N + 0.2 log D + noise.
    fn sweep() -> (Vec<Model>, Vec<usize>) {
        let mut rng = Rng::new(5);
        let (mut ln, mut ld, mut y, mut cells) = (vec![], vec![], vec![], vec![]);
        for c in 0..12 {
            let (n, d) = (19.0 + (c % 4) as f64 * 0.7, 22.0 + (c % 6) as f64 * 0.5);
            for _ in 0..5 {
                let e = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                ln.push(n);
                ld.push(d);
                y.push(4.0 - 0.75 * n + 0.2 * d + 0.3 * e);
                cells.push(c);
            }
        }
        let lr = Model {
            target: "lr".into(),
            regressors: vec!["N".into(), "D".into()],
            columns: vec![ln, ld.clone()],
            y: y.clone(),
            weights: None,
        };
        let bs = Model {
            target: "bs".into(),
            regressors: vec!["D".into()],
            columns: vec![ld.clone()],
            y: ld.iter().map(|d| 0.6 * d - 1.5).collect(),
            weights: None,
        };
        (vec![lr, bs], cells)
    }

    #[test]
    fn a_design_the_data_cannot_identify_is_a_data_refusal_and_a_bad_call_is_not() {
        let (models, _) = sweep();
        let boot = BootstrapOptions {
            draws: 0,
            resample: Resample::Cells,
            seed: 1,
        };
        // every sample in one cell: too few cells for any coefficient
        let one_cell = vec![0; models[0].rows()];
        let r = fit_models(&models, &one_cell, Method::Ols, &boot);
        assert!(
            matches!(&r, Err(Error::InsufficientData(m)) if m.starts_with("lr: too few cells")),
            "{r:?}"
        );
        assert!(matches!(
            fit_models(&[], &one_cell, Method::Ols, &boot),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(Resample::from_name("nope"), Err(Error::Invalid(_))));
    }

    #[test]
    fn same_draws_whatever_the_thread_count() {
        let (models, cells) = sweep();
        let boot = BootstrapOptions {
            draws: 200,
            resample: Resample::Rows,
            seed: 42,
        };
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| fit_models(&models, &cells, Method::Huber { t: HUBER_T }, &boot).unwrap())
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_eq!(one.draws[0].len(), 200);
        let other_seed = fit_models(
            &models,
            &cells,
            Method::Ols,
            &BootstrapOptions {
                seed: 43,
                ..boot.clone()
            },
        )
        .unwrap();
        assert_ne!(
            other_seed.draws[0][0],
            fit_models(&models, &cells, Method::Ols, &boot).unwrap().draws[0][0]
        );
    }

    #[test]
    fn bootstrap_spread_matches_the_ols_standard_error() {
        let (models, cells) = sweep();
        let boot = BootstrapOptions {
            draws: 2000,
            resample: Resample::Rows,
            seed: 1,
        };
        let r = fit_models(&models[..1], &cells, Method::Ols, &boot).unwrap();
        // The classical standard error of the N coefficient, from (X'X)^-1 sigma^2.
        let m = &models[0];
        let n = m.rows() as f64;
        let (mn, md) = (
            m.columns[0].iter().sum::<f64>() / n,
            m.columns[1].iter().sum::<f64>() / n,
        );
        let (mut snn, mut snd, mut sdd) = (0.0, 0.0, 0.0);
        for i in 0..m.rows() {
            let (a, b) = (m.columns[0][i] - mn, m.columns[1][i] - md);
            snn += a * a;
            snd += a * b;
            sdd += b * b;
        }
        let fit = &r.fits[0];
        let ssr: f64 = (0..m.rows())
            .map(|i| (m.y[i] - fit.coef[0] - fit.coef[1] * m.columns[0][i] - fit.coef[2] * m.columns[1][i]).powi(2))
            .sum();
        let sigma2 = ssr / (n - 3.0);
        let se_n = (sigma2 * sdd / (snn * sdd - snd * snd)).sqrt();
        let draws: Vec<f64> = r.draws[0].iter().map(|c| c[1]).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let sd = (draws.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (draws.len() - 1) as f64).sqrt();
        assert!((sd / se_n - 1.0).abs() < 0.15, "bootstrap sd {sd}, OLS se {se_n}");
        assert!(
            (mean - fit.coef[1]).abs() < 0.2 * se_n,
            "mean {mean} vs {}",
            fit.coef[1]
        );
    }

    #[test]
    fn cell_resampling_keeps_cells_whole() {
        let cells = [0, 0, 0, 1, 1, 2];
        let mut counts = [0.0; 6];
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            resample_counts(&mut rng, &cells, 3, Resample::Cells, &mut counts);
            assert!(counts[0] == counts[1] && counts[1] == counts[2] && counts[3] == counts[4]);
            assert_eq!(counts[0] + counts[3] + counts[5], 3.0);
        }
        resample_counts(&mut rng, &cells, 3, Resample::Rows, &mut counts);
        assert_eq!(counts.iter().sum::<f64>(), 6.0);
    }
}
