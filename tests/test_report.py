"""The HTML report (built in Python, opened in a real headless browser) and its CLI verb;
figure formats and errors (the figures' reader checks are tests/test_plots.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import warnings

import polars as pl
import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from steplaw_db import _html, laws, plots, synth
from steplaw_db.cli import app
from steplaw_db.report import build, build_report, write_report
from steplaw_db.store import POINTS_SCHEMA

MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}
CELL = {"N": 214663680, "D": 100_000_000_000}
#: The sections every report of a sweep with a fittable law has (anchors).
SECTIONS = ("summary", "cells", "law", "loss-law", "landscapes", "stability", "notes", "reproduce")


def _is(path, ext: str) -> bool:
    return path.is_file() and path.read_bytes()[:5].startswith(MAGIC[ext])


@pytest.mark.parametrize("ext", [".png", ".svg", ".pdf"])
def test_landscape_and_law_figures_in_every_format(tmp_path, final, ext):
    fig = plots.landscape(final, CELL, laws={"Step Law": laws.step_law()}, path=tmp_path / f"l{ext}")
    assert _is(tmp_path / f"l{ext}", ext)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("Step Law: lr ") for t in legend)  # the law's prediction is named
    fitted = sl.fit_law(final, bootstrap=50)
    plots.law(final, {"fitted": fitted}, path=tmp_path / f"law{ext}")
    assert _is(tmp_path / f"law{ext}", ext)


def test_figure_errors(tmp_path, final):
    with pytest.raises(sl.InvalidArgumentError, match="extension"):
        plots.landscape(final, CELL, path=tmp_path / "x.bmp")
    with pytest.raises(sl.InvalidArgumentError, match="no runs"):
        plots.landscape(final, {"N": 1, "D": 1})
    with pytest.raises(sl.InvalidArgumentError):
        plots.curves(pl.DataFrame(schema=POINTS_SCHEMA))


def _section(text: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S)
    assert m, f"no section {anchor}"
    return m.group(1)


def test_one_bootstrap_setting_gives_one_set_of_exponents(final):
    """The law section's fit is the stability benchmark's reference fit: the same N exponent
    (and every other coefficient) in both, in the objects and on the page. The report used to
    fit the law section by the vertex method with 500 resamples and the stability section by
    Step Law's procedure with 300 (the mean of its draws): three N exponents on one page."""
    report = build(final, bootstrap=60, laws=("step-law",))
    law = report.objects["law"]
    stab = report.objects["stability"]
    coef = stab.coefficients.filter(pl.col("group") == "all")
    for name, value in law.coefficients().items():
        assert coef.filter(pl.col("name") == name)["estimate"].item() == pytest.approx(value, abs=1e-12), name
    text = report.html()
    table1 = report.objects["evaluation"]["law"].unique().to_list()
    assert {"fitted", "step-law", "own (LOCO, quadratic)", "own (LOCO, steplaw)"} <= set(table1)
    shown = _html.fmt("estimate", law.coefficients()["lr_coefN"])
    assert shown in _section(text, "law") and shown in _section(text, "stability")
    assert "60</b> bootstrap resamples" in _section(text, "summary")


@pytest.fixture(scope="module")
def two_recipes(tmp_path_factory):
    """Two recipes of a small synthetic sweep (six cells each), ingested with --recipe."""
    root = tmp_path_factory.mktemp("recipes")
    shapes = ((960, 9368, 15, 7), (1280, 9472, 10, 10), (2048, 8192, 16, 16))
    cells = [(*s, d) for s in shapes for d in (1e10, 3e10)]
    synth.write_sweep(root / "web", cells=cells, points=40, seed=1)
    synth.write_sweep(root / "code", cells=cells, points=40, seed=2)
    db = sl.open(root / "db")
    db.ingest(root / "web", recipe="web")
    db.ingest(root / "code", recipe="code")
    return db


@pytest.mark.slow  # 10-30 s: two recipes' fits, loss laws and the stability benchmark
def test_recipes_section_shows_each_recipes_law_and_the_curves(two_recipes, tmp_path):
    db = two_recipes

    def points(ids):
        return db.scan_points(ids).filter(pl.col("metric") == "loss").collect()

    report = build(db.final_losses(), runs=db.runs(), points=points, bootstrap=40, laws=("step-law",))
    anchors = [a for a, _, _ in report.sections]
    assert "groups" in anchors and "curves" in anchors
    title = dict((a, t) for a, t, _ in report.sections)["groups"]
    assert title == "Recipes"
    stab = report.objects["stability"]
    for label, law in report.objects["laws"].items():
        group = label.split("=", 1)[1]
        coef = stab.coefficients.filter(pl.col("group") == group)
        for name, value in law.coefficients().items():
            assert coef.filter(pl.col("name") == name)["estimate"].item() == pytest.approx(value, abs=1e-12)
    text = report.html()
    groups = _section(text, "groups")
    assert "recipe=web [95%]" in groups and "recipe=code [95%]" in groups and "Differences" in groups
    assert "Cells of each" in groups
    assert len(report.objects["cells"]) == 12  # 6 cells a recipe, N and D snapped to their levels
    assert groups.count("<tr>") - groups.count("<thead><tr>") >= 12
    path = tmp_path / "recipes.html"
    report.write(path)
    dom, log, _ = open_in_browser(path)
    assert 'data-too-wide="0"' in re.search(r"<body[^>]*>", dom).group(0)  # the comparison fits the page
    assert _console_errors(log) == []


def test_report_explains_what_it_could_not_do(final):
    one_cell = final.filter((pl.col("N") == CELL["N"]) & (pl.col("D") == CELL["D"]))
    text = build_report(one_cell, bootstrap=20)
    notes = _section(text, "notes")
    assert "fit" in notes and "<li>" in notes


def test_predictions_section(final):
    report = build(final, bootstrap=20, predict=[(7e9, 1.4e12)], laws=("step-law", "openai"))
    df = report.objects["predictions"]
    assert set(df["law"]) == {"fitted", "step-law", "openai"}
    fitted = df.filter(pl.col("law") == "fitted").row(0, named=True)
    assert "[" in fitted["lr [95%]"] and "[" in fitted["batch [95%]"]  # the interval
    assert df.filter(pl.col("law") == "openai")["note"].item()  # needs a loss value: said
    assert "7B" in _section(report.html(), "predictions")
    # the cells carry the unit ("5M [4.1M, 6.2M] tokens", "100B tokens"): the headers do not repeat it
    assert "(tokens)" not in report.html()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_or_skip() -> str:
    browser = _chromium()
    if browser is None:
        message = "Debian's chromium is needed for this test (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return browser


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


def open_in_browser(path, screenshot=None, width: int = 1200) -> tuple[str, str, float]:
    """The page's DOM after load (scripts run, images decoded), chromium's log (console
    messages), and the wall time."""
    browser = _browser_or_skip()
    t0 = time.perf_counter()
    res = subprocess.run(
        [browser, *FLAGS, "--virtual-time-budget=20000", f"--window-size={width},3000", "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    elapsed = time.perf_counter() - t0
    if screenshot is not None:
        subprocess.run(
            [browser, *FLAGS, f"--window-size={width},2400", f"--screenshot={screenshot}", path.as_uri()],
            capture_output=True,
            timeout=180,
        )
    return res.stdout, res.stderr, elapsed


def _console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "rror" in line)]


@pytest.mark.slow  # 10-40 s: the whole report, and the browser
def test_report_loads_in_a_headless_browser_with_every_section(tmp_path, final):
    path = tmp_path / "report.html"
    write_report(path, final, title="a dense sweep", bootstrap=100, predict=[(7e9, 1.4e12)])
    text = path.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    dom, log, _ = open_in_browser(path, screenshot=tmp_path / "report.png")
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    shown = re.search(r'data-figures-shown="(\d+)"', body.group(0))
    total = re.search(r'data-figures="(\d+)"', body.group(0))
    assert shown and total and int(total.group(1)) >= 8 and shown.group(1) == total.group(1), body.group(0)
    assert "data-errors" not in re.search(r"<html[^>]*>", dom).group(0)
    assert _console_errors(log) == []
    assert 'data-too-wide="0"' in body.group(0)  # no table wider than the page at 1200 px
    for anchor in (*SECTIONS, "predictions"):
        assert f'<section id="{anchor}">' in dom, anchor
        assert f'href="#{anchor}"' in dom, anchor  # in the table of contents
    assert _is(tmp_path / "report.png", ".png")


def test_the_browser_check_sees_a_script_error(tmp_path):
    """The console-error check can fail: a page with a throwing script is caught."""
    path = tmp_path / "bad.html"
    path.write_text(
        build_report(pl.DataFrame({"N": [1.0], "D": [1.0], "lr": [1e-3], "bs_tokens": [1e6], "loss": [3.0]}))
        .replace("</body>", "<script>undefinedFunction();</script></body>")
        .replace("</h1>", "</h1><table><tr><td>" + "a-very-long-unbreakable-cell " * 80 + "</td></tr></table>")
    )
    dom, log, _ = open_in_browser(path)
    assert "data-errors" in re.search(r"<html[^>]*>", dom).group(0)
    assert _console_errors(log)
    assert 'data-too-wide="1"' in re.search(r"<body[^>]*>", dom).group(0)  # the width check sees it


@pytest.mark.slow  # 5-20 s: the whole report
def test_cli_report_plot_stability(tmp_path, final_csv):
    runner = CliRunner()
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["--db", db, "import-table", str(final_csv)]).exit_code == 0
    res = runner.invoke(app, ["--db", db, "report", "-o", str(tmp_path / "r.html"), "--bootstrap", "50",
                              "--predict", "7e9,1.4e12"])  # fmt: skip
    assert res.exit_code == 0, res.output
    text = (tmp_path / "r.html").read_text()
    assert len(text) > 100_000 and '<section id="predictions">' in text
    assert "steplaw-db report --output" in _section(text, "reproduce")  # the command line
    assert "--bootstrap 50" in _section(text, "reproduce")
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
    res = runner.invoke(app, ["--db", db, "plot", "landscape", "--cell", "N", "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 2


@pytest.mark.slow  # 4-15 s: a synthetic sweep, its fits and the whole report
def test_demo_writes_the_report(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "true law" in res.output and "predicted for" in res.output
    assert (tmp_path / "report.html").is_file()


def test_notebook_views(final, tmp_path):
    """Laws, fits, reports and the store show themselves as HTML in a notebook."""
    import html

    law = sl.fit_law(final, bootstrap=20)
    for obj in (law, laws.step_law()):
        page = obj._repr_html_()
        assert page.startswith('<div class="sldb">') and html.escape(obj.describe()) in page
        assert "<table>" in page and "97.5%" in page
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a loss law's fit on few cells warns: not what this tests
        loss = sl.fit_loss_law(final, bootstrap=3)
    assert "alpha" in loss._repr_html_() and "<code>L = " in loss._repr_html_()
    page = build(final, bootstrap=0, laws=())._repr_html_()
    assert page.startswith('<div class="sldb">') and '<section id="summary">' in page
    report = sl.stability(final, bootstrap=20, thresholds=(0.0025,), loco=False)
    assert "verdicts" in report._repr_html_()
    db = sl.open(tmp_path / "db")
    assert "no runs" in db._repr_html_()
    ingested = db.import_table(_write(tmp_path / "t.csv", final))
    assert "<pre>" in ingested._repr_html_()
    assert "summary-only" in db._repr_html_()


def _write(path, final):
    final.drop("loss", "bs_tokens").write_csv(path)
    return path


def test_pandas_extra_brings_what_to_pandas_needs():
    """``pip install steplaw-db[pandas]`` installs pandas and pyarrow, both of which Polars'
    ``to_pandas()`` needs (pandas alone fails: the extra used to be missing). The test extra
    installs the pandas extra, so this runs in CI."""
    assert laws.step_law().to_polars().to_pandas().shape[0] == 5
