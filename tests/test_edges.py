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
    assert row["bs_tokens_quad_lo"] == 0.0  # no 2e-14: unbounded below
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
    assert row["bs_tokens_quad_hi"] < math.inf and row["bs_tokens_quad_lo"] > 0


def _fit_warnings(final: pl.DataFrame, method: str = "quadratic") -> tuple[sl.HparamLaw, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        law = sl.fit_law(final, method, bootstrap=50)  # type: ignore[arg-type]
    return law, [str(w.message) for w in caught if issubclass(w.category, sl.AnalysisWarning)]


@pytest.mark.parametrize("method", ["quadratic", "steplaw"])
def test_fit_says_how_many_cells_are_edge_bound(method: str) -> None:
    # every cell's bs optimum just above the grid's smallest batch: the grid minimum sits on it
    # (the vertex stays inside the grid, so the quadratic method keeps the cells)
    law, notes = _fit_warnings(_sweep(bs_shift=1.8, noise=0.0001), method)
    line = "bs: 9 of 9 cells at the grid's smallest batch: the bs law is bounded, not estimated"
    assert notes.count(line) == 1, notes
    assert not any(n.startswith("lr: ") for n in notes)
    assert law.info["edges"] == {"lr": {"cells": 9, "low": 0, "high": 0}, "bs": {"cells": 9, "low": 9, "high": 0}}
    assert line in law.info["warnings"]
    table = law.to_polars()
    assert table.filter(pl.col("target") == "bs_tokens")["edge_low"].to_list() == [9, 9]
    assert table.filter(pl.col("target") == "lr")["edge_low"].to_list() == [0, 0, 0]
    assert table["cells"].to_list() == [9] * 5


def test_interior_optima_give_no_edge_warning() -> None:
    law, notes = _fit_warnings(_sweep())
    assert not any("cells at the grid's" in n for n in notes), notes
    assert law.info["edges"]["bs"] == {"cells": 9, "low": 0, "high": 0}


def test_some_edge_cells_are_counted_by_side() -> None:
    final = pl.concat([_sweep(), pl.DataFrame(_cell(3e9, 6e11, lr_shift=-8.0, noise=0.0005, seed=7))])
    law, notes = _fit_warnings(final)
    assert "lr: 1 of 10 cells at the grid's largest lr: those cells' optimal lr is a bound, not a measurement" in notes
    assert law.info["edges"]["lr"] == {"cells": 10, "low": 0, "high": 1}


def test_a_saved_law_says_it_again_when_loaded(tmp_path) -> None:
    law, _ = _fit_warnings(_sweep(bs_shift=1.8, noise=0.0001))
    law.save(tmp_path / "law.json")
    with pytest.warns(sl.AnalysisWarning, match="bs: 9 of 9 cells at the grid's smallest batch"):
        loaded = sl.laws.load_law(tmp_path / "law.json")
    assert loaded.info["edges"]["bs"]["low"] == 9


def test_stability_does_not_call_an_edge_bound_coefficient_stable() -> None:
    final = _sweep(bs_shift=1.8, noise=0.0001)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = sl.stability(final, bootstrap=50, loco=False)
    notes = [str(w.message) for w in caught if issubclass(w.category, sl.AnalysisWarning)]
    assert "bs: 9 of 9 cells at the grid's smallest batch: the bs law is bounded, not estimated" in notes
    verdicts = {r["name"]: r for r in report.verdicts.iter_rows(named=True)}
    assert verdicts["bs_coefD"]["verdict"] == verdicts["bs_intercept"]["verdict"] == "not identified"
    assert verdicts["bs_coefD"]["edge_cells"] == 9 and verdicts["bs_coefD"]["cells"] == 9
    assert verdicts["lr_coefN"]["verdict"] != "not identified" and verdicts["lr_coefN"]["edge_cells"] == 0


def test_report_law_section_says_the_bs_law_is_bounded() -> None:
    from steplaw_db.report import build_report

    html = build_report(_sweep(bs_shift=1.8, noise=0.0001), laws=("step-law",), bootstrap=50)
    start = html.index("<h2>Learning-rate and batch-size law</h2>")
    law_section = html[start : html.index("</section>", start)]
    assert "bs: 9 of 9 cells at the grid&#x27;s smallest batch: the bs law is bounded, not estimated" in law_section
    assert "not identified" in html


def _cut_sweep(cut_cells: int, seed: int = 0, noise: float = 0.0005) -> pl.DataFrame:
    """3 x 4 cells; the ``cut_cells`` with the smallest budget have their batch optimum 1-2.5
    grid steps below the smallest batch."""
    rng = np.random.default_rng(seed)
    rows, k = [], 0
    for D in (1e10, 3e10, 1e11, 3e11):
        for N in (2e8, 5e8, 1.2e9):
            shift = 4 + rng.uniform(0.0, 1.5) * 2 if k < cut_cells else rng.uniform(-0.5, 0.5)
            rows += _cell(N, D, lr_shift=rng.uniform(-0.5, 0.5), bs_shift=shift, noise=noise, seed=seed * 100 + k)
            k += 1
    return pl.DataFrame(rows)


def test_edge_treatments_keep_drop_censor() -> None:
    final = _cut_sweep(6)
    laws = {}
    for e in ("keep", "drop", "censor"):
        laws[e], notes = _fit_warnings_edges(final, e)
        assert (
            "bs: 6 of 12 cells at the grid's smallest batch: those cells' optimal batch is a bound, not a measurement"
            in notes
        )
        assert laws[e].info["edge_treatment"] == e and laws[e].info["edges"]["bs"]["low"] == 6
    # keep and drop leave the cut cells out (their vertex is far outside the grid): the batch law
    # rests on the 6 largest budgets; censoring uses every cell
    assert laws["censor"].info["censored"] == {"lr": 0, "bs": 6}
    for e, law in laws.items():
        c = law.coefficients()
        assert abs(c["bs_coefD"] - TRUTH.bs_exp_D) < 0.05, (e, c)
        assert abs(c["lr_coefN"] - TRUTH.lr_exp_N) < 0.05, (e, c)
    assert laws["censor"].bs is not None and laws["censor"].bs.samples is not None
    assert laws["censor"].to_polars().filter(pl.col("name") == "bs_coefD")["sd"].item() > 0


def test_censor_fits_what_keep_cannot() -> None:
    # 10 of 12 cells cut: keep and drop have 2 cells for the lr law's 3 coefficients
    final = _cut_sweep(10, seed=2)
    for e in ("keep", "drop"):
        with pytest.raises(sl.InvalidArgumentError):
            _fit_warnings_edges(final, e)
    law, notes = _fit_warnings_edges(final, "censor")
    # the 2 measured cells share one D: batch bounds alone leave its slope free, no batch law
    assert law.bs is None and any(n.startswith("no bs law: bs_tokens: the 2 cells") for n in notes), notes
    with pytest.raises(sl.InvalidArgumentError, match="edges='censor' needs method='quadratic'"):
        sl.fit_law(final, "steplaw", edges="censor")
    assert law.lr is not None and abs(law.coefficients()["lr_coefN"] - TRUTH.lr_exp_N) < 0.1


def _fit_warnings_edges(final: pl.DataFrame, edges: str) -> tuple[sl.HparamLaw, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        law = sl.fit_law(final, edges=edges, bootstrap=40)  # type: ignore[arg-type]
    return law, [str(w.message) for w in caught if issubclass(w.category, sl.AnalysisWarning)]


def test_synth_grid_shift_puts_every_batch_optimum_below_the_grid(tmp_path) -> None:
    truth = sl.synth.write_sweep(tmp_path / "runs", points=40, bs_shift=4.0)
    per_cell = truth.group_by("N", "D").agg(below=pl.col("bs_tokens").min() > pl.col("bs_tokens_opt").first())
    assert per_cell["below"].all()
    db = sl.open(tmp_path / "steplaw.db")
    db.ingest(tmp_path / "runs")
    final = db.final_losses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sl.AnalysisWarning)
        cells = sl.optima(final)
    assert cells["bs_edge"].to_list() == ["low"] * 4
    # a vertex is within a grid step of the grid or null, never a number far below it
    assert (cells["bs_tokens_quad"].drop_nulls() > 0.5 * cells["bs_tokens_grid"].min()).all()
    for row in cells.iter_rows(named=True):  # the interval reaches far below the grid: unbounded there
        assert (
            row["bs_tokens_quad_lo"] is None
            or row["bs_tokens_quad_lo"] == 0.0
            or row["bs_tokens_quad_lo"] > 0.5 * row["bs_tokens_grid"]
        )
        if row["bs_tokens_quad_lo"] == 0.0 or row["bs_tokens_quad"] is None:
            assert row["bs_unbounded"] in ("below", "above", "both")
        if row["bs_tokens_quad_lo"] == 0.0 and row["bs_tokens_quad_hi"] == math.inf:
            assert row["bs_unbounded"] == "both"
    _, notes = _fit_warnings(final, "steplaw")
    assert "bs: 4 of 4 cells at the grid's smallest batch: the bs law is bounded, not estimated" in notes


def test_cli_fit_lr_bs_takes_the_edge_treatment(tmp_path) -> None:
    from typer.testing import CliRunner

    from steplaw_db.cli import app

    table = tmp_path / "cut.parquet"
    _cut_sweep(10, seed=2).write_parquet(table)
    args = ["fit", "lr-bs", "--input", str(table), "--bootstrap", "20", "--format", "csv"]
    keep = CliRunner().invoke(app, [*args, "--edges", "keep"])
    assert keep.exit_code == 1, keep.output  # 2 measured cells for 3 coefficients: the data's fault
    censor = CliRunner().invoke(app, [*args, "--edges", "censor"])
    assert censor.exit_code == 0, censor.output
    assert "lr" in censor.output and "no bs law" in censor.output
