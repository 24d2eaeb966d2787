"""How stable is a fitted hyperparameter law? Across groups (data recipes, MoE designs, model
shapes), left-out cells, and analysis choices (near-optimal threshold, smoothing, optimum
method).

A synthetic sweep that follows Step Law's law (three model sizes at three budgets): every
coefficient of the law fitted on it should be stable across the analysis choices.

>>> import tempfile
>>> import steplaw_db as sl
>>> tmp = tempfile.TemporaryDirectory()
>>> shapes = ((960, 9368, 15, 7), (1280, 9472, 10, 10), (2048, 8192, 16, 16))  # h, ffnh, numh, numl
>>> cells = [(*shape, D) for shape in shapes for D in (1e10, 3e10, 1e11)]
>>> truth = sl.synth.write_sweep(f"{tmp.name}/runs", cells=cells, points=50)
>>> db = sl.open(f"{tmp.name}/steplaw.db")
>>> db.ingest(f"{tmp.name}/runs").added
315
>>> report = sl.stability(db.final_losses(), bootstrap=200)  # by="recipe" would compare recipes too
>>> report.verdicts.select("name", "verdict").rows()
[('lr_intercept', 'stable'), ('lr_coefN', 'stable'), ('lr_coefD', 'stable'), ('bs_intercept', 'stable'),
 ('bs_coefD', 'stable')]
>>> tmp.cleanup()
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from ._html import stability_html
from ._typing import LawMethod, OptimumMethod, as_float
from .errors import InvalidArgumentError
from .optima import CELL_KEYS, DEFAULT_THRESHOLD, assign_cells, edge_notes, is_edge_bound, optima, warn

if TYPE_CHECKING:
    from .laws import HparamLaw

# The fits (numpy, the Rust core's fitting engine) are imported where they run: this module
# is imported with the package (``steplaw_db.stability`` is the function, not this module).

#: Near-optimal thresholds of the sensitivity table (0.1% to 1%).
THRESHOLDS = (0.001, 0.0025, 0.005, 0.01)
#: A coefficient is "stable" across analysis choices when they move it by less than this many
#: bootstrap SDs of the reference fit.
STABLE_SDS = 2.0
#: Group differences are reported significant below this p-value.
ALPHA = 0.05


@dataclass
class StabilityReport:
    """The stability benchmark's tables (all Polars DataFrames).

    - ``coefficients``: per group and coefficient, the reference fit's estimate, bootstrap SD
      and 95% interval;
    - ``differences``: per pair of groups and coefficient, the difference, its bootstrap SE,
      whether the 95% intervals overlap, a bootstrap z-test p-value, and ``differ``;
    - ``loco``: leave-one-cell-out: per group and cell, the law refitted without the cell,
      its prediction for the cell against the cell's own optimum (log ratios of lr and
      batch) and the loss penalty on the cell's landscape (nearest grid point);
    - ``sensitivity``: per analysis choice (threshold, smoothing, method) and coefficient,
      the estimate and SD;
    - ``verdicts``: per group and coefficient, ``stable``/``unstable``/``not identified``
      (most cells' optimum of that target on the grid's edge) with the figures it rests on
      (``cells``, ``edge_cells``);
    - ``draws``: the reference fit's bootstrap draws, one row per group and draw, one column
      per coefficient (the distributions behind the intervals).
    """

    coefficients: pl.DataFrame
    differences: pl.DataFrame
    loco: pl.DataFrame
    sensitivity: pl.DataFrame
    verdicts: pl.DataFrame
    draws: pl.DataFrame
    _repr_html_ = stability_html  # a notebook's view

    def summary(self) -> str:
        with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=200, float_precision=4):
            parts = [
                "coefficients:", str(self.coefficients),
                "group differences:", str(self.differences) if len(self.differences) else "(one group)",
                "leave-one-cell-out (median over cells):", str(_loco_summary(self.loco)),
                "verdicts:", str(self.verdicts),
            ]  # fmt: skip
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.summary()


def _loco_summary(loco: pl.DataFrame) -> pl.DataFrame:
    if loco.is_empty():
        return loco
    return loco.group_by("group", maintain_order=True).agg(
        pl.len().alias("cells"),
        pl.col("lr_log_error").abs().median().alias("median_abs_lr_log_error"),
        pl.col("bs_log_error").abs().median().alias("median_abs_bs_log_error"),
        pl.col("loss_penalty").median().alias("median_loss_penalty"),
        pl.col("loss_penalty").max().alias("max_loss_penalty"),
    )


def _fit(
    final: pl.DataFrame, method: OptimumMethod, threshold: float, bootstrap: int, seed: int, cells: Sequence[str]
) -> HparamLaw:
    """The law by one analysis choice: Step Law's near-optimal rows (``grid``) or one
    quadratic vertex per cell weighted by its precision (``quadratic``), as
    :func:`steplaw_db.fit.fit_law` fits them."""
    from .fit import fit_law

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cells' notes are issued once, by stability(); fits are judged by SDs
        how: LawMethod = "steplaw" if method == "grid" else "quadratic"
        return fit_law(final, how, by=cells, threshold=threshold, bootstrap=bootstrap, seed=seed, resample="rows")


def _coef_table(law: HparamLaw) -> pl.DataFrame:
    return law.to_polars().select("name", "estimate", "sd", "lo", "hi")


def _groups(final: pl.DataFrame, by: str | None) -> dict[str, pl.DataFrame]:
    if by is None:
        return {"all": final}
    if by not in final.columns:
        raise InvalidArgumentError(f"no column '{by}' to group by (columns: {final.columns})")
    out = {}
    for (value,), g in final.group_by(by, maintain_order=True):
        out[str(value)] = g
    return dict(sorted(out.items()))


def stability(
    final: pl.DataFrame | Mapping[str, pl.DataFrame],
    by: str | None = None,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    methods: Sequence[OptimumMethod] = ("grid", "quadratic"),
    threshold: float = DEFAULT_THRESHOLD,
    bootstrap: int = 1000,
    loco: bool = True,
    seed: int = 42,
    cells: Sequence[str] = CELL_KEYS,
    method: LawMethod = "steplaw",
) -> StabilityReport:
    """Run the stability benchmark of the lr/batch law.

    ``final``: a final-loss frame (``Store.final_losses()``), or a mapping from smoothing
    name to final-loss frames of the same runs (e.g. ``{m: db.final_losses(m) for m in
    ("robust", "steplaw")}``) to add smoothing to the sensitivity table; the first one is the
    reference. ``by``: a column that splits the runs into groups (``recipe``, a MoE design, a
    shape tag) or None; the cells are keyed by ``cells`` (and ``by``), as
    :func:`steplaw_db.optima.assign_cells` makes them. The reference fit is ``method``'s
    (:func:`steplaw_db.fit.fit_law`: ``"steplaw"``, near-optimal rows at ``threshold``, the
    procedure whose stability the benchmark was built to question, or ``"quadratic"``, each
    cell's vertex: its SDs are several times smaller, so the threshold variants of the
    sensitivity table, which move the paper's law, read as unstable against it), with
    ``bootstrap`` resamples; leave-one-cell-out refits it without each cell.

    A coefficient's verdict is ``stable`` when every analysis choice (thresholds, smoothing
    modes, methods) moves it by less than ``STABLE_SDS`` bootstrap SDs of the reference fit,
    else ``unstable``; ``not identified`` when most of the group's cells have that target's
    grid minimum on the grid's edge (warned, one line per group and target, as every fit
    does); the verdict table gives the range, the SD, the ratio and the edge counts.
    """
    frames = dict(final) if isinstance(final, Mapping) else {"reference": final}
    if not frames:
        raise InvalidArgumentError("no final-loss frame given")
    for m in methods:
        if m not in ("grid", "quadratic"):
            raise InvalidArgumentError(f"unknown optimum method {m!r} (grid, quadratic)")
    if method not in ("quadratic", "steplaw"):
        raise InvalidArgumentError(f"unknown method {method!r} (quadratic, steplaw)")
    reference_name = next(iter(frames))
    cells = list(cells)
    warn(assign_cells(frames[reference_name], [*cells, *([by] if by and by not in cells else [])]).notes)
    groups = _groups(frames[reference_name], by)
    reference: OptimumMethod = "grid" if method == "steplaw" else "quadratic"

    # sensitivity: every threshold (x smoothing) for the grid rule, every smoothing for the vertex
    settings: list[tuple[OptimumMethod, float | None]] = [("grid", t) for t in thresholds if "grid" in methods]
    settings += [("quadratic", None)] if "quadratic" in methods else []

    coef_rows: list[pl.DataFrame] = []
    sens_rows: list[pl.DataFrame] = []
    loco_rows: list[dict[str, Any]] = []
    laws: dict[str, HparamLaw] = {}
    for g, df in groups.items():
        law = _fit(df, reference, threshold, bootstrap, seed, cells)
        laws[g] = law
        warn([n if by is None else f"{by}={g}: {n}" for n in edge_notes(law.info.get("edges"))])
        coef_rows.append(_coef_table(law).with_columns(group=pl.lit(g)))
        for smooth_name, frame in frames.items():
            gdf = frame if by is None else frame.filter(pl.col(by).cast(pl.String) == g)
            sens_rows += _sensitivity(gdf, g, smooth_name, settings, threshold, min(bootstrap, 200), seed, cells)
        if loco:
            loco_rows += _leave_one_cell_out(df, g, threshold, seed, cells, reference)

    coefficients = pl.concat(coef_rows).select("group", "name", "estimate", "sd", "lo", "hi")
    sensitivity = pl.concat(sens_rows).select("group", "smoothing", "method", "threshold", "name", "estimate", "sd")
    differences = _differences(laws, coefficients)
    loco_df = pl.DataFrame(loco_rows) if loco_rows else pl.DataFrame()
    draws = pl.concat([law.samples.with_columns(group=pl.lit(g)) for g, law in laws.items()], how="diagonal_relaxed")
    edges = {g: law.info.get("edges") or {} for g, law in laws.items()}
    verdicts = _verdicts(coefficients, sensitivity, edges)
    return StabilityReport(coefficients, differences, loco_df, sensitivity, verdicts, draws)


def _sensitivity(
    final: pl.DataFrame,
    group: str,
    smoothing: str,
    settings: Sequence[tuple[OptimumMethod, float | None]],
    threshold: float,
    bootstrap: int,
    seed: int,
    cells: Sequence[str],
) -> list[pl.DataFrame]:
    """One group's coefficients under each analysis choice (a threshold of the grid rule, or
    the vertex at ``threshold``) for one smoothing; a choice that cannot be fitted warns."""
    out = []
    for method, t in settings:
        try:
            fitted = _fit(final, method, t if t is not None else threshold, bootstrap, seed, cells)
        except InvalidArgumentError as e:
            warnings.warn(f"stability: group {group}, {smoothing}/{method}/{t}: {e}", stacklevel=3)
            continue
        out.append(
            _coef_table(fitted).with_columns(
                group=pl.lit(group),
                smoothing=pl.lit(smoothing),
                method=pl.lit(method),
                threshold=pl.lit(t, dtype=pl.Float64),
            )
        )
    return out


def _verdicts(
    coefficients: pl.DataFrame, sensitivity: pl.DataFrame, edges: Mapping[str, Mapping[str, Any]]
) -> pl.DataFrame:
    """Per group and coefficient: the range of the estimates over the analysis choices in
    reference-fit SDs, and ``stable`` when it is below ``STABLE_SDS``; ``not identified`` when
    most of the group's cells have that target's optimum on the grid's edge (the coefficient
    follows the grid, and every variant agrees because the edges do not move), whatever the
    range. ``cells`` and ``edge_cells`` give the counts."""
    rows = []
    for row in coefficients.iter_rows(named=True):
        counts = (edges.get(row["group"]) or {}).get(str(row["name"]).split("_", 1)[0]) or {}
        s = sensitivity.filter((pl.col("group") == row["group"]) & (pl.col("name") == row["name"]))
        low = as_float(s["estimate"].min()) if len(s) else None
        high = as_float(s["estimate"].max()) if len(s) else None
        spread = high - low if high is not None and low is not None else float("nan")
        ratio = spread / row["sd"] if row["sd"] else float("inf")
        rows.append(
            {
                "group": row["group"],
                "name": row["name"],
                "estimate": row["estimate"],
                "sd": row["sd"],
                "min": low,
                "max": high,
                "range_in_sds": ratio,
                "cells": counts.get("cells"),
                "edge_cells": counts.get("low", 0) + counts.get("high", 0) if counts else None,
                "verdict": "not identified"
                if is_edge_bound(counts)
                else "stable"
                if ratio < STABLE_SDS
                else "unstable",
            }
        )
    return pl.DataFrame(rows)


def _differences(laws: Mapping[str, HparamLaw], coefficients: pl.DataFrame) -> pl.DataFrame:
    """Per pair of groups and coefficient: the difference and a two-sided z-test on the
    bootstrap SDs (the groups' fits are independent). Groups "differ" when p < ALPHA and
    their 95% intervals do not overlap (a stricter test, about p < 0.006, so that five
    coefficients per pair rarely give a false alarm).

    A permutation test (groups' cells reassigned at random) was tried and left out: when the
    groups' laws do differ, halves that mix both laws' cells fit wildly steep or flat laws, so
    the permuted differences dwarf the real one and the test has no power."""
    rows: list[dict[str, Any]] = []
    names = coefficients["name"].unique(maintain_order=True).to_list()
    for ga, gb in itertools.combinations(laws, 2):
        ca, cb = laws[ga].coefficients(), laws[gb].coefficients()
        observed = {n: ca[n] - cb[n] for n in names}
        ta = coefficients.filter(pl.col("group") == ga)
        tb = coefficients.filter(pl.col("group") == gb)
        for n in names:
            a = ta.filter(pl.col("name") == n).row(0, named=True)
            b = tb.filter(pl.col("name") == n).row(0, named=True)
            se = math.hypot(a["sd"] or 0.0, b["sd"] or 0.0)
            z = observed[n] / se if se > 0 else float("inf")
            p_z = 1.0 - math.erf(abs(z) / math.sqrt(2.0))
            overlap = not (a["hi"] < b["lo"] or b["hi"] < a["lo"])
            rows.append(
                {
                    "group_a": ga,
                    "group_b": gb,
                    "name": n,
                    "difference": observed[n],
                    "se": se,
                    "intervals_overlap": overlap,
                    "p_bootstrap": p_z,
                    "differ": (p_z < ALPHA) and not overlap,
                }
            )
    return pl.DataFrame(rows)


def _leave_one_cell_out(
    df: pl.DataFrame, group: str, threshold: float, seed: int, cells: Sequence[str], method: OptimumMethod
) -> list[dict[str, Any]]:
    """Refit without each cell; predict its optimum; score the prediction on its landscape."""
    from .fit import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # issued once by stability()
        assigned = assign_cells(df, cells).frame
        cell_table = optima(assigned, by=cells, threshold=threshold)
    keys = cell_table.columns[1 : cell_table.columns.index("runs")]
    rows = []
    for cell in cell_table.iter_rows(named=True):
        rest = assigned.filter(pl.col("cell") != cell["cell"])
        held = assigned.filter(pl.col("cell") == cell["cell"])
        try:
            law = _fit(rest, method, threshold, 0, seed, cells)
        except InvalidArgumentError:
            continue  # without this cell the law is not identifiable (e.g. its N was unique)
        pred = law.predict(N=cell["N"], D=cell["D"], interval=None)
        lr_pred, bs_pred = pred["lr"].item(), pred["bs_tokens"].item()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scored = evaluate({"loco": law}, held, by=keys)
        rows.append(
            {
                "group": group,
                "cell": cell["cell"],
                **{c: cell[c] for c in keys},
                "lr_pred": lr_pred,
                "lr_opt": cell["lr_grid"],
                "lr_log_error": math.log(lr_pred / cell["lr_grid"]),
                "bs_pred": bs_pred,
                "bs_opt": cell["bs_tokens_grid"],
                "bs_log_error": math.log(bs_pred / cell["bs_tokens_grid"]),
                "loss_penalty": float(scored["rel_error"][0]),
            }
        )
    return rows
