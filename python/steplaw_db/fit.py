"""Fitting scaling laws: the optimal learning rate and batch as power laws of N, D (or C),
the Chinchilla loss law, and the evaluation of any law against measured cells.

The numerical work (least squares, Huber IRLS, L-BFGS, bootstrap) runs in the Rust core
(``steplaw_db._native``); this module prepares the inputs and wraps the results in
:class:`HparamLaw` and :class:`LossLaw`.

>>> import polars as pl, steplaw_db as sl
>>> from steplaw_db.optima import near_optimal
>>> law = sl.fit_lr_bs(near_optimal(final))          # the Step Law reference procedure
>>> law.predict(N=7e9, D=1.4e12)
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import numpy as np
import polars as pl

from . import _native
from .errors import InvalidArgumentError
from .optima import quadratic_surface, with_bs_tokens

__all__ = ["Law", "PowerLaw", "HparamLaw", "LossLaw", "fit_lr_bs", "fit_loss_law", "evaluate", "load_law"]

#: Variables a power law may depend on: parameters, tokens, compute (FLOPs).
VARIABLES = ("N", "D", "C")
#: Bootstrap percentile interval reported by default.
DEFAULT_INTERVAL = 0.95
#: Prefixes of the two targets in coefficient names (as in Step Law's bootstrap file).
_PREFIX = {"lr": "lr", "bs_tokens": "bs"}

PathLike = Union[str, Path]


def _compute(N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Training compute when no explicit C is given: the usual 6 N D approximation."""
    return 6.0 * N * D


def _as_array(v: Any, name: str) -> np.ndarray | None:
    if v is None:
        return None
    a = np.atleast_1d(np.asarray(v, dtype=float))
    if a.ndim != 1:
        raise InvalidArgumentError(f"{name} must be a number or a 1-d sequence")
    return a


def _broadcast(values: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    present = {k: v for k, v in values.items() if v is not None}
    if not present:
        return dict(values)
    try:
        arrays = np.broadcast_arrays(*present.values())
    except ValueError as e:
        raise InvalidArgumentError(
            f"inputs of different lengths: {', '.join(f'{k}={len(v)}' for k, v in present.items())}"
        ) from e
    out = dict(values)
    out.update(zip(present, (np.array(a, dtype=float) for a in arrays)))
    return out


def _interval_bounds(interval: float) -> tuple[float, float]:
    if not 0 < interval < 1:
        raise InvalidArgumentError(f"interval must be in (0, 1), got {interval}")
    return 50 * (1 - interval), 50 * (1 + interval)


_Saved = TypeVar("_Saved", bound="_SavedAsJson")


class _SavedAsJson:
    """``save`` and ``load`` of a law that has ``to_dict``: JSON, with the ``kind`` tag by which
    :func:`load_law` tells the law types apart."""

    #: What the law is called in the error of a ``load`` that finds another kind.
    _what = "law"

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: PathLike) -> None:
        """Write the law (coefficients, fit details and bootstrap draws) as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True))

    @classmethod
    def load(cls: type[_Saved], path: PathLike) -> _Saved:
        """Read a law written by :meth:`save`."""
        law = load_law(path)
        if not isinstance(law, cls):
            raise InvalidArgumentError(f"{path}: not a {cls._what}")
        return law


class Law:
    """A law giving the optimal peak learning rate and/or global batch (in tokens).

    Subclasses define :meth:`_predict_arrays`. ``inputs`` names what the law needs among
    ``N`` (non-embedding parameters), ``D`` (tokens), ``C`` (FLOPs) and ``loss`` (a loss
    value, for critical-batch laws); ``gives`` says which of ``lr`` and ``bs_tokens`` it
    predicts.
    """

    name: str = "law"
    source: str = ""
    inputs: tuple[str, ...] = ()
    gives: tuple[str, ...] = ("lr", "bs_tokens")
    units: Mapping[str, str] = {"lr": "peak learning rate", "bs_tokens": "tokens per step (sequences x seq_len)"}
    notes: str = ""

    def _predict_arrays(self, x: Mapping[str, np.ndarray | None], interval: float | None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(
        self,
        N: Any = None,
        D: Any = None,
        *,
        C: Any = None,
        loss: Any = None,
        seq_len: int = 2048,
        interval: float | None = DEFAULT_INTERVAL,
    ) -> pl.DataFrame:
        """Predict for each (N, D[, C, loss]) (numbers or equal-length sequences).

        Returns columns ``N``, ``D``, ``lr``, ``bs_tokens`` and ``bs`` (sequences of
        ``seq_len``), null where the law does not give the quantity; laws with bootstrap draws
        add ``lr_lo``/``lr_hi`` and ``bs_tokens_lo``/``bs_tokens_hi`` (percentile interval
        ``interval`` of the draws' predictions; ``None`` leaves them out). ``C`` defaults to
        6 N D when a law needs compute.
        """
        if seq_len <= 0:
            raise InvalidArgumentError(f"seq_len must be positive, got {seq_len}")
        x = _broadcast(
            {"N": _as_array(N, "N"), "D": _as_array(D, "D"), "C": _as_array(C, "C"), "loss": _as_array(loss, "loss")}
        )
        bad = [k for k, v in x.items() if v is not None and not (np.isfinite(v) & (v > 0)).all()]
        if bad:
            raise InvalidArgumentError(f"{', '.join(bad)} must be positive and finite")
        if x["C"] is None and x["N"] is not None and x["D"] is not None:
            x["C"] = _compute(x["N"], x["D"])
        missing = [v for v in self.inputs if x.get(v) is None]
        if missing:
            raise InvalidArgumentError(
                f"law '{self.name}' needs {', '.join(missing)} (it depends on {', '.join(self.inputs)})"
            )
        n = next((len(v) for v in x.values() if v is not None), 1)
        out = self._predict_arrays(x, interval)
        cols: dict[str, Any] = {k: x[k] if x[k] is not None else np.full(n, np.nan) for k in ("N", "D")}
        for target in ("lr", "bs_tokens"):
            cols[target] = out.get(target, np.full(n, np.nan))
        cols["bs"] = cols["bs_tokens"] / seq_len
        cols["seq_len"] = np.full(n, seq_len, dtype=np.int64)
        for extra in ("lr_lo", "lr_hi", "bs_tokens_lo", "bs_tokens_hi"):
            if extra in out:
                cols[extra] = out[extra]
        df = pl.DataFrame(cols)
        return df.with_columns(pl.col(pl.Float64).fill_nan(None))

    def describe(self) -> str:
        """A one-line formula of the law."""
        return self.name


@dataclass
class PowerLaw:
    """``target = exp(coef[0]) * prod_j x_j ** coef[j]``: one response of a fitted law.

    ``coef`` are the law's coefficients (the bootstrap means when there are draws, as Step
    Law publishes them; else the full-sample fit), ``point`` the full-sample fit,
    ``samples`` the bootstrap draws (rows of coefficients; may be ``None``).
    """

    target: str
    regressors: tuple[str, ...]
    coef: np.ndarray
    point: np.ndarray | None = None
    samples: np.ndarray | None = None
    r2: float = math.nan
    scale: float = math.nan

    def names(self) -> list[str]:
        """Coefficient names, e.g. ``lr_intercept, lr_coefN, lr_coefD``."""
        p = _PREFIX[self.target]
        return [f"{p}_intercept", *(f"{p}_coef{v}" for v in self.regressors)]

    def _logx(self, x: Mapping[str, np.ndarray | None]) -> np.ndarray:
        logs = [np.log(x[v]) for v in self.regressors]
        return np.stack([np.ones_like(logs[0]), *logs])

    def __call__(self, x: Mapping[str, np.ndarray | None]) -> np.ndarray:
        return np.exp(self.coef @ self._logx(x))

    def interval(self, x: Mapping[str, np.ndarray | None], interval: float) -> tuple[np.ndarray, np.ndarray] | None:
        if self.samples is None or len(self.samples) == 0:
            return None
        lo, hi = _interval_bounds(interval)
        logs = self.samples @ self._logx(x)  # draws x points
        return np.exp(np.nanpercentile(logs, lo, axis=0)), np.exp(np.nanpercentile(logs, hi, axis=0))

    def formula(self) -> str:
        terms = " ".join(f"{v}^{c:+.4f}" for v, c in zip(self.regressors, self.coef[1:]))
        return f"{self.target} = {math.exp(self.coef[0]):.6g} {terms}".rstrip()

    def to_dict(self) -> dict[str, Any]:
        def listed(a: np.ndarray | None) -> Any:
            return None if a is None else np.where(np.isfinite(a), a, np.nan).tolist()

        return {
            "target": self.target,
            "regressors": list(self.regressors),
            "coef": listed(self.coef),
            "point": listed(self.point),
            "samples": listed(self.samples),
            "r2": self.r2,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PowerLaw:
        def arr(v: Any) -> np.ndarray | None:
            return None if v is None else np.asarray(v, dtype=float)

        regressors = tuple(d["regressors"])
        bad = [v for v in regressors if v not in VARIABLES]
        if d["target"] not in _PREFIX or bad:
            raise InvalidArgumentError(
                f"not a power law of {VARIABLES}: target {d['target']!r}, regressors {regressors}"
            )
        coef = arr(d["coef"])
        if coef is None or len(coef) != len(regressors) + 1:
            raise InvalidArgumentError(f"{d['target']}: {len(regressors) + 1} coefficients expected")
        return cls(
            d["target"],
            regressors,
            coef,
            arr(d.get("point")),
            arr(d.get("samples")),
            d.get("r2", math.nan),
            d.get("scale", math.nan),
        )


class HparamLaw(Law, _SavedAsJson):
    """Optimal peak learning rate and batch size (tokens) as power laws.

    ``lr = exp(c0) N^a D^b`` (any subset of N, D, C) and ``bs_tokens = exp(d0) D^g``; either
    part may be absent. Made by :func:`fit_lr_bs` or by ``steplaw_db.laws``.

    - :meth:`predict` (vectorised, with bootstrap percentile intervals when there are draws);
    - :meth:`to_polars`: the coefficient table (estimate, full-sample fit, bootstrap mean, SD
      and interval, R^2);
    - :attr:`samples`: the bootstrap draws, one row each, columns named as in Step Law's
      public bootstrap file (``lr_intercept``, ``lr_coefN``, ...);
    - :meth:`save` / :func:`load_law`: JSON.
    """

    _what = "hyperparameter law"

    def __init__(
        self,
        lr: PowerLaw | None,
        bs: PowerLaw | None,
        *,
        name: str = "fitted",
        source: str = "",
        notes: str = "",
        info: Mapping[str, Any] | None = None,
    ) -> None:
        if lr is None and bs is None:
            raise InvalidArgumentError("a law needs at least one of lr and bs")
        self.lr, self.bs = lr, bs
        self.name, self.source, self.notes = name, source, notes
        self.info = dict(info or {})
        parts = [p for p in (lr, bs) if p is not None]
        self.inputs = tuple(v for v in VARIABLES if any(v in p.regressors for p in parts))
        self.gives = tuple(p.target for p in parts)

    def __repr__(self) -> str:
        return f"HparamLaw({self.name!r}: {self.describe()})"

    def describe(self) -> str:
        return "; ".join(p.formula() for p in (self.lr, self.bs) if p is not None)

    def _predict_arrays(self, x: Mapping[str, np.ndarray | None], interval: float | None) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for part in (self.lr, self.bs):
            if part is None:
                continue
            out[part.target] = part(x)
            bounds = part.interval(x, interval) if interval is not None else None
            if bounds is not None:
                out[f"{part.target}_lo"], out[f"{part.target}_hi"] = bounds
        return out

    @property
    def samples(self) -> pl.DataFrame:
        """The bootstrap draws: one row per draw, one column per coefficient (empty if none)."""
        cols: dict[str, Any] = {}
        for part in (self.lr, self.bs):
            if part is not None and part.samples is not None:
                for j, name in enumerate(part.names()):
                    cols[name] = part.samples[:, j]
        return pl.DataFrame(cols)

    def to_polars(self, interval: float = DEFAULT_INTERVAL) -> pl.DataFrame:
        """One row per coefficient: ``target``, ``term`` (intercept, N, D, C), ``name``,
        ``estimate`` (what the law uses), ``point`` (full-sample fit), ``mean``, ``sd``,
        ``lo``/``hi`` (bootstrap percentile interval) and the target's ``r2``."""
        lo_q, hi_q = _interval_bounds(interval)
        rows = []
        for part in (self.lr, self.bs):
            if part is None:
                continue
            for j, (term, name) in enumerate(zip(("intercept", *part.regressors), part.names())):
                draws = part.samples[:, j] if part.samples is not None and len(part.samples) else None
                finite = draws[np.isfinite(draws)] if draws is not None else np.empty(0)
                rows.append(
                    {
                        "target": part.target,
                        "term": term,
                        "name": name,
                        "estimate": float(part.coef[j]),
                        "point": float(part.point[j]) if part.point is not None else None,
                        "mean": float(finite.mean()) if finite.size else None,
                        "sd": float(finite.std(ddof=1)) if finite.size > 1 else None,
                        "lo": float(np.percentile(finite, lo_q)) if finite.size else None,
                        "hi": float(np.percentile(finite, hi_q)) if finite.size else None,
                        "r2": None if math.isnan(part.r2) else part.r2,
                    }
                )
        schema = {
            "target": pl.String,
            "term": pl.String,
            "name": pl.String,
            **{k: pl.Float64 for k in ("estimate", "point", "mean", "sd", "lo", "hi", "r2")},
        }
        return pl.DataFrame(rows, schema=schema)

    def coefficients(self) -> dict[str, float]:
        """The law's coefficients by name (``lr_intercept``, ``lr_coefN``, ...)."""
        out = {}
        for part in (self.lr, self.bs):
            if part is not None:
                out.update(zip(part.names(), map(float, part.coef)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "hparam-law",
            "name": self.name,
            "source": self.source,
            "notes": self.notes,
            "info": self.info,
            "lr": None if self.lr is None else self.lr.to_dict(),
            "bs": None if self.bs is None else self.bs.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HparamLaw:
        if d.get("kind") != "hparam-law":
            raise InvalidArgumentError(f"not a saved hyperparameter law (kind {d.get('kind')!r})")
        parts = [None if d.get(k) is None else PowerLaw.from_dict(d[k]) for k in ("lr", "bs")]
        return cls(
            parts[0],
            parts[1],
            name=d.get("name", "fitted"),
            source=d.get("source", ""),
            notes=d.get("notes", ""),
            info=d.get("info"),
        )

    @classmethod
    def from_samples(cls, samples: pl.DataFrame, *, name: str, source: str = "", notes: str = "") -> HparamLaw:
        """A law whose coefficients are the means of bootstrap draws given as a frame with
        Step Law's column names (``lr_intercept``, ``lr_coefN``, ``lr_coefD``,
        ``bs_intercept``, ``bs_coefD``; any of N, D, C)."""
        parts = []
        for target, prefix in _PREFIX.items():
            if f"{prefix}_intercept" not in samples.columns:
                parts.append(None)
                continue
            regressors = tuple(v for v in VARIABLES if f"{prefix}_coef{v}" in samples.columns)
            draws = (
                samples.select([f"{prefix}_intercept", *(f"{prefix}_coef{v}" for v in regressors)])
                .to_numpy()
                .astype(float)
            )
            parts.append(PowerLaw(target, regressors, np.nanmean(draws, axis=0), None, draws))
        return cls(parts[0], parts[1], name=name, source=source, notes=notes, info={"draws": len(samples)})


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


def fit_lr_bs(
    samples: pl.DataFrame,
    lr_on: Sequence[str] | None = ("N", "D"),
    bs_on: Sequence[str] | None = ("D",),
    method: str = "ols",
    bootstrap: int = 1000,
    seed: int = 42,
    *,
    resample: str = "rows",
    weights: str | Mapping[str, str] | None = None,
    by: str | Sequence[str] = ("N", "D"),
    huber_t: float = 1.345,
    center: str = "mean",
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
    regressors = set(lr_on or ()) | set(bs_on or ())
    derive_c = "C" in regressors and "C" not in samples.columns
    needed = [
        v for v in VARIABLES if (v in regressors and not (v == "C" and derive_c)) or (derive_c and v in ("N", "D"))
    ]
    targets = [t for t, on in (("lr", lr_on), ("bs_tokens", bs_on)) if on is not None]
    _require(samples, [*keys, *needed, *targets], "the samples")
    if isinstance(weights, str):
        weight_cols = {"lr": weights, "bs": weights}
    else:
        weight_cols = dict(weights or {})
        unknown = set(weight_cols) - {"lr", "bs"}
        if unknown:
            raise InvalidArgumentError(f"weights keys must be 'lr' and/or 'bs', got {sorted(unknown)}")
    _require(samples, sorted(set(weight_cols.values())), "the samples")

    models, parts = [], []
    for key, target, on in (("lr", "lr", lr_on), ("bs", "bs_tokens", bs_on)):
        if on is None:
            continue
        wcol = weight_cols.get(key)
        models.append(
            {
                "target": target,
                "regressors": list(on),
                "columns": [_log(_regressor_column(samples, v)) for v in on],
                "y": _log(samples[target].cast(pl.Float64).to_numpy()),
                "weights": None if wcol is None else samples[wcol].cast(pl.Float64).fill_null(float("nan")).to_list(),
            }
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

    laws = {}
    for (target, on), fit, draws in zip(parts, out["fits"], out["draws"]):
        point = np.asarray(fit["coef"], dtype=float)
        samples_arr = np.asarray(draws, dtype=float).reshape(len(draws), len(on) + 1) if draws else None
        coef = point
        if center == "mean" and samples_arr is not None and np.isfinite(samples_arr).all(axis=1).any():
            coef = np.nanmean(samples_arr[np.isfinite(samples_arr).all(axis=1)], axis=0)
        laws[target] = PowerLaw(target, on, coef, point, samples_arr, fit["r2"], fit["scale"])
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


@dataclass
class LossLaw(_SavedAsJson):
    """The Chinchilla loss law ``L(N, D) = E + A / N^alpha + B / D^beta``.

    Made by :func:`fit_loss_law`. ``params`` holds ``E, A, B, alpha, beta`` of the best fit;
    ``samples`` the bootstrap draws (a frame with those columns); ``objective`` the Huber
    objective at the optimum. :meth:`predict` is vectorised, with bootstrap intervals.
    """

    _what = "loss law"

    params: dict[str, float]
    samples: pl.DataFrame = field(default_factory=pl.DataFrame)
    objective: float = math.nan
    info: dict[str, Any] = field(default_factory=dict)
    name: str = "chinchilla"

    PARAMS = ("E", "A", "B", "alpha", "beta")

    def __repr__(self) -> str:
        p = self.params
        return f"LossLaw({self.name!r}: L = {p['E']:.4g} + {p['A']:.4g} / N^{p['alpha']:.4f} + {p['B']:.4g} / D^{p['beta']:.4f})"

    @staticmethod
    def _value(p: Mapping[str, Any], N: np.ndarray, D: np.ndarray) -> np.ndarray:
        return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]

    def predict(self, N: Any, D: Any, *, interval: float | None = DEFAULT_INTERVAL) -> pl.DataFrame:
        """The law's loss at each (N, D); ``loss_lo``/``loss_hi`` from the bootstrap draws."""
        x = _broadcast({"N": _as_array(N, "N"), "D": _as_array(D, "D")})
        n, d = x["N"], x["D"]
        cols: dict[str, Any] = {"N": n, "D": d, "loss": self._value(self.params, n, d)}
        if interval is not None and len(self.samples):
            lo, hi = _interval_bounds(interval)
            s = {k: self.samples[k].to_numpy()[:, None] for k in self.PARAMS}
            draws = self._value(s, n[None, :], d[None, :])
            cols["loss_lo"] = np.nanpercentile(draws, lo, axis=0)
            cols["loss_hi"] = np.nanpercentile(draws, hi, axis=0)
        return pl.DataFrame(cols)

    def to_polars(self, interval: float = DEFAULT_INTERVAL) -> pl.DataFrame:
        """One row per parameter: estimate, bootstrap mean, SD and percentile interval."""
        lo_q, hi_q = _interval_bounds(interval)
        rows = []
        for k in self.PARAMS:
            draws = self.samples[k].to_numpy() if len(self.samples) else np.empty(0)
            draws = draws[np.isfinite(draws)]
            rows.append(
                {
                    "param": k,
                    "estimate": self.params[k],
                    "mean": float(draws.mean()) if draws.size else None,
                    "sd": float(draws.std(ddof=1)) if draws.size > 1 else None,
                    "lo": float(np.percentile(draws, lo_q)) if draws.size else None,
                    "hi": float(np.percentile(draws, hi_q)) if draws.size else None,
                }
            )
        return pl.DataFrame(
            rows, schema={"param": pl.String, **{k: pl.Float64 for k in ("estimate", "mean", "sd", "lo", "hi")}}
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "loss-law",
            "form": "chinchilla",
            "name": self.name,
            "params": self.params,
            "objective": self.objective,
            "info": self.info,
            "samples": {k: self.samples[k].to_list() for k in self.samples.columns},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LossLaw:
        if d.get("kind") != "loss-law":
            raise InvalidArgumentError(f"not a saved loss law (kind {d.get('kind')!r})")
        missing = [k for k in cls.PARAMS if k not in d.get("params", {})]
        if missing:
            raise InvalidArgumentError(f"saved loss law lacks {missing}")
        samples = pl.DataFrame(d.get("samples") or {}, schema={k: pl.Float64 for k in (d.get("samples") or {})})
        return cls(
            {k: float(d["params"][k]) for k in cls.PARAMS},
            samples,
            d.get("objective", math.nan),
            d.get("info", {}),
            d.get("name", "chinchilla"),
        )


def _chinchilla_params(p: Sequence[float]) -> dict[str, float]:
    a, b, e, alpha, beta = p
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def fit_loss_law(
    df: pl.DataFrame,
    form: str = "chinchilla",
    bootstrap: int = 0,
    seed: int = 42,
    *,
    loss: str = "loss",
    by: str | Sequence[str] | None = ("N", "D"),
    per_cell: str | None = "min",
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


def load_law(path: PathLike) -> Law | LossLaw:
    """Read a law saved as JSON (:meth:`HparamLaw.save` or :meth:`LossLaw.save`)."""
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise InvalidArgumentError(f"{path}: no such law file") from e
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"{path}: not a JSON law file ({e})") from e
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "hparam-law":
        return HparamLaw.from_dict(d)
    if kind == "loss-law":
        return LossLaw.from_dict(d)
    raise InvalidArgumentError(f"{path}: not a saved law (kind {kind!r})")


# --------------------------------------------------------------------------- evaluation


def _labelled_laws(law: Any) -> list[tuple[str, Law]]:
    """(label, law) pairs from a law, a spec string, a list or a dict name -> law."""
    from . import laws as published

    if isinstance(law, Law):
        return [(law.name, law)]
    if isinstance(law, str):
        return [(one.name, one) for one in published.resolve(law)]
    if isinstance(law, Mapping):
        out = []
        for label, value in law.items():
            inner = _labelled_laws(value)
            out.extend([(str(label), inner[0][1])] if len(inner) == 1 else inner)
        return out
    if isinstance(law, Sequence):
        return [pair for item in law for pair in _labelled_laws(item)]
    raise InvalidArgumentError(f"not a law: {law!r}")


def evaluate(
    law: Any,
    final: pl.DataFrame,
    by: str | Sequence[str] = ("N", "D"),
    *,
    method: str = "nearest",
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
                    **dict(zip(keys, key)),
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
