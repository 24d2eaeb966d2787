"""The report at 1,000+ runs: build time, page size and load time in headless chromium.

    python benches/bench_report.py [--bootstrap 500] [--data ../shared/data]

Two sweeps: Step Law's public dense CSV (1,911 runs, 17 cells, summary-only: no curves) and a
synthetic sweep ingested with its curves (36 cells x 35 runs = 1,260 runs, 100 points each:
24 landscapes drawn, 12 listed). For each: the build time of ``report.build``, the page's size
(and the part that is embedded PNG), and chromium's load: the wall time of
``--dump-dom`` (browser start included) and the page's own ``performance.now()`` at the load
event (every image decoded), written by the page into ``data-loaded-ms``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _unlimited() -> None:
    """The browser reserves far more address space than it uses: no cap for it."""
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def load(path: Path) -> tuple[float, int, int, int]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return float("nan"), -1, -1, -1
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000", "--dump-dom"]
    t0 = time.perf_counter()
    dom = subprocess.run(
        [browser, *flags, path.as_uri()], capture_output=True, text=True, timeout=300, preexec_fn=_unlimited
    ).stdout
    wall = time.perf_counter() - t0
    body = re.search(r"<body[^>]*>", dom)
    attr = {k: int(v) for k, v in re.findall(r'data-([a-z-]+)="(\d+)"', body.group(0) if body else "")}
    return wall, attr.get("loaded-ms", -1), attr.get("figures", -1), attr.get("figures-shown", -1)


def measure(name: str, final, runs, points, bootstrap: int, out: Path) -> None:
    from steplaw_db.report import build

    t0 = time.perf_counter()
    report = build(final, runs=runs, points=points, bootstrap=bootstrap, predict=[(7e9, 1.4e12)])
    built = time.perf_counter() - t0
    path = out / f"{name}.html"
    report.write(path)
    text = path.read_text()
    png = sum(len(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text))
    wall, loaded_ms, figures, shown = load(path)
    print(
        f"| {name} | {len(final):,} | {built:.1f} s | {os.path.getsize(path) / 1e6:.2f} MB "
        f"({png / max(len(text), 1):.0%} PNG) | {figures} ({shown} shown) | {loaded_ms} ms | {wall:.1f} s |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--data", default=os.environ.get("STEPLAW_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--out", help="keep the pages in this folder")
    ap.add_argument("--max-gb", type=float, default=8.0, help="address-space cap of this process (GB)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    cap = int(args.max_gb * 2**30)  # a runaway build fails with MemoryError, not the machine's OOM killer
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))

    import polars as pl

    import steplaw_db as sl
    from steplaw_db import synth

    tmp = tempfile.TemporaryDirectory()
    out = Path(args.out or tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    print("| sweep | runs | build | page | figures | load event (page's clock) | chromium wall (start included) |")
    print("|---|---|---|---|---|---|---|")
    db = sl.open(out / "dense.db")
    db.import_table(Path(args.data) / "steplaw" / "dense_lr_bs_loss.csv")
    measure("public dense CSV", db.final_losses(), db.runs(), None, args.bootstrap, out)

    shapes = [(960, 9368, 15, 7), (1024, 9552, 16, 8), (1280, 9472, 10, 10), (1536, 9472, 12, 12),
              (2048, 8192, 16, 16), (2560, 10240, 20, 20)]  # fmt: skip
    cells = [(*s, d) for s in shapes for d in (1e10, 2e10, 4e10, 8e10, 1.6e11, 3.2e11)]
    synth.write_sweep(out / "runs", cells=cells, points=100, workers=2)
    sdb = sl.open(out / "synth.db")
    sdb.ingest(out / "runs")

    def points(ids: list[int]) -> pl.DataFrame:
        return sdb.scan_points(ids).filter(pl.col("metric") == "loss").sort("run_id", "step").collect()

    measure("synthetic, with curves", sdb.final_losses(), sdb.runs(), points, args.bootstrap, out)
    tmp.cleanup()


if __name__ == "__main__":
    main()
