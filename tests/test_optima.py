"""Final losses and per-cell optima, against scipy, plain Polars and synthetic truths."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.ndimage import gaussian_filter1d
from typer.testing import CliRunner

import steplaw_db as sl
from conftest import SYNTH_BS_LEVELS, SYNTH_CELLS, SYNTH_LR_LEVELS, SYNTH_ROWS
from steplaw_db import synth
from steplaw_db.cli import app
from steplaw_db.optima import landscape, near_optimal, optima, snap_levels

ONE_CELL = [(960, 9368, 15, 7, 2e10)]
#: Runs of each ``dataset`` (conftest).
ROWS = {"public": 1911, "synthetic": SYNTH_ROWS}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A small ingested synthetic sweep: (store, truth table)."""
    root = tmp_path_factory.mktemp("swept")
    truth = synth.write_sweep(root / "sweep", cells=synth.DEFAULT_CELLS, points=400, noise=0.002, seed=3)
    db = sl.open(root / "db")
    assert db.ingest(root / "sweep").ok
    return db, truth


# -- final losses ---------------------------------------------------------------------------


def _steplaw_reference(steps: np.ndarray, loss: np.ndarray) -> float:
    """log_analysis.py's smooth loss, written with scipy as their code does."""
    steps, loss = steps[-32768:], loss[-32768:]
    window = min(100, 0.01 * len(loss))
    return float(gaussian_filter1d(loss, sigma=window / (steps[1] - steps[0]))[-1])


@pytest.mark.parametrize("entries", [37, 250, 5000, 40000])
def test_steplaw_mode_equals_scipy(tmp_path, entries):
    rng = np.random.default_rng(entries)
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    steps = np.arange(1, entries + 1) * 10
    loss = 2.5 + 3.0 / np.sqrt(steps) + 0.02 * rng.standard_normal(entries)
    (run / "m.csv").write_text("step,loss\n" + "".join(f"{s},{float(v)!r}\n" for s, v in zip(steps, loss, strict=True)))
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    got = db.final_losses("steplaw")
    assert got["loss"].item() == pytest.approx(_steplaw_reference(steps, loss), rel=1e-9, abs=1e-9)
    assert got["raw_loss"].item() == loss[-1]


def test_modes_and_budgets(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    steps = np.arange(1, 1001)
    loss = 3.0 - 1e-4 * steps  # a straight line: every unbiased mode reads it exactly
    (run / "m.csv").write_text("step,loss\n" + "".join(f"{s},{float(v)!r}\n" for s, v in zip(steps, loss, strict=True)))
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "runs", set=["bs=2", "seq_len=8", "steps=1000"])
    assert db.final_losses()["loss"].item() == pytest.approx(2.9, abs=1e-12)
    assert db.final_losses("none")["loss"].item() == pytest.approx(2.9)
    assert db.final_losses("robust", at=500)["loss"].item() == pytest.approx(2.95, abs=1e-12)
    assert db.final_losses("robust", at_fraction=0.25)["step"].item() == 250
    # tokens = step x 16 (bs 2 x seq_len 8)
    assert db.final_losses("none", at_tokens=16 * 100)["step"].item() == 100
    tail = db.final_losses("tail-mean", width=100, unit="steps")["loss"].item()
    assert tail == pytest.approx(np.mean(loss[-100:]))
    ema = db.final_losses("ema", weight=0.9)["loss"].item()
    w, acc = 0.9, 0.0
    for x in loss:
        acc = w * acc + (1 - w) * x
    assert ema == pytest.approx(acc / (1 - w ** len(loss)))
    g = db.final_losses("gaussian", width=50, unit="steps")["loss"].item()
    u = (1000 - steps[steps >= 1000 - 200]) / 50
    assert g == pytest.approx(np.average(loss[steps >= 800], weights=np.exp(-0.5 * u * u)))
    with pytest.raises(sl.InvalidArgumentError, match="smoothing"):
        db.final_losses("median")
    with pytest.raises(sl.InvalidArgumentError):
        db.final_losses(at=10, at_fraction=0.5)
    with pytest.raises(sl.InvalidArgumentError, match="width"):
        db.final_losses("robust", width=-1)


def test_default_beats_steplaw_on_noisy_curves_with_known_truth(swept):
    db, truth = swept
    err = {}
    for mode in ("robust", "steplaw"):
        j = truth.filter(~pl.col("diverged")).join(db.final_losses(mode).select("name", "loss"), on="name")
        e = (j["loss"] / j["true_final_loss"] - 1).to_numpy()
        err[mode] = float(np.sqrt(np.mean(e**2)))
    assert err["robust"] < 0.5 * err["steplaw"], err


def test_summary_only_runs_use_imported_smooth_loss(tmp_path, final_csv, final, dataset):
    db = sl.open(tmp_path / "db")
    db.import_table(final_csv)
    f = db.final_losses()
    assert f.height == ROWS[dataset] and (f["origin"] == "imported").all()
    j = f.join(final.select(pl.col("exp_name").alias("name"), pl.col("loss").alias("csv")), on="name")
    assert j.height == f.height
    assert (j["loss"] - j["csv"]).abs().max() < 1e-12
    assert db.final_losses(at=100).height == 0  # no curve: no loss at an earlier budget


def test_diverged_runs_are_marked_and_left_out(swept):
    db, truth = swept
    f = db.final_losses()
    diverged = set(truth.filter(pl.col("diverged"))["name"])
    assert diverged and set(f.filter(pl.col("status") == "diverged")["name"]) == diverged
    cells = optima(f)
    assert cells["runs"].sum() == f.height - len(diverged)
    assert optima(f, include=("diverged",))["runs"].sum() > cells["runs"].sum() - 1


# -- optima ---------------------------------------------------------------------------------


def test_public_dense_cells(dense):
    cells = optima(dense)
    assert cells.height == 17
    plain = dense.group_by("N", "D").agg(pl.col("loss").min().alias("plain")).sort("N", "D")
    assert (cells.sort("N", "D")["loss_min"] - plain["plain"]).abs().max() == 0
    assert near_optimal(dense, threshold=0.0025).height == 129
    assert cells["near_optimal"].sum() == 129
    # 0.000345 and 0.0003453 are one level; the grid has 12 LR levels where complete
    assert cells["lr_levels"].max() == 12
    assert cells.filter(pl.col("runs") == 47)["lr_levels"].item() == 5
    # the plateau widens with the band
    assert (cells["lr_hi_1%"] / cells["lr_lo_1%"] >= cells["lr_hi_0.25%"] / cells["lr_lo_0.25%"]).all()


def test_synthetic_cells(synthetic_dense):
    cells = optima(synthetic_dense)
    assert cells.height == SYNTH_CELLS
    assert (cells["runs"] == SYNTH_LR_LEVELS * SYNTH_BS_LEVELS).all()
    assert (cells["lr_levels"] == SYNTH_LR_LEVELS).all()
    plain = synthetic_dense.group_by("N", "D").agg(pl.col("loss").min().alias("plain")).sort("N", "D")
    assert (cells.sort("N", "D")["loss_min"] - plain["plain"]).abs().max() == 0
    assert cells["near_optimal"].sum() == near_optimal(synthetic_dense, threshold=0.0025).height
    # the grid optimum is a grid point next to the true optimum (the grid is in half-octaves)
    for row in cells.iter_rows(named=True):
        assert abs(math.log(row["lr_grid"] / synth.TRUTH.lr_opt(row["N"], row["D"]))) < 1.5 * math.log(2), row
    assert (cells["lr_hi_1%"] / cells["lr_lo_1%"] >= cells["lr_hi_0.25%"] / cells["lr_lo_0.25%"]).all()


def test_snap_levels():
    s = pl.Series([0.000345, 0.0003453, 0.0003453, 0.00049, 0.001, None])
    assert snap_levels(s).to_list() == [0.0003453, 0.0003453, 0.0003453, 0.00049, 0.001, None]


def _quadratic_frame(noise: float, seed: int = 0) -> tuple[pl.DataFrame, float, float]:
    """One cell whose loss is exactly quadratic in (ln lr, ln bs), optimum between grid points."""
    lr_star, bs_star = 2.3e-3, 7.1e5
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(-3, 4):
        for j in range(-2, 3):
            lr, bs = lr_star * 2 ** ((i + 0.3) / 2), bs_star * 2 ** ((j - 0.4) / 2)
            x, y = math.log(lr / lr_star), math.log(bs / bs_star)
            loss = 2.5 * (1 + synth.LANDSCAPE_A * x * x + synth.LANDSCAPE_B * y * y)
            rows.append(
                {"N": 1e9, "D": 2e10, "lr": lr, "bs_tokens": bs, "loss": loss * (1 + noise * rng.standard_normal())}
            )
    return pl.DataFrame(rows), lr_star, bs_star


def test_quadratic_vertex_recovers_true_optimum():
    df, lr_star, bs_star = _quadratic_frame(noise=0.0)
    cell = optima(df, method="quadratic", fit_window=1.0).row(0, named=True)
    assert cell["lr_quad"] == pytest.approx(lr_star, rel=1e-6)
    assert cell["bs_tokens_quad"] == pytest.approx(bs_star, rel=1e-6)
    assert cell["convex"] and cell["lr_opt"] == cell["lr_quad"]
    # curvature of loss / (grid minimum), the grid minimum sitting a little above 2.5
    assert cell["h_lr_lr"] == pytest.approx(2 * synth.LANDSCAPE_A * 2.5 / cell["loss_min"], rel=1e-6)
    # the grid rule can only land on a grid point
    assert cell["lr_grid"] != pytest.approx(lr_star, rel=0.05)
    # small noise: within 2%, and the bootstrap interval covers the truth
    df, lr_star, bs_star = _quadratic_frame(noise=2e-4, seed=1)
    cell = optima(df, method="quadratic", fit_window=1.0, bootstrap=400).row(0, named=True)
    assert cell["lr_quad"] == pytest.approx(lr_star, rel=0.02)
    assert cell["bs_tokens_quad"] == pytest.approx(bs_star, rel=0.02)
    assert cell["lr_quad_lo"] < lr_star < cell["lr_quad_hi"]
    assert cell["bs_tokens_quad_lo"] < bs_star < cell["bs_tokens_quad_hi"]


def test_quadratic_on_ingested_synthetic_sweep(swept):
    db, truth = swept
    cells = optima(db.final_losses(), method="quadratic").sort("N", "D")
    expect = truth.group_by("N").agg(pl.col("lr_opt", "bs_tokens_opt").first())
    assert cells.height == 4
    for row in cells.iter_rows(named=True):
        lr_star = synth.TRUTH.lr_opt(row["N"], row["D"])
        bs_star = synth.TRUTH.bs_tokens_opt(row["D"])
        assert row["lr_opt"] == pytest.approx(lr_star, rel=0.1), row
        assert row["bs_tokens_opt"] == pytest.approx(bs_star, rel=0.1), row
    assert expect.height == 2


def test_flags_edge_and_not_convex():
    df, _, _ = _quadratic_frame(noise=0.0)
    # keep only LRs at or above the optimum's level: the minimum sits on the lowest LR
    edge = df.filter(pl.col("lr") >= df["lr"].unique().sort()[4])
    assert "lr-edge" in optima(edge)["flags"].item()
    # a saddle: curved up along lr, down along bs
    saddle = df.with_columns(
        loss=2.5 + 0.01 * (pl.col("lr") / 2.3e-3).log() ** 2 - 0.001 * (pl.col("bs_tokens") / 7.1e5).log() ** 2
    )
    cell = optima(saddle, fit_window=1.0).row(0, named=True)
    assert "not-convex" in cell["flags"] and "bs-edge" in cell["flags"] and not cell["convex"]


#: The cell N=214663680, D=1e11 of each ``dataset``: lr levels x batch levels.
LANDSCAPE_GRID = {"public": (12, 10), "synthetic": (SYNTH_LR_LEVELS, SYNTH_BS_LEVELS)}


def test_landscape(final, dataset):
    n_lr, n_bs = LANDSCAPE_GRID[dataset]
    cell = {"N": 214663680, "D": 100_000_000_000}
    long = landscape(final, cell)
    assert long.height == {"public": 120, "synthetic": n_lr * n_bs}[dataset] and long["rel_loss"].min() == 0
    assert long["lr_level"].max() == n_lr - 1 and long["bs_level"].max() == n_bs - 1
    wide = landscape(final, cell, wide=True)
    assert wide.height == n_lr and wide.width == n_bs + 1
    with pytest.raises(sl.InvalidArgumentError, match="no runs"):
        landscape(final, {"N": 1, "D": 1})


def test_bad_frames_raise_clear_errors(final):
    with pytest.raises(sl.InvalidArgumentError, match="loss"):
        optima(final.drop("loss"))
    with pytest.raises(sl.InvalidArgumentError, match="method"):
        optima(final, method="cubic")
    with pytest.raises(sl.InvalidArgumentError, match="no usable runs"):
        optima(final.with_columns(loss=pl.lit(float("nan"))))


# -- CLI ------------------------------------------------------------------------------------


def test_cli_final_and_optima(swept, tmp_path):
    db, _ = swept
    runner = CliRunner()
    out = tmp_path / "final.csv"
    res = runner.invoke(app, ["--db", str(db.path), "final", "--smooth", "steplaw", "--format", "csv", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert pl.read_csv(out).height == db.runs().height
    out = tmp_path / "optima.parquet"
    res = runner.invoke(
        app, ["--db", str(db.path), "optima", "--method", "quadratic", "--format", "parquet", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert pl.read_parquet(out).height == 4
    res = runner.invoke(app, ["--db", str(db.path), "optima"])
    assert res.exit_code == 0 and "loss_min" in res.output
    res = runner.invoke(app, ["--db", str(db.path), "optima", "--method", "nope"])
    assert res.exit_code == 2


def _snap_reference(values: np.ndarray, tolerance: float) -> np.ndarray:
    """snap_levels as first written, one group at a time: sorted distinct values, a new level at
    each relative gap above the tolerance, each level's most frequent value (smallest on ties)."""
    levels, counts = np.unique(values, return_counts=True)
    group = np.concatenate([[0], np.cumsum(np.abs(np.diff(levels)) > tolerance * np.abs(levels[:-1]))])
    rep = np.empty_like(levels)
    for g in range(group[-1] + 1):
        members = np.flatnonzero(group == g)
        rep[members] = levels[members[np.argmax(counts[members])]]
    return rep[np.searchsorted(levels, values)]


@pytest.mark.parametrize("seed", range(5))
def test_snapping_all_groups_at_once_equals_snapping_each_group(seed):
    from steplaw_db.optima import _snap

    rng = np.random.default_rng(seed)
    n = 400
    base = rng.choice([1e-3, 2e-3, 4e-3, 8e-3], n) * (1 + rng.choice([0, 1e-6, 3e-6, 2e-3], n))
    df = pl.DataFrame(
        {
            "g1": rng.choice(["a", "b", None], n).tolist(),
            "g2": rng.choice([1, 2, 3], n),
            "lr": base,
            "D": rng.choice([10**10, 10**10 + 20_000, 2 * 10**10], n),
        }
    )
    got = _snap(df, ["g1", "g2"], ["lr", "D"], 1e-5)
    for (_, _), part in df.with_row_index().group_by("g1", "g2"):
        idx = part["index"].to_numpy()
        for c in ("lr", "D"):
            assert (got[c].to_numpy()[idx] == _snap_reference(part[c].to_numpy(), 1e-5)).all()
