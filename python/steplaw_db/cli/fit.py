"""The laws' verbs: ``fit lr-bs``, ``fit loss`` and ``predict``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from ._app import (
    BY_OPTION,
    FORMAT_OPTION,
    INPUT_OPTION,
    OUTPUT_OPTION,
    SEED_OPTION,
    SEQ_LEN_OPTION,
    TABLE_FILE_OPTION,
    THRESHOLD_OPTION,
    app,
    cell_keys,
    fit_app,
    names,
    prose,
)
from ._progress import working
from ._util import EXIT_USAGE, fail, final_frame, write_frame

if TYPE_CHECKING:
    import polars as pl

    from .._typing import LawMethod, RegressionMethod, Resample
    from ..fit import EdgeTreatment
    from ..laws import HparamLaw, Law, LossLaw


def _designs(final: pl.DataFrame, keys: list[str]) -> list[str]:
    """The design keys of a fit: the keys beyond the regressors, then any design column that
    splits the cells (its note is printed by the fit itself)."""
    from ..optima import assign_cells

    extra = [k for k in keys if k not in ("N", "D", "C")]
    if final.is_empty():  # no cells to split: the fit refuses the data, after its options
        return extra
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = assign_cells(final, keys).split
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
    from ..fit import compare_laws, fit_laws

    laws = fit_laws(final, per, how, by=keys, **options)
    say = prose(fmt, table)
    failed = f"; {len(laws.failed)} not fitted (their rows say why)" if laws.failed else ""
    say(f"one law per design ({', '.join(per)}): {len(laws)} fitted{failed}")
    for label, one in laws.items():
        say(f"{label}: {_fit_summary(one)}")
        say(f"  {one.describe()}")
    write_frame(compare_laws(laws), fmt, table)
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


@fit_app.command("lr-bs")
def fit_lr_bs(
    ctx: typer.Context,
    input: Path | None = INPUT_OPTION,
    method: str = typer.Option(
        "quadratic",
        "--method",
        help="quadratic: each cell's quadratic vertex (recovers known laws best); "
        "steplaw: Step Law's procedure exactly (near-optimal runs, OLS).",
    ),
    by: str = BY_OPTION,
    threshold: float = THRESHOLD_OPTION,
    regression: str = typer.Option("ols", "--regression", help="ols or huber."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap draws (0: none)."),
    resample: str = typer.Option("rows", "--resample", help="Bootstrap unit: rows (Step Law) or cells."),
    seed: int = SEED_OPTION,
    lr_on: str = typer.Option("N,D", "--lr-on", help="Regressors of the LR law among N, D, C ('none' to skip)."),
    bs_on: str = typer.Option("D", "--bs-on", help="Regressors of the batch law among N, D, C ('none' to skip)."),
    edges: str = typer.Option(
        "keep",
        "--edges",
        help="Cells whose optimum sits on the grid's edge: keep, drop, or censor (a bound, quadratic method).",
    ),
    seq_len: int = SEQ_LEN_OPTION,
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Save the fitted law as JSON (one file per design: NAME.<design>.json)."
    ),
    fmt: str | None = FORMAT_OPTION,
    table: Path | None = TABLE_FILE_OPTION,
) -> None:
    """Fit lr = c N^a D^b and bs_tokens = d D^g to the sweep's cells."""
    from ..fit import fit_law

    keys = cell_keys(by)
    if missing := [k for k in ("N", "D") if k not in keys]:  # the regressors key the cells; designs come after
        fail(f"--by {by}: a law's cells are keyed by N and D; for one law per design: --by "
             f"{','.join([*missing, *keys])}", EXIT_USAGE)  # fmt: skip
    final = final_frame(ctx, input, seq_len=seq_len)
    per = _designs(final, keys)
    options: dict[str, Any] = {
        "threshold": threshold,
        "lr_on": tuple(names(lr_on)) or None,
        "bs_on": tuple(names(bs_on)) or None,
        "regression": cast("RegressionMethod", regression),
        "bootstrap": bootstrap,
        "seed": seed,
        "resample": cast("Resample", resample),
        "edges": cast("EdgeTreatment", edges),
    }
    how = cast("LawMethod", method)
    say = prose(fmt, table)
    if per:
        with working(f"fit lr-bs per {', '.join(per)} ({bootstrap} draws)"):
            _fit_per_design(final, per, [k for k in keys if k not in per], how, options, output, fmt, table)
        return
    with working(f"fit lr-bs ({bootstrap} draws)"):
        law = fit_law(final, how, by=keys, **options)
    say(_fit_summary(law))
    say(law.describe())
    write_frame(law.to_polars().drop("name"), fmt, table)
    _save(law, output, say)


@fit_app.command("loss")
def fit_loss(
    ctx: typer.Context,
    input: Path | None = INPUT_OPTION,
    bootstrap: int = typer.Option(0, "--bootstrap", help="Bootstrap draws (0: none)."),
    seed: int = SEED_OPTION,
    delta: float = typer.Option(1e-3, "--delta", help="Huber delta (log space)."),
    by: str = BY_OPTION,
    seq_len: int = SEQ_LEN_OPTION,
    output: Path | None = typer.Option(None, "-o", "--output", help="Save the fitted law as JSON."),
    fmt: str | None = FORMAT_OPTION,
    table: Path | None = TABLE_FILE_OPTION,
) -> None:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta to each cell's best loss (Huber, L-BFGS from 4,500 starts)."""
    from ..fit import fit_loss_law
    from ..optima import read_final_table

    final = (
        read_final_table(input, seq_len, required=("N", "D", "loss"))
        if input is not None
        else final_frame(ctx, None, seq_len=seq_len)
    )
    draws = f", {bootstrap} draws" if bootstrap else ""
    with working(f"fit loss (L-BFGS, grid of starts{draws})"):
        law = fit_loss_law(final, bootstrap=bootstrap, seed=seed, delta=delta, by=cell_keys(by))
    i = law.info
    say = prose(fmt, table)
    say(
        f"{i['points']} cells; best of {i['starts']} starts ({i['starts_converged']} converged); "
        f"objective {law.objective:.6g}"
    )
    say(repr(law))
    write_frame(law.to_polars(), fmt, table)
    _save(law, output, say)


#: ``predict``'s numbers: the law's point, its bootstrap interval (laws with draws), the batch
#: in tokens and in sequences, and that batch rounded to a usable size (``--round``).
PREDICT_COLUMNS = (
    "lr", "lr_lo", "lr_hi", "bs_tokens", "bs_tokens_lo", "bs_tokens_hi", "bs", "bs_rounded", "bs_tokens_rounded",
)  # fmt: skip


def _batch_multiple(text: str) -> int | None:
    """``--round``: ``pow2`` (None) or a whole number of sequences the batch is a multiple of."""
    if text.strip().lower() in ("pow2", "power-of-two", "2^k"):
        return None
    try:
        multiple = int(text)
    except ValueError:
        multiple = 0
    if multiple < 1:
        fail(f"--round: expected pow2 or a whole number of sequences (e.g. 64), got '{text}'", EXIT_USAGE)
    return multiple


def _predict_table(
    chosen: list[Law],
    n: float,
    d: float,
    seq_len: int,
    compute: float | None,
    loss: float | None,
    multiple: int | None,
    fmt: str | None,
    output: Path | None,
) -> None:
    """``predict``'s table: one row a law (lr, batch in tokens and in sequences, each with its
    bootstrap interval where the law has draws, and the batch rounded to a usable size)."""
    import polars as pl

    from ..laws import DEFAULT_INTERVAL, round_batch

    rows: list[dict[str, Any]] = []
    for one in chosen:
        row: dict[str, Any] = {"law": one.name, "note": ""}
        if "loss" in one.inputs and loss is None:
            row["note"] = "(needs --loss)"
        else:
            got = one.predict(N=n, D=d, C=compute, loss=loss, seq_len=seq_len).row(0, named=True)
            row.update({k: got.get(k) for k in PREDICT_COLUMNS})
        rows.append(row)
    schema = {"law": pl.String, **dict.fromkeys(PREDICT_COLUMNS, pl.Float64), "note": pl.String}
    table = pl.DataFrame(rows, schema=schema)
    rounded = pl.Series(round_batch(table["bs"].to_numpy(), multiple)).fill_nan(None)
    table = table.with_columns(bs_rounded=rounded, bs_tokens_rounded=rounded * seq_len)
    # the readable table leaves out what no law has: intervals (published laws), notes
    shown = [c for c in table.columns if table[c].null_count() < table.height and c != "note"]
    if (table["note"].str.len_chars() > 0).any():
        shown.append("note")
    to = "the nearest power of two" if multiple is None else f"the nearest multiple of {multiple}"
    prose(fmt, output)(
        f"N = {n:.4g}, D = {d:.4g}, seq_len {seq_len}: lr and batch (tokens, sequences), with the "
        f"{DEFAULT_INTERVAL:.0%} bootstrap interval of laws fitted with draws (_lo, _hi); "
        f"bs_rounded: the batch in sequences rounded to {to} (--round)"
    )
    write_frame(table.with_columns(N=pl.lit(n), D=pl.lit(d), seq_len=pl.lit(seq_len)), fmt, output, shown)


@app.command()
def predict(
    n: float = typer.Argument(..., metavar="N", help="Non-embedding parameters, e.g. 7e9."),
    d: float = typer.Argument(..., metavar="D", help="Training tokens, e.g. 1.4e12."),
    seq_len: int = SEQ_LEN_OPTION,
    law: str = typer.Option(
        "step-law",
        "--law",
        help="step-law, deepseek, porian, openai, minicpm, microsoft, all, or a law .json (comma-separated).",
    ),
    loss: float | None = typer.Option(None, "--loss", help="Loss value for the laws that need one (openai, minicpm)."),
    compute: float | None = typer.Option(None, "--compute", help="Training FLOPs C for compute laws (default: 6 N D)."),
    round_: str = typer.Option(
        "pow2",
        "--round",
        help="Round the batch to a usable size: pow2 (nearest power of two in ratio) or a whole number of "
        "sequences it must be a multiple of (e.g. data-parallel ranks x micro-batch).",
    ),
    fmt: str | None = FORMAT_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """Predict the optimal peak learning rate and batch size for N parameters and D tokens
    (a fitted law saved by `fit lr-bs -o` gives its bootstrap interval too)."""
    from .. import laws as published

    multiple = _batch_multiple(round_)
    chosen = published.resolve(law)
    if not (n > 0 and d > 0 and math.isfinite(n) and math.isfinite(d)):
        fail("N and D must be positive numbers", EXIT_USAGE)
    if len(chosen) == 1 and "loss" in chosen[0].inputs and loss is None:
        fail(f"law '{chosen[0].name}' needs a loss value: pass --loss", EXIT_USAGE)
    _predict_table(chosen, n, d, seq_len, compute, loss, multiple, fmt, output)
