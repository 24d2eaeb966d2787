"""The ``steplaw-db`` command line (Typer). Exit status: 0 when everything succeeded, 1 when
some runs failed or the store is busy, 2 on usage errors."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import polars as pl
import typer

from . import __version__
from .errors import InvalidArgumentError, SteplawError, StoreLockedError
from .store import Store, default_path

app = typer.Typer(
    help="Store, analyse and fit hyperparameter scaling laws from LLM pre-training sweeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RUN_TABLE_COLUMNS = ["name", "status", "N", "D", "lr", "bs", "steps", "n_points", "final_step", "final_loss", "smooth_loss"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"steplaw-db {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    db: Optional[Path] = typer.Option(None, "--db", envvar="STEPLAW_DB", help="Store directory [default: ./steplaw.db]."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    ctx.obj = {"db": db if db is not None else Path(default_path())}


def _open(ctx: typer.Context, create: bool = True) -> Store:
    return Store(ctx.obj["db"], create=create)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run(fn):
    """Map steplaw-db errors onto exit codes with a one-line message (no traceback)."""
    try:
        return fn()
    except InvalidArgumentError as e:
        _fail(str(e), 2)
    except StoreLockedError as e:
        _fail(str(e), 1)
    except SteplawError as e:
        _fail(str(e), 1)


@app.command()
def ingest(
    ctx: typer.Context,
    paths: List[Path] = typer.Argument(..., help="Run directories, sweep roots (any depth) or log files."),
    format: Optional[str] = typer.Option(None, "--format", help="Force a format: steplaw, megatron, jsonl, csv."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Source field to read as the training loss."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Further series to store, comma-separated."),
    name_template: Optional[str] = typer.Option(
        None, "--name-template", help="How run names encode the config, e.g. '{*}_lr{lr}_bs{bs}'. Default: Step Law names."
    ),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="key=value applied to every run (repeatable)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Data recipe label for these runs."),
    seq_len: int = typer.Option(2048, "--seq-len", help="Sequence length when the config has none."),
    force: bool = typer.Option(False, "--force", help="Re-read every file, changed or not."),
    strict: bool = typer.Option(False, "--strict", help="Commit nothing if any run fails."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another writer's lock."),
) -> None:
    """Ingest training logs: every run's loss curve and configuration into the store."""
    store = _run(lambda: _open(ctx))
    report = _run(
        lambda: store.ingest(
            paths,
            format=format,
            metric=metric,
            metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else (),
            name_template=name_template,
            set=set_ or [],
            recipe=recipe,
            seq_len=seq_len,
            force=force,
            strict=strict,
            progress=True,
            wait=wait,
        )
    )
    typer.echo(report.summary(), err=True)
    raise typer.Exit(0 if report.ok else 1)


@app.command("import-table")
def import_table(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV or Parquet summary table, one row per run."),
    map_: Optional[List[str]] = typer.Option(None, "--map", help="column=field (repeatable), e.g. 'final=final_loss'."),
    name_template: Optional[str] = typer.Option(None, "--name-template", help="How run names encode the config."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="key=value applied to every row (repeatable)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Data recipe label for these runs."),
    seq_len: int = typer.Option(2048, "--seq-len", help="Sequence length (batch 'bs' is in sequences)."),
) -> None:
    """Import per-run summary rows (final loss, no curve), e.g. the public Step Law CSV."""
    store = _run(lambda: _open(ctx))
    report = _run(
        lambda: store.import_table(
            file, map=map_ or [], name_template=name_template, set=set_ or [], recipe=recipe, seq_len=seq_len
        )
    )
    typer.echo(report.summary(), err=True)
    raise typer.Exit(0 if report.ok else 1)


def _write_frame(df: pl.DataFrame, fmt: str, output: Optional[Path], table_columns: list[str]) -> None:
    if fmt == "table":
        shown = df.select([c for c in table_columns if c in df.columns])
        with pl.Config(tbl_rows=200, tbl_cols=20, fmt_str_lengths=60, tbl_width_chars=200):
            text = str(shown)
        if output:
            output.write_text(text + "\n")
        else:
            typer.echo(text)
    elif fmt == "csv":
        # CSV has no nested types; everything in the runs table is flat already.
        if output:
            df.write_csv(output)
        else:
            typer.echo(df.write_csv(), nl=False)
    elif fmt == "json":
        if output:
            df.write_json(output)
        else:
            typer.echo(df.write_json())
    elif fmt == "parquet":
        if not output:
            _fail("--format parquet needs -o FILE", 2)
        df.write_parquet(output)
    else:
        _fail(f"unknown --format '{fmt}' (table, csv, json, parquet)", 2)


@app.command()
def runs(
    ctx: typer.Context,
    fmt: str = typer.Option("table", "--format", help="table, csv, json or parquet."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to FILE instead of stdout."),
) -> None:
    """List the runs in the store."""
    store = _run(lambda: _open(ctx, create=False))
    _write_frame(store.runs(), fmt, output, RUN_TABLE_COLUMNS)


FINAL_TABLE_COLUMNS = ["name", "status", "N", "D", "lr", "bs", "raw_loss", "loss", "step", "points_used", "origin"]
OPTIMA_TABLE_COLUMNS = [
    "N", "D", "recipe", "runs", "loss_min", "lr_grid", "bs_tokens_grid", "near_optimal",
    "lr_quad", "bs_tokens_quad", "lr_opt", "bs_tokens_opt", "convex", "flags",
]  # fmt: skip


def _final_frame(ctx: typer.Context, input_: Optional[Path], smooth: str, width: Optional[float], unit: str, at: Optional[int]) -> pl.DataFrame:
    """Final losses from a table file (``--input``) or from the store."""
    if input_ is not None:
        from .optima import read_final_table

        return _run(lambda: read_final_table(input_))
    store = _run(lambda: _open(ctx, create=False))
    return _run(lambda: store.final_losses(smooth, width=width, unit=unit, at=at))


_SMOOTH_HELP = "Smoothing: robust (default), steplaw, gaussian, ema, tail-mean, none."


@app.command()
def final(
    ctx: typer.Context,
    smooth: str = typer.Option("robust", "--smooth", help=_SMOOTH_HELP),
    width: Optional[float] = typer.Option(None, "--width", help="Smoothing width, in --unit [default: 0.1 of the run]."),
    unit: str = typer.Option("fraction", "--unit", help="Unit of --width: fraction, steps or tokens."),
    at: Optional[int] = typer.Option(None, "--at", help="Read the loss at this step instead of the end."),
    fmt: str = typer.Option("table", "--format", help="table, csv, json or parquet."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to FILE instead of stdout."),
) -> None:
    """Final loss of every run, raw and smoothed."""
    _write_frame(_final_frame(ctx, None, smooth, width, unit, at), fmt, output, FINAL_TABLE_COLUMNS)


@app.command()
def optima(
    ctx: typer.Context,
    by: str = typer.Option("N,D", "--by", help="Cell keys, comma-separated (e.g. N,D,recipe)."),
    threshold: float = typer.Option(0.0025, "--threshold", help="Near-optimal band (relative loss)."),
    method: str = typer.Option("grid", "--method", help="Optimum per cell: grid or quadratic."),
    input_: Optional[Path] = typer.Option(None, "--input", help="A final-loss table (CSV/Parquet) instead of the store."),
    smooth: str = typer.Option("robust", "--smooth", help=_SMOOTH_HELP),
    include_diverged: bool = typer.Option(False, "--include-diverged", help="Keep diverged runs."),
    fmt: str = typer.Option("table", "--format", help="table, csv, json or parquet."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to FILE instead of stdout."),
) -> None:
    """Per (N, D) cell: the grid minimum, near-optimal set, plateau and quadratic optimum."""
    from .optima import optima as find_optima

    final_df = _final_frame(ctx, input_, smooth, None, "fraction", None)
    keys = [k.strip() for k in by.split(",") if k.strip()]
    include = ("diverged",) if include_diverged else ()
    cells = _run(lambda: find_optima(final_df, by=keys, threshold=threshold, method=method, include=include))
    _write_frame(cells, fmt, output, [*keys, *[c for c in OPTIMA_TABLE_COLUMNS if c not in keys]])


@app.command()
def compact(ctx: typer.Context, wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for the lock.")) -> None:
    """Drop replaced runs' points, merge small segments, delete unused files."""
    store = _run(lambda: _open(ctx, create=False))
    r = _run(lambda: store.compact(wait))
    typer.echo(
        f"compacted to version {r['version']}: {r['segments_rewritten']} segment(s) rewritten, "
        f"{r['files_removed']} file(s) removed, {r['bytes_freed'] / 1e6:.1f} MB freed"
    )


@app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(..., help="Directory to write the sweep into."),
    format: str = typer.Option("steplaw", "--format", help="steplaw, megatron, jsonl or csv."),
    n_lr: int = typer.Option(7, "--n-lr", help="Learning rates per cell."),
    n_bs: int = typer.Option(5, "--n-bs", help="Batch sizes per cell."),
    points: int = typer.Option(200, "--points", help="Log entries per run."),
    noise: float = typer.Option(0.005, "--noise", help="Relative noise of each logged loss."),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(1, "--workers", help="Processes writing runs."),
) -> None:
    """Write a synthetic sweep with a known ground truth (Step Law's law by default)."""
    from . import synth

    if format not in synth.FORMATS:
        _fail(f"unknown --format '{format}' ({', '.join(synth.FORMATS)})", 2)
    df = synth.write_sweep(out, fmt=format, n_lr=n_lr, n_bs=n_bs, points=points, noise=noise, seed=seed, workers=workers)
    typer.echo(f"wrote {len(df)} runs ({df['diverged'].sum()} diverging) in {format} format to {out}; truth in {out / 'truth.json'}")


@app.command()
def demo(
    directory: Optional[Path] = typer.Option(None, "--dir", help="Where to put the sweep and store [default: a temp dir]."),
) -> None:
    """Generate a small synthetic sweep, ingest it and show what was found."""
    from . import synth

    root = directory if directory is not None else Path(tempfile.mkdtemp(prefix="steplaw-demo-"))
    sweep, db_path = root / "sweep", root / "steplaw.db"
    if not sweep.exists():
        truth = synth.write_sweep(sweep, fmt="steplaw")
        typer.echo(f"wrote a synthetic sweep of {len(truth)} runs (4 cells x 7 lr x 5 batch sizes) to {sweep}")
    store = _run(lambda: Store(db_path))
    report = _run(lambda: store.ingest(sweep, progress=True))
    typer.echo(report.summary())
    runs_df = store.runs()
    from .optima import optima as find_optima

    cells = find_optima(store.final_losses(), method="quadratic")
    truth = cells.select(
        "N", "D",
        lr_true=pl.struct("N", "D").map_elements(lambda c: float(synth.TRUTH.lr_opt(c["N"], c["D"])), return_dtype=pl.Float64),
        bs_tokens_true=pl.col("D").map_elements(lambda d: float(synth.TRUTH.bs_tokens_opt(d)), return_dtype=pl.Float64),
    )  # fmt: skip
    shown = cells.join(truth, on=["N", "D"]).select(
        "N", "D", "runs", "near_optimal", "loss_min", "lr_grid", "lr_quad", "lr_true",
        "bs_tokens_grid", "bs_tokens_quad", "bs_tokens_true", "flags",
    )  # fmt: skip
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=200, float_precision=4):
        typer.echo("\ncells (N, D): grid minimum, quadratic optimum and the true optimum of the synthetic law:")
        typer.echo(str(shown))
    typer.echo(f"\nstore: {db_path} (version {store.version}, {len(runs_df)} runs, {report.points:,} points)")
    typer.echo(f'try: steplaw-db --db {db_path} runs   or   python -c "import steplaw_db as sl; print(sl.open(\'{db_path}\').points())"')


__import__("steplaw_db.cli_fit").cli_fit.register(app)  # fit lr-bs, fit loss, predict, evaluate


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
