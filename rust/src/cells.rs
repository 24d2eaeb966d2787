//! The landscape of one (N, D) cell near its optimum: a quadratic in (log lr, log batch)
//! fitted by least squares, its vertex (the continuous optimum between grid points), the
//! Hessian, and the vertex's bootstrap spread.
use rayon::prelude::*;

use crate::fit::rng::Rng;
use crate::numeric::solve_dense;

/// z = c0 + c1 u + c2 v + c3 u^2 + c4 u v + c5 v^2, with (u, v) the centred logs.
const TERMS: usize = 6;

#[derive(Debug, Clone, PartialEq)]
pub struct Quadratic {
    /// Coefficients in the centred coordinates (u, v) = (x - x0, y - y0).
    pub coef: [f64; TERMS],
    pub centre: (f64, f64),
    /// Second derivatives [[z_xx, z_xy], [z_xy, z_yy]].
    pub hessian: [[f64; 2]; 2],
    /// Positive definite Hessian: the fit has a minimum.
    pub convex: bool,
    /// The stationary point (x, y) and the fitted z there; None when the Hessian is singular.
    pub vertex: Option<(f64, f64, f64)>,
    pub r2: f64,
    pub points: usize,
}

/// One cell's bootstrap result: the vertex spread in x and y (standard deviations) and
/// 2.5% / 97.5% percentiles, over the draws that gave a convex fit.
#[derive(Debug, Clone, PartialEq)]
pub struct VertexSpread {
    pub sd: (f64, f64),
    pub x_interval: (f64, f64),
    pub y_interval: (f64, f64),
    pub draws: usize,
    /// Draws whose resampled fit was not convex (their vertex is no minimum).
    pub non_convex: usize,
}

fn terms(u: f64, v: f64) -> [f64; TERMS] {
    [1.0, u, v, u * u, u * v, v * v]
}

/// Least-squares quadratic through the points picked by `rows` (indices into x, y, z; a
/// bootstrap draw repeats some). None when the design cannot identify all six terms
/// (fewer than three levels along an axis, or too few points).
fn fit_rows(x: &[f64], y: &[f64], z: &[f64], rows: &[usize], centre: (f64, f64)) -> Option<Quadratic> {
    if rows.len() < TERMS {
        return None;
    }
    let mut ata = [[0.0; TERMS]; TERMS];
    let mut atb = [0.0; TERMS];
    for &i in rows {
        let t = terms(x[i] - centre.0, y[i] - centre.1);
        for r in 0..TERMS {
            for c in 0..TERMS {
                ata[r][c] += t[r] * t[c];
            }
            atb[r] += t[r] * z[i];
        }
    }
    let coef = solve_dense(ata, atb)?;
    let (hxx, hxy, hyy) = (2.0 * coef[3], coef[4], 2.0 * coef[5]);
    let det = hxx * hyy - hxy * hxy;
    let convex = hxx > 0.0 && det > 0.0;
    let vertex = (det.abs() > 1e-12 * (hxx.abs() + hyy.abs()).powi(2).max(1e-300)).then(|| {
        // Gradient zero: H (u, v) = -(c1, c2).
        let u = (-coef[1] * hyy + coef[2] * hxy) / det;
        let v = (-coef[2] * hxx + coef[1] * hxy) / det;
        let zv = terms(u, v).iter().zip(&coef).map(|(t, c)| t * c).sum::<f64>();
        (u + centre.0, v + centre.1, zv)
    });
    let mean = rows.iter().map(|&i| z[i]).sum::<f64>() / rows.len() as f64;
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for &i in rows {
        let fit: f64 = terms(x[i] - centre.0, y[i] - centre.1)
            .iter()
            .zip(&coef)
            .map(|(t, c)| t * c)
            .sum();
        ss_res += (z[i] - fit).powi(2);
        ss_tot += (z[i] - mean).powi(2);
    }
    let r2 = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 1.0 };
    Some(Quadratic {
        coef,
        centre,
        hessian: [[hxx, hxy], [hxy, hyy]],
        convex,
        vertex,
        r2,
        points: rows.len(),
    })
}

fn distinct_levels(v: &[f64]) -> usize {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * b.abs().max(1.0));
    s.len()
}

/// Fit z over (x, y), centred at the lowest z. None when the points do not span three
/// levels along each axis (the curvature along that axis is not measured).
pub fn fit_quadratic(x: &[f64], y: &[f64], z: &[f64]) -> Option<Quadratic> {
    if distinct_levels(x) < 3 || distinct_levels(y) < 3 {
        return None;
    }
    let best = (0..z.len()).min_by(|&a, &b| z[a].total_cmp(&z[b]))?;
    let rows: Vec<usize> = (0..z.len()).collect();
    fit_rows(x, y, z, &rows, (x[best], y[best]))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Resample the points with replacement `draws` times and refit: the spread of the
/// vertex. Draws with a singular or non-convex fit are counted, not used.
pub fn bootstrap_vertex(x: &[f64], y: &[f64], z: &[f64], draws: usize, seed: u64) -> Option<VertexSpread> {
    let fit = fit_quadratic(x, y, z)?;
    let n = z.len();
    let results: Vec<Option<(f64, f64)>> = (0..draws)
        .into_par_iter()
        .map(|d| {
            let mut rng = Rng::stream(seed, d as u64);
            let rows: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            let q = fit_rows(x, y, z, &rows, fit.centre)?;
            q.convex.then_some(())?;
            q.vertex.map(|(vx, vy, _)| (vx, vy))
        })
        .collect();
    let ok: Vec<(f64, f64)> = results.iter().flatten().copied().collect();
    if ok.len() < 2 {
        return None;
    }
    let sd = |vals: &[f64]| {
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (vals.len() - 1) as f64).sqrt()
    };
    let mut xs: Vec<f64> = ok.iter().map(|p| p.0).collect();
    let mut ys: Vec<f64> = ok.iter().map(|p| p.1).collect();
    let spread = (sd(&xs), sd(&ys));
    xs.sort_by(|a, b| a.total_cmp(b));
    ys.sort_by(|a, b| a.total_cmp(b));
    Some(VertexSpread {
        sd: spread,
        x_interval: (percentile(&xs, 0.025), percentile(&xs, 0.975)),
        y_interval: (percentile(&ys, 0.025), percentile(&ys, 0.975)),
        draws: ok.len(),
        non_convex: draws - ok.len(),
    })
}

/// Fit and bootstrap many cells at once, in parallel: `cell` gives each point's cell index
/// (0..n_cells).
pub fn fit_cells(
    cell: &[usize],
    x: &[f64],
    y: &[f64],
    z: &[f64],
    draws: usize,
    seed: u64,
) -> Vec<(Option<Quadratic>, Option<VertexSpread>)> {
    let n_cells = cell.iter().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_cells];
    for (i, &c) in cell.iter().enumerate() {
        members[c].push(i);
    }
    members
        .par_iter()
        .enumerate()
        .map(|(c, idx)| {
            let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
            let (cx, cy, cz) = (pick(x), pick(y), pick(z));
            let fit = fit_quadratic(&cx, &cy, &cz);
            let spread = if draws > 0 && fit.is_some() {
                bootstrap_vertex(&cx, &cy, &cz, draws, seed.wrapping_add(c as u64))
            } else {
                None
            };
            (fit, spread)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(f: impl Fn(f64, f64) -> f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mut x, mut y, mut z) = (vec![], vec![], vec![]);
        for i in 0..7 {
            for j in 0..5 {
                let (a, b) = (-8.0 + 0.35 * i as f64, 13.0 + 0.69 * j as f64);
                x.push(a);
                y.push(b);
                z.push(f(a, b));
            }
        }
        (x, y, z)
    }

    #[test]
    fn exact_quadratic_recovers_vertex_and_hessian() {
        let (x0, y0) = (-7.1, 14.2);
        let (x, y, z) = grid(|a, b| 2.5 + 0.3 * (a - x0).powi(2) + 0.1 * (a - x0) * (b - y0) + 0.2 * (b - y0).powi(2));
        let q = fit_quadratic(&x, &y, &z).unwrap();
        let (vx, vy, vz) = q.vertex.unwrap();
        assert!(
            (vx - x0).abs() < 1e-9 && (vy - y0).abs() < 1e-9 && (vz - 2.5).abs() < 1e-9,
            "{q:?}"
        );
        assert!((q.hessian[0][0] - 0.6).abs() < 1e-9 && (q.hessian[0][1] - 0.1).abs() < 1e-9);
        assert!(q.convex && (q.r2 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn saddle_is_not_convex_and_too_few_levels_is_none() {
        let (x, y, z) = grid(|a, b| (a + 7.0).powi(2) - (b - 14.0).powi(2));
        assert!(!fit_quadratic(&x, &y, &z).unwrap().convex);
        let (x, y, z) = (
            vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0],
            vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            vec![1.0; 6],
        );
        assert!(fit_quadratic(&x, &y, &z).is_none());
    }

    #[test]
    fn bootstrap_is_deterministic_and_spreads_with_noise() {
        let mut rng = Rng::new(7);
        let (x, y, mut z) = grid(|a, b| 2.5 + 0.3 * (a + 7.1).powi(2) + 0.2 * (b - 14.2).powi(2));
        for v in z.iter_mut() {
            *v += 1e-3 * (rng.below(1000) as f64 / 1000.0 - 0.5);
        }
        let a = bootstrap_vertex(&x, &y, &z, 200, 42).unwrap();
        let b = bootstrap_vertex(&x, &y, &z, 200, 42).unwrap();
        assert_eq!(a, b);
        assert!(
            a.sd.0 > 0.0 && a.sd.0 < 0.05 && a.x_interval.0 < -7.1 && a.x_interval.1 > -7.1,
            "{a:?}"
        );
    }
}
