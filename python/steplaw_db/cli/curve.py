"""The loss-curve laws' verb: ``fit curve``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from ..errors import InvalidArgumentError
from ._app import FORMAT_OPTION, TABLE_FILE_OPTION, fit_app
from ._progress import working
from ._util import EXIT_FAILED, EXIT_USAGE, MACHINE_FORMATS, db_path, fail, open_store, resolve_format, write_frame

if TYPE_CHECKING:
    import polars as pl

    from .._typing import CurveForm
    from ..curve import Schedule

__all__ = ["fit_curve", "parse_schedules"]


def parse_schedules(texts: list[str]) -> Schedule | dict[str, Schedule] | None:
    """``--schedule`` values: ``SPEC`` for every curve, or ``LABEL:SPEC`` for the curve with
    that label (a file's stem, or ``run <id>``). SPEC as :meth:`Schedule.parse` reads it."""
    from ..curve import Schedule

    common: Schedule | None = None
    by_label: dict[str, Schedule] = {}
    for text in texts:
        head, sep, rest = text.partition(":")
        if sep and "=" not in head and "{" not in head:
            by_label[head.strip()] = Schedule.parse(rest)
        elif common is None:
            common = Schedule.parse(text)
        else:
            raise InvalidArgumentError("only one --schedule without a LABEL: prefix")
    if by_label and common is not None:
        raise InvalidArgumentError("give either one --schedule for every curve or LABEL:SPEC ones, not both")
    return by_label or common


@fit_app.command("curve")
def fit_curve(
    ctx: typer.Context,
    files: list[Path] | None = typer.Argument(None, help="Curves to fit on: CSV files with step, lr and loss columns."),
    run: list[int] | None = typer.Option(
        None, "--run", help="Fit on this run's loss curve from the store (repeatable)."
    ),
    form: str = typer.Option("mpl", "--form", help="mpl (Multi-Power Law) or annealing (Tissue et al.)."),
    test: list[Path] | None = typer.Option(
        None, "--test", help="Held-out curve (CSV) to predict and score (repeatable)."
    ),
    schedule: list[str] | None = typer.Option(
        None,
        "--schedule",
        help="The lr schedule, for logs without lr or when the exact shape matters: "
        "'peak_lr=3e-4,total_steps=24000,warmup_steps=2160,decay=cosine,floor=3e-5' (or JSON); "
        "'LABEL:SPEC' for one curve (LABEL = file stem or 'run <id>'). Repeatable.",
    ),
    lam: float = typer.Option(0.999, "--lam", help="Decay factor of the annealing law's momentum (fixed)."),
    delta: float = typer.Option(1e-3, "--delta", help="Huber delta on ln(loss)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the fitted law as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="Plot measured vs law curves (.png, .svg or .pdf)."),
    fmt: str | None = FORMAT_OPTION,
    table: Path | None = TABLE_FILE_OPTION,
) -> None:
    """Fit a schedule-aware loss-curve law (whole curves with their per-step lr) and
    score it on the fitted and held-out curves (mean and max relative error)."""
    import polars as pl

    from ..curve import fit_curve_law, plot_curve_law

    schedules = parse_schedules(schedule or [])
    train: list[Path | pl.DataFrame] = [*(files or [])]
    if run:
        store = open_store(ctx, create=False)
        points = store.points(list(run), metric="loss")
        if points.height == 0:
            fail(f"no loss points for runs {list(run)} in {db_path(ctx)}", EXIT_FAILED)
        train.append(points)
    if not train:
        fail("give curves to fit on: CSV files and/or --run IDs", EXIT_USAGE)
    with working(f"fit curve ({form}, {len(train)} curves)"):
        # the form as typed: fit_curve_law checks it
        law = fit_curve_law(train, cast("CurveForm", form), schedule=schedules, lam=lam, delta=delta)
    scored = law.evaluate(train, schedules).with_columns(role=pl.lit("fit"))
    if test:
        held = law.evaluate(list(test), schedules).with_columns(role=pl.lit("held out"))
        scored = pl.concat([scored, held])
    machine = table is None and resolve_format(fmt, None) in MACHINE_FORMATS
    typer.echo(repr(law), err=machine)
    f = law.fit
    typer.echo(
        err=machine,
        message=f"objective {f['objective']:.6g} over {f['points']} points, {f['iterations']} iterations, "
        f"converged: {f['converged']}",
    )
    shown = scored.select(
        "role",
        "curve",
        "points",
        (pl.col("mean_rel_error") * 100).alias("mean_err_%"),
        (pl.col("max_rel_error") * 100).alias("max_err_%"),
    )
    write_frame(shown, fmt, table)
    if output is not None:
        law.to_json(output)
        typer.echo(f"law written to {output}", err=machine)
    if plot is not None:
        with working(f"plotting {plot.name}"):
            plot_curve_law(law, [*train, *(test or [])], plot, schedule=schedules)
        typer.echo(f"plot written to {plot}", err=machine)
