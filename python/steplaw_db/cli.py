"""The ``steplaw-db`` command line (Typer). Exit status: 0 when everything succeeded, 1 when
some runs failed, the store is busy, damaged or missing, or nothing matches; 2 on usage errors;
3 on internal errors (see ``_cli_util``). ``--db`` may come before or after the verb. Polars,
numpy and matplotlib are imported only inside the commands that need them."""

from __future__ import annotations

import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from . import __version__
from ._cli_util import DEFAULT_SEQ_LEN, FORMAT_OPTION, OUTPUT_OPTION, RootGroup, db_path, final_frame, open_store
from ._cli_util import fail as _fail
from ._cli_util import run as _run
from ._cli_util import write_frame as _write_frame
from ._typing import IngestFormat, LawMethod, OptimumMethod, PlotX, Restarts, RunStatus, Smoothing, SynthFormat

if TYPE_CHECKING:
    import polars as pl

    from .laws import Law

# Option strings (formats, smoothing modes, methods) go to the library as the user typed them
# (hence the casts to their Literal types): the library checks them and says what it expects.

app = typer.Typer(
    cls=RootGroup,
    help="Store, analyse and fit hyperparameter scaling laws from LLM pre-training sweeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: The demo's sweep: three shapes of the public Step Law data at three budgets each.
DEMO_CELLS = tuple(
    (*shape, d)
    for shape in ((960, 9368, 15, 7), (1280, 9472, 10, 10), (2048, 8192, 16, 16))
    for d in (1e10, 3e10, 1e11)
)
#: Where the demo predicts: a model and budget beyond the sweep.
DEMO_PREDICT = (7e9, 1.4e12)

RUN_TABLE_COLUMNS = [
    "name",
    "status",
    "N",
    "D",
    "lr",
    "bs",
    "steps",
    "n_points",
    "final_step",
    "final_loss",
    "smooth_loss",
]


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
    name_template: str | None = typer.Option(
        None,
        "--name-template",
        help="How run names encode the config, e.g. '{*}_lr{lr}_bs{bs}'. Default: Step Law names.",
    ),
    set_: list[str] | None = typer.Option(None, "--set", help="key=value applied to every run (repeatable)."),
    recipe: str | None = typer.Option(None, "--recipe", help="Data recipe label for these runs."),
    seq_len: int = typer.Option(DEFAULT_SEQ_LEN, "--seq-len", help="Sequence length when the config has none."),
    force: bool = typer.Option(
        False, "--force", help="Re-read every file, changed or not (and create the store in a non-empty directory)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Commit nothing if any run fails."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another writer's lock."),
    restarts: str = typer.Option(
        "split", "--restarts", help="A log of several trials: one run per trial (split) or one run (merge)."
    ),
) -> None:
    """Ingest training logs: every run's loss curve and configuration into the store."""
    from .store import Store

    db = db_path(ctx)  # as given: "" is refused by Store (Path("") would be ".")
    created = bool(db) and not Path(db).exists()
    # --force also makes a store of a directory that holds other files (refused otherwise).
    store = _run(lambda: Store(db, create=True, force=force))
    try:
        report = _run(
            lambda: store.ingest(
                paths,
                format=cast("IngestFormat | None", format),
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
                restarts=cast("Restarts", restarts),
            )
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
    name_template: str | None = typer.Option(None, "--name-template", help="How run names encode the config."),
    set_: list[str] | None = typer.Option(None, "--set", help="key=value applied to every row (repeatable)."),
    recipe: str | None = typer.Option(None, "--recipe", help="Data recipe label for these runs."),
    seq_len: int = typer.Option(DEFAULT_SEQ_LEN, "--seq-len", help="Sequence length (batch 'bs' is in sequences)."),
) -> None:
    """Import per-run summary rows (final loss, no curve), e.g. the public Step Law CSV."""
    store = open_store(ctx)
    report = _run(
        lambda: store.import_table(
            file, map=map_ or [], name_template=name_template, set=set_ or [], recipe=recipe, seq_len=seq_len
        )
    )
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
    _write_frame(store.runs(), fmt, output, RUN_TABLE_COLUMNS)


FINAL_TABLE_COLUMNS = ["name", "status", "N", "D", "lr", "bs", "raw_loss", "loss", "step", "points_used", "origin"]
OPTIMA_TABLE_COLUMNS = [
    "N", "D", "recipe", "runs", "loss_min", "lr_grid", "bs_tokens_grid", "near_optimal",
    "lr_quad", "bs_tokens_quad", "lr_opt", "bs_tokens_opt", "convex", "flags",
]  # fmt: skip


_SMOOTH_HELP = "Smoothing: robust (default), steplaw, gaussian, ema, tail-mean, none."


@app.command()
def final(
    ctx: typer.Context,
    smooth: str = typer.Option("robust", "--smooth", help=_SMOOTH_HELP),
    width: float | None = typer.Option(None, "--width", help="Smoothing width, in --unit (default: 0.1 of the run)."),
    unit: str = typer.Option("fraction", "--unit", help="Unit of --width: fraction, steps or tokens."),
    at: int | None = typer.Option(None, "--at", help="Read the loss at this step instead of the end."),
    metric: str = typer.Option("loss", "--metric", help="The series whose final value to read (e.g. val_loss)."),
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """Final loss of every run, raw and smoothed."""
    final_df = final_frame(ctx, None, smooth=smooth, width=width, unit=unit, at=at, metric=metric)
    _write_frame(final_df, fmt, output, FINAL_TABLE_COLUMNS)


@app.command()
def optima(
    ctx: typer.Context,
    by: str = typer.Option("N,D", "--by", help="Cell keys, comma-separated (e.g. N,D,recipe)."),
    threshold: float = typer.Option(0.0025, "--threshold", help="Near-optimal band (relative loss)."),
    method: str = typer.Option("quadratic", "--method", help="Optimum per cell: quadratic (vertex) or grid."),
    input_: Path | None = typer.Option(None, "--input", help="A final-loss table (CSV/Parquet) instead of the store."),
    smooth: str = typer.Option("robust", "--smooth", help=_SMOOTH_HELP),
    include_diverged: bool = typer.Option(False, "--include-diverged", help="Keep diverged runs."),
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """Per cell: the grid minimum, near-optimal set, plateau and quadratic optimum."""
    from .optima import optima as find_optima

    final_df = final_frame(ctx, input_, smooth=smooth)
    keys = [k.strip() for k in by.split(",") if k.strip()]
    include: tuple[RunStatus, ...] = ("diverged",) if include_diverged else ()
    how = cast(OptimumMethod, method)
    cells = _run(lambda: find_optima(final_df, by=keys, threshold=threshold, method=how, include=include))
    cell_keys = cells.columns[: cells.columns.index("runs")]  # cell, the keys and any design that split cells
    _write_frame(cells, fmt, output, [*cell_keys, *[c for c in OPTIMA_TABLE_COLUMNS if c not in cell_keys]])


@app.command()
def rm(
    ctx: typer.Context,
    names: list[str] | None = typer.Argument(None, help="Run names or globs ('lr*_bs64'; quote them)."),
    source: list[Path] | None = typer.Option(
        None, "--source", help="A run's source, or a directory: every run below it."
    ),
    run_id: list[int] | None = typer.Option(None, "--id", help="A run id (repeatable)."),
    missing_source: bool = typer.Option(False, "--missing-source", help="Runs whose files are gone."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; commit nothing."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for the lock."),
) -> None:
    """Remove runs (one commit); their points leave the files at the next compact."""
    store = open_store(ctx, create=False)
    gone = _run(
        lambda: store.remove(
            names or [],
            sources=source or [],
            run_ids=run_id or [],
            missing_source=missing_source,
            dry_run=dry_run,
            wait=wait,
        )
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
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for the lock."),
    keep: int | None = typer.Option(
        None,
        "--keep",
        min=1,
        help="Versions to keep readable, the new one included [default: those newest in the last 15 minutes].",
    ),
) -> None:
    """Drop replaced runs' points, merge small segments, delete the files of versions not kept."""
    store = open_store(ctx, create=False)
    r = _run(lambda: store.compact(wait, keep=keep))
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
        typer.echo(_run(store.repair))
    report = _run(lambda: store.check(deep=deep))
    typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(1)


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
    df = synth.write_sweep(
        out, fmt=cast(SynthFormat, format), n_lr=n_lr, n_bs=n_bs, points=points, noise=noise, seed=seed, workers=workers
    )
    typer.echo(
        f"wrote {len(df)} runs ({df['diverged'].sum()} diverging) in {format} format to {out}; "
        f"truth in {out / 'truth.json'}"
    )


@app.command()
def demo(
    directory: Path | None = typer.Option(
        None, "--dir", help="Where to put the sweep and store (default: a temp dir)."
    ),
) -> None:
    """Generate a small synthetic sweep, ingest it and show what was found."""
    import polars as pl

    from . import synth
    from .store import Store

    root = directory if directory is not None else Path(tempfile.mkdtemp(prefix="steplaw-demo-"))
    sweep, db_path = root / "sweep", root / "steplaw.db"
    if not sweep.exists():
        truth = synth.write_sweep(sweep, fmt="steplaw", cells=DEMO_CELLS)
        typer.echo(
            f"wrote a synthetic sweep of {len(truth)} runs ({len(DEMO_CELLS)} cells x 7 lr x 5 batch sizes) to {sweep}"
        )
    store = _run(lambda: Store(db_path))
    report = _run(lambda: store.ingest(sweep, progress=True))
    typer.echo(report.summary())
    runs_df = store.runs()
    from .fit import fit_law
    from .optima import optima as find_optima
    from .report import write_report

    final_df = store.final_losses()
    cells = _run(lambda: find_optima(final_df, method="quadratic"))
    lr_true = pl.struct("N", "D").map_elements(
        lambda c: float(synth.TRUTH.lr_opt(c["N"], c["D"])), return_dtype=pl.Float64
    )
    bs_true = pl.col("D").map_elements(lambda d: float(synth.TRUTH.bs_tokens_opt(d)), return_dtype=pl.Float64)
    truth = cells.select("N", "D", lr_true=lr_true, bs_tokens_true=bs_true)
    shown = cells.join(truth, on=["N", "D"]).select(
        "N", "D", "runs", "near_optimal", "loss_min", "lr_grid", "lr_quad", "lr_true",
        "bs_tokens_grid", "bs_tokens_quad", "bs_tokens_true", "flags",
    )  # fmt: skip
    typer.echo("\ncells (N, D): grid minimum, quadratic optimum and the true optimum of the synthetic law:")
    _write_frame(shown, "table", None)
    law = _run(lambda: fit_law(final_df, "quadratic", bootstrap=1000))
    paper = _run(lambda: fit_law(final_df, "steplaw", bootstrap=1000))
    typer.echo("\nfitted (each cell's quadratic vertex, weighted, 1000 bootstraps over cells: the default):")
    typer.echo(f"  {law.describe()}")
    typer.echo(f"  Step Law's procedure (near-optimal runs, OLS, --method steplaw): {paper.describe()}")
    typer.echo(
        f"  true law: lr = {synth.LR_COEF} N^{synth.LR_EXP_N} D^{synth.LR_EXP_D}; "
        f"bs_tokens = {synth.BS_COEF} D^{synth.BS_EXP_D}"
    )
    pred = law.predict(N=DEMO_PREDICT[0], D=DEMO_PREDICT[1]).row(0, named=True)
    true_lr, true_bs = synth.TRUTH.lr_opt(*DEMO_PREDICT), synth.TRUTH.bs_tokens_opt(DEMO_PREDICT[1])
    typer.echo(
        f"  predicted for N={DEMO_PREDICT[0]:.2g}, D={DEMO_PREDICT[1]:.2g}: lr {pred['lr']:.3e} "
        f"(95% {pred['lr_lo']:.3e}-{pred['lr_hi']:.3e}; true {true_lr:.3e}), batch {pred['bs_tokens']:,.0f} tokens "
        f"(95% {pred['bs_tokens_lo']:,.0f}-{pred['bs_tokens_hi']:,.0f}; true {true_bs:,.0f})"
    )
    html_path = root / "report.html"
    write_report(html_path, final_df, runs=runs_df, title="steplaw-db demo: a synthetic sweep", bootstrap=300)
    typer.echo(f"\nreport: {html_path}")
    typer.echo(f"store: {db_path} (version {store.version}, {len(runs_df)} runs, {report.points:,} points)")
    typer.echo(
        f"try: steplaw-db --db {db_path} optima   or   "
        f"python -c \"import steplaw_db as sl; print(sl.open('{db_path}').final_losses())\""
    )


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{what}: expected comma-separated numbers, got '{text}'", 2)


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _stability_frames(ctx: typer.Context, input_: Path | None, smoothing: str) -> dict[str, pl.DataFrame]:
    modes = _names(smoothing)
    if input_ is not None:
        return {"table": final_frame(ctx, input_)}
    store = open_store(ctx, create=False)
    return {m: _run(partial(store.final_losses, cast(Smoothing, m))) for m in modes}


STABILITY_TABLES = ("verdicts", "coefficients", "differences", "loco", "sensitivity")
_TABLE_OUTPUT = typer.Option(None, "-o", "--output", help="Write the --table to FILE instead of stdout.")


@app.command()
def stability(
    ctx: typer.Context,
    by: str | None = typer.Option(None, "--by", help="Group column (recipe, a MoE design, a shape tag)."),
    thresholds: str = typer.Option(
        "0.001,0.0025,0.005,0.01", "--thresholds", help="Near-optimal thresholds to compare."
    ),
    smoothing: str = typer.Option("robust,steplaw", "--smoothing", help="Smoothing modes to compare (store only)."),
    method: str = typer.Option("grid,quadratic", "--method", help="Optimum methods to compare: grid, quadratic."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples of the reference fit."),
    input_: Path | None = typer.Option(None, "--input", help="A final-loss table (CSV/Parquet) instead of the store."),
    table: str | None = typer.Option(
        None, "--table", help=f"Write one table: {', '.join(STABILITY_TABLES)} [default with --format or -o: verdicts]."
    ),
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = _TABLE_OUTPUT,
) -> None:
    """How stable is the lr/batch law across groups, left-out cells and analysis choices?"""
    from .stability import stability as run_stability

    if table is not None and table not in STABILITY_TABLES:
        _fail(f"--table must be one of {', '.join(STABILITY_TABLES)}", 2)
    frames = _stability_frames(ctx, input_, smoothing)
    report = _run(
        lambda: run_stability(
            frames,
            by=by,
            thresholds=_floats(thresholds, "--thresholds"),
            methods=cast("list[OptimumMethod]", _names(method)),
            bootstrap=bootstrap,
        )
    )
    if table is None and fmt is None and output is None:
        typer.echo(report.summary())
    else:  # --format or -o without --table: the verdicts
        df = getattr(report, table or "verdicts")
        _write_frame(df, fmt, output, df.columns)


plot_app = typer.Typer(help="Figures (PNG, SVG or PDF by the output's extension).", no_args_is_help=True)
app.add_typer(plot_app, name="plot")


def _cell_of(text: str) -> dict[str, float | str]:
    cell: dict[str, float | str] = {}
    for part in _names(text):
        key, sep, value = part.partition("=")
        if not sep:
            _fail(f"--cell: expected key=value pairs like N=2.1e8,D=1e11, got '{part}'", 2)
        try:
            cell[key.strip()] = float(value)
        except ValueError:
            cell[key.strip()] = value.strip()
    return cell


def _laws_of(spec: str | None) -> dict[str, Law]:
    if not spec:
        return {}
    from .laws import resolve

    return {law.name: law for law in _run(lambda: resolve(spec))}


_OUTPUT = typer.Option(..., "-o", "--output", help="Figure file: .png, .svg or .pdf.")
_INPUT = typer.Option(None, "--input", help="A final-loss table (CSV/Parquet) instead of the store.")
_LAWS = typer.Option(
    None, "--law", help="Laws to draw: step-law, deepseek, ..., all, or a saved law's .json (comma-separated)."
)


@plot_app.command("landscape")
def plot_landscape(
    ctx: typer.Context,
    cell: str = typer.Option(
        ..., "--cell", help="The cell, e.g. N=2.1e8,D=1e11: the nearest cell within --tolerance of it."
    ),
    by: str = typer.Option("N,D", "--by", help="Cell keys, comma-separated (e.g. N,D,moe_name)."),
    tolerance: float = typer.Option(0.1, "--tolerance", help="Largest |ln(given / cell)| of a numeric key."),
    law: str | None = _LAWS,
    input_: Path | None = _INPUT,
    output: Path = _OUTPUT,
) -> None:
    """Loss above the minimum over a cell's lr x batch grid, with contours and law predictions."""
    from . import plots

    final_df = final_frame(ctx, input_)
    _run(
        lambda: plots.landscape(
            final_df, _cell_of(cell), by=_names(by), tolerance=tolerance, laws=_laws_of(law), path=output
        )
    )
    typer.echo(f"wrote {output}")


@plot_app.command("law")
def plot_law(
    ctx: typer.Context,
    law: str | None = _LAWS,
    method: str = typer.Option("quadratic", "--method", help="Fit: quadratic (vertices) or steplaw (the paper's)."),
    by: str = typer.Option("N,D", "--by", help="Cell keys, comma-separated."),
    input_: Path | None = _INPUT,
    output: Path = _OUTPUT,
) -> None:
    """Optimal lr and batch against D per N: cell optima, the fitted law (with its bootstrap
    band) and any published laws."""
    from . import plots
    from .fit import fit_law

    final_df = final_frame(ctx, input_)
    keys = _names(by)
    fitted = _run(lambda: fit_law(final_df, cast(LawMethod, method), by=keys, bootstrap=500))
    _run(lambda: plots.law(final_df, {"fitted": fitted, **_laws_of(law)}, by=keys, path=output))
    typer.echo(f"wrote {output}")


@plot_app.command("curves")
def plot_curves(
    ctx: typer.Context,
    runs_: list[str] = typer.Argument(..., help="Run names (or run ids)."),
    x: str = typer.Option("step", "--x", help="step or tokens."),
    output: Path = _OUTPUT,
) -> None:
    """Raw and smoothed loss curves of the given runs."""
    import polars as pl

    from . import plots

    store = open_store(ctx, create=False)
    table = store.runs()
    wanted = table.filter(pl.col("name").is_in(runs_) | pl.col("run_id").cast(pl.String).is_in(runs_))
    if wanted.is_empty():
        _fail(f"no runs named {', '.join(runs_)} in the store", 1)
    ids = wanted["run_id"].to_list()
    points = store.points(ids)
    final_df = store.final_losses().filter(pl.col("run_id").is_in(ids))
    names = dict(zip(wanted["run_id"], wanted["name"], strict=True))
    _run(lambda: plots.curves(points, final=final_df, x=cast(PlotX, x), names=names, path=output))
    typer.echo(f"wrote {output}")


@plot_app.command("stability")
def plot_stability(
    ctx: typer.Context,
    by: str | None = typer.Option(None, "--by", help="Group column."),
    input_: Path | None = _INPUT,
    output: Path = _OUTPUT,
) -> None:
    """Coefficients per group and across analysis choices."""
    from . import plots
    from .stability import stability as run_stability

    final_df = final_frame(ctx, input_)
    report = _run(lambda: run_stability(final_df, by=by, bootstrap=300))
    _run(lambda: plots.stability(report, path=output))
    typer.echo(f"wrote {output}")


@app.command()
def report(
    ctx: typer.Context,
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="The HTML file to write."),
    by: str | None = typer.Option(None, "--by", help="Group column for the stability benchmark."),
    law: str = typer.Option("step-law,deepseek,porian,microsoft", "--law", help="Published laws to compare."),
    method: str = typer.Option("quadratic", "--method", help="Fit: quadratic (vertices) or steplaw (the paper's)."),
    input_: Path | None = _INPUT,
    title: str = typer.Option("steplaw-db sweep report", "--title"),
) -> None:
    """One self-contained HTML report: cells, landscapes, fits, published laws, stability."""
    from .report import write_report

    final_df = final_frame(ctx, input_)
    runs_df = None if input_ is not None else open_store(ctx, create=False).runs()
    how = cast(LawMethod, method)
    _run(lambda: write_report(output, final_df, runs=runs_df, laws=_laws_of(law), by=by, method=how, title=title))
    typer.echo(f"wrote {output}")


# fit lr-bs, fit loss, fit curve, predict, evaluate (imported here: they need `app` first)
from .cli_curve import register as _register_curve_fit  # noqa: E402
from .cli_fit import register as _register_fits  # noqa: E402

_register_curve_fit(_register_fits(app))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
