#!/usr/bin/env python
"""Render every figure (and the report) from the public data into one folder for review.

    python scripts/gallery.py [OUT] [--data ../shared/data] [--quick]

OUT (default ``gallery/``, ignored by git) gets one PNG per figure, ``report.html`` and
``overlaps.txt`` (every pair of texts whose drawn boxes overlap, per figure: it should be
empty). The public data: Step Law's dense CSV (landscapes, laws, loss law, stability), the
Multi-Power Law paper's loss curves (curves). A small synthetic sweep with diverged runs and
two recipes shows what the public data has none of (diverged runs, a recipe comparison); its
files are named ``synthetic-*``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(REPO / "gallery"))
    ap.add_argument("--data", default=os.environ.get("STEPLAW_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--quick", action="store_true", help="fewer bootstrap draws (a quick look)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # the figures' own notes say what matters; the report lists warnings

    import polars as pl

    import steplaw_db as sl
    from steplaw_db import _style, laws, plots, synth
    from steplaw_db.report import write_report

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    boot = 100 if args.quick else 500
    overlaps: list[str] = []

    def points(store, ids):
        return store.scan_points(ids).filter(pl.col("metric") == "loss").sort("run_id", "step").collect()

    def keep(name: str, fig) -> None:
        clashes = _style.overlapping_texts(fig)
        overlaps.extend(f"{name}: {a!r} x {b!r}" for a, b in clashes)
        fig.savefig(out / f"{name}.png", bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        print(f"{name}.png" + (f"  ({len(clashes)} overlapping texts)" if clashes else ""))

    tmp = tempfile.TemporaryDirectory()
    t0 = time.perf_counter()
    db = sl.open(Path(tmp.name) / "dense.db")
    db.import_table(data / "steplaw" / "dense_lr_bs_loss.csv")
    final = db.final_losses()
    published = {law.name: law for law in laws.all_laws()}
    fitted = sl.fit_law(final, bootstrap=boot)
    for cell in ({"N": 214663680, "D": 1e11}, {"N": 536872960, "D": 1e10}, {"N": 1073741824, "D": 2e10}):
        name = f"landscape-N{cell['N']:.3g}-D{cell['D']:.3g}".replace("+", "")
        keep(name, plots.landscape(final, cell, laws={"fitted": fitted, **published}))
    keep("law-quadratic", plots.law(final, {"fitted": fitted, "step-law": published["step-law"]}))
    paper = sl.fit_law(final, "steplaw", bootstrap=boot)
    keep("law-steplaw", plots.law(final, {"steplaw procedure": paper, **published}))
    loss = sl.fit_loss_law(final, bootstrap=min(boot, 100))
    keep("loss-law", plots.loss_law(final, loss))
    keep("stability", plots.stability(sl.stability(final, bootstrap=min(boot, 200))))

    curves_db = sl.open(Path(tmp.name) / "mpl.db")
    curves_db.ingest(data / "multipowerlaw" / "loss_curve_repo" / "csv_25")
    runs = curves_db.runs()
    ids = runs["run_id"].to_list()
    names = dict(zip(runs["run_id"], runs["name"], strict=True))
    keep("curves-mpl-25M", plots.curves(points(curves_db, ids), final=curves_db.final_losses(), names=names))

    # what the public data has none of: diverged runs, two recipes
    sweep = Path(tmp.name) / "synthetic"
    cells = [(*s, d) for s in ((960, 9368, 15, 7), (1280, 9472, 10, 10), (2048, 8192, 16, 16)) for d in (1e10, 3e10)]
    synth.write_sweep(sweep / "web", cells=cells, points=60, seed=1)
    synth.write_sweep(sweep / "code", cells=cells, points=60, seed=2, lr_shift=0.5)
    sdb = sl.open(Path(tmp.name) / "synthetic.db")
    sdb.ingest(sweep / "web", recipe="web")
    sdb.ingest(sweep / "code", recipe="code")
    sfinal = sdb.final_losses()
    cell0 = sfinal.filter(pl.col("recipe") == "web").sort("N", "D").row(0, named=True)
    keep("synthetic-landscape-diverged", plots.landscape(sfinal, {"N": cell0["N"], "D": cell0["D"], "recipe": "web"},
                                                         laws=published))  # fmt: skip
    sruns = sdb.runs().filter(pl.col("name").str.contains(f"h{cells[0][0]}_") & (pl.col("recipe") == "web"))
    pick = sruns.sort("name").head(6)
    pick_names = dict(zip(pick["run_id"], pick["name"], strict=True))
    pick_points = points(sdb, pick["run_id"].to_list())
    keep("synthetic-curves-diverged", plots.curves(pick_points, final=sdb.final_losses(), names=pick_names))
    keep("synthetic-stability-by-recipe", plots.stability(sl.stability(sdb.final_losses(), by="recipe", bootstrap=100)))

    write_report(out / "report.html", final, runs=db.runs(), title="Step Law's public dense sweep", bootstrap=boot)
    print("report.html")
    (out / "overlaps.txt").write_text("\n".join(overlaps) + ("\n" if overlaps else ""))
    print(f"{len(overlaps)} overlapping text pairs (overlaps.txt); {time.perf_counter() - t0:.0f} s")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "python"))
    sys.exit(main())
