"""Every analysis command on small adversarial stores (issue 19, 2): one cell; every optimum
beyond the grid's edges; a recipe of 2 cells; cells too small for a quadratic; a cell whose every
run diverged; N nearly constant. Each command answers as far as the data allow: exit 0, or 1 with
one readable line saying why when the data cannot satisfy it (2 only for what was typed), never an
internal error (exit 3) or a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from steplaw_db import synth
from steplaw_db.cli import app

SHAPE_A, SHAPE_B = (960, 9368, 15, 7), (1280, 9472, 10, 10)
FOUR_CELLS = [(*SHAPE_A, 2e10), (*SHAPE_A, 8e10), (*SHAPE_B, 2e10), (*SHAPE_B, 8e10)]
SMALL = {"points": 12, "n_lr": 5, "n_bs": 3, "diverge": False}


def _one_cell(root: Path) -> list[tuple[Path, str | None]]:
    synth.write_sweep(root / "a", cells=FOUR_CELLS[:1], **SMALL)
    return [(root / "a", None)]


def _edges_everywhere(root: Path) -> list[tuple[Path, str | None]]:
    # every cell's grid lies above its lr optimum and below its batch optimum
    synth.write_sweep(root / "a", cells=FOUR_CELLS, lr_shift=-4, bs_shift=-3, **SMALL)
    return [(root / "a", None)]


def _recipe_of_two_cells(root: Path) -> list[tuple[Path, str | None]]:
    synth.write_sweep(root / "web", cells=FOUR_CELLS, **SMALL)
    synth.write_sweep(root / "code", cells=FOUR_CELLS[:2], seed=1, **SMALL)
    return [(root / "web", "web"), (root / "code", "code")]


def _no_quadratic(root: Path) -> list[tuple[Path, str | None]]:
    synth.write_sweep(root / "a", cells=FOUR_CELLS, points=12, n_lr=3, n_bs=2, diverge=False)
    return [(root / "a", None)]


def _a_cell_all_diverged(root: Path) -> list[tuple[Path, str | None]]:
    synth.write_sweep(root / "a", cells=FOUR_CELLS, **SMALL)
    # a fifth cell whose whole grid is at lr >= 2^1.25 lr*: every run diverges (its loss ends in nan)
    synth.write_sweep(root / "b", cells=[(*SHAPE_A, 4e10)], points=12, n_lr=5, n_bs=3, lr_shift=8)
    return [(root / "a", None), (root / "b", None)]


def _n_nearly_constant(root: Path) -> list[tuple[Path, str | None]]:
    # designs of one size: N within 0.3% (ffnh 9368 to 9400), four budgets
    cells = [(960, ffnh, 15, 7, d) for ffnh, d in ((9368, 2e10), (9380, 4e10), (9390, 8e10), (9400, 1.6e11))]
    synth.write_sweep(root / "a", cells=cells, **SMALL)
    return [(root / "a", None)]


STORES = {
    "one-cell": _one_cell,
    "edges-everywhere": _edges_everywhere,
    "recipe-of-two-cells": _recipe_of_two_cells,
    "no-quadratic": _no_quadratic,
    "a-cell-all-diverged": _a_cell_all_diverged,
    "n-nearly-constant": _n_nearly_constant,
}


@pytest.fixture(scope="module", params=list(STORES))
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(request.param)
    db = root / "steplaw.db"
    for path, recipe in STORES[request.param](root):
        args = ["--db", str(db), "ingest", str(path), *(["--recipe", recipe] if recipe else [])]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
    return request.param, root


def _commands(root: Path, by_recipe: bool) -> dict[str, list[str]]:
    out = root / "out"
    out.mkdir(exist_ok=True)
    law = str(out / "law.json")
    by = ["--by", "recipe"] if by_recipe else []
    latex = ["--table", "differences", "--format", "latex"]
    return {
        "final": ["final"],
        "cells": ["cells"],
        "optima": ["optima"],
        "optima-grid": ["optima", "--method", "grid"],
        "near-optimal": ["near-optimal"],
        "lr-bs": ["fit", "lr-bs", "--bootstrap", "20", "-o", law],
        "lr-bs-steplaw": ["fit", "lr-bs", "--method", "steplaw", "--bootstrap", "20"],
        "lr-bs-censor": ["fit", "lr-bs", "--edges", "censor", "--bootstrap", "20"],
        "lr-bs-drop": ["fit", "lr-bs", "--edges", "drop", "--bootstrap", "20"],
        "loss": ["fit", "loss"],
        "evaluate": ["evaluate", "--law", "step-law"],
        "evaluate-all": ["evaluate", "--law", "all", "--method", "quadratic"],
        "predict": ["predict", "7e9", "1.4e12", "--law", "step-law"],
        "stability": ["stability", "--bootstrap", "20", "--smoothing", "robust", *by],
        "stability-latex": ["stability", "--bootstrap", "20", "--smoothing", "robust", *latex, *by],
        "plot-law": ["plot", "law", "-o", str(out / "law.png"), "--bootstrap", "20"],
        "plot-stability": ["plot", "stability", "-o", str(out / "stability.png"), *by],
        "plot-landscape": ["plot", "landscape", "--cell", "N=2.15e8,D=2e10", "-o", str(out / "landscape.png")],
        "report": ["report", "-o", str(out / "report.html"), *by],
    }


# The commands each store cannot satisfy: the exit status and what its one error line says; every
# other command exits 0. What the data lack exits 1 (too few cells for a law, no usable quadratic
# vertex, too few points for the loss law, too few cells left once the edge-bound ones are censored
# or dropped); 2 only for what was typed: a --cell that matches two recipes' cells must name one.
_NO_VERTEX = "no usable quadratic vertex"
_CENSORED = "cells with a measured optimum"
_FEW_CELLS = "too few cells to fit"
_CHINCHILLA = "too few points for the Chinchilla law"
EXPECTED: dict[str, dict[str, tuple[int, str]]] = {
    "one-cell": {
        "lr-bs": (1, _NO_VERTEX), "lr-bs-steplaw": (1, _FEW_CELLS), "lr-bs-censor": (1, _CENSORED),
        "lr-bs-drop": (1, _NO_VERTEX), "loss": (1, _CHINCHILLA), "plot-law": (1, _NO_VERTEX),
    },
    "edges-everywhere": {
        "lr-bs": (1, _FEW_CELLS), "lr-bs-censor": (1, _CENSORED), "lr-bs-drop": (1, _FEW_CELLS),
        "loss": (1, _CHINCHILLA), "plot-law": (1, _FEW_CELLS),
    },
    "recipe-of-two-cells": {
        "lr-bs-censor": (1, "no design could be fitted"), "lr-bs-drop": (1, "no design could be fitted"),
        "loss": (1, "the Chinchilla law needs at least 3 distinct values of N"),
        "plot-landscape": (2, "matches 2 cells that differ in recipe"),  # --cell must name the recipe
    },
    "no-quadratic": {
        "lr-bs": (1, _NO_VERTEX), "lr-bs-censor": (1, _CENSORED), "lr-bs-drop": (1, _NO_VERTEX),
        "loss": (1, _CHINCHILLA), "plot-law": (1, _NO_VERTEX),
    },
    "a-cell-all-diverged": {"lr-bs-censor": (1, _CENSORED), "lr-bs-drop": (1, _FEW_CELLS), "loss": (1, _CHINCHILLA)},
    "n-nearly-constant": {"lr-bs-censor": (1, _CENSORED), "lr-bs-drop": (1, _FEW_CELLS), "loss": (1, _CHINCHILLA)},
}  # fmt: skip


def test_every_command_answers_with_its_status_and_no_internal_error(store: tuple[str, Path]) -> None:
    name, root = store
    db = str(root / "steplaw.db")
    failures = []
    for key, cmd in _commands(root, by_recipe=name == "recipe-of-two-cells").items():
        r = CliRunner().invoke(app, ["--db", db, *cmd])
        status, says = EXPECTED[name].get(key, (0, ""))
        text = r.output
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        if r.exit_code != status or "Traceback" in text or "internal error" in text:
            failures.append(f"{key} ({' '.join(cmd)}): exit {r.exit_code}, expected {status}\n{text[-1500:]}")
        elif status and not (len(errors) == 1 and says in errors[0]):
            failures.append(f"{key}: exit {status} without one line saying '{says}'\n{text[-1500:]}")
    assert not failures, f"{name}:\n" + "\n\n".join(failures)


def test_no_quadratic_cells_still_give_the_grid_law_and_the_reasons(tmp_path: Path) -> None:
    """The known crash (polars' ``log`` on a null column) on a 3 x 2 grid whose cells have no
    usable vertex: the vertex fit is refused with the reason, Step Law's procedure fits, and the
    stability benchmark says 'not identified' with the reason instead of failing."""
    synth.write_sweep(tmp_path / "a", cells=FOUR_CELLS, points=12, n_lr=3, n_bs=2, diverge=False)
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "a")
    final = db.final_losses()
    with pytest.warns(sl.AnalysisWarning), pytest.raises(sl.InvalidArgumentError, match="no usable quadratic"):
        sl.fit_law(final, bootstrap=20)
    with pytest.warns(sl.AnalysisWarning):
        report = sl.stability(final, bootstrap=20)
    assert set(report.verdicts["verdict"]) == {"not identified"}
    assert report.verdicts["reason"].str.starts_with("no quadratic").all(), report.verdicts


def test_a_constant_regressor_loses_only_its_own_law(tmp_path: Path) -> None:
    """One model size at five budgets: the lr law (on N and D) is not identified, the batch law
    (on D) is fitted; the law's table says which and why."""
    budgets = (1e10, 2e10, 5e10, 1e11, 3e11)
    synth.write_sweep(tmp_path / "a", cells=[(*SHAPE_A, d) for d in budgets], points=12, noise=0.001)
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "a")
    with pytest.warns(sl.AnalysisWarning, match="no lr law: lr: every sample has the same N"):
        law = sl.fit_law(db.final_losses(), bootstrap=20)
    assert law.lr is None and law.bs is not None
    table = law.to_polars()
    lr_rows = table.filter(table["target"] == "lr")
    assert lr_rows["name"].to_list() == ["lr_intercept", "lr_coefN", "lr_coefD"]
    assert lr_rows["estimate"].is_null().all() and lr_rows["reason"].str.contains("same N").all()
    with pytest.warns(sl.AnalysisWarning):
        report = sl.stability(db.final_losses(), bootstrap=20, loco=False)
    v = dict(zip(report.verdicts["name"], report.verdicts["verdict"], strict=True))
    assert v["lr_coefN"] == "not identified" and v["bs_coefD"] in ("stable", "differs")
    r = report.verdicts.filter(report.verdicts["name"] == "lr_coefN")["reason"][0]
    assert r.startswith("constant regressor"), r


def test_a_design_that_cannot_be_fitted_is_a_row_with_its_reason(tmp_path: Path) -> None:
    # the 2-cell recipe has too few cells for an lr law on N and D: fit lr-bs per recipe lists it
    # below the fitted one, every coefficient without a number and with the reason
    import polars as pl

    db = tmp_path / "steplaw.db"
    for path, recipe in _recipe_of_two_cells(tmp_path):
        assert CliRunner().invoke(app, ["--db", str(db), "ingest", str(path), "--recipe", str(recipe)]).exit_code == 0
    args = ["--db", str(db), "fit", "lr-bs", "--by", "N,D,recipe", "--bootstrap", "20", "--format", "csv"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    table = pl.read_csv(r.stdout.encode())
    assert set(table["design"]) == {"recipe=web", "recipe=code"}
    web, code = (table.filter(pl.col("design") == f"recipe={d}") for d in ("web", "code"))
    assert web.filter(pl.col("name") == "bs_coefD")["estimate"].is_not_null().all()
    assert web["name"].to_list() == code["name"].to_list()
    assert code["estimate"].null_count() == code.height
    assert code["reason"].str.contains("cells").all(), code
