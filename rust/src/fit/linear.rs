//! Linear regression in log space for power laws (log y = c0 + sum c_j log x_j): weighted
//! least squares by Householder QR (stable for the near-collinear log columns of a sweep),
//! and Huber's M-estimator by iteratively reweighted least squares.
//!
//! Rows carry a base weight (a bootstrap multiplicity times an optional user weight, e.g.
//! the inverse variance of a quadratic vertex); a draw with rows resampled is the same fit
//! with integer multiplicities, so the bootstrap never copies the design.
use crate::error::{Error, Result};
use crate::numeric::{huber_weight, MAD_PER_SD};

/// The loss minimised over the residuals r of the log response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Ordinary (weighted) least squares.
    Ols,
    /// Huber's loss with threshold `t` times a robust scale (median |r| / 0.6745,
    /// re-estimated each iteration as statsmodels' RLM does); t = 1.345 gives 95%
    /// efficiency under normal errors.
    Huber { t: f64 },
}

impl Method {
    pub fn from_name(name: &str, huber_t: f64) -> Result<Self> {
        match name {
            "ols" => Ok(Method::Ols),
            "huber" if huber_t.is_finite() && huber_t > 0.0 => Ok(Method::Huber { t: huber_t }),
            "huber" => Err(Error::Invalid(format!(
                "the Huber threshold must be a positive number, got {huber_t}"
            ))),
            other => Err(Error::Invalid(format!(
                "unknown regression method '{other}' (ols, huber)"
            ))),
        }
    }
}

/// One response regressed on the logs of some variables, intercept implied.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Names for messages: the response (e.g. "lr") and each regressor (e.g. "N").
    pub target: String,
    pub regressors: Vec<String>,
    /// One column per regressor (already in log space), each as long as `y`.
    pub columns: Vec<Vec<f64>>,
    pub y: Vec<f64>,
    /// Optional non-negative weight per row.
    pub weights: Option<Vec<f64>>,
}

impl Model {
    pub fn rows(&self) -> usize {
        self.y.len()
    }
    /// Coefficients including the intercept.
    pub fn terms(&self) -> usize {
        self.columns.len() + 1
    }
    fn x(&self, row: usize, term: usize) -> f64 {
        if term == 0 {
            1.0
        } else {
            self.columns[term - 1][row]
        }
    }
    fn weight(&self, row: usize) -> f64 {
        self.weights.as_ref().map_or(1.0, |w| w[row])
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinearFit {
    /// Intercept first, then one coefficient per regressor.
    pub coef: Vec<f64>,
    /// 1 - SSR / SST with the base weights (robust weights left out, so OLS and Huber
    /// fits are scored alike).
    pub r2: f64,
    /// Residual scale: the weighted RMS residual for OLS, the final robust (MAD) scale
    /// for Huber.
    pub scale: f64,
    /// IRLS iterations (0 for OLS).
    pub iterations: usize,
    pub converged: bool,
}

/// Scratch space of one weighted least-squares solve, reused across bootstrap draws.
#[derive(Debug, Default)]
pub struct Workspace {
    a: Vec<f64>,
    b: Vec<f64>,
    residuals: Vec<f64>,
    weights: Vec<f64>,
    order: Vec<usize>,
}

/// Columns whose Householder diagonal falls below this fraction of their own norm are
/// linear combinations of the previous ones.
const RANK_TOLERANCE: f64 = 1e-10;

/// Weighted least squares: minimise sum w_i (y_i - x_i c)^2. None when the weighted design
/// is rank deficient (a column is a combination of the others on the rows with weight).
fn wls(model: &Model, w: &[f64], ws: &mut Workspace) -> Option<Vec<f64>> {
    let (n, k) = (model.rows(), model.terms());
    // Column-major sqrt(w) X and sqrt(w) y.
    ws.a.clear();
    ws.a.resize(n * k, 0.0);
    ws.b.clear();
    for (i, wi) in w.iter().enumerate().take(n) {
        let s = wi.sqrt();
        ws.b.push(s * model.y[i]);
        for j in 0..k {
            ws.a[j * n + i] = s * model.x(i, j);
        }
    }
    let (a, b) = (&mut ws.a, &mut ws.b);
    let mut diag = vec![0.0; k];
    for j in 0..k {
        let col_norm = a[j * n..(j + 1) * n].iter().map(|v| v * v).sum::<f64>().sqrt();
        let norm = a[j * n + j..(j + 1) * n].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm.is_nan() || norm <= RANK_TOLERANCE * col_norm || col_norm == 0.0 {
            return None;
        }
        // Householder vector v = x - alpha e1 with alpha = -sign(x0) |x| (no cancellation).
        let alpha = if a[j * n + j] > 0.0 { -norm } else { norm };
        a[j * n + j] -= alpha;
        let vnorm2: f64 = a[j * n + j..(j + 1) * n].iter().map(|v| v * v).sum();
        // Apply H = I - 2 v v' / v'v to the later columns and to b.
        for c in j + 1..k {
            let dotv: f64 = (j..n).map(|i| a[j * n + i] * a[c * n + i]).sum();
            let f = 2.0 * dotv / vnorm2;
            for i in j..n {
                a[c * n + i] -= f * a[j * n + i];
            }
        }
        let dotb: f64 = (j..n).map(|i| a[j * n + i] * b[i]).sum();
        let f = 2.0 * dotb / vnorm2;
        for i in j..n {
            b[i] -= f * a[j * n + i];
        }
        diag[j] = alpha;
    }
    // Back substitution R c = Q'b (R's diagonal in `diag`, above it in `a`).
    let mut coef = vec![0.0; k];
    for j in (0..k).rev() {
        let mut s = b[j];
        for c in j + 1..k {
            s -= a[c * n + j] * coef[c];
        }
        coef[j] = s / diag[j];
    }
    coef.iter().all(|c| c.is_finite()).then_some(coef)
}

fn residuals(model: &Model, coef: &[f64], out: &mut Vec<f64>) {
    out.clear();
    out.extend(
        (0..model.rows()).map(|i| model.y[i] - (0..model.terms()).map(|j| coef[j] * model.x(i, j)).sum::<f64>()),
    );
}

/// The weighted median of |r| (rows of zero weight left out). With integer weights it is
/// the ordinary median of the multiset, the mean of the middle pair when the count is even.
fn weighted_median_abs(r: &[f64], w: &[f64], order: &mut Vec<usize>) -> f64 {
    order.clear();
    order.extend((0..r.len()).filter(|&i| w[i] > 0.0));
    order.sort_unstable_by(|&i, &j| r[i].abs().total_cmp(&r[j].abs()));
    let total: f64 = order.iter().map(|&i| w[i]).sum();
    let half = 0.5 * total;
    let mut cum = 0.0;
    for (pos, &i) in order.iter().enumerate() {
        cum += w[i];
        if (cum - half).abs() <= 1e-12 * total {
            let next = order.get(pos + 1).map_or(r[i].abs(), |&j| r[j].abs());
            return 0.5 * (r[i].abs() + next);
        }
        if cum > half {
            return r[i].abs();
        }
    }
    0.0
}

/// Consistency constant of the MAD under normal errors (Phi^-1(3/4)).
const IRLS_MAX_ITERATIONS: usize = 200;
const IRLS_TOLERANCE: f64 = 1e-10;

/// Fit `model` with per-row base weights `base` (multiplicity x user weight). None when the
/// weighted design is singular.
pub fn fit_weighted(model: &Model, base: &[f64], method: Method, ws: &mut Workspace) -> Option<LinearFit> {
    let mut coef = wls(model, base, ws)?;
    let mut r = std::mem::take(&mut ws.residuals);
    residuals(model, &coef, &mut r);
    let (mut iterations, mut converged) = (0, true);
    let mut scale = {
        let total: f64 = base.iter().sum();
        (r.iter().zip(base).map(|(ri, wi)| wi * ri * ri).sum::<f64>() / total).sqrt()
    };
    if let Method::Huber { t } = method {
        converged = false;
        let mut order = std::mem::take(&mut ws.order);
        let mut w = std::mem::take(&mut ws.weights);
        while iterations < IRLS_MAX_ITERATIONS {
            scale = weighted_median_abs(&r, base, &mut order) / MAD_PER_SD;
            if scale <= 0.0 {
                // More than half the residuals are exactly zero: the fit is exact on them,
                // and no reweighting can change it.
                converged = true;
                break;
            }
            w.clear();
            w.extend(r.iter().zip(base).map(|(ri, bi)| bi * huber_weight(*ri, t * scale)));
            iterations += 1;
            let Some(next) = wls(model, &w, ws) else { break };
            let change = next.iter().zip(&coef).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            let size = next.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            coef = next;
            residuals(model, &coef, &mut r);
            if change <= IRLS_TOLERANCE * size {
                converged = true;
                break;
            }
        }
        ws.order = order;
        ws.weights = w;
    }
    let total: f64 = base.iter().sum();
    let mean = (0..model.rows()).map(|i| base[i] * model.y[i]).sum::<f64>() / total;
    let sst: f64 = (0..model.rows()).map(|i| base[i] * (model.y[i] - mean).powi(2)).sum();
    let ssr: f64 = r.iter().zip(base).map(|(ri, wi)| wi * ri * ri).sum();
    ws.residuals = r;
    let r2 = if sst > 0.0 { 1.0 - ssr / sst } else { f64::NAN };
    Some(LinearFit {
        coef,
        r2,
        scale,
        iterations,
        converged,
    })
}

/// Densify arbitrary cell labels into 0..n_cells (in order of first appearance).
pub fn cell_index(labels: &[u64]) -> (Vec<usize>, usize) {
    let mut seen = std::collections::HashMap::new();
    let ids = labels
        .iter()
        .map(|l| {
            let next = seen.len();
            *seen.entry(*l).or_insert(next)
        })
        .collect();
    (ids, seen.len())
}

/// Refuse a design whose coefficients are not identifiable, with a message that says why:
/// mismatched lengths, non-finite values, a regressor constant over the samples (e.g. every
/// cell has the same N), too few cells for the coefficients, or collinear regressors.
pub fn check_model(model: &Model, cells: &[usize]) -> Result<()> {
    let n = model.rows();
    let name = &model.target;
    if model.columns.len() != model.regressors.len() {
        return Err(Error::Invalid(format!(
            "{name}: {} regressor names for {} columns",
            model.regressors.len(),
            model.columns.len()
        )));
    }
    if cells.len() != n
        || model.columns.iter().any(|c| c.len() != n)
        || model.weights.as_ref().is_some_and(|w| w.len() != n)
    {
        return Err(Error::Invalid(format!(
            "{name}: every column, the weights and the cell labels must have one value per sample"
        )));
    }
    if model
        .y
        .iter()
        .chain(model.columns.iter().flatten())
        .any(|v| !v.is_finite())
    {
        return Err(Error::InsufficientData(format!(
            "{name}: a sample has a missing, zero, negative or infinite value (logs must be finite)"
        )));
    }
    if let Some(w) = &model.weights {
        if w.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(Error::Invalid(format!("{name}: weights must be finite and >= 0")));
        }
    }
    let used: Vec<usize> = (0..n).filter(|&i| model.weight(i) > 0.0).collect();
    let mut distinct_cells: Vec<usize> = used.iter().map(|&i| cells[i]).collect();
    distinct_cells.sort_unstable();
    distinct_cells.dedup();
    let k = model.terms();
    if distinct_cells.len() <= k {
        return Err(Error::InsufficientData(format!(
            "{name}: too few cells to fit {k} coefficients (intercept + {}): {} cell(s) with samples; at least {} are needed",
            model.regressors.join(", "),
            distinct_cells.len(),
            k + 1
        )));
    }
    for (j, column) in model.columns.iter().enumerate() {
        let first = used.first().map(|&i| column[i]);
        if used.iter().all(|&i| Some(column[i]) == first) {
            let var = &model.regressors[j];
            return Err(Error::InsufficientData(format!(
                "{name}: every sample has the same {var}, so the exponent of {var} is not identifiable; drop {var} from the regressors or add cells with other values"
            )));
        }
    }
    let base: Vec<f64> = (0..n).map(|i| model.weight(i)).collect();
    if wls(model, &base, &mut Workspace::default()).is_none() {
        return Err(Error::InsufficientData(format!(
            "{name}: the regressors {} are collinear over the samples (e.g. D proportional to N in every cell, or C = 6 N D with both N and D): their exponents are not separately identifiable",
            model.regressors.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numeric::HUBER_T;

    fn model(columns: Vec<Vec<f64>>, y: Vec<f64>) -> Model {
        let regressors = (0..columns.len()).map(|j| format!("x{j}")).collect();
        Model {
            target: "y".into(),
            regressors,
            columns,
            y,
            weights: None,
        }
    }

    /// A fixed pseudo-random sequence in [-1, 1) for test data.
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::fit::rng::Rng::new(seed);
        (0..n)
            .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0)
            .collect()
    }

    #[test]
    fn ols_recovers_an_exact_plane_with_log_scale_columns() {
        // Columns like log N (~20) and log D (~25): badly conditioned against the intercept.
        let x1: Vec<f64> = (0..40).map(|i| 19.0 + 0.05 * i as f64).collect();
        let x2: Vec<f64> = (0..40).map(|i| 23.0 + 0.07 * ((i * 7) % 40) as f64).collect();
        let y: Vec<f64> = x1.iter().zip(&x2).map(|(a, b)| 4.37 - 0.768 * a + 0.197 * b).collect();
        let fit = fit_weighted(
            &model(vec![x1, x2], y),
            &[1.0; 40],
            Method::Ols,
            &mut Workspace::default(),
        )
        .unwrap();
        for (c, t) in fit.coef.iter().zip([4.37, -0.768, 0.197]) {
            assert!((c - t).abs() < 1e-10, "{:?}", fit.coef);
        }
        assert!((fit.r2 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn integer_weights_equal_repeated_rows() {
        let x: Vec<f64> = (0..12).map(|i| i as f64).collect();
        let e = noise(12, 3);
        let y: Vec<f64> = x.iter().zip(&e).map(|(a, b)| 1.0 + 2.0 * a + b).collect();
        let counts = [0.0, 2.0, 1.0, 3.0, 0.0, 1.0, 1.0, 0.0, 2.0, 1.0, 0.0, 1.0];
        let mut ws = Workspace::default();
        let weighted = fit_weighted(
            &model(vec![x.clone()], y.clone()),
            &counts,
            Method::Huber { t: HUBER_T },
            &mut ws,
        )
        .unwrap();
        let (mut xr, mut yr) = (vec![], vec![]);
        for i in 0..12 {
            for _ in 0..counts[i] as usize {
                xr.push(x[i]);
                yr.push(y[i]);
            }
        }
        let ones = vec![1.0; xr.len()];
        let repeated = fit_weighted(&model(vec![xr], yr), &ones, Method::Huber { t: HUBER_T }, &mut ws).unwrap();
        for (a, b) in weighted.coef.iter().zip(&repeated.coef) {
            assert!((a - b).abs() < 1e-10, "{weighted:?} {repeated:?}");
        }
        assert!((weighted.scale - repeated.scale).abs() < 1e-12);
    }

    #[test]
    fn huber_resists_an_outlier_that_drags_ols() {
        let x: Vec<f64> = (0..30).map(|i| i as f64 / 3.0).collect();
        let e = noise(30, 9);
        let mut y: Vec<f64> = x.iter().zip(&e).map(|(a, b)| 0.5 - 1.5 * a + 0.01 * b).collect();
        y[29] += 5.0;
        let m = model(vec![x], y);
        let mut ws = Workspace::default();
        let ols = fit_weighted(&m, &[1.0; 30], Method::Ols, &mut ws).unwrap();
        let hub = fit_weighted(&m, &[1.0; 30], Method::Huber { t: HUBER_T }, &mut ws).unwrap();
        assert!(hub.converged && hub.iterations > 1);
        assert!((hub.coef[1] + 1.5).abs() < 0.005, "huber {:?}", hub.coef);
        assert!((ols.coef[1] + 1.5).abs() > 0.05, "ols {:?}", ols.coef);
    }

    #[test]
    fn weighted_median_of_a_multiset() {
        let mut order = vec![];
        assert_eq!(
            weighted_median_abs(&[3.0, -1.0, 2.0], &[1.0, 1.0, 1.0], &mut order),
            2.0
        );
        assert_eq!(
            weighted_median_abs(&[3.0, -1.0, 2.0, 4.0], &[1.0, 1.0, 1.0, 1.0], &mut order),
            2.5
        );
        assert_eq!(
            weighted_median_abs(&[3.0, -1.0, 2.0], &[0.0, 2.0, 1.0], &mut order),
            1.0
        );
        assert_eq!(
            weighted_median_abs(&[3.0, -1.0, 2.0], &[1.0, 1.0, 0.0], &mut order),
            2.0
        );
    }

    #[test]
    fn ill_posed_designs_are_refused_with_the_reason() {
        let cells: Vec<usize> = (0..8).map(|i| i / 2).collect();
        let same_n = model(
            vec![vec![20.0; 8], (0..8).map(|i| 22.0 + i as f64).collect()],
            vec![0.0; 8],
        );
        let e = data_refusal(check_model(
            &Model {
                regressors: vec!["N".into(), "D".into()],
                ..same_n
            },
            &cells,
        ));
        assert!(e.contains("same N") && e.contains("not identifiable"), "{e}");

        let few = model(vec![(0..8).map(|i| (i / 2) as f64).collect()], vec![0.0; 8]);
        let two_cells: Vec<usize> = (0..8).map(|i| i / 4).collect();
        let e = data_refusal(check_model(&few, &two_cells));
        assert!(e.contains("too few cells"), "{e}");

        let n: Vec<f64> = (0..8).map(|i| 19.0 + (i / 2) as f64).collect();
        let d: Vec<f64> = n.iter().map(|v| v + 3.0).collect();
        let collinear = Model {
            regressors: vec!["N".into(), "D".into()],
            ..model(vec![n.clone(), d], vec![1.0; 8])
        };
        let e = data_refusal(check_model(&collinear, &cells));
        assert!(e.contains("collinear"), "{e}");

        let bad = model(
            vec![n],
            (0..8).map(|i| if i == 3 { f64::NEG_INFINITY } else { 0.0 }).collect(),
        );
        assert!(data_refusal(check_model(&bad, &cells)).contains("infinite"));

        // what the caller passed wrong (not the data) stays Error::Invalid
        let m = model(vec![(0..8).map(|i| i as f64).collect()], vec![0.0; 8]);
        assert!(matches!(check_model(&m, &cells[..7]), Err(Error::Invalid(_))));
        let negative = Model {
            weights: Some(vec![-1.0; 8]),
            ..m
        };
        assert!(matches!(check_model(&negative, &cells), Err(Error::Invalid(_))));
        assert!(matches!(Method::from_name("nope", HUBER_T), Err(Error::Invalid(_))));
    }

    /// The message of a refusal that blames the data (`Error::InsufficientData`: exit 1 on
    /// the command line), failing on any other outcome.
    fn data_refusal(r: Result<()>) -> String {
        match r {
            Err(Error::InsufficientData(m)) => m,
            other => panic!("expected Error::InsufficientData, got {other:?}"),
        }
    }
}
