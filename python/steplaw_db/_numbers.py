"""Numbers as people write them, for every human-facing output (CLI tables, HTML, figures).

Standard library only: the CLI imports this at start-up."""

from __future__ import annotations

import math
from numbers import Integral
from typing import Literal


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

    >>> sig(0.25), sig(9.35e-4), sig(1.4e21), sig(0.0), sig(12345.6, 4)
    ('0.25', '9.35e-4', '1.4e21', '0', '12346')
    """
    if v is None or not math.isfinite(v):
        return str(v)
    if v == 0 or (plain[0] <= abs(v) < 10**digits and abs(v) < plain[1]):
        return f"{v:.{digits}g}"
    if plain[0] <= abs(v) < plain[1]:  # more integer digits than ``digits``: ``12346``, not ``1.235e+04``
        return f"{v:.0f}"
    return sci(v, digits)


# --- table cells: one classification of a column by its name, for the CLI and the HTML tables ---

#: What a column's numbers are, which decides how they read (see :func:`kind`).
Kind = Literal[
    "params", "tokens", "seq", "flops", "lr", "loss", "percent", "percent_given", "probability", "id", "plain"
]  # fmt: skip

#: Batch columns in sequences (a batch in tokens says so in its name, ``bs_tokens_*``, and is
#: read as tokens by that).
_BS_IN_SEQ = frozenset({"bs", "bs_lo", "bs_hi", "bs_rounded"})
#: Identifiers and architecture sizes: digits as a config writes them (``2048``, not ``2,048``).
_AS_WRITTEN = frozenset({"run_id", "seed", "h", "ffnh", "numl", "numh", "seq_len", "n_experts", "top_k"})
#: Fractions a table shows in percent: relative errors and penalties, spreads (max / min - 1),
#: shares, the near-optimal threshold, the backtest's ``bias`` (median signed relative error).
_FRACTIONS = frozenset({"threshold", "coverage", "share", "bias"})
#: Parts of a name that make an ``lr_`` / ``bs_`` / ``N_`` column something other than a
#: learning rate or a size: fit coefficients, grid levels and offsets, log errors, step counts.
_NOT_THE_QUANTITY = ("coef", "intercept", "level", "log_", "steps", "fraction", "edge")


def kind(column: str) -> Kind:
    """What the numbers of ``column`` are, by its name: the one rule every table (CLI table,
    Markdown, LaTeX, HTML report, notebook view) formats by.

    >>> [kind(c) for c in ("N", "D", "bs", "bs_tokens_opt", "lr_quad", "loss_min", "rel_error", "D_spread")]
    ['params', 'tokens', 'seq', 'tokens', 'lr', 'loss', 'percent', 'percent']
    >>> [kind(c) for c in ("lr_coefN", "bs_levels", "n_points", "median_%", "p_near_optimal", "run_id")]
    ['plain', 'plain', 'plain', 'percent_given', 'probability', 'id']
    """
    # a trailing band is not the unit: optima's plateau lr_lo_0.25% is a learning rate, not a percent
    head, _, band = column.rpartition("_")
    if head and band.endswith("%") and band[:-1].replace(".", "", 1).isdigit():
        return kind(head)
    c = column.lower()
    if c.endswith("%"):
        return "percent_given"
    if (
        c.startswith("rel_")
        or "rel_error" in c
        or "penalty" in c
        or c.endswith(("_spread", "_share"))
        or c in _FRACTIONS
    ):
        return "percent"
    if c == "p" or c.startswith("p_"):
        return "probability"
    if c in _AS_WRITTEN or c.endswith("_id"):
        return "id"
    if any(part in c for part in _NOT_THE_QUANTITY) or "/" in c:
        return "plain"
    # N, D and C are case-sensitive: n_points is a count, not parameters
    if column in ("N", "params") or column.startswith("N_") or c.endswith("_params") or c == "n_params":
        return "params"
    if column == "C" or column.startswith("C_") or c == "flops":
        return "flops"
    if column == "D" or column.startswith("D_") or "tokens" in c:
        return "tokens"
    if c in _BS_IN_SEQ:
        return "seq"
    if c == "lr" or c.startswith("lr_") or c.endswith("_lr"):
        return "lr"
    if "loss" in c:
        return "loss"
    return "plain"


def number(column: str, value: float) -> str:
    """One number of ``column`` as a table cell shows it, with its unit where the column has
    one: N ``214M``, D ``100B tokens``, bs ``2,440 seq`` (whole sequences), lr ``9.35e-4``,
    a loss ``2.753`` (4 significant digits), a fraction ``0.25%``, a p-value ``0.031``, a
    count ``1,911``, an id ``2048``, anything else 4 significant digits.

    >>> number("N", 214e6), number("D", 1e11), number("bs", 2439.92), number("lr", 0.0127)
    ('214M', '100B tokens', '2,440 seq', '1.27e-2')
    >>> number("loss", 2.8), number("rel_error", 0.0025), number("steps", 167650), number("h", 2048)
    ('2.800', '0.25%', '167,650', '2048')
    """
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    k = kind(column)
    if k == "params":
        return si(v)
    if k == "tokens":
        return f"{si(v)} tokens"
    if k == "flops":
        return f"{sig(v)} FLOPs"
    if k == "seq":
        return f"{v:,.0f} seq"
    if k == "lr":
        return sci(v)
    if k == "percent":
        return f"{sig(v * 100)}%"
    if k == "percent_given":
        return f"{sig(v)}%"
    if isinstance(value, Integral) or (k == "id" and v.is_integer()):  # numpy's integers too
        return str(int(value)) if k == "id" else f"{int(value):,}"
    if k == "loss" and (v == 0 or 1e-3 <= abs(v) < 1e4):
        # trailing zeros kept, so a column of losses lines up: 2.800 above 2.753
        return f"{v:#.4g}".rstrip(".")
    if k == "probability":
        return sig(v, 2)
    return sig(v, 4)
