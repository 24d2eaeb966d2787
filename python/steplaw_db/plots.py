"""Figures (matplotlib): a cell's loss landscape, the fitted laws, the loss law, loss curves,
and the stability benchmark. Every function returns the matplotlib Figure and, given ``path``,
saves it (PNG, SVG or PDF by the file's extension). One style (``_style``) for all: a
colour-blind-safe palette, log axes labelled with values and units, legends and notes outside
the data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import polars as pl

from . import _style as st
from ._typing import OptimumMethod, PlotX, as_float
from .errors import InvalidArgumentError
from .optima import CELL_KEYS, CELL_TOLERANCE, DEFAULT_SEQ_LEN, near_optimal, optima, select_cell
from .optima import landscape as cell_landscape

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .laws import LossLaw
    from .stability import StabilityReport

#: Contours of Step Law's Figure 1: loss above the cell's minimum.
CONTOUR_LEVELS = (0.00125, 0.0025, 0.005, 0.01, 0.02)
FORMATS = (".png", ".svg", ".pdf")
#: A law's prediction this many decades beyond the grid widens the landscape's view; further
#: away it is drawn on the view's edge (an arrow) with its value in the legend.
LANDSCAPE_MARGIN_DECADES = 0.6


def _save(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        if ext not in FORMATS:
            raise InvalidArgumentError(f"{path}: the figure's format comes from the extension: {', '.join(FORMATS)}")
        fig.savefig(path, bbox_inches="tight")
    return fig


def _laws(laws: Any) -> dict[str, Any]:
    if laws is None:
        return {}
    if isinstance(laws, Mapping):
        return dict(laws)
    if isinstance(laws, (list, tuple)):
        return {getattr(law, "name", f"law {i}"): law for i, law in enumerate(laws)}
    return {getattr(laws, "name", "law"): laws}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _cell_title(chosen: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = chosen.get(k)
        if k == "N" and isinstance(v, (int, float)):
            parts.append(f"N = {st.si(float(v))} parameters")
        elif k == "D" and isinstance(v, (int, float)):
            parts.append(f"D = {st.si(float(v))} tokens")
        elif isinstance(v, float):
            parts.append(f"{k} = {v:.4g}")
        else:
            parts.append(f"{k} = {v}")
    return ", ".join(parts)


def _diverged_mask(df: pl.DataFrame, loss: str = "loss") -> np.ndarray:
    """Runs that diverged: status ``diverged``, or a loss that is missing or not finite."""
    bad = ~np.isfinite(df[loss].cast(pl.Float64).fill_null(float("nan")).to_numpy())
    if "status" in df.columns:
        bad |= (df["status"] == "diverged").fill_null(False).to_numpy()
    if "diverged" in df.columns and df.schema["diverged"] == pl.Boolean:
        bad |= df["diverged"].fill_null(False).to_numpy()
    return bad


# ------------------------------------------------------------------------------------ landscape


def _diverged_runs(rows: pl.DataFrame, grid: pl.DataFrame) -> pl.DataFrame:
    """The cell's diverged runs that the landscape left out (no finite loss): lr, bs_tokens."""
    from .optima import with_bs_tokens

    rows = with_bs_tokens(rows)
    if "run_id" in rows.columns and "run_id" in grid.columns:
        rows = rows.filter(~pl.col("run_id").is_in(grid["run_id"].implode()))
    if rows.is_empty() or "loss" not in rows.columns:
        return pl.DataFrame(schema={"lr": pl.Float64, "bs_tokens": pl.Float64})
    out = rows.filter(pl.Series(_diverged_mask(rows)))
    return out.select(pl.col("lr").cast(pl.Float64), pl.col("bs_tokens").cast(pl.Float64))


def _contours(ax: Axes, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> list[str]:
    """Contours of the loss above the minimum, triangulated in log space (the grid's own
    geometry) and drawn at the real values; a note when the grid allows none."""
    from matplotlib.tri import Triangulation

    lx, ly = np.log10(x), np.log10(y)
    if len(set(lx)) < 3 or len(set(ly)) < 2:
        return ["no contours: the grid needs 3 learning rates and 2 batch sizes"]
    try:
        tri = Triangulation(x, y, triangles=Triangulation(lx, ly).triangles)
        cs = ax.tricontour(tri, z, levels=list(CONTOUR_LEVELS), colors="0.35", linewidths=0.8, zorder=2)
        ax.clabel(cs, fmt={lv: f"+{lv * 100:g}%" for lv in CONTOUR_LEVELS}, fontsize=6.5, inline_spacing=2)
    except (RuntimeError, ValueError) as e:  # collinear grid points: no triangulation
        return [f"no contours: {_one_line(e)}"]
    return []


def _vertex(ax: Axes, q: Mapping[str, Any]) -> list[str]:
    """The quadratic vertex with its 95% interval, or a note why there is none."""
    if not (q["convex"] and not (q["lr_unbounded"] or q["bs_unbounded"]) and q["lr_quad"] is not None):
        return [f"no quadratic vertex: {q['flags'] or 'the quadratic is not convex or leaves the grid'}"]
    xv, yv = float(q["lr_quad"]), float(q["bs_tokens_quad"])
    xerr = yerr = None
    if q["lr_quad_lo"] is not None and q["bs_tokens_quad_lo"] is not None:
        # a bootstrap percentile interval need not hold the full-sample vertex: a bar cannot
        # leave its point, so the end on the vertex's near side is drawn at the vertex
        xerr = [[max(xv - q["lr_quad_lo"], 0.0)], [max(q["lr_quad_hi"] - xv, 0.0)]]
        yerr = [[max(yv - q["bs_tokens_quad_lo"], 0.0)], [max(q["bs_tokens_quad_hi"] - yv, 0.0)]]
    ax.errorbar(xv, yv, xerr=xerr, yerr=yerr, fmt="D", color="#E69F00", mec="k", mew=0.5, ms=8, capsize=3,
                zorder=6, label=f"quadratic vertex (95% CI): lr {st.sci(xv)}, {st.si(yv)} tokens")  # fmt: skip
    return []


def _predictions(
    laws: Any, chosen: Mapping[str, Any], seq_len: int, best: tuple[float, float], notes: list[str]
) -> list[tuple[str, float, float]]:
    """(label, lr, bs_tokens) of each law at the cell; a law of one target is placed at the
    cell's best value of the other (as ``evaluate`` scores it); a law that cannot predict
    here gets a note."""
    out = []
    for name, law in _laws(laws).items():
        try:
            p = law.predict(N=chosen.get("N"), D=chosen.get("D"), seq_len=seq_len, interval=None).row(0, named=True)
        except Exception as e:  # a law that needs another input (e.g. a loss value)
            notes.append(f"{name}: not drawn: {_one_line(e)}")
            continue
        lr_p, bs_p = p.get("lr"), p.get("bs_tokens")
        lr_ok = lr_p is not None and bool(np.isfinite(lr_p))
        bs_ok = bs_p is not None and bool(np.isfinite(bs_p))
        if not (lr_ok or bs_ok):
            notes.append(f"{name}: not drawn: it gives neither lr nor batch size here")
            continue
        fixed = "" if lr_ok and bs_ok else " (batch: the cell's best)" if lr_ok else " (lr: the cell's best)"
        out.append((name + fixed, float(lr_p) if lr_ok else best[0], float(bs_p) if bs_ok else best[1]))
    return out


def _view(ax: Axes, xs: np.ndarray, ys: np.ndarray, predictions: Sequence[tuple[str, float, float]]) -> None:
    """The grid's extent, widened to take in predictions within LANDSCAPE_MARGIN_DECADES."""
    lo_x, hi_x, lo_y, hi_y = xs.min(), xs.max(), ys.min(), ys.max()
    margin = 10**LANDSCAPE_MARGIN_DECADES
    for _, lr_p, bs_p in predictions:
        if lo_x / margin <= lr_p <= hi_x * margin:
            lo_x, hi_x = min(lo_x, lr_p), max(hi_x, lr_p)
        if lo_y / margin <= bs_p <= hi_y * margin:
            lo_y, hi_y = min(lo_y, bs_p), max(hi_y, bs_p)
    pad = 10**0.08
    ax.set_xlim(lo_x / pad, hi_x * pad)
    ax.set_ylim(lo_y / pad, hi_y * pad)


def _draw_predictions(ax: Axes, predictions: Sequence[tuple[str, float, float]]) -> None:
    """Each law's prediction, a marker shape and colour each, named with its values in the
    legend; one beyond the view sits on its edge and says so."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    colours = [c for c in st.PALETTE if c not in ("#D55E00", "#E69F00")]  # those mark the optima
    for i, (name, lr_p, bs_p) in enumerate(predictions):
        off = not (x0 <= lr_p <= x1 and y0 <= bs_p <= y1)
        px, py = min(max(lr_p, x0), x1), min(max(bs_p, y0), y1)
        label = f"{name}: lr {st.sci(lr_p)}, {st.si(bs_p)} tokens" + (" (off the plot: on its edge)" if off else "")
        ax.plot(px, py, st.MARKERS[i % len(st.MARKERS)], color=colours[i % len(colours)], mfc="none", ms=11, mew=2,
                zorder=7, label=label, clip_on=False)  # fmt: skip


def landscape(
    final: pl.DataFrame,
    cell: Mapping[str, Any],
    *,
    by: str | Sequence[str] | None = None,
    tolerance: float = CELL_TOLERANCE,
    laws: Any = None,
    path: str | os.PathLike[str] | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
) -> Figure:
    """Loss relative to the cell's minimum over its lr x batch grid (log axes), with contours
    at +0.125%, +0.25%, +0.5%, +1%, +2%, the grid minimum, the quadratic vertex with its 95%
    bootstrap interval, diverged runs (crosses) and each law's prediction as a marker named in
    the legend with its values (Step Law's Figure 1). The cell is the one nearest to ``cell``
    (``{"N": 2.1e8, "D": 1e11}``: every numeric key within ``tolerance`` in log space; cells
    keyed by ``by`` and any key ``cell`` names, see :func:`steplaw_db.optima.find_cell`); laws
    are evaluated at the cell's own N and D. A law that cannot predict there is named in a
    note under the figure."""
    with st.style():
        import matplotlib.pyplot as plt

        rows, keys, chosen = select_cell(final, cell, by=by, tolerance=tolerance)
        grid = cell_landscape(rows, {k: chosen[k] for k in keys}, by=keys)
        # diverged runs: marked where they were (their loss, if any, is no landscape value)
        bad = _diverged_mask(grid.with_columns(loss=pl.col("rel_loss")), "loss")
        ok = grid.filter(pl.Series(~bad))
        diverged = pl.concat(
            [grid.filter(pl.Series(bad)).select(pl.col("lr", "bs_tokens").cast(pl.Float64)), _diverged_runs(rows, grid)]
        )
        if ok.is_empty():
            raise InvalidArgumentError(f"cell {_cell_title(chosen, keys)}: every run diverged, no landscape to draw")
        x = ok["lr"].to_numpy().astype(float)
        y = ok["bs_tokens"].to_numpy().astype(float)
        z = ok["rel_loss"].to_numpy().astype(float)
        notes: list[str] = []
        fig, ax = plt.subplots(figsize=(6.6, 5.4))
        shown = np.clip(z, 0, 0.05) * 100
        sc = ax.scatter(x, y, c=shown, cmap=st.SEQUENTIAL + "_r", vmin=0, vmax=5, s=46, edgecolors="k",
                        linewidths=0.3, zorder=3)  # fmt: skip
        fig.colorbar(sc, ax=ax, label="loss above the cell's minimum (%, clipped at 5)", pad=0.02)
        notes += _contours(ax, x, y, z)
        if len(diverged):
            ax.plot(diverged["lr"], diverged["bs_tokens"], **st.DIVERGED, zorder=4,
                    label=f"diverged ({len(diverged)} run{'s' * (len(diverged) != 1)})")  # fmt: skip
        i_best = int(np.argmin(z))
        ax.plot(x[i_best], y[i_best], "*", color="#D55E00", mec="k", mew=0.5, ms=15, zorder=5,
                label=f"grid minimum: lr {st.sci(x[i_best])}, {st.si(y[i_best])} tokens")  # fmt: skip
        q = optima(rows, by=keys, method="quadratic", designs=()).row(0, named=True)
        notes += _vertex(ax, q)
        predictions = _predictions(laws, chosen, seq_len, (float(x[i_best]), float(y[i_best])), notes)
        _view(ax, np.concatenate([x, diverged["lr"].to_numpy()]), np.concatenate([y, diverged["bs_tokens"].to_numpy()]),
              predictions)  # fmt: skip
        _draw_predictions(ax, predictions)
        st.log_axis(ax, "x", "lr")
        st.log_axis(ax, "y", "tokens")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("batch size (tokens)")
        ax.set_title(f"{_cell_title(chosen, keys)}\nminimum loss {st.loss(q['loss_min'])}, {len(grid)} runs")
        ax.grid(False)
        st.legend_outside(ax, where="below")
        st.notes_below(fig, notes)
        return _save(fig, path)


# ------------------------------------------------------------------------------------ the law


def _law_samples(
    final: pl.DataFrame, law: Any, by: str | Sequence[str], method: str | None
) -> tuple[pl.DataFrame, str]:
    """The samples ``law`` was fitted to, as its fit made them: the near-optimal runs
    (``steplaw``) or each cell's quadratic vertex (``quadratic``), with ``fitted`` false for the
    cells the fit left out (no usable vertex; edge-bound under ``edges='drop'``)."""
    info = getattr(law, "info", None) or {}
    procedure = method or info.get("procedure") or "quadratic"
    if procedure in ("steplaw", "grid"):
        from .optima import DEFAULT_THRESHOLD

        threshold = info.get("threshold") or DEFAULT_THRESHOLD
        rows = near_optimal(final, by, threshold).with_columns(fitted=pl.lit(True), fitted_bs=pl.lit(True))
        return rows.select("N", "D", "lr", "bs_tokens", "fitted", "fitted_bs"), (
            f"near-optimal runs (within {threshold * 100:g}% of their cell's minimum)"
        )
    cells = optima(final, by, method="quadratic")
    usable = pl.col("optimum") != "grid-fallback"
    lr_ok, bs_ok = usable, usable
    if info.get("edge_treatment") == "drop":
        lr_ok = usable & pl.col("lr_edge").is_null()
        bs_ok = usable & pl.col("bs_edge").is_null()
    out = cells.with_columns(lr=pl.col("lr_opt"), bs_tokens=pl.col("bs_tokens_opt"), fitted=lr_ok, fitted_bs=bs_ok)
    return out.select("N", "D", "lr", "bs_tokens", "fitted", "fitted_bs"), "each cell's quadratic vertex"


def _law_lines(
    ax_lr: Axes, ax_bs: Axes, lw: Any, ns: Sequence[float], n_mid: float, d_grid: np.ndarray, ls: Any
) -> None:
    """One law: its lr against D at each N (the N's colour), its batch against D at ``n_mid``,
    with bootstrap bands where it has draws."""
    for j, n in enumerate(ns):
        p = lw.predict(N=np.full(d_grid.size, float(n)), D=d_grid)
        if "lr" in p.columns:
            ax_lr.plot(d_grid, p["lr"], color=st.colour(j), ls=ls, lw=1.3, zorder=2)
            if "lr_lo" in p.columns:
                ax_lr.fill_between(d_grid, p["lr_lo"], p["lr_hi"], color=st.colour(j), alpha=0.12, lw=0)
    p = lw.predict(N=np.full(d_grid.size, n_mid), D=d_grid)
    if "bs_tokens" in p.columns:
        ax_bs.plot(d_grid, p["bs_tokens"], color="0.2", ls=ls, lw=1.3, zorder=2)
        if "bs_tokens_lo" in p.columns:
            ax_bs.fill_between(d_grid, p["bs_tokens_lo"], p["bs_tokens_hi"], color="0.2", alpha=0.12, lw=0)


def law(
    final: pl.DataFrame,
    fitted: Any,
    *,
    method: OptimumMethod | str | None = None,
    by: str | Sequence[str] = CELL_KEYS,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Optimal lr against D for each N (left), and optimal batch against D (right): the samples
    the first law was fitted to (each cell's quadratic vertex, or the near-optimal runs of Step
    Law's procedure: ``method`` or the law's ``info["procedure"]``; hollow: cells the fit left
    out), the laws as lines (one line style each; published laws beside the fit), with
    bootstrap bands where a law has draws. Cells as :func:`steplaw_db.optima.optima` makes
    them, keyed by ``by``."""
    with st.style():
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        laws = _laws(fitted)
        first = next(iter(laws.values()), None)
        samples, what = _law_samples(final, first, by, method)
        notes: list[str] = []
        fig, (ax_lr, ax_bs) = plt.subplots(1, 2, figsize=(11, 4.6))
        ns = sorted(samples["N"].unique().to_list())
        d_grid = np.geomspace(as_float(samples["D"].min()) / 1.3, as_float(samples["D"].max()) * 1.3, 60)
        handles: list[Any] = []
        for j, n in enumerate(ns):
            colour = st.colour(j)
            s = samples.filter(pl.col("N") == n)
            for ok, face in ((True, colour), (False, "none")):
                part = s.filter(pl.col("fitted") == ok)
                if len(part):
                    ax_lr.plot(part["D"], part["lr"], "o", color=colour, mfc=face, ms=5, alpha=0.8, zorder=3)
            handles.append(Line2D([], [], marker="o", color=colour, ls="none", label=f"N = {st.si(float(n))}"))
        for ok, face in ((True, "0.2"), (False, "none")):
            part = samples.filter(pl.col("fitted_bs") == ok)
            if len(part):
                ax_bs.plot(part["D"], part["bs_tokens"], "o", color="0.2", mfc=face, ms=5, alpha=0.8, zorder=3)
        if not samples["fitted"].all() or not samples["fitted_bs"].all():
            handles.append(Line2D([], [], marker="o", color="0.2", mfc="none", ls="none", label="left out of the fit"))
        handles.append(Line2D([], [], ls="none", label=f"points: {what}"))
        n_mid = float(np.exp(np.median(np.log(np.asarray(ns, dtype=float)))))
        for i, (name, lw) in enumerate(laws.items()):
            ls = st.LINESTYLES[i % len(st.LINESTYLES)]
            try:
                _law_lines(ax_lr, ax_bs, lw, ns, n_mid, d_grid, ls)
            except Exception as e:  # a law that needs another input (a loss value)
                notes.append(f"{name}: not drawn: {_one_line(e)}")
                continue
            handles.append(Line2D([], [], color="0.2", ls=ls, lw=1.3, label=f"law: {name}"))
        for ax, what_y, kind in (
            (ax_lr, "optimal peak learning rate", "lr"),
            (ax_bs, "optimal batch size (tokens)", "tokens"),
        ):
            ax.set_xlim(d_grid[0], d_grid[-1])
            st.log_axis(ax, "x", "tokens")
            st.log_axis(ax, "y", kind)
            ax.set_xlabel("D (training tokens)")
            ax.set_ylabel(what_y)
        ax_lr.set_title("learning rate (colour: model size N)")
        ax_bs.set_title(f"batch size (laws drawn at N = {st.si(n_mid)})")
        fig.tight_layout()
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
        st.notes_below(fig, notes)
        return _save(fig, path)


def loss_law(
    final: pl.DataFrame,
    fitted: LossLaw,
    *,
    by: str | Sequence[str] = CELL_KEYS,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """The loss law ``L(N, D)`` against D, one colour per N: each cell's best loss (the points
    the Chinchilla fit uses by default) and the law with its bootstrap band."""
    with st.style():
        import matplotlib.pyplot as plt

        cells = optima(final, by, method="grid")
        fig, ax = plt.subplots(figsize=(7.2, 4.6))
        ns = sorted(cells["N"].unique().to_list())
        d_grid = np.geomspace(as_float(cells["D"].min()) / 1.3, as_float(cells["D"].max()) * 1.3, 60)
        for j, n in enumerate(ns):
            c = cells.filter(pl.col("N") == n)
            colour = st.colour(j)
            ax.plot(c["D"], c["loss_min"], "o", color=colour, ms=5, zorder=3, label=f"N = {st.si(float(n))}")
            p = fitted.predict(np.full(d_grid.size, float(n)), d_grid)
            ax.plot(d_grid, p["loss"], color=colour, lw=1.2)
            if "loss_lo" in p.columns:
                ax.fill_between(d_grid, p["loss_lo"], p["loss_hi"], color=colour, alpha=0.15, lw=0)
        prm = fitted.params
        ax.set_xlim(d_grid[0], d_grid[-1])
        st.log_axis(ax, "x", "tokens")
        st.loss_axis(ax, "y")
        ax.set_xlabel("D (training tokens)")
        ax.set_ylabel("best loss of the cell")
        ax.set_title(
            f"L = {prm['E']:.3g} + {prm['A']:.3g} / N^{prm['alpha']:.3f} + {prm['B']:.3g} / D^{prm['beta']:.3f}"
        )
        st.legend_outside(ax)
        return _save(fig, path)


# ------------------------------------------------------------------------------------ curves


def curves(
    points: pl.DataFrame,
    *,
    final: pl.DataFrame | None = None,
    x: PlotX = "step",
    names: Mapping[int, str] | None = None,
    path: str | os.PathLike[str] | None = None,
    diverged: Sequence[int] = (),
) -> Figure:
    """Raw (thin) and smoothed (a Gaussian of 1% of the points, for the eye) loss of the runs
    in ``points`` (``Store.points(run_ids)``) against ``x`` (``step`` or ``tokens``); with
    ``final`` (``Store.final_losses()``), each run's final loss as a dot. Runs named in
    ``diverged``, with status ``diverged`` in ``final`` or whose loss ends non-finite are
    marked with a cross at their last finite point and ``(diverged)`` in the legend, which
    names every run in full below the axes."""
    from scipy.ndimage import gaussian_filter1d

    if x not in ("step", "tokens"):
        raise InvalidArgumentError(f"x must be 'step' or 'tokens', got {x!r}")
    if points.is_empty():
        raise InvalidArgumentError("no points to plot")
    with st.style():
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 4.4))
        broke = set(diverged)
        if final is not None and "status" in final.columns:
            broke |= set(final.filter(pl.col("status") == "diverged")["run_id"].to_list())
        y_all: list[np.ndarray] = []
        for i, ((run_id,), g) in enumerate(points.sort("run_id", "step").group_by("run_id", maintain_order=True)):
            colour = st.colour(i)
            xs = g[x].cast(pl.Float64).to_numpy()
            ys = g["value"].cast(pl.Float64).to_numpy()
            finite = np.isfinite(ys) & np.isfinite(xs)
            label = str((names or {}).get(run_id, run_id))
            is_diverged = run_id in broke or (len(ys) > 0 and not np.isfinite(ys[-1]))
            ax.plot(xs[finite], ys[finite], color=colour, lw=0.5, alpha=0.35)
            if finite.sum() > 3:
                sm = gaussian_filter1d(ys[finite], sigma=max(1.0, 0.01 * finite.sum()))
                ax.plot(xs[finite], sm, color=colour, lw=1.5, label=label + (" (diverged)" if is_diverged else ""))
            y_all.append(ys[finite])
            if is_diverged and finite.any():
                last = np.flatnonzero(finite)[-1]
                ax.plot(xs[last], ys[last], **{**st.DIVERGED, "color": colour}, zorder=5)
            elif final is not None and finite.any():
                f = final.filter(pl.col("run_id") == run_id)
                if len(f) and f["loss"][0] is not None and math.isfinite(f["loss"][0]):
                    fx = xs[finite][-1]
                    ax.plot(fx, f["loss"][0], "o", color=colour, ms=5, mec="k", mew=0.5, zorder=5)
        if y_all and any(v.size for v in y_all):
            # the view from a tenth of the way through each run on: the first steps' loss (near the
            # vocabulary's entropy) would squash what differs between the runs
            lo = min(float(v.min()) for v in y_all if v.size)
            hi = max(float(np.median(v[v.size // 10 : max(v.size // 10 + 1, v.size // 5)])) for v in y_all if v.size)
            hi = max(hi, max(float(v[-1]) for v in y_all if v.size))  # a diverged run's end stays in view
            ax.set_ylim(lo / 1.01, hi * 1.02)
        ax.set_yscale("log")
        st.loss_axis(ax, "y")
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: st.si(v)))
        ax.set_xlabel("training step" if x == "step" else "training tokens")
        ax.set_ylabel("training loss (log scale)")
        ax.set_title("loss curves (thin: raw; thick: smoothed; dot: final loss; x: diverged)")
        st.legend_outside(ax, where="below", fontsize=7)
        return _save(fig, path)


# ------------------------------------------------------------------------------------ stability


def stability(
    report: StabilityReport,
    *,
    path: str | os.PathLike[str] | None = None,
    names: Sequence[str] = ("lr_coefN", "lr_coefD", "bs_coefD"),
) -> Figure:
    """The stability benchmark: per coefficient, each group's bootstrap distribution (violin,
    with the 95% interval and the estimate; left), and the estimate under every analysis
    choice of the sensitivity table with +-1 SD, over a grey band of the reference fit's
    estimate +- ``STABLE_SDS`` SDs (the verdict's threshold; right)."""
    from .stability import STABLE_SDS

    with st.style():
        import matplotlib.pyplot as plt

        names = [n for n in names if n in set(report.coefficients["name"])]
        if not names:
            raise InvalidArgumentError("the report has none of the coefficients to plot")
        rows_right = max(len(report.sensitivity.filter(pl.col("name") == n)) for n in names)
        height = max(2.4, 0.2 * rows_right + 1.0)
        fig, axes = plt.subplots(len(names), 2, figsize=(11, height * len(names)), squeeze=False)
        for row, name in zip(axes, names, strict=True):
            c = report.coefficients.filter(pl.col("name") == name)
            ax: Axes = row[0]
            ys = np.arange(len(c))
            samples = [
                report.draws.filter(pl.col("group") == g)[name].drop_nulls().drop_nans().to_numpy()
                if name in report.draws.columns
                else np.empty(0)
                for g in c["group"]
            ]
            if all(len(v) > 1 for v in samples):
                try:  # matplotlib >= 3.10 names it so; `vert` is deprecated there
                    parts = ax.violinplot(samples, positions=ys, orientation="horizontal", showextrema=False)
                except TypeError:
                    parts = ax.violinplot(samples, positions=ys, vert=False, showextrema=False)
                for body in cast("list[Any]", parts["bodies"]):
                    body.set_facecolor(st.PALETTE[5])
                    body.set_alpha(0.5)
            est, lo, hi = (c[k].cast(pl.Float64).to_numpy() for k in ("estimate", "lo", "hi"))
            ax.errorbar(est, ys, xerr=[est - lo, hi - est], fmt="o", color="k", capsize=3)
            ax.set_yticks(ys, c["group"].to_list())
            ax.set_ylim(-0.6, len(c) - 0.4)
            ax.set_ylabel("group")
            ax.set_xlabel(f"{name} (exponent)" if "coef" in name else name)
            ax.set_title(f"{name}: bootstrap distribution and 95% interval by group")
            s = report.sensitivity.filter(pl.col("name") == name)
            labels = [
                f"{r['group']} · {r['smoothing']} · {r['method']}"
                + (f" {r['threshold'] * 100:g}%" if r["threshold"] is not None else "")
                for r in s.iter_rows(named=True)
            ]
            ax = row[1]
            ys = np.arange(len(s))
            # each group's reference estimate +- STABLE_SDS of its SDs: a choice outside the band moves it
            groups = s["group"].to_list()
            for g in c.iter_rows(named=True):
                rows_g = [i for i, x in enumerate(groups) if x == g["group"]]
                if rows_g and g["estimate"] is not None and g["sd"]:
                    half = STABLE_SDS * g["sd"]
                    ax.fill_betweenx([min(rows_g) - 0.4, max(rows_g) + 0.4], g["estimate"] - half,
                                     g["estimate"] + half, color="0.85", lw=0, zorder=0)  # fmt: skip
            ax.errorbar(s["estimate"], ys, xerr=s["sd"].fill_null(0), fmt="s", capsize=2, color=st.PALETTE[4])
            ax.set_yticks(ys, labels, fontsize=7)
            ax.set_ylim(-0.6, max(len(s), 1) - 0.4)
            ax.set_ylabel("group · smoothing · optimum")
            ax.set_xlabel(f"{name} (exponent)" if "coef" in name else name)
            ax.set_title(f"{name} across analysis choices (±1 SD; grey: reference ± {STABLE_SDS:g} SD)")
        fig.tight_layout()
        return _save(fig, path)
