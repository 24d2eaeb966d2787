//! The per-step work of the final-loss forecast (issue 18, `steplaw_db.forecast`): the
//! LR-annealing law's areas over a run's whole planned schedule, sampled only where the fit
//! and the forecast read them.
//!
//! S1(t) = sum_{u<=t} lr_u (the lr area) and S2(t) = sum_{u<=t} m_u with
//! m_u = lam m_(u-1) + lr_(u-1) - lr_u, m_0 = 0 (the annealing area, `curve::Form::Annealing`).
//! The forecast used to build both as arrays of every step in numpy (two cumulative sums and a
//! recursive filter over 20k-120k steps a run) and then read a few hundred of them; here they
//! are accumulated in one pass and only the samples are kept. The sums run in the same order as
//! numpy's (`cumsum` and scipy's `lfilter` are sequential), so the values are the same.
use crate::error::{Error, Result};

/// S1 and S2 at `at`: positions on the step axis 0 .. lr.len() - 1, finite and nondecreasing,
/// read between steps by linear interpolation exactly as `numpy.interp(at, arange(n), s)`
/// (clamped to the ends outside the axis).
pub fn annealing_areas_at(lr: &[f64], lam: f64, at: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    if lr.is_empty() {
        return Err(Error::Invalid("annealing areas: the per-step lr is empty".into()));
    }
    if !lam.is_finite() {
        return Err(Error::Invalid(format!(
            "annealing areas: lam must be finite, got {lam}"
        )));
    }
    if let Some(i) = at.iter().position(|x| !x.is_finite()) {
        return Err(Error::Invalid(format!(
            "annealing areas: sample position {i} is not finite ({})",
            at[i]
        )));
    }
    if let Some(i) = at.windows(2).position(|w| w[1] < w[0]) {
        return Err(Error::Invalid(format!(
            "annealing areas: sample positions must be nondecreasing, position {} ({}) is after {}",
            i + 1,
            at[i + 1],
            at[i]
        )));
    }
    let n = lr.len();
    let last = (n - 1) as f64;
    let mut s1_at = vec![0.0; at.len()];
    let mut s2_at = vec![0.0; at.len()];
    let mut k = 0;
    // positions before step 0: the value at step 0 (numpy.interp's left end)
    let (mut s1, mut m, mut s2) = (lr[0], 0.0_f64, 0.0_f64);
    while k < at.len() && at[k] < 0.0 {
        (s1_at[k], s2_at[k]) = (s1, s2);
        k += 1;
    }
    for t in 1..n {
        let (p1, p2) = (s1, s2);
        s1 += lr[t];
        m = lam * m + (lr[t - 1] - lr[t]);
        s2 += m;
        // positions in [t - 1, t): numpy.interp's slope * (x - xp[j]) + fp[j], slope over a
        // unit step; an integer position t - 1 gets fp[t - 1] exactly
        let j = (t - 1) as f64;
        while k < at.len() && at[k] < t as f64 {
            let dx = at[k] - j;
            s1_at[k] = (s1 - p1) * dx + p1;
            s2_at[k] = (s2 - p2) * dx + p2;
            k += 1;
        }
    }
    // the last step and beyond: its value (numpy.interp's right end)
    debug_assert!(at[k..].iter().all(|&x| x >= last));
    for i in k..at.len() {
        (s1_at[i], s2_at[i]) = (s1, s2);
    }
    Ok((s1_at, s2_at))
}

/// How a [`Schedule`] decays after its warm-up (`steplaw_db.curve.Schedule.decay`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    Cosine,
    Linear,
    Constant,
    /// Warm-up, stable at the peak until `start`, then over `length` steps to the floor.
    Wsd {
        start: usize,
        length: usize,
        shape: WsdShape,
    },
}

/// The shape of a WSD decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WsdShape {
    Linear,
    /// Geometric: peak^(1-g) floor^g.
    Exponential,
    Cosine,
}

/// A named lr schedule, step by step exactly as `steplaw_db.curve.Schedule.lr` (its docstring
/// defines it; the same expressions in the same order, so equal up to the last bit of `cos` and
/// `powf`). Validated there: here the fields are taken as they are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub peak: f64,
    pub total_steps: usize,
    pub warmup_steps: usize,
    pub warmup_start: f64,
    pub floor: f64,
    pub decay: Decay,
}

impl Schedule {
    /// The lr at steps 0 .. n - 1.
    pub fn lr(&self, n: usize) -> Vec<f64> {
        self.lr_range(0, n)
    }

    /// The lr at steps start .. n - 1.
    pub fn lr_range(&self, start: usize, n: usize) -> Vec<f64> {
        (start.min(n)..n).map(|t| self.lr_at(t)).collect()
    }

    /// The lr at step t.
    pub fn lr_at(&self, t: usize) -> f64 {
        let (w, t_end, peak, floor) = (self.warmup_steps, self.total_steps, self.peak, self.floor);
        let cosine = |f: f64| floor + 0.5 * (peak - floor) * (1.0 + (std::f64::consts::PI * f).cos());
        if t < w {
            // numpy.linspace(warmup_start, peak, W)[t]: t * step + start, the last exactly the peak
            let delta = peak - self.warmup_start;
            let div = (w - 1) as f64;
            let step = delta / div;
            return if w == 1 {
                0.0 * delta + self.warmup_start
            } else if t == w - 1 {
                peak
            } else if step == 0.0 {
                t as f64 / div * delta + self.warmup_start
            } else {
                t as f64 * step + self.warmup_start
            };
        }
        if t >= t_end {
            return if self.decay == Decay::Constant { peak } else { floor };
        }
        let f = (t - w) as f64 / (t_end - w) as f64;
        match self.decay {
            Decay::Cosine => cosine(f),
            Decay::Linear => peak + (floor - peak) * f,
            Decay::Constant => peak,
            Decay::Wsd { start, length, shape } => {
                if t < start {
                    peak
                } else if t < start + length {
                    let g = (t - start) as f64 / length as f64;
                    match shape {
                        WsdShape::Linear => peak * (1.0 - g) + floor * g,
                        WsdShape::Exponential => peak.powf(1.0 - g) * floor.powf(g),
                        WsdShape::Cosine => cosine(g),
                    }
                } else {
                    floor
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curve::tests::cosine;

    /// The definition, step by step, as whole arrays (what numpy did).
    fn naive(lr: &[f64], lam: f64) -> (Vec<f64>, Vec<f64>) {
        let n = lr.len();
        let mut s1 = vec![0.0; n];
        let mut s2 = vec![0.0; n];
        let mut m = vec![0.0; n];
        for t in 0..n {
            s1[t] = if t == 0 { lr[0] } else { s1[t - 1] + lr[t] };
            if t > 0 {
                m[t] = lam * m[t - 1] + (lr[t - 1] - lr[t]);
                s2[t] = s2[t - 1] + m[t];
            }
        }
        (s1, s2)
    }

    fn interp(x: f64, s: &[f64]) -> f64 {
        let last = s.len() - 1;
        if x <= 0.0 {
            return s[0];
        }
        if x >= last as f64 {
            return s[last];
        }
        let j = x.floor() as usize;
        (s[j + 1] - s[j]) * (x - j as f64) + s[j]
    }

    #[test]
    fn equals_the_naive_sums_at_steps_and_between() {
        let lr = cosine(100, 5000, 3e-3, 3e-4);
        let (s1, s2) = naive(&lr, 0.999);
        let at = [
            -2.0, 0.0, 0.25, 1.0, 99.5, 100.0, 2500.75, 4998.0, 4998.5, 4999.0, 6000.0,
        ];
        let (a1, a2) = annealing_areas_at(&lr, 0.999, &at).unwrap();
        for (i, &x) in at.iter().enumerate() {
            assert_eq!(a1[i], interp(x, &s1), "s1 at {x}");
            assert_eq!(a2[i], interp(x, &s2), "s2 at {x}");
        }
        // integer positions are the sums themselves, bit for bit
        assert_eq!(a1[5], s1[100]);
        assert_eq!(a2[7], s2[4998]);
        assert_eq!(a2[9], s2[4999]);
    }

    #[test]
    fn annealing_area_grows_when_the_lr_drops() {
        // constant lr: no annealing area; a step down: S2 grows by the drop's momentum sum
        let mut lr = vec![1e-3; 100];
        let (_, a2) = annealing_areas_at(&lr, 0.9, &[99.0]).unwrap();
        assert_eq!(a2[0], 0.0);
        for v in lr.iter_mut().skip(50) {
            *v = 5e-4;
        }
        let (a1, a2) = annealing_areas_at(&lr, 0.9, &[49.0, 50.0, 99.0]).unwrap();
        assert!((a1[2] - (50.0 * 1e-3 + 50.0 * 5e-4)).abs() < 1e-15);
        assert_eq!(a2[0], 0.0);
        assert!((a2[1] - 5e-4).abs() < 1e-18);
        // sum_{k=0}^{49} 0.9^k * 5e-4
        let want = 5e-4 * (1.0 - 0.9f64.powi(50)) / 0.1;
        assert!((a2[2] - want).abs() < 1e-15, "{} vs {want}", a2[2]);
    }

    #[test]
    fn bad_input_is_refused_with_its_position() {
        let lr = vec![1.0; 10];
        let e = annealing_areas_at(&lr, 0.999, &[1.0, 0.5]).unwrap_err().to_string();
        assert!(e.contains("nondecreasing") && e.contains("position 1"), "{e}");
        let e = annealing_areas_at(&lr, 0.999, &[1.0, f64::NAN])
            .unwrap_err()
            .to_string();
        assert!(e.contains("position 1 is not finite"), "{e}");
        assert!(annealing_areas_at(&[], 0.999, &[0.0]).is_err());
        assert!(annealing_areas_at(&lr, f64::NAN, &[0.0]).is_err());
    }

    #[test]
    fn schedule_shapes() {
        let base = Schedule {
            peak: 1e-3,
            total_steps: 100,
            warmup_steps: 11,
            warmup_start: 0.0,
            floor: 1e-5,
            decay: Decay::Cosine,
        };
        let lr = base.lr(120);
        assert_eq!(lr[0], 0.0);
        assert_eq!(lr[10], 1e-3); // the warm-up ends at the peak exactly
        assert!((lr[5] - 5e-4).abs() < 1e-18);
        assert!((lr[11] - 1e-3).abs() < 1e-18);
        assert_eq!(lr[100], 1e-5);
        assert_eq!(lr[119], 1e-5);
        let lin = Schedule {
            decay: Decay::Linear,
            ..base
        }
        .lr(101);
        assert!((lin[11 + 89 / 2] - (1e-3 + (1e-5 - 1e-3) * (44.0 / 89.0))).abs() < 1e-18);
        let cst = Schedule {
            decay: Decay::Constant,
            ..base
        }
        .lr(150);
        assert!(cst[11..].iter().all(|&v| v == 1e-3));
        let wsd = Schedule {
            decay: Decay::Wsd {
                start: 60,
                length: 20,
                shape: WsdShape::Exponential,
            },
            ..base
        }
        .lr(101);
        assert_eq!(wsd[59], 1e-3);
        assert_eq!(wsd[60], 1e-3);
        assert!((wsd[70] - (1e-3f64 * 1e-5).sqrt()).abs() < 1e-15);
        assert_eq!(wsd[80], 1e-5);
        assert_eq!(wsd[99], 1e-5);
        let one = Schedule {
            warmup_steps: 1,
            warmup_start: 2e-4,
            ..base
        }
        .lr(3);
        assert_eq!(one[0], 2e-4);
    }
}
