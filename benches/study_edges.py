"""Edge optima in the lr/batch law fit (issue 19, 1): keep, drop or censor the cells whose
batch optimum lies beyond the grid's smallest batch, on synthetic sweeps with a known law.

16 cells (4 model sizes x 4 budgets), each a 7 x 5 lr x batch grid (factors sqrt 2) offset at
random around the optimum; the cells with the smallest optimal batch, a fraction ``cut`` of
them, get their batch grid moved up so the optimum lies 0.5-3 grid steps below the smallest
batch (a fixed grid that small budgets outgrow). Final losses from Step Law's quadratic
landscape with Gaussian noise. RMS error of each exponent over the sweeps, and how often the
fit failed (too few cells left).

    python benches/study_edges.py [--sweeps 30] [--noise 0.001]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import polars as pl

import steplaw_db as sl
from steplaw_db.synth import TRUTH

NS = (1.5e8, 4e8, 1e9, 2.5e9)
DS = (1e10, 3e10, 1e11, 3e11)


def sweep(cut: float, noise: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cells = [(n, d) for n in NS for d in DS]
    order = sorted(range(len(cells)), key=lambda i: (TRUTH.bs_tokens_opt(cells[i][1]), rng.random()))
    n_cut = round(cut * len(cells))
    rows = []
    for rank, i in enumerate(order):
        n, d = cells[i]
        lr_star, bs_star = float(TRUTH.lr_opt(n, d)), float(TRUTH.bs_tokens_opt(d))
        off_lr, off_bs = rng.uniform(-0.5, 0.5, 2)
        if rank < n_cut:  # the optimum 0.5-3 steps below the smallest batch (centre index -2)
            off_bs = 2 + rng.uniform(0.5, 3.0)
        for a in range(-3, 4):
            for b in range(-2, 3):
                lr = lr_star * 2.0 ** ((a + off_lr) / 2)
                bs = bs_star * 2.0 ** ((b + off_bs) / 2)
                loss = float(TRUTH.landscape(n, d, lr, bs)) * (1 + noise * rng.standard_normal())
                rows.append({"N": n, "D": d, "lr": lr, "bs_tokens": bs, "loss": loss})
    return pl.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweeps", type=int, default=30)
    ap.add_argument("--noise", type=float, default=0.001)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8])
    args = ap.parse_args()
    truth = {"lr_coefN": TRUTH.lr_exp_N, "lr_coefD": TRUTH.lr_exp_D, "bs_coefD": TRUTH.bs_exp_D}
    print(f"noise {args.noise:.2%}, {args.sweeps} sweeps, RMS error of each exponent (failed fits)")
    print("| cut | treatment | lr: N exp. | lr: D exp. | batch: D exp. | batch exp. bias | failed |")
    print("|---|---|---|---|---|---|---|")
    t0 = time.time()
    for cut in args.cuts:
        errors: dict[str, dict[str, list[float]]] = {e: {k: [] for k in truth} for e in ("keep", "drop", "censor")}
        failed = dict.fromkeys(errors, 0)
        no_bs = dict.fromkeys(errors, 0)  # a law without its batch part (not identified)
        for s in range(args.sweeps):
            final = sweep(cut, args.noise, seed=1000 * s + round(cut * 100))
            for e in errors:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        law = sl.fit_law(final, edges=e, bootstrap=args.bootstrap, seed=s)  # type: ignore[arg-type]
                    except sl.InvalidArgumentError:
                        failed[e] += 1
                        continue
                c = law.coefficients()
                for k, v in truth.items():
                    if k in c:
                        errors[e][k].append(c[k] - v)
                    elif k == "bs_coefD":
                        no_bs[e] += 1
        for e, errs in errors.items():
            rms = {k: math.sqrt(np.mean(np.square(v))) if v else math.nan for k, v in errs.items()}
            bias = float(np.mean(errs["bs_coefD"])) if errs["bs_coefD"] else math.nan
            print(
                f"| {cut:.0%} | {e} | {rms['lr_coefN']:.3f} | {rms['lr_coefD']:.3f} | {rms['bs_coefD']:.3f} | "
                f"{bias:+.3f} | {failed[e]}" + (f" (+{no_bs[e]} no batch law)" if no_bs[e] else "") + " |",
                flush=True,
            )
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
