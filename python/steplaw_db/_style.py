"""One look for every figure (plots.py, the report): a colour-blind-safe palette, log axes
labelled with real values and units (``1e-3``, ``2M``), readable loss ticks, and legends and
notes placed outside the data so they cover neither the points nor each other.

Imported only by the plotting code (it imports matplotlib)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ._numbers import sci, si

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

#: Okabe & Ito's palette (distinguishable under the common colour-vision deficiencies), in the
#: order lines take them; the yellow is last (weak on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
#: Marker shapes in the order laws take them (shape as well as colour tells them apart).
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h")
LINESTYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)))
#: A sequential colour map readable in grey and by colour-blind readers.
SEQUENTIAL = "viridis"
#: How diverged runs are drawn everywhere.
DIVERGED: dict[str, Any] = {"marker": "x", "color": "#D55E00", "linestyle": "none", "ms": 7, "mew": 1.6}

_RC: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
    "savefig.dpi": 130,
    "figure.dpi": 100,
}


def headless() -> None:
    """Draw to files, not windows (works headless), unless ``$MPLBACKEND`` says otherwise;
    before pyplot is imported."""
    import matplotlib

    if not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")


@contextmanager
def style() -> Iterator[None]:
    """The figures' rc settings and palette, for the duration of one figure."""
    headless()
    import matplotlib as mpl
    from cycler import cycler

    rc: dict[Any, Any] = {**_RC, "axes.prop_cycle": cycler(color=list(PALETTE))}
    with mpl.rc_context(rc):
        yield


def colour(i: int) -> str:
    """The ``i``-th colour of the palette (cycling)."""
    return PALETTE[i % len(PALETTE)]


# ------------------------------------------------------------------ numbers as people write them


def loss(v: float) -> str:
    """A loss value: three significant digits, never scientific (``2.85``, ``3.1``)."""
    return f"{v:.3g}" if 0.01 <= abs(v) < 1000 else f"{v:.3e}"


_KINDS = {"lr": sci, "tokens": si, "count": si, "plain": lambda v: f"{v:g}"}


def log_axis(ax: Axes, which: str, kind: str) -> None:
    """A log axis whose ticks read as values (``1e-3``, ``2M``), never log10 exponents;
    minor ticks get labels only when the axis spans less than two decades (else too crowded)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fmt = _KINDS[kind]
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    decades = math.log10(hi / lo) if lo > 0 and hi > 0 else 10.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if decades > 2 else (1.0, 2.0, 5.0), numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=12))
    axis.set_minor_formatter(NullFormatter())
    if decades < 0.7:  # less than one labelled tick would show: label the minor ticks too
        axis.set_minor_formatter(FuncFormatter(lambda v, _pos: fmt(v)))


def loss_axis(ax: Axes, which: str = "y", *, log: bool = False, n: int = 6) -> None:
    """Loss ticks as plain numbers (``2.6``, ``2.8``), about ``n`` of them, on a linear or log
    axis; call after the data (and the limits) are set."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    if log:
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    ticks = [t for t in MaxNLocator(n).tick_values(lo, hi) if lo <= t <= hi and t > 0]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: loss(v)))
    axis.set_minor_formatter(NullFormatter())


# ------------------------------------------------------------------ text that covers nothing


def legend_outside(ax: Axes, *, where: str = "right", **kwargs: Any) -> Any:
    """The axes' legend beside (``right``) or below (``below``) the axes, never over the data."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    if where == "below":
        # as many columns as the longest label leaves room for: names are never cut
        longest = max(len(label) for label in labels)
        ncol = 1 if longest > 48 else 2 if longest > 30 else 3
        return ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncol=min(ncol, len(handles)),
            borderaxespad=0.0,
            **kwargs,
        )
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def notes_below(fig: Figure, notes: Sequence[str], *, width: int = 110) -> Text | None:
    """Notes (laws that could not be drawn, runs left out) as one text block under everything
    else in the figure: one line each, so they overlap neither each other nor the axes."""
    import textwrap

    if not notes:
        return None
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [a.get_tightbbox(renderer) for a in fig.axes]
    legends = [*fig.legends, *(a.get_legend() for a in fig.axes)]
    boxes += [leg.get_window_extent(renderer) for leg in legends if leg is not None]
    bottom = min(b.y0 for b in boxes if b is not None)
    y = fig.transFigure.inverted().transform((0, bottom))[1] - 0.01
    lines = [line for n in notes for line in textwrap.wrap(n, width, subsequent_indent="   ")]
    return fig.text(0.02, y, "\n".join(lines), ha="left", va="top", fontsize=7, color="0.3")


def _tick_labels(fig: Figure) -> tuple[set[int], list[Text]]:
    """All tick-label texts (ids), and those matplotlib draws: a tick inside the axis' view."""
    every: set[int] = set()
    drawn: list[Text] = []
    for ax in fig.axes:
        for axis, i in ((ax.xaxis, 0), (ax.yaxis, 1)):
            lo, hi = sorted(axis.get_view_interval())
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                for label in (tick.label1, tick.label2):
                    every.add(id(label))
                    v = label.get_position()[i]
                    span = (hi - lo) * 1e-9
                    if label.get_visible() and label.get_text().strip() and lo - span <= v <= hi + span:
                        drawn.append(label)
    return every, drawn


def text_artists(fig: Figure) -> list[Text]:
    """Every text the figure draws (titles, labels, tick labels inside the view, legends,
    annotations, contour labels, notes): what a reader sees, for the overlap checks."""
    from matplotlib.text import Text

    fig.canvas.draw()
    ticks, drawn = _tick_labels(fig)
    out = [
        t
        for t in fig.findobj(Text)
        if id(t) not in ticks and t.get_visible() and t.get_text().strip() and t.get_figure() is not None
    ]
    return out + drawn


def overlapping_texts(fig: Figure, *, pad: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose rendered boxes overlap by more than ``pad`` pixels, measured
    with the figure's own renderer (``Text.get_window_extent``)."""
    texts = text_artists(fig)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [(t, t.get_window_extent(renderer)) for t in texts]
    boxes = [(t, b) for t, b in boxes if b.width > 0 and b.height > 0]
    clashes = []
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1 :]:
            if a.x0 + pad < b.x1 and b.x0 + pad < a.x1 and a.y0 + pad < b.y1 and b.y0 + pad < a.y1:
                clashes.append((ta.get_text(), tb.get_text()))
    return clashes
