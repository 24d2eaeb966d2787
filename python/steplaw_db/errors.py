"""The exceptions steplaw-db raises: one hierarchy under :class:`SteplawError`.

The Rust core's one error enum maps onto these classes (``rust/src/py/mod.rs``).
"""

from __future__ import annotations

__all__ = ["InternalError", "InvalidArgumentError", "ParseError", "SteplawError", "StoreError", "StoreLockedError"]


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


class InternalError(SteplawError, RuntimeError):
    """A bug in steplaw-db itself (a worker panicked, an invariant broke); please report it."""
