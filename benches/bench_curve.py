"""Loss-curve laws: the Multi-Power Law fit on a 100,000-step curve, Rust against numpy
computing the same objective; and the check on the MPL paper's real curves.

    python benches/bench_curve.py [--steps 100000] [--every 100] [--repeat 3]
    python benches/bench_curve.py --real        # the table of docs/curve-laws.md

Bench: a cosine schedule (warm-up 2% of the steps, peak 3e-4, floor 3e-5) over --steps steps,
logged every --every steps, loss from known MPL parameters with 0.2% noise. Times, best of
--repeat:
  * steplaw-db: one objective + gradient evaluation (sum of Huber(ln L - ln L_hat) and its
    7 partial derivatives) with the default method (the exponential-sum recurrence, O(nodes x
    steps)) and with the exact double sum ("direct", O(points x steps)), both in Rust;
  * numpy: the same objective and analytic gradient, written as the MPL authors' code writes
    the loss drop (per logged step, a vectorised sum over all earlier steps: O(points x
    steps)), checked equal to the Rust value;
  * the whole fit with steplaw-db (``fit_curve_law``); the numpy fit's time is estimated as
    the Rust fit's number of evaluations x numpy's time per evaluation (running it would take
    minutes), unless --numpy-fit runs scipy's L-BFGS-B on the numpy objective for real.
Numbers go into benches/RESULTS.md ("Curve laws (issue 7)").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from _data import MPL_DIR, need
from steplaw_db import _native
from steplaw_db.curve import FORMS, CurveLaw, Schedule, fit_curve_law

# The tests' independent references serve as the baselines here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from references import PUBLISHED, TEST, TRAIN, mpl_schedule

TRUTH = [2.8, 0.55, 0.48, 400.0, 2.0, 0.6, 0.62]


def numpy_objective(p, lrs: np.ndarray, steps: np.ndarray, loss: np.ndarray, delta: float = 1e-3):
    """sum Huber_delta(ln loss - ln L_hat) and its gradient in [L0, A, alpha, B, C, beta, gamma]."""
    L0, A, alpha, B, C, beta, gamma = p
    lr_sum = np.cumsum(lrs)
    gap = np.zeros(len(lrs))
    gap[1:] = np.diff(lrs)
    c_k = C * lrs[1:] ** (-gamma)  # c_k for k = 1..n-1
    ln_eta = np.log(lrs[1:])
    m = len(steps)
    f, f_c, f_beta, f_gamma = (np.empty(m) for _ in range(4))
    for i, s in enumerate(steps):
        u = 1 + c_k[:s] * (lr_sum[s] - lr_sum[:s])
        ln_u = np.log(u)
        term = gap[1 : s + 1] * np.exp(-beta * ln_u)
        q = term * (u - 1) / u
        f[i] = term.sum()
        f_beta[i] = -(term * ln_u).sum()
        f_c[i] = -beta * q.sum() / C
        f_gamma[i] = beta * (q * ln_eta[:s]).sum()
    s1 = lr_sum[steps]
    power = s1 ** (-alpha)
    ld = (lrs[steps] - lrs[0]) - f
    pred = L0 + A * power + B * ld
    jac = np.stack([np.ones(m), power, -A * power * np.log(s1), ld, -B * f_c, -B * f_beta, -B * f_gamma], axis=1)
    r = np.log(loss) - np.log(pred)
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum()
    psi = np.where(small, r, delta * np.sign(r))
    grad = (-psi / pred) @ jac
    return float(value), grad


def best_of(repeat: int, fn):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def bench(args) -> None:
    schedule = Schedule(3e-4, args.steps, args.steps // 50, "cosine", 3e-5)
    lrs = schedule.lr()
    steps = np.arange(schedule.warmup_steps, args.steps, args.every)
    truth = CurveLaw("mpl", dict(zip(FORMS["mpl"], TRUTH, strict=True)))
    loss = truth.loss_at(lrs, steps) * np.exp(np.random.default_rng(0).normal(0, 2e-3, steps.size))
    start = [2.7, 0.5, 0.5, 300.0, 1.0, 0.5, 0.5]
    curve = [(lrs.tolist(), steps.tolist(), loss.tolist())]
    print(f"curve: {args.steps:,} steps, {steps.size:,} logged points (every {args.every})")

    t_rust, (v_rust, g_rust) = best_of(
        args.repeat, lambda: _native.curve_objective("mpl", start, curve, 1e-3, 0.999, "expsum")
    )
    t_direct, (v_direct, _) = best_of(
        args.repeat, lambda: _native.curve_objective("mpl", start, curve, 1e-3, 0.999, "direct")
    )
    t_numpy, (v_numpy, g_numpy) = best_of(args.repeat, lambda: numpy_objective(start, lrs, steps, loss))
    assert abs(v_rust / v_numpy - 1) < 1e-8 and abs(v_direct / v_numpy - 1) < 1e-8, (v_rust, v_direct, v_numpy)
    assert np.allclose(g_rust, g_numpy, rtol=1e-6, atol=1e-9 * np.abs(g_numpy).max()), (g_rust, g_numpy)
    print(f"objective + gradient, Rust exponential sum: {t_rust * 1e3:9.1f} ms")
    print(f"objective + gradient, Rust direct sum:      {t_direct * 1e3:9.1f} ms")
    print(
        f"objective + gradient, numpy (authors' sum): {t_numpy * 1e3:9.1f} ms   "
        f"ratio numpy / Rust: {t_numpy / t_rust:.0f}x"
    )

    frame = pl.DataFrame({"step": steps, "value": loss, "lr": lrs[steps]})
    t = time.perf_counter()
    law = fit_curve_law(frame, "mpl", schedule=schedule)
    t_fit = time.perf_counter() - t
    evals = law.fit["evaluations"]
    print(f"fit (steplaw-db, 3 starts, L-BFGS): {t_fit:.1f} s, {evals} evaluations, converged {law.fit['converged']}")
    print(f"   fitted {law}")
    print(
        f"numpy fit, estimated ({evals} evaluations x {t_numpy:.2f} s): {evals * t_numpy:.0f} s   "
        f"ratio {evals * t_numpy / t_fit:.0f}x"
    )
    if args.numpy_fit:
        from scipy.optimize import minimize

        t = time.perf_counter()
        r = minimize(lambda x: numpy_objective(x, lrs, steps, loss), np.array(start), jac=True, method="L-BFGS-B",
                     bounds=[(None, None)] + [(1e-8, None)] * 6)  # fmt: skip
        print(
            f"numpy fit (scipy L-BFGS-B, one start): {time.perf_counter() - t:.0f} s, {r.nfev} evaluations, {r.message}"
        )


def pct(v: float) -> str:
    return f"{100 * v:.3f}"


def real() -> None:
    """Fit on the authors' three training curves of each size, predict the other six; the
    same with the authors' parameters; print markdown tables."""
    schedules = {n: mpl_schedule(n) for n in TRAIN + TEST}
    for size in PUBLISHED:
        files = [need(MPL_DIR / f"csv_{size}" / f"{n}.csv") for n in TRAIN + TEST]
        t = time.perf_counter()
        mpl = fit_curve_law(files[:3], "mpl", schedule=schedules)
        t_mpl = time.perf_counter() - t
        ann = fit_curve_law(files[:3], "annealing", schedule=schedules)
        pub = CurveLaw("mpl", dict(zip(FORMS["mpl"], PUBLISHED[size], strict=True)))
        curves = [
            (schedules[n].lr().tolist(), *pl.read_csv(f).select("step", "loss").to_numpy().T.tolist())
            for n, f in zip(TRAIN, files[: len(TRAIN)], strict=True)
        ]
        curves = [(lr, [int(s) for s in st], loss) for lr, st, loss in curves]
        obj_pub, _ = _native.curve_objective("mpl", pub.vector, curves, 1e-3)
        e = {k: law.evaluate(files, schedules) for k, law in (("pub", pub), ("mpl", mpl), ("ann", ann))}
        print(f"\n### {size}M\n")
        fitted = ", ".join(f"{k} {v:.4g}" for k, v in mpl.params.items())
        objectives = f"objective {mpl.fit['objective']:.5g} vs {obj_pub:.5g} at the published parameters"
        print(f"Fitted MPL ({t_mpl:.0f} s, {objectives}): {fitted}")
        print("Fitted annealing law (lambda 0.999): " + ", ".join(f"{k} {v:.4g}" for k, v in ann.params.items()) + "\n")
        columns = ["published MPL", "our MPL fit", "annealing fit"]
        print("| curve | role | " + " | ".join(f"{c} mean / max (%)" for c in columns) + " |")
        print("|---|---|---|---|---|")
        for i, name in enumerate(TRAIN + TEST):
            role = "fit" if name in TRAIN else "held out"
            cells = [
                f"{pct(e[k]['mean_rel_error'][i])} / {pct(e[k]['max_rel_error'][i])}" for k in ("pub", "mpl", "ann")
            ]
            print(f"| {name} | {role} | " + " | ".join(cells) + " |")
        held = slice(3, 9)
        means = [
            f"{pct(e[k]['mean_rel_error'][held].mean())} / {pct(e[k]['max_rel_error'][held].max())}"
            for k in ("pub", "mpl", "ann")
        ]
        print("| **held out: mean of means / worst max** | | " + " | ".join(means) + " |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--numpy-fit", action="store_true", help="also run the numpy fit for real (minutes)")
    ap.add_argument("--real", action="store_true", help="the check on the MPL paper's curves instead")
    a = ap.parse_args()
    real() if a.real else bench(a)
