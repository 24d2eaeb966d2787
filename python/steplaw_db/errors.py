"""The exceptions steplaw-db raises: one hierarchy under :class:`SteplawError`.

The Rust core's one error enum maps onto these classes (``rust/src/py/mod.rs``), one variant
a class: ``Error::Invalid`` is :class:`InvalidArgumentError`, ``Error::InsufficientData``
:class:`InsufficientDataError`, so what the core refuses arrives already saying whether the
option or the data is at fault.
"""

from __future__ import annotations

__all__ = [
    "InsufficientDataError", "InternalError", "InvalidArgumentError", "ParseError", "SteplawError", "StoreError",
    "StoreLockedError",
]  # fmt: skip


class SteplawError(Exception):
    """Base class of every error steplaw-db raises on purpose."""


class StoreError(SteplawError, OSError):
    """The store (or a file) could not be read or written."""


class StoreLockedError(StoreError):
    """Another process is writing to the store; retry later or pass ``wait=`` seconds."""


class ParseError(SteplawError, ValueError):
    """A log, config or table could not be understood; the message names the file and line."""


class InvalidArgumentError(SteplawError, ValueError):
    """An option or argument makes no sense (unknown format, bad ``--set``, missing path, ...)."""


class InsufficientDataError(InvalidArgumentError):
    """The call was well formed but the data cannot support it: too few cells or points for a
    law's coefficients, no usable quadratic vertex, a regressor that does not vary over the
    cells, no run (or no cell) that matches. More or other data would satisfy it; the command
    line exits 1, not 2. A subclass of :class:`InvalidArgumentError` (the frame passed is an
    argument), so code that catches that still catches this. The core raises it directly
    (``Error::InsufficientData``); Python code raises it for the refusals it makes itself."""


class InternalError(SteplawError, RuntimeError):
    """A bug in steplaw-db itself (a worker panicked, an invariant broke); please report it."""
