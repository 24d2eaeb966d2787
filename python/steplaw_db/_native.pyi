# Hand-written stubs of the Rust extension (rust/src/py/mod.rs). Private: use steplaw_db.Store.
from os import PathLike
from typing import Any

__version__: str

class Store:
    def __init__(self, path: str | PathLike[str], create: bool = True) -> None: ...
    @property
    def path(self) -> str: ...
    def ingest(self, paths: list[str], options: dict[str, Any]) -> dict[str, Any]: ...
    def import_summaries(self, source: str, rows: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]: ...
    def snapshot(self) -> dict[str, Any]: ...
    def compact(self, wait: float = 0.0) -> dict[str, Any]: ...
    def final_losses(
        self,
        metric: str,
        smooth: str,
        width: float | None,
        unit: str,
        weight: float | None,
        at_kind: str,
        at_value: float,
    ) -> dict[str, list[Any]]: ...

# Per-cell quadratic landscapes (rust/src/cells.rs); used by steplaw_db.optima.
def fit_cells(
    cell: list[int], x: list[float], y: list[float], z: list[float], draws: int, seed: int
) -> list[dict[str, Any] | None]: ...

# Fitting engine (rust/src/py/fit.rs). Private: use steplaw_db.fit_lr_bs / fit_loss_law.
def fit_linear(
    models: list[dict[str, Any]],
    cells: list[int],
    method: str = "ols",
    huber_t: float = 1.345,
    draws: int = 0,
    resample: str = "rows",
    seed: int = 42,
) -> dict[str, Any]: ...
def fit_chinchilla(
    n: list[float],
    d: list[float],
    loss: list[float],
    delta: float = 1e-3,
    starts: list[list[float]] | None = None,
    draws: int = 0,
    seed: int = 42,
    bootstrap_starts: int = 8,
) -> dict[str, Any]: ...
def chinchilla_objective(
    params: list[float], n: list[float], d: list[float], loss: list[float], delta: float = 1e-3
) -> tuple[float, list[float]]: ...
def chinchilla_grid() -> list[list[float]]: ...

# Loss-curve laws (rust/src/py/curve.rs); used by steplaw_db.curve.
def curve_predict(
    form: str,
    params: list[float],
    lr: list[float],
    steps: list[int],
    lam: float = 0.999,
    method: str = "auto",
    jacobian: bool = False,
) -> Any: ...
def curve_objective(
    form: str,
    params: list[float],
    curves: list[tuple[list[float], list[int], list[float]]],
    delta: float = 1e-3,
    lam: float = 0.999,
    method: str = "auto",
) -> tuple[float, list[float]]: ...
def curve_fit(
    form: str,
    curves: list[tuple[list[float], list[int], list[float]]],
    delta: float = 1e-3,
    lam: float = 0.999,
    method: str = "auto",
    starts: list[list[float]] | None = None,
    max_iterations: int = 3000,
) -> dict[str, Any]: ...
