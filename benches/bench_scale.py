"""The store at scale (issue 13, section 6): time and peak RSS of each operation on synthetic
sweeps of 1e6, 1e7 (and, slow, 1e8) points.

    python benches/bench_scale.py [--points 1e6 1e7] [--points-per-run 10000] [--data DIR]

A sweep of points/points-per-run runs, one ``metrics.csv`` (step, loss) each, is written once
(cached in --data). Each measurement runs in a subprocess of its own, which reports its wall time
and its peak RSS (getrusage):
  * ingest into a fresh store;
  * re-ingest, every run unchanged (and again with the sweep named ``./sweep``: must not commit);
  * re-ingest with one run changed, and the bytes of the manifest and runs table it wrote;
  * open + final losses (robust) + optima;
  * one run's points (``Store.points(run_id)``): the first in a fresh process, and the median
    of three more runs' in the same process (``next_runs_s``);
  * compact after one run changed (``keep=1``).
Numbers go into benches/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

STEP = textwrap.dedent(
    """
    import json, resource, sys, time
    import steplaw_db as sl
    db_path, sweep, what = sys.argv[1], sys.argv[2], sys.argv[3]
    t = time.perf_counter()
    extra = {}
    if what == "ingest" or what == "reingest":
        r = sl.open(db_path).ingest(sweep)
        extra = {"added": r.added, "unchanged": r.unchanged, "committed": r.committed, "points": r.points}
    elif what == "final":
        db = sl.open(db_path, create=False)
        final = db.final_losses("robust")
        cells = sl.optima(final)
        extra = {"runs": final.height, "cells": cells.height}
    elif what == "one_run":
        db = sl.open(db_path, create=False)
        ids = db.runs()["run_id"]
        t = time.perf_counter()
        pts = db.points(int(ids[len(ids) // 2]))
        first = time.perf_counter() - t
        # Then other runs in the same process (files already verified and in the page cache).
        again = []
        for k in (3, 5, 7):
            t1 = time.perf_counter()
            db.points(int(ids[len(ids) * k // 10]))
            again.append(time.perf_counter() - t1)
        extra = {"rows": pts.height, "next_runs_s": round(sorted(again)[1], 4)}
        t = time.perf_counter() - first
    elif what == "compact":
        r = sl.open(db_path, create=False).compact(keep=1)
        extra = {"segments_rewritten": r["segments_rewritten"]}
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"what": what, "seconds": dt, "peak_rss_mb": rss, **extra}))
    """
)


def write_sweep(root: Path, n_points: int, per_run: int) -> Path:
    sweep = root / f"sweep-{n_points:.0e}-{per_run}"
    if (sweep / ".done").exists():
        return sweep
    shutil.rmtree(sweep, ignore_errors=True)
    rng = np.random.default_rng(0)
    steps = np.arange(1, per_run + 1)
    for i in range(max(1, n_points // per_run)):
        # N, D and lr/batch in the Step Law name, so that the runs fall in cells.
        lr, bs = 10 ** rng.uniform(-3.5, -2), int(2 ** rng.integers(6, 10))
        d = sweep / f"h960_ffnh9368_numh15_numl7_lr{lr:.3e}_bs{bs}_ti{per_run}_mlr1e-5_r{i}"
        d.mkdir(parents=True)
        loss = 2.5 + 5.0 / steps**0.3 + rng.normal(0, 0.01, per_run)
        np.savetxt(d / "metrics.csv", np.column_stack([steps, loss]), fmt=["%d", "%.6f"], delimiter=",",
                   header="step,loss", comments="")  # fmt: skip
    (sweep / ".done").touch()
    return sweep


def step(db: Path, sweep: Path, what: str, cwd: Path | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", STEP, str(db), str(sweep), what], capture_output=True, text=True, cwd=cwd, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=float, nargs="+", default=[1e6, 1e7])
    ap.add_argument("--points-per-run", type=int, default=10_000)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "steplaw-bench-scale")
    args = ap.parse_args()
    for n in args.points:
        sweep = write_sweep(args.data, int(n), args.points_per_run)
        with tempfile.TemporaryDirectory(dir=args.data) as tmp:
            db = Path(tmp) / "db"
            rows = [step(db, sweep, "ingest"), step(db, sweep, "reingest")]
            # The same directory by a relative name: nothing re-read, nothing committed.
            rel = step(db, Path("./" + sweep.name), "reingest", cwd=sweep.parent)
            rel["what"] = "reingest ./sweep"
            rows += [rel, step(db, sweep, "final"), step(db, sweep, "one_run")]
            # One run changed, then compact.
            first = sorted(p for p in sweep.iterdir() if p.is_dir())[0] / "metrics.csv"
            text = first.read_text()
            first.write_text(text + f"{args.points_per_run + 1},2.5\n")
            metadata = {p: p.stat().st_size for d in ("_manifest", "runs") for p in (db / d).iterdir()}
            changed = step(db, sweep, "reingest") | {"what": "reingest, 1 run changed"}
            # The metadata that commit wrote: its manifest (a delta) and a runs table, if any
            # (only checkpoints write one).
            new = [p for d in ("_manifest", "runs") for p in (db / d).iterdir() if p not in metadata]
            changed["manifest_bytes"] = sum(p.stat().st_size for p in new if p.parent.name == "_manifest")
            changed["runs_table_bytes"] = sum(p.stat().st_size for p in new if p.parent.name == "runs")
            rows.append(changed)
            rows.append(step(db, sweep, "compact"))
            first.write_text(text)
        for r in rows:
            extra = {k: v for k, v in r.items() if k not in ("what", "seconds", "peak_rss_mb")}
            print(f"{n:.0e} points  {r['what']:<26} {r['seconds']:8.3f} s  {r['peak_rss_mb']:7.0f} MB  {extra}")


if __name__ == "__main__":
    main()
