"""Final losses and per-cell optima: steplaw-db against numpy/scipy doing the same steps.

    python benches/bench_final.py [--runs 1000] [--points 10000] [--repeat 3]

Builds (once, cached in /tmp/steplaw-bench-final) a store of --runs runs x --points points
(CSV metric files, ingested), then in one process times, best of --repeat:
  * steplaw-db: ``Store.final_losses(mode)`` (reads the store, smooths every run in Rust)
    and ``optima(..., method="quadratic")`` (grid minimum, near-optimal set, plateau,
    quadratic vertex with 200 bootstrap draws per cell);
  * the baseline: the same points read from the same Parquet files with Polars, then per run
    numpy/scipy (scipy.ndimage.gaussian_filter1d for 'steplaw'; numpy IRLS for 'robust'),
    and per cell numpy least squares with the same bootstrap.
Both sides compute the same numbers (checked); numbers go into benches/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy.ndimage import gaussian_filter1d

import steplaw_db as sl
from steplaw_db.optima import FIT_WINDOW, optima

DATA = Path("/tmp/steplaw-bench-final")


def build(runs: int, points: int) -> sl.Store:
    root = DATA / f"{runs}x{points}"
    db_path = root / "db"
    if (root / "done").exists():
        return sl.open(db_path)
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    cells = [(n, d) for n in (2e8, 4e8, 8e8) for d in (2e10, 5e10, 1e11)]
    lrs = 1e-3 * 2.0 ** (np.arange(-5, 6) / 2)
    bss = [128, 256, 512, 1024]
    steps = np.arange(1, points + 1) * 10
    for i in range(runs):
        n, d = cells[i % len(cells)]
        lr, bs = lrs[(i // len(cells)) % len(lrs)], bss[(i // (len(cells) * len(lrs))) % len(bss)]
        final = 2.5 * (1 + 0.006 * math.log(lr / 1e-3) ** 2 + 0.01 * math.log(bs / 300) ** 2)
        loss = final + 8.0 * (steps / steps[-1] + 0.01) ** -0.5 / 10.0**0.5 - 8.0 / 1.01**0.5 / 10**0.5
        loss = loss * (1 + 0.005 * rng.standard_normal(points))
        run = root / "runs" / f"run{i:05d}"
        run.mkdir(parents=True)
        pl.DataFrame({"step": steps, "loss": loss}).write_csv(run / "metrics.csv")
        config = {"N": int(n), "D": int(d), "lr": float(lr), "bs": bs, "seq_len": 2048, "train_iters": int(steps[-1])}
        (run / "config.json").write_text(json.dumps(config))
    db = sl.open(db_path)
    report = db.ingest(root / "runs")
    assert report.ok, report.summary()
    shutil.rmtree(root / "runs")
    (root / "done").touch()
    return db


# -- the baseline: numpy / scipy ------------------------------------------------------------


def steplaw_numpy(steps: np.ndarray, loss: np.ndarray) -> float:
    steps, loss = steps[-32768:], loss[-32768:]
    window = min(100, 0.01 * len(loss))
    return float(gaussian_filter1d(loss, sigma=window / (steps[1] - steps[0]))[-1])


def robust_numpy(steps: np.ndarray, loss: np.ndarray, width: float = 0.1) -> float:
    end = steps[-1]
    h = width * end
    pick = (end - steps) < h
    x = (steps[pick] - end) / h
    y = loss[pick]
    kernel = np.maximum((1 - np.minimum(np.abs(x), 1) ** 3) ** 3, 1e-12)
    w = kernel
    a = b = 0.0
    for it in range(11):
        sw = w.sum()
        mx, my = (w * x).sum() / sw, (w * y).sum() / sw
        b = (w * (x - mx) * (y - my)).sum() / (w * (x - mx) ** 2).sum()
        new_a = my - b * mx
        if it and abs(new_a - a) <= 1e-7 * abs(new_a):
            a = new_a
            break
        a = new_a
        r = y - a - b * x
        sigma = 1.4826 * np.median(np.abs(r))
        if sigma <= 0:
            break
        c = 1.345 * sigma
        w = kernel * np.where(np.abs(r) <= c, 1.0, c / np.maximum(np.abs(r), 1e-300))
    return float(a)


def quadratic_numpy(x, y, z, draws, rng):
    def fit(rows):
        u, v = x[rows] - x0, y[rows] - y0
        A = np.column_stack([np.ones_like(u), u, v, u * u, u * v, v * v])
        c = np.linalg.lstsq(A, z[rows], rcond=None)[0]
        H = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
        return np.linalg.solve(H, -c[1:3]) + np.array([x0, y0]), H

    best = int(np.argmin(z))
    x0, y0 = x[best], y[best]
    vertex, _ = fit(np.arange(len(z)))
    boots = np.array([fit(rng.integers(0, len(z), len(z)))[0] for _ in range(draws)])
    return vertex, boots.std(axis=0, ddof=1)


def baseline(db: sl.Store, mode: str) -> pl.DataFrame:
    files = [s["file"] for s in db.files()["segments"]]
    points = pl.read_parquet(files, columns=["run_id", "metric", "step", "value"]).filter(pl.col("metric") == "loss")
    smooth = steplaw_numpy if mode == "steplaw" else robust_numpy
    rows = []
    for (run_id,), g in points.group_by("run_id"):
        rows.append((run_id, smooth(g["step"].to_numpy(), g["value"].to_numpy())))
    final = pl.DataFrame(rows, schema={"run_id": pl.Int64, "loss": pl.Float64}, orient="row")
    final = db.runs().select("run_id", "N", "D", "lr", "bs_tokens").join(final, on="run_id")
    rng = np.random.default_rng(0)
    out = []
    for (n, d), g in final.group_by("N", "D"):
        rel = (g["loss"] / g["loss"].min() - 1).to_numpy()
        x, y = np.log(g["lr"].to_numpy()), np.log(g["bs_tokens"].to_numpy().astype(float))
        for window in (FIT_WINDOW, 2 * FIT_WINDOW, 4 * FIT_WINDOW):
            pick = rel <= window
            if len(set(x[pick])) >= 3 and len(set(y[pick])) >= 3 and pick.sum() >= 6:
                break
        vertex, _sd = quadratic_numpy(x[pick], y[pick], rel[pick], 200, rng)  # the sd is timed, not compared
        out.append({"N": n, "D": d, "loss_min": g["loss"].min(), "near": int((np.abs(rel) < 0.0025).sum()),
                    "lr_quad": math.exp(vertex[0])})  # fmt: skip
    return pl.DataFrame(out)


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--points", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    db = build(args.runs, args.points)
    n_points = db.runs()["n_points"].sum()
    print(f"store: {db.runs().height} runs, {n_points:,} points")
    for mode in ("robust", "steplaw"):
        ours_t, ours = best_of(args.repeat, lambda m=mode: optima(db.final_losses(m), method="quadratic"))
        base_t, base = best_of(args.repeat, lambda m=mode: baseline(db, m))
        j = ours.join(base, on=["N", "D"])
        assert (j["loss_min"] - j["loss_min_right"]).abs().max() < 1e-7, "final losses differ"
        assert (j["near_optimal"] == j["near"]).all()
        fitted = j.filter(pl.col("lr_quad").is_not_null())
        assert fitted.height and ((fitted["lr_quad"] / fitted["lr_quad_right"] - 1).abs() < 1e-6).all()
        fl_t, _ = best_of(args.repeat, lambda m=mode: db.final_losses(m))
        print(
            f"{mode:8s} steplaw-db final+optima {ours_t:.3f} s (final losses alone {fl_t:.3f} s); "
            f"numpy/scipy {base_t:.3f} s; ratio {base_t / ours_t:.1f}x"
        )


if __name__ == "__main__":
    main()
