"""Published laws of the optimal learning rate and batch size, for comparison with a fit.

>>> import steplaw_db as sl
>>> sl.laws.step_law().predict(N=7e9, D=1.4e12)      # lr 9.347e-04, 4,996,961 tokens
>>> sl.laws.names()
['step-law', 'deepseek', 'porian', 'openai', 'minicpm', 'microsoft']
>>> sl.laws.get("deepseek").inputs
('C',)

Every law reports the *peak* learning rate and the global batch in *tokens*; N is
non-embedding parameters, D training tokens, C training FLOPs (6 N D unless given), loss a
loss value (critical-batch laws). Each carries ``source`` and ``notes``; transcriptions that
could not be checked against the paper say so in ``notes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .errors import InvalidArgumentError
from .fit import HparamLaw, Law, PowerLaw, load_law

__all__ = [
    "step_law",
    "deepseek",
    "porian",
    "openai",
    "minicpm",
    "microsoft",
    "get",
    "names",
    "all_laws",
    "resolve",
    "describe_all",
    "FormulaLaw",
    "STEP_LAW_MEANS",
]

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
    notes = "peak LR with cosine decay to lr_min 1e-5; N non-embedding; fitted on near-optimal runs (within 0.25% of the cell minimum)"
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
        source="Porian et al. 2024, 'Resolving Discrepancies in Compute-Optimal Scaling of Language Models', arXiv 2406.19146",
        notes="as transcribed from Step Law's Table 1; the unit of the batch (tokens or sequences) is uncertain",
    )


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

    def _predict_arrays(self, x: Mapping[str, np.ndarray | None], interval: float | None) -> dict[str, np.ndarray]:
        return {k: np.asarray(f(x), dtype=float) for k, f in self._fns.items()}


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
