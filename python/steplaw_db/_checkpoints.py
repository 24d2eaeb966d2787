"""Tables for ``import-table``: read with every column typed by its values (integers too big for
an i64, such as FLOP counts, are numbers, not an error), and a table with one row per
checkpoint grouped into runs with one point per checkpoint.

A table is a checkpoint table when it has a column that says where in a run a row was taken
(``current_steps``, ``step``, ``iteration``, ... or ``tokens_seen``; never the planned ``steps``)
and rows that share the rest of the configuration. Its rows are grouped by the run's
configuration: every column but the position, the losses and the columns that change from one
checkpoint of a run to the next (FLOPs or tokens so far, the current learning rate). Those are
found from the data: a numeric column is per checkpoint when leaving it out of the key still
gives each run at most one row per position, and it varies inside a run. Text columns and the
name column always identify the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .fields import METRIC_NAMES, RUN_FIELDS

#: Columns that say where in a run a row was taken: by step (best first), then by tokens seen.
STEP_COLUMNS: tuple[str, ...] = ("current_steps", "current_step", "cur_step", *METRIC_NAMES["step"])
#: Tokens seen at a checkpoint (not a run field's alias: ``tokens`` is the budget D there).
_FIELD_NAMES = {n.lower() for row in RUN_FIELDS.iter_rows(named=True) for n in [row["name"], *row["aliases"]]}
TOKEN_COLUMNS: tuple[str, ...] = tuple(n for n in METRIC_NAMES["tokens"] if n.lower() not in _FIELD_NAMES)
#: Validation losses kept as a second series of a checkpoint run.
VAL_COLUMNS: tuple[str, ...] = tuple(METRIC_NAMES["val_loss"])

_INT = r"^[+-]?[0-9]+$"
_FLOAT = r"^[+-]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|nan|infinity)$"


def read_table(path: Path) -> pl.DataFrame:
    """A CSV or Parquet table, each column typed by all its values: Int64 when every value is
    an integer that fits, else Float64 when every value is a number (an integer too big for an
    i64, a FLOP count, is a float), else text. Parquet integers wider than i64 become floats.
    An empty CSV file is a table of no columns and no rows (the caller says what it lacks)."""
    if path.suffix.lower() == ".parquet":
        df = pl.read_parquet(path)
        wide = [c for c, t in df.schema.items() if t in (pl.Int128, pl.UInt64) or isinstance(t, pl.Decimal)]
        return df.with_columns(pl.col(wide).cast(pl.Float64)) if wide else df
    try:
        df = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError:  # not even a header
        return pl.DataFrame()
    out = []
    for name in df.columns:
        col = df[name].str.strip_chars()
        present = col.drop_nulls().filter(col.drop_nulls() != "")
        col = col.replace("", None)
        lower = present.str.to_lowercase()
        if present.is_empty():
            out.append(col)
        elif (
            lower.str.contains(_INT).all()
            and (ints := col.cast(pl.Int64, strict=False)).null_count() == col.null_count()
        ):
            out.append(ints)
        elif lower.str.contains(_FLOAT).all():
            out.append(col.cast(pl.Float64, strict=False))
        else:
            out.append(col)
    return pl.DataFrame(out)


@dataclass
class Grouping:
    """How a checkpoint table's rows were grouped into runs."""

    #: The column giving each point's step (or the tokens seen, when the table has no step).
    position: str
    #: Tokens seen at each checkpoint, when the table has them.
    tokens: str | None
    #: The columns whose values identify a run.
    key: list[str]
    #: Columns that change from one checkpoint of a run to the next (not configuration).
    per_checkpoint: list[str] = field(default_factory=list)
    #: The run index of each row (0-based, in order of first appearance).
    run_of_row: list[int] = field(default_factory=list)
    runs: int = 0

    def note(self, rows: int) -> str:
        extra = f"; per checkpoint, not configuration: {', '.join(self.per_checkpoint)}" if self.per_checkpoint else ""
        return (
            f"one row per checkpoint: {rows:,} rows grouped into {self.runs:,} runs by "
            f"{', '.join(self.key) or '(no column)'}, one point per '{self.position}'{extra} "
            "(--one-row-per-run imports one run per row)"
        )


def _first(columns: Sequence[str], names: Sequence[str]) -> str | None:
    return next((c for n in names for c in columns if c == n), None)


def _unique_positions(df: pl.DataFrame, key: list[str], position: str) -> bool:
    if not key:
        return df[position].is_unique().all()
    return df.select(pl.struct([*key, position]).is_unique().all()).item()


def _varies_within(df: pl.DataFrame, key: list[str], col: str) -> bool:
    if not key:
        return df[col].n_unique() > 1
    return df.group_by(key).agg(pl.col(col).n_unique()).select((pl.col(col) > 1).any()).item()


def checkpoint_grouping(
    df: pl.DataFrame, roles: dict[str, str], name_col: str | None, loss_cols: set[str | None]
) -> Grouping | None:
    """The grouping of a checkpoint table's rows into runs, or None when the table has one row
    per run (no position column, or no two rows that share a run's configuration). ``roles``
    maps each column to its role (after ``--map``); ``loss_cols`` are the final-loss columns."""
    by_role = {role: col for col, role in reversed(list(roles.items()))}
    step = _first(list(by_role), STEP_COLUMNS)
    tokens = _first(list(by_role), TOKEN_COLUMNS)
    position_role = step or tokens
    if position_role is None:
        return None
    position, tokens_col = by_role[position_role], by_role[tokens] if tokens else None
    if not df[position].dtype.is_numeric() or df[position].null_count():
        return None
    skip = {position, tokens_col, name_col} | loss_cols | {c for c, r in roles.items() if r in VAL_COLUMNS}
    candidates = [c for c in df.columns if c not in skip]
    if name_col is not None and _unique_positions(df, [name_col], position):
        key = [name_col]
        per_checkpoint = [c for c in candidates if _varies_within(df, key, c)]
    else:
        key = ([name_col] if name_col else []) + candidates
        per_checkpoint = []
        # Numeric columns that are not run fields first (FLOPs, tokens so far), then run fields
        # (a current learning rate): each leaves the key when the runs stay apart without it.
        numeric = [c for c in candidates if df[c].dtype.is_numeric()]
        numeric.sort(key=lambda c: roles[c].lower() in _FIELD_NAMES)
        for col in numeric:
            trial = [c for c in key if c != col]
            if _unique_positions(df, trial, position) and _varies_within(df, trial, col):
                key = trial
                per_checkpoint.append(col)
    if not _unique_positions(df, key, position):
        return None  # repeated checkpoints of one configuration: not a table this reads
    rows = df.select(key).with_row_index("row").group_by(key, maintain_order=True).agg("row")["row"]
    if rows.len() == df.height:
        return None  # every row its own run: one row per run
    run_of_row = [0] * df.height
    for run, members in enumerate(rows.to_list()):
        for r in members:
            run_of_row[r] = run
    return Grouping(position, tokens_col, key, per_checkpoint, run_of_row, rows.len())


Series = tuple[str, list[int], list[float], list[int]]


def _tokens(tokens: pl.Series) -> list[int]:
    """Tokens seen at each point, or none when some checkpoint lacks them."""
    return tokens.to_list() if tokens.null_count() == 0 else []


def checkpoint_runs(
    df: pl.DataFrame,
    g: Grouping,
    roles: dict[str, str],
    name_col: str | None,
    loss_col: str | None,
    smooth_col: str | None,
    text: Callable[[Any], str],
) -> tuple[list[str], list[list[tuple[str, str]]], list[list[Series]]]:
    """Each run of a grouped checkpoint table: its name (the name column, else its key's
    values), its configuration (the first row's, without the per-checkpoint columns) and its
    series, one point per checkpoint by position: the loss, and each validation loss column."""
    val_cols = [c for c, r in roles.items() if r in VAL_COLUMNS]
    drop = {g.position, g.tokens, name_col, loss_col, smooth_col, *val_cols, *g.per_checkpoint}
    frame = df.with_columns(__run=pl.Series(g.run_of_row)).sort("__run", g.position, maintain_order=True)
    names: list[str] = []
    fields: list[list[tuple[str, str]]] = []
    series: list[list[Series]] = []
    for part in frame.partition_by("__run", maintain_order=True):
        first = part.row(0, named=True)
        if name_col is not None and first[name_col] is not None:
            names.append(str(first[name_col]))
        else:
            names.append(" ".join(f"{c}={text(first[c])}" for c in g.key if first[c] is not None) or "run")
        fields.append([(roles[c], text(v)) for c, v in first.items() if c in roles and c not in drop and v is not None])
        steps = part[g.position].cast(pl.Float64).round().cast(pl.Int64)
        tokens = part[g.tokens].cast(pl.Float64).round().cast(pl.Int64) if g.tokens else None
        run_series: list[Series] = []
        for metric, col in [("loss", loss_col), *((roles[c], c) for c in val_cols)]:
            if col is None:
                continue
            keep = part[col].is_not_null()
            metric = "val_loss" if metric in VAL_COLUMNS else metric
            run_series.append(
                (
                    metric,
                    steps.filter(keep).to_list(),
                    part[col].cast(pl.Float64).filter(keep).to_list(),
                    _tokens(tokens.filter(keep)) if tokens is not None else [],
                )
            )
        series.append([s for s in run_series if s[1]])
    return names, fields, series
