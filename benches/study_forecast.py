"""Backtests of the final-loss forecast (issue 18, docs/forecast.md): every finished run cut at
10/20/30/50% of its planned steps, its end forecast, compared with its real end, beside two
naive baselines (the current loss; a power law in steps fitted to the run so far).

- ``mpl``: the Multi-Power Law paper's 27 real curves (25M/100M/400M x 9 schedules); a cell is
  one model size and one length (24,000, 72,000 or 16,000 steps: 3-4 schedules to rank). Once
  with the exact schedules given, once with the future lr inferred from the logged lr (the
  WSD runs then look constant at 10-50%).
- ``synthetic``: sweeps whose curves follow the annealing law (forecast.synthetic_runs: 4
  cells x 7 lr x 5 batch, cosine to lr_min), at two noise levels, independent and AR(1) noise.
- ``sweep``: synth.write_sweep ingested into a store (its curves are a power law in steps,
  not schedule-aware: the law is misspecified there by construction).

Step Law's public data holds final losses only (no curves): no backtest on it.

    python benches/study_forecast.py [mpl] [synthetic] [sweep]
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import steplaw_db as sl
from _data import MPL_DIR, need
from references import mpl_schedule
from steplaw_db import forecast as fc

FRACTIONS = (0.1, 0.2, 0.3, 0.5)
COLUMNS = [
    "at_fraction",
    "method",
    "runs",
    "median_rel_error",
    "p90_rel_error",
    "bias",
    "coverage",
    "cells",
    "right_optimum",
    "near_optimal_pick",
]


def mpl_frames(
    sizes: tuple[str, ...] = ("25", "100", "400"),
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, sl.Schedule]]:
    runs, points, schedules = [], [], {}
    for size in sizes:
        for f in sorted(need(MPL_DIR / f"csv_{size}").glob("*.csv")):
            s = mpl_schedule(f.stem)
            name = f"{size}M/{f.stem}"
            rid = len(runs)
            runs.append({"run_id": rid, "name": name, "cell": f"{size}M/{s.total_steps}", "lr": s.peak_lr,
                         "steps": s.total_steps, "lr_min": s.floor, "status": "complete"})  # fmt: skip
            df = pl.read_csv(f).rename({"loss": "value"})
            points.append(df.with_columns(run_id=pl.lit(rid, pl.Int64)))
            schedules[name] = s
    return pl.DataFrame(runs), pl.concat(points), schedules


def show(title: str, table: pl.DataFrame, seconds: float) -> None:
    print(f"\n### {title} ({seconds:.1f} s)\n")
    cols = [c for c in COLUMNS if c in table.columns]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in table.select(cols).iter_rows():
        cells = []
        for c, v in zip(cols, row, strict=True):
            if v is None:
                cells.append("-")
            elif c in ("median_rel_error", "p90_rel_error", "bias"):
                cells.append(f"{v:.2%}")
            elif c in ("coverage", "right_optimum", "near_optimal_pick"):
                cells.append(f"{v:.2f}")
            else:
                cells.append(str(v))
        print("| " + " | ".join(cells) + " |")


def run(title: str, fn) -> pl.DataFrame:
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = fn()
    show(title, table, time.perf_counter() - t)
    for w in {str(w.message) for w in caught}:
        print(f"\nwarning: {w[:300]}")
    return table


def study_mpl() -> None:
    runs, points, schedules = mpl_frames()
    run(
        "MPL curves, exact schedules given",
        lambda: fc.backtest(points, runs, at_fraction=FRACTIONS, schedule=schedules),
    )
    run("MPL curves, future lr inferred from the logged lr", lambda: fc.backtest(points, runs, at_fraction=FRACTIONS))
    for size in ("100", "400"):  # the model-error constant was calibrated on 25M: coverage held out
        r, p, s = mpl_frames((size,))
        run(
            f"MPL {size}M only (held out for the interval's calibration)",
            lambda p=p, r=r, s=s: fc.backtest(p, r, at_fraction=FRACTIONS, schedule=s),
        )


CELLS = ((2.1e8, 2e10), (4.3e8, 2e10), (2.1e8, 4e10), (4.3e8, 4e10))


def study_synthetic() -> None:
    for noise, rho in ((0.002, 0.0), (0.005, 0.0), (0.005, 0.5)):
        runs, points, truth = fc.synthetic_runs(CELLS, noise=noise, rho=rho, progress=1.0, seed=1)
        finals = truth.select("run_id", loss="true_final")
        for share in ("alpha", "none"):
            run(
                f"synthetic, noise {noise:.1%} per point (AR(1) rho {rho}), share={share}",
                lambda points=points, runs=runs, finals=finals, share=share: fc.backtest(
                    points, runs, at_fraction=FRACTIONS, finals=finals, share=share
                ),
            )


def study_sweep() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sl.synth.write_sweep(f"{tmp}/runs", points=400, diverge=False)
        db = sl.open(f"{tmp}/db")
        db.ingest(f"{tmp}/runs")
        run(
            "synth.write_sweep ingested (curves a power law in steps, not of the law)",
            lambda: fc.backtest(db, at_fraction=FRACTIONS),
        )


if __name__ == "__main__":
    which = sys.argv[1:] or ["mpl", "synthetic", "sweep"]
    for name in which:
        {"mpl": study_mpl, "synthetic": study_synthetic, "sweep": study_sweep}[name]()
