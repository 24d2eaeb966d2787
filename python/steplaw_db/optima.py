"""Cells of a sweep and their optima: which runs form a cell (:func:`assign_cells`, the one
definition every analysis uses), the grid minimum, the near-optimal set, the plateau, the
quadratic vertex and the landscape.

A *final-loss frame* (from :meth:`steplaw_db.Store.final_losses`, or any table with the same
columns) has one row per run with at least ``N``, ``D``, ``lr``, ``bs_tokens`` (or ``bs``) and
``loss``; ``status`` is used when present. A *cell* is one value of the ``by`` keys after their
numeric values are snapped to grid levels, split further by any design column that varies
inside it (see :func:`assign_cells`); every output names its cell in a ``cell`` column.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import polars as pl

from . import _native, fields
from ._typing import DesignPolicy, OptimumMethod, RunStatus, as_float
from .errors import InsufficientDataError, InvalidArgumentError, ParseError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike

    from ._native import _CellFit

    #: A cell's fitted landscape: ``(lr, bs_tokens) -> loss / min - 1`` (see :func:`quadratic_surface`).
    Surface: TypeAlias = Callable[[ArrayLike, ArrayLike], np.ndarray]

#: The Step Law rule: runs within 0.25% of their cell's minimum are near-optimal.
DEFAULT_THRESHOLD = 0.0025
#: Plateau bands reported by :func:`optima` (relative loss above the minimum).
PLATEAU_BANDS = (0.0025, 0.005, 0.01)
#: Values closer than this (relative) are one grid level (the public CSV has 0.000345 and
#: 0.0003453 for one LR); grid steps are usually factors of sqrt(2) or 2 apart.
LEVEL_TOLERANCE = 0.02
#: Runs within this relative loss of the minimum enter the quadratic fit; the window widens
#: (x2, x4) when it holds too few levels to identify the quadratic.
FIT_WINDOW = 0.02
#: Sequence length assumed when a table gives the batch in sequences and no ``seq_len``.
DEFAULT_SEQ_LEN = fields.DEFAULT_SEQ_LEN
#: Statuses left out of optima unless asked for.
EXCLUDED = ("diverged", "incomplete")


def _keys(by: str | Sequence[str]) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def _check_columns(final: pl.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in final.columns]
    if missing:
        raise InvalidArgumentError(f"final-loss frame has no column(s) {missing} (columns: {final.columns})")


def with_bs_tokens(df: pl.DataFrame, seq_len: int | None = DEFAULT_SEQ_LEN) -> pl.DataFrame:
    """``df`` with a ``bs_tokens`` column: as it is when it has one, else ``bs`` (sequences)
    times its ``seq_len`` column, or times ``seq_len`` when it has none (None: it must)."""
    if "bs_tokens" in df.columns:
        return df
    if "bs" in df.columns and ("seq_len" in df.columns or seq_len is not None):
        seq = pl.col("seq_len") if "seq_len" in df.columns else pl.lit(seq_len)
        return df.with_columns(bs_tokens=pl.col("bs") * seq)
    raise InvalidArgumentError("the frame needs a 'bs_tokens' column (or 'bs' in sequences and 'seq_len')")


def in_cell(cell: Mapping[str, object], tolerance: float = LEVEL_TOLERANCE) -> pl.Expr:
    """The rows of one cell: numeric keys within ``tolerance`` (relative) of the cell's
    value (keys are snapped to grid levels that close), other keys equal."""
    return pl.all_horizontal(
        [
            (pl.col(k) - v).abs() <= tolerance * abs(v) if isinstance(v, (int, float)) else pl.col(k) == v
            for k, v in cell.items()
        ]
    )


#: The columns a final-loss table must have for the lr / batch analyses.
FINAL_TABLE_COLUMNS = ("N", "D", "lr", "bs_tokens", "loss")
#: The columns of a final-loss table that hold numbers (where it has them).
_NUMERIC_TABLE_COLUMNS = ("N", "D", "lr", "bs", "bs_tokens", "seq_len", "steps", "loss", "raw_loss")


def _numbers(df: pl.DataFrame, path: str, first_line: int | None) -> pl.DataFrame:
    """``df`` with its numeric columns as numbers: a CSV reader reads a column as text when one
    value is not a number (``n/a``), or when the table has a header only; the first such value
    is an error naming its line (``first_line``: the line of row 0; None: a row number), an
    empty cell is a missing value."""
    for c in _NUMERIC_TABLE_COLUMNS:
        if c not in df.columns or df[c].dtype != pl.String:
            continue
        text = df[c].str.strip_chars()
        value = text.cast(pl.Float64, strict=False)
        bad = (value.is_null() & text.is_not_null() & (text != "")).arg_true()
        if len(bad):
            i = int(bad[0])
            where = f"{path}:{first_line + i}" if first_line is not None else f"{path}: row {i + 1}"
            raise ParseError(f"{where}: column {c}: {df[c][i]!r} is not a number ({len(bad)} such row(s))")
        df = df.with_columns(value.alias(c))
    return df


def read_final_table(
    path: str | os.PathLike[str], seq_len: int = DEFAULT_SEQ_LEN, required: Sequence[str] = FINAL_TABLE_COLUMNS
) -> pl.DataFrame:
    """A final-loss table from CSV, TSV or Parquet: columns ``N``, ``D``, ``lr``, ``loss`` and
    ``bs_tokens`` (or ``bs`` in sequences of ``seq_len``, a column or the argument, with a
    warning that it was assumed); ``required`` names the columns it must have (a loss-law table
    needs only N, D and loss). The public Step Law layout is recognised: ``smooth loss``
    becomes ``loss`` (their raw one ``raw_loss``), ``bs`` counts sequences of 2048,
    ``exp_name`` is the name."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"{path}: no such file")
    suffix = os.path.splitext(path)[1].lower()
    first_line = None  # parquet: rows are numbered, not lines
    if suffix == ".parquet":
        df = pl.read_parquet(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        df = pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10000)
        first_line = 2  # line 1 is the header
    else:
        raise InvalidArgumentError(f"{path}: expected a .csv, .tsv or .parquet final-loss table")
    if "smooth loss" in df.columns:
        df = df.rename({"loss": "raw_loss"} if "loss" in df.columns else {}).rename({"smooth loss": "loss"})
    if "exp_name" in df.columns and "name" not in df.columns:
        df = df.rename({"exp_name": "name"})
    df = _numbers(df, path, first_line)
    if "bs" in df.columns and "bs_tokens" not in df.columns:
        if "seq_len" not in df.columns:
            warn([f"{os.path.basename(path)}: the batch in tokens is bs x {seq_len} (no seq_len column; --seq-len)"])
        df = with_bs_tokens(df, seq_len)
    missing = [c for c in required if c not in df.columns]
    if missing:  # the file's content, not the command line: a table this is not (exit 1)
        raise ParseError(f"{path}: the final-loss table lacks {missing} (columns: {df.columns})")
    return df


def snap_levels(values: pl.Series, tolerance: float = LEVEL_TOLERANCE) -> pl.Series:
    """Map values within ``tolerance`` (relative, chained over sorted values) to one level:
    the most frequent value of the group (the smallest on ties). Nulls stay null."""
    return _snap(values.to_frame(), [], [values.name], tolerance)[values.name]


def _snap(df: pl.DataFrame, groups: Sequence[str], columns: Sequence[str], tolerance: float) -> pl.DataFrame:
    """:func:`snap_levels` of each of ``columns`` within each group of ``groups`` (all rows when
    empty), every group at once: the distinct (group, value) pairs sorted once, a new level
    wherever the group changes or the gap to the previous value exceeds the tolerance. (Snapping
    group by group cost a few small queries per group: at 9 cells, 4x the rest of ``optima``.)
    Nulls and NaNs stay as they are."""
    import numpy as np

    group_id = (
        df.select(pl.struct(groups).rank("dense")).to_series().to_numpy()
        if groups
        else np.zeros(df.height, dtype=np.int64)
    )
    out = []
    for c in columns:
        if c in groups:  # one value per group: nothing to snap
            continue
        col = df[c]
        kept = col.is_not_null() & (col.is_not_nan() if col.dtype.is_float() else True)
        rows = np.flatnonzero(kept.to_numpy())
        if not len(rows):
            continue
        values, gid = col.filter(kept).to_numpy(), group_id[rows]
        order = np.lexsort((values, gid))
        g, v = gid[order], values[order]
        starts = np.ones(len(v), dtype=bool)  # the first row of each distinct (group, value)
        starts[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
        pair_of_sorted = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        pg, pv = g[first], v[first]
        count = np.diff(np.append(first, len(v)))
        new_level = np.ones(len(pv), dtype=bool)
        new_level[1:] = (pg[1:] != pg[:-1]) | (np.abs(np.diff(pv)) > tolerance * np.abs(pv[:-1]))
        level = np.cumsum(new_level) - 1
        # each level's most frequent value, the smallest on ties (values ascend in a level)
        by_count = np.lexsort((-count, level))
        leader = by_count[np.flatnonzero(np.diff(np.append(-1, level[by_count])) > 0)]
        snapped = np.empty_like(values)
        snapped[order] = pv[leader][level][pair_of_sorted]
        out.append(col.scatter(rows, pl.Series(snapped, dtype=col.dtype)))
    return df.with_columns(out)


#: The keys of a cell unless told otherwise.
CELL_KEYS = ("N", "D")
#: Shape and data columns: runs that differ in one of them inside a snapped cell are different
#: designs (a MoE's experts, a model shape of nearly the same N, a data recipe).
SHAPE_COLUMNS = ("h", "ffnh", "numh", "numl", "n_experts", "top_k", "recipe", "seq_len")
#: Columns that describe one run or one measurement, never a design.
RUN_COLUMNS = frozenset(
    {
        "run_id", "name", "exp_name", "source", "format", "fingerprint", "status", "origin", "tags", "segment",
        "ingested_at", "cell", "lr", "bs", "bs_tokens", "steps", "ti", "lr_min", "loss", "raw_loss", "smooth loss",
        "smooth_loss", "final_loss", "step", "points_used", "n_points", "final_step", "n_malformed", "rel_loss",
        "N", "D", "C", "D/N", "tokens", "lr_level", "bs_level",
    }
)  # fmt: skip
#: ``--cell N=...,D=...`` picks the nearest cell whose numeric keys are all within this distance
#: in natural-log space (0.1: within about 10%).
CELL_TOLERANCE = 0.1
#: Columns that order a run's rows when a table holds several checkpoints of one run.
CHECKPOINT_ORDER = ("step", "current_steps", "tokens_seen", "tokens", "D")


class AnalysisWarning(UserWarning):
    """A choice the analysis made that changes what a number means: runs merged into one cell or a
    cell split by a design column, rows left out, a value assumed, a fit that is barely
    determined. One line each; the command line prints them, the report lists them."""


def warn(notes: Sequence[str], stacklevel: int = 3) -> None:
    """Issue each note as an :class:`AnalysisWarning`."""
    for note in notes:
        warnings.warn(note, AnalysisWarning, stacklevel=stacklevel)


@dataclass(frozen=True)
class CellAssignment:
    """Which cell every run belongs to (:func:`assign_cells`).

    ``frame``: the runs with their numeric keys snapped to levels, ``lr`` and ``bs_tokens``
    snapped to the cell's grid levels, and a ``cell`` label; ``keys``: the cell keys (the ``by``
    keys, then the design columns that split cells); ``split``: those design columns;
    ``spread``: per cell, the relative spread of the raw values of each numeric key
    (``<key>_spread``, 0 when the cell's runs agree exactly); ``notes``: one line per thing
    merged, split, assumed or left out."""

    frame: pl.DataFrame
    keys: tuple[str, ...]
    split: tuple[str, ...]
    spread: pl.DataFrame
    notes: tuple[str, ...]


def _fmt_value(v: object) -> str:
    """A key's value in a cell label: 4 significant digits (levels are >= 2% apart), small
    integers and text as they are."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return str(v) if isinstance(v, int) and abs(v) < 1_000_000 else f"{float(v):.4g}"


def _pct(x: float) -> str:
    return f"{x * 100:.2g}%"


def with_cell_label(df: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """``df`` with its ``cell`` label: ``N=2.147e+08,D=1e+11`` (and any design keys)."""
    unique = df.select(keys).unique(maintain_order=True)
    labels = [",".join(f"{k}={_fmt_value(v)}" for k, v in zip(keys, row, strict=True)) for row in unique.iter_rows()]
    unique = unique.with_columns(cell=pl.Series(labels, dtype=pl.String))
    return df.drop("cell", strict=False).join(
        unique, on=list(keys), how="left", nulls_equal=True, maintain_order="left"
    )


def last_checkpoints(df: pl.DataFrame, notes: list[str]) -> pl.DataFrame:
    """One row per run: a table holding several checkpoints of a run (rows sharing ``run_id``, or
    ``name`` with one configuration) keeps each run's last one, with a note; without a column
    that orders them the rows are refused."""
    name = next((c for c in ("name", "exp_name") if c in df.columns), None)
    if "run_id" in df.columns:
        ident = ["run_id"]
    elif name is not None:
        ident = [name, *[c for c in ("N", "lr", "bs_tokens", "recipe") if c in df.columns]]
    else:
        return df
    if df.select(ident).n_unique() == df.height:
        return df
    runs = df.select(ident).n_unique()
    order = next(
        (
            c
            for c in CHECKPOINT_ORDER
            if c in df.columns and df[c].dtype.is_numeric() and df.select([*ident, c]).n_unique() == df.height
        ),
        None,
    )  # the first column that tells every run's rows apart
    if order is None:
        raise InvalidArgumentError(
            f"{df.height} rows hold only {runs} runs ({', '.join(ident)} repeat) and no column orders them "
            f"({', '.join(CHECKPOINT_ORDER)}): give one row per run"
        )
    last = df.sort(order, nulls_last=False).unique(subset=ident, keep="last")
    last = last.sort("_row") if "_row" in last.columns else last
    notes.append(
        f"{df.height} rows are checkpoints of {runs} runs: each run's last checkpoint (largest {order}) is used, "
        f"{df.height - last.height} earlier ones are left out"
    )
    return last


def _is_design_dtype(dtype: pl.DataType) -> bool:
    return (
        dtype == pl.String or dtype == pl.Boolean or dtype.is_numeric() or isinstance(dtype, (pl.Categorical, pl.Enum))
    )


def _design_candidates(df: pl.DataFrame, keys: Sequence[str], designs: Sequence[str] | None) -> list[str]:
    """The columns that may tell designs apart: the shape columns, then every other configuration
    column (not one that describes a single run) unless ``designs`` names them."""
    if designs is not None:
        _check_columns(df, designs)
        return [c for c in designs if c not in keys]
    shape = [c for c in SHAPE_COLUMNS if c in df.columns and c not in keys]
    other = [
        c
        for c in df.columns
        if c not in keys and c not in shape and c not in RUN_COLUMNS and not c.startswith("_")
        and _is_design_dtype(df.schema[c])
    ]  # fmt: skip
    return [*shape, *sorted(other, key=lambda c: df.schema[c] != pl.String)]


def _max_within(df: pl.DataFrame, groups: Sequence[str], column: str) -> int:
    """The most distinct values (a null counts as one) ``column`` takes in one group."""
    if df.is_empty():
        return 0
    got = df.group_by(list(groups)).agg(pl.col(column).n_unique().alias("_n"))["_n"].max()
    return int(as_float(got))


def _splits_cells(df: pl.DataFrame, tkeys: Sequence[str], chosen: Sequence[str], column: str, shape: bool) -> bool:
    """Does ``column`` tell designs apart inside the tentative cells ``tkeys`` (given the columns
    ``chosen`` already)? A shape column when it varies; another column when it varies at one grid
    point (lr x batch) too, is not a label of single runs, and is not implied by ``chosen``."""
    if _max_within(df, [*tkeys, *chosen], column) < 2:
        return False  # constant inside every cell (or implied by the columns chosen)
    if shape:
        return True
    if _max_within(df, [*tkeys, "_lr", "_bs"], column) < 2:
        return False  # a function of the grid point (lr_min = lr / 10) or one run per point
    per_row = df.group_by(list(tkeys)).agg((pl.col(column).n_unique() == pl.len()).alias("_u"))["_u"].all()
    return not per_row


def _split_note(df: pl.DataFrame, tkeys: Sequence[str], keys: Sequence[str], column: str) -> str:
    mixed = df.group_by(list(tkeys)).agg(pl.col(column).n_unique().alias("_n")).filter(pl.col("_n") > 1)
    values = sorted({_fmt_value(v) for v in df[column].unique().to_list()})
    shown = ", ".join(values[:6]) + (f", ... ({len(values)} values)" if len(values) > 6 else "")
    return (
        f"{mixed.height} cell(s) of ({', '.join(keys)}) hold runs that differ in {column} ({shown}): "
        f"split by {column} (designs are never merged; by=... chooses the keys, designs=() turns splitting off)"
    )


def _spread(df: pl.DataFrame, numeric: Sequence[str]) -> pl.DataFrame:
    """Per cell, the relative spread (max / min - 1) of the raw values of each numeric key."""
    return df.group_by("cell", maintain_order=True).agg(
        [(pl.col(f"_raw_{k}").max() / pl.col(f"_raw_{k}").min() - 1.0).alias(f"{k}_spread") for k in numeric]
    )


def _merge_notes(
    df: pl.DataFrame, spread: pl.DataFrame, numeric: Sequence[str], grid: Sequence[str], tolerance: float
) -> list[str]:
    """One line per key (and for lr / batch) whose values differ inside a cell and were read as one level."""
    notes = []
    for k in numeric:
        s = spread.filter(pl.col(f"{k}_spread") > 0)
        if s.height:
            most = _pct(as_float(s[f"{k}_spread"].max()))
            notes.append(
                f"{k}: {s.height} cell(s) hold runs whose {k} differ (by up to {most}): "
                f"read as one level each (values within {tolerance:.0%} are one level)"
            )
    for col in grid:
        raw = f"_raw_{col}"
        merged = df.filter(pl.col(raw).is_not_null()).group_by("cell", col).agg(
            (pl.col(raw).max() / pl.col(raw).min() - 1.0).alias("_s")
        ).filter(pl.col("_s") > 0)  # fmt: skip
        if merged.height:
            notes.append(
                f"{col}: {merged['cell'].n_unique()} cell(s) hold values within {tolerance:.0%} of each other "
                f"(up to {_pct(as_float(merged['_s'].max()))} apart) read as one grid level"
            )
    return notes


def _mixed_recipe_note(df: pl.DataFrame, keys: Sequence[str]) -> list[str]:
    if "recipe" not in df.columns or "recipe" in keys:
        return []
    mixed = df.group_by("cell").agg(pl.col("recipe").n_unique().alias("_n")).filter(pl.col("_n") > 1)
    if mixed.is_empty():
        return []
    return [f"{mixed.height} cell(s) mix data recipes: their optima pool runs trained on different data"]


def require_values(df: pl.DataFrame, column: str) -> None:
    """Refuse to group the runs of ``df`` by a ``column`` that is empty (null) for all of them."""
    if df.height and df[column].null_count() == df.height:
        raise InsufficientDataError(f"column '{column}' is empty for all {df.height} runs: no value to group them by")


def assign_cells(
    final: pl.DataFrame,
    by: str | Sequence[str] = CELL_KEYS,
    *,
    level_tolerance: float = LEVEL_TOLERANCE,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
) -> CellAssignment:
    """Decide which cell every run of ``final`` belongs to: the one definition of a cell that
    :func:`optima`, :func:`near_optimal`, :func:`landscape`, :func:`cells`, ``evaluate``,
    ``stability``, the plots and the report share.

    1. A table that holds several checkpoints of a run keeps each run's last one (noted).
    2. Numeric ``by`` keys are snapped to levels (values within ``level_tolerance``, chained, are
       one level: ingested D = steps x batch differs by a few ppm across batch sizes).
    3. Designs are never merged: a shape column (h, ffnh, numh, numl, n_experts, top_k, recipe,
       seq_len) that varies inside a snapped cell, or another configuration column (a MoE's
       ``moe_name``, any promoted tag) that varies at one grid point, splits the cell
       (``on_design="split"``, noted) or stops with a message naming it (``"error"``).
       ``designs`` names the design columns instead (``()``: never split). The numeric keys
       are then snapped within each design, so each keeps its own N.
    4. ``lr`` and ``bs_tokens`` are snapped to grid levels within each cell.

    Rows without a positive value of a numeric key cannot be placed and are left out (noted).
    """
    keys = _keys(by)
    if not keys:
        raise InvalidArgumentError("a cell needs at least one key, e.g. by=('N', 'D')")
    if on_design not in ("split", "error"):
        raise InvalidArgumentError(f"on_design must be 'split' or 'error', got {on_design!r}")
    notes: list[str] = []
    if "bs_tokens" not in final.columns and "bs" in final.columns and "seq_len" not in final.columns:
        notes.append(f"the batch in tokens is bs x {DEFAULT_SEQ_LEN}: the frame gives no seq_len or bs_tokens")
    df = with_bs_tokens(final) if "bs" in final.columns else final
    _check_columns(df, keys)
    if df.is_empty():
        raise InsufficientDataError("no runs to form cells from")
    grid = [c for c in ("lr", "bs_tokens") if c in df.columns]  # a loss table may have neither
    df = last_checkpoints(df.with_row_index("_row"), notes)
    numeric = [k for k in keys if df.schema[k].is_numeric()]
    for k in keys:  # a key no run has a value of (a --by recipe on runs without one) places nothing
        require_values(df, k)
    text = [k for k in keys if k not in numeric]  # a run without a text key's value is in no cell (no "None" one)
    unnamed = df.height - df.drop_nulls(text).height if text else 0
    if unnamed:
        notes.append(f"{unnamed} run(s) have no {' or '.join(text)}: they belong to no cell and are left out")
        df = df.drop_nulls(text)
    placeable = pl.all_horizontal([pl.col(k).is_not_null() & (pl.col(k) > 0) for k in numeric] or [pl.lit(True)])
    dropped = df.height - df.filter(placeable).height
    if dropped:
        notes.append(f"{dropped} run(s) without a positive {' and '.join(numeric)} belong to no cell and are left out")
        df = df.filter(placeable)
    df = df.with_columns(**{f"_raw_{k}": pl.col(k) for k in [*numeric, *grid]})
    # tentative cells: the numeric keys snapped over all runs of each value of the other keys
    groups = [k for k in keys if k not in numeric]
    df = _snap(df, groups, numeric, level_tolerance)
    df = _snap(
        df.with_columns(
            _lr=pl.col("lr") if "lr" in grid else pl.lit(0.0),
            _bs=pl.col("bs_tokens") if "bs_tokens" in grid else pl.lit(0.0),
        ),
        keys,
        ["_lr", "_bs"],
        level_tolerance,
    )
    split: list[str] = []
    for c in _design_candidates(df, keys, designs):
        if _splits_cells(df, keys, split, c, shape=c in SHAPE_COLUMNS or designs is not None):
            split.append(c)
    if split and on_design == "error":
        raise InvalidArgumentError(
            "; ".join(_split_note(df, keys, keys, c).split(": split")[0] for c in split)
            + ": designs would be merged (by=... naming them, or on_design='split', keeps them apart)"
        )
    notes += [_split_note(df, keys, keys, c) for c in split]
    all_keys = [*keys, *split]
    if split:  # each design keeps its own levels
        df = _snap(
            df.with_columns(**{k: pl.col(f"_raw_{k}") for k in numeric}), [*groups, *split], numeric, level_tolerance
        )
    df = _snap(df, all_keys, grid, level_tolerance)
    df = with_cell_label(df, all_keys)
    spread = _spread(df, numeric)
    notes += _merge_notes(df, spread, numeric, grid, level_tolerance)
    notes += _mixed_recipe_note(df, all_keys)
    frame = df.sort("_row").drop([c for c in df.columns if c.startswith("_")])
    return CellAssignment(frame, tuple(all_keys), tuple(split), spread, tuple(notes))


def cells(
    final: pl.DataFrame,
    by: str | Sequence[str] = CELL_KEYS,
    *,
    loss: str = "loss",
    level_tolerance: float = LEVEL_TOLERANCE,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
) -> pl.DataFrame:
    """One row per cell (:func:`assign_cells`): ``cell``, the keys, ``runs``, runs by status
    (``complete``, ``diverged``, ``incomplete``, ``summary_only`` when a ``status`` column
    exists), ``with_loss`` (a finite ``loss``), the grid (``lr_levels`` x ``bs_levels``,
    ``grid_points`` measured), ``N_spread``/``D_spread`` (the raw values' relative spread
    read as one level) and ``flags``: ``split`` (a design column split the snapped cell),
    ``incomplete-grid`` (fewer grid points than lr x batch levels), ``repeated-points`` (more
    runs than grid points), ``few-runs`` (< 6 runs with a loss: no quadratic)."""
    a = assign_cells(final, by, level_tolerance=level_tolerance, designs=designs, on_design=on_design)
    warn(a.notes)
    df = a.frame
    keys = list(a.keys)
    has_loss = pl.col(loss).is_finite() & (pl.col(loss) > 0) if loss in df.columns else pl.lit(False)
    kinds = ("complete", "diverged", "incomplete", "summary-only")
    statuses = (
        [(pl.col("status") == s).sum().alias(s.replace("-", "_")) for s in kinds] if "status" in df.columns else []
    )
    table = (
        df.group_by("cell", maintain_order=True)
        .agg(
            *[pl.col(k).first() for k in keys],
            pl.len().alias("runs"),
            *statuses,
            has_loss.sum().alias("with_loss"),
            pl.col("lr").n_unique().alias("lr_levels"),
            pl.col("bs_tokens").n_unique().alias("bs_levels"),
            pl.struct("lr", "bs_tokens").n_unique().alias("grid_points"),
        )
        .join(a.spread, on="cell", how="left")
        .sort(keys, nulls_last=True)
    )
    flags = (
        pl.concat_list(
            pl.when(pl.lit(bool(a.split))).then(pl.lit("split")),
            pl.when(pl.col("grid_points") < pl.col("lr_levels") * pl.col("bs_levels")).then(pl.lit("incomplete-grid")),
            pl.when(pl.col("runs") > pl.col("grid_points")).then(pl.lit("repeated-points")),
            pl.when(pl.col("with_loss") < 6).then(pl.lit("few-runs")),
        )
        .list.drop_nulls()
        .list.join(",")
    )
    return table.with_columns(flags=flags)


def _distance(cell: Mapping[str, object], row: Mapping[str, object]) -> float:
    """Largest |ln(asked / cell)| over the numeric keys asked for (inf when a key differs)."""
    worst = 0.0
    for k, v in cell.items():
        have = row.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not isinstance(have, (int, float)) or have <= 0 or v <= 0:
                return math.inf
            worst = max(worst, abs(math.log(v / have)))
        elif str(have) != str(v):
            return math.inf
    return worst


def _distance_sum(cell: Mapping[str, object], row: Mapping[str, object]) -> float:
    return sum(_distance({k: v}, row) for k, v in cell.items())


def _label_keys(table: pl.DataFrame) -> list[str]:
    first = table["cell"][0] if "cell" in table.columns and table.height else ""
    return [part.split("=", 1)[0] for part in str(first).split(",") if "=" in part]


def find_cell(
    table: pl.DataFrame,
    cell: Mapping[str, object],
    *,
    keys: Sequence[str] | None = None,
    tolerance: float = CELL_TOLERANCE,
) -> dict[str, Any]:
    """The row of ``table`` (a :func:`cells` or :func:`optima` frame, keyed by ``keys``: by
    default those its ``cell`` labels name) nearest to ``cell`` (e.g. ``{"N": 2.1e8, "D":
    1e11}``): every numeric key within ``tolerance`` in natural-log space (0.1: about 10%),
    other keys equal. No cell that near is an error listing the nearest cells; several near
    ones that differ in a key ``cell`` does not give (designs of one N) an error listing them."""
    keys = list(keys) if keys is not None else _label_keys(table)
    unknown = [k for k in cell if k not in table.columns]
    if unknown:
        raise InvalidArgumentError(f"no cell key(s) {unknown}: the cells are keyed by {', '.join(keys)}")
    rows = table.to_dicts()
    # nearest by the largest log distance of a key, then by their sum
    scored = sorted(
        ((_distance(cell, r), _distance_sum(cell, r), i) for i, r in enumerate(rows)), key=lambda t: (t[0], t[1])
    )
    asked = ", ".join(f"{k}={_fmt_value(v)}" for k, v in cell.items())
    near = [i for d, _, i in scored if d <= tolerance]
    if not near:
        listed = "; ".join(
            f"{rows[i]['cell']} ({math.expm1(d):.0%} away)" if math.isfinite(d) else str(rows[i]["cell"])
            for d, _, i in scored[:5]
        )
        raise InsufficientDataError(
            f"no runs in a cell within {math.expm1(tolerance):.0%} of {asked} (log tolerance {tolerance:g}); "
            f"nearest cells: {listed}"
        )
    other = [k for k in keys if k not in cell]
    best = rows[near[0]]
    rivals = [i for i in near if any(rows[i][k] != best[k] for k in other)]
    if rivals:
        listed = "; ".join(str(rows[i]["cell"]) for i in [near[0], *rivals])
        raise InvalidArgumentError(
            f"{asked} matches {len(rivals) + 1} cells that differ in {', '.join(other)}: {listed}; "
            f"give {' or '.join(other)} too"
        )
    return best


def _prepare(
    final: pl.DataFrame,
    by: str | Sequence[str],
    loss: str,
    include: Sequence[RunStatus],
    level_tolerance: float,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
) -> tuple[pl.DataFrame, list[str]]:
    """Assign cells (warning what was merged or split), drop excluded and non-finite runs, add
    the relative loss; returns the runs and the cell keys."""
    _check_columns(with_bs_tokens(final), [loss])
    a = assign_cells(final, by, level_tolerance=level_tolerance, designs=designs, on_design=on_design)
    warn(a.notes, stacklevel=4)
    df = a.frame
    if "status" in df.columns:
        df = df.filter(~pl.col("status").is_in([s for s in EXCLUDED if s not in include]).fill_null(False))
    df = df.filter(pl.col(loss).is_finite() & (pl.col(loss) > 0) & (pl.col("lr") > 0) & (pl.col("bs_tokens") > 0))
    return df.with_columns((pl.col(loss) / pl.col(loss).min().over("cell") - 1.0).alias("rel_loss")), list(a.keys)


def near_optimal(
    final: pl.DataFrame,
    by: str | Sequence[str] = CELL_KEYS,
    threshold: float = DEFAULT_THRESHOLD,
    loss: str = "loss",
    *,
    include: Sequence[RunStatus] = (),
    level_tolerance: float = LEVEL_TOLERANCE,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
) -> pl.DataFrame:
    """The rows of ``final`` within ``threshold`` (relative) of their cell's minimum loss.

    This is the Step Law reference rule, ``|loss / min_loss - 1| < threshold`` per cell: every
    kept row is a regression sample of the reference fit. Cells are :func:`assign_cells`'s
    (``by``, ``designs``, ``on_design`` as there). Diverged and incomplete runs are left out
    (``include=("incomplete",)`` keeps those); rows with a non-finite loss never qualify. Keys,
    ``lr`` and ``bs_tokens`` come back snapped to their levels, with the ``cell`` label and
    ``rel_loss`` (loss / min - 1).
    """
    if threshold < 0:
        raise InvalidArgumentError(f"threshold must be >= 0, got {threshold}")
    df, _ = _prepare(final, by, loss, include, level_tolerance, designs, on_design)
    return df.filter(pl.col("rel_loss").abs() < threshold)


def _log_step(levels: list[float]) -> float | None:
    """The grid's step in natural-log space: the median ratio of neighbouring levels."""
    if len(levels) < 2:
        return None
    return float(sorted(math.log(b / a) for a, b in itertools.pairwise(levels))[(len(levels) - 2) // 2])


def edge_side(levels: list[float], value: float) -> str | None:
    """``low`` / ``high`` when ``value`` (a cell's grid minimum) is the grid's smallest / largest
    level: the optimum is a bound, not a measurement. None inside, or on a one-level grid."""
    if len(levels) < 2:
        return None
    return "low" if value <= levels[0] else "high" if value >= levels[-1] else None


#: What each target's edge is called in notes.
_EDGE_WORDS = {"lr": "lr", "bs": "batch"}


def edge_counts(table: pl.DataFrame) -> dict[str, dict[str, int]]:
    """How many of an :func:`optima` frame's cells have their grid minimum on the grid's edge, per
    target: ``{"lr": {"cells": 9, "low": 0, "high": 0}, "bs": {"cells": 9, "low": 7, "high": 0}}``
    (``low``: at the smallest level, the optimum is at most that; ``high``: at the largest)."""
    out = {}
    for target in ("lr", "bs"):
        col = f"{target}_edge"
        values = table[col].to_list() if col in table.columns else []
        out[target] = {"cells": table.height, "low": values.count("low"), "high": values.count("high")}
    return out


def is_edge_bound(counts: Mapping[str, int] | None) -> bool:
    """Most of a target's cells (``edge_counts(...)["bs"]``) have their optimum on the grid's
    edge: the law follows the grid, not the optima (bounded, not estimated)."""
    if not counts or not counts.get("cells"):
        return False
    return 2 * (int(counts.get("low", 0)) + int(counts.get("high", 0))) > int(counts["cells"])


def edge_notes(counts: Mapping[str, Mapping[str, int]] | None) -> list[str]:
    """One line per target with edge-bound cells, e.g. ``bs: 7 of 9 cells at the grid's smallest
    batch: the bs law is bounded, not estimated`` (when most cells are edge-bound; fewer: those
    cells' optimum is a bound)."""
    notes = []
    for target, c in (counts or {}).items():
        low, high, cells = int(c.get("low", 0)), int(c.get("high", 0)), int(c.get("cells", 0))
        if not (low or high) or not cells:
            continue
        word = _EDGE_WORDS.get(target, target)
        sides = [f"at the grid's {side} {word}" for n, side in ((low, "smallest"), (high, "largest")) if n]
        counts_ = [n for n in (low, high) if n]
        where = f"{counts_[0]} of {cells} cells {sides[0]}"
        if len(sides) > 1:
            where += f", {counts_[1]} at its largest"
        if is_edge_bound(c):
            verdict = f"the {target} law is bounded, not estimated"
        else:
            verdict = f"those cells' optimal {word} is a bound, not a measurement"
        notes.append(f"{target}: {where}: {verdict}")
    return notes


def _fmt_band(band: float) -> str:
    return f"{band * 100:g}%"


def optima(
    final: pl.DataFrame,
    by: str | Sequence[str] = ("N", "D"),
    threshold: float = DEFAULT_THRESHOLD,
    method: OptimumMethod = "quadratic",
    *,
    loss: str = "loss",
    include: Sequence[RunStatus] = (),
    fit_window: float = FIT_WINDOW,
    bootstrap: int = 200,
    seed: int = 42,
    level_tolerance: float = LEVEL_TOLERANCE,
    min_near_optimal: int = 3,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
) -> pl.DataFrame:
    """One row per cell: its grid minimum, near-optimal set, plateau and quadratic optimum.

    Cells are :func:`assign_cells`'s (``by``, ``designs``, ``on_design`` as there). Columns:
    ``cell`` and the cell keys (``by``, then any design column that split cells); ``runs``,
    ``lr_levels``, ``bs_levels``; ``loss_min`` with
    ``lr_grid``/``bs_tokens_grid`` (the grid minimum); ``near_optimal`` (rows within
    ``threshold``); the plateau ``lr_lo_0.25%``, ``lr_hi_0.25%``, ``bs_tokens_lo_0.25%``, ``bs_tokens_hi_0.25%``
    and the same within +0.5%, +1%;
    the quadratic fit of loss/min over (ln lr, ln bs_tokens) around the minimum (runs
    within ``fit_window``, diverged ones excluded): ``lr_quad``, ``bs_tokens_quad``,
    ``rel_loss_quad`` (vertex), their 95% bootstrap intervals and log-space SDs, the
    Hessian ``h_lr_lr``, ``h_lr_bs``, ``h_bs_bs``, ``convex``, ``quad_points``, ``quad_r2``;
    ``lr_unbounded`` / ``bs_unbounded`` (``below``, ``above``, ``both`` or null): the vertex or
    its interval leaves the grid by more than one grid step on that side, where the interval's
    end is 0 (below) or inf (above) and the vertex null; ``lr_log_width`` / ``bs_log_width``:
    the interval's width in log space as the bootstrap measured it (finite);
    ``lr_opt``/``bs_tokens_opt`` by ``method`` (``"quadratic"`` or ``"grid"``; the
    quadratic falls back to the grid minimum where it is not convex or its vertex lies
    outside the measured lr x batch range: an extrapolation, no measurement), and ``optimum``
    saying which (``vertex``, ``grid``, ``grid-fallback``); and ``flags``: ``lr-edge`` /
    ``bs-edge`` (the minimum sits on the edge of the grid: the optimum is not measured; which
    edge in ``lr_edge`` / ``bs_edge``: ``low`` or ``high``; the grid's step in log space in
    ``lr_log_step`` / ``bs_log_step``), ``lr-vertex-below`` /
    ``lr-vertex-above`` / ``bs-vertex-...`` (the vertex lies more than one grid step outside
    the grid: ``lr_quad`` / ``bs_tokens_quad`` are null, no number far outside the grid),
    ``few-near-optimal``, ``not-convex``, ``no-quadratic``, ``vertex-outside-grid``,
    ``mixed-recipe`` (the cell pools runs of several data recipes: ``designs`` left recipe out).
    """
    import numpy as np  # here, not at import time: numpy starts BLAS threads

    if method not in ("grid", "quadratic"):
        raise InvalidArgumentError(f"method must be 'grid' or 'quadratic', got {method!r}")
    if fit_window <= 0:
        raise InvalidArgumentError(f"fit_window must be > 0, got {fit_window}")
    df, keys = _prepare(final, by, loss, include, level_tolerance, designs, on_design)
    if df.is_empty():
        raise InsufficientDataError("no usable runs (finite loss, lr > 0, batch > 0, not diverged) to find optima in")
    groups = df.group_by(["cell", *keys], maintain_order=True).agg(pl.all()).sort(keys, nulls_last=True)
    rows = []
    fit_inputs: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    grids: list[tuple[np.ndarray, np.ndarray]] = []  # every run's (ln lr, ln bs) of the cell
    for i, cell in enumerate(groups.iter_rows(named=True)):
        lr = np.asarray(cell["lr"], dtype=float)
        bs = np.asarray(cell["bs_tokens"], dtype=float)
        rel = np.asarray(cell["rel_loss"], dtype=float)
        best = int(np.argmin(rel))
        lr_levels, bs_levels = sorted(set(lr)), sorted(set(bs))
        row = {"cell": cell["cell"], **{k: cell[k] for k in keys}}
        row.update(
            runs=len(rel),
            lr_levels=len(lr_levels),
            bs_levels=len(bs_levels),
            loss_min=float(np.asarray(cell[loss], dtype=float)[best]),
            lr_grid=float(lr[best]),
            bs_tokens_grid=float(bs[best]),
            near_optimal=int(np.sum(np.abs(rel) < threshold)),
        )
        for band in PLATEAU_BANDS:
            inside = rel <= band
            tag = _fmt_band(band)
            row[f"lr_lo_{tag}"], row[f"lr_hi_{tag}"] = float(lr[inside].min()), float(lr[inside].max())
            row[f"bs_tokens_lo_{tag}"], row[f"bs_tokens_hi_{tag}"] = float(bs[inside].min()), float(bs[inside].max())
        flags = []
        row["lr_edge"], row["bs_edge"] = edge_side(lr_levels, lr[best]), edge_side(bs_levels, bs[best])
        row["lr_log_step"], row["bs_log_step"] = _log_step(lr_levels), _log_step(bs_levels)
        if row["lr_edge"]:
            flags.append("lr-edge")
        if row["bs_edge"]:
            flags.append("bs-edge")
        if row["near_optimal"] < min_near_optimal:
            flags.append("few-near-optimal")
        if "recipe" in cell and "recipe" not in keys and len(set(cell["recipe"])) > 1:
            flags.append("mixed-recipe")
        row["flags"] = flags
        rows.append(row)
        pick = _fit_window(lr, bs, rel, fit_window)
        fit_inputs.append((i, np.log(lr[pick]), np.log(bs[pick]), rel[pick]))
        grids.append((np.log(lr), np.log(bs)))
    cell_idx = np.concatenate([np.full(len(x), i, dtype=np.int64) for i, x, _, _ in fit_inputs])
    fits = _native.fit_cells(
        cell_idx.tolist(),
        np.concatenate([x for _, x, _, _ in fit_inputs]).tolist(),
        np.concatenate([y for _, _, y, _ in fit_inputs]).tolist(),
        np.concatenate([z for _, _, _, z in fit_inputs]).tolist(),
        int(bootstrap),
        int(seed) & (2**64 - 1),
    )
    for row, (x, y), fit in zip(rows, grids, fits, strict=True):
        row.update(_quadratic_columns(fit, x, y, row["flags"]))
        usable = row["lr_quad"] is not None and not {"not-convex", "vertex-outside-grid"} & set(row["flags"])
        use_quad = method == "quadratic" and usable
        row["lr_opt"] = row["lr_quad"] if use_quad else row["lr_grid"]
        row["bs_tokens_opt"] = row["bs_tokens_quad"] if use_quad else row["bs_tokens_grid"]
        row["optimum"] = "vertex" if use_quad else "grid" if method == "grid" else "grid-fallback"
        row["flags"] = ",".join(row["flags"])
    return pl.DataFrame(rows, infer_schema_length=None)


def _fit_window(lr: np.ndarray, bs: np.ndarray, rel: np.ndarray, fit_window: float) -> np.ndarray:
    """Which runs enter a cell's quadratic: those within ``fit_window`` of the minimum, the
    window widening (x2, x4) until it spans three levels on both axes."""
    for window in (fit_window, 2 * fit_window, 4 * fit_window):
        pick = rel <= window
        if len(set(lr[pick])) >= 3 and len(set(bs[pick])) >= 3 and pick.sum() >= 6:
            break
    return pick


def quadratic_surface(cell: pl.DataFrame, *, loss: str = "loss", fit_window: float = FIT_WINDOW) -> Surface | None:
    """One cell's fitted landscape as a function ``(lr, bs_tokens) -> loss / min - 1`` (the
    cell's grid minimum), or None when the quadratic is not identifiable or not convex.
    Outside the runs that entered the fit it extrapolates: trust it near the optimum."""
    import numpy as np

    df = cell.filter(pl.col(loss).is_finite() & (pl.col(loss) > 0))
    if df.is_empty():
        return None
    lr = df["lr"].cast(pl.Float64).to_numpy()
    bs = df["bs_tokens"].cast(pl.Float64).to_numpy()
    rel = df[loss].cast(pl.Float64).to_numpy() / as_float(df[loss].min()) - 1.0
    pick = _fit_window(lr, bs, rel, fit_window)
    x, y = np.log(lr[pick]), np.log(bs[pick])
    [fit] = _native.fit_cells([0] * len(x), x.tolist(), y.tolist(), rel[pick].tolist(), 0, 0)
    if fit is None or not fit["convex"]:
        return None
    c, (cx, cy) = fit["coef"], fit["centre"]

    def surface(lr_at: ArrayLike, bs_at: ArrayLike) -> np.ndarray:
        u, v = np.log(lr_at) - cx, np.log(bs_at) - cy
        return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v

    return surface


_QUAD_COLUMNS = (
    "lr_quad", "bs_tokens_quad", "rel_loss_quad", "lr_quad_lo", "lr_quad_hi",
    "bs_tokens_quad_lo", "bs_tokens_quad_hi",
    "log_lr_sd", "log_bs_sd", "h_lr_lr", "h_lr_bs", "h_bs_bs", "quad_r2",
)  # fmt: skip


def _quadratic_columns(fit: _CellFit | None, x: np.ndarray, y: np.ndarray, flags: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(_QUAD_COLUMNS)
    out.update(convex=None, quad_points=len(x), lr_unbounded=None, bs_unbounded=None)
    out.update(lr_log_width=None, bs_log_width=None)
    if fit is None:
        flags.append("no-quadratic")
        return out
    (hxx, hxy), (_, hyy) = fit["hessian"]
    out.update(h_lr_lr=hxx, h_lr_bs=hxy, h_bs_bs=hyy, convex=fit["convex"], quad_r2=fit["r2"])
    if not fit["convex"]:
        flags.append("not-convex")
    if fit["vertex"] is None:
        return out
    vx, vy, vz = fit["vertex"]
    out.update(lr_quad=math.exp(vx), bs_tokens_quad=math.exp(vy), rel_loss_quad=vz)
    if not (x.min() <= vx <= x.max() and y.min() <= vy <= y.max()):
        flags.append("vertex-outside-grid")
    lr_bounds, bs_bounds = _grid_bounds(x), _grid_bounds(y)
    lr_side, bs_side = _beyond(vx, lr_bounds), _beyond(vy, bs_bounds)
    if lr_side:
        out.update(lr_quad=None, lr_unbounded=lr_side)
        flags.append(f"lr-vertex-{lr_side}")
    if bs_side:
        out.update(bs_tokens_quad=None, bs_unbounded=bs_side)
        flags.append(f"bs-vertex-{bs_side}")
    if "sd" in fit:
        out.update(log_lr_sd=fit["sd"][0], log_bs_sd=fit["sd"][1])
        axes = (("lr", "lr_quad", fit["x_interval"], lr_bounds), ("bs", "bs_tokens_quad", fit["y_interval"], bs_bounds))
        for name, quad, (lo, hi), bounds in axes:  # quad: the vertex's column, whose interval ends these are
            out[f"{name}_log_width"] = hi - lo  # the interval's width in log space, as measured (the fit's weights)
            below, above = lo < bounds[0], hi > bounds[1]
            out[f"{quad}_lo"] = 0.0 if below else math.exp(lo)
            out[f"{quad}_hi"] = math.inf if above else math.exp(hi)
            below = below or out[f"{name}_unbounded"] == "below"
            above = above or out[f"{name}_unbounded"] == "above"
            out[f"{name}_unbounded"] = "both" if below and above else "below" if below else "above" if above else None
    return out


def _grid_bounds(levels: np.ndarray) -> tuple[float, float]:
    """How far a cell's quadratic may place its vertex (or an interval's end) in log space and
    still be reported as a number: one grid step (the median step between its levels) beyond
    the grid's smallest and largest level."""
    import numpy as np

    u = np.unique(levels)
    step = float(np.median(np.diff(u))) if len(u) > 1 else 0.0
    return float(u[0]) - step, float(u[-1]) + step


def _beyond(value: float, bounds: tuple[float, float]) -> str | None:
    """``below`` / ``above`` when ``value`` lies more than one grid step outside the grid."""
    return "below" if value < bounds[0] else "above" if value > bounds[1] else None


def cell_keys(cell: Mapping[str, object], by: str | Sequence[str] | None = None) -> list[str]:
    """The keys to assign cells by when one ``cell`` is asked for: ``by`` (default N, D), then
    any key the cell names besides (``{"N": ..., "D": ..., "moe_name": "a"}``)."""
    keys = _keys(by) if by is not None else list(CELL_KEYS)
    return [*keys, *[k for k in cell if k not in keys]]


def select_cell(
    final: pl.DataFrame,
    cell: Mapping[str, object],
    *,
    by: str | Sequence[str] | None = None,
    tolerance: float = CELL_TOLERANCE,
    level_tolerance: float = LEVEL_TOLERANCE,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
) -> tuple[pl.DataFrame, list[str], dict[str, Any]]:
    """The runs of the cell nearest to ``cell`` (:func:`find_cell`): every run of it, cells
    assigned as :func:`assign_cells` does; the cell keys; the cell's :func:`cells` row."""
    if not cell:
        raise InvalidArgumentError("cell must name at least one key, e.g. {'N': ..., 'D': ...}")
    a = assign_cells(final, cell_keys(cell, by), level_tolerance=level_tolerance, designs=designs, on_design=on_design)
    warn(a.notes, stacklevel=4)
    table = a.frame.group_by(["cell", *a.keys], maintain_order=True).agg(pl.len().alias("runs"))
    chosen = find_cell(table, cell, keys=a.keys, tolerance=tolerance)
    return a.frame.filter(pl.col("cell") == chosen["cell"]), list(a.keys), chosen


def landscape(
    final: pl.DataFrame,
    cell: Mapping[str, object],
    *,
    by: str | Sequence[str] | None = None,
    tolerance: float = CELL_TOLERANCE,
    loss: str = "loss",
    include: Sequence[RunStatus] = ("diverged", "incomplete"),
    level_tolerance: float = LEVEL_TOLERANCE,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
    wide: bool = False,
) -> pl.DataFrame:
    """The lr x batch grid of one cell: the cell nearest to ``cell`` (e.g. ``{"N": 2.1e8,
    "D": 1e11}``; every numeric key within ``tolerance`` in log space, see :func:`find_cell`),
    with ``rel_loss`` = loss / cell minimum - 1 and grid indices ``lr_level``/``bs_level``.
    Diverged runs are kept (their loss is large or missing) so the grid shows where training
    broke. ``wide=True`` pivots to one row per lr and one column per batch size (in tokens)."""
    _check_columns(with_bs_tokens(final), [loss])
    rows, keys, _ = select_cell(
        final, cell, by=by, tolerance=tolerance, level_tolerance=level_tolerance, designs=designs, on_design=on_design
    )
    df, _ = _prepare(rows, keys, loss, include, level_tolerance, designs=(), on_design=on_design)
    if df.is_empty():
        raise InsufficientDataError(f"no runs with a finite loss in cell {rows['cell'][0]}")
    df = df.with_columns(
        lr_level=pl.col("lr").rank("dense").cast(pl.Int64) - 1,
        bs_level=pl.col("bs_tokens").rank("dense").cast(pl.Int64) - 1,
    ).sort("lr", "bs_tokens")
    if wide:
        return df.pivot(on="bs_tokens", index="lr", values="rel_loss", aggregate_function="min", sort_columns=True)
    cols = ["cell", *keys, "lr", "bs_tokens", "lr_level", "bs_level", loss, "rel_loss"]
    cols += [c for c in ("status", "run_id", "name") if c in df.columns]
    return df.select(cols)
