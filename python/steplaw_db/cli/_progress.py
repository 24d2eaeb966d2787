"""The command line's progress display: a spinner naming the work, elapsed time, and a line per
stage the library reports (``steplaw_db.progress``), on stderr, cleared when done. Off when
stderr is not a terminal (pipes, files, CI logs get no progress noise); rich is imported only
when it is shown."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["shown", "working"]


def shown() -> bool:
    """Whether progress is drawn: only on a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


@contextmanager
def working(description: str) -> Iterator[None]:
    """Show ``description`` with a spinner and the elapsed time while the block runs, and each
    stage the library reports meanwhile (with its count, and a bar when its total is known)."""
    if not shown():
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    from .. import progress

    # the count column: "12" for open-ended work, "12/40" with a total, nothing for a bare stage
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[count]}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        bar.add_task(description, total=None, count="")
        tasks: dict[str, TaskID] = {}
        done: dict[str, int] = {}

        def on_event(stage: str, advance: int, total: int | None, finished: bool) -> None:
            if finished:
                if stage in tasks:
                    bar.update(tasks.pop(stage), visible=False)
                return
            if stage not in tasks:
                tasks[stage], done[stage] = bar.add_task(f"  {stage}", total=total, count=""), 0
            done[stage] += advance
            count = "" if not done[stage] else f"{done[stage]}" if total is None else f"{done[stage]}/{total}"
            bar.update(tasks[stage], total=total, count=count)

        with progress.listen(on_event):
            yield
