"""Fitting scaling laws: the optimal learning rate and batch as power laws of N, D (or C),
the Chinchilla loss law, and the evaluation of any law against measured cells.

The numerical work (least squares, Huber IRLS, L-BFGS, bootstrap) runs in the Rust core
(``steplaw_db._native``); this module prepares the inputs and wraps the results in the law
types of :mod:`steplaw_db.laws` (:class:`~steplaw_db.laws.HparamLaw`,
:class:`~steplaw_db.laws.LossLaw`).

A synthetic sweep whose truth is Step Law's law (lr = 1.79 N^-0.713 D^0.307, batch = 0.58
D^0.571 tokens), three model sizes at three budgets, fitted by the default method (each cell's
quadratic vertex) and by Step Law's reference procedure (near-optimal runs, OLS):

>>> import tempfile
>>> import warnings
>>> import steplaw_db as sl
>>> tmp = tempfile.TemporaryDirectory()
>>> shapes = ((960, 9368, 15, 7), (1280, 9472, 10, 10), (2048, 8192, 16, 16))  # h, ffnh, numh, numl
>>> cells = [(*shape, D) for shape in shapes for D in (1e10, 3e10, 1e11)]
>>> truth = sl.synth.write_sweep(f"{tmp.name}/runs", cells=cells, points=50)
>>> db = sl.open(f"{tmp.name}/steplaw.db")
>>> db.ingest(f"{tmp.name}/runs").added
315
>>> warnings.simplefilter("ignore", sl.AnalysisWarning)  # D = steps x batch: ppm apart in a cell, one level
>>> law = sl.fit_law(db.final_losses(), bootstrap=200)
>>> {k: round(v, 2) for k, v in law.coefficients().items()}
{'lr_intercept': 0.43, 'lr_coefN': -0.74, 'lr_coefD': 0.33, 'bs_intercept': -0.3, 'bs_coefD': 0.56}
>>> p = law.predict(N=7e9, D=1.4e12).row(0, named=True)  # far beyond the sweep
>>> f"lr {p['lr']:.1e} (95% {p['lr_lo']:.1e} to {p['lr_hi']:.1e}); true {sl.synth.lr_opt(7e9, 1.4e12):.1e}"
'lr 9.6e-04 (95% 7.6e-04 to 1.3e-03); true 9.2e-04'
>>> paper = sl.fit_law(db.final_losses(), "steplaw", bootstrap=200)  # = fit_lr_bs(near_optimal(...))
>>> {k: round(v, 2) for k, v in paper.coefficients().items()}
{'lr_intercept': 2.05, 'lr_coefN': -0.76, 'lr_coefD': 0.29, 'bs_intercept': -0.2, 'bs_coefD': 0.56}
>>> p = paper.predict(N=7e9, D=1.4e12).row(0, named=True)
>>> f"lr {p['lr']:.1e} (95% {p['lr_lo']:.1e} to {p['lr_hi']:.1e})"
'lr 7.2e-04 (95% 3.9e-04 to 1.3e-03)'
>>> tmp.cleanup()
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, get_args

import numpy as np
import polars as pl

from . import _native
from ._typing import (
    Center,
    DesignPolicy,
    EvaluateMethod,
    LawMethod,
    LossLawForm,
    PerCell,
    RegressionMethod,
    Resample,
    as_float,
)
from .errors import InsufficientDataError, InvalidArgumentError
from .laws import VARIABLES, HparamLaw, Law, LossLaw, PowerLaw, _compute, resolve
from .optima import (
    CELL_KEYS,
    DEFAULT_SEQ_LEN,
    DEFAULT_THRESHOLD,
    LEVEL_TOLERANCE,
    AnalysisWarning,
    assign_cells,
    edge_counts,
    edge_notes,
    edge_side,
    last_checkpoints,
    near_optimal,
    optima,
    quadratic_surface,
    warn,
    with_bs_tokens,
)

#: What a law fit does with a cell whose optimum sits on the grid's edge (``fit_law(edges=...)``).
EdgeTreatment: TypeAlias = Literal["keep", "drop", "censor"]

__all__ = [
    "DesignLaws", "LawSpec", "compare_laws", "evaluate", "evaluation_summary", "fit_law", "fit_laws", "fit_loss_law",
    "fit_lr_bs", "leave_one_cell_out",
]  # fmt: skip

#: Laws to evaluate: a law, a published law's name or a spec (``"step-law,deepseek"``,
#: ``"all"``, a saved law's ``.json``), a mapping label -> law, or a sequence of these.
LawSpec: TypeAlias = "Law | str | Mapping[str, LawSpec] | Sequence[LawSpec]"


def _keys(by: str | Sequence[str]) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def _require(df: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InvalidArgumentError(f"{what} has no column(s) {missing} (columns: {df.columns})")


def _check_fit_options(method: str, bootstrap: int, center: str, resample: str | None) -> None:
    """Refuse a bad option of a power-law fit before any data is looked at: a wrong option is the
    caller's error (exit 2) whatever the data, and a sweep too thin to fit must not hide it."""
    for what, value, allowed in (
        ("regression method", method, get_args(RegressionMethod)),
        ("bootstrap resampling", resample, get_args(Resample)),
        ("center", center, get_args(Center)),
    ):
        if value is not None and value not in allowed:
            raise InvalidArgumentError(f"unknown {what} {value!r} ({', '.join(allowed)})")
    if bootstrap < 0:
        raise InvalidArgumentError(f"bootstrap must be >= 0, got {bootstrap}")


def _regressor_column(df: pl.DataFrame, var: str) -> np.ndarray:
    if var == "C" and "C" not in df.columns:
        return _compute(df["N"].cast(pl.Float64).to_numpy(), df["D"].cast(pl.Float64).to_numpy())
    return df[var].cast(pl.Float64).to_numpy()


def _log(a: np.ndarray) -> list[float]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(a).tolist()


def _check_on(on: Sequence[str] | None, what: str) -> tuple[str, ...] | None:
    if on is None:
        return None
    on = (on,) if isinstance(on, str) else tuple(on)
    bad = [v for v in on if v not in VARIABLES]
    if bad or len(set(on)) != len(on):
        raise InvalidArgumentError(f"{what} must be distinct names among {VARIABLES}, got {on}")
    return on


def _weight_columns(weights: str | Mapping[str, str] | None) -> dict[str, str]:
    """``weights`` as ``{"lr": column, "bs": column}`` (either may be absent)."""
    if isinstance(weights, str):
        return {"lr": weights, "bs": weights}
    columns = dict(weights or {})
    unknown = set(columns) - {"lr", "bs"}
    if unknown:
        raise InvalidArgumentError(f"weights keys must be 'lr' and/or 'bs', got {sorted(unknown)}")
    return columns


def _regressor_columns(regressors: set[str], columns: Sequence[str]) -> list[str]:
    """The columns the regressors are read from: each one's own, N and D for a C that is not
    a column (6 N D)."""
    derive_c = "C" in regressors and "C" not in columns
    return [v for v in VARIABLES if (v in regressors and not (v == "C" and derive_c)) or (derive_c and v in ("N", "D"))]


def _power_law(
    target: str, on: tuple[str, ...], fit: _native._LinearFit, draws: list[list[float]], center: Center
) -> PowerLaw:
    """One fitted response: the full-sample fit, the bootstrap draws and the coefficients by
    ``center`` (the mean of the finite draws, or the full-sample fit)."""
    point = np.asarray(fit["coef"], dtype=float)
    samples = np.asarray(draws, dtype=float).reshape(len(draws), len(on) + 1) if draws else None
    coef = point
    if center == "mean" and samples is not None and np.isfinite(samples).all(axis=1).any():
        coef = np.nanmean(samples[np.isfinite(samples).all(axis=1)], axis=0)
    return PowerLaw(target, on, coef, point, samples, fit["r2"], fit["scale"])


#: Per-cell vertices are weighted by 1 / (sd^2 + VERTEX_SD_FLOOR^2), sd their bootstrap SD in
#: log space: a cell whose vertex is pinned down counts more, but no cell counts as if exact.
VERTEX_SD_FLOOR = 0.05
#: The log-space SD of a vertex without a bootstrap interval: the rounding of a grid a factor
#: sqrt(2) apart (ln sqrt(2) / sqrt(12)).
GRID_SD = 0.1


def _vertex_samples(
    table: pl.DataFrame, weights: str | Mapping[str, str] | None
) -> tuple[pl.DataFrame, str | Mapping[str, str] | None]:
    """An :func:`~steplaw_db.optima.optima` frame as regression samples: one row per cell at its
    optimum (``lr_opt``, ``bs_tokens_opt``). Cells whose quadratic was unusable (``optimum ==
    "grid-fallback"``: not convex, vertex outside the grid) are left out with a note: their grid
    minimum is no measurement of the optimum at the noise that broke the quadratic, and keeping
    them made the law worse on synthetic sweeps (docs/fitting.md). Unless ``weights`` says
    otherwise, a vertex weighs 1 / (sd^2 + VERTEX_SD_FLOOR^2), sd from its 95% bootstrap
    interval (width / 3.92: a few wild draws of a flat quadratic do not inflate it as they do
    the SD)."""
    _require(table, ["lr_opt", "bs_tokens_opt"], "the optima frame")
    out = table.with_columns(lr=pl.col("lr_opt"), bs_tokens=pl.col("bs_tokens_opt"))
    if "optimum" in out.columns:
        fallback = out.filter(pl.col("optimum") == "grid-fallback")
        if fallback.height:
            why = ", ".join(sorted({f for flags in fallback["flags"] for f in str(flags).split(",")} & _UNUSABLE))
            if fallback.height == out.height:  # the error says it; a warning too would say it twice
                raise InsufficientDataError(
                    f"no usable quadratic vertex in any of the {fallback.height} cells ({why}): the grids are too "
                    "small or too noisy for the vertex method; --method steplaw fits the grid minima"
                )
            warn(
                [
                    f"{fallback.height} of {out.height} cells have no usable quadratic vertex ({why}): left out of the "
                    "fit (their grid minimum is no measurement of the optimum; --method steplaw uses every cell)"
                ],
                stacklevel=4,
            )
            out = out.filter(pl.col("optimum") != "grid-fallback")
    if weights is None and "lr_quad_lo" in out.columns and (out["optimum"] == "vertex").all():
        floor = VERTEX_SD_FLOOR**2

        def weight(lo: str, hi: str, width: str) -> pl.Expr:
            # the interval's measured width (its ends may read 0 / inf: unbounded, optima)
            # (cast: a column of nulls only has dtype null, which polars' log refuses)
            w = (
                pl.col(width).cast(pl.Float64)
                if width in out.columns
                else (pl.col(hi).cast(pl.Float64) / pl.col(lo).cast(pl.Float64)).log()
            )
            return 1.0 / ((w / 3.92).fill_null(GRID_SD) ** 2 + floor)

        out = out.with_columns(
            _w_lr=weight("lr_quad_lo", "lr_quad_hi", "lr_log_width"),
            _w_bs=weight("bs_tokens_quad_lo", "bs_tokens_quad_hi", "bs_log_width"),
        )
        weights = {"lr": "_w_lr", "bs": "_w_bs"}
    return out, weights


#: The flags of a cell whose quadratic cannot stand for its optimum.
_UNUSABLE = {"not-convex", "no-quadratic", "vertex-outside-grid"}


#: A regressor must span at least this much in natural-log space over the cells (0.1: about 10%)
#: for its exponent to be fitted: designs whose N differ by < 1% give none, and an unsnapped N
#: gave N^+20.
MIN_LOG_SPREAD = 0.1
#: Regressors this correlated over the cells (condition number of their correlation matrix) trade
#: their exponents off: warned above WARN_CONDITION (correlation 0.94 for two), refused above
#: MAX_CONDITION (0.998). The public dense cells' N and D: 1.6.
WARN_CONDITION = 30.0
MAX_CONDITION = 1e3
#: An exponent whose 95% interval is wider than this is reported as not determined by the cells.
MAX_INTERVAL_WIDTH = 1.0


@dataclass(frozen=True)
class _Inputs:
    """One log-space regression as handed to the core: ``y`` on ``columns`` (logs of ``on``)."""

    target: str
    on: tuple[str, ...]
    columns: list[list[float]]
    y: list[float]
    weights: list[float] | None


def _cell_design(m: _Inputs, cells: list[int]) -> np.ndarray | None:
    """One row per cell (its regressors' logs) of the rows that enter the fit; None when a value
    is not finite (the core refuses those with its own message)."""
    x = np.column_stack(m.columns) if m.columns else np.empty((len(cells), 0))
    use = np.ones(len(cells), dtype=bool) if m.weights is None else np.asarray(m.weights, dtype=float) > 0
    if not np.isfinite(x).all():
        return None
    labels = np.asarray(cells, dtype=np.uint64)[use]
    _, first = np.unique(labels, return_index=True)
    return x[use][np.sort(first)]


def _check_designs(inputs: Sequence[_Inputs], cells: list[int]) -> list[str]:
    """Refuse a regressor that barely varies over the cells (its exponent would be noise) or
    regressors so correlated that their exponents trade off; warn when they are correlated."""
    notes = []
    for m in inputs:
        target, on = m.target, m.on
        x = _cell_design(m, cells)
        if x is None or len(x) < 2:
            continue
        spread = x.max(axis=0) - x.min(axis=0)
        for var, sp in zip(on, spread, strict=True):
            if 0 < sp < MIN_LOG_SPREAD:
                raise InsufficientDataError(
                    f"{target}: {var} spans only {math.expm1(sp):.2%} over the {len(x)} cells (log spread {sp:.3g} < "
                    f"{MIN_LOG_SPREAD}): the exponent of {var} is not identifiable (cells of nearly one {var}, such "
                    f"as designs of one size: fit them apart with by=..., or drop {var} from the regressors)"
                )
        if len(on) < 2 or (spread == 0).any():
            continue
        cond = float(np.linalg.cond(np.corrcoef(x.T)))
        if cond > MAX_CONDITION:
            raise InsufficientDataError(
                f"{target}: the regressors {', '.join(on)} are nearly collinear over the cells (condition number "
                f"{cond:.3g} > {MAX_CONDITION:g}): their exponents are not separately identifiable"
            )
        if cond > WARN_CONDITION:
            notes.append(
                f"{target}: the regressors {', '.join(on)} are correlated over the cells (condition number {cond:.3g}):"
                " their exponents trade off, read them with their intervals"
            )
    return notes


def _check_intervals(laws: Iterable[PowerLaw], inputs: Sequence[_Inputs]) -> list[str]:
    """Exponents whose 95% interval (bootstrap, or the classical one without draws) is wider than
    MAX_INTERVAL_WIDTH: not determined by the cells."""
    notes = []
    for law, m in zip(laws, inputs, strict=True):
        lo, hi = _exponent_intervals(law, m)
        for var, a, b in zip(law.regressors, lo, hi, strict=True):
            if np.isfinite(a) and np.isfinite(b) and b - a > MAX_INTERVAL_WIDTH:
                notes.append(
                    f"{law.target}: the exponent of {var} is not determined by these cells: 95% interval {a:.3g} to "
                    f"{b:.3g} (wider than {MAX_INTERVAL_WIDTH:g})"
                )
    return notes


def _exponent_intervals(law: PowerLaw, model: _Inputs) -> tuple[np.ndarray, np.ndarray]:
    if law.samples is not None and len(law.samples) > 1:
        finite = law.samples[np.isfinite(law.samples).all(axis=1)]
        if len(finite) > 1:
            lo, hi = np.percentile(finite[:, 1:], [2.5, 97.5], axis=0)
            return lo, hi
    x = np.column_stack([np.ones(len(model.y)), *model.columns])
    y = np.asarray(model.y)
    w = np.ones(len(y)) if model.weights is None else np.asarray(model.weights, dtype=float)
    dof = int((w > 0).sum()) - x.shape[1]
    if dof <= 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return np.full(x.shape[1] - 1, np.nan), np.full(x.shape[1] - 1, np.nan)
    point = law.point if law.point is not None else law.coef
    resid = y - x @ point
    s2 = float(np.sum(w * resid**2)) / dof  # weighted least squares: cov = s^2 (X' W X)^-1
    cov = s2 * np.linalg.pinv((x * w[:, None]).T @ x)
    se = np.sqrt(np.clip(np.diag(cov)[1:], 0, None))
    return point[1:] - 1.96 * se, point[1:] + 1.96 * se


def fit_lr_bs(
    samples: pl.DataFrame,
    lr_on: Sequence[str] | None = ("N", "D"),
    bs_on: Sequence[str] | None = ("D",),
    method: RegressionMethod = "ols",
    bootstrap: int = 1000,
    seed: int = 42,
    *,
    resample: Resample = "rows",
    weights: str | Mapping[str, str] | None = None,
    by: str | Sequence[str] = ("N", "D"),
    huber_t: float = 1.345,
    center: Center = "mean",
    name: str = "fitted",
    edges: Mapping[str, Mapping[str, int]] | None = None,
) -> HparamLaw:
    """Fit ``lr = exp(c) N^a D^b`` and ``bs_tokens = exp(d) D^g`` in natural-log space.

    ``samples``: one row per regression sample with columns ``lr``, ``bs_tokens`` (or
    ``bs`` and ``seq_len``) and the regressors. Either the near-optimal rows of every cell
    (``steplaw_db.optima.near_optimal(final)``: the Step Law reference procedure, in which a
    cell weighs as many samples as it has near-optimal runs) or one row per cell (e.g. a
    quadratic vertex) weighted by ``weights``: a column name, or ``{"lr": col, "bs": col}``.

    - ``lr_on`` / ``bs_on``: regressors among ``N``, ``D``, ``C`` (``C`` from a ``C`` column
      or 6 N D); ``None`` skips that law.
    - ``method``: ``"ols"`` or ``"huber"`` (Huber's M-estimator by IRLS, threshold
      ``huber_t`` times the MAD scale).
    - ``bootstrap`` draws resampling ``resample="rows"`` (as Step Law) or ``"cells"`` (whole
      cells: honest when a cell's samples are not independent); deterministic for a
      ``seed`` whatever the number of threads.
    - ``center``: the law's coefficients are the bootstrap ``"mean"`` (Step Law's published
      convention; the full-sample fit when ``bootstrap=0``) or the full-sample ``"point"``
      fit.
    - ``by``: the columns that identify a cell.
    - ``edges``: how many cells have their grid minimum on the grid's edge
      (:func:`~steplaw_db.optima.edge_counts`); taken from ``samples`` when it is an optima
      frame. Edge-bound cells are warned (one line per target) and counted in
      ``info["edges"]`` and :meth:`~steplaw_db.laws.HparamLaw.to_polars`.

    An ill-posed design raises :class:`~steplaw_db.errors.InsufficientDataError`: a regressor
    constant over the samples (e.g. one N only), too few cells for the coefficients, collinear
    regressors, non-positive values; a bad option :class:`InvalidArgumentError`.
    """
    lr_on, bs_on = _check_on(lr_on, "lr_on"), _check_on(bs_on, "bs_on")
    if lr_on is None and bs_on is None:
        raise InvalidArgumentError("nothing to fit: lr_on and bs_on are both None")
    _check_fit_options(method, bootstrap, center, resample)
    if len(samples) == 0:
        raise InsufficientDataError("no samples to fit")
    if edges is None and "lr_edge" in samples.columns and "bs_edge" in samples.columns:
        edges = edge_counts(samples)
    if edges is not None:
        edges = {k: dict(v) for k, v in edges.items() if (k == "lr" and lr_on) or (k == "bs" and bs_on)}
        warn(edge_notes(edges))
    if "lr" not in samples.columns and "lr_opt" in samples.columns:
        samples, weights = _vertex_samples(samples, weights)
    keys = ["cell"] if "cell" in samples.columns else _keys(by)
    samples = with_bs_tokens(samples, seq_len=None) if bs_on is not None else samples
    needed = _regressor_columns(set(lr_on or ()) | set(bs_on or ()), samples.columns)
    targets = [t for t, on in (("lr", lr_on), ("bs_tokens", bs_on)) if on is not None]
    _require(samples, [*keys, *needed, *targets], "the samples")
    weight_cols = _weight_columns(weights)
    _require(samples, sorted(set(weight_cols.values())), "the samples")

    inputs: list[_Inputs] = []
    for key, target, on in (("lr", "lr", lr_on), ("bs", "bs_tokens", bs_on)):
        if on is None:
            continue
        wcol = weight_cols.get(key)
        inputs.append(
            _Inputs(
                target,
                on,
                [_log(_regressor_column(samples, v)) for v in on],
                _log(samples[target].cast(pl.Float64).to_numpy()),
                None if wcol is None else samples[wcol].cast(pl.Float64).fill_null(float("nan")).to_list(),
            )
        )
    parts = [(m.target, m.on) for m in inputs]
    models = [
        _native.LinearModel(target=m.target, regressors=list(m.on), columns=m.columns, y=m.y, weights=m.weights)
        for m in inputs
    ]
    cells = samples.select(pl.struct(keys).hash(seed=0)).to_series().to_list()
    notes = _check_designs(inputs, cells)
    # the core's refusals that blame the data (too few cells, a constant regressor) arrive as
    # InsufficientDataError, a bad option as InvalidArgumentError
    out = _native.fit_linear(models, cells, method, float(huber_t), int(bootstrap), resample, int(seed))

    n_cells = len(set(cells))
    if out["failed"]:
        notes.append(
            f"{out['failed']} of {bootstrap} bootstrap draws had an unidentifiable resampled design "
            "(e.g. every drawn cell shared one N) and were left out"
        )
    notes += [
        f"{target}: only {n_cells} cells for {len(on) + 1} coefficients: the fit is barely determined"
        for target, on in parts
        if n_cells <= len(on) + 3
    ]
    laws = {
        target: _power_law(target, on, fit, draws, center)
        for (target, on), fit, draws in zip(parts, out["fits"], out["draws"], strict=True)
    }
    notes += _check_intervals(laws.values(), inputs)
    warn(notes)
    info = {
        "method": method,
        "huber_t": huber_t if method == "huber" else None,
        "bootstrap": bootstrap,
        "resample": resample,
        "seed": seed,
        "center": center if bootstrap else "point",
        "samples": len(samples),
        "cells": n_cells,
        "failed_draws": out["failed"],
        "weights": weight_cols or None,
        "converged": [f["converged"] for f in out["fits"]],
        "edges": edges,
        "warnings": [*edge_notes(edges), *notes],
    }
    return HparamLaw(laws.get("lr"), laws.get("bs_tokens"), name=name, source="fit_lr_bs", info=info)


# --------------------------------------------------------------------------- from a sweep

#: How each method fits, for the record of the law (``info["procedure"]``) and the CLI.
LAW_METHODS = {
    "quadratic": "each cell's quadratic vertex in (ln lr, ln batch), one sample a cell weighted by its precision, "
    "bootstrap over cells",
    "steplaw": "Step Law's procedure: the near-optimal runs of every cell (within the threshold of its minimum), "
    "OLS in log space, bootstrap over rows",
}


def fit_law(
    final: pl.DataFrame,
    method: LawMethod = "quadratic",
    *,
    by: str | Sequence[str] = CELL_KEYS,
    threshold: float = DEFAULT_THRESHOLD,
    lr_on: Sequence[str] | None = ("N", "D"),
    bs_on: Sequence[str] | None = ("D",),
    regression: RegressionMethod = "ols",
    bootstrap: int = 1000,
    seed: int = 42,
    resample: Resample | None = None,
    center: Center = "mean",
    level_tolerance: float = LEVEL_TOLERANCE,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
    name: str = "fitted",
    edges: EdgeTreatment = "keep",
) -> HparamLaw:
    """Fit the optimal lr / batch law to a sweep's final losses (``Store.final_losses()``).

    - ``method="quadratic"`` (default): each cell's optimum is the vertex of a quadratic in
      (ln lr, ln bs_tokens) fitted around its minimum (:func:`~steplaw_db.optima.optima`), one
      sample per cell weighted by the vertex's bootstrap precision (floored), the law's
      bootstrap over cells. On synthetic sweeps with a known law its exponents are 3-5x closer
      to the truth than the paper's procedure (docs/fitting.md).
    - ``method="steplaw"``: Step Law's procedure exactly: the near-optimal runs of every cell
      (within ``threshold`` of its minimum), OLS in log space, ``bootstrap`` row resamples,
      the mean of the draws (GUIDE.md's numbers on the public CSV).

    Cells are :func:`~steplaw_db.optima.assign_cells`'s (``by``, ``designs``, ``on_design``).
    When the cells hold several designs (a design column split them, or ``by`` names one
    beyond N and D) one law is fitted across them, with a warning: :func:`fit_laws` fits one
    per design. Other arguments as :func:`fit_lr_bs` (``regression`` is its ``method``).

    ``edges``: what a cell whose grid minimum sits on the grid's edge (for that target) is:
    ``"keep"`` (a measurement, as any cell: its vertex, or left out with the cells whose vertex is
    unusable), ``"drop"`` (left out of that target's fit), ``"censor"`` (the quadratic method
    only: a censored observation, the optimum at most the smallest level plus half a grid step,
    or at least the largest minus half a step, in a censored normal likelihood (Tobit) of the
    log-space regression, bootstrap over cells). Every fit warns how many cells are edge-bound.
    """
    if method not in LAW_METHODS:
        raise InvalidArgumentError(f"unknown method {method!r} (quadratic, steplaw)")
    if edges not in EDGE_TREATMENTS:
        raise InvalidArgumentError(f"unknown edge treatment {edges!r} ({', '.join(EDGE_TREATMENTS)})")
    if edges == "censor" and method != "quadratic":
        raise InvalidArgumentError("edges='censor' needs method='quadratic' (one sample a cell)")
    if edges == "drop" and method == "steplaw":
        raise InvalidArgumentError("edges='drop' needs method='quadratic' (one sample a cell)")
    _check_fit_options(regression, bootstrap, center, resample)
    from .progress import advance

    advance("law fits")  # a front end's count: stability and the report make dozens
    edge_counts_ = None
    if method == "steplaw":
        samples = near_optimal(
            final, by, threshold, level_tolerance=level_tolerance, designs=designs, on_design=on_design
        )
        with warnings.catch_warnings():  # the cells' notes were just issued
            warnings.simplefilter("ignore", AnalysisWarning)
            grid = optima(
                final, by, threshold, method="grid", bootstrap=0, level_tolerance=level_tolerance, designs=designs,
                on_design=on_design,
            )  # fmt: skip
        edge_counts_ = edge_counts(grid)
    else:
        samples = optima(
            final,
            by,
            threshold,
            method="quadratic",
            seed=seed,
            level_tolerance=level_tolerance,
            designs=designs,
            on_design=on_design,
        )
    keys = [k for k in samples.columns if k in _cell_keys_of(samples)]
    pooled = [k for k in keys if k not in VARIABLES]
    if pooled:
        values = samples.select(pooled).n_unique()
        if values > 1:
            warn(
                [
                    f"one law is fitted across {values} designs ({', '.join(pooled)}): fit_laws(..., per="
                    f"{pooled!r}) (the command line: --by {','.join([*_keys(by), *pooled])}) fits one each"
                ]
            )
    if edge_counts_ is None:
        edge_counts_ = edge_counts(samples)
    if edges == "censor":
        law = _fit_censored(samples, lr_on, bs_on, bootstrap, seed, center, name)
    else:
        if edges == "drop":
            samples = _drop_edges(samples, method, lr_on is not None, bs_on is not None)

        def fit(lr: Sequence[str] | None, bs: Sequence[str] | None) -> HparamLaw:
            return fit_lr_bs(
                samples,
                lr,
                bs,
                regression,
                bootstrap,
                seed,
                resample=resample or "rows",
                weights={"lr": "_w_lr", "bs": "_w_bs"} if edges == "drop" else None,
                center=center,
                name=name,
                edges=edge_counts_,
            )

        law = _fit_targets_apart(fit, lr_on, bs_on)
        if law.info.get("not_fitted") and edge_counts_ is not None:
            law.info["edges"] = edge_counts_  # both targets' counts, the unfitted one's too
    law.info.update(
        procedure=method,
        description=LAW_METHODS[method],
        threshold=threshold if method == "steplaw" else None,
        edge_treatment=edges,
    )
    return law


def _reissue(caught: Sequence[warnings.WarningMessage]) -> None:
    """Issue recorded warnings again (a fit's notes, kept back until it is known whether they
    stand or the fit is redone target by target, which issues its own)."""
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _fit_targets_apart(
    fit: Callable[[Sequence[str] | None, Sequence[str] | None], HparamLaw],
    lr_on: Sequence[str] | None,
    bs_on: Sequence[str] | None,
) -> HparamLaw:
    """Both targets' laws by ``fit(lr_on, bs_on)``; when that is refused and both were asked
    for, each target alone, so that a law the cells do identify is not lost to the other's
    failure (a sweep whose lr optima are measured and whose batch optima all sit on one edge).
    What could not be fitted is warned one line a target and kept in ``info["not_fitted"]``
    (``"lr"`` / ``"bs"`` -> its regressors ``on`` and the ``reason``), which
    :meth:`~steplaw_db.laws.HparamLaw.to_polars` shows as rows; when neither target can be
    fitted the error names both reasons."""
    failure: InvalidArgumentError | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            law = fit(lr_on, bs_on)
        except InvalidArgumentError as e:
            failure = e
    # issued outside the recording block (inside, each would be recorded again)
    if failure is None:
        _reissue(caught)
        return law
    if lr_on is None or bs_on is None:
        _reissue(caught)
        raise failure
    got: dict[str, HparamLaw] = {}
    errors: dict[str, InvalidArgumentError] = {}
    with warnings.catch_warnings(record=True) as apart:
        warnings.simplefilter("always")
        for key, args in (("lr", (lr_on, None)), ("bs", (None, bs_on))):
            try:
                got[key] = fit(*args)
            except InvalidArgumentError as e:
                errors[key] = e
    # both refits read the same samples and say the same of them (cells left out): once each
    _reissue(list({(w.category, str(w.message)): w for w in apart}.values()))
    if not got:
        raise _failed_targets(errors)
    failed = {k: {"on": list(lr_on if k == "lr" else bs_on), "reason": str(e)} for k, e in errors.items()}
    notes = [f"no {k} law: {f['reason']}" for k, f in failed.items()]
    warn(notes, stacklevel=5)
    (law,) = got.values()
    law.info["not_fitted"] = failed
    law.info["warnings"] = [*law.info.get("warnings", []), *notes]
    return law


def _failed_targets(errors: Mapping[str, InvalidArgumentError]) -> InvalidArgumentError:
    """The error of a fit none of whose targets (``"lr"``, ``"bs"``) could be fitted: each reason
    once (``no lr or bs law: ...`` when both failed for one), an :class:`InsufficientDataError`
    when every reason is the data's, else an :class:`InvalidArgumentError` (an option was bad)."""
    targets: dict[str, list[str]] = {}
    for key, e in errors.items():
        targets.setdefault(str(e), []).append(key)
    message = "; ".join(f"no {' or '.join(keys)} law: {reason}" for reason, keys in targets.items())
    data = all(isinstance(e, InsufficientDataError) for e in errors.values())
    return InsufficientDataError(message) if data else InvalidArgumentError(message)


#: What a fit does with a cell whose optimum sits on the grid's edge (:func:`fit_law`'s ``edges``).
EDGE_TREATMENTS = ("keep", "drop", "censor")


def _drop_edges(samples: pl.DataFrame, method: LawMethod, lr: bool, bs: bool) -> pl.DataFrame:
    """The samples without the cells edge-bound on a target, for that target's fit: an optima
    frame gets zero weights (its cells enter the other target's fit); near-optimal rows lose
    the cells edge-bound on either target."""
    if method == "steplaw":
        raise InvalidArgumentError("edges='drop' needs method='quadratic' (one sample a cell)")
    out, weights = _vertex_samples(samples, None)
    if weights is None or isinstance(weights, str):
        out = out.with_columns(_w_lr=pl.lit(1.0), _w_bs=pl.lit(1.0))
    return out.with_columns(
        _w_lr=pl.when(pl.col("lr_edge").is_null()).then(pl.col("_w_lr")).otherwise(0.0),
        _w_bs=pl.when(pl.col("bs_edge").is_null()).then(pl.col("_w_bs")).otherwise(0.0),
    ).drop("lr_opt", "bs_tokens_opt")


def _censored_nll(
    params: np.ndarray, x: np.ndarray, y: np.ndarray, rel_w: np.ndarray, side: np.ndarray
) -> tuple[float, np.ndarray]:
    """Negative log likelihood of a log-space regression with censored rows (``side`` 0 a
    measurement, -1 the optimum is at most ``y``, +1 at least ``y``; row SD s / sqrt(rel_w))
    and its gradient in (beta, ln s)."""
    from scipy.special import log_ndtr

    beta, log_s = params[:-1], params[-1]
    sd = np.exp(log_s) / np.sqrt(rel_w)
    z = (y - x @ beta) / sd
    obs, up, lo = side == 0, side < 0, side > 0
    nll = float(np.sum(0.5 * z[obs] ** 2 + np.log(sd[obs])) - np.sum(log_ndtr(z[up])) - np.sum(log_ndtr(-z[lo])))
    # d nll / dz per row: z (measured), -phi(z)/Phi(z) (at most), phi(z)/Phi(-z) (at least)
    log_phi = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    dz = np.where(obs, z, 0.0)
    dz = np.where(up, -np.exp(log_phi - log_ndtr(z)), dz)
    dz = np.where(lo, np.exp(log_phi - log_ndtr(-z)), dz)
    grad_beta = -(dz / sd) @ x  # dz/dbeta = -x / sd
    grad_log_s = float(np.sum(-dz * z) + obs.sum())  # dz/dln s = -z; d ln sd / d ln s = 1 (measured rows)
    return nll, np.append(grad_beta, grad_log_s)


#: The censored fit's residual SD is kept above this (log space): with few measured cells the
#: likelihood would otherwise grow without bound as the fit through them becomes exact.
CENSORED_MIN_SD = 0.01


def _censored_fit(x: np.ndarray, y: np.ndarray, rel_w: np.ndarray, side: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The censored likelihood's maximum (beta, ln s) by BFGS, s = CENSORED_MIN_SD + e^t."""
    from scipy.optimize import minimize

    def objective(q: np.ndarray) -> tuple[float, np.ndarray]:
        scale = CENSORED_MIN_SD + math.exp(q[-1])
        f, g = _censored_nll(np.append(q[:-1], math.log(scale)), x, y, rel_w, side)
        g[-1] *= math.exp(q[-1]) / scale
        return f, g

    s0 = max(math.exp(start[-1]) - CENSORED_MIN_SD, 1e-3)
    res = minimize(objective, np.append(start[:-1], math.log(s0)), method="BFGS", jac=True)
    if not np.isfinite(res.fun):
        return np.full(len(start), np.nan)
    return np.append(res.x[:-1], math.log(CENSORED_MIN_SD + math.exp(res.x[-1])))


def _censored_part(
    table: pl.DataFrame, target: str, on: tuple[str, ...], bootstrap: int, seed: int, center: Center
) -> tuple[PowerLaw, int]:
    """One target's law with its edge-bound cells censored; returns the law and how many
    cells were censored."""
    key = "lr" if target == "lr" else "bs"
    opt, grid, quad = ("lr_opt", "lr_grid", "lr") if key == "lr" else ("bs_tokens_opt", "bs_tokens_grid", "bs")
    rows = []
    for r in table.iter_rows(named=True):
        side_name = r.get(f"{key}_edge")
        if side_name:
            step = r.get(f"{key}_log_step") or 0.0
            sgn = -1 if side_name == "low" else 1
            rows.append((r, math.log(r[grid]) - sgn * step / 2, sgn, GRID_SD))
        else:
            # the vertex, or this target's coordinate of a convex vertex that left the grid on the
            # other axis only (the cell is measured on this one)
            value = r[opt] if r.get("optimum") == "vertex" else None
            if value is None and r.get("convex") and not r.get(f"{key}_unbounded"):
                value = r.get("lr_quad" if key == "lr" else "bs_tokens_quad")
            if value is None:
                continue
            width = r.get(f"{quad}_log_width")
            sd = width / 3.92 if width is not None and math.isfinite(width) else GRID_SD
            rows.append((r, math.log(value), 0, sd))
    measured = sum(1 for row in rows if row[2] == 0)
    if measured < len(on) + 1:
        raise InsufficientDataError(
            f"{target}: only {measured} cells with a measured optimum for {len(on) + 1} coefficients: "
            "with the edge-bound cells censored the law is not identified"
        )
    x = np.column_stack([np.ones(len(rows)), *[np.log([float(r[v]) for r, *_ in rows]) for v in on]])
    y = np.asarray([c for _, c, _, _ in rows])
    side = np.asarray([row[2] for row in rows], dtype=float)
    if np.linalg.matrix_rank(x[side == 0]) < x.shape[1]:
        # bounds alone do not fix a slope: one-sided, they let it grow without limit
        raise InsufficientDataError(
            f"{target}: the {measured} cells with a measured optimum do not vary in {', '.join(on)}: with the "
            "edge-bound cells censored the law is not identified"
        )
    w = 1.0 / (np.asarray([sd for *_, sd in rows]) ** 2 + VERTEX_SD_FLOOR**2)
    rel_w = w / w.mean()
    ols = np.linalg.lstsq(x * np.sqrt(rel_w)[:, None], y * np.sqrt(rel_w), rcond=None)[0]
    resid = float(np.sqrt(np.mean(rel_w * (y - x @ ols) ** 2)))
    start = np.append(ols, math.log(max(resid, CENSORED_MIN_SD)))
    point = _censored_fit(x, y, rel_w, side, start)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(y), len(y))
        if (side[pick] == 0).sum() < len(on) + 1 or np.linalg.matrix_rank(x[pick][side[pick] == 0]) < x.shape[1]:
            draws.append(np.full(x.shape[1], np.nan))
            continue
        draws.append(_censored_fit(x[pick], y[pick], rel_w[pick], side[pick], point)[:-1])
    samples = np.asarray(draws, dtype=float).reshape(len(draws), x.shape[1]) if draws else None
    coef = point[:-1]
    if center == "mean" and samples is not None and np.isfinite(samples).all(axis=1).any():
        coef = np.nanmean(samples[np.isfinite(samples).all(axis=1)], axis=0)
    return PowerLaw(target, on, coef, point[:-1], samples, math.nan, float(math.exp(point[-1]))), int((side != 0).sum())


def _fit_censored(
    samples: pl.DataFrame,
    lr_on: Sequence[str] | None,
    bs_on: Sequence[str] | None,
    bootstrap: int,
    seed: int,
    center: Center,
    name: str,
) -> HparamLaw:
    """:func:`fit_law`'s ``edges="censor"``: each target by :func:`_censored_part`."""
    counts = edge_counts(samples)
    notes = edge_notes(counts)
    warn(notes, stacklevel=4)
    parts: dict[str, PowerLaw] = {}
    censored: dict[str, int] = {}
    errors: dict[str, InvalidArgumentError] = {}
    for key, target, on in (("lr", "lr", lr_on), ("bs", "bs_tokens", bs_on)):
        if on is None:
            continue
        try:
            parts[target], censored[key] = _censored_part(samples, target, tuple(on), bootstrap, seed, center)
        except InvalidArgumentError as e:
            errors[key] = e
    if not parts:
        raise _failed_targets(errors)
    failed = [f"no {key} law: {e}" for key, e in errors.items()]
    warn(failed, stacklevel=4)
    notes += failed
    info = {
        "method": "censored",
        "bootstrap": bootstrap,
        "resample": "cells",
        "seed": seed,
        "center": center if bootstrap else "point",
        "samples": samples.height,
        "cells": samples.height,
        "censored": censored,
        "edges": counts,
        "warnings": notes,
    }
    return HparamLaw(parts.get("lr"), parts.get("bs_tokens"), name=name, source="fit_law", info=info)


def _cell_keys_of(frame: pl.DataFrame) -> list[str]:
    """The keys a frame's ``cell`` labels name."""
    first = frame["cell"][0] if "cell" in frame.columns and frame.height else ""
    return [part.split("=", 1)[0] for part in str(first).split(",") if "=" in part]


class DesignLaws(dict[str, HparamLaw]):
    """:func:`fit_laws`' result: the law of each design that could be fitted, by label, and in
    ``failed`` each design that could not, with the reason."""

    def __init__(self, laws: Mapping[str, HparamLaw] | None = None, failed: Mapping[str, str] | None = None) -> None:
        super().__init__(laws or {})
        self.failed: dict[str, str] = dict(failed or {})


def fit_laws(
    final: pl.DataFrame,
    per: str | Sequence[str],
    method: LawMethod = "quadratic",
    *,
    by: str | Sequence[str] = CELL_KEYS,
    **kwargs: Any,
) -> DesignLaws:
    """One law per design: :func:`fit_law` on the runs of each value of the ``per`` columns
    (a MoE's ``moe_name``, ``recipe``, ...), keyed ``"moe_name=e8k1"``. A design that cannot be
    fitted (too few cells, a regressor that does not vary) is kept in ``failed`` with the
    reason, and warned. :func:`compare_laws` lists them all, the failed ones with their reason."""
    per = _keys(per)
    _require(final, per, "the final-loss frame")
    keys = [*_keys(by), *[k for k in per if k not in _keys(by)]]
    cell_options = {k: kwargs[k] for k in ("level_tolerance", "designs", "on_design") if k in kwargs}
    # the sweep's cells (merged levels, splits, rows left out) are said once, for the whole
    # sweep: each design's fit says its share again, one fact in as many lines as designs
    warn(assign_cells(final, keys, **cell_options).notes)
    laws = DesignLaws()
    errors: list[InvalidArgumentError] = []
    for part in final.sort(per, nulls_last=True).partition_by(per, maintain_order=True):
        label = ",".join(f"{k}={part[k][0]}" for k in per)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                laws[label] = fit_law(part, method, by=keys, name=label, **kwargs)
            except InvalidArgumentError as e:
                laws.failed[label] = str(e)
                errors.append(e)
        said = set(assign_cells(part, keys, **cell_options).notes)
        # the design's own notes (edges, barely determined, a target not fitted) name the design
        for w in caught:
            if str(w.message) in said:
                continue
            if issubclass(w.category, AnalysisWarning):
                w.message = AnalysisWarning(f"{label}: {w.message}")
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    warn([f"{label}: no law: {why}" for label, why in laws.failed.items()])
    if not laws:
        message = f"no design could be fitted: {'; '.join(laws.failed.values())}"
        if all(isinstance(e, InsufficientDataError) for e in errors):
            raise InsufficientDataError(message)
        raise InvalidArgumentError(message)
    return laws


def compare_laws(laws: Mapping[str, HparamLaw], interval: float = 0.95) -> pl.DataFrame:
    """Laws one below another, one row per design and coefficient: ``design``, ``name``,
    ``estimate``, ``sd``, ``lo``, ``hi`` (the ``interval``), the target's ``cells`` and a ``reason``
    where there is no number: a target the fit could not identify, or (from :func:`fit_laws`'
    ``failed``) a design that could not be fitted at all, whose coefficients are listed without
    numbers."""
    tables = []
    for label, law in laws.items():
        t = law.to_polars(interval)
        tables.append(
            t.select(
                design=pl.lit(label),
                name="name",
                estimate="estimate",
                sd="sd",
                lo="lo",
                hi="hi",
                cells=pl.col("cells").cast(pl.Int64),
                reason=pl.col("reason") if "reason" in t.columns else pl.lit(None, dtype=pl.String),
            )
        )
    if not tables:
        raise InvalidArgumentError("no laws to compare")
    out = pl.concat(tables, how="vertical_relaxed")
    names = out["name"].unique(maintain_order=True).to_list()
    failed = getattr(laws, "failed", {})
    rows = [{"design": label, "name": n, "reason": why} for label, why in failed.items() for n in names]
    return pl.concat([out, pl.DataFrame(rows, schema=out.schema)]) if rows else out


# --------------------------------------------------------------------------- loss law


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def _chinchilla_params(p: Sequence[float]) -> dict[str, float]:
    a, b, e, alpha, beta = p
    return {"E": _exp(e), "A": _exp(a), "B": _exp(b), "alpha": alpha, "beta": beta}


#: Loss-law exponents beyond this are no scaling law (an N term of 2e130 / N^13.9 fits noise):
#: refused; beyond 2 (the start grid's range) or below 0.01, warned.
MAX_LOSS_EXPONENT = 3.0
#: N or D spanning less than a factor this wide is warned: alpha and A (or beta and B) are weakly
#: determined.
WARN_LOSS_SPAN = 3.0


def _loss_points(
    df: pl.DataFrame,
    loss: str,
    per_cell: PerCell | None,
    by: str | Sequence[str] | None,
    level_tolerance: float,
    designs: Sequence[str] | None,
    on_design: DesignPolicy,
) -> pl.DataFrame:
    """The points of a loss-law fit: each cell's best run (``per_cell="min"``) or every run,
    a run's last checkpoint only."""
    data = df.filter(pl.col(loss).is_not_null() & pl.col(loss).is_finite())
    if per_cell is None:
        notes: list[str] = []
        data = last_checkpoints(data, notes)
        warn(notes, stacklevel=4)
        return data
    a = assign_cells(data, by or CELL_KEYS, level_tolerance=level_tolerance, designs=designs, on_design=on_design)
    warn(a.notes, stacklevel=4)
    # The best run of each cell: the loss at (near) optimal hyperparameters.
    return a.frame.sort(loss).unique(subset="cell", keep="first").sort(list(a.keys), nulls_last=True)


def _check_loss_design(n: Sequence[float], d: Sequence[float]) -> list[str]:
    notes = []
    for name, values in (("N", n), ("D", d)):
        logs = np.log(np.asarray(values, dtype=float))
        if len(logs) < 2 or not np.isfinite(logs).all():
            continue  # the core refuses these with its own message
        spread = float(logs.max() - logs.min())
        if 0 < spread < MIN_LOG_SPREAD:
            raise InsufficientDataError(
                f"{name} spans only {math.expm1(spread):.2%} over the {len(logs)} points (log spread {spread:.3g} < "
                f"{MIN_LOG_SPREAD}): the {name} term of the loss law is not identifiable (cells of nearly one {name}, "
                "such as designs of one size: fit each with a by= that keeps its cells apart, over several sizes)"
            )
        if 0 < spread < math.log(WARN_LOSS_SPAN):
            notes.append(
                f"loss law: {name} spans only a factor {math.exp(spread):.2g} over the points: the {name} term's "
                "coefficient and exponent are weakly determined"
            )
    return notes


def _check_loss_params(p: Mapping[str, float], loss_min: float) -> list[str]:
    """Refuse a fit whose parameters are no scaling law; warn on parameters at a bound."""
    shown = ", ".join(f"{k} = {v:.4g}" for k, v in p.items())
    if not all(math.isfinite(v) for v in p.values()) or max(p["alpha"], p["beta"]) > MAX_LOSS_EXPONENT:
        raise InsufficientDataError(
            f"the loss law is not identified by these points: {shown} (an exponent above {MAX_LOSS_EXPONENT:g} or an "
            "infinite coefficient fits noise, not a scaling law); add cells over a wider range of N and D"
        )
    notes = []
    if p["E"] < 1e-3 * loss_min:
        notes.append(f"loss law: E = {p['E']:.3g} sits at its bound 0 (the points do not determine the floor): {shown}")
    for k in ("alpha", "beta"):
        if not 0.01 <= p[k] <= 2.0:
            notes.append(f"loss law: {k} = {p[k]:.3g} is outside 0.01-2, beyond the start grid: {shown}")
    return notes


def fit_loss_law(
    df: pl.DataFrame,
    form: LossLawForm = "chinchilla",
    bootstrap: int = 0,
    seed: int = 42,
    *,
    loss: str = "loss",
    by: str | Sequence[str] | None = CELL_KEYS,
    per_cell: PerCell | None = "min",
    delta: float = 1e-3,
    starts: Sequence[Sequence[float]] | None = None,
    bootstrap_starts: int = 8,
    level_tolerance: float = LEVEL_TOLERANCE,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
) -> LossLaw:
    """Fit ``L(N, D) = E + A / N^alpha + B / D^beta`` as Hoffmann et al. / Epoch AI do.

    Minimises ``sum Huber_delta(log L_hat - log L)`` (``delta`` 1e-3) with ``log L_hat =
    LSE(a - alpha log N, b - beta log D, e)`` by L-BFGS (Rust, in parallel) from every start
    of a grid (default Hoffmann's 4,500: alpha, beta in 0..2 by 0.5, e in -1..1 by 0.5, a, b
    in 0..25 by 5; ``starts`` as rows ``[a, b, e, alpha, beta]``), keeping the best.

    ``df`` needs ``N``, ``D`` and ``loss``. With ``per_cell="min"`` (default) each cell
    (:func:`~steplaw_db.optima.assign_cells`'s, keyed by ``by``: the cells of ``optima``)
    contributes its best loss, the loss at the optimal hyperparameters; ``None`` fits the rows
    as given. A table with several checkpoints per run (rows sharing ``run_id``, or ``name``
    and configuration) uses each run's last one (a note says so), or is refused when no column
    orders them. N or D spanning less than ``MIN_LOG_SPREAD`` in log space is refused (its
    exponent is not identifiable); a fit with a parameter at an implausible value (an exponent
    beyond ``MAX_LOSS_EXPONENT``, a term that overflows) is refused, one with E at 0 or an
    exponent beyond the start grid warned. ``bootstrap`` draws resample the points; each starts from the
    best ``bootstrap_starts`` distinct local optima of the grid (rerunning all 4,500 starts
    per draw would find the same basins at 4,500 times the cost).
    """
    if form != "chinchilla":
        raise InvalidArgumentError(f"unknown loss-law form {form!r} (chinchilla)")
    if bootstrap < 0:
        raise InvalidArgumentError(f"bootstrap must be >= 0, got {bootstrap}")
    _require(df, ["N", "D", loss], "the loss frame")
    if per_cell not in ("min", None):
        raise InvalidArgumentError(f"per_cell must be 'min' or None, got {per_cell!r}")
    if not delta > 0:  # the core says so too, but only after the cells: a bad option comes first
        raise InvalidArgumentError(f"the Huber delta must be positive, got {delta}")
    data = _loss_points(df, loss, per_cell, by, level_tolerance, designs, on_design)
    n = data["N"].cast(pl.Float64).to_list()
    d = data["D"].cast(pl.Float64).to_list()
    y = data[loss].cast(pl.Float64).to_list()
    notes = _check_loss_design(n, d)
    # too few points, too few distinct N or D: the core raises InsufficientDataError (exit 1)
    out = _native.fit_chinchilla(
        n,
        d,
        y,
        float(delta),
        None if starts is None else [list(map(float, s)) for s in starts],
        int(bootstrap),
        int(seed),
        int(bootstrap_starts),
    )
    if out["failed"]:
        notes.append(f"{out['failed']} of {bootstrap} bootstrap draws gave no finite fit and were left out")
    params = _chinchilla_params(out["params"])
    notes += _check_loss_params(params, min(y))
    warn(notes)
    draws = [_chinchilla_params(p) for p in out["draws"]]
    samples = (
        pl.DataFrame(draws, schema={k: pl.Float64 for k in LossLaw.PARAMS})
        if draws
        else pl.DataFrame(schema={k: pl.Float64 for k in LossLaw.PARAMS})
    )
    info = {
        "points": len(y),
        "delta": delta,
        "converged": out["converged"],
        "starts": out["starts"],
        "starts_converged": out["starts_converged"],
        "bootstrap": bootstrap,
        "seed": seed,
        "failed_draws": out["failed"],
        "per_cell": per_cell,
        "warnings": notes,
    }
    return LossLaw(params, samples, out["objective"], info)


# --------------------------------------------------------------------------- evaluation


def _labelled_laws(law: LawSpec) -> list[tuple[str, Law]]:
    """(label, law) pairs from a law, a spec string, a list or a dict name -> law."""
    if isinstance(law, Law):
        return [(law.name, law)]
    if isinstance(law, str):
        return [(one.name, one) for one in resolve(law)]
    if isinstance(law, Mapping):
        out: list[tuple[str, Law]] = []
        for label, value in law.items():
            inner = _labelled_laws(value)
            out.extend([(str(label), inner[0][1])] if len(inner) == 1 else inner)
        return out
    if isinstance(law, Sequence):
        return [pair for item in law for pair in _labelled_laws(item)]
    raise InvalidArgumentError(f"not a law: {law!r}")


def _evaluate_cell(
    cell: pl.DataFrame,
    laws: list[tuple[str, Law]],
    keys: Sequence[str],
    method: EvaluateMethod,
    loss: str,
    seq_len: int,
) -> list[dict[str, object]]:
    """Every law's rows of :func:`evaluate` for one cell's runs."""
    lr = cell["lr"].cast(pl.Float64).to_numpy()
    bs = cell["bs_tokens"].cast(pl.Float64).to_numpy()
    y = cell[loss].cast(pl.Float64).to_numpy()
    N, D = float(cell["N"][0]), float(cell["D"][0])
    best = int(np.argmin(y))
    cell_min = float(y[best])
    surface = quadratic_surface(cell, loss=loss) if method == "quadratic" else None
    rows: list[dict[str, object]] = []
    # the cell's grid minimum on the grid's edge: the optimum, and a law's gap, are bounds there
    edges = {f"{k}_edge": edge_side(sorted(set(v.tolist())), float(v[best])) for k, v in (("lr", lr), ("bs", bs))}
    for label, one in laws:
        p = one.predict(N=[N], D=[D], loss=[cell_min], seq_len=seq_len, interval=None)
        lr_hat, bs_hat = p["lr"][0], p["bs_tokens"][0]
        fixed = None
        if lr_hat is None and bs_hat is None:
            raise InvalidArgumentError(f"law '{one.name}' predicts nothing at N={N:g}, D={D:g}")
        if lr_hat is None:
            lr_hat, fixed = float(lr[best]), "lr"
        if bs_hat is None:
            bs_hat, fixed = float(bs[best]), "bs"
        dist = (np.log(lr) - math.log(lr_hat)) ** 2 + (np.log(bs) - math.log(bs_hat)) ** 2
        at = dist <= dist.min() * (1 + 1e-12)
        if method == "nearest":
            loss_at = float(y[at].mean())
        else:  # on the cell's fitted quadratic (NaN where the cell has none)
            loss_at = cell_min * (1.0 + float(surface(lr_hat, bs_hat))) if surface is not None else float("nan")
        rows.append(
            {
                "law": label,
                "cell": cell["cell"][0],
                **{k: cell[k][0] for k in keys},
                "lr_pred": lr_hat,
                "bs_tokens_pred": bs_hat,
                "lr_at": float(lr[at][0]),
                "bs_tokens_at": float(bs[at][0]),
                "loss_at": loss_at,
                "loss_min": cell_min,
                "rel_error": (loss_at - cell_min) / cell_min,
                "fixed": fixed,
                **edges,
            }
        )
    return rows


def evaluate(
    law: LawSpec,
    final: pl.DataFrame,
    by: str | Sequence[str] = CELL_KEYS,
    *,
    method: EvaluateMethod = "nearest",
    loss: str = "loss",
    seq_len: int = DEFAULT_SEQ_LEN,
    level_tolerance: float = LEVEL_TOLERANCE,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
    loco: Sequence[LawMethod] = (),
) -> pl.DataFrame:
    """Relative loss error of laws on measured cells, as Step Law's Table 1 defines it.

    For each law and cell: predict (lr, bs_tokens) at the cell's N, D; find the run whose
    (lr, bs_tokens) is nearest to it in log space (Euclidean in (ln lr, ln bs)); the error is
    ``(loss there - cell minimum) / cell minimum``. Runs at exactly the same distance (repeats
    of one grid point) count by their mean loss. Diverged runs stay in: a law that points at
    them is wrong. Laws that need a loss value (OpenAI, MiniCPM) get the cell's minimum loss;
    a law that gives only one of lr and batch is taken at the cell's best value of the other
    (column ``fixed``).

    ``law``: a law, a published law's name (``"all"`` for every one), a list, or a dict of
    name -> law. ``final``: one row per run with ``lr``, ``bs_tokens`` (or ``bs`` and
    ``seq_len``), ``loss``, N and D. Cells are :func:`~steplaw_db.optima.assign_cells`'s
    (``by``, ``designs``, ``on_design`` as there: the same cells as ``optima``); a cell's N and
    D are its levels. Returns one row per (law, cell): ``law``, ``cell``, the cell keys,
    ``lr_pred``, ``bs_tokens_pred``, ``lr_at``, ``bs_tokens_at`` (the nearest run),
    ``loss_at``, ``loss_min``, ``rel_error``, ``fixed``. Summarise with
    ``.group_by("law").agg(pl.col("rel_error").median())``.

    ``method="quadratic"``: the loss on each cell's fitted quadratic surface in (ln lr, ln bs)
    (``steplaw_db.optima.quadratic_surface``) at the prediction itself, between grid points
    (NaN where a cell has no convex quadratic; far from the optimum the surface
    extrapolates). ``lr_at``/``bs_tokens_at`` still name the nearest run.

    ``lr_edge`` / ``bs_edge``: ``low`` / ``high`` where the cell's grid minimum sits on the
    grid's smallest / largest level (its optimum is a bound; a law's gap there is a bound too).

    ``loco``: fitting methods (``"quadratic"``, ``"steplaw"``) whose law, fitted on the user's
    own cells, is scored beside the published ones without having seen the cell: rows labelled
    ``own (LOCO, <method>)`` by :func:`leave_one_cell_out` (within each recipe / design), with
    ``rel_error_quadratic`` and ``reason`` columns.
    """
    if method not in ("nearest", "quadratic"):
        raise InvalidArgumentError(f"unknown evaluation method {method!r} (nearest, quadratic)")
    final = with_bs_tokens(final, seq_len=None)
    _require(final, ["N", "D", "lr", "bs_tokens", loss], "the final-loss frame")
    a = assign_cells(final, by, level_tolerance=level_tolerance, designs=designs, on_design=on_design)
    warn(a.notes)
    keys = list(a.keys)
    measured = a.frame.filter(
        pl.col(loss).is_not_null() & pl.col(loss).is_finite() & (pl.col("lr") > 0) & (pl.col("bs_tokens") > 0)
    )
    if len(measured) == 0:
        raise InsufficientDataError("no run with a finite loss to evaluate against")
    laws = _labelled_laws(law)
    rows = []
    for cell in measured.sort(keys, nulls_last=True).partition_by("cell", maintain_order=True):
        rows += _evaluate_cell(cell, laws, keys, method, loss, seq_len)
    out = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("fixed").cast(pl.String), pl.col("lr_edge").cast(pl.String), pl.col("bs_edge").cast(pl.String)
    )
    for m in loco:
        own = leave_one_cell_out(
            final, m, by=by, loss=loss, seq_len=seq_len, level_tolerance=level_tolerance, designs=designs,
            on_design=on_design, method_eval=method,
        )  # fmt: skip
        out = pl.concat([out, own.drop("group")], how="diagonal_relaxed")
    return out


def evaluation_summary(rows: pl.DataFrame) -> pl.DataFrame:
    """:func:`evaluate`'s rows summarised one row a law (Step Law's Table 1): ``cells`` (those
    scored), the ``median_%``, ``mean_%`` and ``max_%`` of the relative error (in percent),
    ``at_optimum``, the cells where the law's point is the measured best run, ``edge_cells``,
    the scored cells whose grid minimum sits on the grid's edge (there the gap is a bound), and,
    when a leave-one-cell-out law could not be fitted for some cells, ``not_fitted``."""
    scored = pl.col("rel_error").is_not_null() & pl.col("rel_error").is_not_nan()
    edge = (
        (pl.col("lr_edge").is_not_null() | pl.col("bs_edge").is_not_null()) & scored
        if {"lr_edge", "bs_edge"} <= set(rows.columns)
        else pl.lit(False)
    )
    aggs = [
        scored.sum().cast(pl.Int64).alias("cells"),
        (pl.col("rel_error").filter(scored).median() * 100).alias("median_%"),
        (pl.col("rel_error").filter(scored).mean() * 100).alias("mean_%"),
        (pl.col("rel_error").filter(scored).max() * 100).alias("max_%"),
        (pl.col("rel_error") == 0).sum().cast(pl.Int64).alias("at_optimum"),
        edge.sum().cast(pl.Int64).alias("edge_cells"),
    ]
    if "reason" in rows.columns and rows["reason"].is_not_null().any():
        aggs.append(pl.col("reason").is_not_null().sum().cast(pl.Int64).alias("not_fitted"))
    return rows.group_by("law", maintain_order=True).agg(aggs)


#: The label of the user's own law in :func:`evaluate`'s rows, per fitting method.
LOCO_LABEL = "own (LOCO, {method})"


def leave_one_cell_out(
    final: pl.DataFrame,
    method: LawMethod = "quadratic",
    *,
    by: str | Sequence[str] = CELL_KEYS,
    loss: str = "loss",
    seq_len: int = DEFAULT_SEQ_LEN,
    level_tolerance: float = LEVEL_TOLERANCE,
    designs: Sequence[str] | None = None,
    on_design: DesignPolicy = "split",
    method_eval: EvaluateMethod = "nearest",
    seed: int = 42,
) -> pl.DataFrame:
    """Would the user's own law have picked good hyperparameters for a cell it had not seen?

    Within each group of cells (a recipe or design: the cell keys beyond N, D, C), for each cell:
    the law fitted by ``method`` (:func:`fit_law`, no bootstrap) on the group's other cells, its
    predicted (lr, batch) for the cell, and, as :func:`evaluate` scores a published law, the
    loss of the measured run nearest to it in log space against the cell's minimum
    (``rel_error``; the loss on the cell's quadratic surface with ``method_eval="quadratic"``).
    ``rel_error_quadratic``: the loss interpolated on the cell's quadratic at the prediction,
    relative to the quadratic's own minimum (its vertex), where the quadratic is trustworthy
    (convex, its vertex inside the grid, the prediction inside the measured lr x batch range),
    else null. A cell whose law cannot be fitted without it (its N is the group's
    only other N, say) is a row with null numbers and the ``reason``. Rows are labelled
    ``law = "own (LOCO, <method>)"`` and carry the ``group``.
    """
    final = with_bs_tokens(final, seq_len=None)
    _require(final, ["N", "D", "lr", "bs_tokens", loss], "the final-loss frame")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)  # evaluate / the fits warn once, not per cell
        a = assign_cells(final, by, level_tolerance=level_tolerance, designs=designs, on_design=on_design)
    keys = list(a.keys)
    group_keys = [k for k in keys if k not in VARIABLES]
    measured = a.frame.filter(
        pl.col(loss).is_not_null() & pl.col(loss).is_finite() & (pl.col("lr") > 0) & (pl.col("bs_tokens") > 0)
    )
    label = LOCO_LABEL.format(method=method)
    rows: list[dict[str, object]] = []
    parts = measured.partition_by(group_keys, maintain_order=True) if group_keys else [measured]
    for part in parts:
        group = ",".join(f"{k}={part[k][0]}" for k in group_keys) or "all"
        for cell in part.sort(keys, nulls_last=True).partition_by("cell", maintain_order=True):
            others = [c for c in part["cell"].unique(maintain_order=True).to_list() if c != cell["cell"][0]]
            rest = a.frame.filter(pl.col("cell").is_in(others))
            rows.append(_loco_cell(cell, rest, label, group, keys, method, method_eval, loss, seq_len, seed))
    out = pl.DataFrame(rows, infer_schema_length=None)
    # rows of cells that could not be fitted lack the numbers: every column, typed, whatever they hold
    return out.with_columns(
        [(pl.col(c) if c in out.columns else pl.lit(None)).cast(t).alias(c) for c, t in _LOCO_SCHEMA.items()]
    )


_LOCO_SCHEMA = {
    **{
        c: pl.Float64
        for c in ("lr_pred", "bs_tokens_pred", "lr_at", "bs_tokens_at", "loss_at", "loss_min", "rel_error")
    },
    **{"fixed": pl.String, "lr_edge": pl.String, "bs_edge": pl.String},
    **{"rel_error_quadratic": pl.Float64, "reason": pl.String},
}


def _loco_cell(
    cell: pl.DataFrame,
    rest: pl.DataFrame,
    label: str,
    group: str,
    keys: Sequence[str],
    method: LawMethod,
    method_eval: EvaluateMethod,
    loss: str,
    seq_len: int,
    seed: int,
) -> dict[str, object]:
    """One cell's :func:`leave_one_cell_out` row."""
    base: dict[str, object] = {"law": label, "group": group, "cell": cell["cell"][0], **{k: cell[k][0] for k in keys}}
    if rest.is_empty():
        return {**base, "reason": "no law without this cell: it is its group's only cell"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the group's notes are the full fit's, issued elsewhere
            law = fit_law(rest.drop("cell"), method, by=keys, bootstrap=0, seed=seed, name=label)
            missing = law.info.get("not_fitted") or {}
            if missing:  # half a law would be scored at the held-out cell's own best lr or batch: no test
                raise InvalidArgumentError("; ".join(f"no {k} law: {f['reason']}" for k, f in missing.items()))
            [row] = _evaluate_cell(cell, [(label, law)], keys, method_eval, loss, seq_len)
    except InvalidArgumentError as e:
        return {**base, "reason": f"no law without this cell: {e}"}
    row.update(group=group, reason=None, rel_error_quadratic=_trusted_quadratic(cell, row, loss))
    return row


def _trusted_quadratic(cell: pl.DataFrame, row: Mapping[str, Any], loss: str) -> float | None:
    """The relative loss gap at a row's prediction on the cell's quadratic surface, where that
    surface is trustworthy: convex, its vertex inside the measured grid, the prediction inside the
    measured lr x batch range (else null: an extrapolation measures nothing)."""
    lr_hat, bs_hat = row.get("lr_pred"), row.get("bs_tokens_pred")
    if lr_hat is None or bs_hat is None or row.get("fixed"):
        return None
    lr, bs = cell["lr"].cast(pl.Float64), cell["bs_tokens"].cast(pl.Float64)
    inside = as_float(lr.min()) <= float(lr_hat) <= as_float(lr.max())
    inside = inside and as_float(bs.min()) <= float(bs_hat) <= as_float(bs.max())
    if not inside:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = optima(cell, list(_cell_keys_of(cell)) or list(CELL_KEYS), bootstrap=0, designs=())
    if table.height != 1 or table["optimum"][0] != "vertex" or table["rel_loss_quad"][0] is None:
        return None
    surface = quadratic_surface(cell, loss=loss)
    if surface is None:
        return None
    # both relative to the cell's grid minimum: the gap above the quadratic's own minimum (its vertex)
    at, vertex = float(surface(float(lr_hat), float(bs_hat))), float(table["rel_loss_quad"][0])
    gap = (at - vertex) / (1.0 + vertex)
    return gap if math.isfinite(gap) else None
