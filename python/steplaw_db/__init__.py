"""steplaw-db: store, analyse and fit hyperparameter scaling laws from LLM pre-training sweeps.

A synthetic sweep with a known truth (four (N, D) cells of 7 learning rates x 5 batch sizes),
ingested into a new store:

>>> import tempfile
>>> import steplaw_db as sl
>>> tmp = tempfile.TemporaryDirectory()
>>> truth = sl.synth.write_sweep(f"{tmp.name}/runs", points=50)
>>> db = sl.open(f"{tmp.name}/steplaw.db")
>>> report = db.ingest(f"{tmp.name}/runs")
>>> report.added, report.failed
(140, [])
>>> db.runs().height, db.points().height  # one row per run; every logged training loss
(140, 7133)
>>> final = db.final_losses()  # raw and smoothed final loss of every run, with its configuration
>>> sl.optima(final, method="quadratic").select("N", "D", "lr_opt", "bs_tokens_opt").height
4
>>> tmp.cleanup()
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from . import errors
from ._native import __version__
from .errors import (
    InsufficientDataError,
    InternalError,
    InvalidArgumentError,
    ParseError,
    SteplawError,
    StoreError,
    StoreLockedError,
)

if TYPE_CHECKING:
    from . import fields, fit, laws, plots, synth
    from .curve import CurveLaw, Schedule, fit_curve_law, plot_curve_law
    from .fields import RUN_FIELDS
    from .fit import compare_laws, evaluate, fit_law, fit_laws, fit_loss_law, fit_lr_bs
    from .laws import HparamLaw, LossLaw
    from .optima import (
        AnalysisWarning,
        assign_cells,
        cells,
        find_cell,
        landscape,
        near_optimal,
        optima,
        read_final_table,
    )
    from .report import write_report
    from .stability import StabilityReport, stability
    from .store import CheckReport, IngestReport, Store, open

#: Names served lazily, by the module that holds them (None: the module itself). Every one
#: pulls in polars, numpy (and its BLAS threads) or matplotlib: loaded only when asked for, so
#: that ``import steplaw_db`` (and the command line's start) costs almost nothing.
_LAZY: dict[str, str | None] = {
    "fields": None, "fit": None, "laws": None, "plots": None, "synth": None,
    "RUN_FIELDS": "fields",
    **dict.fromkeys(
        ("AnalysisWarning", "assign_cells", "cells", "find_cell", "landscape", "near_optimal", "optima",
         "read_final_table"),
        "optima",
    ),
    **dict.fromkeys(("StabilityReport", "stability"), "stability"),
    **dict.fromkeys(("CheckReport", "IngestReport", "Store", "open"), "store"),
    **dict.fromkeys(("fit_lr_bs", "fit_loss_law", "evaluate", "fit_law", "fit_laws", "compare_laws"), "fit"),
    **dict.fromkeys(("HparamLaw", "LossLaw"), "laws"),
    **dict.fromkeys(("fit_curve_law", "CurveLaw", "Schedule", "plot_curve_law"), "curve"),
    "write_report": "report",
}  # fmt: skip

#: Names that are both a function here and a submodule: importing the submodule (which binds
#: it on the package) must not hide the function.
_SHADOWED = ("stability", "optima")


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)  # the function of that name, not its module
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'steplaw_db' has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f".{name}", __name__)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # served once: later lookups find it here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "RUN_FIELDS",
    "AnalysisWarning",
    "CheckReport",
    "CurveLaw",
    "HparamLaw",
    "IngestReport",
    "InsufficientDataError",
    "InternalError",
    "InvalidArgumentError",
    "LossLaw",
    "ParseError",
    "Schedule",
    "StabilityReport",
    "SteplawError",
    "Store",
    "StoreError",
    "StoreLockedError",
    "__version__",
    "assign_cells",
    "cells",
    "compare_laws",
    "errors",
    "evaluate",
    "fields",
    "find_cell",
    "fit",
    "fit_curve_law",
    "fit_law",
    "fit_laws",
    "fit_loss_law",
    "fit_lr_bs",
    "landscape",
    "laws",
    "near_optimal",
    "open",
    "optima",
    "plot_curve_law",
    "plots",
    "read_final_table",
    "stability",
    "synth",
    "write_report",
]
