"""Every figure tested for what a reader needs: axes labelled with units, ticks that read as
values (never log10 exponents), no text drawn over another (the renderer's own boxes), legends
outside the data, and the artists the figure promises (contours, optimum, diverged runs, every
law named)."""

from __future__ import annotations

import re
import warnings

import matplotlib.pyplot as plt
import polars as pl
import pytest
from matplotlib.collections import PathCollection
from matplotlib.contour import ContourSet

import steplaw_db as sl
from steplaw_db import _style, laws, plots, synth
from steplaw_db.optima import near_optimal, optima

CELL = {"N": 214663680, "D": 100_000_000_000}
#: What a tick label of a log axis must not look like: mathtext exponents, log10 values.
EXPONENT = re.compile(r"\$|\^|10\{|^-?\d+(\.\d+)?$")


def _texts(fig) -> list[str]:
    return [t.get_text() for t in _style.text_artists(fig)]


def _legend_texts(fig) -> list[str]:
    legends = list(fig.legends) + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def _reads_well(fig, axes=None) -> None:
    """Labelled axes, nothing overlapping, legends off the data."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes if axes is not None else fig.axes:
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), ax
        assert ax.get_title().strip(), ax
    assert _style.overlapping_texts(fig) == []
    data_axes = axes if axes is not None else fig.axes
    legends = list(fig.legends) + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    for leg in legends:
        lb = leg.get_window_extent(renderer)
        for ax in data_axes:
            ab = ax.get_window_extent(renderer)
            assert not lb.overlaps(ab), f"the legend covers the axes {ax.get_title()!r}"


def _log_ticks(ax, which: str) -> list[str]:
    fig = ax.figure
    fig.canvas.draw()
    _, drawn = _style._tick_labels(fig)
    axis = ax.xaxis if which == "x" else ax.yaxis
    mine = {id(t) for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()] for t in (tick.label1,)}
    return [t.get_text() for t in drawn if id(t) in mine]


def test_number_formats():
    assert _style.si(2_000_000) == "2M" and _style.si(1e11) == "100B" and _style.si(1.5e12) == "1.5T"
    assert _style.si(512) == "512" and _style.si(2048) == "2.05k"
    assert _style.sci(1e-3) == "1e-3" and _style.sci(3.2e-4) == "3.2e-4" and _style.sci(0.0125) == "1.25e-2"
    assert _style.loss(2.8456) == "2.85"


def test_landscape_reads_well(final):
    fig = plots.landscape(final, CELL, laws={"fitted": sl.fit_law(final, bootstrap=30), "step-law": laws.step_law()})
    ax = fig.axes[0]
    _reads_well(fig, [ax])
    assert "learning rate" in ax.get_xlabel() and "(tokens)" in ax.get_ylabel()
    assert ax.get_xscale() == ax.get_yscale() == "log"
    xt, yt = _log_ticks(ax, "x"), _log_ticks(ax, "y")
    assert xt and yt and not [t for t in xt + yt if EXPONENT.search(t)], (xt, yt)
    assert all(re.fullmatch(r"\d(\.\d+)?e-\d+", t) for t in xt), xt  # 1e-3, 5e-4
    assert all(re.fullmatch(r"\d+(\.\d+)?[kMB]?", t) for t in yt), yt  # 500k, 2M
    assert any(isinstance(c, ContourSet) for c in ax.collections)  # the contours
    assert any(isinstance(c, PathCollection) and len(c.get_offsets()) > 10 for c in ax.collections)  # the grid
    legend = _legend_texts(fig)
    for what in ("grid minimum", "quadratic vertex", "fitted:", "step-law:"):
        assert any(t.startswith(what) for t in legend), (what, legend)
    assert any("tokens" in t for t in legend if t.startswith("step-law"))  # the prediction's values
    assert "N = 215M parameters, D = 100B tokens" in ax.get_title()


def test_landscape_names_the_laws_it_cannot_draw_once_each_without_overlap(final):
    fig = plots.landscape(final, CELL, laws={law.name: law for law in laws.all_laws()})
    _reads_well(fig, [fig.axes[0]])
    notes = [t for t in fig.texts if "not drawn" in t.get_text()]
    assert len(notes) == 1  # one block, a line each: they cannot fall on one another
    assert "openai: not drawn" in notes[0].get_text() and "minicpm: not drawn" in notes[0].get_text()
    # a law of one target is drawn at the cell's best value of the other, and says so
    legend = _legend_texts(fig)
    assert any(t.startswith("microsoft (") and "the cell's best" in t for t in legend), legend


@pytest.fixture(scope="module")
def diverging(tmp_path_factory):
    """A one-cell synthetic sweep whose highest learning rates diverge, ingested."""
    root = tmp_path_factory.mktemp("diverging")
    truth = synth.write_sweep(root / "runs", cells=synth.DEFAULT_CELLS[:1], points=60)
    db = sl.open(root / "db")
    db.ingest(root / "runs")
    assert truth["diverged"].sum() > 0
    return db, truth


def test_landscape_marks_diverged_runs(diverging):
    db, truth = diverging
    final = db.final_losses()
    row = truth.row(0, named=True)
    fig = plots.landscape(final, {"N": row["N"], "D": row["D"]})
    ax = fig.axes[0]
    crosses = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(crosses) == 1 and len(crosses[0].get_xdata()) == truth["diverged"].sum()
    assert crosses[0].get_label() == f"diverged ({truth['diverged'].sum()} runs)"
    # they sit inside the view
    lo, hi = ax.get_xlim()
    assert all(lo <= v <= hi for v in crosses[0].get_xdata())
    _reads_well(fig, [ax])


def test_law_figure_draws_the_samples_its_law_was_fitted_to(final):
    for method in ("quadratic", "steplaw"):
        fitted = sl.fit_law(final, method, bootstrap=30)
        fig = plots.law(final, {"fitted": fitted, "step-law": laws.step_law()})
        ax_lr, ax_bs = fig.axes
        _reads_well(fig, [ax_lr, ax_bs])
        shown = sum(len(ln.get_xdata()) for ln in ax_bs.lines if ln.get_marker() == "o")
        expected = len(near_optimal(final)) if method == "steplaw" else len(optima(final))
        assert shown == expected, (method, shown, expected)
        legend = _legend_texts(fig)
        assert "law: fitted" in legend and "law: step-law" in legend
        assert any(("near-optimal" if method == "steplaw" else "quadratic vertex") in t for t in legend)
        assert "tokens" in ax_lr.get_xlabel() and "(tokens)" in ax_bs.get_ylabel()
        for ax, kind in ((ax_lr, r"\d(\.\d+)?e-\d+"), (ax_bs, r"\d+(\.\d+)?[kMB]?")):
            ticks = _log_ticks(ax, "y")
            assert ticks and all(re.fullmatch(kind, t) for t in ticks), ticks
        plt.close(fig)


def test_law_figure_notes_laws_that_need_a_loss(final):
    fitted = sl.fit_law(final, bootstrap=0)
    fig = plots.law(final, {"fitted": fitted, "openai": laws.get("openai"), "minicpm": laws.get("minicpm")})
    _reads_well(fig, fig.axes)
    assert sum("not drawn" in t.get_text() for t in fig.texts) == 1


def test_loss_law_figure(final):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        law = sl.fit_loss_law(final, bootstrap=5)
    fig = plots.loss_law(final, law)
    ax = fig.axes[0]
    _reads_well(fig, [ax])
    ticks = [t for t in _log_ticks(ax, "y")]
    assert ticks and all(re.fullmatch(r"\d\.\d+|\d", t) for t in ticks), ticks
    assert any("fill_between" in type(c).__name__.lower() or c.get_alpha() for c in ax.collections)  # the bands


def test_curves_name_runs_in_full_and_mark_the_diverged(diverging):
    db, _ = diverging
    runs = db.runs().sort("name")
    broke = runs.filter(pl.col("status") == "diverged").head(2)
    fine = runs.filter(pl.col("status") == "complete").head(2)
    pick = pl.concat([broke, fine])
    ids = pick["run_id"].to_list()
    points = db.scan_points(ids).filter(pl.col("metric") == "loss").sort("run_id", "step").collect()
    names = dict(zip(pick["run_id"], pick["name"], strict=True))
    fig = plots.curves(points, final=db.final_losses(), names=names)
    ax = fig.axes[0]
    _reads_well(fig, [ax])
    legend = _legend_texts(fig)
    for name in fine["name"]:
        assert name in legend  # in full
    for name in broke["name"]:
        assert f"{name} (diverged)" in legend
    crosses = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(crosses) == len(broke)
    ticks = _log_ticks(ax, "y")  # a log axis of losses: plain values (3, 4, 5), not 10^0.5
    assert len(ticks) >= 3 and all(re.fullmatch(r"\d+(\.\d+)?", t) for t in ticks), ticks


def test_stability_figure(final):
    report = sl.stability(final, bootstrap=40, thresholds=(0.0025, 0.01), loco=False)
    fig = plots.stability(report)
    _reads_well(fig, fig.axes)
    assert all("exponent" in ax.get_xlabel() for ax in fig.axes)


def test_overlap_check_can_fail():
    """The overlap check sees two texts drawn on one another (so the tests above can fail)."""
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "one label")
    ax.text(0.5, 0.5, "another")
    assert ("one label", "another") in _style.overlapping_texts(fig)
