"""Per-cell optima of a sweep: the grid minimum, the near-optimal set, the plateau, the
quadratic vertex and the landscape.

A *final-loss frame* (from :meth:`steplaw_db.Store.final_losses`, or any table with the same
columns) has one row per run with at least ``N``, ``D``, ``lr``, ``bs_tokens`` (or ``bs``) and
``loss``; ``status`` is used when present. A *cell* is one value of the ``by`` keys.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import polars as pl

from . import _native
from ._typing import OptimumMethod, RunStatus, as_float
from .errors import InvalidArgumentError

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
DEFAULT_SEQ_LEN = 2048
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


def read_final_table(path: str | os.PathLike[str], seq_len: int = DEFAULT_SEQ_LEN) -> pl.DataFrame:
    """A final-loss table from CSV, TSV or Parquet: columns ``N``, ``D``, ``lr``, ``loss`` and
    ``bs_tokens`` (or ``bs`` in sequences of ``seq_len``, a column or the argument). The public
    Step Law layout is recognised: ``smooth loss`` becomes ``loss`` (their raw one
    ``raw_loss``), ``bs`` counts sequences of 2048, ``exp_name`` is the name."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"{path}: no such file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".parquet":
        df = pl.read_parquet(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        df = pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10000)
    else:
        raise InvalidArgumentError(f"{path}: expected a .csv, .tsv or .parquet final-loss table")
    if "smooth loss" in df.columns:
        df = df.rename({"loss": "raw_loss"} if "loss" in df.columns else {}).rename({"smooth loss": "loss"})
    if "exp_name" in df.columns and "name" not in df.columns:
        df = df.rename({"exp_name": "name"})
    if "bs" in df.columns:
        df = with_bs_tokens(df, seq_len)
    missing = [c for c in ("N", "D", "lr", "bs_tokens", "loss") if c not in df.columns]
    if missing:
        raise InvalidArgumentError(f"{path}: the final-loss table lacks {missing} (columns: {df.columns})")
    return df


def snap_levels(values: pl.Series, tolerance: float = LEVEL_TOLERANCE) -> pl.Series:
    """Map values within ``tolerance`` (relative, chained over sorted values) to one level:
    the most frequent value of the group (the smallest on ties). Nulls stay null."""
    import numpy as np

    present = values.drop_nulls()
    if present.is_empty():
        return values
    levels, counts = np.unique(present.to_numpy(), return_counts=True)
    # a new level wherever the gap to the previous value exceeds the tolerance
    group = np.concatenate([[0], np.cumsum(np.abs(np.diff(levels)) > tolerance * np.abs(levels[:-1]))])
    representative = np.empty_like(levels)
    for g in range(group[-1] + 1):
        members = np.flatnonzero(group == g)
        representative[members] = levels[members[np.argmax(counts[members])]]  # first max: the smallest
    return values.replace_strict(pl.Series(levels), pl.Series(representative), default=None, return_dtype=values.dtype)


def _prepare(
    final: pl.DataFrame,
    by: Sequence[str],
    loss: str,
    include: Sequence[RunStatus],
    level_tolerance: float,
) -> pl.DataFrame:
    """Validate, drop excluded/non-finite runs, snap keys and grid levels, add ``bs_tokens``
    and the relative loss."""
    final = with_bs_tokens(final)
    _check_columns(final, [*by, loss, "lr", "bs_tokens"])
    if "status" in final.columns:
        final = final.filter(~pl.col("status").is_in([s for s in EXCLUDED if s not in include]))
    df = final.filter(pl.col(loss).is_finite() & (pl.col(loss) > 0) & (pl.col("lr") > 0) & (pl.col("bs_tokens") > 0))
    snapped = {k: snap_levels(df[k], level_tolerance) for k in by if df[k].dtype.is_numeric()}
    snapped["lr"] = snap_levels(df["lr"], level_tolerance)
    snapped["bs_tokens"] = snap_levels(df["bs_tokens"], level_tolerance)
    df = df.with_columns(**snapped)
    return df.with_columns((pl.col(loss) / pl.col(loss).min().over(by) - 1.0).alias("rel_loss"))


def near_optimal(
    final: pl.DataFrame,
    by: str | Sequence[str] = ("N", "D"),
    threshold: float = DEFAULT_THRESHOLD,
    loss: str = "loss",
    *,
    include: Sequence[RunStatus] = (),
    level_tolerance: float = LEVEL_TOLERANCE,
) -> pl.DataFrame:
    """The rows of ``final`` within ``threshold`` (relative) of their cell's minimum loss.

    This is the Step Law reference rule, ``|loss / min_loss - 1| < threshold`` per cell: every
    kept row is a regression sample of the reference fit. Diverged and incomplete runs are
    left out (``include=("incomplete",)`` keeps those); rows with a non-finite loss never
    qualify. Keys, ``lr`` and ``bs_tokens`` come back snapped to their grid levels, with a
    column ``rel_loss`` (loss / min - 1).
    """
    keys = _keys(by)
    if threshold < 0:
        raise InvalidArgumentError(f"threshold must be >= 0, got {threshold}")
    df = _prepare(final, keys, loss, include, level_tolerance)
    return df.filter(pl.col("rel_loss").abs() < threshold)


def _edge(levels: list[float], value: float) -> bool:
    return value <= levels[0] or value >= levels[-1]


def _fmt_band(band: float) -> str:
    return f"{band * 100:g}%"


def optima(
    final: pl.DataFrame,
    by: str | Sequence[str] = ("N", "D"),
    threshold: float = DEFAULT_THRESHOLD,
    method: OptimumMethod = "grid",
    *,
    loss: str = "loss",
    include: Sequence[RunStatus] = (),
    fit_window: float = FIT_WINDOW,
    bootstrap: int = 200,
    seed: int = 42,
    level_tolerance: float = LEVEL_TOLERANCE,
    min_near_optimal: int = 3,
) -> pl.DataFrame:
    """One row per cell: its grid minimum, near-optimal set, plateau and quadratic optimum.

    Columns: the ``by`` keys; ``runs``, ``lr_levels``, ``bs_levels``; ``loss_min`` with
    ``lr_grid``/``bs_tokens_grid`` (the grid minimum); ``near_optimal`` (rows within
    ``threshold``); the plateau ``lr_lo/lr_hi/bs_lo/bs_hi`` within +0.25%, +0.5%, +1%;
    the quadratic fit of loss/min over (ln lr, ln bs_tokens) around the minimum (runs
    within ``fit_window``, diverged ones excluded): ``lr_quad``, ``bs_tokens_quad``,
    ``rel_loss_quad`` (vertex), their 95% bootstrap intervals and log-space SDs, the
    Hessian ``h_lr_lr``, ``h_lr_bs``, ``h_bs_bs``, ``convex``, ``quad_points``, ``quad_r2``;
    ``lr_opt``/``bs_tokens_opt`` by ``method`` (``"grid"`` or ``"quadratic"``, falling
    back to the grid where the quadratic is unusable); and ``flags``: ``lr-edge`` /
    ``bs-edge`` (the minimum sits on the edge of the grid: the optimum is not measured),
    ``few-near-optimal``, ``not-convex``, ``no-quadratic``, ``vertex-outside-grid``.
    """
    import numpy as np  # here, not at import time: numpy starts BLAS threads

    keys = _keys(by)
    if method not in ("grid", "quadratic"):
        raise InvalidArgumentError(f"method must be 'grid' or 'quadratic', got {method!r}")
    if fit_window <= 0:
        raise InvalidArgumentError(f"fit_window must be > 0, got {fit_window}")
    df = _prepare(final, keys, loss, include, level_tolerance)
    if df.is_empty():
        raise InvalidArgumentError("no usable runs (finite loss, lr > 0, batch > 0, not diverged) to find optima in")
    cells = df.group_by(keys, maintain_order=True).agg(pl.all()).sort(keys)
    rows = []
    fit_inputs: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for i, cell in enumerate(cells.iter_rows(named=True)):
        lr = np.asarray(cell["lr"], dtype=float)
        bs = np.asarray(cell["bs_tokens"], dtype=float)
        rel = np.asarray(cell["rel_loss"], dtype=float)
        best = int(np.argmin(rel))
        lr_levels, bs_levels = sorted(set(lr)), sorted(set(bs))
        row = {k: cell[k] for k in keys}
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
            row[f"bs_lo_{tag}"], row[f"bs_hi_{tag}"] = float(bs[inside].min()), float(bs[inside].max())
        flags = []
        if _edge(lr_levels, lr[best]) and len(lr_levels) > 1:
            flags.append("lr-edge")
        if _edge(bs_levels, bs[best]) and len(bs_levels) > 1:
            flags.append("bs-edge")
        if row["near_optimal"] < min_near_optimal:
            flags.append("few-near-optimal")
        row["flags"] = flags
        rows.append(row)
        pick = _fit_window(lr, bs, rel, fit_window)
        fit_inputs.append((i, np.log(lr[pick]), np.log(bs[pick]), rel[pick]))
    cell_idx = np.concatenate([np.full(len(x), i, dtype=np.int64) for i, x, _, _ in fit_inputs])
    fits = _native.fit_cells(
        cell_idx.tolist(),
        np.concatenate([x for _, x, _, _ in fit_inputs]).tolist(),
        np.concatenate([y for _, _, y, _ in fit_inputs]).tolist(),
        np.concatenate([z for _, _, _, z in fit_inputs]).tolist(),
        int(bootstrap),
        int(seed) & (2**64 - 1),
    )
    for row, (_, x, y, _), fit in zip(rows, fit_inputs, fits, strict=True):
        row.update(_quadratic_columns(fit, x, y, row["flags"]))
        use_quad = method == "quadratic" and row["lr_quad"] is not None and "not-convex" not in row["flags"]
        row["lr_opt"] = row["lr_quad"] if use_quad else row["lr_grid"]
        row["bs_tokens_opt"] = row["bs_tokens_quad"] if use_quad else row["bs_tokens_grid"]
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
    "lr_quad", "bs_tokens_quad", "rel_loss_quad", "lr_quad_lo", "lr_quad_hi", "bs_quad_lo", "bs_quad_hi",
    "log_lr_sd", "log_bs_sd", "h_lr_lr", "h_lr_bs", "h_bs_bs", "quad_r2",
)  # fmt: skip


def _quadratic_columns(fit: _CellFit | None, x: np.ndarray, y: np.ndarray, flags: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(_QUAD_COLUMNS)
    out.update(convex=None, quad_points=len(x))
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
    if "sd" in fit:
        out.update(log_lr_sd=fit["sd"][0], log_bs_sd=fit["sd"][1])
        out.update(lr_quad_lo=math.exp(fit["x_interval"][0]), lr_quad_hi=math.exp(fit["x_interval"][1]))
        out.update(bs_quad_lo=math.exp(fit["y_interval"][0]), bs_quad_hi=math.exp(fit["y_interval"][1]))
    return out


def landscape(
    final: pl.DataFrame,
    cell: Mapping[str, object],
    *,
    loss: str = "loss",
    include: Sequence[RunStatus] = ("diverged", "incomplete"),
    level_tolerance: float = LEVEL_TOLERANCE,
    wide: bool = False,
) -> pl.DataFrame:
    """The lr x batch grid of one cell (``cell`` maps the ``by`` keys to values, e.g.
    ``{"N": 214663680, "D": 1e11}``; numeric values match their grid level within the
    level tolerance), with ``rel_loss`` = loss / cell minimum - 1 and grid indices
    ``lr_level``/``bs_level``. Diverged runs are kept (their loss is large or missing) so the
    grid shows where training broke. ``wide=True`` pivots to one row per lr and one column
    per batch size (in tokens)."""
    keys = list(cell)
    if not keys:
        raise InvalidArgumentError("cell must name at least one key, e.g. {'N': ..., 'D': ...}")
    df = _prepare(final, keys, loss, include, level_tolerance).filter(in_cell(cell, level_tolerance))
    if df.is_empty():
        raise InvalidArgumentError(f"no runs in cell {dict(cell)}")
    df = df.with_columns(
        lr_level=pl.col("lr").rank("dense").cast(pl.Int64) - 1,
        bs_level=pl.col("bs_tokens").rank("dense").cast(pl.Int64) - 1,
    ).sort("lr", "bs_tokens")
    if wide:
        return df.pivot(on="bs_tokens", index="lr", values="rel_loss", aggregate_function="min", sort_columns=True)
    cols = [*keys, "lr", "bs_tokens", "lr_level", "bs_level", loss, "rel_loss"]
    cols += [c for c in ("status", "run_id", "name") if c in df.columns]
    return df.select(cols)
