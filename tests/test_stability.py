"""The stability benchmark: the public dense CSV's known instability, and synthetic recipes
whose true laws differ (or do not)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

import steplaw_db as sl
from conftest import SYNTH_CELLS
from steplaw_db import synth
from steplaw_db.stability import stability

#: Cells of each ``dataset`` (conftest).
CELLS = {"public": 17, "synthetic": SYNTH_CELLS}


def test_public_dense_csv_lr_d_exponent_moves_with_threshold(dense):
    report = stability(dense, bootstrap=200, loco=False)
    s = report.sensitivity.filter((pl.col("name") == "lr_coefD") & (pl.col("method") == "grid")).sort("threshold")
    by_t = dict(zip(s["threshold"], s["estimate"], strict=True))
    # GUIDE.md: 0.1% -> 0.205, 0.25% -> 0.197, 1% -> 0.133
    assert by_t[0.001] == pytest.approx(0.205, abs=0.01)
    assert by_t[0.0025] == pytest.approx(0.197, abs=0.01)
    assert by_t[0.01] == pytest.approx(0.133, abs=0.01)
    verdict = report.verdicts.filter(pl.col("name") == "lr_coefD").row(0, named=True)
    assert verdict["verdict"] == "unstable" and verdict["range_in_sds"] > 2


def test_leave_one_cell_out(final, dataset):
    report = stability(final, bootstrap=50, thresholds=(0.0025,), methods=("grid",))
    loco = report.loco
    assert loco.height == CELLS[dataset]
    # a held-out cell's loss penalty is what `evaluate` gives a law fitted without it: small, >= 0
    assert (loco["loss_penalty"] >= 0).all() and loco["loss_penalty"].median() < 0.005
    assert loco["lr_log_error"].abs().median() < 0.5


def _recipe_frame(truth: synth.GroundTruth, recipe: str, noise: float, seed: int) -> pl.DataFrame:
    """Final losses of a 3 x 3 cell sweep on a 7 x 5 grid, from the landscape of ``truth``."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in (2e8, 5e8, 1.2e9):
        for D in (1e10, 1e11, 1e12):
            lr_star, bs_star = float(truth.lr_opt(N, D)), float(truth.bs_tokens_opt(D))
            for i in range(-3, 4):
                for j in range(-2, 3):
                    lr, bs = lr_star * 2 ** ((i + 0.2) / 2), bs_star * 2 ** ((j - 0.3) / 2)
                    loss = float(truth.landscape(N, D, lr, bs)) * (1 + noise * rng.standard_normal())
                    rows.append({"recipe": recipe, "N": N, "D": D, "lr": lr, "bs_tokens": bs, "loss": loss})
    return pl.DataFrame(rows)


def test_synthetic_recipes_with_different_laws_are_told_apart():
    base = synth.TRUTH
    other = replace(base, lr_exp_D=base.lr_exp_D - 0.2)
    df = pl.concat([_recipe_frame(base, "web", 2e-4, 1), _recipe_frame(other, "code", 2e-4, 2)])
    report = stability(df, by="recipe", bootstrap=300, loco=False, methods=("grid",))
    d = report.differences.filter(pl.col("name") == "lr_coefD").row(0, named=True)
    assert d["differ"] and d["p_bootstrap"] < 0.01 and not d["intervals_overlap"]
    assert abs(d["difference"]) == pytest.approx(0.2, abs=0.06)
    # the batch law is the same in both: not told apart
    b = report.differences.filter(pl.col("name") == "bs_coefD").row(0, named=True)
    assert not b["differ"]
    # the bootstrap distributions behind the intervals, per group
    assert report.draws.group_by("group").len().sort("group")["len"].to_list() == [300, 300]
    web = report.draws.filter(pl.col("group") == "web")["lr_coefD"]
    row = report.coefficients.filter((pl.col("group") == "web") & (pl.col("name") == "lr_coefD")).row(0, named=True)
    assert web.std() == pytest.approx(row["sd"], rel=1e-9)


def test_synthetic_recipes_with_identical_laws_are_not_told_apart():
    df = pl.concat([_recipe_frame(synth.TRUTH, "web", 2e-4, 3), _recipe_frame(synth.TRUTH, "code", 2e-4, 4)])
    report = stability(df, by="recipe", bootstrap=300, loco=False, methods=("grid",))
    assert not report.differences["differ"].any(), report.differences
    coefs = report.coefficients.filter(pl.col("name") == "lr_coefD")
    for est in coefs["estimate"]:
        assert est == pytest.approx(synth.TRUTH.lr_exp_D, abs=0.1)


def test_smoothing_modes_enter_the_sensitivity_table(tmp_path):
    cells = (*synth.DEFAULT_CELLS, (960, 9368, 15, 7, 4e10))
    truth = synth.write_sweep(tmp_path / "sweep", cells=cells, points=100, seed=5)
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "sweep")
    frames = {m: db.final_losses(m) for m in ("robust", "steplaw")}
    report = stability(frames, bootstrap=50, loco=False, thresholds=(0.0025, 0.01), methods=("grid",))
    assert set(report.sensitivity["smoothing"]) == {"robust", "steplaw"}
    assert set(report.verdicts["verdict"]) <= {"stable", "unstable"}
    assert len(truth) > 0


def test_bad_arguments(final):
    with pytest.raises(sl.InvalidArgumentError, match="recipe"):
        stability(final, by="recipe")
    with pytest.raises(sl.InvalidArgumentError, match="method"):
        stability(final, methods=("cubic",))
