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
from .store import IngestReport, Store, open



def __getattr__(name: str):
    # `synth` pulls in numpy (and its BLAS threads): load it only when asked for.
    if name == "synth":
        import importlib

        return importlib.import_module(".synth", __name__)
    raise AttributeError(f"module 'steplaw_db' has no attribute {name!r}")


__all__ = [
    "__version__",
    "open",
    "Store",
    "IngestReport",
    "errors",
    "synth",
    "SteplawError",
    "StoreError",
    "StoreLockedError",
    "ParseError",
    "InvalidArgumentError",
]
