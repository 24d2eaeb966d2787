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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

import polars as pl

from ._html import stability_html
from ._typing import DEFAULT_LAW_METHOD, LawMethod, OptimumMethod, as_float
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
      and 95% interval; a coefficient the group's cells could not fit has no numbers and a
      ``reason`` (too few cells, constant regressor, no quadratic, ...);
    - ``differences``: the comparison of the groups (:func:`compare`'s table): per pair of
      groups and coefficient, both estimates with their intervals, the difference with its
      95% interval, a z-test p-value and the verdict ``stable`` / ``differs`` /
      ``not identified`` with its ``reason``;
    - ``loco``: leave-one-cell-out: per group and cell, the law refitted without the cell,
      its prediction for the cell against the cell's own optimum (log ratios of lr and
      batch) and the loss penalty on the cell's landscape (nearest grid point);
    - ``sensitivity``: per analysis choice (threshold, smoothing, method) and coefficient,
      the estimate and SD;
    - ``verdicts``: per group and coefficient, ``stable`` / ``differs`` (an analysis choice
      moves it) / ``not identified`` (most cells' optimum of that target on the grid's edge, too
      few cells, a regressor that does not vary, no usable quadratic) with the figures it rests
      on (``max_z``, ``cells``, ``edge_cells``) and a ``reason``;
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

    def summary(self, render: Callable[[pl.DataFrame], str] = str) -> str:
        """The four tables under their titles; ``render`` draws each (the CLI's readable table)."""
        loco = _loco_summary(self.loco)
        with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=200, float_precision=4, fmt_str_lengths=120):
            parts = [
                "coefficients:", render(self.coefficients),
                "group comparison:", render(self.differences) if len(self.differences) else "(one group)",
                "leave-one-cell-out (median over cells):", render(loco) if len(loco) else "(none: too few cells)",
                "verdicts:", render(self.verdicts),
            ]  # fmt: skip
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.summary()


def _loco_summary(loco: pl.DataFrame) -> pl.DataFrame:
    if loco.is_empty() or "lr_log_error" not in loco.columns:
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


#: The coefficients of the default law (lr on N and D, batch on D): the rows of a group that
#: could not be fitted at all.
COEFFICIENTS = ("lr_intercept", "lr_coefN", "lr_coefD", "bs_intercept", "bs_coefD")

_COEF_SCHEMA = {
    "group": pl.String,
    "name": pl.String,
    "estimate": pl.Float64,
    "sd": pl.Float64,
    "lo": pl.Float64,
    "hi": pl.Float64,
    "cells": pl.Int64,
    "reason": pl.String,
}


def reason_kind(message: str) -> str:
    """What kind of failure a fit's refusal is, for the ``reason`` columns: ``too few cells``,
    ``constant regressor`` (or collinear regressors), ``no quadratic``, ``edge-bound``, or
    ``not fitted``, followed by the message itself."""
    m = message.lower()
    if "quadratic" in m and ("no cell" in m or "no usable" in m):
        kind = "no quadratic"
    elif "edge-bound" in m or "censored" in m:
        kind = "edge-bound"
    elif "same " in m or "spans only" in m or "collinear" in m or "do not vary" in m or "not identifiable" in m:
        kind = "constant regressor"
    elif "too few" in m or "only " in m or "no samples" in m or "no usable runs" in m or "at least" in m:
        kind = "too few cells"
    else:
        kind = "not fitted"
    return f"{kind}: {message}"


def _coef_table(law: HparamLaw | None, group: str, cells: int | None, failure: str | None) -> pl.DataFrame:
    """A group's coefficient rows: the law's, with the reason of any target it could not fit;
    a group without a law has every coefficient without numbers and ``failure`` as reason."""
    if law is None:
        rows = [{"group": group, "name": n, "cells": cells, "reason": failure} for n in COEFFICIENTS]
        return pl.DataFrame(rows, schema=_COEF_SCHEMA)
    t = law.to_polars()
    reason = pl.col("reason").map_elements(reason_kind, return_dtype=pl.String) if "reason" in t.columns else None
    return t.select(
        group=pl.lit(group),
        name="name",
        estimate="estimate",
        sd="sd",
        lo="lo",
        hi="hi",
        cells=pl.lit(cells, dtype=pl.Int64),
        reason=reason if reason is not None else pl.lit(None, dtype=pl.String),
    ).cast(_COEF_SCHEMA)  # type: ignore[arg-type]


def _groups(final: pl.DataFrame, by: str | None) -> dict[str, pl.DataFrame]:
    if by is None:
        return {"all": final}
    if by not in final.columns:
        raise InvalidArgumentError(f"no column '{by}' to group by (columns: {final.columns})")
    out = {}
    # runs without a value of ``by`` are in no group (assign_cells says how many, once)
    for (value,), g in final.drop_nulls(by).group_by(by, maintain_order=True):
        out[str(value)] = g
    return dict(sorted(out.items()))


def _cell_count(df: pl.DataFrame, cells: Sequence[str]) -> int | None:
    """How many cells a group's runs form (None when none can be formed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(assign_cells(df, cells).frame["cell"].n_unique())
    except InvalidArgumentError:
        return None


@dataclass
class _GroupFit:
    """One group's reference fit: the law (None when nothing could be fitted, ``failure`` says
    why), its cell count and edge counts."""

    law: HparamLaw | None
    cells: int | None
    failure: str | None

    @property
    def edges(self) -> Mapping[str, Any]:
        return (self.law.info.get("edges") or {}) if self.law is not None else {}


def _fit_groups(
    groups: Mapping[str, pl.DataFrame],
    method: LawMethod,
    threshold: float,
    bootstrap: int,
    seed: int,
    cells: Sequence[str],
    by: str | None,
) -> dict[str, _GroupFit]:
    """Every group's reference fit, as far as its cells allow: a group that cannot be fitted is
    kept with the reason (warned, one line), never an exception."""
    reference: OptimumMethod = "grid" if method == "steplaw" else "quadratic"
    out = {}
    for g, df in groups.items():
        n_cells = _cell_count(df, cells)
        try:
            law = _fit(df, reference, threshold, bootstrap, seed, cells)
        except InvalidArgumentError as e:
            failure = reason_kind(str(e))
            warn([f"{by}={g}: no law: {failure}" if by else f"no law: {failure}"])
            out[g] = _GroupFit(None, n_cells, failure)
            continue
        prefix = "" if by is None else f"{by}={g}: "
        warn([prefix + n for n in edge_notes(law.info.get("edges"))])
        warn([f"{prefix}no {k} law: {reason_kind(f['reason'])}" for k, f in (law.info.get("not_fitted") or {}).items()])
        out[g] = _GroupFit(law, n_cells, None)
    return out


def compare(
    final: pl.DataFrame,
    by: str = "recipe",
    *,
    method: LawMethod = DEFAULT_LAW_METHOD,
    threshold: float = DEFAULT_THRESHOLD,
    bootstrap: int = 1000,
    seed: int = 42,
    cells: Sequence[str] = CELL_KEYS,
) -> pl.DataFrame:
    """The law of each group of ``by`` (a data recipe, a MoE design) side by side: the table to
    cite when asking whether two recipes have the same lr / batch law.

    Each group's law is :func:`steplaw_db.fit.fit_law`'s (``method``, ``threshold``,
    ``bootstrap`` resamples, ``seed``) on its cells (keyed by ``cells`` and ``by``, as
    :func:`steplaw_db.optima.assign_cells` makes them). One row per pair of groups and
    coefficient: ``group_a``, ``group_b``, ``name``; ``cells_a`` / ``cells_b``; ``estimate_a``,
    ``lo_a``, ``hi_a`` and the same for b (95% bootstrap intervals); ``difference`` (a - b) with
    ``se`` (the two bootstrap SDs combined: the groups' fits are independent) and its 95%
    interval ``difference_lo`` / ``difference_hi``; ``p`` (two-sided z-test); ``verdict``:

    - ``differs``: p < ALPHA and the two 95% intervals do not overlap (a strict test, about
      p < 0.006, so that five coefficients a pair rarely give a false alarm);
    - ``stable``: the groups' coefficients are not told apart;
    - ``not identified``: a group could not fit that coefficient or most of its cells have
      that target's optimum on the grid's edge (the law follows the grid); ``reason`` says
      which group and why (too few cells, constant regressor, no quadratic, edge-bound).

    A group whose law cannot be fitted is warned and its rows say why; one group gives an
    empty table (with these columns). Also :attr:`StabilityReport.differences`.
    """
    if by not in final.columns:
        raise InvalidArgumentError(f"no column '{by}' to compare by (columns: {final.columns})")
    if method not in get_args(LawMethod):
        raise InvalidArgumentError(f"unknown method {method!r} ({', '.join(get_args(LawMethod))})")
    keyed = [*cells, *([by] if by not in cells else [])]
    warn(assign_cells(final, keyed).notes)
    fits = _fit_groups(_groups(final, by), method, threshold, bootstrap, seed, keyed, by)
    coefficients = pl.concat([_coef_table(f.law, g, f.cells, f.failure) for g, f in fits.items()])
    return _comparison(fits, coefficients)


_COMPARISON_SCHEMA = {
    "group_a": pl.String,
    "group_b": pl.String,
    "name": pl.String,
    "cells_a": pl.Int64,
    "cells_b": pl.Int64,
    "estimate_a": pl.Float64,
    "lo_a": pl.Float64,
    "hi_a": pl.Float64,
    "estimate_b": pl.Float64,
    "lo_b": pl.Float64,
    "hi_b": pl.Float64,
    "difference": pl.Float64,
    "se": pl.Float64,
    "difference_lo": pl.Float64,
    "difference_hi": pl.Float64,
    "p": pl.Float64,
    "verdict": pl.String,
    "reason": pl.String,
}


def _unidentified(fit: _GroupFit, row: Mapping[str, Any], group: str) -> str | None:
    """Why a group's coefficient is not identified (None when it is)."""
    if row.get("reason"):
        return f"{group}: {row['reason']}"
    if row.get("estimate") is None:
        return f"{group}: not fitted"
    target = str(row["name"]).split("_", 1)[0]
    counts = fit.edges.get(target) or {}
    if is_edge_bound(counts):
        [note] = edge_notes({target: counts})
        return f"{group}: edge-bound: {note}"
    return None


def _comparison(fits: Mapping[str, _GroupFit], coefficients: pl.DataFrame) -> pl.DataFrame:
    """:func:`compare`'s table from the groups' fits and their coefficient rows."""
    rows: list[dict[str, Any]] = []
    names = coefficients["name"].unique(maintain_order=True).to_list()
    for ga, gb in itertools.combinations(fits, 2):
        ta = {r["name"]: r for r in coefficients.filter(pl.col("group") == ga).iter_rows(named=True)}
        tb = {r["name"]: r for r in coefficients.filter(pl.col("group") == gb).iter_rows(named=True)}
        for n in names:
            a, b = ta.get(n, {"name": n, "reason": "not fitted"}), tb.get(n, {"name": n, "reason": "not fitted"})
            row: dict[str, Any] = {
                "group_a": ga,
                "group_b": gb,
                "name": n,
                "cells_a": fits[ga].cells,
                "cells_b": fits[gb].cells,
                **{f"{k}_a": a.get(k) for k in ("estimate", "lo", "hi")},
                **{f"{k}_b": b.get(k) for k in ("estimate", "lo", "hi")},
            }
            why = [w for w in (_unidentified(fits[ga], a, ga), _unidentified(fits[gb], b, gb)) if w]
            if a.get("estimate") is not None and b.get("estimate") is not None:
                diff = a["estimate"] - b["estimate"]
                se = math.hypot(a.get("sd") or 0.0, b.get("sd") or 0.0)
                z = diff / se if se > 0 else (math.inf if diff else 0.0)
                p = 1.0 - math.erf(abs(z) / math.sqrt(2.0))
                row.update(difference=diff, se=se, difference_lo=diff - 1.96 * se, difference_hi=diff + 1.96 * se, p=p)
                overlap = not (a["hi"] < b["lo"] or b["hi"] < a["lo"]) if None not in (a["hi"], b["lo"]) else True
                differs = p < ALPHA and not overlap
            else:
                differs = False
            row["verdict"] = "not identified" if why else "differs" if differs else "stable"
            row["reason"] = "; ".join(why) if why else None
            rows.append(row)
    return pl.DataFrame(rows, schema=_COMPARISON_SCHEMA)


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
    method: LawMethod = DEFAULT_LAW_METHOD,
) -> StabilityReport:
    """Run the stability benchmark of the lr/batch law.

    ``final``: a final-loss frame (``Store.final_losses()``), or a mapping from smoothing
    name to final-loss frames of the same runs (e.g. ``{m: db.final_losses(m) for m in
    ("robust", "steplaw")}``) to add smoothing to the sensitivity table; the first one is the
    reference. ``by``: a column that splits the runs into groups (``recipe``, a MoE design, a
    shape tag) or None; the cells are keyed by ``cells`` (and ``by``), as
    :func:`steplaw_db.optima.assign_cells` makes them. The reference fit is ``method``'s
    (:func:`steplaw_db.fit.fit_law`: ``"quadratic"``, each cell's vertex, the package's default
    law, or ``"steplaw"``, near-optimal rows at ``threshold``), with ``bootstrap`` resamples;
    leave-one-cell-out refits it without each cell.

    A coefficient's verdict is ``differs`` when two analysis choices (thresholds, smoothing
    modes, methods, the reference fit) put it ``STABLE_SDS`` or more apart in the larger of their
    two bootstrap SDs (each gap judged by the noisier estimate's precision, so the near-optimal
    procedure's scatter does not make the precise vertex law read as unstable; the verdict is
    the same whichever method is the reference), else ``stable``; ``not identified`` when the group's cells
    cannot fit it (too few cells, a constant regressor, no usable quadratic: ``reason``) or most
    of them have that target's grid minimum on the grid's edge (warned, one line per group and
    target, as every fit does). Groups are compared by :func:`compare`'s rule
    (``differences``). A group that cannot be fitted is reported, never an exception.
    """
    frames = dict(final) if isinstance(final, Mapping) else {"reference": final}
    if not frames:
        raise InvalidArgumentError("no final-loss frame given")
    for m in methods:
        if m not in ("grid", "quadratic"):
            raise InvalidArgumentError(f"unknown optimum method {m!r} (grid, quadratic)")
    if method not in get_args(LawMethod):
        raise InvalidArgumentError(f"unknown method {method!r} ({', '.join(get_args(LawMethod))})")
    reference_name = next(iter(frames))
    cells = list(cells)
    keyed = [*cells, *([by] if by and by not in cells else [])]
    warn(assign_cells(frames[reference_name], keyed).notes)
    groups = _groups(frames[reference_name], by)
    reference: OptimumMethod = "grid" if method == "steplaw" else "quadratic"

    # sensitivity: every threshold (x smoothing) for the grid rule, every smoothing for the vertex
    settings: list[tuple[OptimumMethod, float | None]] = [("grid", t) for t in thresholds if "grid" in methods]
    settings += [("quadratic", None)] if "quadratic" in methods else []

    fits = _fit_groups(groups, method, threshold, bootstrap, seed, cells, by)
    coef_rows: list[pl.DataFrame] = []
    sens_rows: list[pl.DataFrame] = []
    loco_rows: list[dict[str, Any]] = []
    for g, df in groups.items():
        fit = fits[g]
        coef_rows.append(_coef_table(fit.law, g, fit.cells, fit.failure))
        if fit.law is None:
            continue
        for smooth_name, frame in frames.items():
            gdf = frame if by is None else frame.filter(pl.col(by).cast(pl.String) == g)
            sens_rows += _sensitivity(gdf, g, smooth_name, settings, threshold, min(bootstrap, 200), seed, cells)
        if loco:
            loco_rows += _leave_one_cell_out(df, g, threshold, seed, cells, reference)

    coefficients = pl.concat(coef_rows)
    sens_cols = ["group", "smoothing", "method", "threshold", "name", "estimate", "sd"]
    sensitivity = (
        pl.concat(sens_rows, how="diagonal_relaxed").select(sens_cols)
        if sens_rows
        else pl.DataFrame(schema={**{c: pl.String for c in sens_cols[:3]}, "threshold": pl.Float64, "name": pl.String,
                                  "estimate": pl.Float64, "sd": pl.Float64})
    )  # fmt: skip
    differences = _comparison(fits, coefficients)
    loco_df = pl.DataFrame(loco_rows) if loco_rows else pl.DataFrame()
    samples = [f.law.samples.with_columns(group=pl.lit(g)) for g, f in fits.items() if f.law is not None]
    draws = pl.concat(samples, how="diagonal_relaxed") if samples else pl.DataFrame()
    verdicts = _verdicts(coefficients, sensitivity, fits)
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
            warn([f"stability: group {group}, {smoothing}/{method}/{t}: {e}"])
            continue
        out.append(
            fitted.to_polars()
            .filter(pl.col("estimate").is_not_null())
            .select("name", "estimate", "sd")
            .with_columns(
                group=pl.lit(group),
                smoothing=pl.lit(smoothing),
                method=pl.lit(method),
                threshold=pl.lit(t, dtype=pl.Float64),
            )
        )
    return out


_VERDICT_SCHEMA = {
    "group": pl.String,
    "name": pl.String,
    "estimate": pl.Float64,
    "sd": pl.Float64,
    "min": pl.Float64,
    "max": pl.Float64,
    "range_in_sds": pl.Float64,
    "max_z": pl.Float64,
    "cells": pl.Int64,
    "edge_cells": pl.Int64,
    "verdict": pl.String,
    "reason": pl.String,
}


def _moved(a: tuple[float, float | None], b: tuple[float, float | None]) -> float:
    """How far two analysis choices' estimates of a coefficient lie apart, in the larger of their
    two bootstrap SDs. Both are fits to the same runs, so their errors are correlated and the SD of
    the difference is near one fit's, not the two combined; the larger SD keeps a noisy procedure
    (the near-optimal rows, SDs 3-7x the vertex fit's on synthetic sweeps) from reading as a move
    of the precise one."""
    scale = max(a[1] or 0.0, b[1] or 0.0)
    gap = abs(a[0] - b[0])
    return gap / scale if scale > 0 else (math.inf if gap > 0 else 0.0)


def _verdicts(coefficients: pl.DataFrame, sensitivity: pl.DataFrame, fits: Mapping[str, _GroupFit]) -> pl.DataFrame:
    """Per group and coefficient: the range of the estimates over the analysis choices
    (``min``, ``max``, in reference-fit SDs ``range_in_sds``) and the largest gap between two
    choices (the reference fit among them) in the larger of their SDs (``max_z``, :func:`_moved`);
    ``differs`` when it reaches STABLE_SDS, else ``stable``; ``not identified``
    when the coefficient could not be fitted (``reason``) or most of the group's cells have
    that target's optimum on the grid's edge (every variant agrees because the edges do not
    move), whatever the range. ``cells`` and ``edge_cells`` give the counts."""
    rows = []
    for row in coefficients.iter_rows(named=True):
        fit = fits[row["group"]]
        counts = fit.edges.get(str(row["name"]).split("_", 1)[0]) or {}
        s = sensitivity.filter((pl.col("group") == row["group"]) & (pl.col("name") == row["name"]))
        low = as_float(s["estimate"].min()) if len(s) else None
        high = as_float(s["estimate"].max()) if len(s) else None
        est, sd = row["estimate"], row["sd"]
        spread = high - low if high is not None and low is not None else None
        ratio = (spread / sd if sd else math.inf) if spread is not None else None
        max_z = None
        if est is not None and len(s):
            choices = [(est, sd), *zip(s["estimate"], s["sd"], strict=True)]
            max_z = max(_moved(a, b) for a, b in itertools.combinations(choices, 2))
        why = _unidentified(fit, row, row["group"])
        verdict = "not identified" if why else "differs" if max_z is not None and max_z >= STABLE_SDS else "stable"
        rows.append(
            {
                "group": row["group"],
                "name": row["name"],
                "estimate": est,
                "sd": sd,
                "min": low,
                "max": high,
                "range_in_sds": ratio,
                "max_z": max_z,
                "cells": counts.get("cells", row.get("cells")),
                "edge_cells": counts.get("low", 0) + counts.get("high", 0) if counts else None,
                "verdict": verdict,
                "reason": why.split(": ", 1)[1] if why else None,
            }
        )
    return pl.DataFrame(rows, schema=_VERDICT_SCHEMA)


def _leave_one_cell_out(
    df: pl.DataFrame, group: str, threshold: float, seed: int, cells: Sequence[str], method: OptimumMethod
) -> list[dict[str, Any]]:
    """Refit without each cell; predict its optimum; score the prediction on its landscape.
    A cell without which the law cannot be fitted (its N was unique, say) is left out."""
    from .fit import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # issued once by stability()
        assigned = assign_cells(df, cells).frame
        try:
            cell_table = optima(assigned, by=cells, threshold=threshold)
        except InvalidArgumentError:
            return []
    keys = cell_table.columns[1 : cell_table.columns.index("runs")]
    rows = []
    for cell in cell_table.iter_rows(named=True):
        rest = assigned.filter(pl.col("cell") != cell["cell"])
        held = assigned.filter(pl.col("cell") == cell["cell"])
        try:
            law = _fit(rest, method, threshold, 0, seed, cells)
            if law.info.get("not_fitted"):
                continue  # half a law would be scored at the held-out cell's own best lr or batch
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scored = evaluate({"loco": law}, held, by=keys)
        except InvalidArgumentError:
            continue  # without this cell the law is not identifiable (e.g. its N was unique)
        pred = law.predict(N=cell["N"], D=cell["D"], interval=None)
        lr_pred = pred["lr"].item() if "lr" in pred.columns else None
        bs_pred = pred["bs_tokens"].item() if "bs_tokens" in pred.columns else None
        rows.append(
            {
                "group": group,
                "cell": cell["cell"],
                **{c: cell[c] for c in keys},
                "lr_pred": lr_pred,
                "lr_opt": cell["lr_grid"],
                "lr_log_error": math.log(lr_pred / cell["lr_grid"]) if lr_pred else None,
                "bs_tokens_pred": bs_pred,
                "bs_tokens_opt": cell["bs_tokens_grid"],
                "bs_log_error": math.log(bs_pred / cell["bs_tokens_grid"]) if bs_pred else None,
                "loss_penalty": float(scored["rel_error"][0]),
            }
        )
    return rows
