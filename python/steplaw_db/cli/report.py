"""The HTML report: ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from ._app import GROUP_OPTION, INPUT_OPTION, LAW_METHOD_OPTION, SEED_OPTION, app, laws_of
from ._progress import working
from ._util import fail, final_frame, open_store

if TYPE_CHECKING:
    from .._typing import LawMethod


@app.command()
def report(
    ctx: typer.Context,
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="The HTML file to write."),
    by: str | None = GROUP_OPTION,
    law: str = typer.Option("step-law,deepseek,porian,microsoft", "--law", help="Published laws to compare."),
    method: str = LAW_METHOD_OPTION,
    input: Path | None = INPUT_OPTION,
    title: str = typer.Option("steplaw-db sweep report", "--title"),
    bootstrap: int = typer.Option(500, "--bootstrap", help="Bootstrap draws of every fit in the report (one setting)."),
    seed: int = SEED_OPTION,
    predict: list[str] = typer.Option([], "--predict", help="N,D of a planned run (repeatable), e.g. 7e9,1.4e12."),
) -> None:
    """One self-contained HTML report: cells, landscapes, fits, published laws, stability."""
    import polars as pl

    from ..report import write_report

    pairs = []
    for text in predict:
        try:
            n, d = (float(v) for v in text.split(","))
        except ValueError:
            fail(f"--predict: expected N,D such as 7e9,1.4e12, got '{text}'", 2)
        pairs.append((n, d))
    final_df = final_frame(ctx, input)
    store = None if input is not None else open_store(ctx, create=False)

    def points(ids: list[int]) -> pl.DataFrame:  # each cell's best runs' curves
        assert store is not None
        return store.scan_points(ids).filter(pl.col("metric") == "loss").sort("run_id", "step").collect()

    with working(f"report {output.name}"):
        write_report(
            output, final_df, runs=None if store is None else store.runs(), points=None if store is None else points,
            laws=laws_of(law), by=by, method=cast("LawMethod", method), title=title, bootstrap=bootstrap, seed=seed,
            predict=pairs, command=_command_line(ctx),
        )  # fmt: skip
    typer.echo(f"wrote {output}")


def _command_line(ctx: typer.Context) -> str:
    """The command as run, its options spelt out (defaults included): for the report's
    Reproduce section, whatever program or test invoked it."""
    import shlex

    parts = ["steplaw-db", ctx.info_name or "report"]
    for key, value in ctx.params.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is not None:
                parts += [f"--{key.replace('_', '-')}", shlex.quote(str(v))]
    return " ".join(parts)
