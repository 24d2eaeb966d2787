"""The store's verbs: ``ingest``, ``import-table``, ``runs``, ``rm``, ``compact``, ``check``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from ._app import (
    FORMAT_OPTION,
    NAME_TEMPLATE_OPTION,
    OUTPUT_OPTION,
    RECIPE_OPTION,
    SEQ_LEN_OPTION,
    SET_OPTION,
    WAIT_OPTION,
    app,
    names,
)
from ._progress import working
from ._util import db_path, open_store, write_frame

if TYPE_CHECKING:
    from .._typing import IngestFormat, Restarts

RUN_TABLE_COLUMNS = [
    "name", "status", "N", "D", "lr", "bs", "steps", "n_points", "final_step", "final_loss", "smooth_loss",
]  # fmt: skip


@app.command()
def ingest(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Run directories, sweep roots (any depth) or log files."),
    format: str | None = typer.Option(
        None,
        "--format",
        help="Force a format: steplaw, megatron, nanogpt, jsonl, csv, wandb-chart, wandb-run, mlflow, tensorboard, hf.",
    ),
    metric: str | None = typer.Option(None, "--metric", help="Source field to read as the training loss."),
    metrics: str | None = typer.Option(None, "--metrics", help="Further series to store, comma-separated."),
    name_template: str | None = NAME_TEMPLATE_OPTION,
    set_: list[str] | None = SET_OPTION,
    recipe: str | None = RECIPE_OPTION,
    seq_len: int = SEQ_LEN_OPTION,
    force: bool = typer.Option(
        False, "--force", help="Re-read every file, changed or not (and create the store in a non-empty directory)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Commit nothing if any run fails."),
    wait: float = WAIT_OPTION,
    restarts: str = typer.Option(
        "split", "--restarts", help="A log of several trials: one run per trial (split) or one run (merge)."
    ),
) -> None:
    """Ingest training logs: every run's loss curve and configuration into the store."""
    from ..store import Store

    db = db_path(ctx)  # as given: "" is refused by Store (Path("") would be ".")
    created = bool(db) and not Path(db).exists()
    # --force also makes a store of a directory that holds other files (refused otherwise).
    store = Store(db, create=True, force=force)
    try:
        report = store.ingest(
            paths,
            format=cast("IngestFormat | None", format),
            metric=metric,
            metrics=names(metrics),
            name_template=name_template,
            set=set_ or [],
            recipe=recipe,
            seq_len=seq_len,
            force=force,
            strict=strict,
            progress=True,
            wait=wait,
            restarts=cast("Restarts", restarts),
        )
    finally:
        # A first ingest that commits nothing leaves no empty store behind.
        if created and store.version == 0:
            shutil.rmtree(db, ignore_errors=True)
    typer.echo(report.summary(), err=True)
    # No run found is a failure too: the report's note says where it looked and for what.
    raise typer.Exit(0 if report.ok and report.runs_found else 1)


@app.command("import-table")
def import_table(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV or Parquet summary table, one row per run."),
    map_: list[str] | None = typer.Option(None, "--map", help="column=field (repeatable), e.g. 'final=final_loss'."),
    name_template: str | None = NAME_TEMPLATE_OPTION,
    set_: list[str] | None = SET_OPTION,
    recipe: str | None = RECIPE_OPTION,
    seq_len: int = SEQ_LEN_OPTION,
    one_row_per_run: bool = typer.Option(
        False, "--one-row-per-run", help="One summary-only run per row, even in a table of checkpoints."
    ),
) -> None:
    """Import per-run summary rows (final loss, no curve), e.g. the public Step Law CSV; a table
    with one row per checkpoint becomes runs with one point per checkpoint (docs/formats.md)."""
    db = db_path(ctx)
    created = bool(db) and not Path(db).exists()
    store = open_store(ctx)
    try:
        report = store.import_table(
            file, map=map_ or [], name_template=name_template, set=set_ or [], recipe=recipe, seq_len=seq_len,
            one_row_per_run=one_row_per_run,
        )  # fmt: skip
    finally:
        # A table refused (no rows, no loss column) leaves no empty store behind, as ingest.
        if created and store.version == 0:
            shutil.rmtree(db, ignore_errors=True)
    typer.echo(report.summary(), err=True)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def runs(
    ctx: typer.Context,
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """List the runs in the store."""
    store = open_store(ctx, create=False)
    write_frame(store.runs(), fmt, output, RUN_TABLE_COLUMNS)


@app.command()
def rm(
    ctx: typer.Context,
    names_: list[str] | None = typer.Argument(
        None, metavar="NAMES", help="Run names or globs ('lr*_bs64'; quote them)."
    ),
    source: list[Path] | None = typer.Option(
        None, "--source", help="A run's source, or a directory: every run below it."
    ),
    run_id: list[int] | None = typer.Option(None, "--id", help="A run id (repeatable)."),
    missing_source: bool = typer.Option(False, "--missing-source", help="Runs whose files are gone."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; commit nothing."),
    wait: float = WAIT_OPTION,
) -> None:
    """Remove runs (one commit); their points leave the files at the next compact."""
    store = open_store(ctx, create=False)
    gone = store.remove(
        names_ or [],
        sources=source or [],
        run_ids=run_id or [],
        missing_source=missing_source,
        dry_run=dry_run,
        wait=wait,
    )
    for row in gone.iter_rows(named=True):
        typer.echo(f"{row['run_id']}\t{row['name']}\t{row['source']}")
    if dry_run:
        typer.echo(f"would remove {gone.height} run(s) (--dry-run: nothing committed)", err=True)
    elif gone.height:
        typer.echo(
            f"removed {gone.height} run(s): store version {store.version} (their points leave the files at the "
            "next compact)",
            err=True,
        )
    else:
        typer.echo("no run matches: nothing removed", err=True)


@app.command()
def compact(
    ctx: typer.Context,
    wait: float = WAIT_OPTION,
    keep: int | None = typer.Option(
        None,
        "--keep",
        min=1,
        help="Versions to keep readable, the new one included [default: those newest in the last 15 minutes].",
    ),
) -> None:
    """Drop replaced runs' points, merge small segments, delete the files of versions not kept."""
    store = open_store(ctx, create=False)
    with working("compact"):
        r = store.compact(wait, keep=keep)
    typer.echo(
        f"compacted to version {r['version']}: {r['segments_rewritten']} segment(s) rewritten, "
        f"{r['files_removed']} file(s) removed, {r['bytes_freed'] / 1e6:.1f} MB freed; "
        f"versions kept: {', '.join(map(str, r['versions_kept']))}"
    )


@app.command()
def check(
    ctx: typer.Context,
    deep: bool = typer.Option(False, "--deep", help="Also decode every segment and count each run's points."),
    repair: bool = typer.Option(
        False, "--repair", help="Set damaged newest manifests aside and roll back to the newest intact version."
    ),
) -> None:
    """Check the store for damage: manifests, runs table, every segment (size, checksum, rows
    per run). Prints what is damaged, the runs affected and how to recover; exit 1 if any."""
    store = open_store(ctx, create=False)
    if repair:
        typer.echo(store.repair())
    with working("check --deep: decoding every segment" if deep else "check"):
        report = store.check(deep=deep)
    typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(1)
