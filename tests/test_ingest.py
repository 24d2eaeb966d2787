"""`ingest`: formats, configuration, bad input, restarts, incremental re-ingest and the CLI.

Bad input first: every malformed file below must fail its own run only (or skip its own bad
lines), never the ingest, never the store.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from steplaw_db.cli import app

RUN = "step2v2_0618_h960_ffnh9368_numh15_numl7_lr3.453e-04_bs736_ti{ti}_mlr1.00e-05"
N_960 = 7 * (4 * 960**2 + 3 * 960 * 9368)


def steplaw_line(it: int, total: int, loss: float | str, lr: float = 3.453e-4, bs: int = 736) -> str:
    loss_text = loss if isinstance(loss, str) else f"{loss:E}"
    return (
        f"2024-06-18 12:00:00.010 | INFO     | megatron.core.trainerv2:training_log:812 - iter {it:>8}/{total:>8} "
        f"| consumed samples: {it * bs:>12} | learning rate: {lr:E} | global batch size: {bs:>5} "
        f"| lm loss: {loss_text} | grad norm: 0.412 |\n"
    )


def write_run(root: Path, ti: int = 10, losses=None, name: str | None = None, file: str = "train_log_0.txt") -> Path:
    run = root / (name or RUN.format(ti=ti))
    run.mkdir(parents=True, exist_ok=True)
    losses = losses if losses is not None else [3.0 - 0.1 * i for i in range(1, ti + 1)]
    (run / file).write_text("".join(steplaw_line(i, ti, v) for i, v in enumerate(losses, 1)))
    return run


def loss_of(db: sl.Store, name: str) -> pl.DataFrame:
    run_id = db.runs().filter(pl.col("name") == name)["run_id"].item()
    return db.points(run_id)


# -- the happy path -------------------------------------------------------------------------


def test_step_law_run_configuration_and_points(tmp_path):
    run = write_run(tmp_path / "runs", ti=10)
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.added == 1 and report.points == 10
    row = db.runs().row(0, named=True)
    assert row["name"] == run.name and row["format"] == "steplaw"
    assert (row["h"], row["ffnh"], row["numh"], row["numl"]) == (960, 9368, 15, 7)
    assert row["N"] == N_960
    assert row["lr"] == pytest.approx(3.453e-4) and row["lr_min"] == pytest.approx(1e-5)
    assert (row["bs"], row["seq_len"], row["bs_tokens"]) == (736, 2048, 736 * 2048)
    assert row["steps"] == 10 and row["D"] == 10 * 736 * 2048
    assert row["status"] == "complete" and row["final_step"] == 10 and row["n_points"] == 10
    pts = db.points()
    assert pts["step"].to_list() == list(range(1, 11))
    assert pts["value"].to_list() == pytest.approx([3.0 - 0.1 * i for i in range(1, 11)])
    assert pts["tokens"].to_list() == [i * 736 * 2048 for i in range(1, 11)]
    assert pts["lr"].to_list() == pytest.approx([3.453e-4] * 10)
    assert pts.schema == pl.Schema(sl.store.POINTS_SCHEMA)


def test_incomplete_run_is_marked(tmp_path):
    write_run(tmp_path / "runs", ti=10, losses=[3.0, 2.9, 2.8])
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "runs")
    assert db.runs()["status"].item() == "incomplete"


@pytest.mark.parametrize("bad", ["nan", "inf", "1.0E+05"])
def test_nan_inf_or_blown_up_loss_marks_run_diverged(tmp_path, bad):
    write_run(tmp_path / "runs", ti=6, losses=[3.0, 2.9, 2.8, 2.9, 4.0, bad])
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok
    assert db.runs()["status"].item() == "diverged"
    values = db.points()["value"].to_list()
    assert len(values) == 6 and values[:3] == [3.0, 2.9, 2.8]
    assert not math.isfinite(values[-1]) or values[-1] == 1e5


def test_jsonl_and_csv_metrics_with_lr_and_extra_metrics(tmp_path):
    a = tmp_path / "runs" / "a"
    a.mkdir(parents=True)
    lines = [{"step": s, "train/loss": 3.0 - s / 100, "lr": 1e-3, "grad_norm": 0.5} for s in range(10, 60, 10)]
    lines.append({"step": 60, "train/loss": float("nan")})
    (a / "metrics.jsonl").write_text("".join(json.dumps(x).replace("NaN", "NaN") + "\n" for x in lines))
    (a / "config.json").write_text(json.dumps({"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4}))
    b = tmp_path / "runs" / "b"
    b.mkdir()
    (b / "metrics.csv").write_text("step,loss,lr,val_loss\n1,3.5,0.001,\n2,3.4,0.001,3.6\n3,3.3,0.0009,\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs", metrics=["grad_norm"], set=["seq_len=1024", "bs=8"], recipe="web")
    assert report.ok and report.added == 2
    runs = db.runs().sort("name")
    assert runs["format"].to_list() == ["jsonl", "csv"]
    assert runs["recipe"].to_list() == ["web", "web"]
    assert runs["bs_tokens"].to_list() == [8 * 1024, 8 * 1024]
    assert runs["N"][0] == 4 * (4 * 256**2 + 3 * 256 * 1024)
    a_id, b_id = runs["run_id"].to_list()
    la = db.points(a_id)
    assert la["step"].to_list() == [10, 20, 30, 40, 50, 60] and math.isnan(la["value"][-1])
    assert db.points(a_id, metric="grad_norm")["value"].to_list() == [0.5] * 5
    lb = db.points(b_id)
    assert lb["value"].to_list() == [3.5, 3.4, 3.3] and lb["lr"].to_list() == [0.001, 0.001, 0.0009]


def test_metric_option_chooses_another_loss_field(tmp_path):
    a = tmp_path / "runs" / "a"
    a.mkdir(parents=True)
    (a / "m.csv").write_text("step,loss,my_loss\n1,3.0,9.0\n2,2.9,8.0\n")
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs", metric="my_loss").ok
    assert db.points()["value"].to_list() == [9.0, 8.0]


def test_name_template_and_sidecar_yaml_override(tmp_path):
    run = tmp_path / "runs" / "exp_w512_d8_lr0.002"
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n')
    (run / "config.yaml").write_text("num_layers: 6\nffn_hidden_size: 2048\nglobal_batch_size: 32\n")
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs", name_template="exp_w{h}_d{numl}_lr{lr}").ok
    row = db.runs().row(0, named=True)
    # the sidecar overrides the name's numl; lr from the name
    assert (row["h"], row["numl"], row["ffnh"], row["bs"]) == (512, 6, 2048, 32)
    assert row["lr"] == pytest.approx(0.002)
    assert row["N"] == 6 * (4 * 512**2 + 3 * 512 * 2048)


# -- bad input ------------------------------------------------------------------------------


def test_truncated_and_malformed_lines_are_skipped_and_counted(tmp_path):
    run = write_run(tmp_path / "runs", ti=5)
    log = run / "train_log_0.txt"
    text = log.read_text().splitlines(keepends=True)
    text.insert(2, text[2][: text[2].index("lm loss:") + 9] + "\n")  # a line cut in the middle of its fields
    text.append(text[-1][:120])  # a truncated last line (the job was killed mid-write)
    log.write_text("".join(text))
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.points == 5
    assert report.malformed_lines >= 1
    assert any("train_log_0.txt:3" in w for w in report.warnings), report.warnings


def test_non_utf8_bytes_in_a_line(tmp_path):
    run = write_run(tmp_path / "runs", ti=4)
    log = run / "train_log_0.txt"
    data = log.read_bytes().replace(b"INFO", b"INF\xff\xfe", 1)
    log.write_bytes(b"\xc3\x28 garbage header \x80\n" + data)
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.points == 4


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (bytes(range(256)) * 64, "binary"),
        (b"hello world\nno metrics here\n", "loss"),
    ],
    ids=["empty", "binary", "no-loss"],
)
def test_bad_file_fails_its_run_only(tmp_path, content, reason):
    write_run(tmp_path / "runs", ti=3)
    bad = tmp_path / "runs" / "bad_run"
    bad.mkdir()
    (bad / "train_log_0.txt").write_bytes(content)
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert not report.ok and report.added == 1 and report.committed
    [(source, why)] = report.failed
    assert "bad_run" in source and reason in why.lower()
    assert db.runs().height == 1


def test_strict_commits_nothing_when_a_run_fails(tmp_path):
    write_run(tmp_path / "runs", ti=3)
    (tmp_path / "runs" / "bad").mkdir()
    (tmp_path / "runs" / "bad" / "metrics.jsonl").write_text("")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs", strict=True)
    assert report.strict_refused and not report.committed
    assert db.version == 0 and db.runs().height == 0


def test_duplicate_steps_and_restart_later_wins(tmp_path):
    run = tmp_path / "runs" / RUN.format(ti=6)
    run.mkdir(parents=True)
    first = [steplaw_line(i, 6, 3.0 - 0.1 * i) for i in range(1, 5)]  # steps 1..4, then a crash
    (run / "train_log_0.txt").write_text("".join(first))
    resumed = [steplaw_line(i, 6, 2.0 - 0.1 * i) for i in range(3, 7)]  # restart from step 3
    (run / "train_log_1.txt").write_text("".join(resumed))
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    pts = db.points()
    assert pts["step"].to_list() == [1, 2, 3, 4, 5, 6]
    assert pts["value"].to_list() == pytest.approx([2.9, 2.8, 1.7, 1.6, 1.5, 1.4])
    assert db.runs()["status"].item() == "complete"


def test_steps_going_backwards_within_one_file(tmp_path):
    losses = [3.0, 2.9, 2.8, 2.7]
    run = write_run(tmp_path / "runs", ti=4, losses=losses)
    log = run / "train_log_0.txt"
    log.write_text(log.read_text() + steplaw_line(3, 4, 1.0) + steplaw_line(4, 4, 0.9) + steplaw_line(4, 4, 0.8))
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "runs")
    pts = db.points()
    assert pts["step"].to_list() == [1, 2, 3, 4]
    assert pts["value"].to_list() == pytest.approx([3.0, 2.9, 1.0, 0.8])


# -- incremental ----------------------------------------------------------------------------


def test_incremental_reingest_skips_unchanged_and_replaces_grown(tmp_path):
    write_run(tmp_path / "runs", ti=10, losses=[3.0, 2.9, 2.8])
    write_run(tmp_path / "runs", ti=20)
    db = sl.open(tmp_path / "db")
    first = db.ingest(tmp_path / "runs")
    assert first.added == 2
    again = db.ingest(tmp_path / "runs")
    assert (again.added, again.updated, again.unchanged, again.committed) == (0, 0, 2, False)
    # the incomplete run's log grows: its points are replaced, the other run is untouched
    write_run(tmp_path / "runs", ti=10)
    grown = db.ingest(tmp_path / "runs")
    assert (grown.added, grown.updated, grown.unchanged) == (0, 1, 1)
    runs = db.runs()
    assert sorted(runs["status"].to_list()) == ["complete", "complete"]
    assert db.points().height == 30
    forced = db.ingest(tmp_path / "runs", force=True)
    assert (forced.unchanged == 0 and forced.updated == 0) or forced.updated + forced.unchanged == 2
    assert db.points().height == 30


def test_run_ids_are_stable_across_stores(tmp_path):
    write_run(tmp_path / "runs", ti=5)
    a, b = sl.open(tmp_path / "a"), sl.open(tmp_path / "b")
    a.ingest(tmp_path / "runs")
    b.ingest(tmp_path / "runs")
    assert a.runs()["run_id"].to_list() == b.runs()["run_id"].to_list()
    assert a.runs()["run_id"].dtype == pl.Int64


# -- the CLI --------------------------------------------------------------------------------


def test_cli_exit_codes_and_runs_output(tmp_path):
    runner = CliRunner()
    write_run(tmp_path / "runs", ti=3)
    db = str(tmp_path / "db")
    ok = runner.invoke(app, ["--db", db, "ingest", str(tmp_path / "runs")])
    assert ok.exit_code == 0, ok.output
    (tmp_path / "runs" / "bad").mkdir()
    (tmp_path / "runs" / "bad" / "train_log_0.txt").write_bytes(b"")
    some_failed = runner.invoke(app, ["--db", db, "ingest", str(tmp_path / "runs")])
    assert some_failed.exit_code == 1 and "bad" in some_failed.output
    usage = runner.invoke(app, ["--db", db, "ingest", str(tmp_path / "runs"), "--format", "nope"])
    assert usage.exit_code == 2
    missing = runner.invoke(app, ["--db", db, "ingest", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "nowhere" in missing.output  # a path the user typed
    for fmt, reader in [("csv", pl.read_csv), ("json", pl.read_json), ("parquet", pl.read_parquet)]:
        out = tmp_path / f"runs.{fmt}"
        res = runner.invoke(app, ["--db", db, "runs", "--format", fmt, "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert reader(out)["name"].to_list() == [RUN.format(ti=3)]
    table = runner.invoke(app, ["--db", db, "runs"])
    assert table.exit_code == 0 and "h960" in table.output
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and sl.__version__ in version.output


def test_cli_db_from_environment(tmp_path, monkeypatch):
    write_run(tmp_path / "runs", ti=3)
    monkeypatch.setenv("STEPLAW_DB", str(tmp_path / "envdb"))
    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert sl.open(tmp_path / "envdb").runs().height == 1


def test_many_extra_metrics_from_text_logs(tmp_path):
    run = write_run(tmp_path / "runs", ti=3)
    log = run / "train_log_0.txt"
    extra = "".join(f" m{k}: {k}.5 |" for k in range(10))
    log.write_text("".join(line.rstrip("\n") + extra + "\n" for line in log.read_text().splitlines(keepends=True)))
    db = sl.open(tmp_path / "db")
    names = ["grad norm"] + [f"m{k}" for k in range(10)]
    assert db.ingest(tmp_path / "runs", metrics=names).ok
    stored = db.points(metric=None).group_by("metric").agg(pl.col("value").first(), pl.len())
    got = dict(zip(stored["metric"], stored["value"], strict=True))
    assert got == {"loss": pytest.approx(2.9), "grad norm": 0.412, **{f"m{k}": k + 0.5 for k in range(10)}}
    assert (stored["len"] == 3).all()


def test_several_metric_tables_in_one_directory_are_several_runs(tmp_path):
    sweep = tmp_path / "runs" / "sweep"
    sweep.mkdir(parents=True)
    for name, scale in [("a", 1.0), ("b", 2.0), ("c", 3.0)]:
        (sweep / f"{name}.csv").write_text(
            "step,lr,loss\r\n" + "".join(f"{s},0.001,{scale * 10 / s}\r\n" for s in range(1, 6))
        )
    one = tmp_path / "runs" / "one"
    one.mkdir()
    (one / "metrics.csv").write_text("step,loss\n1,3.0\n2,2.5\n")
    (one / "eval.csv").write_text("step,eval/loss\n2,2.7\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.added == 4, report.summary()
    runs = db.runs().sort("name")
    assert runs["name"].to_list() == ["one", "sweep/a", "sweep/b", "sweep/c"]
    c = db.points(runs.filter(pl.col("name") == "sweep/c")["run_id"].item())
    assert c["value"].to_list() == pytest.approx([30 / s for s in range(1, 6)])
    both = db.points(runs.filter(pl.col("name") == "one")["run_id"].item(), metric=None)
    assert sorted(both["metric"].unique()) == ["loss", "val_loss"]


def test_multipowerlaw_directory_gives_one_run_per_schedule(tmp_path, loss_curves):
    mpl = loss_curves / "csv_25"
    db = sl.open(tmp_path / "db")
    report = db.ingest(mpl)
    assert report.ok and report.added == 9, report.summary()
    assert set(db.runs()["name"]) == {f"csv_25/{p.stem}" for p in mpl.glob("*.csv")}


def test_sidecar_config_keys_are_typed_columns_and_group_by(tmp_path):
    """Every key of a sidecar config is kept (issue 14/15): a key that is no run field, such as
    a MoE design's name, is a typed column of runs() and final_losses(), nested keys joined with
    '.', and `optima --by N,D,moe_name` groups by it."""
    lr_opt = {"e8k1": 1e-3, "e16k2": 4e-3}
    for design, best in lr_opt.items():
        for lr in (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2):
            for bs in (64, 128, 256):
                run = tmp_path / "runs" / f"{design}_lr{lr:g}_bs{bs}"
                run.mkdir(parents=True)
                final = 2.5 + 0.05 * math.log(lr / best) ** 2 + 0.02 * math.log(bs / 128) ** 2
                (run / "m.csv").write_text(
                    "step,loss\n" + "".join(f"{s},{final + (100 - s) / 50}\n" for s in (50, 100))
                )
                config = {
                    "learning_rate": lr,
                    "global_batch_size": bs,
                    "N": 2e8,
                    "train_tokens": 1e10,
                    "moe_name": design,
                    "model": {"router": {"aux_loss": 0.01, "jitter": False}, "num_layers": 12},
                    "warmup": 100,
                }
                (run / "config.json").write_text(json.dumps(config))
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.added == 42, report.failed
    runs, final = db.runs(), db.final_losses()
    for frame in (runs, final):
        assert frame.schema["moe_name"] == pl.String and set(frame["moe_name"]) == set(lr_opt)
        assert frame.schema["model.router.aux_loss"] == pl.Float64 and (frame["model.router.aux_loss"] == 0.01).all()
        assert frame.schema["model.router.jitter"] == pl.Boolean and frame.schema["warmup"] == pl.Int64
        assert (frame["numl"] == 12).all()  # a run field at any depth is the field, not a tag
    r = CliRunner().invoke(app, ["--db", str(db.path), "optima", "--by", "N,D,moe_name", "--format", "csv"])
    assert r.exit_code == 0, r.output
    table = pl.read_csv(r.stdout.encode()).sort("moe_name")
    assert table["moe_name"].to_list() == ["e16k2", "e8k1"]
    assert table["lr_opt"].to_list() == pytest.approx([4e-3, 1e-3], rel=0.05)


def checkpoint_table(stop_early: dict[tuple[float, float, int], int] | None = None) -> pl.DataFrame:
    """A table shaped like published checkpoint tables: one row per checkpoint, the run's
    configuration repeated on each, the planned total_steps beside the current_steps, the
    tokens and FLOPs so far (FLOPs past an i64 for the larger models)."""
    rows = []
    for n in (1e8, 1e9, 1e10):
        for lr in (1e-3, 2e-3, 4e-3, 8e-3):
            for bs in (64, 128):
                total = 20 * 100
                last = (stop_early or {}).get((n, lr, bs), total)
                for step in range(100, last + 1, 100):
                    tokens = step * bs * 2048
                    loss = 2.0 + 5.0 * (step / total) ** -0.3 * (n / 1e8) ** -0.1 + 0.1 * math.log(lr / 2e-3) ** 2
                    rows.append(
                        {
                            "num_params": int(n), "lr": lr, "batch_size": bs, "total_steps": total,
                            "current_steps": step, "tokens_seen": tokens, "flops": str(6 * int(n) * tokens),
                            "loss": loss, "val_loss": loss + 0.05,
                        }
                    )  # fmt: skip
    return pl.DataFrame(rows)


def test_a_checkpoint_table_is_runs_with_one_point_per_checkpoint(tmp_path):
    early = {(1e9, 1e-3, 64): 1200, (1e10, 8e-3, 128): 700}
    table = checkpoint_table(early)
    assert table.height == 24 * 20 - 8 - 13
    path = tmp_path / "ckpt.csv"
    # FLOP counts as published: integers, some past an i64 (read as floats, not an error)
    table.write_csv(path)
    assert max(int(f) for f in table["flops"]) > 2**63
    db = sl.open(tmp_path / "db")
    report = db.import_table(path)
    assert report.ok and report.added == 24, report.failed
    assert report.notes[0].startswith("one row per checkpoint: 459 rows grouped into 24 runs by num_params, lr, ")
    assert "flops" in report.notes[0] and "'current_steps'" in report.notes[0]
    runs = db.runs()
    assert runs.height == 24 and (runs["format"] == "checkpoints").all()
    assert sorted(runs.filter(pl.col("status") == "incomplete")["n_points"].to_list()) == [14, 24]
    assert (runs.filter(pl.col("status") != "incomplete")["status"] == "complete").all()
    assert "flops" not in runs.columns and "tokens_seen" not in runs.columns  # per checkpoint, no config
    assert (runs["steps"] == 2000).all() and (runs["D"] == 2000 * runs["bs"] * 2048).all()
    # every checkpoint a point; final loss = the last checkpoint's
    pts = db.points(metric=None)
    assert pts.height == 2 * table.height
    for r in runs.iter_rows(named=True):
        key = (r["N"], r["lr"], r["bs"])
        rows = table.filter(num_params=key[0], lr=key[1], batch_size=key[2]).sort("current_steps")
        assert r["final_loss"] == rows["loss"][-1] and r["final_step"] == rows["current_steps"][-1]
        mine = pts.filter(run_id=r["run_id"], metric="loss").sort("step")
        assert mine["step"].to_list() == rows["current_steps"].to_list()
        assert mine["tokens"].to_list() == rows["tokens_seen"].to_list()
    # one final loss a run, the last checkpoint's: what a loss-law fit of this store uses
    final = db.final_losses(smooth="none")
    last = table.sort("current_steps").group_by("num_params", "lr", "batch_size").agg(pl.col("loss").last())
    joined = final.join(last, left_on=["N", "lr", "bs"], right_on=["num_params", "lr", "batch_size"])
    assert final.height == joined.height == 24 and (joined["raw_loss"] == joined["loss_right"]).all()
    # importing again changes nothing; --one-row-per-run is the old behaviour
    again = db.import_table(path)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 24)
    flat = sl.open(tmp_path / "flat").import_table(path, one_row_per_run=True)
    assert flat.added == table.height and not flat.notes
    r = CliRunner().invoke(app, ["--db", str(tmp_path / "cli"), "import-table", str(path), "--one-row-per-run"])
    assert r.exit_code == 0, r.output
    assert sl.open(tmp_path / "cli").runs().height == table.height


def test_checkpoint_table_without_steps_or_with_one_row_per_run_is_a_summary_table(tmp_path):
    # one row per run (a step column, but no two rows share a configuration): summary rows
    table = checkpoint_table().group_by("num_params", "lr", "batch_size").agg(pl.all().last())
    table.write_csv(tmp_path / "last.csv")
    db = sl.open(tmp_path / "db")
    report = db.import_table(tmp_path / "last.csv")
    assert report.added == 24 and not report.notes
    assert (db.runs()["status"] == "summary-only").all()


def megatron_line(it: int, total: int, loss: float) -> str:
    return (
        f" [2024-06-18 12:00:00] iteration {it:>8}/{total:>8} | consumed samples: {it * 512:>12} | "
        f"learning rate: 1.000000E-04 | global batch size:   512 | lm loss: {loss:.6E} | loss scale: 1.0 |\n"
    )


def test_megatron_log_of_several_trials_is_one_run_per_trial_or_merged(tmp_path):
    """A Megatron log whose iteration goes back to its first (the job ran the trial again
    from scratch) holds several trials: one run each by default (`name#2`), every point kept;
    `--restarts merge` keeps one run, the later trial replacing the earlier's points (counted).
    A resume from a checkpoint (back, but not to the first step) stays one run."""
    run = tmp_path / "runs" / "m"
    run.mkdir(parents=True)
    first = [megatron_line(i, 100, 5.0 - i / 100) for i in range(10, 60, 10)]
    resumed = [megatron_line(i, 100, 4.0 - i / 100) for i in range(40, 110, 10)]  # from a checkpoint
    second = [megatron_line(i, 100, 3.0 - i / 100) for i in range(10, 110, 10)]  # from scratch
    (run / "train.log").write_text("".join(first + resumed + second))
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.added == 2, report.failed
    assert any("2 trials in one log" in n for n in report.notes), report.notes
    runs = {r["name"]: r for r in db.runs().to_dicts()}
    assert set(runs) == {"m", "m#2"}
    one = db.points(runs["m"]["run_id"]).sort("step")
    assert one["step"].to_list() == list(range(10, 110, 10))  # the resume replaced 40, 50
    assert one["value"][-1] == pytest.approx(4.0 - 1.0)
    two = db.points(runs["m#2"]["run_id"]).sort("step")
    assert two["step"].to_list() == list(range(10, 110, 10))
    assert two["value"].to_list() == pytest.approx([3.0 - i / 100 for i in range(10, 110, 10)])
    assert report.replaced_points == 2
    merged = sl.open(tmp_path / "merged")
    report = merged.ingest(tmp_path / "runs", restarts="merge")
    assert report.added == 1 and report.replaced_points == 2 + 10
    (row,) = merged.runs().to_dicts()
    assert row["final_loss"] == pytest.approx(2.0) and row["n_points"] == 10
