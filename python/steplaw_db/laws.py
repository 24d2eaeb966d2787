"""Laws of the optimal learning rate and batch size, and the Chinchilla loss law: their types
(:class:`Law`, :class:`PowerLaw`, :class:`HparamLaw`, :class:`FormulaLaw`, :class:`LossLaw`,
saved as JSON and read back by :func:`load_law`) and the published laws, for comparison with a
fit (:mod:`steplaw_db.fit` makes fitted ones).

>>> import steplaw_db as sl
>>> p = sl.laws.step_law().predict(N=7e9, D=1.4e12).row(0, named=True)
>>> f"lr {p['lr']:.3e}, batch {p['bs_tokens']:,.0f} tokens"
'lr 9.347e-04, batch 4,996,961 tokens'
>>> sl.laws.names()
['step-law', 'deepseek', 'porian', 'openai', 'minicpm', 'microsoft']
>>> sl.laws.get("deepseek").inputs
('C',)

Every published law reports the *peak* learning rate and the global batch in *tokens*; N is
non-embedding parameters, D training tokens, C training FLOPs (6 N D unless given), loss a
loss value (critical-batch laws). Each carries ``source`` and ``notes``; transcriptions that
could not be checked against the paper say so in ``notes``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np
import polars as pl

from ._html import law_html, loss_law_html
from .errors import InvalidArgumentError
from .fields import DEFAULT_SEQ_LEN

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "DEFAULT_INTERVAL",
    "MICROSOFT_CONSTANT",
    "STEP_LAW_MEANS",
    "VARIABLES",
    "FormulaLaw",
    "HparamLaw",
    "Law",
    "LossLaw",
    "PowerLaw",
    "all_laws",
    "deepseek",
    "describe_all",
    "get",
    "load_law",
    "microsoft",
    "minicpm",
    "names",
    "openai",
    "porian",
    "resolve",
    "round_batch",
    "step_law",
]

#: Variables a power law may depend on: parameters, tokens, compute (FLOPs).
VARIABLES = ("N", "D", "C")
#: Bootstrap percentile interval reported by default.
DEFAULT_INTERVAL = 0.95
#: Prefixes of the two targets in coefficient names (as in Step Law's bootstrap file).
_PREFIX = {"lr": "lr", "bs_tokens": "bs"}

PathLike: TypeAlias = str | Path


def _compute(N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Training compute when no explicit C is given: the usual 6 N D approximation."""
    return 6.0 * N * D


def _as_array(v: ArrayLike | None, name: str) -> np.ndarray | None:
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
    out.update(zip(present, (np.array(a, dtype=float) for a in arrays), strict=True))
    return out


def _interval_bounds(interval: float) -> tuple[float, float]:
    if not 0 < interval < 1:
        raise InvalidArgumentError(f"interval must be in (0, 1), got {interval}")
    return 50 * (1 - interval), 50 * (1 + interval)


def round_batch(bs: ArrayLike, multiple: int | None = None) -> np.ndarray:
    """A batch in sequences rounded to a size a run can use: the power of two nearest in log
    space, at least 1 (``multiple=None``; near the optimum the loss depends on the batch's
    ratio to it, so nearest in ratio), or the nearest positive multiple of ``multiple``
    sequences (e.g. data-parallel ranks x micro-batch). NaN where ``bs`` is not a positive
    number."""
    b = np.asarray(bs, dtype=float)
    ok = np.isfinite(b) & (b > 0)
    safe = np.where(ok, b, 1.0)
    if multiple is None:
        out = np.maximum(np.exp2(np.round(np.log2(safe))), 1.0)
    elif multiple >= 1:
        out = np.maximum(np.round(safe / multiple), 1.0) * multiple
    else:
        raise InvalidArgumentError(f"a batch multiple must be at least 1 sequence, got {multiple}")
    return np.where(ok, out, np.nan)


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
    _repr_html_ = law_html  # a notebook's view: the formula and the coefficients with intervals

    def _predict_arrays(self, x: Mapping[str, np.ndarray], interval: float | None) -> dict[str, np.ndarray]:
        """The law's predictions from the inputs given (every one of :attr:`inputs` among them)."""
        raise NotImplementedError

    def predict(
        self,
        N: ArrayLike | None = None,
        D: ArrayLike | None = None,
        *,
        C: ArrayLike | None = None,
        loss: ArrayLike | None = None,
        seq_len: int = DEFAULT_SEQ_LEN,
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
        given = {k: v for k, v in x.items() if v is not None}
        missing = [v for v in self.inputs if v not in given]
        if missing:
            raise InvalidArgumentError(
                f"law '{self.name}' needs {', '.join(missing)} (it depends on {', '.join(self.inputs)})"
            )
        n = next((len(v) for v in given.values()), 1)
        out = self._predict_arrays(given, interval)
        cols: dict[str, Any] = {k: given[k] if k in given else np.full(n, np.nan) for k in ("N", "D")}
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

    def _logx(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        logs = [np.log(x[v]) for v in self.regressors]
        return np.stack([np.ones_like(logs[0]), *logs])

    def __call__(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.exp(self.coef @ self._logx(x))

    def interval(self, x: Mapping[str, np.ndarray], interval: float) -> tuple[np.ndarray, np.ndarray] | None:
        if self.samples is None or len(self.samples) == 0:
            return None
        lo, hi = _interval_bounds(interval)
        logs = self.samples @ self._logx(x)  # draws x points
        return np.exp(np.nanpercentile(logs, lo, axis=0)), np.exp(np.nanpercentile(logs, hi, axis=0))

    def formula(self) -> str:
        terms = " ".join(f"{v}^{c:+.4f}" for v, c in zip(self.regressors, self.coef[1:], strict=True))
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
    part may be absent. Made by :func:`steplaw_db.fit_lr_bs` or by the published laws here.

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

    def _predict_arrays(self, x: Mapping[str, np.ndarray], interval: float | None) -> dict[str, np.ndarray]:
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
        ``lo``/``hi`` (bootstrap percentile interval), the target's ``r2``, and of a fitted law
        the target's ``cells`` and how many of them had their grid minimum on the grid's
        smallest (``edge_low``) or largest (``edge_high``) level: optima that are bounds. A target
        the fit could not identify (``info["not_fitted"]``) has its coefficients as rows without
        numbers and a ``reason`` column saying why."""
        lo_q, hi_q = _interval_bounds(interval)
        rows = []
        edges = self.info.get("edges") or {}
        for part in (self.lr, self.bs):
            if part is None:
                continue
            counts = edges.get("lr" if part.target == "lr" else "bs") or {}
            for j, (term, name) in enumerate(zip(("intercept", *part.regressors), part.names(), strict=True)):
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
                        "cells": counts.get("cells"),
                        "edge_low": counts.get("low"),
                        "edge_high": counts.get("high"),
                    }
                )
        # a target the fit could not identify: its coefficients as rows without numbers, and why
        for key, failed in (self.info.get("not_fitted") or {}).items():
            counts = edges.get(key) or {}
            prefix = "lr" if key == "lr" else "bs"
            for term in ("intercept", *failed.get("on", ())):
                rows.append(
                    {
                        "target": "lr" if key == "lr" else "bs_tokens",
                        "term": term,
                        "name": f"{prefix}_intercept" if term == "intercept" else f"{prefix}_coef{term}",
                        "cells": counts.get("cells"),
                        "edge_low": counts.get("low"),
                        "edge_high": counts.get("high"),
                        "reason": failed.get("reason"),
                    }
                )
        schema = {
            "target": pl.String,
            "term": pl.String,
            "name": pl.String,
            **{k: pl.Float64 for k in ("estimate", "point", "mean", "sd", "lo", "hi", "r2")},
            **{k: pl.Int64 for k in ("cells", "edge_low", "edge_high")},
            **({"reason": pl.String} if self.info.get("not_fitted") else {}),
        }
        return pl.DataFrame(rows, schema=schema)

    def edge_notes(self) -> list[str]:
        """One line per target whose fit had cells with their grid minimum on the grid's edge
        (``info["edges"]``): those optima are bounds, not measurements."""
        from .optima import edge_notes

        return edge_notes(self.info.get("edges"))

    def warn_edges(self) -> None:
        """Issue :meth:`edge_notes` as :class:`~steplaw_db.AnalysisWarning` (a saved law is loaded)."""
        from .optima import warn

        warn([f"law '{self.name}': {n}" for n in self.edge_notes()], stacklevel=4)

    def coefficients(self) -> dict[str, float]:
        """The law's coefficients by name (``lr_intercept``, ``lr_coefN``, ...)."""
        out: dict[str, float] = {}
        for part in (self.lr, self.bs):
            if part is not None:
                out.update(zip(part.names(), map(float, part.coef), strict=True))
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
        parts: list[PowerLaw | None] = []
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


class FormulaLaw(Law):
    """A published law that is not a pure power law (e.g. needs a loss value): each of
    ``lr`` and ``bs_tokens`` is a function of the inputs (arrays ``N``, ``D``, ``C``,
    ``loss``), or absent."""

    def __init__(
        self,
        name: str,
        *,
        lr: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None,
        bs_tokens: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None,
        inputs: tuple[str, ...],
        formula: str,
        source: str,
        notes: str = "",
    ) -> None:
        self.name, self.inputs, self.source, self.notes, self._formula = name, inputs, source, notes, formula
        self._fns = {k: f for k, f in (("lr", lr), ("bs_tokens", bs_tokens)) if f is not None}
        self.gives = tuple(self._fns)

    def __repr__(self) -> str:
        return f"FormulaLaw({self.name!r}: {self._formula})"

    def describe(self) -> str:
        return self._formula

    def _predict_arrays(self, x: Mapping[str, np.ndarray], interval: float | None) -> dict[str, np.ndarray]:
        return {k: np.asarray(f(x), dtype=float) for k, f in self._fns.items()}


# --------------------------------------------------------------------------- loss law


@dataclass
class LossLaw(_SavedAsJson):
    """The Chinchilla loss law ``L(N, D) = E + A / N^alpha + B / D^beta``.

    Made by :func:`steplaw_db.fit_loss_law`. ``params`` holds ``E, A, B, alpha, beta`` of the best fit;
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
    _repr_html_ = loss_law_html  # a notebook's view

    def __repr__(self) -> str:
        p = self.params
        law = f"L = {p['E']:.4g} + {p['A']:.4g} / N^{p['alpha']:.4f} + {p['B']:.4g} / D^{p['beta']:.4f}"
        return f"LossLaw({self.name!r}: {law})"

    @staticmethod
    def _value(p: Mapping[str, Any], N: np.ndarray, D: np.ndarray) -> np.ndarray:
        return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]

    def predict(self, N: ArrayLike, D: ArrayLike, *, interval: float | None = DEFAULT_INTERVAL) -> pl.DataFrame:
        """The law's loss at each (N, D); ``loss_lo``/``loss_hi`` from the bootstrap draws."""
        x = _broadcast({"N": _as_array(N, "N"), "D": _as_array(D, "D")})
        n, d = x["N"], x["D"]
        if n is None or d is None:
            raise InvalidArgumentError("a loss law predicts at given N and D")
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
        law = HparamLaw.from_dict(d)
        law.warn_edges()
        return law
    if kind == "loss-law":
        return LossLaw.from_dict(d)
    raise InvalidArgumentError(f"{path}: not a saved law (kind {kind!r})")


# --------------------------------------------------------------------------- published laws


#: Means of the 1,000 bootstrap fits in Step Law's public file
#: ``data/1004_fitted_lr_bs_scaling_model_parameters.csv`` (natural-log space), at full
#: precision: the published law is exp(mean intercept) N^mean coefN D^mean coefD, and its
#: public tool's answers (lr 9.347e-04, 4,996,961 tokens at N=7e9, D=1.4e12) need every
#: digit (the 6-digit rounding moves the batch by 50 tokens).
STEP_LAW_MEANS = {
    "lr_intercept": 0.5863077907399268,
    "lr_coefN": -0.7129222911869904,
    "lr_coefD": 0.30749095041206964,
    "bs_intercept": -0.5435421736103339,
    "bs_coefD": 0.5709443646895045,
}

_STEP_LAW_SOURCE = (
    "Li et al. 2025, 'Predictable Scale: Part I' (Step Law), arXiv 2503.04715; github.com/step-law/steplaw"
)


def step_law(samples: str | Path | pl.DataFrame | None = None) -> HparamLaw:
    """Step Law: lr = 1.79 N^-0.713 D^0.307, bs = 0.58 D^0.571 tokens.

    Given the public bootstrap file (``1004_fitted_lr_bs_scaling_model_parameters.csv``, a
    path or a frame), the law is built from its 1,000 coefficient sets (their means, with
    bootstrap intervals in :meth:`~HparamLaw.predict`); otherwise from the published means.
    """
    notes = (
        "peak LR with cosine decay to lr_min 1e-5; N non-embedding; "
        "fitted on near-optimal runs (within 0.25% of the cell minimum)"
    )
    if samples is not None:
        frame = pl.read_csv(samples) if isinstance(samples, (str, Path)) else samples
        expected = set(STEP_LAW_MEANS)
        if not expected <= set(frame.columns):
            raise InvalidArgumentError(
                f"not a Step Law bootstrap file: columns {frame.columns}, expected {sorted(expected)}"
            )
        return HparamLaw.from_samples(
            frame.select(list(STEP_LAW_MEANS)), name="step-law", source=_STEP_LAW_SOURCE, notes=notes
        )
    m = STEP_LAW_MEANS
    lr = PowerLaw("lr", ("N", "D"), np.array([m["lr_intercept"], m["lr_coefN"], m["lr_coefD"]]))
    bs = PowerLaw("bs_tokens", ("D",), np.array([m["bs_intercept"], m["bs_coefD"]]))
    return HparamLaw(lr, bs, name="step-law", source=_STEP_LAW_SOURCE, notes=notes)


def deepseek() -> HparamLaw:
    """DeepSeek LLM: lr = 0.3118 C^-0.1250, bs = 0.2920 C^0.3271 tokens.

    C = M D with M the non-embedding FLOPs per token (72 numl h^2 + 6 numl h seq); without
    an explicit C, predictions use 6 N D.
    """
    lr = PowerLaw("lr", ("C",), np.array([math.log(0.3118), -0.1250]))
    bs = PowerLaw("bs_tokens", ("C",), np.array([math.log(0.2920), 0.3271]))
    return HparamLaw(
        lr,
        bs,
        name="deepseek",
        source="Bi et al. 2024, 'DeepSeek LLM', arXiv 2401.02954",
        notes="C = M D, M = 72 numl h^2 + 6 numl h seq (non-embedding FLOPs/token); 6 N D is used when no C is given",
    )


def porian() -> HparamLaw:
    """Porian et al. 2024: lr = 3.7 N^-0.36, bs = 0.7576 N^0.703 (as transcribed)."""
    lr = PowerLaw("lr", ("N",), np.array([math.log(3.7), -0.36]))
    bs = PowerLaw("bs_tokens", ("N",), np.array([math.log(0.7576), 0.703]))
    return HparamLaw(
        lr,
        bs,
        name="porian",
        source="Porian et al. 2024, 'Resolving Discrepancies in Compute-Optimal Scaling of Language Models', "
        "arXiv 2406.19146",
        notes="as transcribed from Step Law's Table 1; the unit of the batch (tokens or sequences) is uncertain",
    )


def _kaplan_lr(x: Mapping[str, np.ndarray]) -> np.ndarray:
    lr = 0.003239 - 0.0001395 * np.log(x["N"])
    # The linear-in-ln N fit turns negative beyond N ~ 1.2e10: no prediction there.
    return np.where(lr > 0, lr, np.nan)


def openai() -> FormulaLaw:
    """OpenAI (Kaplan et al. 2020): lr = 0.003239 - 0.0001395 ln N; critical batch
    B = 2e8 / L^(1/0.21) tokens (needs a loss value L)."""
    return FormulaLaw(
        "openai",
        lr=_kaplan_lr,
        bs_tokens=lambda x: 2e8 / x["loss"] ** (1 / 0.21),
        inputs=("N", "loss"),
        formula="lr = 0.003239 - 0.0001395 ln N; bs_tokens = 2e8 / L^(1/0.21)",
        source="Kaplan et al. 2020, 'Scaling Laws for Neural Language Models', arXiv 2001.08361",
        notes="the batch is the critical batch at loss L (in nats); evaluate() passes the cell's minimum loss; "
        "the LR formula is negative (no prediction) beyond N ~ 1.2e10",
    )


def minicpm() -> FormulaLaw:
    """MiniCPM (Hu et al. 2024): bs = 1.21e9 / L^6.24 tokens (needs a loss value L); no LR law."""
    return FormulaLaw(
        "minicpm",
        lr=None,
        bs_tokens=lambda x: 1.21e9 / x["loss"] ** 6.24,
        inputs=("loss",),
        formula="bs_tokens = 1.21e9 / L^6.24",
        source="Hu et al. 2024, 'MiniCPM', arXiv 2404.06395",
        notes="batch only; evaluate() passes the cell's minimum loss and takes the LR at the cell's best",
    )


#: The Microsoft law's constant as used here (see :func:`microsoft`).
MICROSOFT_CONSTANT = 1.3192e3


def microsoft(constant: float = MICROSOFT_CONSTANT) -> HparamLaw:
    """Microsoft (Bjorck et al. 2024): lr = c N^-0.23 D^-0.32; no batch law.

    The constant is uncertain: Step Law's Table 1 transcribes it as 1.3192e-5, which gives
    LRs of ~1e-11. 1.3192e3 (the default) is the power of ten of that mantissa giving
    plausible LRs (9.3e-4 at N=7e9, D=1.4e12, as Step Law's own law). Pass ``constant`` to
    use another value.
    """
    if not (constant > 0 and math.isfinite(constant)):
        raise InvalidArgumentError(f"constant must be positive, got {constant}")
    lr = PowerLaw("lr", ("N", "D"), np.array([math.log(constant), -0.23, -0.32]))
    return HparamLaw(
        lr,
        None,
        name="microsoft",
        source="Bjorck et al. 2024, 'Scaling Optimal LR Across Token Horizons', arXiv 2409.19913",
        notes=f"constant uncertain (transcribed as 1.3192e-5; {constant:g} used); LR only",
    )


_REGISTRY: dict[str, Callable[[], Law]] = {
    "step-law": step_law,
    "deepseek": deepseek,
    "porian": porian,
    "openai": openai,
    "minicpm": minicpm,
    "microsoft": microsoft,
}


def names() -> list[str]:
    """The names of the shipped laws."""
    return list(_REGISTRY)


def get(name: str) -> Law:
    """A shipped law by name (``step-law``, ``deepseek``, ``porian``, ``openai``, ``minicpm``,
    ``microsoft``; ``steplaw`` and ``_`` spellings accepted)."""
    key = name.strip().lower().replace("_", "-")
    key = "step-law" if key in ("steplaw", "step") else key
    if key not in _REGISTRY:
        raise InvalidArgumentError(
            f"unknown law '{name}' (known: {', '.join(_REGISTRY)}, all, or a saved law's .json file)"
        )
    return _REGISTRY[key]()


def all_laws() -> list[Law]:
    """Every shipped law."""
    return [make() for make in _REGISTRY.values()]


def resolve(spec: str) -> list[Law]:
    """Laws from a command-line style spec: names and ``.json`` files separated by commas,
    or ``all``."""
    out: list[Law] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part.lower() == "all":
            out.extend(all_laws())
        elif part.lower().endswith(".json") or Path(part).is_file():
            law = load_law(part)
            if not isinstance(law, Law):
                raise InvalidArgumentError(f"{part}: a loss law, not a learning-rate / batch law")
            out.append(law)
        else:
            out.append(get(part))
    if not out:
        raise InvalidArgumentError("no law given")
    return out


def describe_all() -> pl.DataFrame:
    """A table of the shipped laws: name, formula, inputs, what they give, source, notes."""
    rows: list[dict[str, Any]] = [
        {
            "law": law.name,
            "formula": law.describe(),
            "inputs": ", ".join(law.inputs),
            "gives": ", ".join(law.gives),
            "source": law.source,
            "notes": law.notes,
        }
        for law in all_laws()
    ]
    return pl.DataFrame(rows)
