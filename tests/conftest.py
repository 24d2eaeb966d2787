"""Test tiers and the data the tests share.

Markers (registered in pyproject.toml, ``--strict-markers``):

* ``shared``: the test reads the public data of ../shared/data (``STEPLAW_SHARED_DATA``
  points elsewhere). The tests name no path into it: they get it from the ``shared_data``
  fixture, directly or through ``steplaw_csv``, ``dense``, ``mpl_dir``, ..., and every test
  that requests one of those is marked here at collection. One that reaches it at run time
  (``request.getfixturevalue``) without the marker fails. Without the data, a shared test
  that is not deselected fails loudly: ``pytest -m "not shared"`` is how to run without it.
* ``slow``: left out of the inner loop, ``pytest -m "not slow"``.

The unit tier runs on small frames made here: ``synthetic_csv`` is a Step Law-format table of
a synthetic sweep (the public dense CSV's columns, a known truth); ``final_csv`` / ``final``
are parametrized over it and, as a ``shared`` case, the public CSV.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from references import PUBLISHED, TEST, TRAIN, mpl_schedule
from steplaw_db import synth
from steplaw_db.curve import FORMS, CurveLaw

SHARED_MARK = "shared"


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(SHARED_MARK)


@pytest.fixture(autouse=True)
def _shared_data_needs_the_marker(request: pytest.FixtureRequest):
    """Fail a test that reached the public data (e.g. by ``request.getfixturevalue``) but is
    not marked ``shared``: ``-m "not shared"`` would not leave it out."""
    yield
    if "shared_data" in request.fixturenames and request.node.get_closest_marker(SHARED_MARK) is None:
        pytest.fail(f"{request.node.nodeid} reads ../shared/data but is not marked {SHARED_MARK!r}")


@pytest.fixture(autouse=True)
def _close_figures():
    """The plotting functions return their figures open (pyplot keeps them): close them after
    each test, as a caller would."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


# -- the public data (../shared/data), the integration tier ---------------------------------


def _shared_root() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return Path(os.environ.get("STEPLAW_SHARED_DATA", default))


def _need(path: Path) -> Path:
    if not path.exists():  # the tests are meant to run beside ../shared: say so loudly
        raise FileNotFoundError(
            f"{path}: the public data is expected in ../shared/data (STEPLAW_SHARED_DATA points elsewhere; "
            f'pytest -m "not shared" runs without it)'
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The root of the public data; every fixture below that reads it goes through here."""
    return _need(_shared_root())


@pytest.fixture(scope="session")
def steplaw_csv(shared_data: Path) -> Path:
    """Step Law's public dense CSV (1,911 runs, 17 cells)."""
    return _need(shared_data / "steplaw" / "dense_lr_bs_loss.csv")


@pytest.fixture(scope="session")
def steplaw_bootstrap_csv(shared_data: Path) -> Path:
    """Step Law's 1,000 bootstrap draws of their fitted law."""
    return _need(shared_data / "steplaw" / "1004_fitted_lr_bs_scaling_model_parameters.csv")


@pytest.fixture(scope="session")
def mpl_dir(shared_data: Path) -> Path:
    """The Multi-Power Law paper's loss curves: csv_25, csv_100, csv_400 (step, lr, loss)."""
    return _need(shared_data / "multipowerlaw" / "loss_curve_repo")


@pytest.fixture(scope="session")
def colpret_dir(shared_data: Path) -> Path:
    """Real T5X TensorBoard files and OLMo W&B chart exports."""
    return _need(shared_data / "colpret" / "raw_data")


def final_losses(table: Path | pl.DataFrame) -> pl.DataFrame:
    """A Step Law-format table (the public dense CSV's columns) as a final-loss frame: their
    smoothed loss, the batch in tokens (``bs`` counts sequences of 2048)."""
    df = pl.read_csv(table) if isinstance(table, Path) else table
    return df.with_columns(loss=pl.col("smooth loss"), bs_tokens=pl.col("bs") * 2048)


@pytest.fixture(scope="session")
def dense(steplaw_csv: Path) -> pl.DataFrame:
    """The public dense CSV as final losses."""
    return final_losses(steplaw_csv)


# -- small data made here, the unit tier ----------------------------------------------------

#: Model shapes (h, ffnh, numh, numl) and data sizes of the synthetic table: 4 N x 4 D cells.
SYNTH_SHAPES = ((960, 9368, 15, 7), (1024, 9552, 16, 8), (1280, 9472, 10, 10), (2048, 8192, 16, 16))
SYNTH_D = (10_000_000_000, 20_000_000_000, 50_000_000_000, 100_000_000_000)
SYNTH_CELLS = len(SYNTH_SHAPES) * len(SYNTH_D)
#: Per cell, the 7 learning rates x 5 batch sizes of the common grids nearest the cell's optimum.
SYNTH_LR_LEVELS, SYNTH_BS_LEVELS = 7, 5
SYNTH_ROWS = SYNTH_CELLS * SYNTH_LR_LEVELS * SYNTH_BS_LEVELS
_LR_GRID = np.array([float(f"{v:.4g}") for v in 2.0 ** (np.arange(-30, -4) / 2)])  # half-octaves, 4 digits
_BS_GRID = np.array([16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096])


def _nearest_levels(grid: np.ndarray, optimum: float, k: int) -> np.ndarray:
    centre = int(np.argmin(np.abs(np.log(grid) - math.log(optimum))))
    return grid[centre - k // 2 : centre + k // 2 + 1]


def synthetic_table(noise: float = 5e-4, seed: int = 0) -> pl.DataFrame:
    """A Step Law-format table (the public dense CSV's columns) of a synthetic sweep whose
    final losses follow ``synth.TRUTH``'s landscape with relative noise ``noise``."""
    rng = np.random.default_rng(seed)
    rows = []
    for h, ffnh, numh, numl in SYNTH_SHAPES:
        n = synth.n_params(h, ffnh, numl)
        for d in SYNTH_D:
            lrs = _nearest_levels(_LR_GRID, float(synth.TRUTH.lr_opt(n, d)), SYNTH_LR_LEVELS)
            bss = _nearest_levels(_BS_GRID, float(synth.TRUTH.bs_tokens_opt(d)) / 2048, SYNTH_BS_LEVELS)
            for lr in lrs:
                for bs in bss:
                    smooth = float(synth.TRUTH.landscape(n, d, lr, bs * 2048)) * (1 + noise * rng.standard_normal())
                    steps = round(d / (bs * 2048))
                    rows.append(
                        {
                            "h": h,
                            "ffnh": ffnh,
                            "numh": numh,
                            "numl": numl,
                            "lr": float(lr),
                            "bs": int(bs),
                            "ti": steps,
                            "loss": round(smooth * (1 + 3e-3 * rng.standard_normal()), 6),
                            "smooth loss": smooth,
                            "exp_name": synth.run_name(h, ffnh, numh, numl, lr, bs, steps, 1e-5),
                            "D": d,
                            "N": n,
                            "D/N": d / n,
                        }
                    )
    return pl.DataFrame(rows)


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``synthetic_table()`` written as a CSV (about 50 kB)."""
    path = tmp_path_factory.mktemp("synthetic") / "dense_lr_bs_loss.csv"
    synthetic_table().write_csv(path)
    return path


@pytest.fixture(scope="session")
def synthetic_dense(synthetic_csv: Path) -> pl.DataFrame:
    return final_losses(synthetic_csv)


def mpl_like_curves(directory: Path, size: str = "25", noise: float = 2e-3, seed: int = 0) -> Path:
    """The nine schedules of the MPL data (references.TRAIN + TEST) as ``{name}.csv`` files
    with the real files' columns (step, lr, loss) and logging (every 128 steps after the
    warm-up), the loss from the authors' published parameters for ``size`` with noise."""
    law = CurveLaw("mpl", dict(zip(FORMS["mpl"], PUBLISHED[size], strict=True)))
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name in TRAIN + TEST:
        schedule = mpl_schedule(name)
        lr = schedule.lr()
        steps = np.arange(schedule.warmup_steps, schedule.total_steps, 128)
        loss = law.loss_at(lr, steps) * (1 + noise * rng.standard_normal(steps.size))
        pl.DataFrame({"step": steps, "lr": lr[steps], "loss": np.round(loss, 4)}).write_csv(directory / f"{name}.csv")
    return directory


@pytest.fixture(scope="session")
def synthetic_mpl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the MPL data's loss_curve_repo: csv_25, csv_100, csv_400 made by
    ``mpl_like_curves`` (about 20 kB each)."""
    root = tmp_path_factory.mktemp("loss_curve_repo")
    for size in PUBLISHED:
        mpl_like_curves(root / f"csv_{size}", size, seed=int(size))
    return root


# -- both, parametrized: the same test on the synthetic table and on the public data --------

DATASETS = ["synthetic", pytest.param("public", marks=pytest.mark.shared)]


@pytest.fixture(scope="session", params=DATASETS)
def dataset(request: pytest.FixtureRequest) -> str:
    """``synthetic`` (made here) or ``public`` (../shared/data, marked ``shared``)."""
    return request.param


@pytest.fixture(scope="session")
def final_csv(dataset: str, request: pytest.FixtureRequest) -> Path:
    """A Step Law-format table: the synthetic one, then the public dense CSV."""
    return request.getfixturevalue("steplaw_csv" if dataset == "public" else "synthetic_csv")


@pytest.fixture(scope="session")
def final(dataset: str, request: pytest.FixtureRequest) -> pl.DataFrame:
    """``final_csv`` as final losses."""
    return request.getfixturevalue("dense" if dataset == "public" else "synthetic_dense")


@pytest.fixture(scope="session")
def loss_curves(dataset: str, request: pytest.FixtureRequest) -> Path:
    """A loss_curve_repo directory (csv_25, csv_100, csv_400): made here, then the MPL data."""
    return request.getfixturevalue("mpl_dir" if dataset == "public" else "synthetic_mpl_dir")
