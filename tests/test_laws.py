"""The published laws shipped in ``steplaw_db.laws`` and the ``predict`` command."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from steplaw_db.cli import app
from steplaw_db.errors import InvalidArgumentError


def test_step_law_answer_matches_the_public_tool():
    row = sl.laws.step_law().predict(N=7e9, D=1.4e12, seq_len=2048).row(0, named=True)
    assert f"{row['lr']:.3e}" == "9.347e-04"
    assert round(row["bs_tokens"]) == 4_996_961
    assert f"{row['bs']:.1f}" == "2439.9"


def test_shipped_means_are_the_public_files_means(steplaw_bootstrap_csv):
    means = pl.read_csv(steplaw_bootstrap_csv).mean().row(0, named=True)
    for k, v in sl.laws.STEP_LAW_MEANS.items():
        assert v == pytest.approx(means[k], rel=1e-12, abs=1e-15), k
    # ... and GUIDE.md's six-digit figures, and the rounded law 1.79 N^-0.713 D^0.307, 0.58 D^0.571.
    published = {
        "lr_intercept": 0.586308,
        "lr_coefN": -0.712922,
        "lr_coefD": 0.307491,
        "bs_intercept": -0.543542,
        "bs_coefD": 0.570944,
    }
    for k, v in published.items():
        assert sl.laws.STEP_LAW_MEANS[k] == pytest.approx(v, abs=5e-7), k
    law = sl.laws.step_law()
    assert math.exp(law.lr.coef[0]) == pytest.approx(1.79, abs=0.01)
    assert math.exp(law.bs.coef[0]) == pytest.approx(0.58, abs=0.005)


def test_step_law_from_its_bootstrap_file(steplaw_bootstrap_csv):
    law = sl.laws.step_law(steplaw_bootstrap_csv)
    assert law.samples.shape == (1000, 5)
    for k, v in law.coefficients().items():
        assert v == pytest.approx(sl.laws.STEP_LAW_MEANS[k], rel=1e-12), k
    p = law.predict(N=7e9, D=1.4e12).row(0, named=True)
    assert f"{p['lr']:.3e}" == "9.347e-04"
    assert p["lr_lo"] < p["lr"] < p["lr_hi"]
    assert p["bs_tokens_lo"] < p["bs_tokens"] < p["bs_tokens_hi"]
    with pytest.raises(InvalidArgumentError, match="not a Step Law bootstrap file"):
        sl.laws.step_law(pl.DataFrame({"a": [1.0]}))


def test_step_law_from_a_file_of_bootstrap_draws(tmp_path):
    """A file in the public bootstrap file's format, made here: 1,000 draws around the means."""
    rng = np.random.default_rng(4)
    sd = {"lr_intercept": 0.3, "lr_coefN": 0.02, "lr_coefD": 0.015, "bs_intercept": 0.4, "bs_coefD": 0.02}
    draws = pl.DataFrame({k: v + sd[k] * rng.standard_normal(1000) for k, v in sl.laws.STEP_LAW_MEANS.items()})
    path = tmp_path / "draws.csv"
    draws.write_csv(path)
    law = sl.laws.step_law(path)
    assert law.samples.shape == (1000, 5) and law.name == "step-law"
    means = pl.read_csv(path).mean().row(0, named=True)
    for k, v in law.coefficients().items():
        assert v == pytest.approx(means[k], rel=1e-12), k
    c = law.coefficients()
    p = law.predict(N=7e9, D=1.4e12, seq_len=2048).row(0, named=True)
    assert p["lr"] == pytest.approx(math.exp(c["lr_intercept"]) * 7e9 ** c["lr_coefN"] * 1.4e12 ** c["lr_coefD"])
    assert p["bs_tokens"] == pytest.approx(math.exp(c["bs_intercept"]) * 1.4e12 ** c["bs_coefD"])
    assert p["lr_lo"] < p["lr"] < p["lr_hi"]
    assert p["bs_tokens_lo"] < p["bs_tokens"] < p["bs_tokens_hi"]
    assert sl.laws.step_law(draws).coefficients() == pytest.approx(c, rel=1e-12)  # a frame as well as a path
    with pytest.raises(InvalidArgumentError, match="not a Step Law bootstrap file"):
        sl.laws.step_law(draws.drop("bs_coefD"))


def test_every_law_documents_itself():
    laws = sl.laws.all_laws()
    assert (
        [law.name for law in laws]
        == sl.laws.names()
        == ["step-law", "deepseek", "porian", "openai", "minicpm", "microsoft"]
    )
    for law in laws:
        assert law.source and law.inputs and law.gives and law.describe()
    table = sl.laws.describe_all()
    assert table.columns == ["law", "formula", "inputs", "gives", "source", "notes"]
    assert dict(zip(table["law"], table["inputs"], strict=True))["openai"] == "N, loss"


def test_formulas_of_the_other_laws():
    n, d, loss = 1e9, 1e11, 2.2
    c = 6 * n * d
    rows = {law.name: law.predict(N=n, D=d, loss=loss, interval=None).row(0, named=True) for law in sl.laws.all_laws()}
    assert rows["deepseek"]["lr"] == pytest.approx(0.3118 * c**-0.125, rel=1e-12)
    assert rows["deepseek"]["bs_tokens"] == pytest.approx(0.2920 * c**0.3271, rel=1e-12)
    assert rows["porian"]["lr"] == pytest.approx(3.7 * n**-0.36, rel=1e-12)
    assert rows["porian"]["bs_tokens"] == pytest.approx(0.7576 * n**0.703, rel=1e-12)
    assert rows["openai"]["lr"] == pytest.approx(0.003239 - 0.0001395 * math.log(n), rel=1e-12)
    assert rows["openai"]["bs_tokens"] == pytest.approx(2e8 / loss ** (1 / 0.21), rel=1e-12)
    assert rows["minicpm"]["lr"] is None
    assert rows["minicpm"]["bs_tokens"] == pytest.approx(1.21e9 / loss**6.24, rel=1e-12)
    assert rows["microsoft"]["bs_tokens"] is None
    assert rows["microsoft"]["lr"] == pytest.approx(sl.laws.MICROSOFT_CONSTANT * n**-0.23 * d**-0.32, rel=1e-12)
    explicit = sl.laws.deepseek().predict(N=n, D=d, C=2 * c, interval=None)
    assert explicit["lr"][0] == pytest.approx(0.3118 * (2 * c) ** -0.125, rel=1e-12)


def test_laws_that_need_a_loss_say_so():
    with pytest.raises(InvalidArgumentError, match="needs loss"):
        sl.laws.openai().predict(N=1e9, D=1e11)
    with pytest.raises(InvalidArgumentError, match="unknown law"):
        sl.laws.get("gpt")


def test_resolve_names_all_and_files(tmp_path):
    assert [law.name for law in sl.laws.resolve("steplaw, deepseek")] == ["step-law", "deepseek"]
    assert len(sl.laws.resolve("all")) == 6
    path = tmp_path / "mine.json"
    sl.laws.porian().save(path)
    (law,) = sl.laws.resolve(str(path))
    assert law.predict(N=[1e9, 2e9], D=[1e10, 1e10]).equals(sl.laws.porian().predict(N=[1e9, 2e9], D=[1e10, 1e10]))


def test_predict_command_prints_the_step_law_answer():
    r = CliRunner().invoke(app, ["predict", "7e9", "1.4e12"])
    assert r.exit_code == 0, r.output
    line = next(line for line in r.output.splitlines() if line.startswith("step-law"))
    # the readable table: lr, batch in tokens and sequences, then rounded to a power of two
    assert line.split() == ["step-law", "9.35e-4", "5M", "tokens", "2,440", "seq", "2,048", "seq", "4.19M", "tokens"]
    r = CliRunner().invoke(app, ["predict", "7e9", "1.4e12", "--format", "csv"])
    assert r.exit_code == 0 and "step-law,0.000934684" in r.output and ",4996961." in r.output, r.output


def test_predict_command_all_laws_and_errors(tmp_path):
    r = CliRunner().invoke(app, ["predict", "7e9", "1.4e12", "--law", "all"])
    assert r.exit_code == 0, r.output
    assert "openai" in r.output and "(needs --loss)" in r.output
    r = CliRunner().invoke(app, ["predict", "7e9", "1.4e12", "--law", "all", "--loss", "2.0", "--seq-len", "4096"])
    assert "(needs --loss)" not in r.output
    assert "1,220 seq" in r.output  # 4,996,961 tokens / 4096, in whole sequences
    r = CliRunner().invoke(app, ["predict", "7e9", "1.4e12", "--law", "openai"])
    assert r.exit_code == 2 and "needs a loss value" in r.output
    r = CliRunner().invoke(app, ["predict", "7e9", "1.4e12", "--law", "nope"])
    assert r.exit_code == 2 and "unknown law" in r.output
    r = CliRunner().invoke(app, ["predict", "--", "-7e9", "1.4e12"])
    assert r.exit_code == 2


def test_vectorised_predictions_broadcast():
    p = sl.laws.step_law().predict(N=np.array([1e9, 2e9, 4e9]), D=1e11)
    assert len(p) == 3 and (p["D"] == 1e11).all()
    with pytest.raises(InvalidArgumentError, match="different lengths"):
        sl.laws.step_law().predict(N=[1e9, 2e9], D=[1e10, 1e11, 1e12])


def test_out_of_range_inputs():
    with pytest.raises(InvalidArgumentError, match="positive"):
        sl.laws.step_law().predict(N=[1e9, -1.0], D=1e11)
    # Kaplan's LR formula is negative beyond N ~ 1.2e10: no prediction rather than a negative LR.
    p = sl.laws.openai().predict(N=[1e9, 1e11], D=1e11, loss=2.0)
    assert p["lr"][0] > 0 and p["lr"][1] is None
