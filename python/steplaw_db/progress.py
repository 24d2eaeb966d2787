"""Progress of the library's long computations, for a front end to show (the command line's
progress display on a terminal). Nothing is shown, and next to nothing is spent, unless a front
end listens. Library code marks its work::

    with progress.stage("report: landscapes"):   # a named stage while it runs
        ...
    progress.advance("law fits")                  # one more unit of open-ended work

and a front end listens for the duration of a call::

    with progress.listen(lambda stage, n, total, finished: ...):
        write_report(...)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

__all__ = ["Listener", "advance", "listen", "stage"]


class Listener(Protocol):
    """Told of each event: ``stage``'s name, units done since the last event (``advance``),
    the stage's total when known, and whether the stage has ``finished``."""

    def __call__(self, stage: str, advance: int, total: int | None, finished: bool) -> None: ...


_listener: ContextVar[Listener | None] = ContextVar("steplaw_db_progress", default=None)


@contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Send the progress events of the calls made inside the block to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def advance(stage: str, n: int = 1, total: int | None = None) -> None:
    """``n`` more units of ``stage`` done (of ``total``, when known)."""
    listener = _listener.get()
    if listener is not None:
        listener(stage, n, total, False)


@contextmanager
def stage(name: str, total: int | None = None) -> Iterator[None]:
    """A named stage of work for the duration of the block (``advance`` it for a count)."""
    listener = _listener.get()
    if listener is None:
        yield
        return
    listener(name, 0, total, False)
    try:
        yield
    finally:
        listener(name, 0, total, True)
