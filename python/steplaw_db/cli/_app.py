"""The Typer apps every command module adds its commands to (``app``, and the ``fit`` and
``plot`` groups), the root options (``--db``, ``--version``), the options several commands
share (declared once here) and the small parsers of comma-separated values."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from .. import __version__
from ._util import (
    DEFAULT_SEQ_LEN,
    EXIT_USAGE,
    FORMAT_OPTION,
    MACHINE_FORMATS,
    OUTPUT_OPTION,
    RootGroup,
    fail,
    reports_errors,
    resolve_format,
)

if TYPE_CHECKING:
    from ..laws import Law

__all__ = [
    "BY_OPTION",
    "FORMAT_OPTION",
    "INPUT_OPTION",
    "OUTPUT_OPTION",
    "App",
    "app",
    "cell_keys",
    "fit_app",
    "laws_of",
    "main",
    "names",
    "plot_app",
]

F = TypeVar("F", bound=Callable[..., Any])


class App(typer.Typer):
    """A Typer app whose every command runs under :func:`~._util.reports_errors`: the library's
    errors become one line and an exit status, warnings one line each. Command groups are made
    with ``App(...)`` too, so no command can miss it."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(f: F) -> F:
            register(reports_errors(f))
            return f

        return decorator


app = App(
    cls=RootGroup,
    help="Store, analyse and fit hyperparameter scaling laws from LLM pre-training sweeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fit_app = App(help="Fit scaling laws to a sweep's final losses.", no_args_is_help=True)
app.add_typer(fit_app, name="fit")
plot_app = App(help="Figures (PNG, SVG or PDF by the output's extension).", no_args_is_help=True)
app.add_typer(plot_app, name="plot")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"steplaw-db {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    db: str | None = typer.Option(
        None,
        "--db",
        envvar="STEPLAW_DB",
        help="Store directory (default: $STEPLAW_DB, else ./steplaw.db); also accepted after the verb.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    # Kept as typed (None: resolved when a command opens the store).
    ctx.obj = {"db": db}


def main() -> None:
    """The ``steplaw-db`` entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# --- options several commands share -----------------------------------------------------------
# Option strings (formats, smoothing modes, methods) go to the library as the user typed them
# (hence the casts to their Literal types where they are used): the library checks them and says
# what it expects.

#: Cell keys (``--by``) of the analysis verbs.
BY_OPTION: Any = typer.Option(
    "N,D", "--by", help="Cell keys, comma-separated; keys beyond N, D (e.g. recipe, moe_name) split the cells."
)
#: The group column (``--by``) of the stability benchmark.
GROUP_OPTION: Any = typer.Option(None, "--by", help="Group column (recipe, a MoE design, a shape tag).")
INPUT_OPTION: Any = typer.Option(
    None,
    "--input",
    "-i",
    help="Final-loss table (.csv or .parquet; the Step Law CSV layout is recognised). Default: the store's "
    "final losses.",
)
SMOOTH_OPTION: Any = typer.Option(
    "robust", "--smooth", help="Smoothing of the final losses (store only): robust, steplaw, gaussian, ema, "
    "tail-mean, none."
)  # fmt: skip
SEQ_LEN_OPTION: Any = typer.Option(
    DEFAULT_SEQ_LEN, "--seq-len", help="Sequence length where the input gives none (batch in sequences = tokens / it)."
)
THRESHOLD_OPTION: Any = typer.Option(
    0.0025, "--threshold", help="Near-optimal: within this fraction of the cell minimum."
)
WAIT_OPTION: Any = typer.Option(
    0.0,
    "--wait",
    help="Seconds to wait for another writer's lock (an ingest: before it parses; its commit waits for a writer that "
    "came meanwhile).",
)
NAME_TEMPLATE_OPTION: Any = typer.Option(
    None, "--name-template", help="How run names encode the config, e.g. '{*}_lr{lr}_bs{bs}'. Default: Step Law names."
)
SET_OPTION: Any = typer.Option(None, "--set", help="key=value applied to every run (repeatable).")
RECIPE_OPTION: Any = typer.Option(None, "--recipe", help="Data recipe label for these runs.")
LAW_METHOD_OPTION: Any = typer.Option(
    "quadratic", "--method", help="Fit: quadratic (each cell's vertex) or steplaw (the paper's procedure)."
)
LAWS_OPTION: Any = typer.Option(
    None, "--law", help="Laws to draw: step-law, deepseek, ..., all, or a saved law's .json (comma-separated)."
)
FIGURE_OPTION: Any = typer.Option(..., "-o", "--output", help="Figure file: .png, .svg or .pdf.")
SEED_OPTION: Any = typer.Option(42, "--seed", help="Seed of the bootstrap draws.")
#: ``--table FILE`` of the fit commands, whose ``-o`` saves the law.
TABLE_FILE_OPTION: Any = typer.Option(None, "--table", help="Write the table to FILE (format by --format or suffix).")


# --- small parsers ----------------------------------------------------------------------------


def names(text: str | None) -> list[str]:
    """Comma-separated names; "", "none" and "-" are none."""
    if text is None or text.strip().lower() in ("", "none", "-"):
        return []
    return [v.strip() for v in text.split(",") if v.strip()]


def cell_keys(text: str) -> list[str]:
    """``--by``'s cell keys (N, D when none are given)."""
    return names(text) or ["N", "D"]


def floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"{what}: expected comma-separated numbers, got '{text}'", EXIT_USAGE)


def laws_of(spec: str | None) -> dict[str, Law]:
    """``--law``'s laws by name (none when not given)."""
    if not spec:
        return {}
    from ..laws import resolve

    return {law.name: law for law in resolve(spec)}


def prose(fmt: str | None, table: Path | None) -> Callable[[str], None]:
    """Where a command's sentences go: stdout beside a readable table, stderr when stdout
    carries a machine format (csv, json), so that it stays parseable."""
    machine = table is None and resolve_format(fmt, None) in MACHINE_FORMATS
    return partial(typer.echo, err=machine)
