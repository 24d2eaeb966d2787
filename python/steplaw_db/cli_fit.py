"""Command-line verbs of the fitting engine: ``fit lr-bs``, ``fit loss``, ``predict`` and
``evaluate``. :func:`register` adds them to the main ``steplaw-db`` app."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from ._cli_util import DEFAULT_SEQ_LEN, FORMAT_OPTION, MACHINE_FORMATS, OUTPUT_OPTION, final_frame, resolve_format
from ._cli_util import fail as _fail
from ._cli_util import run as _run
from ._cli_util import write_frame as _write_frame
from ._typing import EvaluateMethod, LawMethod, RegressionMethod, Resample

if TYPE_CHECKING:
    import polars as pl

    from .fit import EdgeTreatment
    from .laws import HparamLaw, Law, LossLaw

# Option strings go to the library as typed (hence the casts): the library checks them.

__all__ = ["register"]


def _names(text: str) -> tuple[str, ...] | None:
    if text.strip().lower() in ("", "none", "-"):
        return None
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _prose(fmt: str | None, table: Path | None) -> Callable[[str], None]:
    """Where a command's sentences go: stdout beside a readable table, stderr when stdout
    carries a machine format (csv, json), so that it stays parseable."""
    machine = table is None and resolve_format(fmt, None) in MACHINE_FORMATS
    return partial(typer.echo, err=machine)


def _designs(final: pl.DataFrame, keys: list[str]) -> list[str]:
    """The design keys of a fit: the keys beyond the regressors, then any design column that
    splits the cells (its note is printed by the fit itself)."""
    from .optima import assign_cells

    extra = [k for k in keys if k not in ("N", "D", "C")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = _run(lambda: assign_cells(final, keys).split)
    return [*extra, *[k for k in split if k not in extra]]


def _fit_per_design(
    final: pl.DataFrame,
    per: list[str],
    keys: list[str],
    how: LawMethod,
    options: dict[str, Any],
    output: Path | None,
    fmt: str | None,
    table: Path | None,
) -> None:
    """``fit lr-bs`` with design keys: one law per design, printed side by side, saved apart."""
    from .fit import compare_laws, fit_laws

    laws = _run(lambda: fit_laws(final, per, how, by=keys, **options))
    say = _prose(fmt, table)
    say(f"one law per design ({', '.join(per)}): {len(laws)} laws")
    for label, one in laws.items():
        say(f"{label}: {_fit_summary(one)}")
        say(f"  {one.describe()}")
    _write_frame(compare_laws(laws), fmt, table)
    for label, one in laws.items():
        if output is not None:
            path = output.with_name(f"{output.stem}.{label}{output.suffix or '.json'}")
            one.save(path)
            say(f"saved {label} to {path}")


def _save(law: HparamLaw | LossLaw, output: Path | None, say: Callable[[str], None]) -> None:
    if output:
        law.save(output)
        say(f"saved to {output}")


def _fit_summary(law: HparamLaw) -> str:
    i = law.info
    if i.get("procedure") == "steplaw":
        what = (
            f"{i['samples']} near-optimal samples (within {i['threshold']:.4%} of their cell's minimum) "
            f"in {i['cells']} cells (Step Law's procedure)"
        )
    else:
        what = f"{i['cells']} cells, one quadratic vertex each, weighted by its precision"
    unit = "cells" if i.get("procedure") == "quadratic" else i["resample"]  # one row a cell: rows are cells
    return f"{what}; {i['method']}, {i['bootstrap']} bootstrap draws over {unit}, coefficients = {i['center']}"


_SEQ_LEN = typer.Option(DEFAULT_SEQ_LEN, "--seq-len", help="Sequence length when the table's batch is in sequences.")
INPUT_HELP = (
    "Final-loss table (.csv or .parquet; the Step Law CSV layout is recognised). Default: the store's final losses."
)


def _predict_table(
    chosen: list[Law],
    n: float,
    d: float,
    seq_len: int,
    compute: float | None,
    loss: float | None,
    fmt: str | None,
    output: Path | None,
) -> None:
    """``predict``'s table: one row a law (lr, batch in tokens and in sequences)."""
    import polars as pl

    rows: list[dict[str, Any]] = []
    for one in chosen:
        row: dict[str, Any] = {"law": one.name, "lr": None, "bs_tokens": None, "bs": None, "note": ""}
        if "loss" in one.inputs and loss is None:
            row["note"] = "(needs --loss)"
        else:
            got = _run(partial(one.predict, N=n, D=d, C=compute, loss=loss, seq_len=seq_len, interval=None))
            row.update({k: got.row(0, named=True)[k] for k in ("lr", "bs_tokens", "bs")})
        rows.append(row)
    schema = {"law": pl.String, "lr": pl.Float64, "bs_tokens": pl.Float64, "bs": pl.Float64, "note": pl.String}
    table = pl.DataFrame(rows, schema=schema)
    if not (table["note"].str.len_chars() > 0).any():
        table = table.drop("note")
    shown = table.columns
    _prose(fmt, output)(f"N = {n:.4g}, D = {d:.4g}, seq_len {seq_len}: lr, batch in tokens and in sequences")
    _write_frame(table.with_columns(N=pl.lit(n), D=pl.lit(d), seq_len=pl.lit(seq_len)), fmt, output, shown)


def register_cells(app: typer.Typer, input_help: str) -> None:
    """Add ``cells`` and ``near-optimal`` to ``app``."""

    @app.command("cells")
    def cells_cmd(
        ctx: typer.Context,
        by: str = typer.Option("N,D", "--by", help="Cell keys, comma-separated (e.g. N,D,moe_name)."),
        input: Path | None = typer.Option(None, "--input", "-i", help=input_help),
        smooth: str = typer.Option("robust", "--smooth", help="Smoothing of the final losses (store only)."),
        seq_len: int = _SEQ_LEN,
        fmt: str | None = FORMAT_OPTION,
        output: Path | None = OUTPUT_OPTION,
    ) -> None:
        """The cells every analysis uses: keys, runs, grid, what was merged or split."""
        from .optima import cells

        final = final_frame(ctx, input, seq_len=seq_len, smooth=smooth)
        table = _run(lambda: cells(final, _names(by) or ("N", "D")))
        _write_frame(table, fmt, output, table.columns)

    @app.command("near-optimal")
    def near_optimal_cmd(
        ctx: typer.Context,
        by: str = typer.Option("N,D", "--by", help="Cell keys, comma-separated (e.g. N,D,recipe)."),
        threshold: float = typer.Option(0.0025, "--threshold", help="Within this fraction of the cell minimum."),
        input: Path | None = typer.Option(None, "--input", "-i", help=input_help),
        smooth: str = typer.Option("robust", "--smooth", help="Smoothing of the final losses (store only)."),
        seq_len: int = _SEQ_LEN,
        fmt: str | None = FORMAT_OPTION,
        output: Path | None = OUTPUT_OPTION,
    ) -> None:
        """The runs within --threshold of their cell's minimum (Step Law's regression samples)."""
        from .optima import near_optimal

        final = final_frame(ctx, input, seq_len=seq_len, smooth=smooth)
        rows = _run(lambda: near_optimal(final, _names(by) or ("N", "D"), threshold))
        shown = ["cell", *[c for c in ("name", "lr", "bs_tokens", "loss", "rel_loss", "status") if c in rows.columns]]
        _write_frame(rows, fmt, output, shown)


def register(app: typer.Typer) -> typer.Typer:
    """Add ``fit lr-bs``, ``fit loss``, ``predict`` and ``evaluate`` to ``app``; returns the
    ``fit`` sub-app (other fits, such as ``fit curve``, join it)."""
    fit_app = typer.Typer(help="Fit scaling laws to a sweep's final losses.", no_args_is_help=True)
    app.add_typer(fit_app, name="fit")
    input_help = INPUT_HELP
    register_cells(app, input_help)

    @fit_app.command("lr-bs")
    def fit_lr_bs_cmd(
        ctx: typer.Context,
        input: Path | None = typer.Option(None, "--input", "-i", help=input_help),
        method: str = typer.Option(
            "quadratic",
            "--method",
            help="quadratic: each cell's quadratic vertex (recovers known laws best); "
            "steplaw: Step Law's procedure exactly (near-optimal runs, OLS).",
        ),
        by: str = typer.Option(
            "N,D", "--by", help="Cell keys; keys beyond N, D (e.g. moe_name, recipe) fit one law per design."
        ),
        threshold: float = typer.Option(
            0.0025, "--threshold", help="steplaw: near-optimal within this fraction of the cell minimum."
        ),
        regression: str = typer.Option("ols", "--regression", help="ols or huber."),
        bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap draws (0: none)."),
        resample: str = typer.Option("rows", "--resample", help="Bootstrap unit: rows (Step Law) or cells."),
        seed: int = typer.Option(42, "--seed"),
        lr_on: str = typer.Option("N,D", "--lr-on", help="Regressors of the LR law among N, D, C ('none' to skip)."),
        bs_on: str = typer.Option("D", "--bs-on", help="Regressors of the batch law among N, D, C ('none' to skip)."),
        edges: str = typer.Option(
            "keep",
            "--edges",
            help="Cells whose optimum sits on the grid's edge: keep, drop, or censor (a bound, quadratic method).",
        ),
        seq_len: int = _SEQ_LEN,
        output: Path | None = typer.Option(
            None, "-o", "--output", help="Save the fitted law as JSON (one file per design: NAME.<design>.json)."
        ),
        fmt: str | None = typer.Option(
            None, "--format", help="The coefficients table on stdout: table, csv, json, markdown or latex."
        ),
        table: Path | None = typer.Option(None, "--table", help="Write the coefficients table to FILE."),
    ) -> None:
        """Fit lr = c N^a D^b and bs_tokens = d D^g to the sweep's cells."""
        from .fit import fit_law

        final = final_frame(ctx, input, seq_len=seq_len)
        keys = list(_names(by) or ("N", "D"))
        per = _designs(final, keys)
        options: dict[str, Any] = {
            "threshold": threshold,
            "lr_on": _names(lr_on),
            "bs_on": _names(bs_on),
            "regression": cast(RegressionMethod, regression),
            "bootstrap": bootstrap,
            "seed": seed,
            "resample": cast(Resample, resample),
            "edges": cast("EdgeTreatment", edges),
        }
        how = cast(LawMethod, method)
        say = _prose(fmt, table)
        if per:
            _fit_per_design(final, per, [k for k in keys if k not in per], how, options, output, fmt, table)
            return
        law = _run(lambda: fit_law(final, how, by=keys, **options))
        say(_fit_summary(law))
        say(law.describe())
        _write_frame(law.to_polars().drop("name"), fmt, table)
        _save(law, output, say)

    @fit_app.command("loss")
    def fit_loss_cmd(
        ctx: typer.Context,
        input: Path | None = typer.Option(None, "--input", "-i", help=input_help),
        bootstrap: int = typer.Option(0, "--bootstrap", help="Bootstrap draws (0: none)."),
        seed: int = typer.Option(42, "--seed"),
        delta: float = typer.Option(1e-3, "--delta", help="Huber delta (log space)."),
        by: str = typer.Option("N,D", "--by", help="Cell keys, comma-separated (each cell gives its best loss)."),
        seq_len: int = _SEQ_LEN,
        output: Path | None = typer.Option(None, "-o", "--output", help="Save the fitted law as JSON."),
        fmt: str | None = typer.Option(
            None, "--format", help="The parameters table on stdout: table, csv, json, markdown or latex."
        ),
        table: Path | None = typer.Option(None, "--table", help="Write the parameters table to FILE."),
    ) -> None:
        """Fit L(N, D) = E + A/N^alpha + B/D^beta to each cell's best loss (Huber, L-BFGS from 4,500 starts)."""
        from .fit import fit_loss_law
        from .optima import read_final_table

        loss_table = input
        final = (
            _run(lambda: read_final_table(loss_table, seq_len, required=("N", "D", "loss")))
            if loss_table is not None
            else final_frame(ctx, None, seq_len=seq_len)
        )
        keys = _names(by) or ("N", "D")
        law = _run(lambda: fit_loss_law(final, bootstrap=bootstrap, seed=seed, delta=delta, by=keys))
        i = law.info
        say = _prose(fmt, table)
        say(
            f"{i['points']} cells; best of {i['starts']} starts ({i['starts_converged']} converged); "
            f"objective {law.objective:.6g}"
        )
        say(repr(law))
        _write_frame(law.to_polars(), fmt, table)
        _save(law, output, say)

    @app.command("predict")
    def predict_cmd(
        n: float = typer.Argument(..., metavar="N", help="Non-embedding parameters, e.g. 7e9."),
        d: float = typer.Argument(..., metavar="D", help="Training tokens, e.g. 1.4e12."),
        seq_len: int = typer.Option(
            DEFAULT_SEQ_LEN, "--seq-len", help="Sequence length (batch in sequences = tokens / seq_len)."
        ),
        law: str = typer.Option(
            "step-law",
            "--law",
            help="step-law, deepseek, porian, openai, minicpm, microsoft, all, or a law .json (comma-separated).",
        ),
        loss: float | None = typer.Option(
            None, "--loss", help="Loss value for the laws that need one (openai, minicpm)."
        ),
        compute: float | None = typer.Option(
            None, "--compute", help="Training FLOPs C for compute laws (default: 6 N D)."
        ),
        fmt: str | None = FORMAT_OPTION,
        output: Path | None = OUTPUT_OPTION,
    ) -> None:
        """Predict the optimal peak learning rate and batch size for N parameters and D tokens."""
        from . import laws as published

        chosen = _run(lambda: published.resolve(law))
        if not (n > 0 and d > 0 and math.isfinite(n) and math.isfinite(d)):
            _fail("N and D must be positive numbers", 2)
        if len(chosen) == 1 and "loss" in chosen[0].inputs and loss is None:
            _fail(f"law '{chosen[0].name}' needs a loss value: pass --loss", 2)
        _predict_table(chosen, n, d, seq_len, compute, loss, fmt, output)

    @app.command("evaluate")
    def evaluate_cmd(
        ctx: typer.Context,
        input: Path | None = typer.Option(None, "--input", "-i", help=input_help),
        law: str = typer.Option("all", "--law", help="Laws to compare (names, .json files, comma-separated, or all)."),
        seq_len: int = _SEQ_LEN,
        per_cell: bool = typer.Option(False, "--per-cell", help="Also print every (law, cell) row."),
        method: str = typer.Option(
            "nearest", "--method", help="nearest (grid point in log space) or quadratic (the cell's fitted surface)."
        ),
        by: str = typer.Option("N,D", "--by", help="Cell keys, comma-separated (e.g. N,D,recipe)."),
        output: Path | None = typer.Option(
            None, "-o", "--output", help="Write the per-cell rows to FILE (in --format, else by its extension)."
        ),
        fmt: str | None = FORMAT_OPTION,
    ) -> None:
        """Relative loss error of each law on the measured cells (Step Law's Table 1)."""
        import polars as pl

        from .fit import evaluate

        final = final_frame(ctx, input, seq_len=seq_len)
        keys = _names(by) or ("N", "D")
        how = cast(EvaluateMethod, method)
        rows = _run(lambda: evaluate(law, final, by=keys, seq_len=seq_len, method=how))
        summary = rows.group_by("law", maintain_order=True).agg(
            pl.len().alias("cells"),
            (pl.col("rel_error").median() * 100).alias("median_%"),
            (pl.col("rel_error").mean() * 100).alias("mean_%"),
            (pl.col("rel_error").max() * 100).alias("max_%"),
            (pl.col("rel_error") == 0).sum().alias("at_optimum"),
        )
        where = "nearest grid point" if method == "nearest" else "prediction on the cell's quadratic surface"
        if output is not None:  # the rows to the file, the summary to stdout
            _write_frame(rows, fmt, output)
            _write_frame(summary, None if resolve_format(fmt, output) in MACHINE_FORMATS else fmt, None)
            typer.echo(f"wrote {len(rows)} rows to {output}", err=True)
            return
        say = _prose(fmt, None)
        say(f"relative error of the loss at each law's {where} vs the cell minimum")
        if resolve_format(fmt, None) in MACHINE_FORMATS:  # one table: the rows or the summary
            _write_frame(rows if per_cell else summary, fmt, None)
            return
        _write_frame(summary, fmt, None)
        if per_cell:
            typer.echo("")
            _write_frame(rows, fmt, None)

    return fit_app
