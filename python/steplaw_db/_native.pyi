# Hand-written stubs of the Rust extension (rust/src/py/), checked against it by
# `python -m mypy.stubtest steplaw_db._native`. Private: use steplaw_db.Store, fit_lr_bs, ...
#
# Options are keyword arguments (a misspelt one is a TypeError); results are plain dicts, typed
# here as TypedDicts (names with a leading underscore: they exist only for type checkers).
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Literal, TypedDict, final, overload, type_check_only

from typing_extensions import NotRequired, Self

from ._typing import BudgetKind, CurveForm, CurveMethod, RegressionMethod, Resample, Smoothing, WidthUnit

__all__ = [
    "DEFAULT_SEQ_LEN",
    "LinearModel",
    "Store",
    "__version__",
    "annealing_areas",
    "chinchilla_grid",
    "chinchilla_objective",
    "curve_fit",
    "curve_objective",
    "curve_predict",
    "fit_cells",
    "fit_chinchilla",
    "fit_linear",
    "metric_names",
    "run_fields",
    "schedule_lr",
]

__version__: str

# -- the store (rust/src/py/mod.rs) ----------------------------------------------------------

@type_check_only
class _IngestReport(TypedDict):
    runs_found: int
    added: int
    updated: int
    moved: int
    unchanged: int
    failed: list[tuple[str, str]]
    points: int
    bytes_read: int
    malformed_lines: int
    warnings: list[str]
    skipped_files: list[tuple[str, str]]
    replaced_points: int
    notes: list[str]
    seconds: float
    version: int
    committed: bool

@type_check_only
class _Segment(TypedDict):
    file: Path
    rows: int
    run_ids: list[int]
    # None when every run written to the segment is still current.
    live_runs: list[int] | None

@type_check_only
class _Snapshot(TypedDict):
    version: int
    n_runs: int
    runs_file: Path | None
    segments: list[_Segment]

@type_check_only
class _PointColumns(TypedDict):
    run_id: list[int]
    step: list[int]
    tokens: list[int | None]
    value: list[float]
    lr: list[float | None]
    metric_names: list[str]
    metric_rows: list[int]

@type_check_only
class _FinalColumns(TypedDict):
    runs_table: bytes
    run_id: list[int]
    raw_loss: list[float]
    loss: list[float]
    step: list[int | None]
    points_used: list[int]
    origin: list[str]

@type_check_only
class _AffectedRun(TypedDict):
    run_id: int
    name: str
    source: str
    source_exists: bool

@type_check_only
class _Damage(TypedDict):
    file: Path
    kind: Literal["manifest", "inconsistent", "missing", "size", "checksum", "unreadable", "rows"]
    detail: str
    recovery: str
    runs: list[_AffectedRun]

@type_check_only
class _CheckReport(TypedDict):
    version: int
    deep: bool
    manifests_checked: int
    files_checked: int
    bytes_checked: int
    unverified: list[Path]
    damaged: list[_Damage]
    text: str

@type_check_only
class _CompactReport(TypedDict):
    version: int
    segments_rewritten: int
    files_removed: int
    bytes_freed: int
    versions_kept: list[int]

@type_check_only
class _RemoveReport(TypedDict):
    removed: list[tuple[int, str, str]]
    version: int
    committed: bool

@type_check_only
class _RepairReport(TypedDict):
    version: int
    set_aside: list[tuple[int, Path]]
    lost: list[tuple[int, str, str]]
    lost_known: bool
    runs_table_rewritten: bool
    text: str

@final
class Store:
    def __new__(cls, path: str | PathLike[str], create: bool = True, force: bool = False) -> Self: ...
    @property
    def path(self) -> Path: ...
    def ingest(
        self,
        paths: Sequence[str | PathLike[str]],
        *,
        format: str | None = None,
        metric: str | None = None,
        metrics: Sequence[str] = ...,
        name_template: str | None = None,
        set: Sequence[tuple[str, str]] = ...,
        recipe: str | None = None,
        seq_len: int = ...,
        force: bool = False,
        strict: bool = False,
        progress: bool = False,
        wait: float = 0.0,
        restarts: str = "split",
    ) -> _IngestReport: ...
    def import_summaries(
        self,
        source: str,
        *,
        names: Sequence[str],
        fields: Sequence[Sequence[tuple[str, str]]],
        final_loss: Sequence[float | None],
        smooth_loss: Sequence[float | None],
        name_template: str | None = None,
        set: Sequence[tuple[str, str]] = ...,
        recipe: str | None = None,
        seq_len: int = ...,
        wait: float = 0.0,
        series: Sequence[Sequence[tuple[str, Sequence[int], Sequence[float], Sequence[int]]]] | None = None,
    ) -> _IngestReport: ...
    def snapshot(self) -> _Snapshot: ...
    def runs_table(self) -> bytes: ...
    def points(self, run_ids: Sequence[int], metric: str | None = None) -> _PointColumns: ...
    def check(self, deep: bool = False) -> _CheckReport: ...
    def remove(
        self,
        *,
        names: Sequence[str] = ...,
        sources: Sequence[str] = ...,
        run_ids: Sequence[int] = ...,
        missing_source: bool = False,
        dry_run: bool = False,
        wait: float = 0.0,
    ) -> _RemoveReport: ...
    def compact(self, wait: float = 0.0, keep: int | None = None) -> _CompactReport: ...
    def repair(self, wait: float = 0.0) -> _RepairReport: ...
    def final_losses(
        self,
        *,
        metric: str,
        smooth: Smoothing,
        width: float | None,
        unit: WidthUnit,
        weight: float | None,
        at_kind: BudgetKind,
        at_value: float,
    ) -> _FinalColumns: ...

# -- per-cell quadratic landscapes (rust/src/cells.rs); used by steplaw_db.optima -----------

@type_check_only
class _CellFit(TypedDict):
    coef: list[float]
    centre: tuple[float, float]
    hessian: list[list[float]]
    convex: bool
    vertex: tuple[float, float, float] | None
    r2: float
    points: int
    # With bootstrap draws only:
    sd: NotRequired[tuple[float, float]]
    x_interval: NotRequired[tuple[float, float]]
    y_interval: NotRequired[tuple[float, float]]
    draws: NotRequired[int]
    non_convex_draws: NotRequired[int]

DEFAULT_SEQ_LEN: int

@type_check_only
class _RunField(TypedDict):
    name: str
    type: str
    unit: str
    aliases: list[str]
    doc: str

def run_fields() -> list[_RunField]: ...
def metric_names() -> dict[str, list[str]]: ...
def fit_cells(
    cell: Sequence[int], x: Sequence[float], y: Sequence[float], z: Sequence[float], draws: int, seed: int
) -> list[_CellFit | None]: ...

# -- the fitting engine (rust/src/py/fit.rs); used by steplaw_db.fit ------------------------

@final
class LinearModel:
    def __new__(
        cls,
        *,
        target: str,
        regressors: Sequence[str],
        columns: Sequence[Sequence[float]],
        y: Sequence[float],
        weights: Sequence[float] | None = None,
    ) -> Self: ...
    @property
    def target(self) -> str: ...

@type_check_only
class _LinearFit(TypedDict):
    coef: list[float]
    r2: float
    scale: float
    iterations: int
    converged: bool

@type_check_only
class _LinearReport(TypedDict):
    fits: list[_LinearFit]
    # Per model: one coefficient list per draw.
    draws: list[list[list[float]]]
    failed: int

def fit_linear(
    models: Sequence[LinearModel],
    cells: Sequence[int],
    method: RegressionMethod = "ols",
    huber_t: float = 1.345,
    draws: int = 0,
    resample: Resample = "rows",
    seed: int = 42,
) -> _LinearReport: ...

@type_check_only
class _ChinchillaFit(TypedDict):
    # [a, b, e, alpha, beta] with A = e^a, B = e^b, E = e^e.
    params: list[float]
    objective: float
    converged: bool
    iterations: int
    starts: int
    starts_converged: int
    draws: list[list[float]]
    failed: int

def fit_chinchilla(
    n: Sequence[float],
    d: Sequence[float],
    loss: Sequence[float],
    delta: float = 0.001,
    starts: Sequence[Sequence[float]] | None = None,
    draws: int = 0,
    seed: int = 42,
    bootstrap_starts: int = 8,
) -> _ChinchillaFit: ...
def chinchilla_objective(
    params: Sequence[float], n: Sequence[float], d: Sequence[float], loss: Sequence[float], delta: float = 0.001
) -> tuple[float, list[float]]: ...
def chinchilla_grid() -> list[list[float]]: ...

# -- loss-curve laws (rust/src/py/curve.rs); used by steplaw_db.curve -----------------------

# (lr at every step, the logged steps, the loss at them)
_Curve = tuple[Sequence[float], Sequence[int], Sequence[float]]

@type_check_only
class _CurveFit(TypedDict):
    params: list[float]
    names: list[str]
    objective: float
    points: int
    iterations: int
    evaluations: int
    converged: bool
    termination: str
    best_start: int
    starts: list[list[float]]

@overload
def curve_predict(
    form: CurveForm,
    params: Sequence[float],
    lr: Sequence[float],
    steps: Sequence[int],
    lam: float = 0.999,
    method: CurveMethod = "auto",
    jacobian: Literal[False] = False,
) -> list[float]: ...
@overload
def curve_predict(
    form: CurveForm,
    params: Sequence[float],
    lr: Sequence[float],
    steps: Sequence[int],
    lam: float = 0.999,
    method: CurveMethod = "auto",
    *,
    jacobian: Literal[True],
) -> tuple[list[float], list[list[float]]]: ...
def curve_objective(
    form: CurveForm,
    params: Sequence[float],
    curves: Sequence[_Curve],
    delta: float = 0.001,
    lam: float = 0.999,
    method: CurveMethod = "auto",
) -> tuple[float, list[float]]: ...
def curve_fit(
    form: CurveForm,
    curves: Sequence[_Curve],
    delta: float = 0.001,
    lam: float = 0.999,
    method: CurveMethod = "auto",
    starts: Sequence[Sequence[float]] | None = None,
    max_iterations: int = 3000,
) -> _CurveFit: ...

# -- the forecast's per-step work (rust/src/py/forecast.rs); used by steplaw_db.forecast ---------
# S1, S2 of the per-step lr at the nondecreasing positions `at`: native float64 bytes in and out.
def annealing_areas(lr: bytes, at: bytes, lam: float = 0.999) -> tuple[bytes, bytes]: ...

# steplaw_db.curve.Schedule(...).lr(n)[start:] (or at `steps`, int64 bytes) as native float64 bytes.
def schedule_lr(
    peak: float,
    total_steps: int,
    warmup_steps: int,
    decay: str,
    floor: float,
    warmup_start: float,
    decay_start: int | None,
    decay_steps: int | None,
    wsd_shape: str,
    n: int,
    start: int = 0,
    steps: bytes | None = None,
) -> bytes: ...
