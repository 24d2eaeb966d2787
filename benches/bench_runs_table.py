"""What readers pay for building the runs table from the run records (delta versions have no
runs file of their own): ``pl.read_parquet`` of a checkpoint's runs file against the same table
built in memory by ``_native.runs_table()``, alternating in one process, median.

    python benches/bench_runs_table.py SWEEP_DIR [--db /tmp/steplaw-bench-runs-table]

SWEEP_DIR: any directory of runs, e.g. the sweep ``bench_scale.py --points 1e7 --points-per-run
1000`` writes (10,000 runs)."""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import polars as pl

import steplaw_db as sl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--db", type=Path, default=Path("/tmp/steplaw-bench-runs-table"))
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    db = sl.open(args.db)
    db.ingest(args.sweep)
    db.compact()  # a checkpoint: its runs file is the version's own
    runs_file = db.files()["runs_file"]
    assert runs_file is not None
    from_file, built = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        a = pl.read_parquet(runs_file)
        from_file.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = pl.read_parquet(io.BytesIO(db._native.runs_table()))
        built.append(time.perf_counter() - t)
    assert a.equals(b), "the table built from the records differs from the file"
    t = time.perf_counter()
    db.runs()
    whole = time.perf_counter() - t
    f, m = statistics.median(from_file), statistics.median(built)
    print(f"{a.height} runs: runs file {f * 1e3:.1f} ms, built from the records {m * 1e3:.1f} ms ({m / f:.1f}x)")
    print(f"Store.runs() (tags as columns): {whole * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
