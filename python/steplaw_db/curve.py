"""Schedule-aware loss-curve laws: fit a law on one or a few full loss curves with their
per-step learning rate, then predict the whole curve of any other schedule.

Two forms (docs/curve-laws.md has the formulas, conventions and the check on real curves):

- ``"mpl"``: the Multi-Power Law of Luo et al. 2025 (arXiv 2503.12811), parameters
  ``L0, A, alpha, B, C, beta, gamma``;
- ``"annealing"``: the LR-annealing law of Tissue et al. 2024, parameters ``L0, A, alpha, C``
  with the decay factor ``lam`` (default 0.999) fixed.

Both are fitted by minimising sum_i Huber_delta(ln L_i - ln L_hat_i), delta = 1e-3, over every
point of every curve (the MPL authors' objective) by L-BFGS; the sums over steps run in the
Rust core (``steplaw_db._native``).

The laws need the learning rate at **every** step, while logs usually hold a point every k
steps. :func:`fit_curve_law` and :meth:`CurveLaw.evaluate` rebuild it:

- from a :class:`Schedule` when one is given for the curve (exact, and the only way when the
  log has no ``lr`` column);
- otherwise from the logged ``lr`` column, linearly interpolated between logged points;
  before the first logged point the lr is taken to rise linearly from 0 at step 0 (a linear
  warm-up ending at the first logged point). A step change between two logged points
  becomes a ramp over that interval: pass a Schedule when the exact shape matters.

Curves of a known law (the Multi-Power Law with its authors' parameters for their 25M model)
under a cosine and a constant schedule of 24,000 steps; the annealing law fitted on them
predicts the final loss of a 72,000-step cosine run (``form="mpl"`` fits the truth's own form,
in seconds rather than milliseconds):

>>> import steplaw_db as sl
>>> truth = sl.CurveLaw("mpl", {"L0": 3.04, "A": 0.525, "alpha": 0.508, "B": 364.0, "C": 2.07, "beta": 0.583,
...                             "gamma": 0.641})
>>> cosine = sl.Schedule(peak_lr=3e-4, total_steps=24000, warmup_steps=2160, decay="cosine", floor=3e-5)
>>> constant = sl.Schedule(peak_lr=3e-4, total_steps=24000, warmup_steps=2160, decay="constant")
>>> curves = [truth.predict(s, steps=range(200, 24000, 200)) for s in (cosine, constant)]  # step, lr, loss
>>> law = sl.fit_curve_law(curves, form="annealing")
>>> longer = sl.Schedule(peak_lr=3e-4, total_steps=72000, warmup_steps=2160, decay="cosine", floor=3e-5)
>>> [round(one.predict(longer, steps=[71999])["loss"].item(), 3) for one in (law, truth)]
[3.194, 3.201]
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import polars as pl

from . import _native
from ._typing import CurveForm, Decay, WsdShape
from .errors import InsufficientDataError, InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FORMS",
    "CurveData",
    "CurveLaw",
    "Points",
    "Schedule",
    "ScheduleLike",
    "Schedules",
    "fit_curve_law",
    "load_curves",
    "plot_curve_law",
]

#: Parameter names of each form, in the order the core uses.
FORMS: dict[CurveForm, tuple[str, ...]] = {
    "mpl": ("L0", "A", "alpha", "B", "C", "beta", "gamma"),
    "annealing": ("L0", "A", "alpha", "C"),
}
DECAYS = ("cosine", "linear", "constant", "wsd")
WSD_SHAPES = ("linear", "exponential", "cosine")

PathLike: TypeAlias = str | Path
#: Measured curves: a frame (several runs when it has ``run_id``), a CSV path, or a list of these.
Points: TypeAlias = pl.DataFrame | PathLike | Sequence[pl.DataFrame | PathLike]
#: A learning-rate schedule: a :class:`Schedule`, or the lr at every step (index = step).
ScheduleLike: TypeAlias = "Schedule | Sequence[float] | np.ndarray"
#: The schedules of several curves: one for all, one per curve (in order), or by curve label.
Schedules: TypeAlias = "Schedule | Sequence[Schedule | None] | Mapping[str, Schedule] | None"


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule, to rebuild the per-step lr a law needs.

    Step t (0-based) gets:

    - warm-up, ``t < warmup_steps``: linear from ``warmup_start`` at step 0 to ``peak_lr`` at
      step ``warmup_steps - 1`` (``numpy.linspace``, as in the MPL authors' code);
    - then, by ``decay``:

      - ``"cosine"``: ``floor + (peak - floor) (1 + cos(pi f)) / 2``, f = (t - W) / (T - W);
      - ``"linear"``: ``peak + (floor - peak) f``;
      - ``"constant"``: ``peak_lr`` (``floor`` unused);
      - ``"wsd"`` (warm-up, stable, decay): ``peak_lr`` until ``decay_start``, then over
        ``decay_steps`` (default ``total_steps - decay_start``) from peak to ``floor`` in
        ``wsd_shape`` ``"linear"``, ``"exponential"`` (geometric: peak^(1-f) floor^f) or
        ``"cosine"``, then ``floor``. ``decay_steps=0`` is a step down to ``floor`` (a
        two-stage schedule).

    W = ``warmup_steps``, T = ``total_steps``. At and after T the lr stays at ``floor``
    (``peak_lr`` for ``"constant"``).
    """

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    decay: Decay = "cosine"
    floor: float = 0.0
    warmup_start: float = 0.0
    decay_start: int | None = None
    decay_steps: int | None = None
    wsd_shape: WsdShape = "linear"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.peak_lr) and self.peak_lr > 0):
            raise InvalidArgumentError(f"peak_lr must be positive, got {self.peak_lr}")
        if not (math.isfinite(self.floor) and self.floor >= 0):
            raise InvalidArgumentError(f"floor must be >= 0, got {self.floor}")
        if not (math.isfinite(self.warmup_start) and self.warmup_start >= 0):
            raise InvalidArgumentError(f"warmup_start must be >= 0, got {self.warmup_start}")
        if self.decay not in DECAYS:
            raise InvalidArgumentError(f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        if self.wsd_shape not in WSD_SHAPES:
            raise InvalidArgumentError(f"wsd_shape must be one of {', '.join(WSD_SHAPES)}, got {self.wsd_shape!r}")
        if not (0 <= self.warmup_steps < self.total_steps):
            raise InvalidArgumentError(
                f"need 0 <= warmup_steps < total_steps, got {self.warmup_steps} and {self.total_steps}"
            )
        if self.decay == "wsd":
            if self.decay_start is None or not (self.warmup_steps <= self.decay_start <= self.total_steps):
                raise InvalidArgumentError("a wsd schedule needs decay_start between warmup_steps and total_steps")
            if self.decay_steps is not None and self.decay_steps < 0:
                raise InvalidArgumentError(f"decay_steps must be >= 0, got {self.decay_steps}")
            if self.wsd_shape == "exponential" and self.floor <= 0:
                raise InvalidArgumentError("an exponential wsd decay needs floor > 0")

    def lr(self, steps: int | None = None) -> np.ndarray:
        """The learning rate at steps 0 .. ``steps - 1`` (default ``total_steps``)."""
        n = self.total_steps if steps is None else int(steps)
        t = np.arange(n, dtype=np.int64)
        W, T, peak, floor = self.warmup_steps, self.total_steps, self.peak_lr, self.floor
        out = np.full(n, peak if self.decay == "constant" else floor, dtype=float)
        if W > 0:
            warm = t < W
            ramp = np.linspace(self.warmup_start, peak, W)
            out[warm] = ramp[t[warm]]
        main = (t >= W) & (t < T)
        f = (t[main] - W) / (T - W)
        if self.decay == "cosine":
            out[main] = floor + 0.5 * (peak - floor) * (1.0 + np.cos(np.pi * f))
        elif self.decay == "linear":
            out[main] = peak + (floor - peak) * f
        elif self.decay == "constant":
            out[main] = peak
        else:
            assert self.decay_start is not None  # a wsd schedule has one (__post_init__)
            start = int(self.decay_start)
            length = T - start if self.decay_steps is None else int(self.decay_steps)
            stable = (t >= W) & (t < start)
            out[stable] = peak
            if length > 0:
                dec = (t >= start) & (t < start + length) & (t < T)
                g = (t[dec] - start) / length
                if self.wsd_shape == "linear":
                    out[dec] = peak * (1 - g) + floor * g
                elif self.wsd_shape == "exponential":
                    out[dec] = peak ** (1 - g) * floor**g
                else:
                    out[dec] = floor + 0.5 * (peak - floor) * (1.0 + np.cos(np.pi * g))
        return out

    @classmethod
    def from_run(cls, run: Mapping[str, Any], decay: Decay = "cosine", warmup_steps: int = 0, **more: Any) -> Schedule:
        """From a run's configuration (a row of ``Store.runs()``): peak ``lr``, floor
        ``lr_min`` (0 when absent) and ``steps``. The config does not record the warm-up or
        the decay shape: give them (Step Law's runs: cosine to lr_min)."""
        peak, steps = run.get("lr"), run.get("steps")
        if peak is None or steps is None:
            raise InvalidArgumentError(f"run {run.get('name', '?')}: its config lacks lr or steps; pass a Schedule")
        floor = run.get("lr_min")
        return cls(
            peak_lr=float(peak),
            total_steps=int(steps),
            warmup_steps=warmup_steps,
            decay=decay,
            floor=float(floor or 0.0),
            **more,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Schedule:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidArgumentError(f"unknown schedule fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """From JSON (``{"peak_lr": 3e-4, ...}``) or ``key=value`` pairs separated by commas
        (``peak_lr=3e-4,total_steps=24000,warmup_steps=2160,decay=cosine,floor=3e-5``)."""
        text = text.strip()
        if text.startswith("{"):
            try:
                return cls.from_dict(json.loads(text))
            except json.JSONDecodeError as e:
                raise InvalidArgumentError(f"schedule JSON: {e}") from None
        d: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise InvalidArgumentError(f"schedule: expected key=value, got {part!r}")
            key = key.strip()
            kind = cls.__dataclass_fields__.get(key)
            if kind is None:
                raise InvalidArgumentError(f"unknown schedule field {key!r}")
            if key in ("decay", "wsd_shape"):
                d[key] = value.strip()
            elif key in ("total_steps", "warmup_steps", "decay_start", "decay_steps"):
                d[key] = int(float(value))
            else:
                d[key] = float(value)
        try:
            return cls(**d)
        except TypeError as e:
            raise InvalidArgumentError(f"schedule: {e}") from None


@dataclass
class CurveData:
    """One measured curve ready for a law: ``step`` and ``loss`` at the logged points, and
    ``lr`` at every step 0 .. ``step[-1]`` (index = step), with where the lr came from."""

    label: str
    step: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    lr_source: str = "schedule"

    def native(self) -> tuple[list[float], list[int], list[float]]:
        return self.lr.tolist(), self.step.tolist(), self.loss.tolist()


def _per_step_lr(step: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """Linear interpolation of logged lr to every step 0..step[-1]; before the first logged
    step, a linear ramp from 0 at step 0 (a warm-up ending at the first point)."""
    every = np.arange(int(step[-1]) + 1)
    if step[0] > 0:
        step = np.concatenate([[0], step])
        lr = np.concatenate([[0.0], lr])
    return np.interp(every, step, lr)


def _frame_curves(df: pl.DataFrame, label: str) -> list[tuple[str, pl.DataFrame]]:
    if "metric" in df.columns and df["metric"].n_unique() > 1:
        raise InvalidArgumentError(
            f"{label}: points of several metrics ({', '.join(map(str, df['metric'].unique().sort()))}): "
            "select the loss, e.g. Store.points(run_ids, metric='loss')"
        )
    if "run_id" in df.columns and df["run_id"].n_unique() > 1:
        return [(f"run {rid}", part) for (rid,), part in df.sort("run_id").group_by("run_id", maintain_order=True)]
    if "run_id" in df.columns and df.height:
        return [(f"run {df['run_id'][0]}", df)]
    return [(label, df)]


def _curve_of(label: str, df: pl.DataFrame, schedule: Schedule | None, where: str | None = None) -> CurveData:
    """One curve's points checked and ready; ``where`` names it in errors (a file's path). What
    its points hold (no points, a loss that is not positive, a negative lr) is a data error
    (:class:`InsufficientDataError`: the command line exits 1); a log without the lr needs a
    schedule passed (an argument: :class:`InvalidArgumentError`)."""
    where = where or label
    loss_col = "value" if "value" in df.columns else "loss" if "loss" in df.columns else None
    if "step" not in df.columns or loss_col is None:
        raise InvalidArgumentError(f"{where}: need columns 'step' and 'value' (or 'loss'), got {df.columns}")
    # A restarted run may log a step twice: keep the last value logged.
    df = df.unique("step", keep="last", maintain_order=True).sort("step")
    step = df["step"].cast(pl.Int64).to_numpy()
    loss = df[loss_col].cast(pl.Float64).to_numpy()
    if step.size == 0:
        raise InsufficientDataError(f"{where}: no points")
    if step[0] < 0:
        raise InsufficientDataError(f"{where}: negative step {step[0]}")
    bad = ~np.isfinite(loss) | (loss <= 0)
    if bad.any():
        raise InsufficientDataError(
            f"{where}: {int(bad.sum())} loss values are not finite and positive (first at step {step[bad][0]}); "
            "drop them (or the diverged run) before fitting"
        )
    if schedule is not None:
        lr = schedule.lr(max(int(step[-1]) + 1, schedule.total_steps))[: int(step[-1]) + 1]
        source = "schedule"
    else:
        if "lr" not in df.columns or df["lr"].null_count() == df.height:
            # the remedy is an argument (a schedule): a usage error, unlike what the points hold
            raise InvalidArgumentError(f"{where}: the log has no learning rate: pass schedule=Schedule(...) for it")
        logged = df["lr"].cast(pl.Float64).to_numpy()
        ok = np.isfinite(logged)
        if not ok.all():
            raise InvalidArgumentError(
                f"{where}: the lr is missing or not finite at {int((~ok).sum())} points "
                f"(first at step {step[~ok][0]}): pass schedule=Schedule(...) for it"
            )
        if (logged < 0).any():
            raise InsufficientDataError(f"{where}: negative learning rate in the log")
        lr = _per_step_lr(step, logged)
        source = "interpolated"
    # The laws are undefined before any learning-rate area (S1 = 0): drop such points.
    keep = np.cumsum(lr)[step] > 0
    return CurveData(label, step[keep], loss[keep], lr, source)


def _schedule_for(schedule: Schedules, index: int, label: str, n: int) -> Schedule | None:
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, Mapping):
        return schedule.get(label)
    if isinstance(schedule, Sequence) and not isinstance(schedule, (str, bytes)):
        if len(schedule) != n:
            raise InvalidArgumentError(f"{len(schedule)} schedules for {n} curves")
        return schedule[index]
    raise InvalidArgumentError(
        "schedule must be a Schedule, a list of them (one per curve) or a dict label -> Schedule"
    )


def load_curves(points: Points, schedule: Schedules = None) -> list[CurveData]:
    """Curves from ``points``: a Polars DataFrame (columns ``step``, ``value`` or ``loss``,
    and ``lr``; several runs when it has a ``run_id`` column, as ``Store.points`` returns),
    a CSV path with ``step,lr,loss`` columns, or a list of these.

    ``schedule`` (a :class:`Schedule`, a list with one per curve, or a dict from curve
    label (the file's stem, or ``"run <id>"``) to Schedule) gives the exact per-step lr;
    without one the logged lr is interpolated (see the module's docstring). Duplicate
    steps keep the last value; points before any lr area are dropped."""
    items: list[Any] = (
        list(points) if isinstance(points, Sequence) and not isinstance(points, (str, bytes)) else [points]
    )
    frames: list[tuple[str, pl.DataFrame, str]] = []  # label, points, where (a file's path) for errors
    for k, item in enumerate(items):
        if isinstance(item, pl.DataFrame):
            frames.extend((label, part, label) for label, part in _frame_curves(item, f"curve {k}"))
        elif isinstance(item, (str, Path)):
            path = Path(item)
            if not path.is_file():
                raise InvalidArgumentError(f"{path}: no such file")
            try:
                df = pl.read_csv(path, infer_schema_length=10000)
            except pl.exceptions.PolarsError as e:
                raise InsufficientDataError(f"{path}: cannot read as CSV: {e}") from None
            # the file's content, not the call, lacks them: a data error that names the file
            missing = [c for c in ("step",) if c not in df.columns]
            missing += [] if "loss" in df.columns or "value" in df.columns else ["loss (or value)"]
            if missing:
                raise InsufficientDataError(f"{path}: no column(s) {missing} for a loss curve (columns: {df.columns})")
            for label, part in _frame_curves(df, path.stem):  # errors name the file (and the run in it)
                frames.append((label, part, str(path) if label == path.stem else f"{path}, {label}"))
        else:
            raise InvalidArgumentError(f"points must be DataFrames or CSV paths, got {type(item).__name__}")
    if not frames:
        raise InvalidArgumentError("no curves given")
    return [
        _curve_of(label, df, _schedule_for(schedule, i, label, len(frames)), where)
        for i, (label, df, where) in enumerate(frames)
    ]


def _lr_of(schedule: ScheduleLike, steps: int | None = None) -> np.ndarray:
    if isinstance(schedule, Schedule):
        return schedule.lr(steps if steps is not None and steps > schedule.total_steps else None)
    lr = np.asarray(schedule, dtype=float)
    if lr.ndim != 1 or lr.size == 0:
        raise InvalidArgumentError("a per-step lr must be a non-empty 1-d array (index = step)")
    return lr


@dataclass
class CurveLaw:
    """A fitted loss-curve law: ``form`` (``"mpl"`` or ``"annealing"``), ``params`` (name ->
    value), ``lam`` (the annealing law's fixed decay factor), ``delta`` (the Huber delta of
    the fit) and ``fit`` (objective, points, iterations, convergence, curves fitted on)."""

    form: CurveForm
    params: dict[str, float]
    lam: float = 0.999
    delta: float = 1e-3
    fit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise InvalidArgumentError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        missing = [n for n in FORMS[self.form] if n not in self.params]
        if missing:
            raise InvalidArgumentError(f"{self.form} parameters lack {', '.join(missing)}")

    @property
    def vector(self) -> list[float]:
        """The parameters in the core's order (``FORMS[form]``)."""
        return [float(self.params[n]) for n in FORMS[self.form]]

    def loss_at(self, lr: np.ndarray, steps: np.ndarray | Sequence[int]) -> np.ndarray:
        """The law's loss at ``steps`` (any order, repeats allowed) given the lr at every
        step (``lr[t]`` = step t)."""
        steps = np.asarray(steps, dtype=np.int64)
        if steps.size and steps.min() < 0:
            raise InvalidArgumentError("steps must be >= 0")
        # The core walks the steps once, in increasing order.
        unique, back = np.unique(steps, return_inverse=True)
        out = _native.curve_predict(self.form, self.vector, np.asarray(lr, float).tolist(), unique.tolist(), self.lam)
        return np.asarray(out)[back]

    def predict(self, schedule: ScheduleLike, steps: Sequence[int] | np.ndarray | None = None) -> pl.DataFrame:
        """The predicted curve under ``schedule``: a :class:`Schedule` or the lr at every
        step (array, index = step). ``steps``: where to predict (default every step with a
        positive lr area, up to the schedule's end). Columns ``step``, ``lr``, ``loss``."""
        if steps is None:
            lr = _lr_of(schedule)
            steps_arr = np.flatnonzero(np.cumsum(lr) > 0)
        else:
            steps_arr = np.asarray(steps, dtype=np.int64)
            if steps_arr.size == 0:
                raise InvalidArgumentError("no steps to predict")
            lr = _lr_of(schedule, int(steps_arr.max()) + 1)
        loss = self.loss_at(lr, steps_arr)
        return pl.DataFrame({"step": steps_arr, "lr": lr[steps_arr], "loss": loss})

    def evaluate(self, points: Points, schedule: Schedules = None) -> pl.DataFrame:
        """Per curve of ``points`` (as :func:`load_curves` reads them): number of points and
        the mean and max relative error |L_hat - L| / L of the law's prediction."""
        rows = []
        for c in load_curves(points, schedule):
            rel = np.abs(self.loss_at(c.lr, c.step) - c.loss) / c.loss
            rows.append(
                {
                    "curve": c.label,
                    "points": int(c.step.size),
                    "mean_rel_error": float(rel.mean()),
                    "max_rel_error": float(rel.max()),
                }
            )
        return pl.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "params": dict(self.params), "lam": self.lam, "delta": self.delta, "fit": self.fit}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CurveLaw:
        try:
            return cls(
                form=d["form"],
                params={k: float(v) for k, v in d["params"].items()},
                lam=float(d.get("lam", 0.999)),
                delta=float(d.get("delta", 1e-3)),
                fit=dict(d.get("fit", {})),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise InvalidArgumentError(f"not a curve law: {e}") from None

    def to_json(self, path: PathLike | None = None) -> str:
        """The law as JSON; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: PathLike) -> CurveLaw:
        """From a JSON string or a path to a JSON file written by :meth:`to_json`."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise InvalidArgumentError(f"curve law JSON: {e}") from None

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v:.6g}" for k, v in self.params.items())
        extra = f", lam={self.lam}" if self.form == "annealing" else ""
        return f"CurveLaw({self.form}: {ps}{extra})"


def _decays(lr: np.ndarray) -> bool:
    """Whether the lr falls clearly (by more than 5%) below its peak after reaching it."""
    if lr.size == 0:
        return False
    peak = int(np.argmax(lr))
    return bool(lr[peak:].min() < 0.95 * lr[peak])


def fit_curve_law(
    points: Points,
    form: CurveForm = "mpl",
    *,
    schedule: Schedules = None,
    lam: float = 0.999,
    delta: float = 1e-3,
    starts: Sequence[Sequence[float] | Mapping[str, float]] | None = None,
    max_iterations: int = 3000,
) -> CurveLaw:
    """Fit a loss-curve law on one or more full curves.

    ``points``: a Polars DataFrame with ``step``, ``value`` (or ``loss``) and ``lr`` (several
    runs if it has ``run_id``, as ``Store.points(run_ids, metric="loss")`` returns), a CSV
    path with ``step,lr,loss``, or a list of these. Every point of every curve counts once.
    ``schedule``: the exact lr schedule (a :class:`Schedule`, one per curve, or a dict label
    -> Schedule); required where a log lacks ``lr``; otherwise the logged lr is interpolated
    to every step (linear between points, a linear warm-up from 0 before the first).
    ``form``: ``"mpl"`` or ``"annealing"`` (``lam`` its fixed decay factor). ``delta``: the
    Huber threshold on ln L (1e-3 as the MPL authors). ``starts``: starting parameter sets
    (lists in ``FORMS[form]`` order or dicts); default: for alpha on a grid, L0, A and the
    drop coefficient by least squares at a few fixed drop shapes, as the MPL authors do.
    Fitting a constant-lr curve alone cannot identify the drop term (B, C, beta, gamma).
    """
    if form not in FORMS:
        raise InvalidArgumentError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    curves = load_curves(points, schedule)
    if not any(_decays(c.lr) for c in curves):
        warnings.warn(
            "no curve to fit on decays its learning rate after the peak: the loss-drop term "
            f"({', '.join(FORMS[form][3:]) if form == 'mpl' else 'C'}) is not identifiable, and predictions for "
            "decaying schedules are guesses; fit on at least one decaying schedule",
            stacklevel=2,
        )
    start_vectors = None
    if starts is not None:
        start_vectors = [
            [float(s[n]) for n in FORMS[form]] if isinstance(s, Mapping) else [float(v) for v in s] for s in starts
        ]
    r = _native.curve_fit(form, [c.native() for c in curves], delta, lam, "auto", start_vectors, int(max_iterations))
    fit = {
        "objective": r["objective"],
        "points": r["points"],
        "iterations": r["iterations"],
        "evaluations": r["evaluations"],
        "converged": r["converged"],
        "termination": r["termination"],
        "curves": [c.label for c in curves],
        "lr_source": {c.label: c.lr_source for c in curves},
    }
    return CurveLaw(form=form, params=dict(zip(r["names"], r["params"], strict=True)), lam=lam, delta=delta, fit=fit)


def plot_curve_law(
    law: CurveLaw,
    points: Points,
    path: PathLike | None = None,
    *,
    schedule: Schedules = None,
    fitted: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Measured curves (solid) against the law's predictions (dashed), with the lr
    schedules below; curves the law was fitted on (``fitted``, default the labels in
    ``law.fit["curves"]``) are marked "fit", the others "predicted". Writes ``path`` (PNG,
    SVG or PDF by its extension) when given; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    curves = load_curves(points, schedule)
    fitted_set = set(law.fit.get("curves", []) if fitted is None else fitted)
    fig, (ax, ax_lr) = plt.subplots(2, 1, sharex=True, figsize=(9, 7), gridspec_kw={"height_ratios": [3, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, c in enumerate(curves):
        color = colors[k % len(colors)]
        pred = law.loss_at(c.lr, c.step)
        rel = np.abs(pred - c.loss) / c.loss
        role = "fit" if c.label in fitted_set else "predicted"
        ax.plot(c.step, c.loss, color=color, lw=1.0, alpha=0.6)
        ax.plot(
            c.step,
            pred,
            color=color,
            lw=1.5,
            ls="--",
            label=f"{c.label} ({role}; mean {rel.mean():.2%}, max {rel.max():.2%})",
        )
        ax_lr.plot(np.arange(c.lr.size), c.lr, color=color, lw=1.0)
    ax.set_ylabel("loss")
    ax.set_title(title or f"{law.form} law: measured (solid) and law (dashed)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        suffix = Path(path).suffix.lower()
        if suffix not in (".png", ".svg", ".pdf"):
            plt.close(fig)
            raise InvalidArgumentError(f"{path}: the plot is written as .png, .svg or .pdf")
        fig.savefig(path, dpi=130)
    return fig
