"""HTML of the library's objects, for the report and for notebooks (``_repr_html_``): tables
whose numbers read as people write them (N ``214M``, D ``100B``, lr ``9.35e-4``, batch
``2M tokens``, ``0.25%``), flags as badges, and one small style sheet. No heavy import at
module level: the classes that call it are imported without polars' plotting or matplotlib.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._numbers import number, si  # noqa: F401  (si: report.py's H.si)

if TYPE_CHECKING:
    import polars as pl

#: The style shared by the report and the notebook views (scoped by ``.sldb``).
CSS = """
.sldb { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; }
.sldb table { border-collapse: collapse; font-size: .8em; margin: .4em 0; max-width: 100%; }
.sldb th, .sldb td { border: 1px solid #ddd; padding: 2px 5px; text-align: right; vertical-align: top;
  white-space: nowrap; }
.sldb td.text { white-space: normal; }
.sldb th { background: #f4f4f4; font-weight: 600; white-space: normal; }
.sldb td.text, .sldb th.text { text-align: left; }
.sldb .flag { display: inline-block; background: #fde8d8; color: #8a3300; border-radius: 3px; padding: 0 3px;
  margin: 1px; font-size: .9em; white-space: nowrap; }
.sldb .ok { color: #0a6b2d; font-weight: 600; } .sldb .bad { color: #b00020; font-weight: 600; }
.sldb .warn { color: #8a5a00; font-weight: 600; }
.sldb .note { color: #555; font-size: .85em; }
.sldb code { background: #f6f6f6; padding: 0 3px; border-radius: 3px; }
"""

_VERDICT_CLASS = {"stable": "ok", "unstable": "bad", "differs": "bad", "not identified": "warn"}


def esc(v: Any) -> str:
    """``v`` as text safe inside HTML."""
    return html.escape(str(v))


# ------------------------------------------------------------------------------ numbers


def fmt(column: str, v: Any) -> str:
    """One value of a table column, readable with its unit (the column name says which): a
    number as every table shows it (:func:`steplaw_db._numbers.number`, the CLI's rule too)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return number(column, v)
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(column, x) for x in v)
    return esc(v)


#: Column headers, with their unit where the name leaves it open and the cells do not say it:
#: N's cells read ``214M``; D's and a batch's carry theirs (``100B tokens``, ``2,440 seq``).
HEADERS = {
    "N": "N (params)",
    "bs_tokens": "batch",
    "bs": "batch",
    "lr": "lr",
    "rel_error": "loss error",
}


def table(
    df: pl.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    flags: Sequence[str] = ("flags",),
    verdict: Sequence[str] = ("verdict",),
    row_ids: Sequence[str] | None = None,
    max_rows: int | None = None,
) -> str:
    """A frame as an HTML table: readable numbers (:func:`fmt`), comma-separated ``flags``
    columns as badges, verdicts coloured; ``row_ids`` gives each row an ``id`` (links);
    ``max_rows`` shows the first rows and says how many more there are."""
    import polars as pl

    if columns is not None:
        df = df.select([c for c in columns if c in df.columns])
    names = {**HEADERS, **(headers or {})}
    shown = df if max_rows is None else df.head(max_rows)
    head = "".join(
        f'<th class="{"text" if df.schema[c] == pl.String else ""}">{esc(names.get(c, c))}</th>' for c in df.columns
    )
    body = []
    for i, row in enumerate(shown.iter_rows(named=True)):
        cells = []
        for c, v in row.items():
            if c in flags:
                text = "".join(f'<span class="flag">{esc(f)}</span>' for f in str(v or "").split(",") if f.strip())
                cells.append(f'<td class="text">{text}</td>')
            elif c in verdict and isinstance(v, str):
                cells.append(f'<td class="text {_VERDICT_CLASS.get(v, "")}">{esc(v)}</td>')
            else:
                cls = "text" if isinstance(v, str) else ""
                cells.append(f'<td class="{cls}">{fmt(c, v)}</td>')
        rid = f' id="{esc(row_ids[i])}"' if row_ids is not None and i < len(row_ids) else ""
        body.append(f"<tr{rid}>" + "".join(cells) + "</tr>")
    more = ""
    if max_rows is not None and len(df) > max_rows:
        more = f'<p class="note">the first {max_rows} of {len(df):,} rows</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def interval(v: Any, lo: Any, hi: Any, kind: str = "plain") -> str:
    """``3.3e-3 [2.9e-3, 3.8e-3]``: an estimate with its interval, one cell of a table (the
    unit, ``tokens``, once at the end: ``5M [4.1M, 6.2M] tokens``)."""
    column = {"lr": "lr", "tokens": "bs_tokens", "loss": "loss"}.get(kind, "x")
    if v is None:
        return ""
    text, unit = _unit_apart(fmt(column, v))
    if lo is not None and hi is not None:
        text += f" [{_unit_apart(fmt(column, lo))[0]}, {_unit_apart(fmt(column, hi))[0]}]"
    return f"{text} {unit}" if unit else text


def _unit_apart(cell: str) -> tuple[str, str]:
    """``("5M", "tokens")`` from ``5M tokens``; ``("9.35e-4", "")`` from a cell without a unit."""
    number_text, _, unit = cell.partition(" ")
    return number_text, unit


def wrap(body: str) -> str:
    """A fragment for a notebook: the style sheet and the content, scoped by ``.sldb``."""
    return f'<div class="sldb"><style>{CSS}</style>{body}</div>'


# ------------------------------------------------------------------------------ objects


def law_html(law: Any) -> str:
    """A hyperparameter law: its formula, then its coefficients with SD and interval."""
    head = f"<p><b>{esc(getattr(law, 'name', 'law'))}</b>: <code>{esc(law.describe())}</code></p>"
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in (law.edge_notes() if hasattr(law, "edge_notes") else []))
    if hasattr(law, "to_polars"):
        t = law.to_polars()
        keep = [c for c in ("target", "term", "estimate", "sd", "lo", "hi", "r2", "cells", "edge_low", "edge_high")]
        return wrap(head + notes + table(t, keep, headers={"lo": "2.5%", "hi": "97.5%"}))
    return wrap(head + notes)


def loss_law_html(law: Any) -> str:
    """A loss law: its formula and parameters with SD and interval."""
    p = law.params
    formula = f"L = {p['E']:.4g} + {p['A']:.4g} / N^{p['alpha']:.4f} + {p['B']:.4g} / D^{p['beta']:.4f}"
    t = law.to_polars()
    return wrap(
        f"<p><b>{esc(law.name)}</b>: <code>{esc(formula)}</code></p>"
        + table(t, headers={"lo": "2.5%", "hi": "97.5%"})
        + f'<p class="note">{len(law.samples)} bootstrap draws; {law.info.get("points", "?")} points</p>'
    )


def frames_html(title: str, frames: Mapping[str, pl.DataFrame], max_rows: int = 30) -> str:
    """Several named tables (a report object's), each cut at ``max_rows``."""
    parts = [f"<p><b>{esc(title)}</b></p>"]
    for name, df in frames.items():
        if df is None or not len(df):
            continue
        parts.append(f"<p>{esc(name)} ({len(df):,} rows)</p>" + table(df, max_rows=max_rows))
    return wrap("".join(parts))


def store_html(store: Any) -> str:
    """A store: path, version, runs by status, points."""
    import polars as pl

    runs = store.runs()
    parts = [f"<p><b>steplaw-db store</b> <code>{esc(store.path)}</code>, version {store.version}</p>"]
    if len(runs):
        counts = runs.group_by("status").len().sort("status")
        points = int(runs["n_points"].sum()) if "n_points" in runs.columns else None
        parts.append(
            f"<p>{len(runs):,} runs" + (f", {points:,} points" if points is not None else "") + "</p>"
            + table(counts.rename({"len": "runs"}))
        )  # fmt: skip
        recipes = runs["recipe"].drop_nulls().unique().sort().to_list() if "recipe" in runs.columns else []
        if recipes:
            parts.append(f"<p>recipes: {esc(', '.join(map(str, recipes)))}</p>")
        parts.append(
            table(runs.sort("run_id").drop([c for c in runs.columns if runs.schema[c] == pl.List]), max_rows=10)
        )
    else:
        parts.append("<p>no runs</p>")
    return wrap("".join(parts))


def ingest_html(report: Any) -> str:
    """An ingest report: its summary line(s)."""
    return wrap(f"<pre>{esc(report.summary())}</pre>")


def stability_html(report: Any) -> str:
    """A stability benchmark: its verdicts, group comparison, coefficients and leave-one-cell-out."""
    return frames_html(
        "stability benchmark",
        {
            "verdicts": report.verdicts,
            "group comparison": report.differences,
            "coefficients": report.coefficients,
            "leave one cell out": report.loco,
        },
    )
