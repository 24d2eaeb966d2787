"""The options of ``steplaw-db synth`` (the sweep shapes of ``synth.write_sweep``: recipes,
diverging runs, run-to-run noise, the high-lr plateau) and ``steplaw-db stability --reference``:
each one changes what is written or reported as its library parameter does, and a bad value is
a usage error (exit 2) that names the option."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
from typer.testing import CliRunner

from steplaw_db import synth
from steplaw_db._typing import DEFAULT_LAW_METHOD
from steplaw_db.cli import app
from steplaw_db.optima import DEFAULT_THRESHOLD

#: A small sweep: synth's default cells (4) x 3 lr x 3 batches, 10 log entries a run.
SMALL = ["--n-lr", "3", "--n-bs", "3", "--points", "10"]


def _run(*args: str) -> str:
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout


def _sweep_runs(tmp_path, name: str, *options: str) -> pl.DataFrame:
    """``synth`` with ``options``, ingested: the store's runs table (``steplaw-db runs``)."""
    out, db = tmp_path / name, str(tmp_path / f"{name}.db")
    _run("synth", str(out), *SMALL, *options)
    _run("--db", db, "ingest", str(out))
    return pl.read_csv(io.StringIO(_run("--db", db, "runs", "--format", "csv")))


def test_recipes_give_runs_of_each_recipe(tmp_path):
    runs = _sweep_runs(tmp_path, "r", "--recipes", "web,code")
    assert runs.group_by("recipe").len().sort("recipe").rows() == [("code", 36), ("web", 36)]
    assert all(f"/{r}/" in s for r, s in runs.select("recipe", "source").rows())
    truth = json.loads((tmp_path / "r" / "truth.json").read_text())
    assert sorted(truth["recipes"]) == ["code", "web"]


def test_diverge_runs_adds_that_many_diverged_runs(tmp_path):
    base = _sweep_runs(tmp_path, "calm")
    more = _sweep_runs(tmp_path, "three", "--diverge-runs", "3")
    diverged = [set(df.filter(pl.col("status") == "diverged")["name"]) for df in (base, more)]
    assert diverged[0] < diverged[1] and len(diverged[1] - diverged[0]) == 3, diverged


def test_final_noise_moves_each_runs_final_loss(tmp_path):
    quiet = ("--noise", "0")  # no noise a log entry: the final losses differ only by the run noise
    base = _sweep_runs(tmp_path, "exact", *quiet)
    noisy = _sweep_runs(tmp_path, "noisy", *quiet, "--final-noise", "0.003")
    both = base.join(noisy, on="name", suffix="_noisy").filter(pl.col("status") == "complete")
    rel = both["final_loss_noisy"] / both["final_loss"] - 1
    assert both.height > 30 and 0.0018 < rel.std() < 0.0045 and abs(rel.mean()) < 0.0015, rel.describe()


def test_plateau_lr_factor_keeps_high_lr_runs_on_the_plateau(tmp_path):
    runs = _sweep_runs(tmp_path, "p", "--plateau-lr-factor", "1.2", "--noise", "0")
    lr_opt = synth.lr_opt(runs["N"].to_numpy(), runs["D"].to_numpy())
    high = runs.filter(pl.Series(runs["lr"].to_numpy() >= 1.2 * lr_opt))
    assert 0 < high.height < runs.height
    assert (high["status"] == "complete").all(), high.select("name", "status")
    assert ((high["final_loss"] / synth.PLATEAU_LOSS - 1).abs() < 1e-3).all(), high["final_loss"]
    low = runs.filter(pl.Series(runs["lr"].to_numpy() < 1.2 * lr_opt))
    assert (low["final_loss"] < synth.PLATEAU_LOSS - 1).all()  # the others learn: about 3 nats


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--recipes", "a/b"),
        ("--recipes", "web,web"),
        ("--recipes", ","),
        ("--diverge-runs", "-1"),
        ("--diverge-runs", "1000"),  # more than the runs that neither diverge nor plateau
        ("--final-noise", "-0.01"),
        ("--final-noise", "nan"),
        ("--plateau-lr-factor", "0"),
        ("--plateau-lr-factor", "x"),
    ],
)
def test_bad_synth_options_are_usage_errors_naming_the_option(tmp_path, option, value):
    r = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), *SMALL, option, value])
    assert r.exit_code == 2 and option in r.output and "Traceback" not in r.output, r.output
    assert not any((tmp_path / "out").glob("*/*")), "no run is written"


# --- stability --reference ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    _run("synth", str(root / "runs"), "--points", "20")
    _run("--db", str(root / "s.db"), "ingest", str(root / "runs"))
    return str(root / "s.db")


def _stability_table(db: str, table: str, *options: str) -> pl.DataFrame:
    args = [
        "--db",
        db,
        "stability",
        "--bootstrap",
        "50",
        "--smoothing",
        "robust",
        "--thresholds",
        str(DEFAULT_THRESHOLD),
    ]
    return pl.read_csv(io.StringIO(_run(*args, *options, "--table", table, "--format", "csv")))


def test_stability_reference_is_the_chosen_fit(db):
    # the sensitivity table fits every analysis choice (reference or not, the same draws): the
    # coefficients table is the reference's row of it, the grid rule at the default threshold for
    # Step Law's procedure, the vertex for the quadratic method
    choices = _stability_table(db, "sensitivity")
    coef = {m: _stability_table(db, "coefficients", "--reference", m) for m in ("quadratic", "steplaw")}
    assert coef["quadratic"].equals(_stability_table(db, "coefficients"))  # the default
    for reference, rule in (("quadratic", pl.col("method") == "quadratic"), ("steplaw", pl.col("method") == "grid")):
        row = choices.filter(rule).select("name", "estimate", "sd")
        assert coef[reference].select("name", "estimate", "sd").equals(row), (reference, coef[reference], row)
    assert not coef["quadratic"]["estimate"].equals(coef["steplaw"]["estimate"])
    assert DEFAULT_LAW_METHOD == "quadratic"  # what the help text and docs/stability.md say


def test_stability_unknown_reference_is_a_usage_error(db):
    r = CliRunner().invoke(app, ["--db", db, "stability", "--reference", "grid"])
    assert r.exit_code == 2 and "--reference" in r.output and "quadratic, steplaw" in r.output, r.output
