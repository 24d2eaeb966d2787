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
from steplaw_db.stability import compare, stability

#: Cells of each ``dataset`` (conftest).
CELLS = {"public": 17, "synthetic": SYNTH_CELLS}


def test_public_dense_csv_lr_d_exponent_moves_with_threshold(dense):
    report = stability(dense, bootstrap=200, loco=False, method="steplaw")
    s = report.sensitivity.filter((pl.col("name") == "lr_coefD") & (pl.col("method") == "grid")).sort("threshold")
    by_t = dict(zip(s["threshold"], s["estimate"], strict=True))
    # GUIDE.md: 0.1% -> 0.205, 0.25% -> 0.197, 1% -> 0.133
    assert by_t[0.001] == pytest.approx(0.205, abs=0.01)
    assert by_t[0.0025] == pytest.approx(0.197, abs=0.01)
    assert by_t[0.01] == pytest.approx(0.133, abs=0.01)
    verdict = report.verdicts.filter(pl.col("name") == "lr_coefD").row(0, named=True)
    assert verdict["verdict"] == "differs" and verdict["max_z"] >= 2 and verdict["range_in_sds"] > 2


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
    report = stability(df, by="recipe", bootstrap=300, loco=False, methods=("grid",), method="steplaw")
    d = report.differences.filter(pl.col("name") == "lr_coefD").row(0, named=True)
    assert d["verdict"] == "differs" and d["p"] < 0.01 and d["hi_a"] < d["lo_b"]  # code < web
    assert abs(d["difference"]) == pytest.approx(0.2, abs=0.06)
    assert d["difference_lo"] < d["difference"] < d["difference_hi"] < 0
    # the batch law is the same in both: not told apart
    b = report.differences.filter(pl.col("name") == "bs_coefD").row(0, named=True)
    assert b["verdict"] == "stable"
    # the bootstrap distributions behind the intervals, per group
    assert report.draws.group_by("group").len().sort("group")["len"].to_list() == [300, 300]
    web = report.draws.filter(pl.col("group") == "web")["lr_coefD"]
    row = report.coefficients.filter((pl.col("group") == "web") & (pl.col("name") == "lr_coefD")).row(0, named=True)
    assert web.std() == pytest.approx(row["sd"], rel=1e-9)


def test_synthetic_recipes_with_identical_laws_are_not_told_apart():
    df = pl.concat([_recipe_frame(synth.TRUTH, "web", 2e-4, 3), _recipe_frame(synth.TRUTH, "code", 2e-4, 4)])
    report = stability(df, by="recipe", bootstrap=300, loco=False, methods=("grid",), method="steplaw")
    assert (report.differences["verdict"] == "stable").all(), report.differences
    coefs = report.coefficients.filter(pl.col("name") == "lr_coefD")
    for est in coefs["estimate"]:
        assert est == pytest.approx(synth.TRUTH.lr_exp_D, abs=0.1)
    # by the default vertex law, the true law is stable to every analysis choice: the near-optimal
    # thresholds' estimates (SDs 3-7x the vertex fit's) are judged by their own precision
    report = stability(df, by="recipe", bootstrap=300, loco=False)
    assert set(report.verdicts["verdict"]) == {"stable"}, report.verdicts
    assert (report.differences["verdict"] == "stable").all(), report.differences


@pytest.mark.parametrize("differ", [False, True])
def test_compare_recipes_by_the_default_vertex_law(differ):
    """compare() (the default quadratic vertex law): two recipes of one law are ``stable`` on every
    coefficient; when the code recipe's lr grows slower with D by 0.2, its lr_coefD ``differs``
    and the batch law they share does not."""
    other = replace(synth.TRUTH, lr_exp_D=synth.TRUTH.lr_exp_D - 0.2) if differ else synth.TRUTH
    df = pl.concat([_recipe_frame(synth.TRUTH, "web", 2e-3, 5), _recipe_frame(other, "code", 2e-3, 6)])
    table = compare(df, by="recipe", bootstrap=200)
    assert table.height == 5 and set(table["group_a"]) == {"code"} and set(table["group_b"]) == {"web"}
    assert (table["cells_a"] == 9).all() and (table["cells_b"] == 9).all()
    verdicts = dict(zip(table["name"], table["verdict"], strict=True))
    if differ:
        assert verdicts["lr_coefD"] == "differs", table
        row = table.filter(pl.col("name") == "lr_coefD").row(0, named=True)
        assert row["difference"] == pytest.approx(-0.2, abs=0.06) and row["p"] < 0.01
        assert verdicts["bs_coefD"] == "stable"
    else:
        assert set(verdicts.values()) == {"stable"}, table
    report = stability(df, by="recipe", bootstrap=200, loco=False, methods=("quadratic",))
    assert report.differences.equals(table)  # the benchmark's comparison is compare()'s table


def test_groups_that_cannot_be_fitted_are_rows_with_a_reason():
    """A recipe of 2 cells has no law: its coefficients are rows without numbers, the comparison
    says ``not identified`` and why; the other recipe is still fitted and judged."""
    web = _recipe_frame(synth.TRUTH, "web", 2e-4, 7)
    tiny = _recipe_frame(synth.TRUTH, "tiny", 2e-4, 8).filter(pl.col("D") == 1e10, pl.col("N") < 1e9)
    with pytest.warns(sl.AnalysisWarning, match="recipe=tiny: no law: too few cells"):
        report = stability(pl.concat([web, tiny]), by="recipe", bootstrap=50, loco=True)
    tiny_rows = report.coefficients.filter(pl.col("group") == "tiny")
    assert tiny_rows["estimate"].is_null().all() and tiny_rows["reason"].str.starts_with("too few cells").all()
    assert (report.differences["verdict"] == "not identified").all()
    assert report.differences["reason"].str.starts_with("tiny: too few cells").all()
    v = report.verdicts.filter(pl.col("group") == "web")
    assert set(v["verdict"]) == {"stable"} and report.loco.height == 9


def test_smoothing_modes_enter_the_sensitivity_table(tmp_path):
    cells = (*synth.DEFAULT_CELLS, (960, 9368, 15, 7, 4e10))
    truth = synth.write_sweep(tmp_path / "sweep", cells=cells, points=100, seed=5)
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "sweep")
    frames = {m: db.final_losses(m) for m in ("robust", "steplaw")}
    report = stability(frames, bootstrap=50, loco=False, thresholds=(0.0025, 0.01), methods=("grid",))
    assert set(report.sensitivity["smoothing"]) == {"robust", "steplaw"}
    assert set(report.verdicts["verdict"]) <= {"stable", "differs"}
    assert len(truth) > 0


def test_bad_arguments(final):
    with pytest.raises(sl.InvalidArgumentError, match="recipe"):
        stability(final, by="recipe")
    with pytest.raises(sl.InvalidArgumentError, match="method"):
        stability(final, methods=("cubic",))
