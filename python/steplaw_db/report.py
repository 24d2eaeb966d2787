"""One self-contained HTML report of a sweep: a table of contents; the store's summary; the
cells and their optima; the lr / batch law with intervals beside the published laws (Step
Law's Table 1 metric, per design); the Chinchilla loss law; every cell's landscape; the loss
curves of each cell's best runs; predictions for planned runs; the stability benchmark; the
recipes (or designs) side by side when there are several; every warning raised while building
it; the command line and versions. Figures are embedded (base64 PNG), so the file can be
mailed round as it is.

One bootstrap setting (resamples and seed) and one fitting method serve every section, so a
law shows the same coefficients wherever it appears: the law section's fit *is* the stability
benchmark's reference fit (and the recipes' laws are its per-group fits).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
import platform
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from . import _html as H
from ._typing import LawMethod
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

T = TypeVar("T")

#: Landscapes drawn at most: the cells with the most runs; the others are listed with the
#: command that draws each.
MAX_LANDSCAPES = 24
#: Cells whose best runs' curves are drawn at most (one figure per model size N).
MAX_CURVE_CELLS = 40
#: Runs per cell in the loss-curve figures (the best ones).
CURVES_PER_CELL = 1
DEFAULT_LAWS = ("step-law", "deepseek", "porian", "microsoft")

_PAGE_CSS = """
body { margin: 0 auto; max-width: 1100px; padding: 0 1.2em 3em; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.3em; }
nav.toc { background: #f7f7f7; border: 1px solid #e2e2e2; padding: .5em 1em; display: inline-block; }
nav.toc ol { margin: .2em 0; padding-left: 1.4em; } nav.toc a { text-decoration: none; }
img { max-width: 100%; height: auto; } .figs img { width: 49%; vertical-align: top; }
.figs figure { display: inline-block; width: 49%; margin: 0; vertical-align: top; }
.figs figure img { width: 100%; }
table { width: auto; }
.settings { font-size: .9em; }
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
  document.body.setAttribute('data-loaded-ms', Math.round(performance.now()));
  // tables wider than the page (a reader would have to scroll sideways)
  var right = document.body.getBoundingClientRect().right + 1;
  var wide = Array.prototype.slice.call(document.querySelectorAll('table')).filter(function (t) {
    return t.getBoundingClientRect().right > right;
  }).length;
  document.body.setAttribute('data-too-wide', wide);
});
"""


def _figure(fig: Figure, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" loading="lazy" src="data:image/png;base64,{data}">'


def _esc(v: Any) -> str:
    return html.escape(str(v))


@dataclass
class Report:
    """A built report: its sections (``(anchor, title, html)``), the notes (every warning
    raised while building it), the settings, and the objects behind it (``law``,
    ``loss_law``, ``stability``, ``evaluation``, ``cells``, ``predictions``). :meth:`html` is
    the page, :meth:`write` saves it; in a notebook the report shows itself."""

    title: str
    sections: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)

    def _toc(self) -> str:
        items = "".join(f'<li><a href="#{a}">{_esc(t)}</a></li>' for a, t, _ in self.sections)
        return f'<nav class="toc" id="contents"><b>Contents</b><ol>{items}</ol></nav>'

    def _body(self) -> str:
        parts = [f"<h1>{_esc(self.title)}</h1>", self._toc()]
        parts += [f'<section id="{a}"><h2>{_esc(t)}</h2>\n{body}</section>' for a, t, body in self.sections]
        return "\n".join(parts)

    def html(self) -> str:
        """The whole page: self-contained (no network), one file."""
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(self.title)}</title><style>{H.CSS}{_PAGE_CSS}</style>"
            f'<script>{_CHECK_SCRIPT}</script></head>\n<body class="sldb">\n{self._body()}\n</body></html>\n'
        )

    def write(self, path: str | os.PathLike[str]) -> str:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.html())
        return os.fspath(path)

    def _repr_html_(self) -> str:
        return H.wrap(self._body())


class _Builder:
    """Collects the sections; a part that cannot be made says why (a note) instead of failing
    the whole report."""

    def __init__(self, report: Report) -> None:
        self.report = report
        #: The messages of the parts that failed (each a note already): a warning that says one
        #: again (stability's "no law: <kind>: <message>" for the fit noted as "fit: <message>")
        #: is not listed a second time.
        self.failures: list[str] = []

    def add(self, anchor: str, title: str, *parts: str) -> None:
        self.report.sections.append((anchor, title, "\n".join(p for p in parts if p)))

    def attempt(self, what: str, fn: Callable[[], T]) -> T | None:
        from .progress import stage

        try:
            with stage(f"report: {what}"):
                return fn()
        except InvalidArgumentError as e:
            message = " ".join(str(e).split())
            self.failures.append(message)
            self.report.notes.append(f"{what}: {message}")
            return None


def _group_column(final: pl.DataFrame, by: str | None) -> str | None:
    """The column the report compares groups by: ``by``, or ``recipe`` when the runs hold more
    than one recipe (merging recipes would fit one law across them)."""
    if by is not None:
        if by not in final.columns:
            raise InvalidArgumentError(f"no column '{by}' to group by (columns: {final.columns})")
        from .optima import require_values

        require_values(final, by)  # as assign_cells says it, once
        return by
    if "recipe" in final.columns and final["recipe"].drop_nulls().n_unique() > 1:
        return "recipe"
    return None


def build(
    final: pl.DataFrame,
    *,
    runs: pl.DataFrame | None = None,
    points: Callable[[list[int]], pl.DataFrame] | None = None,
    title: str = "steplaw-db sweep report",
    laws: Sequence[str] | Mapping[str, Any] = DEFAULT_LAWS,
    by: str | None = None,
    bootstrap: int = 500,
    seed: int = 42,
    truth: Any = None,
    method: LawMethod = "quadratic",
    predict: Sequence[tuple[float, float]] = (),
    command: str | None = None,
    max_landscapes: int = MAX_LANDSCAPES,
) -> Report:
    """Build the report. ``final``: the sweep's final losses (``Store.final_losses()``);
    ``runs``: the runs table (summary); ``points``: a function from run ids to their loss
    points (``Store.points``) for the curves of each cell's best runs; ``laws``: published
    laws (names of ``steplaw_db.laws``) or a mapping name -> law to compare; ``by``: a column
    that splits the runs into groups (``recipe``, a design); by default ``recipe`` when the
    runs hold several; ``method``: how the law is fitted (:func:`steplaw_db.fit.fit_law`);
    ``bootstrap`` and ``seed``: the one bootstrap setting of every fit in the report;
    ``truth``: a known law (synthetic sweeps) drawn beside the fit; ``predict``: (N, D) pairs
    of planned runs; ``command``: the command line to print under Reproduce.

    Every warning raised while building (cells merged or split, edge-bound optima, fits
    barely determined) is listed under Notes, once each."""
    from . import laws as published

    if bootstrap < 0:
        raise InvalidArgumentError(f"bootstrap must be >= 0, got {bootstrap}")
    report = Report(title)
    group = _group_column(final, by)
    report.settings = {
        "method": method,
        "bootstrap": bootstrap,
        "seed": seed,
        "group": group,
        "laws": list(laws) if not isinstance(laws, Mapping) else list(laws.keys()),
    }
    compare = dict(laws) if isinstance(laws, Mapping) else {n: published.get(n) for n in laws}
    b = _Builder(report)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _summary(b, final, runs, group)
        cells = _cells(b, final, group)
        stab = _law(b, final, group, compare, truth, method, bootstrap, seed)
        _loss_law(b, final, group, bootstrap, seed)
        if cells is not None:
            _landscapes(b, final, cells, max_landscapes)
            if points is not None:
                _curves(b, final, cells, points)
        if predict:
            _predictions(b, predict, compare)
        if stab is not None:
            _stability(b, stab)
            if group is not None:
                _groups_section(b, final, stab, group)
    seen = set(report.notes)
    for w in caught:
        text = " ".join(str(w.message).split())
        said = any(text.endswith(f": {failure}") for failure in b.failures)  # the failure noted above
        if issubclass(w.category, UserWarning) and text not in seen and not said:
            seen.add(text)
            report.notes.append(f"warning: {text}")
    b.add(
        "notes",
        "Notes",
        "<p>Every warning raised while building this report, once each.</p>"
        + ("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in report.notes) + "</ul>" if report.notes else "<p>none</p>"),
    )
    _reproduce(b, command)
    return report


# ---------------------------------------------------------------------------------- sections


def _summary(b: _Builder, final: pl.DataFrame, runs: pl.DataFrame | None, group: str | None) -> None:
    parts = []
    if runs is not None and len(runs):
        points = int(runs["n_points"].sum()) if "n_points" in runs.columns else 0
        curves = f"{points:,} loss points" if points else "no loss curves (summary rows only)"
        parts.append(f"<p>{len(runs):,} runs in the store, {curves}.</p>")
        parts.append(H.table(runs.group_by("status").len().sort("status").rename({"len": "runs"})))
    finite = (
        final.filter(pl.col("loss").is_not_null() & pl.col("loss").is_finite()) if "loss" in final.columns else final
    )
    parts.append(f"<p>{len(final):,} runs with a final loss ({len(finite):,} finite).</p>")
    if group is not None:
        counts = final.group_by(group).len().sort(group).rename({"len": "runs"})
        parts.append(f"<p>Runs by <b>{_esc(group)}</b>: every analysis below runs per {_esc(group)}.</p>")
        parts.append(H.table(counts))
    s = b.report.settings
    parts.append(
        f'<p class="settings">One setting for every fit in this report: method <b>{_esc(s["method"])}</b>, '
        f"<b>{s['bootstrap']}</b> bootstrap resamples, seed {s['seed']}; intervals are 95% bootstrap percentiles.</p>"
    )
    b.add("summary", "Summary", *parts)


def _cells(b: _Builder, final: pl.DataFrame, group: str | None) -> pl.DataFrame | None:
    from .optima import optima

    keys = ["N", "D", *([group] if group else [])]
    cells = b.attempt("optima", lambda: optima(final, by=keys, method="quadratic"))
    if cells is None:
        return None
    b.report.objects["cells"] = cells
    key_cols = cells.columns[1 : cells.columns.index("runs")]
    view = cells.with_columns(
        lr_vertex=pl.struct("lr_quad", "lr_quad_lo", "lr_quad_hi").map_elements(
            lambda r: H.interval(r["lr_quad"], r["lr_quad_lo"], r["lr_quad_hi"], "lr"), return_dtype=pl.String
        ),
        bs_vertex=pl.struct("bs_tokens_quad", "bs_tokens_quad_lo", "bs_tokens_quad_hi").map_elements(
            lambda r: H.interval(r["bs_tokens_quad"], r["bs_tokens_quad_lo"], r["bs_tokens_quad_hi"], "tokens"),
            return_dtype=pl.String,
        ),
        edges=pl.concat_str(
            [
                pl.when(pl.col(c).is_not_null()).then(pl.lit(f"{t}: ") + pl.col(c).cast(pl.String))
                for c, t in (("lr_edge", "lr"), ("bs_edge", "bs"))
                if c in cells.columns
            ],
            separator=" ",
            ignore_nulls=True,
        )
        if "lr_edge" in cells.columns
        else pl.lit(""),
    )
    columns = [*key_cols, "runs", "loss_min", "lr_grid", "bs_tokens_grid", "near_optimal", "lr_vertex", "bs_vertex",
               "edges", "optimum", "flags"]  # fmt: skip
    ids = [_cell_anchor(r, key_cols) for r in cells.iter_rows(named=True)]
    b.add(
        "cells",
        "Cells and their optima",
        f"<p>{len(cells)} cells (runs grouped by {', '.join(key_cols)}). Per cell: the best loss and where on the "
        "grid it was (lr, batch in tokens), the near-optimal runs (within 0.25% of the best), the quadratic vertex "
        "in (log lr, log batch) with its 95% bootstrap interval, the grid edge the best run sits on (its optimum is "
        "then a bound, not a measurement) and the flags (a vertex or interval end more than one grid step outside "
        "the grid is shown unbounded: 0 or ∞).</p>",
        H.table(
            view,
            columns,
            headers={
                "lr_grid": "best lr",
                "bs_tokens_grid": "best batch",
                "loss_min": "best loss",
                "near_optimal": "near-optimal runs",
                "lr_vertex": "lr vertex [95%]",
                "bs_vertex": "batch vertex [95%]",
            },
            row_ids=ids,
        ),
    )
    return cells


def _cell_text(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    """A cell as a reader writes it: ``N 215M, D 80B`` (and any design key)."""
    parts = []
    for k in keys:
        v = row.get(k)
        parts.append(f"{k} {H.si(float(v))}" if k in ("N", "D") and isinstance(v, (int, float)) else f"{k} {v}")
    return ", ".join(parts)


def _cell_anchor(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    return "cell-" + "-".join(f"{k}{row[k]}" for k in keys).replace(" ", "_").replace(".", "_")


def _law(
    b: _Builder,
    final: pl.DataFrame,
    group: str | None,
    compare: Mapping[str, Any],
    truth: Any,
    method: LawMethod,
    bootstrap: int,
    seed: int,
) -> Any:
    """The law: the stability benchmark's reference fit (per group), so that the exponents
    here and in the stability and recipes sections are one set of numbers."""
    from . import plots
    from .fit import LAW_METHODS, evaluate
    from .stability import stability

    stab = b.attempt("fit", lambda: stability(final, by=group, bootstrap=bootstrap, seed=seed, method=method))
    fitted = _fitted_laws(final, group, method, bootstrap, seed, b)
    b.report.objects["stability"] = stab
    b.report.objects["laws"] = fitted
    if not fitted:
        b.add("law", "Learning-rate and batch-size law", "<p>No law could be fitted: see Notes.</p>")
        return stab
    b.report.objects["law"] = next(iter(fitted.values()))
    parts = [
        f"<p>Method <b>{_esc(method)}</b>: {_esc(LAW_METHODS[method])}; {bootstrap} bootstrap resamples over "
        f"{'cells' if method == 'quadratic' else 'runs'}, seed {seed}.</p>"
    ]
    for label, law in fitted.items():
        parts.append(f"<h3>{_esc(label)}</h3>" if group else "")
        parts.append(f"<p><code>{_esc(law.describe())}</code></p>")
        parts += [f'<p class="note"><b>{_esc(n)}</b></p>' for n in law.edge_notes()]
        parts.append(_coefficients(law))
    keys = ["N", "D", *([group] if group else [])]
    for label, law in fitted.items():
        part = final if group is None else final.filter(pl.col(group).cast(pl.String) == label.split("=", 1)[1])
        drawn = {"fitted": law, **({"truth": truth} if truth is not None else {}), **compare}
        fig = b.attempt("law figure", partial(plots.law, part, drawn, by=keys))
        if fig is not None:
            parts.append(_figure(fig, f"the law {label}"))
    # Step Law's Table 1: each law's loss error on the measured cells, per design
    rows = []
    for label, law in fitted.items():
        part = final if group is None else final.filter(pl.col(group).cast(pl.String) == label.split("=", 1)[1])
        drawn = {"fitted": law, **({"truth": truth} if truth is not None else {}), **compare}
        scored = b.attempt("evaluate", partial(evaluate, drawn, part, by=keys, loco=("quadratic", "steplaw")))
        if scored is not None:
            rows.append(scored.with_columns(design=pl.lit(label)))
    if rows:
        scored = pl.concat(rows, how="diagonal_relaxed")
        b.report.objects["evaluation"] = scored
        table1 = (
            scored.group_by("design", "law", maintain_order=True)
            .agg(
                pl.len().alias("cells"),
                pl.col("rel_error").median().alias("median_rel_error"),
                pl.col("rel_error").max().alias("max_rel_error"),
                pl.col("fixed").drop_nulls().first().alias("fixed"),
            )
            .sort("design", "median_rel_error")
        )
        if group is None:
            table1 = table1.drop("design")
        parts.append(
            "<h3>The laws compared on the measured cells (Step Law's Table 1)</h3>"
            '<p class="note">Relative loss error at each law\'s prediction (the nearest run in log space) against '
            "the cell's best loss: median and maximum over the cells. <i>fixed</i>: a law of one target is scored "
            "at the cell's best value of the other. <i>own (LOCO, method)</i>: your own law fitted by that method on "
            "the other cells of its recipe / design and scored on the cell it did not see: would it have picked good "
            "hyperparameters there? (<i>fitted</i> has seen every cell.)</p>"
        )
        parts.append(
            H.table(table1, headers={"median_rel_error": "median loss error", "max_rel_error": "max loss error"})
        )
    b.add("law", "Learning-rate and batch-size law", *parts)
    return stab


def _fitted_laws(
    final: pl.DataFrame, group: str | None, method: LawMethod, bootstrap: int, seed: int, b: _Builder
) -> dict[str, Any]:
    """The law per group with the stability benchmark's settings (same cells, method,
    resampling, bootstrap and seed: the same numbers)."""
    from .fit import fit_law

    out: dict[str, Any] = {}
    if group is None:
        law = b.attempt("fit", lambda: fit_law(final, method, bootstrap=bootstrap, seed=seed, resample="rows"))
        if law is not None:
            out["fitted"] = law
        return out
    # runs without a value of the group are in none (the cells' note says how many)
    for (value,), part in sorted(final.drop_nulls(group).group_by(group), key=lambda kv: str(kv[0][0])):
        label = f"{group}={value}"
        law = b.attempt(
            f"fit {label}",
            partial(
                fit_law, part, method, by=["N", "D", group], bootstrap=bootstrap, seed=seed, resample="rows", name=label
            ),
        )
        if law is not None:
            out[label] = law
    return out


def _coefficients(law: Any) -> str:
    t = law.to_polars()
    cols = [c for c in ("target", "term", "estimate", "sd", "lo", "hi", "r2", "cells", "edge_low", "edge_high")
            if c in t.columns]  # fmt: skip
    return H.table(t, cols, headers={"lo": "2.5%", "hi": "97.5%", "edge_low": "cells at low edge",
                                     "edge_high": "cells at high edge"})  # fmt: skip


def _loss_law(b: _Builder, final: pl.DataFrame, group: str | None, bootstrap: int, seed: int) -> None:
    from . import plots
    from .fit import fit_loss_law

    parts = [
        '<p class="note">Chinchilla\'s L(N, D) = E + A / N^alpha + B / D^beta fitted (Huber loss in log space, '
        f"L-BFGS from Hoffmann's start grid) to each cell's best loss; {bootstrap} bootstrap resamples of the "
        "cells.</p>"
    ]
    keys = ["N", "D", *([group] if group else [])]
    parts_by = (
        {"all": final} if group is None else {f"{group}={v}": p for (v,), p in final.drop_nulls(group).group_by(group)}
    )
    fitted = {}
    for label, part in sorted(parts_by.items()):
        law = b.attempt(f"loss law {label}", partial(fit_loss_law, part, bootstrap=bootstrap, seed=seed, by=keys))
        if law is None:
            continue
        fitted[label] = law
        p = law.params
        parts.append(f"<h3>{_esc(label)}</h3>" if group else "")
        parts.append(
            f"<p><code>L = {p['E']:.4g} + {p['A']:.4g} / N^{p['alpha']:.4f} + {p['B']:.4g} / D^{p['beta']:.4f}"
            "</code></p>"
        )
        parts.append(H.table(law.to_polars(), headers={"lo": "2.5%", "hi": "97.5%"}))
        fig = b.attempt("loss law figure", partial(plots.loss_law, part, law, by=keys))
        if fig is not None:
            parts.append(_figure(fig, f"the loss law {label}"))
    b.report.objects["loss_law"] = next(iter(fitted.values()), None)
    if not fitted:
        parts.append("<p>No loss law could be fitted: see Notes.</p>")
    b.add("loss-law", "Loss law", *parts)


def _landscapes(b: _Builder, final: pl.DataFrame, cells: pl.DataFrame, max_landscapes: int) -> None:
    from . import plots

    keys = cells.columns[1 : cells.columns.index("runs")]
    law = b.report.objects.get("laws") or {}
    compare = {name: b_law for name, b_law in _published(b).items()}
    ranked = cells.sort("runs", descending=True)
    drawn, rest = ranked.head(max_landscapes).sort(keys), ranked.slice(max_landscapes).sort(keys)
    figs = []
    for cell in drawn.iter_rows(named=True):
        own = _own_law(law, cell)
        fig = b.attempt(
            "landscape",
            partial(plots.landscape, final, {k: cell[k] for k in keys}, laws={**own, **compare}),
        )
        if fig is not None:
            anchor = _cell_anchor(cell, keys)
            figs.append(
                f'<figure id="landscape-{anchor}">{_figure(fig, "landscape " + anchor)}'
                f'<figcaption class="note"><a href="#{anchor}">row in the cells table</a></figcaption></figure>'
            )
    parts = [
        f"<p>{len(drawn)} of {len(cells)} cells"
        + ("" if rest.is_empty() else f" (the {len(drawn)} with the most runs)")
        + ": loss above the cell's best over its lr x batch grid, contours at +0.125% to +2%, the best run (star), "
        "the quadratic vertex with its 95% interval (diamond), diverged runs (crosses) and each law's prediction "
        "(hollow markers, named with their values below each figure).</p>",
        '<div class="figs">' + "".join(figs) + "</div>",
    ]
    if not rest.is_empty():
        items = []
        for cell in rest.iter_rows(named=True):
            spec = ",".join(f"{k}={cell[k]}" for k in keys)
            items.append(
                f'<li><a href="#{_cell_anchor(cell, keys)}">{_esc(spec)}</a>: '
                f"<code>steplaw-db plot landscape --cell {_esc(spec)} --law all -o cell.png</code></li>"
            )
        parts.append(f"<p>The other {len(rest)} cells (their rows, and the command that draws each):</p>")
        parts.append("<ul>" + "".join(items) + "</ul>")
    b.add("landscapes", "Landscapes", *parts)


def _published(b: _Builder) -> dict[str, Any]:
    from . import laws as published

    names = b.report.settings.get("laws") or []
    out = {}
    for n in names:
        try:
            out[n] = published.get(n)
        except InvalidArgumentError:
            continue
    return out


def _own_law(laws: Mapping[str, Any], cell: Mapping[str, Any]) -> dict[str, Any]:
    """The fitted law that covers ``cell``: its group's, or the one law."""
    if "fitted" in laws:
        return {"fitted": laws["fitted"]}
    for label, law in laws.items():
        key, _, value = label.partition("=")
        if str(cell.get(key)) == value:
            return {"fitted": law}
    return {}


def _curves(b: _Builder, final: pl.DataFrame, cells: pl.DataFrame, points: Callable[[list[int]], pl.DataFrame]) -> None:
    """The best run of each cell, one figure per model size N (its D cells as lines)."""
    from . import plots
    from .optima import assign_cells

    if "run_id" not in final.columns:
        return
    keys = list(cells.columns[1 : cells.columns.index("runs")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cells' notes were issued by optima
        assigned = assign_cells(final.filter(pl.col("loss").is_finite()), keys).frame
    best = assigned.sort("loss").group_by("cell", maintain_order=True).head(CURVES_PER_CELL)
    best = best.sort(keys).head(MAX_CURVE_CELLS * CURVES_PER_CELL)
    figs = []
    for (n,), part in best.group_by("N", maintain_order=True):
        ids = [int(i) for i in part["run_id"]]
        pts = b.attempt("curves", partial(points, ids))
        if pts is None or pts.is_empty():
            continue
        names = {
            int(r["run_id"]): f"{r.get('name') or r['run_id']} ({_cell_text(r, keys)})"
            for r in part.iter_rows(named=True)
        }
        fig = b.attempt("curves", partial(plots.curves, pts, final=part, names=names))
        if fig is not None:
            figs.append(_figure(fig, f"loss curves N={n}"))
    if not figs:
        b.report.notes.append("curves: no run of the best ones has a loss curve in the store (summary-only runs)")
        return
    b.add(
        "curves",
        "Loss curves of the best runs",
        f"<p>The best run of each cell (lowest final loss), one figure per model size N; {len(best)} runs.</p>",
        '<div class="figs">' + "".join(figs) + "</div>",
    )


def _predictions(b: _Builder, pairs: Sequence[tuple[float, float]], compare: Mapping[str, Any]) -> None:
    from .optima import DEFAULT_SEQ_LEN

    laws = {**(b.report.objects.get("laws") or {}), **compare}
    rows = []
    for n, d in pairs:
        for name, law in laws.items():
            try:
                p = law.predict(N=n, D=d, interval=0.95).row(0, named=True)
            except Exception as e:  # a law that needs another input (a loss value)
                rows.append({"N": float(n), "D": float(d), "law": name, "note": " ".join(str(e).split())})
                continue
            bs = p.get("bs_tokens")
            rows.append(
                {
                    "N": float(n),
                    "D": float(d),
                    "law": name,
                    "lr [95%]": H.interval(p.get("lr"), p.get("lr_lo"), p.get("lr_hi"), "lr"),
                    "batch [95%]": H.interval(bs, p.get("bs_tokens_lo"), p.get("bs_tokens_hi"), "tokens"),
                    "batch (seq)": None
                    if bs is None
                    else f"{bs / DEFAULT_SEQ_LEN:,.1f} ≈ {round(bs / DEFAULT_SEQ_LEN):,}",
                    "note": "",
                }
            )
    df = pl.DataFrame(rows, infer_schema_length=None)
    b.report.objects["predictions"] = df
    b.add(
        "predictions",
        "Predictions for planned runs",
        f'<p class="note">Each law at the given (N, D); sequences of {DEFAULT_SEQ_LEN} tokens; intervals from '
        "the fitted laws' bootstrap draws (published laws have none, or their authors' own draws).</p>",
        H.table(df),
    )


def _stability(b: _Builder, stab: Any) -> None:
    from . import plots

    loco = stab.loco
    parts = [
        '<p class="note">The reference fit is the law above (same cells, method, resamples and seed). Verdict '
        "per coefficient: <b>stable</b> when no analysis choice (near-optimal threshold 0.1%-1%, grid rule vs "
        "quadratic vertex) moves it by 2 bootstrap SDs or more; <b>not identified</b> when most cells have that "
        "optimum on the grid's edge, too few cells or a constant regressor.</p>",
        H.table(stab.verdicts),
    ]
    if len(loco):
        parts.append("<h3>Leave one cell out</h3>")
        parts.append(
            '<p class="note">The law refitted without each cell, its prediction for the cell against the cell\'s '
            "best run (log ratios) and the loss penalty there (nearest run).</p>"
        )
        parts.append(H.table(loco, max_rows=60))
    fig = b.attempt("stability figure", lambda: plots.stability(stab))
    if fig is not None:
        parts.append(_figure(fig, "stability"))
    b.add("stability", "Stability", *parts)


def _groups_section(b: _Builder, final: pl.DataFrame, stab: Any, group: str) -> None:
    """Recipes (designs) side by side: each group's coefficients with intervals, the
    differences with their test, and the cells of each."""
    title = "Recipes" if group == "recipe" else f"Designs ({group})"
    coef = stab.coefficients
    wide = None
    for g in coef["group"].unique(maintain_order=True).to_list():
        part = coef.filter(pl.col("group") == g)
        shown = part.select(
            "name",
            pl.struct("estimate", "lo", "hi")
            .map_elements(lambda r: H.interval(r["estimate"], r["lo"], r["hi"]), return_dtype=pl.String)
            .alias(f"{group}={g} [95%]"),
        )
        wide = shown if wide is None else wide.join(shown, on="name", how="full", coalesce=True, maintain_order="left")
    parts = [
        f"<p>The law of each {_esc(group)} side by side (the fits of the law section), then each pair's "
        "difference with its 95% interval and test, then the cells of each.</p>",
        H.table(wide) if wide is not None else "",
    ]
    diff = stab.differences
    if len(diff):
        parts.append("<h3>Differences</h3>")
        if {"difference_lo", "difference_hi"} <= set(diff.columns):
            diff = diff.with_columns(
                pl.struct("difference", "difference_lo", "difference_hi")
                .map_elements(
                    lambda r: H.interval(r["difference"], r["difference_lo"], r["difference_hi"]),
                    return_dtype=pl.String,
                )
                .alias("difference [95%]")
            )
        shown = ["group_a", "group_b", "name", "cells_a", "cells_b", "difference [95%]", "difference", "se", "p",
                 "p_bootstrap", "verdict", "differ", "reason"]  # fmt: skip
        if "difference [95%]" in diff.columns:
            shown.remove("difference")
        parts.append(H.table(diff, shown))
    cells = b.report.objects.get("cells")
    if cells is not None and group in cells.columns:
        parts.append("<h3>Cells of each</h3>")
        keep = [group, "N", "D", "runs", "loss_min", "lr_grid", "bs_tokens_grid", "optimum", "flags"]
        parts.append(
            H.table(cells.sort(group, "N", "D"), keep, headers={"loss_min": "best loss", "lr_grid": "best lr",
                                                                "bs_tokens_grid": "best batch"})
        )  # fmt: skip
    b.add("groups", title, *parts)


def _reproduce(b: _Builder, command: str | None) -> None:
    from importlib import metadata

    versions = {"steplaw-db": _version(), "python": platform.python_version()}
    for dist in ("polars", "numpy", "scipy", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    cmd = (
        command
        if command is not None
        else " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    )
    s = b.report.settings
    settings = pl.DataFrame({"setting": list(s.keys()), "value": [str(v) for v in s.values()]})
    b.add(
        "reproduce",
        "Reproduce",
        f"<p>Command line: <code>{_esc(cmd)}</code></p>",
        f"<p>Built {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.</p>",
        H.table(settings),
        H.table(pl.DataFrame({"package": list(versions.keys()), "version": list(versions.values())})),
    )


def _version() -> str:
    try:
        from ._native import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - the extension is always there when this runs
        return "unknown"


def build_report(final: pl.DataFrame, **kwargs: Any) -> str:
    """The report as an HTML string: :func:`build`'s page."""
    return build(final, **kwargs).html()


def write_report(path: str | os.PathLike[str], final: pl.DataFrame, **kwargs: Any) -> str:
    """Write :func:`build`'s page to ``path``; returns the path."""
    return build(final, **kwargs).write(path)
