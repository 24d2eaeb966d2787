"""What every command-line module shares: steplaw-db errors become one line on stderr and an
exit status (2 for usage errors, 1 for everything else), never a traceback."""

from __future__ import annotations

import typer

from .errors import InvalidArgumentError, SteplawError


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(fn):
    """Call ``fn`` and map steplaw-db errors onto exit codes with a one-line message."""
    try:
        return fn()
    except InvalidArgumentError as e:
        fail(str(e), 2)
    except SteplawError as e:  # StoreLockedError included: the store is busy, exit 1
        fail(str(e), 1)
