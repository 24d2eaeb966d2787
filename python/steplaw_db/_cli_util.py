"""What every command-line module shares: the store of ``--db``, the final losses the analysis
verbs work on, and errors as one line on stderr with an exit status (2 for usage errors, 3 for
internal errors, 1 for everything else), never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar, cast

import polars as pl
import typer

from ._typing import Smoothing, WidthUnit
from .errors import InternalError, InvalidArgumentError, SteplawError
from .store import Store

T = TypeVar("T")


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(fn: Callable[[], T]) -> T:
    """Call ``fn`` and map steplaw-db errors onto exit codes with a one-line message."""
    try:
        return fn()
    except InvalidArgumentError as e:
        fail(str(e), 2)
    except InternalError as e:  # a bug, not the input: its own status so scripts can tell
        fail(str(e), 3)
    except SteplawError as e:  # StoreLockedError included: the store is busy, exit 1
        fail(str(e), 1)


def open_store(ctx: typer.Context, create: bool = True) -> Store:
    """The store ``--db`` (or ``$STEPLAW_DB``) names."""
    return run(lambda: Store(ctx.find_root().obj["db"], create=create))


def final_frame(
    ctx: typer.Context,
    input_: Path | None,
    *,
    seq_len: int = 2048,
    smooth: str = "robust",
    width: float | None = None,
    unit: str = "fraction",
    at: int | None = None,
) -> pl.DataFrame:
    """Final losses from a table file (``--input``; a batch in sequences of ``seq_len``) or
    from the store (smoothed by ``smooth``: the user's text, which the store checks)."""
    if input_ is not None:
        from .optima import read_final_table

        return run(lambda: read_final_table(input_, seq_len))
    store = open_store(ctx, create=False)
    return run(lambda: store.final_losses(cast(Smoothing, smooth), width=width, unit=cast(WidthUnit, unit), at=at))
