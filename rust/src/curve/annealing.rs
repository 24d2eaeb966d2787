//! The LR-annealing law of Tissue et al. 2024 ("Scaling Law with Learning Rate Annealing"):
//!
//!   L(s) = L0 + A * S1(s)^-alpha - C * S2(s)
//!   S1(s) = sum_{t=0..=s} eta_t                     (the forward area)
//!   S2(s) = sum_{t=1..=s} m_t,  m_t = lambda m_(t-1) + (eta_(t-1) - eta_t),  m_0 = 0
//!
//! lambda (about 0.999) is a fixed hyperparameter, not fitted. One pass over the steps.
use super::Curve;

pub const PARAMS: usize = 4;
pub const NAMES: [&str; PARAMS] = ["L0", "A", "alpha", "C"];

/// S2 at each of the curve's steps.
pub fn annealing_area(curve: &Curve, lambda: f64) -> Vec<f64> {
    let lr = curve.lr();
    let mut out = Vec::with_capacity(curve.steps().len());
    let (mut momentum, mut s2) = (0.0, 0.0);
    let mut t = 0;
    for &s in curve.steps() {
        while t < s {
            t += 1;
            momentum = lambda * momentum + (lr[t - 1] - lr[t]);
            s2 += momentum;
        }
        out.push(s2);
    }
    out
}

/// Predictions at the curve's steps and, when asked, their derivatives with respect to
/// [L0, A, alpha, C].
pub fn evaluate(p: &[f64], curve: &Curve, lambda: f64, jacobian: Option<&mut Vec<[f64; PARAMS]>>) -> Vec<f64> {
    let [l0, a, alpha, c] = [p[0], p[1], p[2], p[3]];
    let s2 = annealing_area(curve, lambda);
    let mut pred = Vec::with_capacity(s2.len());
    let mut rows = Vec::new();
    for (&s, &s2) in curve.steps().iter().zip(&s2) {
        let s1 = curve.area(s);
        let power = s1.powf(-alpha);
        pred.push(l0 + a * power - c * s2);
        if jacobian.is_some() {
            rows.push([1.0, power, -a * power * s1.ln(), -s2]);
        }
    }
    if let Some(j) = jacobian {
        *j = rows;
    }
    pred
}
