"""The exceptions steplaw-db raises: one hierarchy under :class:`SteplawError`.

The Rust core's one error enum maps onto these classes (``rust/src/py/mod.rs``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "InsufficientDataError", "InternalError", "InvalidArgumentError", "ParseError", "SteplawError", "StoreError",
    "StoreLockedError", "core_data_errors", "is_insufficient_data",
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
    argument), so code that catches that still catches this."""


class InternalError(SteplawError, RuntimeError):
    """A bug in steplaw-db itself (a worker panicked, an invariant broke); please report it."""


#: The Rust core raises one class for a bad option and for data too thin to fit
#: (``Error::Invalid``): these are the starts (and, after ``": "``, a target's prefix such as
#: ``lr: ``) of its messages that mean the data, so that :func:`core_data_errors` can raise
#: them as :class:`InsufficientDataError`. Until the core has a variant of its own
#: (``rust/src/error.rs``), a new such refusal in the core belongs here too.
_CORE_DATA_MESSAGES = (
    "too few cells to fit",  # fit/linear.rs
    "every sample has the same",
    "the regressors",  # "... are collinear over the samples"
    "the design is singular",  # fit/bootstrap.rs
    "a sample has a missing, zero, negative or infinite value",
    "too few points for the Chinchilla law",  # fit/chinchilla.rs
    "the Chinchilla law needs at least 3 distinct values",
    "N, D and loss must be positive and finite",
    "the Chinchilla fit diverged from every start",
    "too few points to fit the law's",  # curve/mod.rs
    "no usable start: the curves do not look like decreasing loss curves",
    "the fit failed from every start",
)


def is_insufficient_data(e: BaseException) -> bool:
    """Whether ``e`` says the data cannot support the call (exit 1 on the command line): an
    :class:`InsufficientDataError`, or a core refusal of :data:`_CORE_DATA_MESSAGES`."""
    if isinstance(e, InsufficientDataError):
        return True
    if not isinstance(e, InvalidArgumentError):
        return False
    message = str(e)
    body = message.partition(": ")[2]  # "lr: too few cells ...": the core names the target first
    return any(m.startswith(_CORE_DATA_MESSAGES) for m in (message, body))


@contextmanager
def core_data_errors() -> Iterator[None]:
    """Around a call into the core: a refusal that says the data is too thin is raised as
    :class:`InsufficientDataError` (same message), any other error as it is."""
    try:
        yield
    except InvalidArgumentError as e:
        if is_insufficient_data(e) and not isinstance(e, InsufficientDataError):
            raise InsufficientDataError(str(e)) from e
        raise
