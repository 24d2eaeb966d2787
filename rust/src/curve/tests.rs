use super::*;

const P_25M: [f64; 7] = [
    3.04045406,
    0.52468604,
    0.50786857,
    363.78751622,
    2.06560812,
    0.58279013,
    0.64142257,
];

/// Warm-up 0 -> peak over `w` steps (numpy.linspace), then cosine to `floor` at `total`.
pub(crate) fn cosine(w: usize, total: usize, peak: f64, floor: f64) -> Vec<f64> {
    (0..total)
        .map(|t| {
            if t < w {
                peak * t as f64 / (w - 1) as f64
            } else {
                let f = (t - w) as f64 / (total - w) as f64;
                floor + 0.5 * (peak - floor) * (1.0 + (std::f64::consts::PI * f).cos())
            }
        })
        .collect()
}

/// Warm-up, constant `peak` until `switch`, then constant `low`.
fn two_stage(w: usize, total: usize, peak: f64, low: f64, switch: usize) -> Vec<f64> {
    (0..total)
        .map(|t| {
            if t < w {
                peak * t as f64 / (w - 1) as f64
            } else if t < switch {
                peak
            } else {
                low
            }
        })
        .collect()
}

/// The MPL straight from its definition: every k, no prefix sums, no shortcuts.
fn mpl_naive(p: &[f64], lr: &[f64], s: usize) -> f64 {
    let [l0, a, alpha, b, c, beta, gamma] = [p[0], p[1], p[2], p[3], p[4], p[5], p[6]];
    let s1: f64 = lr[..=s].iter().sum();
    let mut ld = 0.0;
    for k in 1..=s {
        let y: f64 = lr[k..=s].iter().sum();
        ld += (lr[k] - lr[k - 1]) * (1.0 - (1.0 + c * lr[k].powf(-gamma) * y).powf(-beta));
    }
    l0 + a * s1.powf(-alpha) + b * ld
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn direct_and_expsum_match_the_definition() {
    let lr = cosine(200, 1500, 3e-4, 3e-5);
    let steps: Vec<usize> = (210..1500).step_by(37).collect();
    let curve = Curve::new(lr.clone(), steps.clone(), None).unwrap();
    let direct = mpl::evaluate(&P_25M, &curve, Method::Direct, None);
    let fast = mpl::evaluate(&P_25M, &curve, Method::ExpSum, None);
    for (i, &s) in steps.iter().enumerate() {
        let want = mpl_naive(&P_25M, &lr, s);
        assert!(rel(direct[i], want) < 1e-12, "direct at {s}: {} vs {want}", direct[i]);
        assert!(rel(fast[i], want) < 1e-11, "expsum at {s}: {} vs {want}", fast[i]);
    }
}

#[test]
fn expsum_is_accurate_over_a_range_of_shapes() {
    // Small and large beta, gamma and C stretch the kernel's range of z.
    let lr = two_stage(50, 4000, 1e-3, 1e-5, 2500);
    let mut lr = lr;
    for (t, v) in lr.iter_mut().enumerate().skip(3000) {
        *v = 1e-5 * (1.0 + (t as f64 * 0.01).sin().abs()); // noisy tail: a change at every step
    }
    let steps: Vec<usize> = (60..4000).step_by(13).collect();
    let curve = Curve::new(lr.clone(), steps.clone(), None).unwrap();
    for shape in [[0.05, 0.1, 0.1], [2.0, 0.6, 0.6], [50.0, 3.0, 1.5], [0.5, 8.0, 0.05]] {
        let p = [2.0, 0.5, 0.4, 300.0, shape[0], shape[1], shape[2]];
        let direct = mpl::evaluate(&p, &curve, Method::Direct, None);
        let fast = mpl::evaluate(&p, &curve, Method::ExpSum, None);
        for (i, &s) in steps.iter().enumerate().step_by(17) {
            let want = mpl_naive(&p, &lr, s);
            assert!(rel(direct[i], want) < 1e-12, "{shape:?} direct at {s}");
            assert!(
                rel(fast[i], want) < 1e-11,
                "{shape:?} expsum at {s}: {} vs {want}",
                fast[i]
            );
        }
    }
}

/// Central differences of the prediction at step index `i` in each parameter.
fn numeric_jacobian(form: Form, p: &[f64], curve: &Curve) -> Vec<Vec<f64>> {
    let n = p.len();
    let m = curve.steps().len();
    let mut out = vec![vec![0.0; n]; m];
    for j in 0..n {
        let h = 1e-6 * p[j].abs().max(1e-3);
        let mut up = p.to_vec();
        up[j] += h;
        let mut down = p.to_vec();
        down[j] -= h;
        let fu = predict(form, &up, curve).unwrap();
        let fd = predict(form, &down, curve).unwrap();
        for i in 0..m {
            out[i][j] = (fu[i] - fd[i]) / (2.0 * h);
        }
    }
    out
}

#[test]
fn jacobians_match_finite_differences() {
    let lr = cosine(100, 2000, 3e-4, 3e-5);
    let steps: Vec<usize> = (120..2000).step_by(101).collect();
    let curve = Curve::new(lr, steps, None).unwrap();
    for form in [
        Form::Mpl(Method::Direct),
        Form::Mpl(Method::ExpSum),
        Form::Annealing { lambda: 0.999 },
    ] {
        let p: Vec<f64> = match form {
            Form::Mpl(_) => P_25M.to_vec(),
            Form::Annealing { .. } => vec![3.0, 0.5, 0.5, 400.0],
        };
        let (_, jac) = predict_with_jacobian(form, &p, &curve).unwrap();
        let num = numeric_jacobian(form, &p, &curve);
        for (row, nrow) in jac.iter().zip(&num) {
            for (j, (a, b)) in row.iter().zip(nrow).enumerate() {
                let scale = b.abs().max(1e-7);
                assert!((a - b).abs() / scale < 1e-5, "{form:?} param {j}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn annealing_matches_its_definition() {
    let lr = cosine(100, 3000, 2e-4, 2e-5);
    let steps: Vec<usize> = (150..3000).step_by(77).collect();
    let curve = Curve::new(lr.clone(), steps.clone(), None).unwrap();
    let p = [2.5, 0.6, 0.45, 250.0];
    let pred = predict(Form::Annealing { lambda: 0.995 }, &p, &curve).unwrap();
    for (i, &s) in steps.iter().enumerate() {
        // S2 as a double sum: sum_{t<=s} sum_{k<=t} (eta_(k-1) - eta_k) lambda^(t-k).
        let mut s2 = 0.0;
        for t in 1..=s {
            for k in 1..=t {
                s2 += (lr[k - 1] - lr[k]) * 0.995f64.powi((t - k) as i32);
            }
        }
        let s1: f64 = lr[..=s].iter().sum();
        let want = p[0] + p[1] * s1.powf(-p[2]) - p[3] * s2;
        assert!(rel(pred[i], want) < 1e-10, "step {s}: {} vs {want}", pred[i]);
    }
}

#[test]
fn objective_gradient_matches_finite_differences() {
    let lr = cosine(100, 1500, 3e-4, 3e-5);
    let steps: Vec<usize> = (120..1500).step_by(50).collect();
    let clean = Curve::new(lr.clone(), steps.clone(), None).unwrap();
    let truth = predict(Form::Mpl(Method::Auto), &P_25M, &clean).unwrap();
    // Residuals on both sides of delta so both Huber branches are exercised.
    let loss: Vec<f64> = truth
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + 0.003 * ((i as f64) * 1.7).sin()))
        .collect();
    let curve = Curve::new(lr, steps, Some(loss)).unwrap();
    let form = Form::Mpl(Method::ExpSum);
    let p: Vec<f64> = P_25M.iter().map(|v| v * 1.01).collect();
    let mut g = vec![0.0; 7];
    objective(form, &p, std::slice::from_ref(&curve), 1e-3, &mut g).unwrap();
    let mut scratch = vec![0.0; 7];
    for j in 0..7 {
        let h = 1e-6 * p[j].abs();
        let mut up = p.clone();
        up[j] += h;
        let mut down = p.clone();
        down[j] -= h;
        let fu = objective(form, &up, std::slice::from_ref(&curve), 1e-3, &mut scratch).unwrap();
        let fd = objective(form, &down, std::slice::from_ref(&curve), 1e-3, &mut scratch).unwrap();
        let num = (fu - fd) / (2.0 * h);
        assert!(
            (g[j] - num).abs() <= 1e-4 * num.abs().max(1e-9),
            "param {j}: {} vs {num}",
            g[j]
        );
    }
}

#[test]
fn fit_recovers_known_parameters() {
    // Three schedules like the MPL paper's training set, loss exactly from known parameters.
    let truth = [2.8, 0.55, 0.48, 400.0, 2.0, 0.6, 0.62];
    let schedules = [
        cosine(300, 6000, 3e-4, 3e-5),
        two_stage(300, 6000, 3e-4, 3e-4, 6000),
        two_stage(300, 5000, 3e-4, 9e-5, 2500),
    ];
    let curves: Vec<Curve> = schedules
        .iter()
        .map(|lr| {
            let steps: Vec<usize> = (300..lr.len()).step_by(32).collect();
            let c = Curve::new(lr.clone(), steps.clone(), None).unwrap();
            let loss = predict(Form::Mpl(Method::Auto), &truth, &c).unwrap();
            Curve::new(lr.clone(), steps, Some(loss)).unwrap()
        })
        .collect();
    let r = fit(Form::Mpl(Method::Auto), &curves, &FitOptions::default()).unwrap();
    // Predictions on an unseen schedule are what matters; parameters follow when identified.
    let test = cosine(300, 9000, 3e-4, 1e-5);
    let c = Curve::new(test, (300..9000).step_by(50).collect(), None).unwrap();
    let want = predict(Form::Mpl(Method::Auto), &truth, &c).unwrap();
    let got = predict(Form::Mpl(Method::Auto), &r.params, &c).unwrap();
    let worst = want.iter().zip(&got).map(|(a, b)| rel(*b, *a)).fold(0.0, f64::max);
    assert!(worst < 1e-4, "worst relative error {worst} with {:?}", r.params);
    for (i, (a, b)) in r.params.iter().zip(&truth).enumerate() {
        assert!(rel(*a, *b) < 0.05, "param {i}: {a} vs {b} ({:?})", r.params);
    }
}

#[test]
fn annealing_fit_recovers_known_parameters() {
    let truth = [2.6, 0.7, 0.4, 300.0];
    let form = Form::Annealing { lambda: 0.999 };
    let curves: Vec<Curve> = [cosine(200, 5000, 3e-4, 3e-5), two_stage(200, 5000, 3e-4, 1e-4, 3000)]
        .iter()
        .map(|lr| {
            let steps: Vec<usize> = (200..lr.len()).step_by(25).collect();
            let c = Curve::new(lr.clone(), steps.clone(), None).unwrap();
            let loss = predict(form, &truth, &c).unwrap();
            Curve::new(lr.clone(), steps, Some(loss)).unwrap()
        })
        .collect();
    let r = fit(form, &curves, &FitOptions::default()).unwrap();
    for (a, b) in r.params.iter().zip(&truth) {
        assert!(rel(*a, *b) < 1e-4, "{:?} vs {truth:?}", r.params);
    }
}

#[test]
fn bad_curves_are_refused() {
    let lr = vec![0.0, 1e-4, 1e-4, 1e-4];
    assert!(Curve::new(lr.clone(), vec![], None).is_err());
    assert!(Curve::new(lr.clone(), vec![2, 1], None).is_err());
    assert!(Curve::new(lr.clone(), vec![1, 4], None).is_err(), "beyond the lr");
    assert!(Curve::new(lr.clone(), vec![0, 1], None).is_err(), "S1 = 0 at step 0");
    assert!(
        Curve::new(vec![1e-4, 0.0, 1e-4], vec![2], None).is_err(),
        "lr 0 after step 0"
    );
    assert!(Curve::new(vec![1e-4, f64::NAN, 1e-4], vec![2], None).is_err());
    assert!(Curve::new(lr.clone(), vec![1, 2], Some(vec![3.0])).is_err());
    assert!(Curve::new(lr.clone(), vec![1, 2], Some(vec![3.0, f64::INFINITY])).is_err());
    let ok = Curve::new(lr, vec![1, 2, 3], Some(vec![3.0, 2.9, 2.8])).unwrap();
    assert!(
        predict(Form::Mpl(Method::Auto), &[1.0; 3], &ok).is_err(),
        "wrong parameter count"
    );
    let few = fit(Form::Mpl(Method::Auto), &[ok], &FitOptions::default());
    assert!(matches!(few, Err(Error::InsufficientData(m)) if m.contains("too few points")));
}

#[test]
fn vectorisable_exp_matches_the_library() {
    let mut worst: f64 = 0.0;
    for i in 0..=200_000 {
        let x = -750.0 * (i as f64 / 200_000.0).powi(3); // dense near 0, where most arguments are
        let (got, want) = (mpl::exp_nonpositive(x), x.exp());
        if x < -708.0 {
            assert_eq!(got, 0.0);
        } else {
            worst = worst.max(rel(got, want));
        }
    }
    assert!(worst < 1e-15, "worst relative error {worst}");
    assert_eq!(mpl::exp_nonpositive(0.0), 1.0);
    assert_eq!(mpl::exp_nonpositive(-0.0), 1.0);
}

#[test]
fn curves_the_law_cannot_be_fitted_on_are_a_data_refusal_and_bad_options_are_not() {
    let lr = cosine(10, 200, 3e-4, 3e-5);
    let steps: Vec<usize> = (20..200).step_by(10).collect();
    let loss = steps.iter().map(|&s| 3.0 + 2.0 / (s as f64).sqrt()).collect::<Vec<_>>();
    let curve = Curve::new(lr, steps, Some(loss)).unwrap();
    let form = Form::Mpl(Method::Auto);
    let data = |r: Result<FitResult>| match r {
        Err(Error::InsufficientData(m)) => m,
        other => panic!("expected Error::InsufficientData, got {other:?}"),
    };
    assert!(data(fit(form, &[], &FitOptions::default())).contains("no curves"));
    // L0 far below zero: the prediction is never positive, from the one start given
    let hopeless = FitOptions {
        starts: vec![vec![-1e6, 1.0, 0.5, 1.0, 1.0, 0.5, 0.5]],
        ..Default::default()
    };
    let e = data(fit(form, std::slice::from_ref(&curve), &hopeless));
    assert!(e.contains("failed from every start"), "{e}");
    // what the caller passed wrong stays Error::Invalid
    let bad_delta = FitOptions {
        delta: -1.0,
        ..Default::default()
    };
    assert!(matches!(
        fit(form, std::slice::from_ref(&curve), &bad_delta),
        Err(Error::Invalid(_))
    ));
    let bad_start = FitOptions {
        starts: vec![vec![3.0, 1.0, 0.5]],
        ..Default::default()
    };
    assert!(matches!(fit(form, &[curve], &bad_start), Err(Error::Invalid(_))));
}
