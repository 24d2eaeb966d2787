"""The option strings of the public API, as ``Literal`` types (one place, so that a type checker
catches ``smooth="robst"`` before the core does), and the typed helpers that read Polars
scalars.

At run time every function still validates its options and raises
:class:`~steplaw_db.errors.InvalidArgumentError` on an unknown one (the command line passes user
text straight through).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = [
    "DEFAULT_LAW_METHOD",
    "BudgetKind",
    "Center",
    "CurveForm",
    "CurveMethod",
    "Decay",
    "DesignPolicy",
    "EvaluateMethod",
    "IngestFormat",
    "LawMethod",
    "LossLawForm",
    "OptimumMethod",
    "PerCell",
    "PlotX",
    "RegressionMethod",
    "Resample",
    "Restarts",
    "RunStatus",
    "Smoothing",
    "SynthFormat",
    "WidthUnit",
    "WsdShape",
    "as_float",
]

#: Final-loss smoothing (``Store.final_losses(smooth=...)``, docs/final-loss.md).
Smoothing: TypeAlias = Literal["robust", "steplaw", "gaussian", "ema", "tail-mean", "none"]
#: Unit of a smoothing width.
WidthUnit: TypeAlias = Literal["fraction", "steps", "tokens"]
#: Where a final loss is read: the end of the run, a step, a token count or a fraction of it.
BudgetKind: TypeAlias = Literal["end", "step", "tokens", "fraction"]
#: Log formats ``Store.ingest(format=...)`` forces (auto-detected when None).
IngestFormat: TypeAlias = Literal[
    "steplaw", "megatron", "nanogpt", "jsonl", "csv", "wandb-chart", "wandb-run", "mlflow", "tensorboard", "hf"
]
#: A run's status in the runs table.
RunStatus: TypeAlias = Literal["complete", "incomplete", "diverged", "summary-only"]
#: The optimum of a cell: the grid minimum or the quadratic vertex.
OptimumMethod: TypeAlias = Literal["grid", "quadratic"]
#: What a design column varying inside a snapped cell does: split the cell, or stop with a message.
DesignPolicy: TypeAlias = Literal["split", "error"]
#: How the lr/batch law is fitted from a sweep: each cell's quadratic vertex (the default, which
#: recovers known laws), or Step Law's procedure (near-optimal runs, OLS) exactly.
LawMethod: TypeAlias = Literal["quadratic", "steplaw"]
#: The package's default way to fit the lr/batch law (the stability benchmark's reference fit).
DEFAULT_LAW_METHOD: LawMethod = "quadratic"
#: Regression of the lr/batch laws: least squares or Huber's M-estimator.
RegressionMethod: TypeAlias = Literal["ols", "huber"]
#: The bootstrap's resampling unit.
Resample: TypeAlias = Literal["rows", "cells"]
#: How a log holding several trials is read: one run per trial, or one run by the restart rule.
Restarts: TypeAlias = Literal["split", "merge"]
#: A fitted law's coefficients: the bootstrap mean or the full-sample fit.
Center: TypeAlias = Literal["mean", "point"]
#: How ``evaluate`` reads the loss at a law's prediction.
EvaluateMethod: TypeAlias = Literal["nearest", "quadratic"]
#: The loss law's form.
LossLawForm: TypeAlias = Literal["chinchilla"]
#: What each cell contributes to a loss-law fit (None: every row).
PerCell: TypeAlias = Literal["min"]
#: Loss-curve laws: the Multi-Power Law or the LR-annealing law.
CurveForm: TypeAlias = Literal["mpl", "annealing"]
#: How the core sums the Multi-Power Law (the result is the same).
CurveMethod: TypeAlias = Literal["auto", "direct", "expsum"]
#: Learning-rate decay of a :class:`~steplaw_db.Schedule`.
Decay: TypeAlias = Literal["cosine", "linear", "constant", "wsd"]
#: Shape of a warm-up-stable-decay schedule's decay.
WsdShape: TypeAlias = Literal["linear", "exponential", "cosine"]
#: Log formats the synthetic sweep writes.
SynthFormat: TypeAlias = Literal["steplaw", "megatron", "jsonl", "csv"]
#: The x axis of a loss-curve plot.
PlotX: TypeAlias = Literal["step", "tokens"]


def as_float(value: object) -> float:
    """A Polars scalar (``Series.min()``, ``.item()``, a row's value) as a float; anything but a
    number (a null among them) is a TypeError, as ``float(None)`` is."""
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError(f"expected a number, got {value!r}")
