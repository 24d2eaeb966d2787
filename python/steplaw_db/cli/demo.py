"""Synthetic sweeps: ``synth`` writes one with a known truth, ``demo`` ingests and analyses one."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from ._app import app
from ._progress import working
from ._util import EXIT_USAGE, fail, write_frame

if TYPE_CHECKING:
    from .._typing import SynthFormat

#: The demo's sweep: three shapes of the public Step Law data at three budgets each.
DEMO_CELLS = tuple(
    (*shape, d)
    for shape in ((960, 9368, 15, 7), (1280, 9472, 10, 10), (2048, 8192, 16, 16))
    for d in (1e10, 3e10, 1e11)
)
#: Where the demo predicts: a model and budget beyond the sweep.
DEMO_PREDICT = (7e9, 1.4e12)


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
    from .. import synth

    if format not in synth.FORMATS:
        fail(f"unknown --format '{format}' ({', '.join(synth.FORMATS)})", EXIT_USAGE)
    with working(f"synth: writing {out}"):
        df = synth.write_sweep(
            out,
            fmt=cast("SynthFormat", format),
            n_lr=n_lr,
            n_bs=n_bs,
            points=points,
            noise=noise,
            seed=seed,
            workers=workers,
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
    from .. import synth
    from ..fit import fit_law
    from ..optima import optima as find_optima
    from ..report import write_report
    from ..store import Store

    root = directory if directory is not None else Path(tempfile.mkdtemp(prefix="steplaw-demo-"))
    sweep, db_path = root / "sweep", root / "steplaw.db"
    if not sweep.exists():
        with working("demo: writing a synthetic sweep"):
            truth = synth.write_sweep(sweep, fmt="steplaw", cells=DEMO_CELLS)
        typer.echo(
            f"wrote a synthetic sweep of {len(truth)} runs ({len(DEMO_CELLS)} cells x 7 lr x 5 batch sizes) to {sweep}"
        )
    store = Store(db_path)
    report = store.ingest(sweep, progress=True)
    typer.echo(report.summary())
    runs_df = store.runs()
    final_df = store.final_losses()
    cells = find_optima(final_df, method="quadratic")
    shown = synth.TRUTH.with_optima(cells).select(
        "N", "D", "runs", "near_optimal", "loss_min", "lr_grid", "lr_quad", "lr_true",
        "bs_tokens_grid", "bs_tokens_quad", "bs_tokens_true", "flags",
    )  # fmt: skip
    typer.echo("\ncells (N, D): grid minimum, quadratic optimum and the true optimum of the synthetic law:")
    write_frame(shown, "table", None)
    with working("demo: fitting (1000 draws, twice)"):
        law = fit_law(final_df, "quadratic", bootstrap=1000)
        paper = fit_law(final_df, "steplaw", bootstrap=1000)
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
    with working("demo: report"):
        write_report(html_path, final_df, runs=runs_df, title="steplaw-db demo: a synthetic sweep", bootstrap=300)
    typer.echo(f"\nreport: {html_path}")
    typer.echo(f"store: {db_path} (version {store.version}, {len(runs_df)} runs, {report.points:,} points)")
    typer.echo(
        f"try: steplaw-db --db {db_path} optima   or   "
        f"python -c \"import steplaw_db as sl; print(sl.open('{db_path}').final_losses())\""
    )
