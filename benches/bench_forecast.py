"""Speed of the final-loss forecast (issue 18: 1,000 runs of 10k points in a few seconds on 2
cores), as a ratio to reading the same points back from one Parquet file (the least any
forecast from stored curves costs), and optionally to an earlier version of forecast.py.

The sweep: forecast.synthetic_runs, 20 cells x (10 lr x 5 batch) = 1,000 runs, each logged
up to half of its planned steps (10,000-19,000 points a run so far; budgets of 2e10-4e10 tokens,
planned lengths of 20k-150k steps), the future lr inferred from the logged lr, alpha shared per
cell. The work per run grows with its planned steps (the annealing law's areas are sums over
every step) more than with its points.

``--against REV`` also times python/steplaw_db/forecast.py as of git revision REV, loaded
beside the current one in the same process and timed alternately with it (the machine is
shared: a ratio measured side by side holds up under load better than two separate runs), and
checks that both give the same frame.

    python benches/bench_forecast.py [--cells 20] [--repeat 3] [--against REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from types import ModuleType

import polars as pl
from polars.testing import assert_frame_equal

import steplaw_db
from steplaw_db import forecast as fc


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def forecast_module_at(rev: str) -> ModuleType:
    """forecast.py as of git revision ``rev``, imported as a module of the installed package
    (its relative imports resolve to the current curve.py, optima.py, ...)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = subprocess.run(
        ["git", "show", f"{rev}:python/steplaw_db/forecast.py"], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    name = "steplaw_db._forecast_at_" + rev.replace("~", "_").replace("^", "_").replace("-", "_")
    path = os.path.join(tempfile.mkdtemp(), "forecast_at.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=None)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = steplaw_db.__name__
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", metavar="REV", help="also time forecast.py as of this git revision, side by side")
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
    print(f"read the points (parquet):        {read:7.3f} s   1.0x")
    if args.against:
        old = forecast_module_at(args.against)
        assert_frame_equal(fc.forecast(points, runs), old.forecast(points, runs), check_exact=False, rel_tol=1e-9)
        for share in ("alpha", "none"):
            now_t, old_t = [], []
            for _ in range(args.repeat):  # alternately, so that both see the same load
                now_t.append(best_of(1, lambda s=share: fc.forecast(points, runs, share=s)))
                old_t.append(best_of(1, lambda s=share: old.forecast(points, runs, share=s)))
            a, b = min(now_t), min(old_t)
            print(f"forecast, share={share:5s} at {args.against:>8s}: {b:7.3f} s  {b / read:5.1f}x")
            print(f"forecast, share={share:5s} now:         {a:7.3f} s  {a / read:5.1f}x  ({b / a:.2f}x faster)")
        return
    forecast = best_of(args.repeat, lambda: fc.forecast(points, runs))
    per = best_of(args.repeat, lambda: fc.forecast(points, runs, share="none"))
    print(f"forecast, alpha shared per cell:  {forecast:7.3f} s  {forecast / read:5.1f}x")
    print(f"forecast, alpha per run:          {per:7.3f} s  {per / read:5.1f}x")


if __name__ == "__main__":
    main()
