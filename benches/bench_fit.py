"""Fitting benchmark: steplaw-db's fits against the approaches of the public Step Law code,
run in the same script on the same data (the public dense CSV).

    python benches/bench_fit.py [--repeat 5] [--scipy-starts 100]

1. lr/bs power laws, 1,000 bootstrap draws on the 129 near-optimal rows:
   steplaw-db (`sl.fit_lr_bs`, in process) vs the reference approach of step-law/steplaw
   code/fit_tool.py (pandas `sample(frac=1, replace=True)` per draw, two sklearn
   `LinearRegression` fits per draw, `multiprocessing.Pool(cpu_count())`, pool start-up
   included as in their function). Needs scikit-learn (and pandas): skipped with a message
   otherwise (`pip install scikit-learn`; not a dependency of the package).
2. Chinchilla loss law on the 17 cells' best losses, Hoffmann's 4,500-start grid and 1,000
   bootstrap draws: steplaw-db (`sl.fit_loss_law`) vs scipy's L-BFGS-B on the same objective
   with the same analytic gradient and the same tolerances, timed on --scipy-starts starts
   spread over the grid, against steplaw-db from the same starts (the ratio per start; the
   whole job would take scipy about ten minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from multiprocessing import Pool, cpu_count
from pathlib import Path

import numpy as np
import polars as pl

import steplaw_db as sl
from _data import STEPLAW_CSV, need, public_dense
from steplaw_db import _native
from steplaw_db.optima import near_optimal

# The tests' independent references serve as the baselines here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from references import chinchilla_objective as scipy_objective


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


# --------------------------------------------------------------------------- 1. lr / bs


def _fit_models(sample, x_lr, x_bs):
    """One bootstrap draw of the public code: two sklearn fits on a resampled frame."""
    from sklearn.linear_model import LinearRegression

    lr_model = LinearRegression().fit(sample[x_lr], sample["loglr"])
    bs_model = LinearRegression().fit(sample[x_bs], sample["logbs"])
    return lr_model, bs_model


def reference_bootstrap(query, n_bootstrap: int):
    """step-law/steplaw code/fit_tool.py get_bootstrap_lr_bs_scaling_models, without tqdm."""
    with Pool(processes=cpu_count()) as pool:
        results = [
            pool.apply_async(_fit_models, (query.sample(frac=1, replace=True), ["logN", "logD"], ["logD"]))
            for _ in range(n_bootstrap)
        ]
        return [r.get() for r in results]


def bench_lr_bs(repeat: int) -> None:
    final = public_dense()
    samples = near_optimal(final)
    sl.fit_lr_bs(samples)  # warm-up (imports, thread pool)
    ours, law = timed(lambda: sl.fit_lr_bs(samples, bootstrap=1000), repeat)
    with_selection, _ = timed(lambda: sl.fit_lr_bs(near_optimal(final), bootstrap=1000), repeat)
    c = law.coefficients()
    print(
        f"steplaw-db fit_lr_bs, 1,000 draws: {ours * 1e3:.1f} ms (median of {repeat}); "
        f"with near_optimal: {with_selection * 1e3:.1f} ms"
    )
    print(f"  lr_coefN {c['lr_coefN']:.4f}  lr_coefD {c['lr_coefD']:.4f}  bs_coefD {c['bs_coefD']:.4f}")
    try:
        import pandas as pd
        import sklearn  # noqa: F401
    except ImportError as e:
        print(
            f"skipping the reference baseline: {e.name} is not installed (pip install scikit-learn pandas; bench only)"
        )
        return
    query = pd.DataFrame(
        {
            "logN": np.log(samples["N"].to_numpy().astype(float)),
            "logD": np.log(samples["D"].to_numpy().astype(float)),
            "loglr": np.log(samples["lr"].to_numpy()),
            "logbs": np.log(samples["bs_tokens"].to_numpy().astype(float)),
        }
    )
    np.random.seed(42)
    base, models = timed(lambda: reference_bootstrap(query, 1000), max(1, repeat // 2))
    coef_n = np.mean([m[0].coef_[0] for m in models])
    print(
        f"reference (pandas sample + sklearn LinearRegression x2 per draw, Pool({cpu_count()})): {base:.2f} s; "
        f"lr_coefN {coef_n:.4f}"
    )
    print(
        f"ratio lr/bs: {base / ours:.0f}x (target >= 200x; steplaw-db <= 20 ms: {'met' if ours <= 0.02 else 'NOT met'})"
    )


# --------------------------------------------------------------------------- 2. Chinchilla


def bench_chinchilla(repeat: int, scipy_starts: int) -> None:
    from scipy.optimize import minimize

    final = public_dense()
    grid_only, law0 = timed(lambda: sl.fit_loss_law(final), repeat)
    full, law = timed(lambda: sl.fit_loss_law(final, bootstrap=1000), max(1, repeat // 2))
    print(
        f"steplaw-db fit_loss_law: 4,500-start grid {grid_only:.2f} s; grid + 1,000 bootstrap draws {full:.2f} s "
        f"on {os.cpu_count()} cores (target <= 30 s: {'met' if full <= 30 else 'NOT met'}); "
        f"objective {law0.objective:.6e}"
    )
    print(f"  {law}")

    cells = final.sort("loss").unique(subset=["N", "D"], keep="first")
    N, D, L = (cells[c].cast(pl.Float64).to_numpy() for c in ("N", "D", "loss"))
    grid = np.array(_native.chinchilla_grid())
    starts = grid[:: max(1, len(grid) // scipy_starts)][:scipy_starts]
    f = scipy_objective(N, D, L)
    opts = {"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000}
    t = time.perf_counter()
    results = [minimize(f, s, jac=True, method="L-BFGS-B", options=opts) for s in starts]
    scipy_per_start = (time.perf_counter() - t) / len(starts)
    ours_same, out = timed(
        lambda: _native.fit_chinchilla(N.tolist(), D.tolist(), L.tolist(), starts=starts.tolist()), repeat
    )
    best_scipy = min(r.fun for r in results)
    print(
        f"scipy L-BFGS-B (same objective, analytic gradient, ftol 1e-15, gtol 1e-10): "
        f"{scipy_per_start * 1e3:.1f} ms per start over {len(starts)} starts; "
        f"best objective {best_scipy:.6e} vs steplaw-db {out['objective']:.6e} from the same starts"
    )
    ours_per_start = ours_same / len(starts)
    print(f"ratio per start (same {len(starts)} starts, both sides): {scipy_per_start / ours_per_start:.0f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--scipy-starts", type=int, default=100)
    args = p.parse_args()
    need(STEPLAW_CSV)
    bench_lr_bs(args.repeat)
    print()
    bench_chinchilla(args.repeat, args.scipy_starts)


if __name__ == "__main__":
    main()
