"""steplaw-db: store, analyse and fit hyperparameter scaling laws from LLM pre-training sweeps.

>>> import steplaw_db as sl
>>> db = sl.open("steplaw.db")
>>> db.ingest("runs/")
>>> db.runs(), db.points()
"""

from __future__ import annotations

from . import errors
from ._native import __version__
from .errors import InvalidArgumentError, ParseError, SteplawError, StoreError, StoreLockedError
from .optima import landscape, near_optimal, optima, read_final_table
from .store import IngestReport, Store, open


#: Fitting names, served lazily from `.fit` (they pull in numpy too).
_FIT_EXPORTS = ("fit_lr_bs", "fit_loss_law", "evaluate", "HparamLaw", "LossLaw")
#: Loss-curve law names, served lazily from `.curve`.
_CURVE_EXPORTS = ("fit_curve_law", "CurveLaw", "Schedule", "plot_curve_law")


def __getattr__(name: str):
    # `synth` pulls in numpy (and its BLAS threads): load it only when asked for.
    if name in ("synth", "laws"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in _FIT_EXPORTS:
        import importlib

        return getattr(importlib.import_module(".fit", __name__), name)
    if name in _CURVE_EXPORTS:
        import importlib

        return getattr(importlib.import_module(".curve", __name__), name)
    raise AttributeError(f"module 'steplaw_db' has no attribute {name!r}")


__all__ = [
    "__version__",
    "fit_curve_law",
    "CurveLaw",
    "Schedule",
    "plot_curve_law",
    "open",
    "Store",
    "IngestReport",
    "optima",
    "near_optimal",
    "landscape",
    "read_final_table",
    "errors",
    "synth",
    "laws",
    "fit_lr_bs",
    "fit_loss_law",
    "evaluate",
    "HparamLaw",
    "LossLaw",
    "SteplawError",
    "StoreError",
    "StoreLockedError",
    "ParseError",
    "InvalidArgumentError",
]
