//! The Multi-Power Law (Luo et al. 2025, arXiv 2503.12811) with the conventions of the
//! authors' code, so their published parameters reproduce their curves:
//!
//!   L(s) = L0 + A * S1(s)^-alpha + B * LD(s)
//!   S1(s) = sum_{t=0..=s} eta_t                       (warm-up included)
//!   LD(s) = sum_{k=1..=s} (eta_k - eta_(k-1)) * (1 - (1 + C * eta_k^-gamma * Y_k(s))^-beta)
//!   Y_k(s) = sum_{t=k..=s} eta_t
//!
//! (the paper writes `- B * sum (eta_(k-1) - eta_k) G(...)`, the same thing). The sum over
//! k is quadratic in the number of steps if evaluated at every step. Only the steps where
//! the learning rate changes contribute (d_k = eta_k - eta_(k-1) != 0), and
//! sum_k d_k = eta_s - eta_0, so all the work is F(s) = sum_k d_k (1 + c_k Y_k(s))^-beta.
//! Two ways to compute it:
//!
//! - `Method::Direct`: the plain double sum over (evaluated step, change point). Exact;
//!   cheap for piecewise-constant schedules (few change points) or few evaluated steps.
//! - `Method::ExpSum`: with w_k = eta_k^gamma / C, (1 + c_k Y)^-beta = w_k^beta (w_k + Y)^-beta,
//!   and z^-beta = (1/Gamma(beta)) * integral of e^(beta t) e^(-e^t z) dt, discretised by the
//!   trapezoidal rule in t (exponentially convergent: the error is about
//!   |Gamma(beta + 2 pi i / h)| / Gamma(beta)). Each node v = e^t turns the sum over k into
//!   a state H(s) = sum_k a_k e^(-v (w_k + Y_k(s))) that obeys the recurrence
//!   H(s) = e^(-v (P_s - P_s')) H(s') + (source at s), so the cost is O(nodes x (change
//!   points + evaluated steps)), about 100 nodes for 1e-12 relative accuracy of the kernel.
//!   Gradients come from four such states per node, all sharing the parameter-free
//!   propagator.
use rayon::prelude::*;

use super::Curve;

pub const PARAMS: usize = 7;
pub const NAMES: [&str; PARAMS] = ["L0", "A", "alpha", "B", "C", "beta", "gamma"];

/// How the loss-drop sum is evaluated; `Auto` picks the cheaper for each curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Auto,
    Direct,
    ExpSum,
}

impl Method {
    pub fn from_name(name: &str) -> crate::error::Result<Method> {
        match name {
            "auto" => Ok(Method::Auto),
            "direct" => Ok(Method::Direct),
            "expsum" => Ok(Method::ExpSum),
            other => Err(crate::error::Error::Invalid(format!(
                "unknown MPL method '{other}' (expected auto, direct or expsum)"
            ))),
        }
    }
}

/// Relative accuracy asked of the exponential-sum kernel; the loss error it causes is
/// B * eps * (total variation of the lr), far below 1e-9 of the loss.
const KERNEL_EPS: f64 = 1e-13;
/// Nodes per parallel task: a fixed chunking keeps the floating-point sums in the same
/// order whatever the number of threads, so results are reproducible.
const NODES_PER_TASK: usize = 64;

/// F(s_i) and its derivatives with respect to C, beta and gamma, at each evaluated step.
struct DropSums {
    f: Vec<f64>,
    f_c: Vec<f64>,
    f_beta: Vec<f64>,
    f_gamma: Vec<f64>,
}

/// Predictions at the curve's steps and, when `jacobian` is given, their partial
/// derivatives with respect to [L0, A, alpha, B, C, beta, gamma] (one row per step).
pub fn evaluate(p: &[f64], curve: &Curve, method: Method, jacobian: Option<&mut Vec<[f64; PARAMS]>>) -> Vec<f64> {
    let [l0, a, alpha, b, c, beta, gamma] = [p[0], p[1], p[2], p[3], p[4], p[5], p[6]];
    let changes = curve.changes();
    let method = match method {
        Method::Auto => choose(curve, changes),
        m => m,
    };
    let want = jacobian.is_some();
    let drop = match method {
        Method::ExpSum => expsum(curve, changes, c, beta, gamma, want),
        _ => direct(curve, changes, c, beta, gamma, want),
    };
    let lr = curve.lr();
    let mut pred = Vec::with_capacity(curve.steps().len());
    let mut rows = Vec::new();
    for (i, &s) in curve.steps().iter().enumerate() {
        let s1 = curve.area(s);
        let power = s1.powf(-alpha);
        let ld = (lr[s] - lr[0]) - drop.f[i];
        pred.push(l0 + a * power + b * ld);
        if want {
            rows.push([
                1.0,
                power,
                -a * power * s1.ln(),
                ld,
                -b * drop.f_c[i],
                -b * drop.f_beta[i],
                -b * drop.f_gamma[i],
            ]);
        }
    }
    if let Some(j) = jacobian {
        *j = rows;
    }
    pred
}

/// Direct costs one term (a log and an exponential) per (evaluated step, earlier change
/// point); the exponential sum about 110 nodes x (two vectorised exponentials and four
/// updates) per event. Measured (AVX2), a node-event costs about 0.45 of a direct term.
const EXPSUM_COST_PER_EVENT: usize = 50;

fn choose(curve: &Curve, changes: &[usize]) -> Method {
    let mut direct_cost = 0usize;
    let mut j = 0;
    for &s in curve.steps() {
        while j < changes.len() && changes[j] <= s {
            j += 1;
        }
        direct_cost += j;
    }
    let events = changes.len() + curve.steps().len();
    if direct_cost <= EXPSUM_COST_PER_EVENT * events {
        Method::Direct
    } else {
        Method::ExpSum
    }
}

fn direct(curve: &Curve, changes: &[usize], c: f64, beta: f64, gamma: f64, want: bool) -> DropSums {
    let lr = curve.lr();
    let m = curve.steps().len();
    // Per change point: d_k, c_k = C eta_k^-gamma, ln eta_k.
    let per_change: Vec<(usize, f64, f64, f64)> = changes
        .iter()
        .map(|&k| {
            let ln_eta = lr[k].ln();
            (k, lr[k] - lr[k - 1], c * (-gamma * ln_eta).exp(), ln_eta)
        })
        .collect();
    let one = |s: usize| {
        let ps = curve.prefix(s);
        let (mut f, mut f_c, mut f_beta, mut f_gamma) = (0.0, 0.0, 0.0, 0.0);
        for &(k, d, ck, ln_eta) in per_change.iter().take_while(|ch| ch.0 <= s) {
            let y = ps - curve.prefix(k - 1);
            let u = 1.0 + ck * y;
            let ln_u = u.ln();
            let term = d * (-beta * ln_u).exp();
            f += term;
            if want {
                f_beta -= term * ln_u;
                let q = term * (u - 1.0) / u;
                f_c -= beta * q / c;
                f_gamma += beta * q * ln_eta;
            }
        }
        (f, f_c, f_beta, f_gamma)
    };
    let rows: Vec<(f64, f64, f64, f64)> = curve.steps().par_iter().map(|&s| one(s)).collect();
    let mut out = DropSums {
        f: Vec::with_capacity(m),
        f_c: Vec::new(),
        f_beta: Vec::new(),
        f_gamma: Vec::new(),
    };
    for (f, f_c, f_beta, f_gamma) in rows {
        out.f.push(f);
        out.f_c.push(f_c);
        out.f_beta.push(f_beta);
        out.f_gamma.push(f_gamma);
    }
    out
}

/// The trapezoidal rule for z^-beta Gamma(beta) = integral e^(beta t) e^(-e^t z) dt on
/// nodes t_j = t0 + j h, j = 0..count, plus the part of the infinite sum below t0 where
/// e^(-e^t z) ~ 1 (a geometric series: `tail` = h e^(beta t0) / (e^(beta h) - 1)).
struct Nodes {
    t0: f64,
    h: f64,
    count: usize,
    tail: f64,
    /// d tail / d beta.
    tail_beta: f64,
}

impl Nodes {
    /// Nodes accurate to about KERNEL_EPS (relative) for z in [z_min, z_max].
    fn new(beta: f64, z_min: f64, z_max: f64) -> Nodes {
        // Aliasing error of the trapezoidal rule with step h = 2 pi / y: about
        // 2 |Gamma(beta + i y)| / Gamma(beta) <= 2.3 sqrt(2 pi) y^(beta - 1/2) e^(-pi y / 2)
        // (Stirling; 1 / Gamma(beta) <= 1.13 for beta > 0).
        let bound = |y: f64| {
            2.3 * (2.0 * std::f64::consts::PI).sqrt() * y.powf(beta - 0.5) * (-std::f64::consts::PI * y / 2.0).exp()
        };
        let mut y = 8.0;
        while bound(y) > KERNEL_EPS && y < 200.0 {
            y += 0.25;
        }
        let h = 2.0 * std::f64::consts::PI / y;
        // Below t0 the omitted factor 1 - e^(-e^t z) <= e^t z costs (z e^t0)^(beta+1)
        // relative: put t0 where that is eps. Above the last node e^(-e^t z_min) is
        // negligible once e^t z_min >= 40 + 2 beta.
        let t0 = KERNEL_EPS.ln() / (beta + 1.0) - z_max.ln();
        let t_end = (40.0 + 2.0 * beta).ln() - z_min.ln();
        let count = ((t_end - t0) / h).ceil().max(1.0) as usize + 1;
        let e = (beta * h).exp();
        let tail = h * (beta * t0).exp() / (e - 1.0);
        let tail_beta = tail * (t0 - h * e / (e - 1.0));
        Nodes {
            t0,
            h,
            count,
            tail,
            tail_beta,
        }
    }

    fn t(&self, j: usize) -> f64 {
        self.t0 + self.h * j as f64
    }
}

/// One event of the recurrence: a change point (a source) and/or an evaluated step.
struct Event {
    /// sum of eta over (previous event, this event]: the propagator's exponent over v.
    gap: f64,
    /// Source terms a, a w, a ln eta, a w ln eta (a = d_k w_k^beta) and the source's own
    /// exponent over v: w_k + eta_k (Y_k(k) = eta_k). None for a step without a change.
    source: Option<([f64; 4], f64)>,
    /// Index of the evaluated step, if this is one.
    eval: Option<usize>,
}

fn expsum(curve: &Curve, changes: &[usize], c: f64, beta: f64, gamma: f64, want: bool) -> DropSums {
    let lr = curve.lr();
    let steps = curve.steps();
    let m = steps.len();
    let ln_c = c.ln();

    // Merge change points and evaluated steps (both sorted) into events.
    let mut events: Vec<Event> = Vec::with_capacity(changes.len() + m);
    // Tail node (v = 0): prefix sums of a and a ln eta at each evaluated step.
    let mut tail_a = vec![0.0; m];
    let mut tail_a_ln = vec![0.0; m];
    let (mut sum_a, mut sum_a_ln) = (0.0, 0.0);
    let (mut z_min, mut w_max) = (f64::INFINITY, 0.0f64);
    let (mut ci, mut si) = (0, 0);
    let mut prev: Option<usize> = None;
    while ci < changes.len() || si < m {
        let next_change = changes.get(ci).copied().unwrap_or(usize::MAX);
        let next_step = steps.get(si).copied().unwrap_or(usize::MAX);
        let e = next_change.min(next_step);
        if e > *steps.last().unwrap_or(&0) {
            break; // change points after the last evaluated step never matter
        }
        let gap = match prev {
            Some(p) if e == p + 1 => lr[e],
            Some(p) => curve.prefix(e) - curve.prefix(p),
            None => 0.0,
        };
        let mut source = None;
        if next_change == e {
            let ln_eta = lr[e].ln();
            let w = ((gamma * ln_eta).exp()) / c;
            let a = (lr[e] - lr[e - 1]) * (beta * w.ln()).exp();
            sum_a += a;
            sum_a_ln += a * ln_eta;
            z_min = z_min.min(w + lr[e]);
            w_max = w_max.max(w);
            source = Some(([a, a * w, a * ln_eta, a * w * ln_eta], w + lr[e]));
            ci += 1;
        }
        let mut eval = None;
        if next_step == e {
            tail_a[si] = sum_a;
            tail_a_ln[si] = sum_a_ln;
            eval = Some(si);
            si += 1;
        }
        events.push(Event { gap, source, eval });
        prev = Some(e);
    }

    let mut out = DropSums {
        f: vec![0.0; m],
        f_c: vec![0.0; m],
        f_beta: vec![0.0; m],
        f_gamma: vec![0.0; m],
    };
    if !z_min.is_finite() {
        return out; // no change point before the last evaluated step: F = 0
    }
    // The rule is also evaluated at z = 1 (the normalisation below): cover it too.
    let z_max = (w_max + curve.prefix(*steps.last().unwrap())).max(1.0);
    let nodes = Nodes::new(beta, z_min.min(1.0), z_max);

    // Per node: sums over nodes of weight x state at each evaluated step. Columns:
    // 0: w H, 1: w t H, 2: w H_gamma, 3: w v K, 4: w v K_gamma (w = h e^(beta t)).
    let columns = if want { 5 } else { 1 };
    let ranges: Vec<std::ops::Range<usize>> = (0..nodes.count)
        .step_by(NODES_PER_TASK)
        .map(|s| s..(s + NODES_PER_TASK).min(nodes.count))
        .collect();
    let parts: Vec<Vec<f64>> = ranges
        .into_par_iter()
        .map(|range| {
            let t: Vec<f64> = range.map(|j| nodes.t(j)).collect();
            let v: Vec<f64> = t.iter().map(|t| t.exp()).collect();
            let weight: Vec<f64> = t.iter().map(|t| nodes.h * (beta * t).exp()).collect();
            run_nodes(&events, &t, &v, &weight, m, want)
        })
        .collect();
    let mut acc = vec![0.0; columns * m];
    for part in parts {
        acc.iter_mut().zip(part).for_each(|(a, p)| *a += p);
    }

    // Normalise by the same quadrature at z = 1 (about Gamma(beta)), so Gamma and digamma
    // are never needed and the derivative in beta stays consistent with the rule.
    let (mut q1, mut q1_beta) = (nodes.tail, nodes.tail_beta);
    for j in 0..nodes.count {
        let t = nodes.t(j);
        let term = nodes.h * (beta * t - t.exp()).exp();
        q1 += term;
        q1_beta += t * term;
    }
    for i in 0..m {
        let n = nodes.tail * tail_a[i] + acc[i];
        let f = n / q1;
        out.f[i] = f;
        if want {
            // ln w = gamma ln eta - ln C, so the beta-source a ln w is gamma (a ln eta) - ln C a.
            let n_beta = nodes.tail_beta * tail_a[i]
                + nodes.tail * (gamma * tail_a_ln[i] - ln_c * tail_a[i])
                + acc[m + i]
                + (gamma * acc[2 * m + i] - ln_c * acc[i]);
            out.f_beta[i] = n_beta / q1 - f * q1_beta / q1;
            out.f_c[i] = -(beta * f - acc[3 * m + i] / q1) / c;
            out.f_gamma[i] = (beta * (nodes.tail * tail_a_ln[i] + acc[2 * m + i]) - acc[4 * m + i]) / q1;
        }
    }
    out
}

/// The recurrence over all events for a block of nodes (node times `t`, v = e^t, quadrature
/// weights), nodes innermost so the loops vectorise. Returns the per-step columns described
/// in `expsum` (5 x m when `want`, else m).
fn run_nodes(events: &[Event], t: &[f64], v: &[f64], weight: &[f64], m: usize, want: bool) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { run_nodes_avx2(events, t, v, weight, m, want) };
    }
    if want {
        run_nodes_portable::<true>(events, t, v, weight, m)
    } else {
        run_nodes_portable::<false>(events, t, v, weight, m)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_nodes_avx2(events: &[Event], t: &[f64], v: &[f64], weight: &[f64], m: usize, want: bool) -> Vec<f64> {
    if want {
        run_nodes_portable::<true>(events, t, v, weight, m)
    } else {
        run_nodes_portable::<false>(events, t, v, weight, m)
    }
}

/// `WANT`: also the gradient states (a compile-time switch, so each loop is branch-free).
#[inline(always)]
fn run_nodes_portable<const WANT: bool>(events: &[Event], t: &[f64], v: &[f64], weight: &[f64], m: usize) -> Vec<f64> {
    let want = WANT;
    let n = v.len();
    let weight_t: Vec<f64> = weight.iter().zip(t).map(|(w, t)| w * t).collect();
    let weight_v: Vec<f64> = weight.iter().zip(v).map(|(w, v)| w * v).collect();
    // States per node: H, K, H_gamma, K_gamma (see the module's notes).
    let mut states = vec![0.0; 4 * n];
    // Slices of exactly n elements: the indexing below needs no bounds checks and vectorises.
    let (h, rest) = states.split_at_mut(n);
    let (k, rest) = rest.split_at_mut(n);
    let (hg, kg) = rest.split_at_mut(n);
    let (v, weight, weight_t, weight_v) = (&v[..n], &weight[..n], &weight_t[..n], &weight_v[..n]);
    let mut acc = vec![0.0; if want { 5 * m } else { m }];
    for ev in events {
        match (&ev.source, ev.gap > 0.0) {
            (Some((src, exponent)), true) => {
                for j in 0..n {
                    let d = exp_nonpositive(-v[j] * ev.gap);
                    let e = exp_nonpositive(-v[j] * exponent);
                    h[j] = h[j] * d + src[0] * e;
                    if want {
                        k[j] = k[j] * d + src[1] * e;
                        hg[j] = hg[j] * d + src[2] * e;
                        kg[j] = kg[j] * d + src[3] * e;
                    }
                }
            }
            (Some((src, exponent)), false) => {
                for j in 0..n {
                    let e = exp_nonpositive(-v[j] * exponent);
                    h[j] += src[0] * e;
                    if want {
                        k[j] += src[1] * e;
                        hg[j] += src[2] * e;
                        kg[j] += src[3] * e;
                    }
                }
            }
            (None, true) => {
                for j in 0..n {
                    let d = exp_nonpositive(-v[j] * ev.gap);
                    h[j] *= d;
                    if want {
                        k[j] *= d;
                        hg[j] *= d;
                        kg[j] *= d;
                    }
                }
            }
            (None, false) => {}
        }
        if let Some(i) = ev.eval {
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
            acc[i] = dot(weight, h);
            if want {
                acc[m + i] = dot(weight_t, h);
                acc[2 * m + i] = dot(weight, hg);
                acc[3 * m + i] = dot(weight_v, k);
                acc[4 * m + i] = dot(weight_v, kg);
            }
        }
    }
    acc
}

/// e^x for x <= 0 without branches or library calls, so loops over it vectorise. Writes
/// x as n ln 2 plus r with |r| <= ln 2 / 2 (n found by the 1.5 * 2^52 rounding trick, whose
/// low mantissa bits are n), takes e^r by its Taylor series to degree 13 (truncation below
/// 1e-17) and multiplies by 2^n built from its exponent bits. Relative error a few ulp;
/// 0 below -708 (no subnormals).
#[inline(always)]
pub(super) fn exp_nonpositive(x: f64) -> f64 {
    const SHIFT: f64 = 6755399441055744.0;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const INV_FACTORIAL: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
        1.0 / 362880.0,
        1.0 / 3628800.0,
        1.0 / 39916800.0,
        1.0 / 479001600.0,
        1.0 / 6227020800.0,
    ];
    // Selects and a written-out Horner scheme: f64::max and an iterator loop here keep
    // LLVM from vectorising the callers' loops.
    let xc = if x < -708.0 { -708.0 } else { x };
    let kd = xc * std::f64::consts::LOG2_E + SHIFT;
    let n = kd - SHIFT;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let c = &INV_FACTORIAL;
    let mut p = c[13] * r + c[12];
    p = p * r + c[11];
    p = p * r + c[10];
    p = p * r + c[9];
    p = p * r + c[8];
    p = p * r + c[7];
    p = p * r + c[6];
    p = p * r + c[5];
    p = p * r + c[4];
    p = p * r + c[3];
    p = p * r + c[2];
    p = p * r + c[1];
    p = p * r + c[0];
    let scale = f64::from_bits(1.0f64.to_bits().wrapping_add(kd.to_bits() << 52));
    if x < -708.0 {
        0.0
    } else {
        p * scale
    }
}
