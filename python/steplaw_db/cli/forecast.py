"""Early verdicts on a sweep in progress (issue 18, docs/forecast.md): ``forecast`` (every
run's final loss, its chance of ending near-optimal, keep / stop / done; ``--at-fraction`` the
backtest), ``next-runs`` (the points that would resolve each cell's optimum) and ``plan-grid``
(an lr x batch grid for a new cell)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._app import BY_OPTION, INPUT_OPTION, SEQ_LEN_OPTION, THRESHOLD_OPTION, app, cell_keys, prose
from ._util import EXIT_USAGE, FORMAT_OPTION, OUTPUT_OPTION, fail, final_frame, open_store, write_frame

FORECAST_TABLE_COLUMNS = [
    "name", "N", "D", "lr", "bs", "step", "steps", "loss_now", "loss_forecast", "loss_lo", "loss_hi",
    "p_near_optimal", "verdict", "reason",
]  # fmt: skip

SCHEDULE_OPTION: Any = typer.Option(
    None,
    "--schedule",
    help="The lr schedule of every run (cosine, linear, constant) when their configs name none; default: "
    "inferred from the logged lr.",
)
LEVEL_OPTION: Any = typer.Option(0.9, "--level", help="Two-sided level of loss_lo .. loss_hi.")


def _options(
    by: str, threshold: float, level: float, schedule: str | None, steps: int | None, share: str
) -> dict[str, Any]:
    return {
        "by": cell_keys(by),
        "threshold": threshold,
        "level": level,
        "schedule": schedule,
        "steps": steps,
        "share": share,
    }


@app.command()
def forecast(
    ctx: typer.Context,
    by: str = BY_OPTION,
    at_fraction: float | None = typer.Option(
        None,
        "--at-fraction",
        help="Backtest: cut every finished run at this fraction of its planned steps, forecast its end and print "
        "the error table against its real end (with the two naive baselines).",
    ),
    threshold: float = THRESHOLD_OPTION,
    level: float = LEVEL_OPTION,
    stop_below: float = typer.Option(
        0.05, "--stop-below", help="Verdict 'stop' when the chance of ending near-optimal is below this."
    ),
    schedule: str | None = SCHEDULE_OPTION,
    steps: int | None = typer.Option(
        None, "--steps", help="Planned steps of every run (else the config's steps, else D / batch tokens)."
    ),
    share: str = typer.Option("alpha", "--share", help="alpha: one alpha per cell; none: per run."),
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """Forecast every run's final loss from its curve so far: interval, chance of ending within
    --threshold of its cell's best, and a verdict (keep / stop / done)."""
    from .. import forecast as fc

    store = open_store(ctx, create=False)
    options = _options(by, threshold, level, schedule, steps, share)
    if at_fraction is not None:
        table = fc.backtest(store, at_fraction=at_fraction, **options)
        assert not isinstance(table, tuple)
        write_frame(table, fmt, output)
        return
    frame = fc.forecast(store, stop_below=stop_below, **options)
    write_frame(frame, fmt, output, FORECAST_TABLE_COLUMNS)
    say = prose(fmt, output)
    counts = {v: frame.filter(frame["verdict"] == v).height for v in ("keep", "stop", "done")}
    unknown = frame["verdict"].null_count()
    say(
        f"{counts['keep']} keep, {counts['stop']} stop, {counts['done']} done"
        + (f", {unknown} without a forecast (see reason)" if unknown else "")
    )


@app.command("next-runs")
def next_runs(
    ctx: typer.Context,
    by: str = BY_OPTION,
    input: Path | None = INPUT_OPTION,
    seq_len: int = SEQ_LEN_OPTION,
    schedule: str | None = SCHEDULE_OPTION,
    wide: float = typer.Option(2.0, "--wide", help="A vertex interval wider than this many grid steps is 'wide'."),
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """The (lr, batch) points that would resolve each cell's optimum: one grid step beyond an edge,
    half steps around a flat or non-convex minimum, the ends of a wide vertex interval. From the
    store, unfinished runs count at their forecast final loss."""
    from .. import forecast as fc

    if input is not None:
        final = final_frame(ctx, input, seq_len=seq_len)
    else:
        store = open_store(ctx, create=False)
        frame = fc.forecast(store, by=cell_keys(by), schedule=schedule)
        final = fc.forecast_final(frame, store.runs())
    if final.is_empty():
        fail("no run has a final loss or a forecast", 1)
    table = fc.next_runs(final, cell_keys(by), wide=wide, seq_len=seq_len)
    write_frame(table, fmt, output)
    if table.is_empty():
        prose(fmt, output)("every cell's optimum is inside its grid with a narrow interval: nothing to add")


@app.command("plan-grid")
def plan_grid(
    n: float = typer.Argument(..., metavar="N", help="Non-embedding parameters, e.g. 7e9."),
    d: float = typer.Argument(..., metavar="D", help="Training tokens, e.g. 1.4e12."),
    law: str = typer.Option("step-law", "--law", help="step-law, deepseek, ..., or a fitted law's .json."),
    step: float = typer.Option(2**0.5, "--step", help="Factor between neighbouring levels."),
    min_levels: int = typer.Option(5, "--min-levels", help="At least this many levels on each axis."),
    seq_len: int = SEQ_LEN_OPTION,
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """An lr x batch grid for a new cell (N, D), centred on the law's prediction and spanning its
    bootstrap interval, with each point's expected loss penalty."""
    from .. import forecast as fc
    from ..laws import resolve

    chosen = resolve(law)
    if len(chosen) != 1:
        fail(f"--law names {len(chosen)} laws: give one", EXIT_USAGE)
    table = fc.plan_grid(n, d, chosen[0], step=step, min_levels=min_levels, seq_len=seq_len)
    write_frame(table, fmt, output)
