"""What every command-line module shares: the store of ``--db``, the final losses the analysis
verbs work on, the one table writer (``--format``, ``-o``), and errors as one line on stderr
with an exit status, never a traceback:

- 0: everything succeeded;
- 1: the command was well formed but the data could not satisfy it: some runs failed, the store
  is locked, damaged or missing, no run (or no usable run) matches;
- 2: usage: an unknown option or value, a malformed number, a file named on the command line
  that does not exist;
- 3: an internal error (a bug: please report it).

Polars, numpy and matplotlib are imported inside the functions that need them, so the command
line starts (``--help``, ``predict``) without them."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import typer
from typer._click.core import Context as ClickContext
from typer.core import TyperGroup
from typer.exceptions import TyperException

from . import _native
from ._typing import Smoothing, WidthUnit
from .errors import InternalError, InvalidArgumentError, SteplawError

if TYPE_CHECKING:
    import polars as pl

    from .store import Store

T = TypeVar("T")

DEFAULT_SEQ_LEN: int = _native.DEFAULT_SEQ_LEN

#: Exit statuses, the same for the same situation in every command.
EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3

#: The library's argument errors that mean "nothing in the data matches" (exit 1), not a bad
#: command line (exit 2).
_NOTHING_MATCHES = ("no usable run", "no runs with", "no run with")


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
            fail(str(e), EXIT_FAILED if str(e).startswith(_NOTHING_MATCHES) else EXIT_USAGE)
        except InternalError as e:  # a bug, not the input: its own status so scripts can tell
            fail(str(e), EXIT_INTERNAL)
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


def db_path(ctx: typer.Context) -> str:
    """The store path: ``--db`` (before or after the verb), else ``$STEPLAW_DB``, else
    ``./steplaw.db``. Kept as typed: Path("") would be ".", and ``--db ""`` must be refused,
    not make the current directory a store."""
    obj = ctx.find_root().obj or {}
    db = obj.get("db")
    if db is None:
        from .store import default_path

        db = default_path()
    return str(db)


def open_store(ctx: typer.Context, create: bool = True) -> Store:
    """The store ``--db`` (or ``$STEPLAW_DB``) names."""
    from .store import Store

    return run(lambda: Store(db_path(ctx), create=create))


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
    import polars as pl

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


def db_first(args: list[str]) -> list[str]:
    """``args`` with every ``--db PATH`` (or ``--db=PATH``) moved to the front, where the root
    command reads it: ``steplaw-db ingest runs/ --db x.db`` is ``steplaw-db --db x.db ingest
    runs/``. Nothing after a ``--`` moves."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--db" and i + 1 < len(args):
            front.extend(args[i : i + 2])
            i += 2
            continue
        if arg.startswith("--db="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return [*front, *rest]


class RootGroup(TyperGroup):
    """The root command: ``--db`` anywhere on the line, and any exception that escapes a
    command as one line with exit status 3 (a bug), never a traceback."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        return super().parse_args(ctx, db_first(list(args)))

    def invoke(self, ctx: ClickContext) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return super().invoke(ctx)
            except (typer.Exit, typer.Abort, TyperException):  # exits, usage errors: Typer's own
                raise
            except InvalidArgumentError as e:
                fail(str(e), EXIT_FAILED if str(e).startswith(_NOTHING_MATCHES) else EXIT_USAGE)
            except InternalError as e:
                fail(str(e), EXIT_INTERNAL)
            except SteplawError as e:
                fail(str(e), EXIT_FAILED)
            except Exception as e:  # a bug: say what, where to report, and exit 3
                fail(f"internal error: {type(e).__name__}: {e} (a bug: please report it)", EXIT_INTERNAL)
            finally:
                echo_warnings(caught)
