"""One definition of a cell (issue 15): every analysis and command sees the same cells; designs
(MoE experts, shapes, recipes) are never merged; ``--cell`` finds the nearest cell or lists the
nearest ones; ill-posed fits are refused or flagged; the measured-better method is the default;
configuration keys are typed columns; checkpoint tables use each run's last checkpoint."""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from conftest import SYNTH_CELLS
from steplaw_db import synth
from steplaw_db.cli import app
from steplaw_db.errors import InvalidArgumentError
from steplaw_db.fit import compare_laws, fit_law, fit_laws
from steplaw_db.optima import AnalysisWarning, assign_cells, cells, find_cell, near_optimal, optima

#: Nine cells: three model sizes at three budgets.
SHAPES = ((960, 9368, 15, 7), (1280, 9472, 10, 10), (2048, 8192, 16, 16))
SWEEP_CELLS = [(*shape, d) for shape in SHAPES for d in (1e10, 3e10, 1e11)]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """A synthetic sweep written as Step Law logs and ingested: its D = steps x batch differs
    by a few ppm across batch sizes inside every cell."""
    root = tmp_path_factory.mktemp("ingested")
    synth.write_sweep(root / "sweep", cells=SWEEP_CELLS, points=60, seed=5)
    db = sl.open(root / "db")
    assert db.ingest(root / "sweep").ok
    return db


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, AnalysisWarning)]


# -- 1. one cell definition ------------------------------------------------------------------


def test_every_analysis_sees_the_same_cells_on_an_ingested_sweep(ingested):
    final = ingested.final_losses()
    assert final["D"].n_unique() > len(SWEEP_CELLS)  # raw D: a few ppm apart across batch sizes
    n = len(SWEEP_CELLS)
    with pytest.warns(AnalysisWarning, match=r"D: 9 cell\(s\) hold runs whose D differ"):
        table = cells(final)
    assert table.height == n and (table["runs"] == 35).all()
    labels = set(table["cell"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert set(optima(final)["cell"]) == labels
        assert set(near_optimal(final)["cell"]) == labels
        rows = sl.evaluate(["step-law", "deepseek"], final)  # it grouped by raw D: 20 rows a law
        assert rows.group_by("law").len()["len"].to_list() == [n, n] and set(rows["cell"]) == labels
        assert fit_law(final, bootstrap=0).info["cells"] == n
        assert fit_law(final, "steplaw", bootstrap=0).info["cells"] == n
        assert sl.fit_loss_law(final).info["points"] == n
        loco = sl.stability(final, bootstrap=20, thresholds=(0.0025,)).loco
        assert set(loco["cell"]) <= labels and loco.height >= n - 1


def test_every_command_sees_the_same_cells_on_an_ingested_sweep(ingested, tmp_path):
    runner = CliRunner()
    db = ["--db", str(ingested.path)]
    n = len(SWEEP_CELLS)
    r = runner.invoke(app, [*db, "cells", "--format", "csv", "-o", str(tmp_path / "cells.csv")])
    assert r.exit_code == 0, r.output
    assert pl.read_csv(tmp_path / "cells.csv").height == n
    # the note about what was merged reaches the output, one line
    assert r.output.count("warning: D: 9 cell(s) hold runs whose D differ") == 1
    r = runner.invoke(app, [*db, "optima", "--format", "csv", "-o", str(tmp_path / "optima.csv")])
    assert r.exit_code == 0 and pl.read_csv(tmp_path / "optima.csv").height == n, r.output
    r = runner.invoke(app, [*db, "evaluate", "--law", "step-law", "-o", str(tmp_path / "ev.csv")])
    assert r.exit_code == 0 and pl.read_csv(tmp_path / "ev.csv").filter(pl.col("law") == "step-law").height == n
    assert "own (LOCO, quadratic)" in r.output, r.output  # the user's own law, beside the published one
    r = runner.invoke(app, [*db, "near-optimal", "--format", "csv", "-o", str(tmp_path / "near.csv")])
    assert r.exit_code == 0 and pl.read_csv(tmp_path / "near.csv")["cell"].n_unique() == n, r.output
    for method in ("quadratic", "steplaw"):
        r = runner.invoke(app, [*db, "fit", "lr-bs", "--method", method, "--bootstrap", "0"])
        assert r.exit_code == 0 and f"{n} cells" in r.output, r.output
    r = runner.invoke(app, [*db, "fit", "loss"])
    assert r.exit_code == 0 and f"{n} cells" in r.output, r.output


def test_cell_option_picks_the_nearest_cell_or_lists_the_nearest(synthetic_dense, tmp_path):
    table = cells(synthetic_dense)
    assert table.height == SYNTH_CELLS
    # README's example: N=2.1e8 is 2.2% from the cell's N = 214,663,680
    row = find_cell(table, {"N": 2.1e8, "D": 1e11})
    assert row["N"] == 214663680 and row["D"] == 1e11
    with pytest.raises(InvalidArgumentError, match=r"no runs in a cell within 11% of N=5e\+07.*nearest cells: N="):
        find_cell(table, {"N": 5e7, "D": 1e11})
    grid = sl.landscape(synthetic_dense, {"N": 2.1e8, "D": 1e11})
    assert grid["cell"].unique().to_list() == [row["cell"]] and grid.height == 35
    path = tmp_path / "synthetic.csv"
    synthetic_dense.write_csv(path)
    out = tmp_path / "cell.png"
    r = CliRunner().invoke(
        app,
        ["plot", "landscape", "--input", str(path), "--cell", "N=2.1e8,D=1e11", "--law", "step-law", "-o", str(out)],
    )
    assert r.exit_code == 0 and out.stat().st_size > 0, r.output
    r = CliRunner().invoke(app, ["plot", "landscape", "--input", str(path), "--cell", "N=5e7,D=1e11", "-o", str(out)])
    assert r.exit_code == 1 and "nearest cells: N=2.147e+08,D=1e+11" in r.output, r.output  # nothing matches


def test_readme_landscape_example_on_the_public_csv(steplaw_csv, tmp_path):
    out = tmp_path / "cell.png"
    r = CliRunner().invoke(
        app,
        [
            "plot",
            "landscape",
            "--input",
            str(steplaw_csv),
            "--cell",
            "N=2.1e8,D=1e11",
            "--law",
            "step-law",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0 and out.stat().st_size > 0, r.output


# -- 2. designs are kept apart ---------------------------------------------------------------

#: MoE-like designs: N factor (all within 0.26%) and the D exponent of each one's optimal LR.
DESIGNS = {"e8k1": (1.0, 0.25), "e8k2": (1.0008, 0.30), "e16k1": (1.0017, 0.35), "e16k2": (1.0026, 0.40)}
MOE_D = (1e10, 2e10, 5e10, 1e11, 2e11)


def moe_table(noise: float = 2e-4, seed: int = 0) -> pl.DataFrame:
    """One model size, 4 designs whose N differ by < 0.3%, 5 budgets, 7 x 5 common grids; each
    design's optimal LR has its own D exponent (lr* = 3e-3 (D / 1e10)^g)."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, (factor, g) in DESIGNS.items():
        n = int(1.2e9 * factor)
        for d in MOE_D:
            lr_star, bs_star = 3e-3 * (d / 1e10) ** g, float(synth.TRUTH.bs_tokens_opt(d))
            for i in range(-3, 4):
                for j in range(-2, 3):
                    lr = float(f"{3e-3 * (d / 1e10) ** 0.325 * 2 ** (i / 2):.4g}")
                    bs = round(bs_star * 2 ** (j / 2) / 2048)
                    x, y = math.log(lr / lr_star), math.log(bs * 2048 / bs_star)
                    loss = 2.2 * (1 + synth.LANDSCAPE_A * x * x + synth.LANDSCAPE_B * y * y)
                    rows.append(
                        {
                            "name": f"{name}_D{d:.0e}_lr{lr}_bs{bs}",
                            "moe_name": name,
                            "N": n,
                            "D": int(d),
                            "lr": lr,
                            "bs": bs,
                            "smooth loss": loss * (1 + noise * rng.standard_normal()),
                        }
                    )
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def moe_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe")
    moe_table().write_csv(root / "moe.csv")
    db = sl.open(root / "db")
    assert db.import_table(root / "moe.csv").ok
    return db


def test_design_keys_are_typed_columns_of_the_store(moe_store, tmp_path):
    final = moe_store.final_losses()
    assert final.schema["moe_name"] == pl.String and set(final["moe_name"]) == set(DESIGNS)
    assert moe_store.runs().schema["moe_name"] == pl.String
    # --set keys that are not run fields: typed columns too, never a JSON string only
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "m.csv").write_text("step,loss\n1,3.0\n2,2.9\n")
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs", set=["warmup=100", "wd=0.1", "sched=cosine", "date=0618", "ema=true"]).ok
    f = db.final_losses()
    assert f.schema["warmup"] == pl.Int64 and f["warmup"].item() == 100
    assert f.schema["wd"] == pl.Float64 and f.schema["sched"] == pl.String and f.schema["ema"] == pl.Boolean
    assert f["date"].item() == "0618"  # not 618: a leading zero keeps it text


def test_designs_with_nearly_one_n_are_split_not_merged(moe_store):
    final = moe_store.final_losses()
    with pytest.warns(AnalysisWarning, match=r"5 cell\(s\) of \(N, D\) hold runs that differ in moe_name"):
        table = optima(final)
    # 20 cells of one design each, 35 runs each, each at its own N
    assert table.height == 20 and (table["runs"] == 35).all() and "moe_name" in table.columns
    assert table.select("moe_name", "N").unique().height == 4
    # keyed by the design explicitly: the same cells, nothing to warn about the split
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        explicit = optima(final, by=("N", "D", "moe_name"))
    assert not [m for m in _messages(record) if "split" in m]
    assert explicit.sort("cell").select("cell", "lr_opt").equals(table.sort("cell").select("cell", "lr_opt"))
    # merging them needs designs=() and says what was merged
    with pytest.warns(AnalysisWarning, match=r"N: 5 cell\(s\) hold runs whose N differ \(by up to 0\.26%\)"):
        merged = optima(final, designs=())
    assert merged.height == 5 and (merged["runs"] == 140).all()
    with pytest.raises(InvalidArgumentError, match="moe_name"):
        assign_cells(final, on_design="error")
    # the command line: --by N,D,moe_name is accepted (moe_name was only inside the tags JSON)
    r = CliRunner().invoke(app, ["--db", str(moe_store.path), "optima", "--by", "N,D,moe_name", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert pl.read_csv(r.stdout.encode())["moe_name"].n_unique() == 4


def test_one_law_per_design_recovers_each_design(moe_store):
    final = moe_store.final_losses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        laws = fit_laws(final, "moe_name", lr_on=("D",), bootstrap=200)
    assert len(laws) == 4
    for name, (_, g) in DESIGNS.items():
        assert laws[f"moe_name={name}"].coefficients()["lr_coefD"] == pytest.approx(g, abs=0.02), name
    side = compare_laws(laws)
    # one block of rows per design (lr on D: intercept and slope; batch the same), in order
    assert side["design"].unique(maintain_order=True).to_list() == list(laws) and side.height == 4 * 4
    # one law across the designs says so
    with pytest.warns(AnalysisWarning, match=r"one law is fitted across 4 designs \(moe_name\)"):
        fit_law(final, lr_on=("D",), bootstrap=0)
    r = CliRunner().invoke(
        app, ["--db", str(moe_store.path), "fit", "lr-bs", "--by", "N,D,moe_name", "--lr-on", "D", "--bootstrap", "50"]
    )
    assert r.exit_code == 0, r.output
    assert "one law per design (moe_name): 4 fitted" in r.output and "moe_name=e16k2" in r.output


def test_mixed_recipes_are_split_or_flagged(synthetic_dense):
    two = pl.concat(
        [synthetic_dense.with_columns(recipe=pl.lit("web")), synthetic_dense.with_columns(recipe=pl.lit("code"))]
    )
    with pytest.warns(AnalysisWarning, match="differ in recipe"):
        assert optima(two).height == 2 * SYNTH_CELLS
    with pytest.warns(AnalysisWarning, match="mix data recipes"):
        merged = optima(two, designs=())
    assert merged["flags"].str.contains("mixed-recipe").all()


def test_a_per_run_label_or_a_function_of_the_grid_splits_nothing(synthetic_dense):
    labelled = synthetic_dense.with_columns(
        run_tag=pl.int_range(pl.len()).cast(pl.String), lr_min=pl.col("lr") / 10, D_per_N=pl.col("D") / pl.col("N")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnalysisWarning)
        a = assign_cells(labelled)
    assert a.split == () and a.frame["cell"].n_unique() == SYNTH_CELLS


# -- 3. ill-posed fits are refused or flagged --------------------------------------------------


def test_fits_on_nearly_constant_n_are_refused(moe_store):
    final = moe_store.final_losses()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vertices = optima(final)
        with pytest.raises(InvalidArgumentError, match=r"N spans only 0\.26% over the 20 cells"):
            sl.fit_lr_bs(vertices)  # N of the designs differ by 0.26%: N^+20 before
        with pytest.raises(InvalidArgumentError, match=r"N spans only 0\.26% over the 20 points"):
            sl.fit_loss_law(final)  # L = 0 + 2e130 / N^13.9 + ... before
    r = CliRunner().invoke(app, ["--db", str(moe_store.path), "fit", "loss"])
    assert r.exit_code == 1 and "not identifiable" in r.output, r.output  # the data's fault, not the command's


def test_barely_determined_exponents_are_warned_and_reach_the_command_line(tmp_path):
    from conftest import final_losses, synthetic_table

    # two model sizes 11% apart and noisy losses: N varies enough to pass, but its exponent is noise
    near = (
        final_losses(synthetic_table(noise=4e-3, seed=1))
        .filter(pl.col("N") <= 268304384)
        .with_columns(N=pl.when(pl.col("N") == 268304384).then(240_000_000).otherwise(pl.col("N")))
    )
    with pytest.warns(AnalysisWarning, match=r"lr: the exponent of N is not determined by these cells"):
        fit_law(near, bootstrap=200)
    path = tmp_path / "near.csv"
    near.write_csv(path)
    r = CliRunner().invoke(app, ["fit", "lr-bs", "--input", str(path), "--bootstrap", "200"])
    assert r.exit_code == 0 and "warning: lr: the exponent of N is not determined" in r.output, r.output


def test_checkpoint_tables_use_each_runs_last_checkpoint(synthetic_dense, tmp_path):
    # every run logged at 3 checkpoints: D (tokens seen) and loss grow / fall with the step
    final = synthetic_dense.with_columns(step=pl.col("ti"))
    early = [
        final.with_columns(
            step=(pl.col("ti") * f).cast(pl.Int64), D=(pl.col("D") * f).cast(pl.Int64), loss=pl.col("loss") * (1 + f)
        )
        for f in (0.25, 0.5)
    ]
    table = pl.concat([*early, final.with_columns(pl.col("D").cast(pl.Int64))], how="vertical_relaxed")
    with pytest.warns(AnalysisWarning, match=r"are checkpoints of 560 runs: each run's last checkpoint"):
        law = sl.fit_loss_law(table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert law.info["points"] == SYNTH_CELLS
        assert law.params == sl.fit_loss_law(final).params
        assert sl.fit_loss_law(table, per_cell=None).info["points"] == final.height
        assert optima(table).height == SYNTH_CELLS
    # a loss table (no lr or batch) of checkpoints on the command line: the last ones, said so
    path = tmp_path / "checkpoints.csv"
    table.select("exp_name", "N", "D", "step", "loss").write_csv(path)
    r = CliRunner().invoke(app, ["fit", "loss", "--input", str(path)])
    assert r.exit_code == 0 and f"{SYNTH_CELLS} cells" in r.output, r.output
    assert "warning: 1680 rows are checkpoints of 560 runs: each run's last checkpoint" in r.output
    # rows that repeat a run with nothing to order them: refused, not guessed
    repeated = pl.concat([final, final.with_columns(loss=pl.col("loss") * 1.01)]).drop("step")
    with pytest.raises(InvalidArgumentError, match="give one row per run"):
        sl.fit_loss_law(repeated)


# -- 4. the measured-better method is the default ---------------------------------------------


def test_fit_lr_bs_takes_the_optima_frame_and_the_default_is_the_vertex(synthetic_dense):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = optima(synthetic_dense)
        direct = sl.fit_lr_bs(table, bootstrap=200)
        default = fit_law(synthetic_dense, bootstrap=200)
    assert direct.coefficients() == default.coefficients()
    assert default.info["procedure"] == "quadratic" and default.info["cells"] == SYNTH_CELLS


def test_the_vertex_recovers_a_known_law_better_than_the_threshold_rule():
    from conftest import synthetic_table

    errors: dict[str, list[float]] = {"quadratic": [], "steplaw": []}
    for seed in range(6):
        final = synthetic_table(noise=2e-3, seed=seed).with_columns(
            loss=pl.col("smooth loss"), bs_tokens=pl.col("bs") * 2048
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for method in errors:
                law = fit_law(final, method, bootstrap=0)  # type: ignore[arg-type]
                c = law.coefficients()
                errors[method].append(
                    (c["lr_coefN"] - synth.LR_EXP_N) ** 2 + (c["lr_coefD"] - synth.LR_EXP_D) ** 2
                    + (c["bs_coefD"] - synth.BS_EXP_D) ** 2
                )  # fmt: skip
    rms = {m: math.sqrt(float(np.mean(e))) for m, e in errors.items()}
    assert rms["quadratic"] < 0.5 * rms["steplaw"], rms


def test_the_report_lists_what_was_split(moe_store):
    from steplaw_db.report import build_report

    final = moe_store.final_losses().filter(pl.col("moe_name").is_in(["e8k1", "e8k2"]))
    page = build_report(final, bootstrap=20)
    assert "split by moe_name" in page and "Notes" in page
