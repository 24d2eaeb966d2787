"""Synthetic sweeps: ``synth`` writes one with a known truth, ``demo`` ingests and analyses one."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from ._app import app, names
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


#: write_sweep's parameters as the command line names them (its ValueErrors name the parameter).
_SYNTH_FLAGS = {
    "fmt": "--format",
    "n_lr": "--n-lr",
    "n_bs": "--n-bs",
    "points": "--points",
    "noise": "--noise",
    "seed": "--seed",
    "workers": "--workers",
    "recipes": "--recipes",
    "diverge_runs": "--diverge-runs",
    "final_noise": "--final-noise",
    "plateau_lr_factor": "--plateau-lr-factor",
}


def _recipe_names(text: str) -> list[str]:
    """``--recipes``' names: distinct, each a directory name (synth.RECIPE_NAME_RE)."""
    from .. import synth

    given = names(text)
    if not given:
        fail(f"--recipes: expected comma-separated recipe names, got '{text}'", EXIT_USAGE)
    bad = [r for r in given if not synth.RECIPE_NAME_RE.match(r)]
    if bad:
        fail(
            f"--recipes: {', '.join(repr(r) for r in bad)}: a recipe name is a letter or digit, then letters, "
            "digits, '.', '_' or '-' (it names a directory)",
            EXIT_USAGE,
        )
    repeated = sorted({r for r in given if given.count(r) > 1})
    if repeated:
        fail(f"--recipes: {', '.join(repeated)} given twice", EXIT_USAGE)
    return given


def _check_number(flag: str, value: float, *, positive: bool = False) -> None:
    """A finite number >= 0 (> 0 with ``positive``), else exit 2 naming ``flag``."""
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        fail(f"{flag} must be a finite number {'> 0' if positive else '>= 0'}, got {value}", EXIT_USAGE)


@app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(..., help="Directory to write the sweep into."),
    format: str = typer.Option("steplaw", "--format", help="steplaw, megatron, jsonl or csv."),
    n_lr: int = typer.Option(7, "--n-lr", min=1, help="Learning rates per cell."),
    n_bs: int = typer.Option(5, "--n-bs", min=1, help="Batch sizes per cell."),
    points: int = typer.Option(200, "--points", min=1, help="Log entries per run."),
    noise: float = typer.Option(0.005, "--noise", help="Relative noise of each logged loss (an SD: 0.005 = 0.5%)."),
    seed: int = typer.Option(0, "--seed", min=0),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes writing runs."),
    # Defaults of None: write_sweep's own (every shape off) apply; its signature is their one definition.
    recipes: str | None = typer.Option(
        None,
        "--recipes",
        help="Data recipes, comma-separated (e.g. web,code): each recipe's runs under OUT/<recipe>/ with a "
        "'recipe' in their config.json, every recipe on the same cells and Step Law's law. Default: one "
        "sweep, no recipe.",
    ),
    diverge_runs: int | None = typer.Option(
        None,
        "--diverge-runs",
        min=0,
        help="Number of runs that diverge whatever their lr (a bad node, a loss spike), picked by --seed among "
        "the runs that neither diverge (the top learning rates) nor plateau. Default: none.",
    ),
    final_noise: float | None = typer.Option(
        None,
        "--final-noise",
        help="Run-to-run noise of the final loss (seeds, data order): a relative SD, 0.003 = 0.3%; each run's "
        "curve is shifted by its own draw. Default: none.",
    ),
    plateau_lr_factor: float | None = typer.Option(
        None,
        "--plateau-lr-factor",
        help="Runs at a peak lr >= this multiple of their cell's optimal lr never leave the early plateau (their "
        "loss stays near the unigram entropy, finite, not diverged). Default: none.",
    ),
) -> None:
    """Write a synthetic sweep with a known ground truth (Step Law's law by default)."""
    from .. import synth

    if format not in synth.FORMATS:
        fail(f"unknown --format '{format}' ({', '.join(synth.FORMATS)})", EXIT_USAGE)
    shapes: dict[str, Any] = {}
    if recipes is not None:
        shapes["recipes"] = dict.fromkeys(_recipe_names(recipes), synth.TRUTH)
    if diverge_runs is not None:
        shapes["diverge_runs"] = diverge_runs
    if final_noise is not None:
        _check_number("--final-noise", final_noise)
        shapes["final_noise"] = final_noise
    if plateau_lr_factor is not None:
        _check_number("--plateau-lr-factor", plateau_lr_factor, positive=True)
        shapes["plateau_lr_factor"] = plateau_lr_factor
    _check_number("--noise", noise)
    try:
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
                **shapes,
            )
    except ValueError as e:  # write_sweep refuses arguments before it writes a run
        fail(re.sub(r"\b\w+\b", lambda m: _SYNTH_FLAGS.get(m[0], m[0]), str(e)), EXIT_USAGE)
    parts = [f"{df['diverged'].sum()} diverging"]
    if plateau_lr_factor is not None:
        parts.append(f"{df['plateau'].sum()} on the plateau")
    if "recipe" in df.columns:
        parts.append(
            "recipes " + ", ".join(f"{r} {n}" for r, n in df.group_by("recipe", maintain_order=True).len().rows())
        )
    typer.echo(f"wrote {len(df)} runs ({'; '.join(parts)}) in {format} format to {out}; truth in {out / 'truth.json'}")


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
