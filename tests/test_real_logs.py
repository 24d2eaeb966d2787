"""Real logs in, zero-config (issue 14): directories that hold many runs, logs that hold
several trials, W&B chart exports kept in several copies and parts.

Fixtures are built here in tmp dirs, shaped like the real files: a modded-nanogpt records
folder (``<uuid>.txt`` logs that print their source first, then ``step:k/T val_loss:...``
lines; a README.txt among them; a log of several trials; a log without its final newline),
and W&B chart exports (``"Step", "<run> - <metric>", ...__MIN, ...__MAX``). Every expected
point is computed here, independently of the readers. Bad input comes first.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

import steplaw_db as sl

# -- helpers -----------------------------------------------------------------------------------


def report_field(report: sl.IngestReport, name: str):
    """A field of the ingest report added with issue 14 (skipped_files, replaced_points, notes)."""
    if not hasattr(report, name):
        pytest.fail(f"IngestReport.{name} is not wired through to Python yet (py/mod.rs report_dict, store.py)")
    return getattr(report, name)


def points_by_name(db: sl.Store) -> dict[str, dict[str, dict[int, float]]]:
    """run name -> metric -> {step: value}, every point of the store."""
    runs = db.runs().select("run_id", "name")
    pts = db.points(metric=None).join(runs, on="run_id")
    out: dict[str, dict[str, dict[int, float]]] = {}
    for (name, metric), g in pts.group_by("name", "metric"):
        out.setdefault(name, {})[metric] = dict(zip(g["step"].to_list(), g["value"].to_list(), strict=True))
    return out


# -- a modded-nanogpt records folder -------------------------------------------------------------

SOURCE = """import os
import torch
@dataclass
class Hyperparameters:
    # data hyperparams
    input_bin : str = 'data/fineweb10B/fineweb_train_*.bin' # input .bin to train on
    # optimization hyperparams
    batch_size : int = 8*64 # batch size, in sequences, across all devices
    device_batch_size : int = 64 # batch size, in sequences, per device
    sequence_length : int = 1024 # sequence length, in tokens
    num_iterations : int = {steps} # number of iterations to run
    learning_rate : float = 0.0036
    weight_decay : float = 0
    val_loss_every : int = 125 # every how many steps to evaluate val loss? 0 for only at the end
args = Hyperparameters()

    loss = model(x, y)  # train_loss:{{loss:.4f}}
    if last_step or (args.val_loss_every > 0 and step % args.val_loss_every == 0):
        print0(f"step:{{step}}/{{args.num_iterations}} val_loss:{{val_loss:.4f}} train_time:{{training_time_ms:.0f}}ms")
    print0(f"step:{{step+1}}/{{args.num_iterations}} train_time:{{approx_time:.0f}}ms step_avg:{{t:.2f}}ms")
====================================================================================================
Running pytorch 2.5.0 compiled for CUDA 12.4
nvidia-smi:
| NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |                    0 |
====================================================================================================
"""


def speedrun_trial(steps: int, every: int, seed: float) -> tuple[list[str], dict[int, float]]:
    """The log lines of one speedrun trial (val lines every `every` steps, timing lines
    without a training loss between them, as recent records print) and its val points."""
    lines, val = [], {}
    for s in range(steps + 1):
        if s % every == 0 or s == steps:
            val[s] = round(3.28 + 7.5458 * math.exp(-8 * s / steps) + seed / 1000, 4)
            lines.append(f"step:{s}/{steps} val_loss:{val[s]:.4f} train_time:{s * 200}ms step_avg:{200.0:.2f}ms")
        if s < steps:
            lines.append(f"step:{s + 1}/{steps} train_time:{(s + 1) * 200}ms step_avg:{200.0:.2f}ms")
    return lines, val


def records_folder(root: Path) -> dict[str, dict[int, float]]:
    """A records folder like modded-nanogpt's: three logs of one record, a README.txt, and
    one log that holds two trials and ends without a newline. Returns run name -> val points."""
    root.mkdir(parents=True)
    expected: dict[str, dict[int, float]] = {}
    names = ["0a1b2c3d-1111", "4e5f6a7b-2222", "8c9d0e1f-3333"]
    for k, uuid in enumerate(names):
        lines, val = speedrun_trial(500, 125, seed=k)
        text = SOURCE.format(steps=500) + "\n".join(lines)
        if k == 2:
            # a second trial in the same log (the step goes back to 0)
            more, val2 = speedrun_trial(500, 125, seed=9)
            text += "\n" + "\n".join(more)
            expected[f"{root.name}/{uuid}#2"] = val2
            # and no newline after the last line (a val line)
        else:
            text += "\n"
        (root / f"{uuid}.txt").write_text(text)
        expected[f"{root.name}/{uuid}"] = val
    (root / "README.txt").write_text("# New record: 3.28 in 500 steps\n\nChanges: lr 0.0036 -> 0.004\n")
    return expected


def test_records_folder_is_one_run_per_log_and_keeps_every_val_point(tmp_path):
    expected = records_folder(tmp_path / "runs" / "2024-10-10_Muon")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok, report
    assert report.runs_found == 4 and report.added == 4, report
    got = points_by_name(db)
    assert sorted(got) == sorted(expected)
    for name, val in expected.items():
        assert got[name] == {"val_loss": val}, name
    assert report.points == sum(len(v) for v in expected.values())
    assert report.malformed_lines == 0, report.warnings
    [(readme, why)] = report_field(report, "skipped_files")
    assert readme.endswith("README.txt") and "no log lines" in why
    notes = report_field(report, "notes")
    assert any("8c9d0e1f-3333.txt" in n and "2 trials" in n for n in notes), notes
    assert any("no training loss" in n and "--metric val_loss" in n for n in notes), notes


def test_records_folder_config_from_the_printed_hyperparameters(tmp_path):
    records_folder(tmp_path / "runs" / "rec")
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "runs")
    runs = db.runs()
    assert runs.height == 4
    for row in runs.iter_rows(named=True):
        assert row["lr"] == pytest.approx(0.0036), row
        assert (row["bs"], row["seq_len"], row["bs_tokens"]) == (512, 1024, 512 * 1024), row
        assert row["steps"] == 500 and row["D"] == 500 * 512 * 1024, row
        assert row["status"] == "complete", row
        assert json.loads(row["tags"])["weight_decay"] == "0", row


def test_a_records_folder_given_as_a_file_list_skips_the_readme(tmp_path):
    folder = tmp_path / "rec"
    expected = records_folder(folder)
    db = sl.open(tmp_path / "db")
    files = sorted(folder.iterdir())  # README.txt among them: never an error
    report = db.ingest(files)
    assert report.ok and report.runs_found == len(expected), report
    # a log given by name is a run named by its file
    got = points_by_name(db)
    assert got == {name.split("/", 1)[1]: {"val_loss": val} for name, val in expected.items()}
    [(readme, _)] = report_field(report, "skipped_files")
    assert readme.endswith("README.txt")


def test_only_non_logs_given_is_not_a_usage_error(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("lr sweep, see the wiki\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest([notes])
    assert report.runs_found == 0 and not report.committed, report
    [(path, _)] = report_field(report, "skipped_files")
    assert path.endswith("notes.txt")
    [note] = report_field(report, "notes")
    assert note.startswith("no runs found in") and "train_log_<k>.txt" in note and "passed over" in note, note


def test_trials_merge_by_the_restart_rule_when_asked_and_the_replaced_points_are_counted(tmp_path):
    folder = tmp_path / "runs" / "one"
    folder.mkdir(parents=True)
    a, _ = speedrun_trial(500, 125, seed=1)
    b, val_b = speedrun_trial(500, 125, seed=2)
    (folder / "log.txt").write_text(SOURCE.format(steps=500) + "\n".join(a + b) + "\n")
    db = sl.open(tmp_path / "db")
    try:
        report = db.ingest(tmp_path / "runs", restarts="merge")  # type: ignore[call-arg]
    except TypeError:
        pytest.fail("Store.ingest(restarts='merge') is not wired through yet (IngestOptions.restarts)")
    assert report.ok and report.runs_found == 1, report
    assert points_by_name(db)["one"] == {"val_loss": val_b}
    assert report_field(report, "replaced_points") == len(val_b)


def test_trials_split_by_default(tmp_path):
    folder = tmp_path / "runs" / "one"
    folder.mkdir(parents=True)
    a, val_a = speedrun_trial(500, 125, seed=1)
    b, val_b = speedrun_trial(500, 100, seed=2)
    c, val_c = speedrun_trial(300, 100, seed=3)  # a shorter third trial
    (folder / "log.txt").write_text(SOURCE.format(steps=500) + "\n".join([*a, "trial:2/3 seed:1", *b, *c]) + "\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.runs_found == 3, report
    got = points_by_name(db)
    assert got == {"one": {"val_loss": val_a}, "one#2": {"val_loss": val_b}, "one#3": {"val_loss": val_c}}
    runs = {r["name"]: r for r in db.runs().iter_rows(named=True)}
    tags = json.loads(runs["one#2"]["tags"])
    assert (tags["trial"], tags["seed"], tags["weight_decay"]) == ("2", "1", "0"), tags
    assert "seed" not in json.loads(runs["one#3"]["tags"])
    assert runs["one#3"]["steps"] == 300 and runs["one#3"]["status"] == "complete"
    # unchanged on a second ingest, every trial
    again = db.ingest(tmp_path / "runs")
    assert again.unchanged == 3 and not again.committed, again


def test_a_final_val_line_without_newline_is_kept_and_a_cut_one_is_not(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    lines, val = speedrun_trial(250, 125, seed=0)
    (run / "log.txt").write_text(SOURCE.format(steps=250) + "\n".join(lines))  # no final newline
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.malformed_lines == 0, report
    assert points_by_name(db)["r"]["val_loss"] == val and 250 in val
    # a copy still being written: the last val line is cut inside its number
    cut = tmp_path / "cut" / "r"
    cut.mkdir(parents=True)
    text = SOURCE.format(steps=250) + "\n".join(lines)
    text = text[: text.rindex("val_loss:") + len("val_loss:3.3")]
    (cut / "log.txt").write_text(text)
    db2 = sl.open(tmp_path / "db2")
    report = db2.ingest(tmp_path / "cut")
    assert report.ok and report.malformed_lines == 1, report
    assert any("log.txt" in w and "truncated" in w for w in report.warnings), report.warnings
    assert points_by_name(db2)["r"]["val_loss"] == {s: v for s, v in val.items() if s != 250}


def test_val_only_log_takes_its_val_loss_as_the_loss_with_metric(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    lines, val = speedrun_trial(500, 125, seed=0)
    (run / "log.txt").write_text(SOURCE.format(steps=500) + "\n".join(lines) + "\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs", metric="val_loss")
    assert report.ok, report
    row = db.runs().row(0, named=True)
    assert row["final_loss"] == pytest.approx(val[500]) and row["status"] == "complete"
    assert points_by_name(db)["r"] == {"loss": val}


def test_nanogpt_prints_its_config(tmp_path):
    run = tmp_path / "runs" / "shakespeare"
    run.mkdir(parents=True)
    header = [
        "Overriding config with config/train_shakespeare_char.py:",
        "# train a miniature character-level shakespeare model",
        "out_dir = 'out-shakespeare-char'",
        "gradient_accumulation_steps = 1",
        "batch_size = 64",
        "block_size = 256 # context of up to 256 previous characters",
        "n_layer = 6",
        "n_head = 6",
        "n_embd = 384",
        "learning_rate = 1e-3 # with baby networks can afford to go a bit higher",
        "max_iters = 5000",
        "Overriding: max_iters = 100",
        "tokens per iteration will be: 16,384",
        "found vocab_size = 65 (inside data/shakespeare_char/meta.pkl)",
        "number of parameters: 10.65M",
    ]
    log = [f"iter {i}: loss {4.2 - i / 100:.4f}, time 12.00ms, mfu 1.00%" for i in range(0, 101, 10)]
    (run / "train.log").write_text("\n".join(header + log) + "\n")
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    row = db.runs().row(0, named=True)
    assert (row["lr"], row["seq_len"], row["bs_tokens"], row["bs"]) == (1e-3, 256, 16384, 64), row
    assert (row["numl"], row["h"], row["numh"], row["steps"]) == (6, 384, 6, 100), row
    assert row["N"] == 12 * 6 * 384**2 and row["D"] == 100 * 16384, row


# -- W&B chart exports ---------------------------------------------------------------------------


def chart_export(path: Path, runs: dict[str, dict[str, dict[int, float]]], steps: list[int]) -> None:
    """Write a W&B chart export: run -> metric -> {step: value} (quoted cells, no final newline)."""
    cols = [(r, m) for r, ms in runs.items() for m in ms]
    header = ["Step"] + [c for r, m in cols for c in (f"{r} - {m}", f"{r} - {m}__MIN", f"{r} - {m}__MAX")]
    rows = [header]
    for s in steps:
        row = [str(s)]
        for r, m in cols:
            v = runs[r][m].get(s)
            row += ["" if v is None else repr(v)] * 3
        rows.append(row)
    with path.open("w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writerows(rows)
    path.write_text(path.read_text().rstrip("\n"))


def wandb_runs(n: int, steps: range) -> dict[str, dict[str, dict[int, float]]]:
    return {
        f"OLMo-7B-run-{k:03d}": {"train/loss": {s: round(3.0 - s / 1e4 + k / 100, 4) for s in steps}} for k in range(n)
    }


def test_two_copies_of_one_chart_export_are_one_set_of_runs(tmp_path):
    d = tmp_path / "exports"
    d.mkdir()
    runs = wandb_runs(3, range(0, 1000, 100))
    chart_export(d / "wandb_export_2024-02-23T14_58_09.csv", runs, list(range(0, 1000, 100)))
    shutil.copy(d / "wandb_export_2024-02-23T14_58_09.csv", d / "wandb_export_2024-02-23T14_58_09 (1).csv")
    db = sl.open(tmp_path / "db")
    report = db.ingest(d)
    assert report.ok and report.runs_found == 3, report
    got = points_by_name(db)
    assert got == {r: {"loss": m["train/loss"]} for r, m in runs.items()}
    assert report_field(report, "replaced_points") == 0


def test_chart_exports_split_by_step_range_and_chart_are_joined(tmp_path):
    d = tmp_path / "exports"
    d.mkdir()
    runs = wandb_runs(2, range(0, 2000, 100))
    evals = {
        r: {"eval/loss": {s: v + 0.1 for s, v in m["train/loss"].items() if s % 500 == 0}} for r, m in runs.items()
    }
    chart_export(d / "wandb_export_a.csv", runs, list(range(0, 1000, 100)))  # first half
    chart_export(d / "wandb_export_b.csv", runs, list(range(1000, 2000, 100)))  # second half
    chart_export(d / "wandb_export_c.csv", evals, list(range(0, 2000, 500)))  # another chart
    db = sl.open(tmp_path / "db")
    report = db.ingest(sorted(d.iterdir()))  # given one by one
    assert report.ok and report.runs_found == 2, report
    got = points_by_name(db)
    for r, m in runs.items():
        assert got[r] == {"loss": m["train/loss"], "val_loss": evals[r]["eval/loss"]}, r
    # the same directory ingested whole is the same runs
    db2 = sl.open(tmp_path / "db2")
    report = db2.ingest(d)
    assert report.ok and report.runs_found == 2
    assert sorted(db2.runs()["run_id"].to_list()) == sorted(db.runs()["run_id"].to_list())


def test_chart_exports_that_disagree_keep_the_later_file_and_say_so(tmp_path):
    d = tmp_path / "exports"
    d.mkdir()
    runs = wandb_runs(1, range(0, 500, 100))
    chart_export(d / "wandb_export_1.csv", runs, list(range(0, 500, 100)))
    newer = {
        r: {m: {s: v + (0.5 if s == 400 else 0) for s, v in p.items()} for m, p in ms.items()} for r, ms in runs.items()
    }
    chart_export(d / "wandb_export_2.csv", newer, list(range(0, 500, 100)))
    db = sl.open(tmp_path / "db")
    report = db.ingest(d)
    assert report.ok, report
    [(name, metrics)] = points_by_name(db).items()
    assert metrics["loss"] == newer[name]["train/loss"]
    assert report_field(report, "replaced_points") == 1
    assert any("wandb_export_2.csv" in n and "differ" in n for n in report_field(report, "notes"))


def test_real_olmo_exports_given_one_by_one_and_twice_are_the_36_runs(tmp_path, colpret_dir):
    olmo = colpret_dir / "OLMO"
    files = sorted(olmo.glob("wandb_export_*.csv"))
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in files:  # a second copy of each export, as downloads pile up
        shutil.copy(f, copy / f.name)
        shutil.copy(f, copy / f"{f.stem} (1).csv")
    db_dir = sl.open(tmp_path / "db_dir")
    db_dir.ingest(olmo)
    db = sl.open(tmp_path / "db")
    report = db.ingest(sorted(copy.iterdir()))
    assert report.ok and report.runs_found == 36, report
    want, got = points_by_name(db_dir), points_by_name(db)
    assert got == want and len(got) == 36


def test_llmc_main_log(tmp_path):
    run = tmp_path / "runs" / "2024-10-13_llmc"
    run.mkdir(parents=True)
    lines, train, val = [], {}, {}
    for s in range(0, 201):
        if s % 50 == 0:
            val[s] = round(3.3 + 7 * math.exp(-s / 40), 4)
            lines.append(f"s:{s} tel:{val[s]:.4f}")
        if s < 200:
            train[s] = round(3.2 + 7 * math.exp(-s / 40), 6)
            lines.append(f"s:{s} trl:{train[s]:.6f} lr:0.000600 norm:0.52")
    (run / "main.log").write_text("\n".join(lines) + "\n")
    (run / "README.md").write_text("llm.c baseline\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.malformed_lines == 0, report
    assert points_by_name(db)["2024-10-13_llmc"] == {"loss": train, "val_loss": val}


def test_seeds_in_one_batch_log_with_echoed_final_evaluations(tmp_path):
    """A batch of seeds in one stdout (each seed's val curve starts at step 125, not 0), each
    followed by an echo of its last evaluations: one run per seed, echoes kept once."""
    run = tmp_path / "runs" / "soda_fade"
    run.mkdir(parents=True)
    text, expected = ["batch_start=2026-05-18T15:03:48+00:00"], {}
    for seed in range(3):
        text += [f"=== seed {seed} start ===", "experiment-logs/all-runs/942b4030.txt"]
        curve = {
            s: round(3.27 + 1.3 * math.exp(-s / 600) + seed / 1e4, 5)
            for s in [*range(125, 3001, 125), 3010, 3020, 3030, 3040]
        }
        text += [f"step:{s}/3040 val_loss:{v:.5f} train_time:{s / 3:.3f}s step_avg:356.01ms" for s, v in curve.items()]
        text += [f"=== seed {seed} exit_status=0 ==="]
        text += [
            f"step:{s}/3040 val_loss:{curve[s]:.5f} train_time:{s / 3:.3f}s step_avg:356.01ms"
            for s in (3000, 3020, 3040)
        ]
        expected["soda_fade" + (f"#{seed + 1}" if seed else "")] = {"val_loss": curve}
    (run / "batch_combined_stdout.txt").write_text("\n".join(text) + "\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.runs_found == 3, report
    assert points_by_name(db) == expected
    assert report_field(report, "replaced_points") == 0


# -- other fidelity gaps -------------------------------------------------------------------------


def test_an_edited_sidecar_config_re_ingests_the_run(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("step,loss\n" + "".join(f"{s},{4 - s / 100}\n" for s in range(1, 101)))
    (run / "config.json").write_text('{"lr": 0.001, "global_batch_size": 256}')
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").added == 1
    assert db.runs()["lr"].item() == 0.001
    (run / "config.json").write_text('{"lr": 0.002, "global_batch_size": 256}')  # same size, new lr
    report = db.ingest(tmp_path / "runs")
    assert report.updated == 1 and report.unchanged == 0, report
    assert db.runs()["lr"].item() == 0.002


def test_out_of_order_jsonl_steps_are_sorted_not_truncated(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    order = [(k * 37) % 100 for k in range(100)]  # rows from several writers
    rows = [json.dumps({"step": s, "loss": round(5 - s / 50, 2)}) for s in order]
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.points == 100, report
    assert points_by_name(db)["r"]["loss"] == {s: round(5 - s / 50, 2) for s in range(100)}


def test_a_negative_loss_is_never_complete(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("step,loss\n" + "".join(f"{s},{1 - s / 50}\n" for s in range(1, 101)))
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    assert db.runs()["status"].item() != "complete"


def test_name_templates_read_1em2_numbers(tmp_path):
    folder = tmp_path / "runs" / "results"
    folder.mkdir(parents=True)
    for lr in ["1em2", "3p5em3"]:
        lines, _ = speedrun_trial(250, 125, seed=0)
        (folder / f"sh-origpinv-s3375-lr{lr}-wd010-record-130563a2.txt").write_text("\n".join(lines) + "\n")
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs", name_template="{*}-lr{lr}-wd{wd}-{*}").ok
    assert sorted(db.runs()["lr"].to_list()) == [0.0035, 0.01]


def test_t5x_inference_eval_attaches_to_its_run(tmp_path, colpret_dir):
    base = colpret_dir / "t5_pile" / "base"
    jsonl = base / "inference_eval" / "pile_r_denoiser-metrics.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    want = {}
    for r in rows:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)):
                want.setdefault(f"inference_eval/pile_r_denoiser/{k}", {})[r["step"]] = v
    db = sl.open(tmp_path / "db")
    report = db.ingest(colpret_dir / "t5_pile")
    assert report.ok and report.runs_found == 1, report
    got = points_by_name(db)["base"]
    for metric, pts in want.items():
        assert got[metric] == pts, metric  # every digit (JSON floats read correctly rounded)
    assert "loss" in got  # the event files' series are the same run's


def test_one_run_logged_two_ways_is_one_series_per_quantity(tmp_path):
    """A Step Law log with a JSONL of the same run beside it, and a nanoGPT log with
    TensorBoard events of the same run: the text log's loss is the loss, stored once."""
    from test_readers import simple_value, write_events

    steplaw = tmp_path / "runs" / "h960_lr1e-3_bs128"
    steplaw.mkdir(parents=True)
    from test_ingest import steplaw_line

    loss = {it: round(4.0 - it / 1000, 6) for it in range(10, 1001, 10)}
    (steplaw / "train_log_0.txt").write_text("".join(steplaw_line(it, 1000, v) for it, v in loss.items()))
    # the same run's metrics exported to JSONL, loss a little different (another reduction)
    (steplaw / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": it, "loss": v + 0.01, "grad_norm": 1.0}) + "\n" for it, v in loss.items())
    )
    nano = tmp_path / "runs" / "shakespeare"
    nano.mkdir()
    train = {i: round(4.2 - i / 100, 4) for i in range(0, 101, 10)}
    (nano / "train.log").write_text("".join(f"iter {i}: loss {v:.4f}, time 10.00ms\n" for i, v in train.items()))
    write_events(
        nano / "events.out.tfevents.1.host",
        [(i, [simple_value("train/loss", v), simple_value("train/lr", 1e-3)]) for i, v in train.items()],
    )
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.runs_found == 2, report
    got = points_by_name(db)
    assert got["h960_lr1e-3_bs128"]["loss"] == loss
    assert got["shakespeare"]["loss"] == train
    assert "train/loss" not in got["shakespeare"]
    notes = report_field(report, "notes")
    assert any("metrics.jsonl" in n and "'loss'" in n for n in notes), notes
    assert any("events.out.tfevents" in n and "'loss'" in n for n in notes), notes


def test_an_eval_only_export_of_rising_accuracies_is_not_diverged(tmp_path):
    d = tmp_path / "exports"
    d.mkdir()
    acc = {"downstream_eval": {"medical": {s: round(24 + 20 * (1 - math.exp(-s / 40)), 3) for s in range(0, 360, 2)}}}
    chart_export(d / "wandb_export_2023-12-27T16_37_19.csv", acc, list(range(0, 360, 2)))
    db = sl.open(tmp_path / "db")
    assert db.ingest(d).ok
    row = db.runs().row(0, named=True)
    assert (row["name"], row["status"], row["final_loss"]) == ("downstream_eval", "complete", None), row


def test_cli_ingest_of_nothing_exits_1_and_leaves_no_store(tmp_path):
    from typer.testing import CliRunner

    from steplaw_db.cli import app

    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "README.txt").write_text("no logs here\n")
    db = tmp_path / "db"
    r = CliRunner().invoke(app, ["--db", str(db), "ingest", str(empty)])
    assert r.exit_code == 1, r.output
    assert "no runs found" in r.output
    assert not db.exists()
