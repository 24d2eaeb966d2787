"""Figures (matplotlib): a cell's loss landscape, the fitted laws, loss curves, and the
stability benchmark. Every function returns the matplotlib Figure and, given ``path``, saves
it (PNG, SVG or PDF by the file's extension).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ._typing import OptimumMethod, PlotX, as_float
from .errors import InvalidArgumentError
from .optima import CELL_KEYS, CELL_TOLERANCE, DEFAULT_SEQ_LEN, optima, select_cell
from .optima import landscape as cell_landscape

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .stability import StabilityReport

#: Contours of Step Law's Figure 1: loss above the cell's minimum.
CONTOUR_LEVELS = (0.00125, 0.0025, 0.005, 0.01, 0.02)
FORMATS = (".png", ".svg", ".pdf")


def _headless() -> None:
    """Draw to files, not windows (works headless), unless ``$MPLBACKEND`` says otherwise;
    before pyplot is imported."""
    import matplotlib

    if not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")


def _save(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        if ext not in FORMATS:
            raise InvalidArgumentError(f"{path}: the figure's format comes from the extension: {', '.join(FORMATS)}")
        fig.savefig(path, dpi=130, bbox_inches="tight")
    return fig


def _laws(laws: Any) -> dict[str, Any]:
    if laws is None:
        return {}
    if isinstance(laws, Mapping):
        return dict(laws)
    if isinstance(laws, (list, tuple)):
        return {getattr(law, "name", f"law {i}"): law for i, law in enumerate(laws)}
    return {getattr(laws, "name", "law"): laws}


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
    bootstrap interval, and each law's prediction as a labelled marker (Step Law's Figure 1).
    The cell is the one nearest to ``cell`` (``{"N": 2.1e8, "D": 1e11}``: every numeric key
    within ``tolerance`` in log space; cells keyed by ``by`` and any key ``cell`` names, see
    :func:`steplaw_db.optima.find_cell`); laws are evaluated at the cell's own N and D."""
    _headless()
    import matplotlib.pyplot as plt

    rows, keys, chosen = select_cell(final, cell, by=by, tolerance=tolerance)
    grid = cell_landscape(rows, {k: chosen[k] for k in keys}, by=keys)
    ok = grid.filter(pl.col("rel_loss").is_finite())
    x, y, z = (
        np.log10(ok["lr"].to_numpy()),
        np.log10(ok["bs_tokens"].to_numpy().astype(float)),
        ok["rel_loss"].to_numpy(),
    )
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    shown = np.clip(z, 0, 0.05) * 100
    sc = ax.scatter(x, y, c=shown, cmap="viridis_r", s=60, edgecolors="k", linewidths=0.3, zorder=3)
    fig.colorbar(sc, ax=ax, label="loss above the minimum (%, clipped at 5%)")
    if len(set(x)) >= 3 and len(set(y)) >= 2:
        cs = ax.tricontour(x, y, z, levels=list(CONTOUR_LEVELS), colors="0.3", linewidths=0.8)
        ax.clabel(cs, fmt={lv: f"+{lv * 100:g}%" for lv in CONTOUR_LEVELS}, fontsize=7)
    best = ok.row(int(np.argmin(z)), named=True)
    ax.plot(math.log10(best["lr"]), math.log10(best["bs_tokens"]), "r*", ms=16, zorder=4, label="grid minimum")
    q = optima(rows, by=keys, method="quadratic", designs=()).row(0, named=True)
    if q["convex"] and not (q["lr_unbounded"] or q["bs_unbounded"]) and q["lr_quad"] is not None:
        xv, yv = math.log10(q["lr_quad"]), math.log10(q["bs_tokens_quad"])
        err = None
        if q["lr_quad_lo"] is not None:
            err = (
                [[xv - math.log10(q["lr_quad_lo"])], [math.log10(q["lr_quad_hi"]) - xv]],
                [[yv - math.log10(q["bs_quad_lo"])], [math.log10(q["bs_quad_hi"]) - yv]],
            )
        ax.errorbar(xv, yv, xerr=err[0] if err else None, yerr=err[1] if err else None, fmt="D", color="tab:orange",
                    ms=8, capsize=3, zorder=5, label="quadratic vertex (95% CI)")  # fmt: skip
    markers = iter("ovs^<>pPhX")
    for name, law in _laws(laws).items():
        try:
            p = law.predict(N=chosen.get("N"), D=chosen.get("D"), seq_len=seq_len, interval=None).row(0, named=True)
        except Exception as e:  # a law that needs another input (e.g. a loss value)
            p = {"lr": None, "bs_tokens": None}
            ax.text(0.01, 0.01, f"{name}: {e}", transform=ax.transAxes, fontsize=6)
        if p["lr"] is None or p["bs_tokens"] is None:
            continue
        ax.plot(math.log10(p["lr"]), math.log10(p["bs_tokens"]), next(markers, "o"), color="tab:red", mfc="none",
                ms=10, mew=1.5, zorder=6)  # fmt: skip
        ax.annotate(
            name,
            (math.log10(p["lr"]), math.log10(p["bs_tokens"])),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
            color="tab:red",
        )
    ax.set_xlabel("log10 peak learning rate")
    ax.set_ylabel("log10 batch size (tokens)")
    title = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in chosen.items() if k in keys
    )
    ax.set_title(f"loss landscape: {title}\nminimum {q['loss_min']:.4f}", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def law(
    final: pl.DataFrame,
    fitted: Any,
    *,
    method: OptimumMethod = "quadratic",
    by: str | Sequence[str] = CELL_KEYS,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Optimal lr against D for each N, and optimal batch against D: each cell's optimum
    (by ``method``; cells as :func:`steplaw_db.optima.optima` makes them, keyed by ``by``)
    as points, the law(s) as lines, with bootstrap bands where the law has draws."""
    _headless()
    import matplotlib.pyplot as plt

    cells = optima(final, by=by, method=method)
    laws = _laws(fitted)
    fig, (ax_lr, ax_bs) = plt.subplots(1, 2, figsize=(11, 4.4))
    ns = sorted(cells["N"].unique().to_list())
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(ns), 1)))
    d_grid = np.geomspace(as_float(cells["D"].min()) / 1.5, as_float(cells["D"].max()) * 1.5, 60)
    for n, colour in zip(ns, colours, strict=True):
        c = cells.filter(pl.col("N") == n)
        ax_lr.scatter(c["D"], c["lr_opt"], color=colour, label=f"N={n:.3g}", zorder=3)
        for i, lw in enumerate(laws.values()):
            p = lw.predict(N=np.full(d_grid.size, float(n)), D=d_grid)
            ax_lr.plot(d_grid, p["lr"], color=colour, ls=("-", "--", ":", "-.")[i % 4], lw=1)
            if "lr_lo" in p.columns:
                ax_lr.fill_between(d_grid, p["lr_lo"], p["lr_hi"], color=colour, alpha=0.15, lw=0)
    ax_bs.scatter(cells["D"], cells["bs_tokens_opt"], color="k", zorder=3, label="cell optima")
    for i, (name, lw) in enumerate(laws.items()):
        p = lw.predict(N=np.full(d_grid.size, float(np.median(ns))), D=d_grid)
        ax_bs.plot(d_grid, p["bs_tokens"], color="tab:blue", ls=("-", "--", ":", "-.")[i % 4], lw=1.2, label=name)
        if "bs_tokens_lo" in p.columns:
            ax_bs.fill_between(d_grid, p["bs_tokens_lo"], p["bs_tokens_hi"], color="tab:blue", alpha=0.15, lw=0)
    for ax, what in ((ax_lr, "optimal peak learning rate"), (ax_bs, "optimal batch (tokens)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("D (tokens)")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    ax_lr.set_title(f"learning rate ({method} optima; lines: " + ", ".join(laws) + ")", fontsize=9)
    ax_bs.set_title("batch size", fontsize=9)
    return _save(fig, path)


def curves(
    points: pl.DataFrame,
    *,
    final: pl.DataFrame | None = None,
    x: PlotX = "step",
    names: Mapping[int, str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Raw (thin) and smoothed (a Gaussian of 1% of the points, for the eye) loss of the runs
    in ``points`` (``Store.points(run_ids)``) against ``x`` (``step`` or ``tokens``); with
    ``final`` (``Store.final_losses()``), each run's final loss as a dot."""
    from scipy.ndimage import gaussian_filter1d

    if x not in ("step", "tokens"):
        raise InvalidArgumentError(f"x must be 'step' or 'tokens', got {x!r}")
    if points.is_empty():
        raise InvalidArgumentError("no points to plot")
    _headless()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    colours = plt.get_cmap("tab10")
    for i, ((run_id,), g) in enumerate(points.sort("run_id", "step").group_by("run_id", maintain_order=True)):
        xs, ys = g[x].to_numpy(), g["value"].to_numpy()
        label = (names or {}).get(run_id, str(run_id))
        ax.plot(xs, ys, color=colours(i % 10), lw=0.5, alpha=0.35)
        finite = np.isfinite(ys)
        if finite.sum() > 3:
            sm = gaussian_filter1d(ys[finite], sigma=max(1.0, 0.01 * finite.sum()))
            ax.plot(xs[finite], sm, color=colours(i % 10), lw=1.5, label=label[-50:])
        if final is not None:
            f = final.filter(pl.col("run_id") == run_id)
            if len(f) and f["loss"][0] is not None:
                fx = xs[-1] if x == "step" else g["tokens"][-1]
                ax.plot(fx, f["loss"][0], "o", color=colours(i % 10), ms=6, mec="k")
    ax.set_xlabel(x)
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    ax.set_title("loss curves (thin: raw; thick: smoothed; dot: final loss)", fontsize=9)
    return _save(fig, path)


def stability(
    report: StabilityReport,
    *,
    path: str | os.PathLike[str] | None = None,
    names: Sequence[str] = ("lr_coefN", "lr_coefD", "bs_coefD"),
) -> Figure:
    """The stability benchmark: per coefficient, each group's bootstrap distribution (violin,
    with the 95% interval and the estimate; left), and the estimate under every analysis
    choice of the sensitivity table with +-1 SD (right)."""
    _headless()
    import matplotlib.pyplot as plt

    names = [n for n in names if n in set(report.coefficients["name"])]
    if not names:
        raise InvalidArgumentError("the report has none of the coefficients to plot")
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 2.6 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        c = report.coefficients.filter(pl.col("name") == name)
        ax = row[0]
        ys = np.arange(len(c))
        samples = [
            report.draws.filter(pl.col("group") == g)[name].drop_nulls().drop_nans().to_numpy()
            if name in report.draws.columns
            else np.empty(0)
            for g in c["group"]
        ]
        if all(len(v) > 1 for v in samples):
            try:  # matplotlib >= 3.10 names it so; `vert` is deprecated there
                ax.violinplot(samples, positions=ys, orientation="horizontal", showextrema=False)
            except TypeError:
                ax.violinplot(samples, positions=ys, vert=False, showextrema=False)
        ax.errorbar(
            c["estimate"], ys, xerr=[c["estimate"] - c["lo"], c["hi"] - c["estimate"]], fmt="o", color="k", capsize=3
        )
        ax.set_yticks(ys, c["group"].to_list())
        ax.set_title(f"{name} by group (bootstrap distribution, 95% interval)", fontsize=9)
        s = report.sensitivity.filter(pl.col("name") == name)
        labels = [
            f"{r['group']} {r['smoothing']} {r['method']}"
            + (f" {r['threshold'] * 100:g}%" if r["threshold"] is not None else "")
            for r in s.iter_rows(named=True)
        ]
        ax = row[1]
        ys = np.arange(len(s))
        ax.errorbar(s["estimate"], ys, xerr=s["sd"].fill_null(0), fmt="s", capsize=2, color="tab:purple")
        ax.set_yticks(ys, labels, fontsize=6)
        ax.set_title(f"{name} across analysis choices (+-1 SD)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
