"""The fitting engine against GUIDE.md's reference numbers and independent implementations
(numpy least squares, scipy optimisers, statsmodels when installed), synthetic truths,
and ill-posed designs.

``final`` (conftest) is a synthetic Step Law-format table and, marked ``shared``, the public
dense CSV: checks against independent implementations run on both; GUIDE.md's numbers take
the public data (``dense``, ``steplaw_csv``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.optimize import minimize
from scipy.special import huber
from typer.testing import CliRunner

import steplaw_db as sl
from conftest import SYNTH_CELLS
from references import chinchilla_objective
from steplaw_db import _native, synth
from steplaw_db.cli import app
from steplaw_db.errors import InvalidArgumentError
from steplaw_db.fit import evaluation_summary
from steplaw_db.optima import near_optimal

#: Cells of each ``dataset`` (conftest).
CELLS = {"public": 17, "synthetic": SYNTH_CELLS}


@pytest.fixture(scope="module")
def samples(final) -> pl.DataFrame:
    return near_optimal(final, by=("N", "D"), threshold=0.0025, loss="loss")


@pytest.fixture(scope="module")
def reference(samples) -> sl.HparamLaw:
    return sl.fit_lr_bs(samples)


def _design(samples: pl.DataFrame, on: tuple[str, ...]) -> np.ndarray:
    return np.column_stack([np.ones(len(samples)), *(np.log(samples[v].cast(pl.Float64).to_numpy()) for v in on)])


# --------------------------------------------------------------------------- reference procedure


def test_reference_procedure_reproduces_the_guide(dense):
    samples = near_optimal(dense, by=("N", "D"), threshold=0.0025, loss="loss")
    reference = sl.fit_lr_bs(samples)
    assert len(samples) == 129
    coef = reference.coefficients()
    assert coef["lr_coefN"] == pytest.approx(-0.768, abs=0.01)
    assert coef["lr_coefD"] == pytest.approx(0.197, abs=0.01)
    assert coef["bs_coefD"] == pytest.approx(0.613, abs=0.01)
    # lr = exp(4.37) ..., bs = exp(-1.58) ...: intercepts move ~20x the exponents' spread.
    assert coef["lr_intercept"] == pytest.approx(4.37, abs=0.1)
    assert coef["bs_intercept"] == pytest.approx(-1.58, abs=0.1)
    sd = dict(zip(reference.to_polars()["name"], reference.to_polars()["sd"], strict=True))
    assert sd["lr_coefN"] == pytest.approx(0.05, abs=0.012)
    assert sd["lr_coefD"] == pytest.approx(0.03, abs=0.008)
    assert sd["bs_coefD"] == pytest.approx(0.04, abs=0.01)
    assert reference.info["samples"] == 129 and reference.info["cells"] == 17
    assert reference.samples.shape == (1000, 5)
    assert reference.samples.columns == ["lr_intercept", "lr_coefN", "lr_coefD", "bs_intercept", "bs_coefD"]


def test_reference_procedure_recovers_the_synthetic_truth(synthetic_dense):
    samples = near_optimal(synthetic_dense, by=("N", "D"), threshold=0.0025, loss="loss")
    assert samples.select("N", "D").n_unique() == SYNTH_CELLS
    law = sl.fit_lr_bs(samples)
    assert law.info["samples"] == len(samples) and law.info["cells"] == SYNTH_CELLS
    truth = {"lr_coefN": synth.LR_EXP_N, "lr_coefD": synth.LR_EXP_D, "bs_coefD": synth.BS_EXP_D}
    table = law.to_polars()
    for row in table.filter(pl.col("name").is_in(list(truth))).iter_rows(named=True):
        assert row["estimate"] == pytest.approx(truth[row["name"]], abs=0.05), row
        assert row["lo"] < truth[row["name"]] < row["hi"], row


@pytest.mark.parametrize(("threshold", "d_exponent"), [(0.001, 0.205), (0.01, 0.133)])
def test_the_fit_moves_with_the_threshold_as_the_guide_says(dense, threshold, d_exponent):
    law = sl.fit_lr_bs(near_optimal(dense, threshold=threshold), bootstrap=200)
    assert law.coefficients()["lr_coefD"] == pytest.approx(d_exponent, abs=0.005)


def test_the_law_is_the_bootstrap_mean_unless_asked_for_the_point_fit(samples, reference):
    means = reference.samples.mean().row(0, named=True)
    for name, value in reference.coefficients().items():
        assert value == pytest.approx(means[name], rel=1e-12)
    point = sl.fit_lr_bs(samples, bootstrap=0)
    assert point.info["center"] == "point" and point.samples.is_empty()
    table = reference.to_polars()
    np.testing.assert_allclose(table["point"].to_numpy(), list(point.coefficients().values()), rtol=1e-12)


def test_ols_matches_numpy_lstsq(samples):
    law = sl.fit_lr_bs(samples, bootstrap=0, lr_on=("N", "D"), bs_on=("N", "D"))
    y_lr = np.log(samples["lr"].to_numpy())
    y_bs = np.log(samples["bs_tokens"].cast(pl.Float64).to_numpy())
    X = _design(samples, ("N", "D"))
    np.testing.assert_allclose(law.lr.coef, np.linalg.lstsq(X, y_lr, rcond=None)[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(law.bs.coef, np.linalg.lstsq(X, y_bs, rcond=None)[0], rtol=1e-9, atol=1e-9)
    resid = y_lr - X @ law.lr.coef
    assert law.lr.r2 == pytest.approx(1 - resid @ resid / ((y_lr - y_lr.mean()) @ (y_lr - y_lr.mean())), rel=1e-10)


def test_weighted_ols_matches_scaled_lstsq(samples):
    w = np.linspace(0.2, 3.0, len(samples))
    weighted = samples.with_columns(w=pl.Series(w))
    law = sl.fit_lr_bs(weighted, bootstrap=0, weights="w")
    sw = np.sqrt(w)
    X = _design(samples, ("N", "D"))
    expected = np.linalg.lstsq(X * sw[:, None], np.log(samples["lr"].to_numpy()) * sw, rcond=None)[0]
    np.testing.assert_allclose(law.lr.coef, expected, rtol=1e-9)
    # Zero weights are the same as dropping the rows.
    keep = np.arange(len(samples)) % 3 != 0
    zeroed = samples.with_columns(w=pl.Series(keep.astype(float)))
    a = sl.fit_lr_bs(zeroed, bootstrap=0, weights={"lr": "w", "bs": "w"})
    b = sl.fit_lr_bs(samples.filter(pl.Series(keep)), bootstrap=0)
    np.testing.assert_allclose(a.lr.coef, b.lr.coef, rtol=1e-10)
    np.testing.assert_allclose(a.bs.coef, b.bs.coef, rtol=1e-10)


def _huber_objective_fit(X: np.ndarray, y: np.ndarray, scale: float, t: float, start: np.ndarray) -> np.ndarray:
    def obj(c):
        r = (y - X @ c) / scale
        return huber(t, r).sum(), -(X.T @ np.clip(r, -t, t)) / scale

    return minimize(obj, start, jac=True, method="BFGS", options={"gtol": 1e-12}).x


def _check_huber_against_an_independent_minimiser(frame: pl.DataFrame) -> sl.HparamLaw:
    law = sl.fit_lr_bs(frame, bs_on=None, method="huber", bootstrap=0)
    X = _design(frame, ("N", "D"))
    y = np.log(frame["lr"].to_numpy())
    try:
        import statsmodels.api as sm  # optional: the reference implementation of RLM
    except ImportError:
        sm = None
    if sm is not None:
        ref = sm.RLM(y, X, M=sm.robust.norms.HuberT(t=1.345)).fit(conv="coefs", tol=1e-12)
        np.testing.assert_allclose(law.lr.coef, ref.params, rtol=1e-5, atol=1e-6)
    # The IRLS fixed point minimises the Huber loss at its own final (MAD) scale.
    r = y - X @ law.lr.coef
    assert law.lr.scale == pytest.approx(np.median(np.abs(r)) / 0.6744897501960817, rel=1e-6)
    ref = _huber_objective_fit(X, y, law.lr.scale, 1.345, np.linalg.lstsq(X, y, rcond=None)[0])
    np.testing.assert_allclose(law.lr.coef, ref, rtol=1e-6, atol=1e-6)
    return law


def test_huber_matches_an_independent_minimiser(samples):
    _check_huber_against_an_independent_minimiser(samples)


def test_huber_matches_an_independent_minimiser_with_gross_outliers():
    rng = np.random.default_rng(3)
    n = np.exp(rng.uniform(19, 22, 60))
    d = np.exp(rng.uniform(22, 26, 60))
    lr = np.exp(4.0 - 0.75 * np.log(n) + 0.2 * np.log(d) + rng.normal(0, 0.05, 60))
    lr[:6] *= 8  # gross outliers
    frame = pl.DataFrame({"N": n, "D": d, "lr": lr, "bs_tokens": np.full(60, 1e6)})
    law = _check_huber_against_an_independent_minimiser(frame)
    ols = sl.fit_lr_bs(frame, bs_on=None, bootstrap=0)
    assert abs(law.lr.coef[1] + 0.75) < 0.01 and abs(ols.lr.coef[1] + 0.75) > 0.1


def test_compute_as_regressor_recovers_a_synthetic_law():
    rng = np.random.default_rng(8)
    n = np.exp(rng.uniform(19, 23, 40))
    d = np.exp(rng.uniform(22, 27, 40))
    c = 6 * n * d
    frame = pl.DataFrame(
        {"N": n, "D": d, "lr": 0.3118 * c**-0.125 * np.exp(rng.normal(0, 0.01, 40)), "bs_tokens": 0.292 * c**0.3271}
    )
    law = sl.fit_lr_bs(frame, lr_on=("C",), bs_on=("C",), bootstrap=200)
    assert law.lr.coef[1] == pytest.approx(-0.125, abs=0.005)
    assert law.bs.coef == pytest.approx([math.log(0.292), 0.3271], abs=1e-9)
    assert law.inputs == ("C",)
    explicit = frame.with_columns(C=pl.Series(c * 2))  # an explicit C column wins over 6 N D
    assert sl.fit_lr_bs(explicit, lr_on=("C",), bs_on=None, bootstrap=0).lr.coef[1] == pytest.approx(
        law.lr.point[1], abs=1e-9
    )


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_per_seed(samples):
    a = sl.fit_lr_bs(samples, bootstrap=300, seed=7)
    b = sl.fit_lr_bs(samples, bootstrap=300, seed=7)
    c = sl.fit_lr_bs(samples, bootstrap=300, seed=8)
    assert a.samples.equals(b.samples)
    assert not a.samples.equals(c.samples)


def test_bootstrap_is_the_same_whatever_the_thread_count(final, tmp_path):
    final.write_parquet(tmp_path / "final.parquet")
    script = (
        "import sys, polars as pl, steplaw_db as sl\n"
        "from steplaw_db.optima import near_optimal\n"
        f"f = pl.read_parquet({str(tmp_path / 'final.parquet')!r})\n"
        "for resample in ('rows', 'cells'):\n"
        "    law = sl.fit_lr_bs(near_optimal(f), method='huber', bootstrap=400, resample=resample, seed=3)\n"
        "    law.samples.write_csv(sys.argv[1] + resample)\n"
    )
    outs = []
    for threads in ("1", "2"):
        env = dict(os.environ, RAYON_NUM_THREADS=threads)
        out = tmp_path / f"t{threads}"
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env)
        outs.append([(tmp_path / f"t{threads}{r}").read_text() for r in ("rows", "cells")])
    assert outs[0] == outs[1]


def test_cell_bootstrap_equals_row_bootstrap_with_one_sample_per_cell(samples):
    one_per_cell = samples.sort("loss").unique(subset=["N", "D"], keep="first", maintain_order=True)
    rows = sl.fit_lr_bs(one_per_cell, bootstrap=200, resample="rows", seed=5)
    cells = sl.fit_lr_bs(one_per_cell, bootstrap=200, resample="cells", seed=5)
    assert rows.samples.equals(cells.samples)


def test_cell_bootstrap_is_wider_on_the_public_cells(dense):
    # Resampling cells of the many-sample frame is a different, wider bootstrap: the public
    # cells' near-optimal samples are correlated within a cell (in synthetic data they are not).
    samples = near_optimal(dense, by=("N", "D"), threshold=0.0025, loss="loss")
    wide = sl.fit_lr_bs(samples, bootstrap=500, resample="cells", seed=5).to_polars()
    narrow = sl.fit_lr_bs(samples, bootstrap=500, resample="rows", seed=5).to_polars()
    assert wide["sd"][1] > narrow["sd"][1]


def test_bootstrap_percentile_interval_brackets_the_estimate(reference):
    t = reference.to_polars()
    assert (t["lo"] < t["estimate"]).all() and (t["estimate"] < t["hi"]).all()
    narrow = reference.to_polars(interval=0.5)
    assert ((narrow["hi"] - narrow["lo"]) < (t["hi"] - t["lo"])).all()


# --------------------------------------------------------------------------- the law object


def test_predict_is_vectorised_with_intervals(reference):
    n = np.array([1e8, 1e9, 7e9])
    d = np.array([1e10, 1e11, 1.4e12])
    p = reference.predict(N=n, D=d, seq_len=4096)
    c = reference.coefficients()
    expected_lr = np.exp(c["lr_intercept"]) * n ** c["lr_coefN"] * d ** c["lr_coefD"]
    np.testing.assert_allclose(p["lr"].to_numpy(), expected_lr, rtol=1e-12)
    np.testing.assert_allclose(p["bs"].to_numpy(), p["bs_tokens"].to_numpy() / 4096, rtol=1e-12)
    assert (p["lr_lo"] < p["lr"]).all() and (p["lr"] < p["lr_hi"]).all()
    assert (p["bs_tokens_lo"] < p["bs_tokens"]).all() and (p["bs_tokens"] < p["bs_tokens_hi"]).all()
    # Intervals widen away from the data (1e8..1e9 params, 4e9..1e11 tokens).
    width = (p["lr_hi"] / p["lr_lo"]).to_numpy()
    assert width[2] > width[1]
    scalar = reference.predict(N=7e9, D=1.4e12, interval=None)
    assert scalar.columns == ["N", "D", "lr", "bs_tokens", "bs", "seq_len"]
    assert scalar["lr"][0] == pytest.approx(p["lr"][2], rel=1e-12)
    with pytest.raises(InvalidArgumentError, match="needs D"):
        reference.predict(N=7e9)


def test_save_and_load_round_trip(reference, tmp_path):
    path = tmp_path / "law.json"
    reference.save(path)
    back = sl.HparamLaw.load(path)
    assert back.coefficients() == reference.coefficients()
    assert back.samples.equals(reference.samples)
    assert back.predict(N=[1e9, 7e9], D=[1e11, 1.4e12]).equals(reference.predict(N=[1e9, 7e9], D=[1e11, 1.4e12]))
    assert json.loads(path.read_text())["info"]["method"] == "ols"
    (tmp_path / "bad.json").write_text('{"kind": "something"}')
    with pytest.raises(InvalidArgumentError, match="not a saved law"):
        sl.HparamLaw.load(tmp_path / "bad.json")


# --------------------------------------------------------------------------- ill-posed designs


def test_one_n_only_is_refused(samples):
    one_n = samples.filter(pl.col("N") == samples["N"].min())
    with pytest.raises(InvalidArgumentError, match=r"same N.*not identifiable"):
        sl.fit_lr_bs(one_n)
    # Without N among the regressors the same rows can be fitted, with a warning: 4 cells.
    with pytest.warns(UserWarning, match="only 4 cells"):
        assert sl.fit_lr_bs(one_n, lr_on=("D",), bootstrap=0).lr.regressors == ("D",)


def test_too_few_cells_are_refused(samples):
    cells = samples.select("N", "D").unique().sort("N", "D").head(3)
    few = samples.join(cells, on=["N", "D"])
    with pytest.raises(InvalidArgumentError, match="too few cells"):
        sl.fit_lr_bs(few)


def test_collinear_regressors_are_refused():
    n = np.repeat([1e8, 2e8, 4e8, 8e8, 1.6e9], 3)
    frame = pl.DataFrame({"N": n, "D": 20 * n, "lr": np.linspace(1e-3, 2e-3, 15), "bs_tokens": np.full(15, 1e6)})
    with pytest.raises(InvalidArgumentError, match="collinear"):
        sl.fit_lr_bs(frame, bs_on=None)


def test_bad_inputs_are_refused(samples):
    with pytest.raises(InvalidArgumentError, match="negative"):
        sl.fit_lr_bs(samples.with_columns(lr=pl.when(pl.int_range(pl.len()) == 5).then(0.0).otherwise(pl.col("lr"))))
    with pytest.raises(InvalidArgumentError, match="no column"):
        sl.fit_lr_bs(samples.drop("N"))
    with pytest.raises(InvalidArgumentError, match="unknown regression method"):
        sl.fit_lr_bs(samples, method="lasso")
    with pytest.raises(InvalidArgumentError, match="resampling"):
        sl.fit_lr_bs(samples, resample="blocks")
    with pytest.raises(InvalidArgumentError, match="lr_on"):
        sl.fit_lr_bs(samples, lr_on=("N", "width"))


# --------------------------------------------------------------------------- evaluation


def test_step_law_nearest_grid_median_on_the_public_cells(dense):
    rows = sl.evaluate(sl.laws.step_law(), dense)
    assert len(rows) == 17
    assert rows["rel_error"].median() * 100 == pytest.approx(0.067, abs=0.003)
    assert (rows["rel_error"] >= 0).all()


def test_evaluate_finds_the_nearest_grid_point_in_log_space():
    # One cell, a 3 x 3 grid; the law points between lr 1e-3 and 2e-3, closer to 2e-3 in log.
    lrs, bss = [1e-3, 2e-3, 4e-3], [1e5, 2e5, 4e5]
    grid = [(lr, bs, 3.0 + i + 0.1 * j) for i, lr in enumerate(lrs) for j, bs in enumerate(bss)]
    final = pl.DataFrame(
        {
            "N": [1e8] * 9,
            "D": [1e10] * 9,
            "lr": [g[0] for g in grid],
            "bs_tokens": [g[1] for g in grid],
            "loss": [g[2] for g in grid],
        }
    )
    law = sl.HparamLaw(
        sl.fit.PowerLaw("lr", ("N",), np.array([math.log(1.5e-3 * 1.1), 0.0])),
        sl.fit.PowerLaw("bs_tokens", ("D",), np.array([math.log(3.9e5), 0.0])),
    )
    row = sl.evaluate({"mine": law}, final).row(0, named=True)
    got = (row["law"], row["lr_at"], row["bs_tokens_at"], row["loss_at"], row["loss_min"])
    assert got == ("mine", 2e-3, 4e5, 4.2, 3.0)
    assert row["rel_error"] == pytest.approx(1.2 / 3.0)
    with pytest.raises(InvalidArgumentError, match="unknown evaluation method"):
        sl.evaluate(law, final, method="cubic")


def test_evaluate_on_the_quadratic_surface_between_grid_points():
    # An exactly quadratic landscape in (ln lr, ln bs): the surface gives the true loss at the
    # law's prediction, which lies between grid points.
    lr_star, bs_star, a, b = 2e-3, 5e5, 0.004, 0.007
    rows = []
    for i in range(-3, 4):
        for j in range(-2, 3):
            lr, bs = lr_star * 2 ** ((i + 0.3) / 2), bs_star * 2 ** ((j - 0.2) / 2)
            loss = 2.5 * (1 + a * math.log(lr / lr_star) ** 2 + b * math.log(bs / bs_star) ** 2)
            rows.append({"N": 1e8, "D": 1e10, "lr": lr, "bs_tokens": bs, "loss": loss})
    final = pl.DataFrame(rows)
    lr_hat, bs_hat = 2.6e-3, 4.1e5
    law = sl.HparamLaw(
        sl.fit.PowerLaw("lr", ("N",), np.array([math.log(lr_hat), 0.0])),
        sl.fit.PowerLaw("bs_tokens", ("D",), np.array([math.log(bs_hat), 0.0])),
    )
    row = sl.evaluate({"mine": law}, final, method="quadratic").row(0, named=True)
    truth = 2.5 * (1 + a * math.log(lr_hat / lr_star) ** 2 + b * math.log(bs_hat / bs_star) ** 2)
    assert row["loss_at"] == pytest.approx(truth, rel=1e-9)
    assert row["rel_error"] == pytest.approx(truth / final["loss"].min() - 1, rel=1e-6)
    nearest = sl.evaluate({"mine": law}, final).row(0, named=True)
    assert nearest["loss_at"] != pytest.approx(truth, rel=1e-6)  # the grid point is elsewhere


def test_laws_that_give_one_quantity_take_the_other_at_the_cell_optimum(final):
    rows = sl.evaluate(["minicpm", "microsoft"], final)
    assert set(rows.filter(pl.col("law") == "minicpm")["fixed"]) == {"lr"}
    assert set(rows.filter(pl.col("law") == "microsoft")["fixed"]) == {"bs"}


# --------------------------------------------------------------------------- the loss law


def _epoch_truth():
    return {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def _chinchilla_frame(noise: float, seed: int = 0) -> pl.DataFrame:
    t = _epoch_truth()
    rng = np.random.default_rng(seed)
    n, d = np.meshgrid(1e8 * 3.0 ** np.arange(6), 2e9 * 3.0 ** np.arange(6))
    n, d = n.ravel(), d.ravel()
    loss = (t["E"] + t["A"] / n ** t["alpha"] + t["B"] / d ** t["beta"]) * np.exp(rng.normal(0, noise, n.size))
    return pl.DataFrame({"N": n, "D": d, "loss": loss})


def test_chinchilla_objective_and_gradient_match_a_numpy_implementation(final):
    cells = final.sort("loss").unique(subset=["N", "D"], keep="first")
    N, D, L = (cells[c].cast(pl.Float64).to_numpy() for c in ("N", "D", "loss"))
    f = chinchilla_objective(N, D, L)
    for p in ([2.0, 5.0, 0.1, 0.2, 0.3], [10.0, 15.0, -0.5, 0.6, 0.7], [0.0, 0.0, 1.0, 0.0, 0.0]):
        value, grad = _native.chinchilla_objective(p, N.tolist(), D.tolist(), L.tolist())
        ref_value, ref_grad = f(np.array(p))
        assert value == pytest.approx(ref_value, rel=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)


@pytest.mark.slow  # scipy: 7-35 s on 2 busy cores
def test_chinchilla_fit_agrees_with_scipy_lbfgsb_from_the_same_starts(final):
    cells = final.sort("loss").unique(subset=["N", "D"], keep="first")
    N, D, L = (cells[c].cast(pl.Float64).to_numpy() for c in ("N", "D", "loss"))
    starts = np.array(_native.chinchilla_grid())[::300]  # 15 starts spread over the grid (scipy is slow)
    f = chinchilla_objective(N, D, L)
    # scipy's default ftol is relative to max(|f|, 1): with f ~ 1e-5 it would stop early.
    ref = min(
        (
            minimize(f, s, jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
            for s in starts
        ),
        key=lambda r: r.fun,
    )
    law = sl.fit_loss_law(final, starts=starts.tolist())
    assert law.objective == pytest.approx(ref.fun, rel=1e-8)
    a, b, e, alpha, beta = ref.x
    expected = {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}
    for k, v in expected.items():
        assert law.params[k] == pytest.approx(v, rel=1e-4), k


def test_chinchilla_recovers_a_noiseless_truth_from_the_full_grid():
    law = sl.fit_loss_law(_chinchilla_frame(0.0))
    assert law.info["starts"] == 4500
    for k, v in _epoch_truth().items():
        assert law.params[k] == pytest.approx(v, rel=1e-4), k


def test_chinchilla_bootstrap_intervals_cover_a_noisy_truth():
    law = sl.fit_loss_law(_chinchilla_frame(0.002, seed=1), bootstrap=200, seed=3)
    table = law.to_polars()
    truth = _epoch_truth()
    for row in table.iter_rows(named=True):
        assert row["lo"] <= truth[row["param"]] <= row["hi"], row
    assert law.params["alpha"] == pytest.approx(0.3478, abs=0.05)
    p = law.predict(N=[1e9, 7e9], D=[2e10, 1.4e12])
    assert (p["loss_lo"] < p["loss"]).all() and (p["loss"] < p["loss_hi"]).all()
    again = sl.fit_loss_law(_chinchilla_frame(0.002, seed=1), bootstrap=200, seed=3)
    assert again.samples.equals(law.samples)


def test_loss_law_reduces_cells_to_their_best_run_and_round_trips(final, dataset, tmp_path):
    law = sl.fit_loss_law(final)
    assert law.info["points"] == CELLS[dataset]
    p = law.predict(N=[2.1e8], D=[1e11], interval=None)
    best = final.filter((pl.col("N") == 214663680) & (pl.col("D") == 100000000000))["loss"].min()
    assert p["loss"][0] == pytest.approx(best, rel=0.01)
    law.save(tmp_path / "loss.json")
    back = sl.LossLaw.load(tmp_path / "loss.json")
    assert back.params == law.params


def test_loss_law_refuses_unidentifiable_data():
    frame = _chinchilla_frame(0.0).filter(pl.col("N") < 4e8)
    with pytest.raises(InvalidArgumentError, match="3 distinct values of N"):
        sl.fit_loss_law(frame)
    with pytest.raises(InvalidArgumentError, match="too few points"):
        sl.fit_loss_law(_chinchilla_frame(0.0).head(4), per_cell=None)
    with pytest.raises(InvalidArgumentError, match="unknown loss-law form"):
        sl.fit_loss_law(_chinchilla_frame(0.0), form="kaplan")


# --------------------------------------------------------------------------- command line


def test_cli_fit_lr_bs_and_evaluate(steplaw_csv, tmp_path):
    runner = CliRunner()
    out = tmp_path / "law.json"
    r = runner.invoke(
        app, ["fit", "lr-bs", "--input", str(steplaw_csv), "--method", "steplaw", "--bootstrap", "200", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "129 near-optimal samples" in r.output and "17 cells" in r.output
    law = sl.HparamLaw.load(out)
    assert law.coefficients()["lr_coefN"] == pytest.approx(-0.768, abs=0.015)
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--input",
            str(steplaw_csv),
            "--law",
            f"step-law,{out}",
            "--loco",
            "none",
            "-o",
            str(tmp_path / "ev.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = pl.read_csv(tmp_path / "ev.csv")
    assert set(rows["law"]) == {"step-law", "fitted"}
    assert "0.0669" in r.output
    r = runner.invoke(app, ["fit", "lr-bs", "--input", str(steplaw_csv), "--regression", "nope"])
    assert r.exit_code == 2 and "unknown regression method" in r.output
    r = runner.invoke(app, ["fit", "lr-bs", "--input", str(steplaw_csv), "--method", "nope"])
    assert r.exit_code == 2 and "unknown method" in r.output


def test_cli_fit_loss(steplaw_csv, tmp_path):
    r = CliRunner().invoke(app, ["fit", "loss", "--input", str(steplaw_csv), "-o", str(tmp_path / "loss.json")])
    assert r.exit_code == 0, r.output
    assert "17 cells" in r.output and "4500 starts" in r.output
    assert sl.LossLaw.load(tmp_path / "loss.json").info["points"] == 17


def test_cli_reads_a_parquet_final_loss_table(final, tmp_path):
    path = tmp_path / "final.parquet"
    final.select("N", "D", "lr", "bs_tokens", "loss").write_parquet(path)
    r = CliRunner().invoke(app, ["evaluate", "--input", str(path), "--law", "step-law"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["evaluate", "--input", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2 and "no such file" in r.output


def test_cli_reads_the_store_without_input(steplaw_csv, tmp_path):
    db = tmp_path / "db"
    runner = CliRunner()
    assert runner.invoke(app, ["--db", str(db), "import-table", str(steplaw_csv)]).exit_code == 0
    r = runner.invoke(app, ["--db", str(db), "fit", "lr-bs", "--method", "steplaw", "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    assert "129 near-optimal samples" in r.output and "17 cells" in r.output
    r = runner.invoke(app, ["--db", str(db), "evaluate", "--law", "step-law"])
    assert r.exit_code == 0 and "0.0669" in r.output, r.output


def test_cli_fit_and_evaluate_a_synthetic_table_from_the_file_and_from_the_store(
    synthetic_csv, synthetic_dense, tmp_path
):
    runner = CliRunner()
    near = near_optimal(synthetic_dense).height
    out = tmp_path / "law.json"
    r = runner.invoke(
        app,
        ["fit", "lr-bs", "--input", str(synthetic_csv), "--method", "steplaw", "--bootstrap", "200", "-o", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert f"{near} near-optimal samples" in r.output and f"{SYNTH_CELLS} cells" in r.output
    assert sl.HparamLaw.load(out).coefficients()["lr_coefN"] == pytest.approx(synth.LR_EXP_N, abs=0.05)
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--input",
            str(synthetic_csv),
            "--law",
            f"step-law,{out}",
            "--loco",
            "none",
            "-o",
            str(tmp_path / "ev.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = pl.read_csv(tmp_path / "ev.csv")
    assert set(rows["law"]) == {"step-law", "fitted"} and rows.height == 2 * SYNTH_CELLS
    assert rows.sort("law", "N", "D").equals(
        sl.evaluate({"step-law": "step-law", "fitted": sl.HparamLaw.load(out)}, synthetic_dense)
        .select(rows.columns)
        .sort("law", "N", "D"),
    )
    r = runner.invoke(app, ["fit", "loss", "--input", str(synthetic_csv), "-o", str(tmp_path / "loss.json")])
    assert r.exit_code == 0, r.output
    assert f"{SYNTH_CELLS} cells" in r.output and "4500 starts" in r.output
    assert sl.LossLaw.load(tmp_path / "loss.json").params["E"] == pytest.approx(synth.LOSS_E, rel=0.05)
    # The same table imported into a store: the same samples and cells without --input.
    db = tmp_path / "db"
    assert runner.invoke(app, ["--db", str(db), "import-table", str(synthetic_csv)]).exit_code == 0
    r = runner.invoke(app, ["--db", str(db), "fit", "lr-bs", "--method", "steplaw", "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    assert f"{near} near-optimal samples" in r.output and f"{SYNTH_CELLS} cells" in r.output
    r = runner.invoke(app, ["fit", "lr-bs", "--input", str(synthetic_csv), "--regression", "nope"])
    assert r.exit_code == 2 and "unknown regression method" in r.output


def _loco_sweep(tmp_path: Path, **kw: object) -> pl.DataFrame:
    shapes = ((960, 9368, 15, 7), (1280, 9472, 10, 10), (2048, 8192, 16, 16))
    cells = [(*shape, d) for shape in shapes for d in (1e10, 3e10, 1e11)]
    synth.write_sweep(tmp_path / "runs", cells=cells, points=10, diverge=False, **kw)  # type: ignore[arg-type]
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "runs")
    return db.final_losses()


def test_own_law_left_one_cell_out_beside_the_published_laws(tmp_path):
    """evaluate(loco=...): the user's own law, fitted without each cell, scored on it. On a sweep
    that follows its law exactly the vertex law's gap is tiny (the grid's half step); with 0.5%
    noise on every log entry and 0.3% run-to-run noise it is several times larger."""
    exact = _loco_sweep(tmp_path / "exact", noise=0.0)
    noisy = _loco_sweep(tmp_path / "noisy", noise=0.005, final_noise=0.003)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sl.AnalysisWarning)
        rows = {
            name: sl.evaluate("step-law", f, loco=("quadratic", "steplaw"))
            for name, f in (("exact", exact), ("noisy", noisy))
        }
    summary = {name: evaluation_summary(r) for name, r in rows.items()}
    for name in rows:
        labels = summary[name]["law"].to_list()
        assert labels == ["step-law", "own (LOCO, quadratic)", "own (LOCO, steplaw)"], labels
        assert (summary[name]["cells"] == 9).all()
    own = rows["exact"].filter(pl.col("law") == "own (LOCO, quadratic)")
    assert own["reason"].is_null().all() and own["fixed"].is_null().all() and own["rel_error"].max() < 6e-4, (
        own
    )  # at most the grid's half step
    # where the cell's quadratic is trustworthy the interpolated gap is the exact law's: ~0
    assert own["rel_error_quadratic"].is_not_null().all() and own["rel_error_quadratic"].abs().max() < 1e-4
    # the law without each cell predicts its optimum (truth: Step Law's)
    truth = synth.lr_opt(own["N"].to_numpy(), own["D"].to_numpy())
    assert np.abs(np.log(own["lr_pred"].to_numpy() / truth)).max() < 0.02
    gap = {n: s.filter(pl.col("law") == "own (LOCO, quadratic)")["median_%"][0] for n, s in summary.items()}
    assert gap["noisy"] > 3 * gap["exact"], gap
    assert "lr_edge" in own.columns and summary["exact"]["edge_cells"].to_list() == [0, 0, 0]


def test_own_law_left_one_cell_out_says_when_it_cannot_be_fitted(tmp_path):
    """Four cells: without one of them three are left for the lr law's three coefficients, which
    the fit refuses: each row says so, and the published law is still scored."""
    synth.write_sweep(tmp_path / "runs", points=10, diverge=False)
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sl.AnalysisWarning)
        rows = sl.evaluate("step-law", db.final_losses(), loco=("quadratic",))
    own = rows.filter(pl.col("law") == "own (LOCO, quadratic)")
    assert own.height == 4 and own["reason"].is_not_null().all(), own
    assert own["reason"].str.starts_with("no law without this cell: no lr law").all(), own
    assert own["rel_error"].is_null().all()  # never scored at the held-out cell's own best lr
    s = evaluation_summary(rows).filter(pl.col("law") == "own (LOCO, quadratic)").row(0, named=True)
    assert s["cells"] == 0 and s["not_fitted"] == 4
