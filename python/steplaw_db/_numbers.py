"""Numbers as people write them, for every human-facing output (CLI tables, HTML, figures).

Standard library only: the CLI imports this at start-up."""

from __future__ import annotations

import math


def si(v: float, digits: int = 3) -> str:
    """A count (tokens, parameters) with an SI suffix: ``214M``, ``100B``, ``1.5T``, ``512``.

    >>> si(2.14e8), si(1.4e12), si(950), si(2048)
    ('214M', '1.4T', '950', '2.05k')
    """
    if v is None or not math.isfinite(v):
        return str(v)
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.{digits}g}{unit}"
    return f"{v:.{digits}g}"


def sci(v: float, digits: int = 3) -> str:
    """Scientific notation without a padded exponent or trailing zeros (a learning rate).

    >>> sci(9.35e-4), sci(1e-2), sci(0.0)
    ('9.35e-4', '1e-2', '0')
    """
    if v is None or not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    mantissa, exponent = f"{v:.{digits - 1}e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def sig(v: float, digits: int = 3, plain: tuple[float, float] = (1e-3, 1e5)) -> str:
    """``digits`` significant digits, plain inside ``plain`` (|v| in [lo, hi)), else :func:`sci`.

    >>> sig(0.25), sig(9.35e-4), sig(1.4e21), sig(0.0)
    ('0.25', '9.35e-4', '1.4e21', '0')
    """
    if v is None or not math.isfinite(v):
        return str(v)
    if v == 0 or plain[0] <= abs(v) < plain[1]:
        return f"{v:.{digits}g}"
    return sci(v, digits)
