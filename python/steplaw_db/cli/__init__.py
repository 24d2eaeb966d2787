"""The ``steplaw-db`` command line (Typer): ``steplaw-db --help`` lists the commands.

Exit status: 0 when everything succeeded; 1 when the command was well formed but the data could
not satisfy it (some runs failed, the store is busy, damaged or missing, nothing matches); 2 on
usage errors; 3 on internal errors (a bug). ``--db`` may come before or after the verb.

How the package is laid out, and how to add a command group:

- ``_app.py`` holds the Typer apps (``app``, and the groups ``fit_app``, ``plot_app``), the
  root options, the options several commands share (``BY_OPTION``, ``INPUT_OPTION``,
  ``SMOOTH_OPTION``, ...; declare a repeated option there once) and small parsers.
- ``_util.py`` holds what commands call: the store of ``--db`` (``open_store``), the final
  losses (``final_frame``), the one table writer (``write_frame``: ``--format``, ``-o``),
  ``fail(message, code)`` and the error handler.
- A command group is a module ``cli/<name>.py`` that imports the app objects from ``._app``
  and defines its commands at module level with ``@app.command()`` (or ``@fit_app.command()``,
  or a new group ``App(...)`` added with ``app.add_typer``), plus one import line below. Every
  ``App`` command runs under the one error handler (``_util.reports_errors``): call the library
  directly; its errors become one line on stderr and the exit status above, its warnings one
  line each.
- Work that can take more than about a second runs inside ``with working("what"):``
  (``_progress``): a spinner with the elapsed time and the library's stages
  (``steplaw_db.progress``) on a terminal, nothing when stderr is not one.
- Import polars, numpy, matplotlib and the library's analysis modules inside the command that
  needs them, never at the top of a module: ``steplaw-db --help`` and ``predict`` must start
  in at most 15x a bare ``python -c pass`` (``benches/bench_cli.py``)."""

# ruff: noqa: I001  (the groups are imported in the order --help lists them)
from __future__ import annotations

from ._app import app, main

# The command groups: each module defines its commands on import.
from . import store  # noqa: F401
from . import analysis  # noqa: F401
from . import fit  # noqa: F401
from . import curve  # noqa: F401
from . import plot  # noqa: F401
from . import report  # noqa: F401
from . import demo  # noqa: F401
from . import forecast  # noqa: F401

__all__ = ["app", "main"]
