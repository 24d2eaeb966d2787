"""Plots, the HTML report (opened in a real headless browser) and their CLI verbs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import polars as pl
import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from steplaw_db import laws, plots, synth
from steplaw_db.cli import app
from steplaw_db.optima import near_optimal
from steplaw_db.report import build_report, write_report
from steplaw_db.stability import stability

MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}
CELL = {"N": 214663680, "D": 100_000_000_000}


def _is(path, ext: str) -> bool:
    return path.is_file() and path.read_bytes()[:5].startswith(MAGIC[ext])


@pytest.mark.parametrize("ext", [".png", ".svg", ".pdf"])
def test_landscape_and_law_figures_in_every_format(tmp_path, final, ext):
    fig = plots.landscape(final, CELL, laws={"Step Law": laws.step_law()}, path=tmp_path / f"l{ext}")
    assert _is(tmp_path / f"l{ext}", ext)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "Step Law" in texts  # the law's prediction is a labelled marker
    fitted = sl.fit_lr_bs(near_optimal(final), bootstrap=50)
    plots.law(final, {"fitted": fitted}, path=tmp_path / f"law{ext}")
    assert _is(tmp_path / f"law{ext}", ext)


def test_figure_errors(tmp_path, final):
    with pytest.raises(sl.InvalidArgumentError, match="extension"):
        plots.landscape(final, CELL, path=tmp_path / "x.bmp")
    with pytest.raises(sl.InvalidArgumentError, match="no runs"):
        plots.landscape(final, {"N": 1, "D": 1})
    with pytest.raises(sl.InvalidArgumentError):
        plots.curves(pl.DataFrame(schema=sl.store.POINTS_SCHEMA))


def test_curves_and_stability_figures(tmp_path, final):
    truth = synth.write_sweep(tmp_path / "sweep", cells=synth.DEFAULT_CELLS[:1], n_lr=3, n_bs=1, points=50)
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "sweep")
    ids = db.runs()["run_id"].to_list()
    fig = plots.curves(db.points(ids), final=db.final_losses(), path=tmp_path / "c.png")
    assert _is(tmp_path / "c.png", ".png") and len(fig.axes[0].lines) >= 2 * len(truth)
    report = stability(final, bootstrap=50, thresholds=(0.0025, 0.01), methods=("grid",), loco=False)
    plots.stability(report, path=tmp_path / "s.svg")
    assert _is(tmp_path / "s.svg", ".svg")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow  # 3-8 s: the whole report
def test_report_loads_in_a_headless_browser_and_shows_its_figures(tmp_path, final):
    path = tmp_path / "report.html"
    write_report(path, final, title="a dense sweep", bootstrap=100)
    text = path.read_text()
    assert "Stability" in text and "Landscapes" in text and "step-law" in text
    assert "http://" not in text and "https://" not in text  # self-contained
    browser = _chromium()
    if browser is None:
        message = "Debian's chromium is needed for this test (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"]
    dom = subprocess.run([browser, *flags, path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    shown = re.search(r'data-figures-shown="(\d+)"', body.group(0))
    total = re.search(r'data-figures="(\d+)"', body.group(0))
    assert shown and total and int(total.group(1)) >= 5 and shown.group(1) == total.group(1), body.group(0)
    assert "data-errors" not in re.search(r"<html[^>]*>", dom).group(0)


def test_report_explains_what_it_could_not_do(final):
    one_cell = final.filter((pl.col("N") == CELL["N"]) & (pl.col("D") == CELL["D"]))
    text = build_report(one_cell, bootstrap=20)
    assert "Notes" in text and "fit" in text


@pytest.mark.slow  # 5-20 s: the whole report
def test_cli_report_plot_stability(tmp_path, final_csv):
    runner = CliRunner()
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["--db", db, "import-table", str(final_csv)]).exit_code == 0
    res = runner.invoke(app, ["--db", db, "report", "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.html").stat().st_size > 100_000
    res = runner.invoke(
        app,
        [
            "--db",
            db,
            "plot",
            "landscape",
            "--cell",
            "N=214663680,D=1e11",
            "--law",
            "all",
            "-o",
            str(tmp_path / "l.png"),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["--db", db, "plot", "law", "--law", "step-law", "-o", str(tmp_path / "law.pdf")])
    assert res.exit_code == 0 and _is(tmp_path / "law.pdf", ".pdf"), res.output
    out = tmp_path / "v.csv"
    res = runner.invoke(
        app, ["--db", db, "stability", "--bootstrap", "50", "--table", "verdicts", "--format", "csv", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert set(pl.read_csv(out)["verdict"]) <= {"stable", "unstable"}
    res = runner.invoke(app, ["--db", db, "plot", "landscape", "--cell", "N", "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 2


@pytest.mark.slow  # 4-15 s: a synthetic sweep, its fits and the whole report
def test_demo_writes_the_report(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "true law" in res.output and "predicted for" in res.output
    assert (tmp_path / "report.html").is_file()
