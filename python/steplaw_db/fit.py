"""Fitting scaling laws: the optimal learning rate and batch as power laws of N, D (or C),
the Chinchilla loss law, and the evaluation of any law against measured cells.

The numerical work (least squares, Huber IRLS, L-BFGS, bootstrap) runs in the Rust core
(``steplaw_db._native``); this module prepares the inputs and wraps the results in the law
types of :mod:`steplaw_db.laws` (:class:`~steplaw_db.laws.HparamLaw`,
:class:`~steplaw_db.laws.LossLaw`).

A synthetic sweep whose truth is Step Law's law (lr = 1.79 N^-0.713 D^0.307, batch = 0.58
D^0.571 tokens), three model sizes at three budgets, fitted by the Step Law reference procedure:

>>> import tempfile
>>> import steplaw_db as sl
>>> tmp = tempfile.TemporaryDirectory()
>>> shapes = ((960, 9368, 15, 7), (1280, 9472, 10, 10), (2048, 8192, 16, 16))  # h, ffnh, numh, numl
>>> cells = [(*shape, D) for shape in shapes for D in (1e10, 3e10, 1e11)]
>>> truth = sl.synth.write_sweep(f"{tmp.name}/runs", cells=cells, points=50)
>>> db = sl.open(f"{tmp.name}/steplaw.db")
>>> db.ingest(f"{tmp.name}/runs").added
315
>>> law = sl.fit_lr_bs(sl.near_optimal(db.final_losses()), bootstrap=200)
>>> {k: round(v, 2) for k, v in law.coefficients().items()}
{'lr_intercept': 2.06, 'lr_coefN': -0.76, 'lr_coefD': 0.29, 'bs_intercept': -0.09, 'bs_coefD': 0.55}
>>> p = law.predict(N=7e9, D=1.4e12).row(0, named=True)  # far beyond the sweep: a wide interval
>>> f"lr {p['lr']:.1e} (95% {p['lr_lo']:.1e} to {p['lr_hi']:.1e}); true {sl.synth.lr_opt(7e9, 1.4e12):.1e}"
'lr 7.2e-04 (95% 3.9e-04 to 1.3e-03); true 9.2e-04'
>>> tmp.cleanup()
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TypeAlias

import numpy as np
import polars as pl

from . import _native
from ._typing import Center, EvaluateMethod, LossLawForm, PerCell, RegressionMethod, Resample
from .errors import InvalidArgumentError
from .laws import VARIABLES, HparamLaw, Law, LossLaw, PowerLaw, _compute, resolve
from .optima import quadratic_surface, with_bs_tokens

__all__ = ["LawSpec", "evaluate", "fit_loss_law", "fit_lr_bs"]

#: Laws to evaluate: a law, a published law's name or a spec (``"step-law,deepseek"``,
#: ``"all"``, a saved law's ``.json``), a mapping label -> law, or a sequence of these.
LawSpec: TypeAlias = "Law | str | Mapping[str, LawSpec] | Sequence[LawSpec]"


def _keys(by: str | Sequence[str]) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def _require(df: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InvalidArgumentError(f"{what} has no column(s) {missing} (columns: {df.columns})")


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

    An ill-posed design raises :class:`InvalidArgumentError`: a regressor constant over the
    samples (e.g. one N only), too few cells for the coefficients, collinear regressors,
    non-positive values.
    """
    lr_on, bs_on = _check_on(lr_on, "lr_on"), _check_on(bs_on, "bs_on")
    if lr_on is None and bs_on is None:
        raise InvalidArgumentError("nothing to fit: lr_on and bs_on are both None")
    if bootstrap < 0:
        raise InvalidArgumentError(f"bootstrap must be >= 0, got {bootstrap}")
    if center not in ("mean", "point"):
        raise InvalidArgumentError(f"center must be 'mean' or 'point', got {center!r}")
    if len(samples) == 0:
        raise InvalidArgumentError("no samples to fit")
    keys = _keys(by)
    samples = with_bs_tokens(samples, seq_len=None) if bs_on is not None else samples
    needed = _regressor_columns(set(lr_on or ()) | set(bs_on or ()), samples.columns)
    targets = [t for t, on in (("lr", lr_on), ("bs_tokens", bs_on)) if on is not None]
    _require(samples, [*keys, *needed, *targets], "the samples")
    weight_cols = _weight_columns(weights)
    _require(samples, sorted(set(weight_cols.values())), "the samples")

    models: list[_native.LinearModel] = []
    parts: list[tuple[str, tuple[str, ...]]] = []
    for key, target, on in (("lr", "lr", lr_on), ("bs", "bs_tokens", bs_on)):
        if on is None:
            continue
        wcol = weight_cols.get(key)
        models.append(
            _native.LinearModel(
                target=target,
                regressors=list(on),
                columns=[_log(_regressor_column(samples, v)) for v in on],
                y=_log(samples[target].cast(pl.Float64).to_numpy()),
                weights=None if wcol is None else samples[wcol].cast(pl.Float64).fill_null(float("nan")).to_list(),
            )
        )
        parts.append((target, on))
    cells = samples.select(pl.struct(keys).hash(seed=0)).to_series().to_list()
    out = _native.fit_linear(models, cells, method, float(huber_t), int(bootstrap), resample, int(seed))

    n_cells = len(set(cells))
    if out["failed"]:
        warnings.warn(
            f"{out['failed']} of {bootstrap} bootstrap draws had an unidentifiable resampled design "
            "(e.g. every drawn cell shared one N) and were left out",
            stacklevel=2,
        )
    for target, on in parts:
        if n_cells <= len(on) + 3:
            warnings.warn(
                f"{target}: only {n_cells} cells for {len(on) + 1} coefficients: the fit is barely determined",
                stacklevel=2,
            )

    laws = {
        target: _power_law(target, on, fit, draws, center)
        for (target, on), fit, draws in zip(parts, out["fits"], out["draws"], strict=True)
    }
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
    }
    return HparamLaw(laws.get("lr"), laws.get("bs_tokens"), name=name, source="fit_lr_bs", info=info)


# --------------------------------------------------------------------------- loss law


def _chinchilla_params(p: Sequence[float]) -> dict[str, float]:
    a, b, e, alpha, beta = p
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def fit_loss_law(
    df: pl.DataFrame,
    form: LossLawForm = "chinchilla",
    bootstrap: int = 0,
    seed: int = 42,
    *,
    loss: str = "loss",
    by: str | Sequence[str] | None = ("N", "D"),
    per_cell: PerCell | None = "min",
    delta: float = 1e-3,
    starts: Sequence[Sequence[float]] | None = None,
    bootstrap_starts: int = 8,
) -> LossLaw:
    """Fit ``L(N, D) = E + A / N^alpha + B / D^beta`` as Hoffmann et al. / Epoch AI do.

    Minimises ``sum Huber_delta(log L_hat - log L)`` (``delta`` 1e-3) with ``log L_hat =
    LSE(a - alpha log N, b - beta log D, e)`` by L-BFGS (Rust, in parallel) from every start
    of a grid (default Hoffmann's 4,500: alpha, beta in 0..2 by 0.5, e in -1..1 by 0.5, a, b
    in 0..25 by 5; ``starts`` as rows ``[a, b, e, alpha, beta]``), keeping the best.

    ``df`` needs ``N``, ``D`` and ``loss``. With ``per_cell="min"`` (default) each cell
    (``by``) contributes its best loss, the loss at the optimal hyperparameters; ``None``
    fits the rows as given. ``bootstrap`` draws resample the points; each starts from the
    best ``bootstrap_starts`` distinct local optima of the grid (rerunning all 4,500 starts
    per draw would find the same basins at 4,500 times the cost).
    """
    if form != "chinchilla":
        raise InvalidArgumentError(f"unknown loss-law form {form!r} (chinchilla)")
    if bootstrap < 0:
        raise InvalidArgumentError(f"bootstrap must be >= 0, got {bootstrap}")
    _require(df, ["N", "D", loss], "the loss frame")
    data = df.filter(pl.col(loss).is_not_null() & pl.col(loss).is_finite())
    if per_cell is not None:
        if per_cell != "min":
            raise InvalidArgumentError(f"per_cell must be 'min' or None, got {per_cell!r}")
        keys = _keys(by or ("N", "D"))
        _require(df, keys, "the loss frame")
        # The best run of each cell: the loss at (near) optimal hyperparameters.
        data = data.sort(loss).unique(subset=keys, keep="first").sort(keys)
    n = data["N"].cast(pl.Float64).to_list()
    d = data["D"].cast(pl.Float64).to_list()
    y = data[loss].cast(pl.Float64).to_list()
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
        warnings.warn(
            f"{out['failed']} of {bootstrap} bootstrap draws gave no finite fit and were left out", stacklevel=2
        )
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
    }
    return LossLaw(_chinchilla_params(out["params"]), samples, out["objective"], info)


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


def evaluate(
    law: LawSpec,
    final: pl.DataFrame,
    by: str | Sequence[str] = ("N", "D"),
    *,
    method: EvaluateMethod = "nearest",
    loss: str = "loss",
    seq_len: int = 2048,
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
    ``seq_len``), ``loss`` and the ``by`` columns (N and D). Returns one row per (law, cell):
    ``law``, the cell keys, ``lr_pred``, ``bs_pred``, ``lr_at``, ``bs_at`` (the nearest run),
    ``loss_at``, ``loss_min``, ``rel_error``, ``fixed``. Summarise with
    ``.group_by("law").agg(pl.col("rel_error").median())``.

    ``method="quadratic"``: the loss on each cell's fitted quadratic surface in (ln lr, ln bs)
    (``steplaw_db.optima.quadratic_surface``) at the prediction itself, between grid points
    (NaN where a cell has no convex quadratic; far from the optimum the surface
    extrapolates). ``lr_at``/``bs_at`` still name the nearest run.
    """
    if method not in ("nearest", "quadratic"):
        raise InvalidArgumentError(f"unknown evaluation method {method!r} (nearest, quadratic)")
    keys = _keys(by)
    final = with_bs_tokens(final, seq_len=None)
    _require(final, [*keys, "N", "D", "lr", "bs_tokens", loss], "the final-loss frame")
    measured = final.filter(
        pl.col(loss).is_not_null() & pl.col(loss).is_finite() & (pl.col("lr") > 0) & (pl.col("bs_tokens") > 0)
    )
    if len(measured) == 0:
        raise InvalidArgumentError("no run with a finite loss to evaluate against")
    laws = _labelled_laws(law)
    rows = []
    cells = measured.partition_by(keys, maintain_order=True, as_dict=True)
    for key, cell in cells.items():
        lr = cell["lr"].cast(pl.Float64).to_numpy()
        bs = cell["bs_tokens"].cast(pl.Float64).to_numpy()
        y = cell[loss].cast(pl.Float64).to_numpy()
        N, D = float(cell["N"][0]), float(cell["D"][0])
        best = int(np.argmin(y))
        cell_min = float(y[best])
        surface = quadratic_surface(cell, loss=loss) if method == "quadratic" else None
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
            else:  # on the cell's fitted quadratic (null where the cell has none)
                loss_at = cell_min * (1.0 + float(surface(lr_hat, bs_hat))) if surface is not None else float("nan")
            rows.append(
                {
                    "law": label,
                    **dict(zip(keys, key, strict=True)),
                    "lr_pred": lr_hat,
                    "bs_pred": bs_hat,
                    "lr_at": float(lr[at][0]),
                    "bs_at": float(bs[at][0]),
                    "loss_at": loss_at,
                    "loss_min": cell_min,
                    "rel_error": (loss_at - cell_min) / cell_min,
                    "fixed": fixed,
                }
            )
    out = pl.DataFrame(rows, infer_schema_length=None)
    return out.with_columns(pl.col("fixed").cast(pl.String))
