"""Edge optima are bounds (issue 19, 1): vertices far outside the grid are unbounded, and every
fit counts its edge-bound cells."""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
import pytest

import steplaw_db as sl
from steplaw_db.synth import TRUTH


def _cell(N: float, D: float, lr_shift: float = 0.0, bs_shift: float = 0.0, noise: float = 0.0, seed: int = 0):
    """A 7 x 5 lr x batch grid (factors sqrt 2) around the true optimum moved by ``lr_shift`` /
    ``bs_shift`` grid steps: a shift of +4 puts the optimum below the grid's smallest level."""
    rng = np.random.default_rng(seed)
    lr_star, bs_star = float(TRUTH.lr_opt(N, D)), float(TRUTH.bs_tokens_opt(D))
    rows = []
    for i in range(-3, 4):
        for j in range(-2, 3):
            lr = lr_star * 2.0 ** ((i + lr_shift) / 2)
            bs = bs_star * 2.0 ** ((j + bs_shift) / 2)
            loss = float(TRUTH.landscape(N, D, lr, bs)) * (1 + noise * rng.standard_normal())
            rows.append({"N": N, "D": D, "lr": lr, "bs_tokens": bs, "loss": loss})
    return rows


def _sweep(bs_shift: float = 0.0, lr_shift: float = 0.0, noise: float = 0.0005, seed: int = 0) -> pl.DataFrame:
    rows = []
    for k, N in enumerate((2e8, 5e8, 1.2e9)):
        for m, D in enumerate((2e10, 6e10, 2e11)):
            rows += _cell(N, D, lr_shift, bs_shift, noise, seed=seed * 100 + 10 * k + m)
    return pl.DataFrame(rows)


def test_vertex_far_outside_the_grid_is_unbounded_not_a_number() -> None:
    # the bs optimum 8 grid steps (a factor 16) below the grid's smallest batch
    final = pl.DataFrame(_cell(5e8, 6e10, bs_shift=10.0, noise=0.0002, seed=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sl.AnalysisWarning)
        row = sl.optima(final).row(0, named=True)
    assert row["bs_edge"] == "low" and "bs-edge" in row["flags"]
    assert row["bs_tokens_quad"] is None and "bs-vertex-below" in row["flags"]
    assert row["bs_unbounded"] in ("below", "both")
    assert row["bs_quad_lo"] == 0.0  # no 2e-14: unbounded below
    assert row["optimum"] == "grid-fallback" and row["bs_tokens_opt"] == pytest.approx(final["bs_tokens"].min())
    # the lr optimum is inside the grid: a number, bounded
    assert row["lr_edge"] is None and row["lr_unbounded"] is None
    assert row["lr_quad"] == pytest.approx(float(TRUTH.lr_opt(5e8, 6e10)), rel=0.1)
    assert 0 < row["lr_quad_lo"] < row["lr_quad"] < row["lr_quad_hi"] < math.inf


def test_interior_optimum_is_bounded() -> None:
    final = pl.DataFrame(_cell(5e8, 6e10, noise=0.0002, seed=4))
    row = sl.optima(final).row(0, named=True)
    assert row["lr_unbounded"] is None and row["bs_unbounded"] is None
    assert row["lr_edge"] is None and row["bs_edge"] is None
    assert row["bs_quad_hi"] < math.inf and row["bs_quad_lo"] > 0
