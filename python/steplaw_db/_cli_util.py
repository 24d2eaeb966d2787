"""What every command-line module shares: the store of ``--db``, the final losses the analysis
verbs work on, and errors as one line on stderr with an exit status (2 for usage errors, 3 for
internal errors, 1 for everything else), never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import polars as pl
import typer

from .errors import InternalError, InvalidArgumentError, SteplawError
from .store import Store


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(fn):
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
    input_: Optional[Path],
    *,
    seq_len: int = 2048,
    smooth: str = "robust",
    width: Optional[float] = None,
    unit: str = "fraction",
    at: Optional[int] = None,
) -> pl.DataFrame:
    """Final losses from a table file (``--input``; a batch in sequences of ``seq_len``) or
    from the store (smoothed by ``smooth``)."""
    if input_ is not None:
        from .optima import read_final_table

        return run(lambda: read_final_table(input_, seq_len))
    store = open_store(ctx, create=False)
    return run(lambda: store.final_losses(smooth, width=width, unit=unit, at=at))
