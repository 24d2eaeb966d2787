"""The figures: ``plot landscape``, ``plot law``, ``plot curves``, ``plot stability``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from ._app import (
    BY_OPTION,
    FIGURE_OPTION,
    GROUP_OPTION,
    INPUT_OPTION,
    LAW_METHOD_OPTION,
    LAWS_OPTION,
    cell_keys,
    laws_of,
    names,
    plot_app,
)
from ._progress import working
from ._util import EXIT_FAILED, EXIT_USAGE, fail, final_frame, open_store

if TYPE_CHECKING:
    from .._typing import LawMethod, PlotX


def cell_of(text: str) -> dict[str, float | str]:
    """``--cell``'s ``key=value`` pairs: numbers where they parse, text otherwise."""
    cell: dict[str, float | str] = {}
    for part in names(text):
        key, sep, value = part.partition("=")
        if not sep:
            fail(f"--cell: expected key=value pairs like N=2.1e8,D=1e11, got '{part}'", EXIT_USAGE)
        try:
            cell[key.strip()] = float(value)
        except ValueError:
            cell[key.strip()] = value.strip()
    return cell


@plot_app.command("landscape")
def plot_landscape(
    ctx: typer.Context,
    cell: str = typer.Option(
        ..., "--cell", help="The cell, e.g. N=2.1e8,D=1e11: the nearest cell within --tolerance of it."
    ),
    by: str = BY_OPTION,
    tolerance: float = typer.Option(0.1, "--tolerance", help="Largest |ln(given / cell)| of a numeric key."),
    law: str | None = LAWS_OPTION,
    input: Path | None = INPUT_OPTION,
    output: Path = FIGURE_OPTION,
) -> None:
    """Loss above the minimum over a cell's lr x batch grid, with contours and law predictions."""
    from .. import plots

    final_df = final_frame(ctx, input)
    plots.landscape(final_df, cell_of(cell), by=cell_keys(by), tolerance=tolerance, laws=laws_of(law), path=output)
    typer.echo(f"wrote {output}")


@plot_app.command("law")
def plot_law(
    ctx: typer.Context,
    law: str | None = LAWS_OPTION,
    method: str = LAW_METHOD_OPTION,
    by: str = BY_OPTION,
    bootstrap: int | None = typer.Option(
        None, "--bootstrap", help="Bootstrap draws of the fit [default: fit lr-bs's]."
    ),
    input: Path | None = INPUT_OPTION,
    output: Path = FIGURE_OPTION,
) -> None:
    """Optimal lr and batch against D per N: the samples the law is fitted to, the law fitted
    as `fit lr-bs` fits it (with its bootstrap band) and any published laws."""
    from .. import plots
    from ..fit import fit_law

    final_df = final_frame(ctx, input)
    keys = cell_keys(by)
    settings: dict[str, Any] = {} if bootstrap is None else {"bootstrap": bootstrap}
    with working(f"plot law {output.name}"):
        fitted = fit_law(final_df, cast("LawMethod", method), by=keys, **settings)
        plots.law(final_df, {"fitted": fitted, **laws_of(law)}, by=keys, path=output)
    typer.echo(f"wrote {output}")


@plot_app.command("curves")
def plot_curves(
    ctx: typer.Context,
    runs_: list[str] = typer.Argument(..., metavar="RUNS", help="Run names (or run ids)."),
    x: str = typer.Option("step", "--x", help="step or tokens."),
    output: Path = FIGURE_OPTION,
) -> None:
    """Raw and smoothed loss curves of the given runs."""
    import polars as pl

    from .. import plots

    store = open_store(ctx, create=False)
    table = store.runs()
    wanted = table.filter(pl.col("name").is_in(runs_) | pl.col("run_id").cast(pl.String).is_in(runs_))
    if wanted.is_empty():
        fail(f"no runs named {', '.join(runs_)} in the store", EXIT_FAILED)
    ids = wanted["run_id"].to_list()
    points = store.points(ids)
    final_df = store.final_losses().filter(pl.col("run_id").is_in(ids))
    run_names = dict(zip(wanted["run_id"], wanted["name"], strict=True))
    plots.curves(points, final=final_df, x=cast("PlotX", x), names=run_names, path=output)
    typer.echo(f"wrote {output}")


@plot_app.command("stability")
def plot_stability(
    ctx: typer.Context,
    by: str | None = GROUP_OPTION,
    input: Path | None = INPUT_OPTION,
    output: Path = FIGURE_OPTION,
) -> None:
    """Coefficients per group and across analysis choices."""
    from .. import plots
    from ..stability import stability as run_stability

    final_df = final_frame(ctx, input)
    with working(f"plot stability {output.name}"):
        report = run_stability(final_df, by=by, bootstrap=300)
        plots.stability(report, path=output)
    typer.echo(f"wrote {output}")
