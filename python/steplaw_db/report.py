"""One self-contained HTML report of a sweep: the store's summary, the cells and their optima,
landscapes, the fitted law with intervals beside the published laws, and the stability
benchmark. Figures are embedded (base64 PNG), so the file can be mailed round as it is."""

from __future__ import annotations

import base64
import html
import io
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from . import plots
from ._typing import LawMethod
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

T = TypeVar("T")

#: Landscapes drawn at most (the cells with the most runs).
MAX_LANDSCAPES = 6

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .8em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; } th { background: #f4f4f4; }
td.text { text-align: left; } img { max-width: 100%; } .note { color: #666; font-size: .85em; }
.scroll { overflow-x: auto; } .grid img { width: 49%; }
.unstable { color: #b00; font-weight: 600; } .stable { color: #070; }
"""

# Marks the page once every figure has decoded (and counts script errors), so a headless
# browser (and the tests) can check that the report loads cleanly and shows its figures.
_CHECK_SCRIPT = """
window.addEventListener('error', function () {
  var n = Number(document.documentElement.getAttribute('data-errors') || 0) + 1;
  document.documentElement.setAttribute('data-errors', n);
});
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-figures', imgs.length);
  document.body.setAttribute('data-figures-shown', ok);
});
"""


def _figure(fig: Figure) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(df: pl.DataFrame, columns: Sequence[str] | None = None, verdict_column: str | None = None) -> str:
    if columns is not None:
        df = df.select([c for c in columns if c in df.columns])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = []
    for row in df.iter_rows(named=True):
        cells = []
        for c, v in row.items():
            cls = "text" if isinstance(v, str) else ""
            if c == verdict_column and isinstance(v, str):
                cls += f" {v}"
            cells.append(f'<td class="{cls.strip()}">{_fmt(v)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'


def _section(title: str, *parts: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n" + "\n".join(parts)


def _try(what: str, fn: Callable[[], T], notes: list[str]) -> T | None:
    """Run one part of the report; a part that cannot be made says why instead of failing
    the whole report (e.g. too few cells to fit a law)."""
    from .progress import stage

    try:
        with stage(f"report: {what}"):
            return fn()
    except InvalidArgumentError as e:
        notes.append(f"{what}: {e}")
        return None


def build_report(
    final: pl.DataFrame,
    *,
    runs: pl.DataFrame | None = None,
    title: str = "steplaw-db sweep report",
    laws: Sequence[str] | Mapping[str, Any] = ("step-law", "deepseek", "porian", "microsoft"),
    by: str | None = None,
    bootstrap: int = 500,
    truth: Any = None,
    method: LawMethod = "quadratic",
) -> str:
    """The report as an HTML string. ``final``: the sweep's final losses
    (``Store.final_losses()``); ``runs``: the runs table for the summary; ``laws``: published
    laws (names of ``steplaw_db.laws``) or a mapping name -> law to compare; ``by``: a column
    that keys cells besides N and D and splits the stability benchmark's groups (e.g.
    ``recipe``); ``method``: how the law is fitted (:func:`steplaw_db.fit.fit_law`); ``truth``:
    an optional known law (synthetic sweeps) drawn beside the fit. Every warning the analysis
    raised (cells merged or split, fits barely determined) is listed under Notes."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = _report_parts(final, runs, title, laws, by, bootstrap, truth, method, notes)
    seen = set(notes)
    for w in caught:
        text = " ".join(str(w.message).split())
        if issubclass(w.category, UserWarning) and text not in seen:
            seen.add(text)
            notes.append(f"warning: {text}")
    if notes:
        parts.append(_section("Notes", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"))
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style><script>{_CHECK_SCRIPT}</script></head>\n<body>\n{body}\n</body></html>\n"
    )


def _report_parts(
    final: pl.DataFrame,
    runs: pl.DataFrame | None,
    title: str,
    laws: Sequence[str] | Mapping[str, Any],
    by: str | None,
    bootstrap: int,
    truth: Any,
    method: LawMethod,
    notes: list[str],
) -> list[str]:
    from . import laws as published
    from .fit import LAW_METHODS, evaluate, fit_law
    from .optima import optima
    from .stability import stability

    keys = ["N", "D"] if by is None else ["N", "D", by]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    # the store
    summary = []
    if runs is not None and len(runs):
        counts = runs.group_by("status").len().sort("status")
        summary.append(f"<p>{len(runs)} runs, {int(runs['n_points'].sum()):,} points.</p>")
        summary.append(_table(counts))
    summary.append(f"<p>{len(final)} runs with a final loss.</p>")
    parts.append(_section("Store", *summary))

    # cells
    cells = _try("optima", lambda: optima(final, by=keys, method="quadratic"), notes)
    if cells is not None:
        parts.append(_section(
            "Cells and their optima",
            '<p class="note">Grid minimum, near-optimal runs (within 0.25%), the quadratic vertex in '
            "(log lr, log batch) with its 95% bootstrap interval, and flags (edge: the optimum lies on the "
            "grid's edge and was not measured; a vertex or interval end more than one grid step outside the grid "
            "is shown unbounded: empty, 0 or inf, with the side in lr_unbounded / bs_unbounded).</p>",
            _table(cells, [*cells.columns[: cells.columns.index("runs")], "runs", "loss_min", "lr_grid",
                           "bs_tokens_grid", "near_optimal", "lr_quad", "lr_quad_lo", "lr_quad_hi", "bs_tokens_quad",
                           "bs_quad_lo", "bs_quad_hi", "lr_unbounded", "bs_unbounded", "optimum", "flags"]),
        ))  # fmt: skip

    # the fit and the published laws
    compare = dict(laws) if isinstance(laws, Mapping) else {n: published.get(n) for n in laws}
    fitted = _try("fit", lambda: fit_law(final, method, by=keys, bootstrap=bootstrap), notes)
    if fitted is not None:
        drawn = {"fitted": fitted, **({"truth": truth} if truth is not None else {}), **compare}
        parts.append(_section(
            "Fitted law",
            f"<p>Method <b>{html.escape(method)}</b>: {html.escape(LAW_METHODS[method])}, "
            f"{bootstrap} bootstrap resamples: <code>{html.escape(fitted.describe())}</code></p>",
            "".join(f'<p class="note"><b>{html.escape(n)}</b></p>' for n in fitted.edge_notes()),
            _table(fitted.to_polars()),
            _figure(plots.law(final, {"fitted": fitted, **({"truth": truth} if truth is not None else {})},
                              by=keys)),
        ))  # fmt: skip
        scored = _try("evaluate", lambda: evaluate(drawn, final, by=keys), notes)
        if scored is not None:
            med = scored.group_by("law", maintain_order=True).agg(
                (pl.col("rel_error").median() * 100).alias("median_rel_error_%"),
                (pl.col("rel_error").max() * 100).alias("max_rel_error_%"),
                pl.len().alias("cells"),
            )
            parts.append(_section(
                "Laws compared on the measured cells",
                '<p class="note">Relative loss error at each law\'s prediction (nearest grid point in log '
                "space) against the cell's minimum, as Step Law's Table 1 defines it.</p>",
                _table(med),
            ))  # fmt: skip
    # landscapes
    if cells is not None:
        figs = []
        cell_keys = cells.columns[1 : cells.columns.index("runs")]  # the keys, designs that split cells too
        for cell in cells.sort("runs", descending=True).head(MAX_LANDSCAPES).sort("N", "D").iter_rows(named=True):
            fig = _try(
                "landscape",
                partial(
                    plots.landscape,
                    final,
                    {k: cell[k] for k in cell_keys},
                    laws={"fitted": fitted, **compare} if fitted else compare,
                ),
                notes,
            )
            if fig is not None:
                figs.append(_figure(fig))
        parts.append(_section("Landscapes", '<div class="grid">', *figs, "</div>"))
    # stability
    report = _try("stability", lambda: stability(final, by=by, bootstrap=min(bootstrap, 300)), notes)
    if report is not None:
        loco = report.loco
        parts.append(_section(
            "Stability",
            '<p class="note">Verdict per coefficient: <b>stable</b> when every analysis choice (near-optimal '
            "threshold 0.1%-1%, grid rule vs quadratic vertex) moves it by less than 2 bootstrap SDs; <b>not "
            "identified</b> when most cells have that optimum on the grid's edge (edge_cells of cells).</p>",
            _table(report.verdicts, verdict_column="verdict"),
            _table(report.differences) if len(report.differences) else "",
            "<h3>Leave one cell out</h3>" + (_table(loco) if len(loco) else "<p>not identifiable</p>"),
            _figure(plots.stability(report)),
        ))  # fmt: skip
    return parts


def write_report(path: str | os.PathLike, final: pl.DataFrame, **kwargs: Any) -> str:
    """Write :func:`build_report` to ``path``; returns the path."""
    text = build_report(final, **kwargs)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return os.fspath(path)
