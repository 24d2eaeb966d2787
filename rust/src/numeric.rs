//! Small numerical pieces several modules share: Huber's loss and weights, the robust scale
//! of residuals, and a dense solver for the tiny normal equations of the fits.

/// Huber's tuning constant, in units of the residuals' robust scale: 95% efficiency under
/// Gaussian noise (Huber 1981; statsmodels' and R's default).
pub const HUBER_T: f64 = 1.345;

/// The median of |r| over the standard deviation for Gaussian r (Phi^-1(0.75)): a MAD
/// divided by it estimates the standard deviation.
pub const MAD_PER_SD: f64 = 0.674_489_750_196_081_7;

/// Huber's loss at residual `r` with threshold `delta`: (rho, psi = d rho / d r).
#[inline]
pub fn huber(r: f64, delta: f64) -> (f64, f64) {
    if r.abs() <= delta {
        (0.5 * r * r, r)
    } else {
        (delta * (r.abs() - 0.5 * delta), delta * r.signum())
    }
}

/// The IRLS weight psi(r) / r of Huber's loss with threshold `c`: 1 inside, c / |r| outside.
#[inline]
pub fn huber_weight(r: f64, c: f64) -> f64 {
    if r.abs() <= c {
        1.0
    } else {
        c / r.abs()
    }
}

/// Solve the K x K system `a x = b` by Gaussian elimination with partial pivoting. None when
/// a pivot is below 1e-12 of the largest entry (singular to working precision).
pub fn solve_dense<const K: usize>(mut a: [[f64; K]; K], mut b: [f64; K]) -> Option<[f64; K]> {
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for col in 0..K {
        let pivot = (col..K).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        // A NaN pivot fails the test too.
        let usable = a[pivot][col].abs() > 1e-12 * scale;
        if !usable {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col];
        for row in col + 1..K {
            let f = a[row][col] / pivot_row[col];
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; K];
    for row in (0..K).rev() {
        let s: f64 = (row + 1..K).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_permuted_system_and_refuses_a_singular_one() {
        // The first pivot is zero: partial pivoting must swap rows.
        let a = [[0.0, 2.0, 1.0], [1.0, 1.0, 0.0], [3.0, 0.0, 1.0]];
        let x_true = [1.5, -2.0, 0.25];
        let b: [f64; 3] = std::array::from_fn(|r| (0..3).map(|c| a[r][c] * x_true[c]).sum());
        let x = solve_dense(a, b).unwrap();
        for (got, want) in x.iter().zip(x_true) {
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
        assert!(solve_dense([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0]).is_none());
        assert!(solve_dense([[f64::NAN, 0.0], [0.0, 1.0]], [1.0, 1.0]).is_none());
    }

    #[test]
    fn huber_pieces_agree() {
        for r in [-3.0, -1.0, -0.2, 0.0, 0.7, 1.0, 2.5] {
            let (rho, psi) = huber(r, 1.0);
            let h = 1e-6;
            let numeric = (huber(r + h, 1.0).0 - huber(r - h, 1.0).0) / (2.0 * h);
            assert!((psi - numeric).abs() < 1e-6, "r={r}");
            assert!(rho >= 0.0);
            if r != 0.0 {
                assert!((huber_weight(r, 1.0) - psi / r).abs() < 1e-12);
            }
        }
    }
}
