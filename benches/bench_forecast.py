"""Speed of the final-loss forecast (issue 18: 1,000 runs of 10k points in a few seconds on 2
cores), as a ratio to reading the same points back from one Parquet file (the least any
forecast from stored curves costs).

The sweep: forecast.synthetic_runs, 20 cells x (10 lr x 5 batch) = 1,000 runs, each logged
up to half of its planned steps (10,000-19,000 points a run so far; budgets of 2e10-4e10 tokens,
planned lengths of 20k-150k steps), the future lr inferred from the logged lr, alpha shared per
cell. The work per run grows with its planned steps (the annealing law's areas are sums over
every step) more than with its points.

    python benches/bench_forecast.py [--cells 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import polars as pl

from steplaw_db import forecast as fc


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    Ns = [1.5e8, 3e8, 6e8, 1.2e9]
    Ds = [2e10, 2.5e10, 3e10, 3.5e10, 4e10]
    cells = [(n, d) for n in Ns for d in Ds][: args.cells]
    t = time.perf_counter()
    # 20,000 logged points over the planned steps, half of them so far: 10,000 points a run
    runs, points, _ = fc.synthetic_runs(cells, n_lr=10, n_bs=5, points=20000, progress=0.5, noise=0.005)
    made = time.perf_counter() - t
    per_run = points.group_by("run_id").len()["len"]
    print(f"{runs.height} runs, {points.height:,} points ({per_run.min():,}-{per_run.max():,} a run), "
          f"steps {runs['steps'].min():,}-{runs['steps'].max():,}; made in {made:.1f} s")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "points.parquet")
        points.write_parquet(path)
        read = best_of(args.repeat, lambda: pl.read_parquet(path))
    forecast = best_of(args.repeat, lambda: fc.forecast(points, runs))
    per = best_of(args.repeat, lambda: fc.forecast(points, runs, share="none"))
    print(f"read the points (parquet):        {read:7.3f} s   1.0x")
    print(f"forecast, alpha shared per cell:  {forecast:7.3f} s  {forecast / read:5.1f}x")
    print(f"forecast, alpha per run:          {per:7.3f} s  {per / read:5.1f}x")


if __name__ == "__main__":
    main()
