"""Per-cell optima of a sweep: the grid minimum, the near-optimal set, the landscape."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from .errors import InvalidArgumentError

#: The Step Law rule: runs within 0.25% of their cell's minimum are near-optimal.
DEFAULT_THRESHOLD = 0.0025


def _keys(by: str | Sequence[str]) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def _check_columns(final: pl.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in final.columns]
    if missing:
        raise InvalidArgumentError(f"final-loss frame has no column(s) {missing} (columns: {final.columns})")


def near_optimal(
    final: pl.DataFrame,
    by: str | Sequence[str] = ("N", "D"),
    threshold: float = DEFAULT_THRESHOLD,
    loss: str = "loss",
) -> pl.DataFrame:
    """The rows of ``final`` within ``threshold`` (relative) of their cell's minimum loss.

    This is the Step Law reference rule, ``|loss / min_loss - 1| < threshold`` per cell: every
    kept row is a regression sample of the reference fit. Rows with a missing or non-finite
    loss never qualify and do not set the minimum. A column ``rel_loss`` (loss / min - 1) is
    added.
    """
    keys = _keys(by)
    _check_columns(final, [*keys, loss])
    if threshold < 0:
        raise InvalidArgumentError(f"threshold must be >= 0, got {threshold}")
    finite = final.filter(pl.col(loss).is_finite())
    rel = (pl.col(loss) / pl.col(loss).min().over(keys) - 1.0).alias("rel_loss")
    return finite.with_columns(rel).filter(pl.col("rel_loss").abs() < threshold)
