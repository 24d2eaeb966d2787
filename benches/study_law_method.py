"""Which way of fitting the lr / batch law recovers a known law? Synthetic sweeps, many seeds.

    python benches/study_law_method.py [--seeds 40]

Each sweep: 4 model sizes x 4 token budgets (the shapes and budgets of the test suite's
synthetic table), per cell the 7 x 5 points of a common half-octave grid (lr) and batch grid
nearest the true optimum, final losses from ``synth.TRUTH``'s landscape (Step Law's law for
the optimum, a quadratic bowl in (ln lr, ln batch) around Epoch AI's Chinchilla loss) with
multiplicative Gaussian noise. Per method and noise level, over the seeds: the mean (bias) and
RMS error of the three exponents, and how often the 95% bootstrap interval covers the truth.

- ``steplaw``: Step Law's procedure (near-optimal runs within 0.25%, OLS, 1,000 row resamples);
- ``quadratic``: each cell's quadratic vertex (``optima(method="quadratic")``), one sample a
  cell, weighted by the vertex's precision (floored), bootstrap over cells, cells without a
  usable vertex left out (the default);
- ``quadratic-unweighted``: the same vertices, equal weights;
- ``quadratic-with-fallback``: the default, but cells without a usable vertex (not convex,
  vertex outside the grid) kept at their grid minimum with the weight of a grid's rounding.

``--ingested``: the cells written as Step Law logs by ``synth.write_sweep`` (per-cell grids
offset at random, the top LRs diverge, 200 log entries a run with ``--noise`` per entry) and
ingested, final losses by the default (robust) smoothing: the whole pipeline.

The table goes into docs/fitting.md.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import polars as pl

import steplaw_db as sl
from steplaw_db import synth
from steplaw_db.optima import near_optimal, optima

SHAPES = ((960, 9368, 15, 7), (1024, 9552, 16, 8), (1280, 9472, 10, 10), (2048, 8192, 16, 16))
BUDGETS = (1e10, 2e10, 5e10, 1e11)
LR_GRID = np.array([float(f"{v:.4g}") for v in 2.0 ** (np.arange(-30, -4) / 2)])
BS_GRID = np.array([16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096])
TRUE = {"lr_coefN": synth.LR_EXP_N, "lr_coefD": synth.LR_EXP_D, "bs_coefD": synth.BS_EXP_D}


def _nearest(grid: np.ndarray, optimum: float, k: int) -> np.ndarray:
    centre = int(np.argmin(np.abs(np.log(grid) - math.log(optimum))))
    return grid[centre - k // 2 : centre + k // 2 + 1]


def sweep(noise: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for h, ffnh, _, numl in SHAPES:
        n = synth.n_params(h, ffnh, numl)
        for d in BUDGETS:
            for lr in _nearest(LR_GRID, float(synth.TRUTH.lr_opt(n, d)), 7):
                for bs in _nearest(BS_GRID, float(synth.TRUTH.bs_tokens_opt(d)) / 2048, 5):
                    loss = float(synth.TRUTH.landscape(n, d, lr, bs * 2048)) * (1 + noise * rng.standard_normal())
                    rows.append({"N": n, "D": d, "lr": float(lr), "bs_tokens": int(bs) * 2048, "loss": loss})
    return pl.DataFrame(rows)


def ingested_sweep(noise: float, seed: int, root: Path) -> pl.DataFrame:
    """The same 16 cells written as Step Law logs (200 entries a run, per-cell grids offset at
    random, diverging runs at the top LRs), ingested; final losses by the default smoothing.
    ``noise`` is the per-entry noise of the logged loss."""
    cells = [(*shape, d) for shape in SHAPES for d in BUDGETS]
    synth.write_sweep(root / f"s{seed}", cells=cells, noise=noise, seed=seed, workers=2)
    db = sl.open(root / f"db{seed}")
    db.ingest(root / f"s{seed}")
    return db.final_losses()


def fit(final: pl.DataFrame, method: str, seed: int) -> sl.HparamLaw:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "steplaw":
            return sl.fit_lr_bs(near_optimal(final), bootstrap=1000, seed=seed)
        table = optima(final, method="quadratic", seed=seed)
        if method == "quadratic-unweighted":
            return sl.fit_lr_bs(table, bootstrap=1000, seed=seed, weights={})
        if method == "quadratic-with-fallback":  # cells without a usable vertex at their grid minimum
            table = table.with_columns(optimum=pl.lit("vertex"))
            sd = {
                c: ((pl.col(f"{q}_hi") / pl.col(f"{q}_lo")).log() / 3.92)
                for c, q in (("lr", "lr_quad"), ("bs", "bs_tokens_quad"))
            }
            grid = pl.col("lr_opt") != pl.col("lr_quad")
            table = table.with_columns(
                w_lr=1 / (pl.when(grid).then(0.1).otherwise(sd["lr"]).fill_null(0.1) ** 2 + 0.05**2),
                w_bs=1 / (pl.when(grid).then(0.1).otherwise(sd["bs"]).fill_null(0.1) ** 2 + 0.05**2),
            )
            return sl.fit_lr_bs(table, bootstrap=1000, seed=seed, weights={"lr": "w_lr", "bs": "w_bs"})
        return sl.fit_lr_bs(table, bootstrap=1000, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--noise", default="0.0005,0.001,0.003")
    parser.add_argument("--ingested", action="store_true", help="Step Law logs, ingested (noise per log entry)")
    args = parser.parse_args()
    methods = ("steplaw", "quadratic", "quadratic-unweighted", "quadratic-with-fallback")
    rows = []
    tmp = tempfile.TemporaryDirectory()
    for noise in (float(x) for x in args.noise.split(",")):
        errors: dict[tuple[str, str], list[float]] = {}
        covered: dict[tuple[str, str], list[bool]] = {}
        for seed in range(args.seeds):
            root = Path(tmp.name) / f"n{noise}"
            final = ingested_sweep(noise, seed, root) if args.ingested else sweep(noise, seed)
            for method in methods:
                table = fit(final, method, seed).to_polars()
                for r in table.filter(pl.col("name").is_in(list(TRUE))).iter_rows(named=True):
                    errors.setdefault((method, r["name"]), []).append(r["estimate"] - TRUE[r["name"]])
                    covered.setdefault((method, r["name"]), []).append(r["lo"] <= TRUE[r["name"]] <= r["hi"])
        for (method, name), e in errors.items():
            a = np.asarray(e)
            rows.append(
                {
                    "noise_%": noise * 100,
                    "method": method,
                    "coefficient": name,
                    "true": TRUE[name],
                    "mean": TRUE[name] + float(a.mean()),
                    "bias": float(a.mean()),
                    "rms_error": float(np.sqrt(np.mean(a**2))),
                    "coverage_95": float(np.mean(covered[(method, name)])),
                }
            )
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=200, float_precision=3):
        print(pl.DataFrame(rows).sort("noise_%", "coefficient", "method"))


if __name__ == "__main__":
    main()
