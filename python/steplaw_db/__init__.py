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


#: Names served lazily, by the module that holds them (None: the module itself). They pull in
#: numpy (and start its BLAS threads) or matplotlib: loaded only when asked for.
_LAZY = {
    "synth": None, "laws": None, "plots": None,
    **dict.fromkeys(("fit_lr_bs", "fit_loss_law", "evaluate", "HparamLaw", "LossLaw"), "fit"),
    **dict.fromkeys(("fit_curve_law", "CurveLaw", "Schedule", "plot_curve_law"), "curve"),
    **dict.fromkeys(("stability", "StabilityReport"), "law_stability"),
    "write_report": "report",
}  # fmt: skip


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'steplaw_db' has no attribute {name!r}")
    import importlib

    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(f".{module}", __name__), name)


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
    "plots",
    "stability",
    "StabilityReport",
    "write_report",
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
