"""The analysis verbs on a sweep's final losses: ``final``, ``cells``, ``optima``,
``near-optimal``, ``evaluate``, ``stability``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast, get_args

import typer

from .._typing import DEFAULT_LAW_METHOD, LawMethod
from ._app import (
    BY_OPTION,
    FORMAT_OPTION,
    GROUP_OPTION,
    INPUT_OPTION,
    OUTPUT_OPTION,
    SEQ_LEN_OPTION,
    SMOOTH_OPTION,
    THRESHOLD_OPTION,
    app,
    cell_keys,
    floats,
    names,
    prose,
)
from ._progress import working
from ._util import (
    EXIT_USAGE,
    MACHINE_FORMATS,
    fail,
    final_frame,
    open_store,
    render_table,
    resolve_format,
    write_frame,
)

if TYPE_CHECKING:
    import polars as pl

    from .._typing import EvaluateMethod, OptimumMethod, RunStatus, Smoothing

FINAL_TABLE_COLUMNS = ["name", "status", "N", "D", "lr", "bs", "raw_loss", "loss", "step", "points_used", "origin"]
OPTIMA_TABLE_COLUMNS = [
    "N", "D", "recipe", "runs", "loss_min", "lr_grid", "bs_tokens_grid", "near_optimal",
    "lr_quad", "bs_tokens_quad", "lr_opt", "bs_tokens_opt", "convex", "flags",
]  # fmt: skip
STABILITY_TABLES = ("verdicts", "coefficients", "differences", "loco", "sensitivity")


@app.command()
def final(
    ctx: typer.Context,
    smooth: str = SMOOTH_OPTION,
    width: float | None = typer.Option(None, "--width", help="Smoothing width, in --unit (default: 0.1 of the run)."),
    unit: str = typer.Option("fraction", "--unit", help="Unit of --width: fraction, steps or tokens."),
    at: int | None = typer.Option(None, "--at", help="Read the loss at this step instead of the end."),
    metric: str = typer.Option("loss", "--metric", help="The series whose final value to read (e.g. val_loss)."),
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """Final loss of every run, raw and smoothed."""
    final_df = final_frame(ctx, None, smooth=smooth, width=width, unit=unit, at=at, metric=metric)
    write_frame(final_df, fmt, output, FINAL_TABLE_COLUMNS)


@app.command()
def cells(
    ctx: typer.Context,
    by: str = BY_OPTION,
    input: Path | None = INPUT_OPTION,
    smooth: str = SMOOTH_OPTION,
    seq_len: int = SEQ_LEN_OPTION,
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """The cells every analysis uses: keys, runs, grid, what was merged or split."""
    from ..optima import cells as find_cells

    final_df = final_frame(ctx, input, seq_len=seq_len, smooth=smooth)
    table = find_cells(final_df, cell_keys(by))
    write_frame(table, fmt, output, table.columns)


@app.command()
def optima(
    ctx: typer.Context,
    by: str = BY_OPTION,
    threshold: float = THRESHOLD_OPTION,
    method: str = typer.Option("quadratic", "--method", help="Optimum per cell: quadratic (vertex) or grid."),
    input: Path | None = INPUT_OPTION,
    smooth: str = SMOOTH_OPTION,
    include_diverged: bool = typer.Option(False, "--include-diverged", help="Keep diverged runs."),
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """Per cell: the grid minimum, near-optimal set, plateau and quadratic optimum."""
    from ..optima import optima as find_optima

    final_df = final_frame(ctx, input, smooth=smooth)
    include: tuple[RunStatus, ...] = ("diverged",) if include_diverged else ()
    found = find_optima(
        final_df, by=cell_keys(by), threshold=threshold, method=cast("OptimumMethod", method), include=include
    )
    keys = found.columns[: found.columns.index("runs")]  # cell, the keys and any design that split cells
    write_frame(found, fmt, output, [*keys, *[c for c in OPTIMA_TABLE_COLUMNS if c not in keys]])


@app.command("near-optimal")
def near_optimal(
    ctx: typer.Context,
    by: str = BY_OPTION,
    threshold: float = THRESHOLD_OPTION,
    input: Path | None = INPUT_OPTION,
    smooth: str = SMOOTH_OPTION,
    seq_len: int = SEQ_LEN_OPTION,
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """The runs within --threshold of their cell's minimum (Step Law's regression samples)."""
    from ..optima import near_optimal as find_near_optimal

    final_df = final_frame(ctx, input, seq_len=seq_len, smooth=smooth)
    rows = find_near_optimal(final_df, cell_keys(by), threshold)
    shown = ["cell", *[c for c in ("name", "lr", "bs_tokens", "loss", "rel_loss", "status") if c in rows.columns]]
    write_frame(rows, fmt, output, shown)


@app.command()
def evaluate(
    ctx: typer.Context,
    input: Path | None = INPUT_OPTION,
    law: str = typer.Option("all", "--law", help="Laws to compare (names, .json files, comma-separated, or all)."),
    seq_len: int = SEQ_LEN_OPTION,
    per_cell: bool = typer.Option(False, "--per-cell", help="Also print every (law, cell) row."),
    method: str = typer.Option(
        "nearest", "--method", help="nearest (grid point in log space) or quadratic (the cell's fitted surface)."
    ),
    by: str = BY_OPTION,
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the per-cell rows to FILE (in --format, else by its extension)."
    ),
    fmt: str | None = FORMAT_OPTION,
    loco: str = typer.Option(
        "quadratic,steplaw",
        "--loco",
        help="Also score your own law, fitted leave-one-cell-out within each recipe/design by these methods "
        "(none: off).",
    ),
) -> None:
    """Relative loss error of each law on the measured cells (Step Law's Table 1)."""
    from ..fit import evaluate as evaluate_laws
    from ..fit import evaluation_summary

    final_df = final_frame(ctx, input, seq_len=seq_len)
    own = [] if loco.strip().lower() in ("", "none", "-") else names(loco)
    with working("evaluate"):
        rows = evaluate_laws(
            law,
            final_df,
            by=cell_keys(by),
            seq_len=seq_len,
            method=cast("EvaluateMethod", method),
            loco=cast("list[LawMethod]", own),
        )
    summary = evaluation_summary(rows)
    where = "nearest grid point" if method == "nearest" else "prediction on the cell's quadratic surface"
    if output is not None:  # the rows to the file, the summary to stdout
        write_frame(rows, fmt, output)
        write_frame(summary, None if resolve_format(fmt, output) in MACHINE_FORMATS else fmt, None)
        typer.echo(f"wrote {len(rows)} rows to {output}", err=True)
        return
    say = prose(fmt, None)
    say(f"relative error of the loss at each law's {where} vs the cell minimum")
    if resolve_format(fmt, None) in MACHINE_FORMATS:  # one table: the rows or the summary
        write_frame(rows if per_cell else summary, fmt, None)
        return
    write_frame(summary, fmt, None)
    if per_cell:
        typer.echo("")
        write_frame(rows, fmt, None)


def _stability_frames(ctx: typer.Context, input_: Path | None, smoothing: str) -> dict[str, pl.DataFrame]:
    if input_ is not None:
        return {"table": final_frame(ctx, input_)}
    store = open_store(ctx, create=False)
    return {m: store.final_losses(cast("Smoothing", m)) for m in names(smoothing)}


@app.command()
def stability(
    ctx: typer.Context,
    by: str | None = GROUP_OPTION,
    thresholds: str = typer.Option(
        "0.001,0.0025,0.005,0.01", "--thresholds", help="Near-optimal thresholds to compare."
    ),
    smoothing: str = typer.Option("robust,steplaw", "--smoothing", help="Smoothing modes to compare (store only)."),
    method: str = typer.Option("grid,quadratic", "--method", help="Optimum methods to compare: grid, quadratic."),
    reference: str = typer.Option(
        DEFAULT_LAW_METHOD,
        "--reference",
        help="The reference fit the analysis choices and groups are compared with (the coefficients table): "
        "quadratic (each cell's vertex) or steplaw (Step Law's procedure: near-optimal runs, OLS).",
    ),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples of the reference fit."),
    input: Path | None = INPUT_OPTION,
    table: str | None = typer.Option(
        None, "--table", help=f"Write one table: {', '.join(STABILITY_TABLES)} [default with --format or -o: verdicts]."
    ),
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the --table to FILE instead of stdout."),
) -> None:
    """How stable is the lr/batch law across groups, left-out cells and analysis choices?"""
    from ..stability import stability as run_stability

    if table is not None and table not in STABILITY_TABLES:
        fail(f"--table must be one of {', '.join(STABILITY_TABLES)}", EXIT_USAGE)
    if reference not in get_args(LawMethod):
        fail(f"--reference must be one of {', '.join(get_args(LawMethod))}, got '{reference}'", EXIT_USAGE)
    frames = _stability_frames(ctx, input, smoothing)
    with working(f"stability ({bootstrap} draws a fit)"):
        report = run_stability(
            frames,
            by=by,
            thresholds=floats(thresholds, "--thresholds"),
            methods=cast("list[OptimumMethod]", names(method)),
            bootstrap=bootstrap,
            method=cast("LawMethod", reference),
        )
    if table is None and fmt is None and output is None:
        typer.echo(report.summary(render_table))
    else:  # --format or -o without --table: the verdicts
        df = getattr(report, table or "verdicts")
        write_frame(df, fmt, output, df.columns)
