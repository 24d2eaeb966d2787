"""Tests of steplaw_db.synth (the synthetic sweep generator).

The module is loaded from its file path so that these tests do not depend on the rest of the
package (whose __init__ may import a native extension that is not built).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

_PATH = Path(__file__).resolve().parents[1] / "python" / "steplaw_db" / "synth.py"
_spec = importlib.util.spec_from_file_location("_steplaw_db_synth_under_test", _PATH)
synth = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = synth  # needed by dataclasses and by the worker pool (fork)
_spec.loader.exec_module(synth)

FILES = {
    "steplaw": {"train_log_0.txt"},
    "megatron": {"train.log", "config.json"},
    "jsonl": {"metrics.jsonl", "config.json"},
    "csv": {"metrics.csv", "config.json"},
}
SMALL = [(960, 9368, 15, 7, 2e9)]
NAME_RE = re.compile(
    r"^synth_h(\d+)_ffnh(\d+)_numh(\d+)_numl(\d+)_lr(\d\.\d{3}e[+-]\d\d)_bs(\d+)_ti(\d+)"
    r"_mlr(\d\.\d{2}e[+-]\d\d)$"
)
STEPLAW_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \| INFO     \| "
    r"megatron\.core\.trainerv2:training_log:812 - iter +(\d+)/ +(\d+) \| "
    r"consumed samples: +(\d+) \| learning rate: (\S+) \| global batch size: +(\d+) \| "
    r"lm loss: (\S+) \| grad norm: (\S+) \|$"
)
MEGATRON_RE = re.compile(
    r"^ \[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] iteration +(\d+)/ +(\d+) \| "
    r"consumed samples: +(\d+) \| elapsed time per iteration \(ms\): (\S+) \| "
    r"learning rate: (\S+) \| global batch size: +(\d+) \| lm loss: (\S+) \| "
    r"loss scale: 1\.0 \| grad norm: (\S+) \| number of skipped iterations: +0 \| "
    r"number of nan iterations: +(\d+) \|$"
)


def step_law_lr(N, D):
    return 1.79 * N**-0.713 * D**0.307


def step_law_bs(D):
    return 0.58 * D**0.571


def read_run(run_dir: Path, fmt: str):
    """(iterations, loss, lr) of one run, parsed independently of the generator."""
    its, losses, lrs = [], [], []
    if fmt == "steplaw":
        lines = (run_dir / "train_log_0.txt").read_text().splitlines()
        assert len(lines) > 3
        for pre in lines[:3]:
            assert " | INFO     | " in pre and STEPLAW_RE.match(pre) is None
        prev_ts = ""
        for line in lines[3:]:
            m = STEPLAW_RE.match(line)
            assert m, line
            ts, it, _steps, consumed, lr, bs, loss, _gn = m.groups()
            assert ts > prev_ts  # strictly increasing timestamps
            prev_ts = ts
            assert int(consumed) == int(it) * int(bs)
            its.append(int(it))
            losses.append(float(loss))
            lrs.append(float(lr))
    elif fmt == "megatron":
        lines = (run_dir / "train.log").read_text().splitlines()
        prev_ts = ""
        for line in lines:
            m = MEGATRON_RE.match(line)
            if m is None:
                assert "iteration" not in line
                continue
            ts, it, _steps, consumed, _ms, lr, bs, loss, _gn, n_nan = m.groups()
            assert ts >= prev_ts
            prev_ts = ts
            assert int(consumed) == int(it) * int(bs)
            assert int(n_nan) == (1 if loss == "nan" else 0)
            its.append(int(it))
            losses.append(float(loss))
            lrs.append(float(lr))
    elif fmt == "jsonl":
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)  # Python's json reads NaN
            assert list(rec) == ["step", "loss", "lr"]
            its.append(rec["step"])
            losses.append(rec["loss"])
            lrs.append(rec["lr"])
    elif fmt == "csv":
        lines = (run_dir / "metrics.csv").read_text().splitlines()
        assert lines[0] == "step,loss,lr"
        for line in lines[1:]:
            it, loss, lr = line.split(",")
            its.append(int(it))
            losses.append(float(loss))
            lrs.append(float(lr))
    return np.array(its), np.array(losses), np.array(lrs)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    out = {}
    for fmt in synth.FORMATS:
        df = synth.write_sweep(root / fmt, fmt=fmt, cells=SMALL, n_lr=11, n_bs=3, points=50)
        out[fmt] = (root / fmt, df)
    return out


def test_guide_example_lines_are_reproduced_exactly():
    line = synth._format_steplaw_lines(
        ["2024-06-18 12:00:00.010"], [35], 69259, [4935], [1.1e-2], 141, [2.737994], [0.412]
    )
    assert line == (
        "2024-06-18 12:00:00.010 | INFO     | megatron.core.trainerv2:training_log:812 - "
        "iter       35/   69259 | consumed samples:         4935 | learning rate: 1.100000E-02 "
        "| global batch size:   141 | lm loss: 2.737994E+00 | grad norm: 0.412 |\n"
    )
    line = synth._format_megatron_lines(
        ["2024-06-18 12:00:00"],
        [100],
        500000,
        [51200],
        [1234.5],
        [1e-4],
        512,
        [7.123456],
        [1.234],
        [0],
    )
    assert line == (
        " [2024-06-18 12:00:00] iteration      100/  500000 | consumed samples:        51200 "
        "| elapsed time per iteration (ms): 1234.5 | learning rate: 1.000000E-04 "
        "| global batch size:   512 | lm loss: 7.123456E+00 | loss scale: 1.0 "
        "| grad norm: 1.234 | number of skipped iterations:   0 | number of nan iterations:   0 |\n"
    )


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_files_exist_per_format(sweeps, fmt):
    root, df = sweeps[fmt]
    top = sorted(p.name for p in root.iterdir())
    assert [p for p in top if not (root / p).is_dir()] == ["truth.json"]
    assert sorted(p for p in top if (root / p).is_dir()) == sorted(df["name"].to_list())
    assert len(df) == 11 * 3
    for name in df["name"]:
        assert {p.name for p in (root / name).iterdir()} == FILES[fmt]


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_names_and_config_parse_back(sweeps, fmt):
    root, df = sweeps[fmt]
    for row in df.iter_rows(named=True):
        m = NAME_RE.match(row["name"])
        assert m, row["name"]
        h, ffnh, numh, numl, lr, bs, steps, mlr = m.groups()
        assert (int(h), int(ffnh), int(numh), int(numl)) == (row["h"], row["ffnh"], row["numh"], row["numl"])
        assert float(lr) == row["lr"]  # the lr is exactly what the name says
        assert int(bs) == row["bs"] and int(steps) == row["steps"] and float(mlr) == 1e-5
        assert row["steps"] == round(row["D"] / (row["bs"] * row["seq_len"]))
        assert row["bs_tokens"] == row["bs"] * row["seq_len"]
        assert row["N"] == row["numl"] * (4 * row["h"] ** 2 + 3 * row["h"] * row["ffnh"])
        assert synth.parse_run_name(row["name"])["lr"] == row["lr"]
        if fmt != "steplaw":
            cfg = json.loads((root / row["name"] / "config.json").read_text())
            assert cfg == {
                "hidden_size": row["h"],
                "ffn_hidden_size": row["ffnh"],
                "num_layers": row["numl"],
                "num_attention_heads": row["numh"],
                "seq_length": row["seq_len"],
                "global_batch_size": row["bs"],
                "lr": row["lr"],
                "min_lr": 1e-5,
                "train_iters": row["steps"],
            }


def test_parse_real_step_law_name():
    got = synth.parse_run_name("step2v2_0618_h960_ffnh9368_numh15_numl7_lr3.453e-04_bs736_ti66342_mlr1.00e-05")
    assert got["h"] == 960 and got["bs"] == 736 and got["steps"] == 66342 and got["lr"] == 3.453e-4


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_curves_last_iteration_and_divergence(sweeps, fmt):
    root, df = sweeps[fmt]
    assert df["diverged"].any() and not df["diverged"].all()
    for row in df.iter_rows(named=True):
        its, loss, lr = read_run(root / row["name"], fmt)
        steps = row["steps"]
        interval = max(1, steps // 50)
        assert its[-1] == steps
        assert its[0] == interval and np.all(np.diff(its) > 0)
        assert np.all(np.diff(its)[:-1] == interval)
        assert len(its) in (steps // interval, steps // interval + 1)
        # schedule: peak lr after warm-up, cosine down to lr_min at the end
        assert lr.max() <= row["lr"] * (1 + 1e-6) and lr.max() > 0.95 * row["lr"]
        assert lr[-1] == pytest.approx(1e-5, rel=1e-6)
        should = row["lr"] >= synth.DIVERGE_LR_FACTOR * row["lr_opt"]
        assert row["diverged"] == should
        if should:
            assert np.isnan(loss[-2:]).all() and not np.isnan(loss[:-2]).any()
            assert loss[-3] > 6.0
        else:
            assert not np.isnan(loss).any()
            assert loss[-1] == pytest.approx(row["true_final_loss"], rel=0.03)
            assert loss[0] > loss[-1] + 2


def test_nan_spelling(sweeps):
    root, df = sweeps["jsonl"]
    name = df.filter(df["diverged"])["name"][0]
    assert '"loss": NaN' in (root / name / "metrics.jsonl").read_text()
    for fmt, fname in (("steplaw", "train_log_0.txt"), ("megatron", "train.log"), ("csv", "metrics.csv")):
        text = (sweeps[fmt][0] / name / fname).read_text()
        assert "nan" in text and "NaN" not in text and "NAN" not in text


def test_true_optimum_is_step_law():
    with pytest.raises(ValueError):
        synth.write_sweep("/nonexistent-never-created", fmt="tensorboard")
    assert synth.TRUTH.lr_opt(1e9, 1e11) == pytest.approx(step_law_lr(1e9, 1e11), rel=1e-12)
    assert synth.TRUTH.bs_tokens_opt(1e11) == pytest.approx(step_law_bs(1e11), rel=1e-12)
    assert synth.TRUTH.landscape_a * math.log(2) ** 2 == pytest.approx(0.003)
    assert synth.TRUTH.landscape_b * math.log(2) ** 2 == pytest.approx(0.005)


def test_default_sweep_truth(tmp_path):
    df = synth.write_sweep(tmp_path, points=5)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert len(truth["cells"]) == 4 and len(df) == 4 * 7 * 5
    assert df["name"].n_unique() == len(df)
    cells = {(c["h"], c["D"]): c for c in truth["cells"]}
    assert set(cells) == {(960, 2e10), (960, 8e10), (1280, 2e10), (1280, 8e10)}
    for c in truth["cells"]:
        N = c["numl"] * (4 * c["h"] ** 2 + 3 * c["h"] * c["ffnh"])
        assert c["N"] == N
        assert c["lr_opt"] == pytest.approx(step_law_lr(N, c["D"]), rel=1e-12)
        assert c["bs_tokens_opt"] == pytest.approx(step_law_bs(c["D"]), rel=1e-12)
        lopt = 1.82 + 482.01 / N**0.3478 + 2085.43 / c["D"] ** 0.3658
        assert c["loss_opt"] == pytest.approx(lopt, rel=1e-12)
        rows = df.filter((df["h"] == c["h"]) & (df["D"] == c["D"]))
        assert len(rows) == 35 == c["n_runs"]
        assert rows["lr_opt"].unique().to_list() == [pytest.approx(c["lr_opt"], rel=1e-12)]
        assert rows["bs_tokens_opt"].unique().to_list() == [pytest.approx(c["bs_tokens_opt"], rel=1e-12)]
        assert rows["true_final_loss"].min() > lopt
        # the optimum is not on a grid point
        assert -0.5 <= c["lr_grid_offset"] <= 0.5 and -0.5 <= c["bs_grid_offset"] <= 0.5
        assert abs(c["lr_grid_offset"]) > 1e-3 or abs(c["bs_grid_offset"]) > 1e-3
    # the default grid reaches past DIVERGE_LR_FACTOR x lr*: its top learning rates diverge
    assert df["diverged"].any() and not df["diverged"].all()
    assert (
        df.filter(pl.col("diverged"))["lr"] >= synth.DIVERGE_LR_FACTOR * df.filter(pl.col("diverged"))["lr_opt"]
    ).all()


def test_landscape_minimum_at_nearest_grid_point(tmp_path):
    df = synth.write_sweep(tmp_path, points=5, seed=3)
    for key, rows in df.group_by(["h", "D"]):
        x = np.log(rows["lr"].to_numpy() / rows["lr_opt"].to_numpy())
        y = np.log(rows["bs_tokens"].to_numpy() / rows["bs_tokens_opt"].to_numpy())
        nearest = int(np.argmin(x * x + y * y))
        best = int(np.argmin(rows["true_final_loss"].to_numpy()))
        assert nearest == best, key
        # the landscape is the stated quadratic around Lopt
        N, D = rows["N"][0], rows["D"][0]
        lopt = 1.82 + 482.01 / N**0.3478 + 2085.43 / D**0.3658
        expect = lopt * (1 + 0.003 / math.log(2) ** 2 * x * x + 0.005 / math.log(2) ** 2 * y * y)
        np.testing.assert_allclose(rows["true_final_loss"].to_numpy(), expect, rtol=1e-12)
        # the best grid point is the middle one
        assert rows["lr"][best] == sorted(rows["lr"].unique())[3]
        assert rows["bs"][best] == sorted(rows["bs"].unique())[2]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["steplaw", "megatron"])
def test_identical_output_whatever_the_worker_count(tmp_path, fmt):
    kw = dict(fmt=fmt, cells=[*SMALL, (1280, 9472, 10, 10, 3e9)], n_lr=9, n_bs=3, points=40, seed=7)
    df1 = synth.write_sweep(tmp_path / "w1", workers=1, **kw)
    df2 = synth.write_sweep(tmp_path / "w2", workers=2, **kw)
    assert df1.equals(df2)
    t1, t2 = _tree(tmp_path / "w1"), _tree(tmp_path / "w2")
    assert len(t1) == len(df1) * len(FILES[fmt]) + 1 and t1 == t2


def test_seed_changes_noise_and_offsets_only(tmp_path):
    a = synth.write_sweep(tmp_path / "a", fmt="csv", cells=SMALL, points=10, seed=1)
    b = synth.write_sweep(tmp_path / "b", fmt="csv", cells=SMALL, points=10, seed=2)
    assert a["lr_opt"].equals(b["lr_opt"]) and not a["lr"].equals(b["lr"])
    c = synth.write_sweep(tmp_path / "c", fmt="csv", cells=SMALL, points=10, seed=1, noise=0.0)
    for row in c.iter_rows(named=True):
        _, loss, _ = read_run(tmp_path / "c" / row["name"], "csv")
        if row["diverged"]:
            assert np.isnan(loss[-1])
        else:
            assert loss[-1] == pytest.approx(row["true_final_loss"], rel=1e-6)


def _last_losses(root: Path, names) -> list[float]:
    """The last logged loss of each named run of a jsonl sweep (nan read as nan)."""
    out = []
    for name in names:
        lines = (root / name / "metrics.jsonl").read_text().splitlines()
        out.append(float(json.loads(lines[-1].replace("NaN", "null"))["loss"] or math.nan))
    return out


def test_plateau_runs_end_near_the_unigram_entropy_not_nan(tmp_path):
    df = synth.write_sweep(tmp_path, fmt="jsonl", cells=synth.DEFAULT_CELLS[:1], points=30, noise=0.0,
                           plateau_lr_factor=1.5)  # fmt: skip
    top = df.filter(pl.col("lr") >= 1.5 * pl.col("lr_opt"))
    assert top.height == 10 and top["plateau"].all() and not top["diverged"].any()  # 2 top lrs x 5 batches
    assert not df.filter(~pl.col("plateau"))["diverged"].any()  # above 2^1.25 every run is on the plateau
    last = _last_losses(tmp_path, top["name"])
    assert all(abs(v - synth.PLATEAU_LOSS) < 1e-3 * synth.PLATEAU_LOSS for v in last), last
    truth = json.loads((tmp_path / "truth.json").read_text())["settings"]
    assert truth["plateau_lr_factor"] == 1.5 and truth["plateau_runs"] == 10


def test_a_few_runs_diverge_and_final_losses_carry_run_noise(tmp_path):
    kw = {"fmt": "jsonl", "cells": synth.DEFAULT_CELLS[:2], "points": 30, "noise": 0.0, "diverge": False}
    calm = synth.write_sweep(tmp_path / "calm", **kw)
    noisy = synth.write_sweep(tmp_path / "noisy", diverge_runs=3, final_noise=0.003, **kw)
    assert not calm["diverged"].any() and noisy["diverged"].sum() == 3
    ok = noisy.filter(~pl.col("diverged"))
    a = np.array(_last_losses(tmp_path / "calm", ok["name"]))
    b = np.array(_last_losses(tmp_path / "noisy", ok["name"]))
    rel = b / a - 1
    assert 0.002 < rel.std() < 0.004 and abs(rel.mean()) < 0.001, rel.std()  # about 0.3%
    assert all(math.isnan(v) for v in _last_losses(tmp_path / "noisy", noisy.filter("diverged")["name"]))
    settings = json.loads((tmp_path / "noisy" / "truth.json").read_text())["settings"]
    assert settings["diverge_runs"] == 3 and settings["final_noise"] == 0.003 and settings["n_diverged"] == 3


def test_two_recipes_with_their_own_laws(tmp_path):
    from dataclasses import replace

    code = replace(synth.TRUTH, lr_exp_D=synth.TRUTH.lr_exp_D - 0.2)
    cells = synth.DEFAULT_CELLS
    df = synth.write_sweep(tmp_path, recipes={"web": synth.TRUTH, "code": code}, cells={"code": cells[:2]},
                           points=10, n_lr=3, n_bs=3)  # fmt: skip
    assert df.group_by("recipe").len().sort("recipe").rows() == [("code", 18), ("web", 36)]
    for row in df.iter_rows(named=True):
        law = synth.TRUTH if row["recipe"] == "web" else code
        assert row["lr_opt"] == pytest.approx(float(law.lr_opt(row["N"], row["D"])), rel=1e-12)
        assert row["name"].startswith(f"synth-{row['recipe']}_")
        config = json.loads((tmp_path / row["recipe"] / row["name"] / "config.json").read_text())
        assert config == {"recipe": row["recipe"]}
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["recipes"]["code"]["law"]["lr_exp_D"] == pytest.approx(synth.TRUTH.lr_exp_D - 0.2)
    assert [len(truth["recipes"][r]["cells"]) for r in ("web", "code")] == [4, 2]


# --------------------------------------------------------------------------------------------
# Every GroundTruth field takes effect (a field the generator ignored would be a silent lie:
# truth.json would record a law the runs do not follow).
# --------------------------------------------------------------------------------------------


def _custom(tmp_path: Path, truth, **kw):
    """A noise-free one-cell csv sweep under ``truth`` whose top learning rates diverge: (df, root of its runs)."""
    kw = {"fmt": "csv", "cells": SMALL, "n_lr": 11, "n_bs": 1, "points": 100, "noise": 0.0, **kw}
    df = synth.write_sweep(tmp_path, recipes={"r": truth}, **kw)
    assert df["diverged"].any() and not df["diverged"].all()
    return df, tmp_path / "r"


def test_loss_init_is_the_loss_at_the_first_step(tmp_path):
    # one run logged at every step: its first entry (step 1) is within 0.5% of loss_init
    kw = {"fmt": "csv", "cells": SMALL, "n_lr": 1, "n_bs": 1, "points": 10**6, "noise": 0.0}
    for k, loss_init in enumerate((synth.LOSS_INIT, 20.0)):
        truth = synth.GroundTruth(loss_init=loss_init)
        df = synth.write_sweep(tmp_path / str(k), recipes={"r": truth}, **kw)
        its, loss, _ = read_run(tmp_path / str(k) / "r" / df["name"][0], "csv")
        assert its[0] == 1 and loss[0] == pytest.approx(loss_init, rel=5e-3)
        assert loss[-1] == pytest.approx(df["true_final_loss"][0], rel=1e-6)  # the end does not move


@pytest.mark.parametrize("diverge_start", [0.3, 0.9])
def test_diverge_start_is_where_diverged_runs_leave_their_curve(tmp_path, diverge_start):
    # the same runs with diverge=False and True: equal up to diverge_start * steps, above after
    truth = synth.GroundTruth(diverge_start=diverge_start)
    kw = {"fmt": "csv", "cells": SMALL, "n_lr": 11, "n_bs": 1, "points": 100, "noise": 0.0, "recipes": {"r": truth}}
    synth.write_sweep(tmp_path / "calm", diverge=False, **kw)
    div = synth.write_sweep(tmp_path / "div", **kw)
    assert div["diverged"].any()
    for row in div.filter("diverged").iter_rows(named=True):
        its, calm, _ = read_run(tmp_path / "calm" / "r" / row["name"], "csv")
        _, loss, _ = read_run(tmp_path / "div" / "r" / row["name"], "csv")
        ok = ~np.isnan(loss)
        before = its[ok] <= diverge_start * row["steps"]
        assert before.any() and (~before).any()
        np.testing.assert_array_equal(loss[ok][before], calm[ok][before])
        assert np.all(loss[ok][~before] > calm[ok][~before])


@pytest.mark.parametrize("diverge_loss", [4.0, 15.0])
def test_diverged_runs_rise_to_diverge_loss(tmp_path, diverge_loss):
    df, custom = _custom(tmp_path, synth.GroundTruth(diverge_loss=diverge_loss))
    for row in df.filter("diverged").iter_rows(named=True):
        _, loss, _ = read_run(custom / row["name"], "csv")
        last = loss[~np.isnan(loss)][-1]  # 0.28 of the steps past the start of the rise: within 0.4 %
        assert last == pytest.approx(diverge_loss, rel=5e-3)


@pytest.mark.parametrize("diverge_nan", [0, 1, 5])
def test_diverged_runs_end_in_diverge_nan_nans(tmp_path, diverge_nan):
    for fmt in ("csv", "megatron"):  # megatron: its 'number of nan iterations' follows (read_run checks)
        df, custom = _custom(tmp_path / fmt, synth.GroundTruth(diverge_nan=diverge_nan), fmt=fmt)
        for row in df.iter_rows(named=True):
            _, loss, _ = read_run(custom / row["name"], fmt)
            k = diverge_nan if row["diverged"] else 0
            assert np.isnan(loss).sum() == k and not np.isnan(loss[: len(loss) - k]).any()


@pytest.mark.parametrize("warmup_fraction", [0.05, 0.2])
def test_lr_warmup_ends_at_warmup_fraction(tmp_path, warmup_fraction):
    df, custom = _custom(tmp_path, synth.GroundTruth(warmup_fraction=warmup_fraction))
    for row in df.iter_rows(named=True):
        its, _, lr = read_run(custom / row["name"], "csv")
        warm = max(1, round(warmup_fraction * row["steps"]))
        rising = its < warm
        assert rising.sum() == pytest.approx(100 * warmup_fraction, abs=2)
        np.testing.assert_allclose(lr[rising], row["lr"] * its[rising] / warm, rtol=1e-6)  # linear from 0
        assert np.all(np.diff(lr[~rising]) <= 0) and lr[~rising][0] > 0.999 * row["lr"]  # then cosine down


def _run_files(root: Path) -> dict:
    """The runs' files of a sweep (not truth.json, which records the law whether or not it was used)."""
    return {k: v for k, v in _tree(root).items() if not k.endswith("truth.json")}


# a change of each field big enough to show in a small sweep (diverge_lr_factor: a grid step is sqrt 2)
_CHANGED = {"diverge_lr_factor": 2.0, "diverge_nan": 3}


@pytest.mark.parametrize("field", [f.name for f in __import__("dataclasses").fields(synth.GroundTruth)])
def test_changing_any_ground_truth_field_changes_the_runs(tmp_path, field):
    from dataclasses import replace

    value = getattr(synth.TRUTH, field)
    changed = replace(synth.TRUTH, **{field: _CHANGED.get(field, value * 1.2)})
    kw = {"fmt": "megatron", "cells": SMALL, "n_lr": 11, "n_bs": 3, "points": 30}
    a = synth.write_sweep(tmp_path / "a", recipes={"r": synth.TRUTH}, **kw)
    b = synth.write_sweep(tmp_path / "b", recipes={"r": changed}, **kw)
    assert _run_files(tmp_path / "a") != _run_files(tmp_path / "b") or not a.equals(b)
    if field not in ("lr_coef", "lr_exp_N", "lr_exp_D", "bs_coef", "bs_exp_D"):  # these move the grid itself
        assert a["name"].equals(b["name"])
        assert _run_files(tmp_path / "a") != _run_files(tmp_path / "b"), f"{field} changes no run's log"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("loss_init", math.nan),
        ("loss_init", 0.0),
        ("diverge_start", -0.1),
        ("diverge_start", 1.5),
        ("diverge_loss", math.inf),
        ("diverge_nan", -1),
        ("diverge_nan", 1.5),
        ("warmup_fraction", -0.01),
        ("warmup_fraction", 1.0),
        ("diverge_lr_factor", 0.0),
    ],
)
def test_a_ground_truth_the_generator_cannot_honour_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        synth.GroundTruth(**{field: value})
