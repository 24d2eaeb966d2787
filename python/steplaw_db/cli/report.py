"""The HTML report: ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from ._app import GROUP_OPTION, INPUT_OPTION, LAW_METHOD_OPTION, app, laws_of
from ._progress import working
from ._util import final_frame, open_store

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
) -> None:
    """One self-contained HTML report: cells, landscapes, fits, published laws, stability."""
    from ..report import write_report

    final_df = final_frame(ctx, input)
    runs_df = None if input is not None else open_store(ctx, create=False).runs()
    with working(f"report {output.name}"):
        write_report(
            output, final_df, runs=runs_df, laws=laws_of(law), by=by, method=cast("LawMethod", method), title=title
        )
    typer.echo(f"wrote {output}")
