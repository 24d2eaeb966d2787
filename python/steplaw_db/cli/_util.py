"""What every command-line module shares: the store of ``--db``, the final losses the analysis
verbs work on, the one table writer (``--format``, ``-o``), and errors as one line on stderr
with an exit status, never a traceback:

- 0: everything succeeded;
- 1: the command was well formed but the data could not satisfy it: some runs failed, the store
  is locked, damaged or missing, no run (or no usable run) matches, too few cells or points to
  fit (the library's :class:`~steplaw_db.errors.InsufficientDataError`);
- 2: usage: an unknown option or value, a malformed number, a file named on the command line
  that does not exist;
- 3: an internal error (a bug: please report it).

Polars, numpy and matplotlib are imported inside the functions that need them, so the command
line starts (``--help``, ``predict``) without them."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, cast

import typer
from typer._click.core import Context as ClickContext
from typer.core import TyperGroup
from typer.exceptions import TyperException

from .. import _native
from .._numbers import number
from .._typing import Smoothing, WidthUnit
from ..errors import InsufficientDataError, InternalError, InvalidArgumentError, SteplawError

if TYPE_CHECKING:
    import polars as pl

    from ..store import Store

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_SEQ_LEN: int = _native.DEFAULT_SEQ_LEN

#: Exit statuses, the same for the same situation in every command.
EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


class CommandFailed(Exception):
    """What :func:`fail` raises: the message and exit status :func:`reports_errors` prints and
    exits with, after the command's warnings."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def fail(message: str, code: int) -> NoReturn:
    """End the command: ``error: message`` on stderr (after its warnings), exit status ``code``."""
    raise CommandFailed(message, code)


def _failure(e: BaseException) -> tuple[str, int] | None:
    """The message and exit status of an exception that ends a command; None for Typer's own
    exits and usage errors, and for interrupts, which go on as they are."""
    if isinstance(e, CommandFailed):
        return e.message, e.code
    if isinstance(e, (typer.Exit, typer.Abort, TyperException)) or not isinstance(e, Exception):
        return None
    if isinstance(e, InvalidArgumentError):  # the data too thin (exit 1), else what was typed (2)
        return str(e), EXIT_FAILED if isinstance(e, InsufficientDataError) else EXIT_USAGE
    if isinstance(e, InternalError):  # a bug, not the input: its own status so scripts can tell
        return str(e), EXIT_INTERNAL
    if isinstance(e, SteplawError):  # StoreLockedError included: the store is busy, exit 1
        return str(e), EXIT_FAILED
    return f"internal error: {type(e).__name__}: {e} (a bug: please report it)", EXIT_INTERNAL


def reports_errors(command: Callable[P, T]) -> Callable[P, T]:
    """The one error handler of every command (``cli._app.App.command`` applies it): the
    library's errors become one line on stderr and an exit status (module docstring), any other
    exception one line and exit 3 (a bug), never a traceback. Every warning raised meanwhile
    (cells merged or split, values assumed, fits barely determined) is printed on stderr after
    the command's output and before its error, one line each (:func:`echo_warnings`)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = command(*args, **kwargs)
            except BaseException as e:
                failure = _failure(e)
                echo_warnings(caught)
                if failure is None:
                    raise
                typer.echo(f"error: {failure[0]}", err=True)
                raise typer.Exit(failure[1]) from None
            echo_warnings(caught)
            return result

    return wrapper


#: Warnings meant for the developers of the code that raised them, as Python's own default
#: filters treat them: not shown.
_DEVELOPER_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def warning_lines(caught: Iterable[warnings.WarningMessage]) -> list[str]:
    """The lines :func:`echo_warnings` prints: each message once, on one line, grouped by its
    subject (the text before the first ``": "``, e.g. ``lr`` or a file name; subjects in the
    order they first appear). A warning that is not the library's (numpy's RuntimeWarning, say)
    names its category and package instead of a file path."""
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for w in caught:
        if issubclass(w.category, _DEVELOPER_WARNINGS):
            continue
        text = " ".join(str(w.message).split())
        ours = w.category.__module__.startswith("steplaw_db") or _package(w.filename) == "steplaw_db"
        if not (ours and issubclass(w.category, UserWarning)):
            text = f"{text} ({_package(w.filename)} {w.category.__name__})"
        if text in seen:
            continue
        seen.add(text)
        subject, sep, _ = text.partition(": ")
        groups.setdefault(subject if sep else "", []).append(text)
    return [f"warning: {text}" for group in groups.values() for text in group]


def _package(filename: str) -> str:
    """The top-level package of a source file (``numpy``, ``steplaw_db``), else the file's name."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".py")
    if "steplaw_db" in parts:
        return "steplaw_db"
    return Path(filename).stem


def echo_warnings(caught: Iterable[warnings.WarningMessage]) -> None:
    """Print :func:`warning_lines` on stderr."""
    for line in warning_lines(caught):
        typer.echo(line, err=True)


def db_path(ctx: typer.Context) -> str:
    """The store path: ``--db`` (before or after the verb), else ``$STEPLAW_DB``, else
    ``./steplaw.db``. Kept as typed: Path("") would be ".", and ``--db ""`` must be refused,
    not make the current directory a store."""
    obj = ctx.find_root().obj or {}
    db = obj.get("db")
    if db is None:
        from ..store import default_path

        db = default_path()
    return str(db)


def open_store(ctx: typer.Context, create: bool = True) -> Store:
    """The store ``--db`` (or ``$STEPLAW_DB``) names."""
    from ..store import Store

    return Store(db_path(ctx), create=create)


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
        from ..optima import read_final_table

        return read_final_table(input_, seq_len)
    store = open_store(ctx, create=False)
    final = store.final_losses(cast(Smoothing, smooth), width=width, unit=cast(WidthUnit, unit), at=at, metric=metric)
    if final.is_empty() and at is None and store.runs().height:
        have = store.scan_points().group_by("metric").agg(pl.col("run_id").n_unique()).sort("metric").collect()
        listed = ", ".join(f"{m} ({n} runs)" for m, n in have.iter_rows()) or "none"
        # any name is a valid --metric; no run logged this one: nothing matches (EXIT_FAILED)
        fail(f"no run has a final value of metric '{metric}'; metrics in the store: {listed} (--metric NAME)", 1)
    return final


# --- tables: one writer for every command that prints one -----------------------------------

#: The ``--format`` values. csv, json and parquet carry every value at full precision; table,
#: markdown and latex carry readable numbers with units (N ``214M``, D ``100B tokens``, lr
#: ``9.35e-4``, batch ``2,440 seq``, percentages ``0.25%``: :func:`steplaw_db._numbers.number`).
FORMATS = ("table", "csv", "json", "markdown", "latex", "parquet")
MACHINE_FORMATS = ("csv", "json", "parquet")
FORMAT_HELP = "table, csv, json, markdown, latex or parquet [default: by -o's extension, else table]."
_SUFFIXES = {".csv": "csv", ".json": "json", ".md": "markdown", ".tex": "latex", ".parquet": "parquet"}


#: The ``--format`` and ``-o/--output`` options every table-printing command takes.
FORMAT_OPTION: Any = typer.Option(None, "--format", help=FORMAT_HELP)
OUTPUT_OPTION: Any = typer.Option(None, "-o", "--output", help="Write the table to FILE instead of stdout.")


def resolve_format(fmt: str | None, output: Path | None) -> str:
    """``--format`` as given, else the one ``-o``'s extension names, else ``table``; an
    unknown format is a usage error."""
    if fmt is None:
        return _SUFFIXES.get(output.suffix.lower(), "table") if output is not None else "table"
    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        fail(f"unknown --format '{fmt}' ({', '.join(FORMATS)})", EXIT_USAGE)
    return fmt


def readable(column: str, value: object) -> str:
    """One value of ``column`` as the table format shows it: units by the column's name."""
    if value is None:
        return "-"
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(readable(column, v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={readable(k, v)}" for k, v in value.items())
    if not isinstance(value, (int, float)):
        return str(value)
    return number(column, value)  # the one rule, shared with the HTML tables (_numbers.kind)


def _cells(df: pl.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, readable rows and which columns are numeric (right-aligned)."""
    columns = df.columns
    rows = [[readable(c, v) for c, v in zip(columns, row, strict=True)] for row in df.iter_rows()]
    numeric = [df[c].dtype.is_numeric() for c in columns]
    return columns, rows, numeric


def render_table(df: pl.DataFrame) -> str:
    """Aligned plain text: a header, a rule, one line a row (numbers right-aligned)."""
    columns, rows, numeric = _cells(df)
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(columns), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def render_markdown(df: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table, readable numbers."""
    columns, rows, numeric = _cells(df)

    def esc(v: str) -> str:
        return v.replace("|", "\\|")

    head = "| " + " | ".join(esc(c) for c in columns) + " |"
    rule = "|" + "|".join("---:" if num else "---" for num in numeric) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(esc(v) for v in r) + " |" for r in rows)])


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_latex(df: pl.DataFrame) -> str:
    """A booktabs ``tabular``, readable numbers, every special character escaped."""
    columns, rows, numeric = _cells(df)
    spec = "".join("r" if num else "l" for num in numeric)
    body = [" & ".join(latex_escape(v) for v in r) + r" \\" for r in rows]
    return "\n".join(
        [
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(latex_escape(c) for c in columns) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
        ]
    )


def _flat(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with nested columns (lists, structs) as text, for CSV."""
    import polars as pl

    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, (pl.List, pl.Array)):
            exprs.append(pl.col(name).cast(pl.List(pl.String)).list.join(";").alias(name))
        elif isinstance(dtype, pl.Struct):
            exprs.append(pl.col(name).struct.json_encode().alias(name))
    return df.with_columns(exprs) if exprs else df


def write_frame(
    df: pl.DataFrame,
    fmt: str | None,
    output: Path | None,
    table_columns: Iterable[str] | None = None,
) -> None:
    """Write ``df`` in ``fmt`` (see :func:`resolve_format`) to ``output`` or stdout: the one
    writer of every command that prints a table. The readable formats (table, markdown, latex)
    show ``table_columns`` (those present; default: all), the machine formats every column at
    full precision."""
    fmt = resolve_format(fmt, output)
    if fmt == "parquet":
        if output is None:
            fail("--format parquet needs -o FILE", EXIT_USAGE)
        df.write_parquet(output)
        return
    if fmt == "csv":
        text = _flat(df).write_csv()
    elif fmt == "json":
        text = df.write_json()
    else:
        shown = df if table_columns is None else df.select([c for c in table_columns if c in df.columns])
        render = {"table": render_table, "markdown": render_markdown, "latex": render_latex}[fmt]
        text = render(shown)
    if not text.endswith("\n"):
        text += "\n"
    if output is not None:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


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
    """The root command: ``--db`` anywhere on the line (errors are each command's, see
    :func:`reports_errors`)."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        return super().parse_args(ctx, db_first(list(args)))
