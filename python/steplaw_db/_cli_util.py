"""What every command-line module shares: the store of ``--db``, the final losses the analysis
verbs work on, and errors as one line on stderr with an exit status (2 for usage errors, 3 for
internal errors, 1 for everything else), never a traceback."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn, TypeVar, cast

import polars as pl
import typer

from ._typing import Smoothing, WidthUnit
from .errors import InternalError, InvalidArgumentError, SteplawError
from .fields import DEFAULT_SEQ_LEN
from .store import Store

T = TypeVar("T")


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(fn: Callable[[], T]) -> T:
    """Call ``fn`` and map steplaw-db errors onto exit codes with a one-line message; every
    warning it raised (cells merged or split, values assumed, fits barely determined) is
    printed on stderr, one line each (``warning: ...``), once."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn()
        except InvalidArgumentError as e:
            fail(str(e), 2)
        except InternalError as e:  # a bug, not the input: its own status so scripts can tell
            fail(str(e), 3)
        except SteplawError as e:  # StoreLockedError included: the store is busy, exit 1
            fail(str(e), 1)
        finally:
            echo_warnings(caught)


def echo_warnings(caught: Iterable[warnings.WarningMessage]) -> None:
    """Print the user warnings among ``caught`` on stderr, one line each, each message once."""
    seen: set[str] = set()
    for w in caught:
        text = " ".join(str(w.message).split())
        if issubclass(w.category, UserWarning) and text not in seen:
            seen.add(text)
            typer.echo(f"warning: {text}", err=True)


def open_store(ctx: typer.Context, create: bool = True) -> Store:
    """The store ``--db`` (or ``$STEPLAW_DB``) names."""
    return run(lambda: Store(ctx.find_root().obj["db"], create=create))


def final_frame(
    ctx: typer.Context,
    input_: Path | None,
    *,
    seq_len: int = DEFAULT_SEQ_LEN,
    smooth: str = "robust",
    width: float | None = None,
    unit: str = "fraction",
    at: int | None = None,
    metric: str = "loss",
) -> pl.DataFrame:
    """Final losses from a table file (``--input``; a batch in sequences of ``seq_len``) or
    from the store (smoothed by ``smooth``: the user's text, which the store checks) of
    ``metric``; a store whose runs have no ``metric`` is an error naming the metrics it has."""
    if input_ is not None:
        from .optima import read_final_table

        return run(lambda: read_final_table(input_, seq_len))
    store = open_store(ctx, create=False)
    final = run(
        lambda: store.final_losses(
            cast(Smoothing, smooth), width=width, unit=cast(WidthUnit, unit), at=at, metric=metric
        )
    )
    if final.is_empty() and at is None and store.runs().height:
        have = store.scan_points().group_by("metric").agg(pl.col("run_id").n_unique()).sort("metric").collect()
        listed = ", ".join(f"{m} ({n} runs)" for m, n in have.iter_rows()) or "none"
        fail(f"no run has a final value of metric '{metric}'; metrics in the store: {listed} (--metric NAME)", 2)
    return final
