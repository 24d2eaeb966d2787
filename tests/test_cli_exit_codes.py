"""The exit status of every command when the data cannot satisfy it (cli/__init__.py): a well
formed command on a store with too few cells, points or usable runs exits 1, not 2 (a usage
error) or 3 (a bug); what the user typed wrong still exits 2. And each warning once: a fit that
is redone target by target says what it left out once, not once per target."""

from __future__ import annotations

import math
import warnings

import polars as pl
import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from steplaw_db import synth
from steplaw_db.cli import app
from steplaw_db.errors import InsufficientDataError, InvalidArgumentError
from steplaw_db.store import Store

CELLS = synth.DEFAULT_CELLS  # 2 shapes x 2 budgets


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Small stores, each short of something: no runs; one cell; four cells (a 5-parameter
    loss law needs 6); grids of 2 lr x 1 batch (no quadratic vertex anywhere); runs of 3
    points (a curve law needs more)."""
    root = tmp_path_factory.mktemp("exits")
    plans = {
        "one_cell": {"cells": CELLS[:1]},  # a 7 x 5 grid around the optimum
        "four": {"cells": CELLS},
        "thin": {"cells": CELLS, "n_lr": 2, "n_bs": 1},
        "short": {"cells": CELLS[:1], "n_lr": 1, "n_bs": 1, "points": 3},
    }
    paths = {"empty": str(root / "empty.db")}
    Store(paths["empty"], create=True)
    for name, plan in plans.items():
        synth.write_sweep(root / name, points=plan.pop("points", 8), diverge=False, **plan)
        paths[name] = str(root / f"{name}.db")
        Store(paths[name], create=True).ingest(str(root / name))
    paths["run"] = str(Store(paths["short"]).runs()["run_id"][0])
    # final-loss tables (--input): a header only, a value that is no number, the wrong columns
    header = "N,D,lr,bs,loss\n"
    (root / "header.csv").write_text(header)
    (root / "nan.csv").write_text(header + "1e8,1e10,1e-3,128,3.0\n1e8,1e10,1e-3,n/a,2.9\n")
    (root / "other.csv").write_text("step,value\n1,2.0\n")
    # loss curves (fit curve FILE): no step or loss column; a header only; a loss that is not positive
    (root / "iters.csv").write_text("iteration,lr,train\n1,1e-3,3.0\n2,1e-3,2.9\n")
    (root / "curve_header.csv").write_text("step,lr,loss\n")
    (root / "curve_zero.csv").write_text("step,lr,loss\n1,1e-3,3.0\n2,1e-3,0.0\n")
    paths["tables"] = str(root)
    return paths


NO_RUNS = "no runs to form cells from"

# (store, command, what the error says): the data cannot satisfy the command, exit 1
DATA_CASES = [
    ("empty", ["cells"], NO_RUNS),
    ("empty", ["optima"], NO_RUNS),
    ("empty", ["near-optimal"], NO_RUNS),
    ("empty", ["evaluate", "--law", "step-law"], NO_RUNS),
    ("empty", ["stability", "--bootstrap", "5"], NO_RUNS),
    ("empty", ["fit", "lr-bs", "--bootstrap", "0"], NO_RUNS),
    ("empty", ["fit", "loss"], NO_RUNS),
    ("empty", ["plot", "stability", "-o", "{tmp}/s.png"], NO_RUNS),
    ("one_cell", ["fit", "lr-bs", "--bootstrap", "0"], "too few cells"),
    ("one_cell", ["fit", "lr-bs", "--method", "steplaw", "--bootstrap", "0"], "too few cells"),
    ("one_cell", ["plot", "law", "--bootstrap", "0", "-o", "{tmp}/law.png"], "too few cells"),
    ("one_cell", ["plot", "landscape", "--cell", "N=7e9,D=1e12", "-o", "{tmp}/l.png"], "no runs in a cell within"),
    ("four", ["fit", "loss"], "too few points for the Chinchilla law"),
    ("thin", ["fit", "lr-bs", "--bootstrap", "0"], "no usable quadratic vertex"),
    ("short", ["fit", "curve", "--run", "{run}"], "too few points to fit"),
    ("four", ["final", "--metric", "val_loss"], "no run has a final value of metric 'val_loss'"),
    ("empty", ["forecast", "--at-fraction", "0.5"], "no finished runs"),
    ("empty", ["optima", "--input", "{tables}/header.csv"], NO_RUNS),
    ("empty", ["fit", "loss", "--input", "{tables}/header.csv"], NO_RUNS),
    ("empty", ["optima", "--input", "{tables}/nan.csv"], "nan.csv:3: column bs: 'n/a' is not a number"),
    ("empty", ["fit", "lr-bs", "--input", "{tables}/other.csv"], "the final-loss table lacks"),
    # a curve file's content (exit 2 before: a usage error); the error names the file
    ("empty", ["fit", "curve", "{tables}/iters.csv"], "iters.csv: no column(s) ['step', 'loss (or value)']"),
    ("empty", ["fit", "curve", "{tables}/curve_header.csv"], "curve_header.csv: no points"),
    ("empty", ["fit", "curve", "{tables}/curve_zero.csv"], "curve_zero.csv: 1 loss values are not finite"),
    # a --by column that no run has a value of (recipe is not set in these sweeps): was exit 0
    # with a group "None" whose every sensitivity fit found "no runs to form cells from"
    ("four", ["stability", "--by", "recipe", "--bootstrap", "5"], "column 'recipe' is empty for all 140 runs"),
    ("four", ["optima", "--by", "N,D,recipe"], "column 'recipe' is empty for all 140 runs"),
    ("four", ["cells", "--by", "N,D,recipe"], "column 'recipe' is empty for all 140 runs"),
    ("four", ["fit", "lr-bs", "--by", "N,D,recipe", "--bootstrap", "0"], "column 'recipe' is empty for all 140"),
    ("four", ["report", "--by", "recipe", "--bootstrap", "0", "-o", "{tmp}/r.html"], "'recipe' is empty for all 140"),
]


@pytest.mark.parametrize(
    ("store", "command", "says"), DATA_CASES, ids=lambda v: "-".join(v) if isinstance(v, list) else v
)
def test_data_that_cannot_satisfy_the_command_exits_1(stores, store, command, says, tmp_path):
    args = [a.format(tmp=tmp_path, run=stores["run"], tables=stores["tables"]) for a in command]
    r = CliRunner().invoke(app, ["--db", stores[store], *args])
    assert (r.exit_code, "Traceback" in r.output) == (1, False), r.output
    assert r.stderr.splitlines()[-1].startswith("error: ") and says in r.stderr, r.stderr


# import-table of a table that yields no run: exit 1 saying why, as ingest of a directory with no
# run does (these exited 0 with "nothing to commit" or committed runs with no loss and no
# configuration; an empty file exited 3)
IMPORT_CASES = [
    ("header.csv", "N,D,lr,bs,loss\n", "header.csv: no rows to import (a header only: N, D, lr, bs, loss)"),
    ("blank.csv", "", "blank.csv: no rows to import (an empty file)"),
    ("noloss.csv", "N,D,lr,bs\n1e8,1e10,1e-3,128\n", "noloss.csv: no loss column"),
    ("other.csv", "foo,bar\n1,2\n3,4\n", "other.csv: no loss column"),
    # a checkpoint table (a step column, rows that share a run's configuration) without a loss
    ("ckpt.csv", "name,step,lr\na,1,1e-3\na,2,1e-3\nb,1,2e-3\nb,2,2e-3\n", "ckpt.csv: no loss column"),
]


@pytest.mark.parametrize(("name", "text", "says"), IMPORT_CASES, ids=[c[0] for c in IMPORT_CASES])
def test_import_table_of_a_table_with_no_run_exits_1(tmp_path, name, text, says):
    (tmp_path / name).write_text(text)
    db = tmp_path / "s.db"
    r = CliRunner().invoke(app, ["--db", str(db), "import-table", str(tmp_path / name)])
    assert (r.exit_code, "Traceback" in r.output) == (1, False), r.output
    assert r.stderr.splitlines()[-1].startswith("error: ") and says in r.stderr, r.stderr
    assert not db.exists()  # nothing committed, and no empty store left behind (as ingest)


def test_import_table_with_some_bad_rows_still_imports_the_others(tmp_path):
    # per-row handling is unchanged: the good rows are committed, the bad one listed, exit 1
    (tmp_path / "t.csv").write_text("name,loss,numl\nok,2.5,4\nbroken,2.4,four\n")
    db = str(tmp_path / "s.db")
    r = CliRunner().invoke(app, ["--db", db, "import-table", str(tmp_path / "t.csv")])
    assert r.exit_code == 1 and "t.csv:3" in r.stderr and "committed store version 1" in r.stderr, r.output
    assert Store(db).runs()["name"].to_list() == ["ok"]


def test_a_by_column_some_runs_lack_leaves_them_out_saying_so_once(tmp_path):
    # 140 runs with a recipe and 35 without: the 35 are no group "None" (whose sensitivity fits
    # each warned "no runs to form cells from") but left out, said once
    synth.write_sweep(tmp_path / "web", points=8, diverge=False, cells=CELLS)
    synth.write_sweep(tmp_path / "none", points=8, diverge=False, cells=CELLS[:1], seed=1)
    db = str(tmp_path / "s.db")
    Store(db, create=True).ingest(str(tmp_path / "web"), recipe="web")
    Store(db).ingest(str(tmp_path / "none"))
    for command in (["stability", "--by", "recipe", "--bootstrap", "5"], ["optima", "--by", "N,D,recipe"]):
        r = CliRunner().invoke(app, ["--db", db, *command])
        assert r.exit_code == 0, r.output
        said = [line for line in r.stderr.splitlines() if "no recipe" in line]
        assert said == ["warning: 35 run(s) have no recipe: they belong to no cell and are left out"], r.stderr
        assert "None" not in r.output and "no runs to form cells from" not in r.stderr, r.output
    # the report's fits per recipe: web's alone, no "recipe=None" one (whose fit said the column is empty)
    r = CliRunner().invoke(
        app, ["--db", db, "report", "--by", "recipe", "--bootstrap", "0", "-o", str(tmp_path / "r.html")]
    )
    assert r.exit_code == 0 and "recipe=None" not in (tmp_path / "r.html").read_text(), r.output


# what the user typed wrong stays a usage error, on any store: these pass today and must go on
USAGE_CASES = [
    ("one_cell", ["fit", "lr-bs", "--bootstrap", "-1"]),  # refused before the data is looked at
    ("one_cell", ["fit", "lr-bs", "--regression", "nope"]),
    ("four", ["fit", "lr-bs", "--edges", "nope"]),
    ("four", ["optima", "--method", "nope"]),
    ("four", ["evaluate", "--law", "nope"]),
    ("empty", ["optima", "--input", "{tmp}/missing.csv"]),
    ("empty", ["fit", "loss", "--delta", "-1"]),
    ("empty", ["fit", "lr-bs", "--edges", "drop", "--method", "steplaw"]),
]


@pytest.mark.parametrize(("store", "command"), USAGE_CASES, ids=lambda v: "-".join(v) if isinstance(v, list) else v)
def test_what_the_user_typed_wrong_stays_exit_2(stores, store, command, tmp_path):
    r = CliRunner().invoke(app, ["--db", stores[store], *(a.format(tmp=tmp_path) for a in command)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output


def test_the_library_raises_the_data_class(stores):
    # the class says which it is; it is still an InvalidArgumentError for code that caught that
    final = sl.open(stores["four"]).final_losses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InsufficientDataError, match="too few points"):
            sl.fit.fit_loss_law(final)
        with pytest.raises(InsufficientDataError, match="no usable quadratic vertex"):
            sl.fit_law(sl.open(stores["thin"]).final_losses(), bootstrap=0)
        with pytest.raises(InvalidArgumentError) as e:
            sl.fit_law(final, bootstrap=-1)
    assert not isinstance(e.value, InsufficientDataError)


# --- each warning once ----------------------------------------------------------------------


def test_no_usable_vertex_is_said_once_when_no_cell_has_one(stores):
    # every cell's grid is 2 x 1: the joint fit and each target's refit all fail for that one
    # reason; it was a warning and twice in the error (once per target): one line now
    r = CliRunner().invoke(app, ["--db", stores["thin"], "fit", "lr-bs", "--bootstrap", "0"])
    assert r.exit_code == 1, r.output
    assert r.stderr.count("usable quadratic vertex") == 1, r.stderr


def _frame_with_two_saddles() -> pl.DataFrame:
    """Six cells of one D (no batch law: D does not vary), each a 5 x 3 grid around its optimum;
    two of them curve down along lr (no usable vertex)."""
    rows = []
    for i, n in enumerate([1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9]):
        curvature = -0.02 if i in (1, 4) else 0.02
        for j in range(-2, 3):
            for k in range(-1, 2):
                jitter = 0.0002 * ((7 * j + 3 * k + i) % 5)
                rows.append(
                    {"N": n, "D": 1e10, "lr": 3e-3 * (n / 1e8) ** -0.5 * math.sqrt(2) ** j,
                     "bs_tokens": 5e5 * 2.0**k, "loss": 3 + curvature * j * j + 0.01 * k * k + jitter}
                )  # fmt: skip
    return pl.DataFrame(rows)


def test_a_fit_redone_target_by_target_warns_each_thing_once():
    # the joint fit fails (the batch law: one D), the lr law is refitted alone and the batch
    # law alone: each refit left out the two saddle cells, which was warned once per refit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        law = sl.fit_law(_frame_with_two_saddles(), bootstrap=0, lr_on=("N",), bs_on=("D",))
    assert law.lr is not None and law.bs is None
    texts = [str(w.message) for w in caught]
    assert sum("2 of 6 cells have no usable quadratic vertex" in t for t in texts) == 1, texts
    assert len(texts) == len(set(texts)), texts


def test_a_vertex_outside_its_own_bootstrap_interval_is_drawn(tmp_path):
    # a bootstrap percentile interval need not hold the full-sample vertex (a noisy cell: lr
    # 3.76e-3, interval 2.89e-3 to 3.70e-3); the landscape, and the report that draws it,
    # failed with exit 3 ("'xerr' must not contain negative values")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steplaw_db.plots import _vertex

    q = {"convex": True, "lr_unbounded": None, "bs_unbounded": None, "flags": "", "lr_quad": 3.759e-3,
         "lr_quad_lo": 2.885e-3, "lr_quad_hi": 3.7e-3, "bs_tokens_quad": 4.31e5, "bs_tokens_quad_lo": 4.25e5,
         "bs_tokens_quad_hi": 4.51e5}  # fmt: skip
    fig, ax = plt.subplots()
    try:
        assert _vertex(ax, q) == []
        fig.savefig(tmp_path / "v.png")
    finally:
        plt.close(fig)


def test_a_fit_per_design_says_the_cells_once_and_names_the_design_of_each_note(tmp_path):
    # each design's fit said the sweep's cell notes again for its own cells ("D: 2 cells ...",
    # "D: 4 cells ...": one fact, twice), and its own notes without saying whose they were
    synth.write_sweep(tmp_path / "runs", points=8, diverge=False, recipes={"web": synth.TRUTH, "code": synth.TRUTH},
                      cells={"web": CELLS, "code": CELLS[:2]})  # fmt: skip
    db = str(tmp_path / "two.db")
    Store(db, create=True).ingest(str(tmp_path / "runs"))
    r = CliRunner().invoke(app, ["--db", db, "fit", "lr-bs", "--by", "N,D,recipe", "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert [line for line in lines if line.startswith("warning: D: ")] == [
        next(line for line in lines if line.startswith("warning: D: 6 cell(s) hold runs whose D differ"))
    ], r.stderr
    assert any(line.startswith("warning: recipe=code: no law: ") for line in lines), r.stderr
    rest = [line for line in lines if not line.startswith(("warning: D: ", "warning: recipe="))]
    assert rest == [], r.stderr


def test_fit_lr_bs_by_a_design_alone_says_what_to_type(stores):
    # --by recipe (for N,D,recipe) exited 2 with "the samples has no column(s) ['N', 'D']"
    r = CliRunner().invoke(app, ["--db", stores["four"], "fit", "lr-bs", "--by", "recipe", "--bootstrap", "0"])
    assert r.exit_code == 2 and "--by N,D,recipe" in r.stderr, r.output


def test_the_report_states_a_failed_fit_once(tmp_path):
    # the law's fit failing was a note ("fit: ...", "fit recipe=code: ...") and then stability's
    # warning of the same fit ("warning: [recipe=code: ]no law: too few cells: ..."): once now
    from steplaw_db.report import build

    synth.write_sweep(tmp_path / "runs", points=8, diverge=False, recipes={"web": synth.TRUTH, "code": synth.TRUTH},
                      cells={"web": CELLS, "code": CELLS[:1]})  # fmt: skip
    db = Store(str(tmp_path / "s.db"), create=True)
    db.ingest(str(tmp_path / "runs"))
    final = db.final_losses()
    for frame, where in ((final.filter(pl.col("recipe") == "code"), "fit: "), (final, "fit recipe=code: ")):
        notes = build(frame, bootstrap=5).notes
        said = [n for n in notes if "too few cells to fit 3 coefficients" in n]
        assert len(said) == 1 and said[0].startswith(where), notes
