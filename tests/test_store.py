"""The store: import of summary tables, the commit protocol under crashes and concurrent
writers, compaction, and reading back through Polars."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

import steplaw_db as sl
from conftest import SYNTH_CELLS, SYNTH_ROWS
from steplaw_db import synth

#: Runs and cells of each ``dataset`` (conftest).
ROWS = {"public": 1911, "synthetic": SYNTH_ROWS}
CELLS = {"public": 17, "synthetic": SYNTH_CELLS}


def _sweep(path: Path, **kw) -> pl.DataFrame:
    kw.setdefault("points", 20)
    kw.setdefault("cells", [(960, 9368, 15, 7, 2e10)])
    return synth.write_sweep(path, **kw)


def test_import_step_law_csv_with_no_options(tmp_path, final_csv, dataset):
    db = sl.open(tmp_path / "db")
    report = db.import_table(final_csv)
    raw = pl.read_csv(final_csv)
    assert report.ok and report.added == len(raw) == ROWS[dataset]
    runs = db.runs()
    assert len(runs) == ROWS[dataset]
    assert (runs["status"] == "summary-only").all()
    # Configuration read from the table: bs is in sequences of 2048.
    joined = runs.join(raw.rename({"exp_name": "name"}), on="name", suffix="_csv")
    assert len(joined) == ROWS[dataset]
    assert (joined["bs_tokens"] == joined["bs_csv"] * 2048).all()
    assert (joined["N"] == joined["N_csv"]).all()
    assert (joined["D"] == joined["D_csv"]).all()
    assert (joined["lr"] == joined["lr_csv"]).all()
    assert (joined["steps"] == joined["ti"]).all()
    assert (joined["final_loss"] - joined["loss"]).abs().max() == 0
    assert (joined["smooth_loss"] - joined["smooth loss"]).abs().max() < 1e-12
    assert runs.group_by("N", "D").len().height == CELLS[dataset]
    # Importing the same table again changes nothing.
    again = db.import_table(final_csv)
    assert (again.added, again.updated, again.unchanged, again.committed) == (0, 0, ROWS[dataset], False)


def test_import_table_with_map_and_errors(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("run,final,batch,width,depth,ffn\nr1,2.5,64,256,4,1024\nr2,2.4,128,256,4,1024\n")
    db = sl.open(tmp_path / "db")
    with pytest.raises(sl.InvalidArgumentError, match="nope"):
        db.import_table(table, map={"nope": "bs"})
    report = db.import_table(table, map=["final=final_loss", "batch=bs", "width=h", "depth=numl", "ffn=ffnh"])
    assert report.added == 2
    runs = db.runs().sort("name")
    assert runs["name"].to_list() == ["r1", "r2"]
    assert runs["final_loss"].to_list() == [2.5, 2.4]
    assert runs["N"].to_list() == [4 * (4 * 256**2 + 3 * 256 * 1024)] * 2
    assert runs["bs_tokens"].to_list() == [64 * 2048, 128 * 2048]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,loss,numl\nok,2.5,4\nbroken,2.4,four\n")
    r = db.import_table(bad)
    assert r.added == 1 and len(r.failed) == 1
    assert "bad.csv:3" in r.failed[0][0] and "numl" in r.failed[0][1]


def test_points_and_runs_round_trip(tmp_path):
    truth = _sweep(tmp_path / "sweep", fmt="csv", n_lr=2, n_bs=2, diverge=False)
    db = sl.open(tmp_path / "db")
    r = db.ingest(tmp_path / "sweep")
    assert r.added == len(truth) == 4 and r.ok
    pts = db.points()
    assert pts.columns == ["run_id", "metric", "step", "tokens", "value", "lr"]
    runs = db.runs()
    for row in runs.iter_rows(named=True):
        csv = pl.read_csv(Path(row["source"]) / "metrics.csv")
        mine = pts.filter(pl.col("run_id") == row["run_id"]).sort("step")
        assert mine["step"].to_list() == csv["step"].to_list()
        assert mine["value"].to_list() == csv["loss"].to_list()
        assert mine["lr"].to_list() == csv["lr"].to_list()
        assert (mine["tokens"] == mine["step"] * row["bs_tokens"]).all()
        assert row["n_points"] == len(csv) and row["final_step"] == csv["step"][-1]
    # the files are plain Parquet that Polars reads as they are
    files = db.files()
    assert pl.read_parquet(files["runs_file"]).height == 4
    assert sum(pl.read_parquet(s["file"]).height for s in files["segments"]) == len(pts)
    assert db.points(runs["run_id"][0]).height == runs["n_points"][0]
    assert db.scan_points().select(pl.len()).collect().item() == len(pts)


def _write_ingest_script(tmp_path: Path, sweep: Path, db: Path) -> Path:
    script = tmp_path / "ingest.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import steplaw_db as sl
            r = sl.open({str(db)!r}).ingest({str(sweep)!r}, wait=30, force="--force" in sys.argv)
            print(r.version)
            """
        )
    )
    return script


@pytest.mark.parametrize("where", ["after-segments", "before-manifest"])
def test_crash_during_commit_leaves_previous_version(tmp_path, where):
    _sweep(tmp_path / "a", n_lr=2, n_bs=2)
    _sweep(tmp_path / "b", n_lr=3, n_bs=2, cells=[(1280, 9472, 10, 10, 2e10)])
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "a")
    before_runs, before_points = db.runs(), db.points(metric=None)
    script = _write_ingest_script(tmp_path, tmp_path / "b", tmp_path / "db")
    env = dict(os.environ, STEPLAW_DB_CRASH_AT=where)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "simulated crash" in proc.stderr
    again = sl.open(tmp_path / "db")
    assert again.version == 1
    assert again.runs().equals(before_runs)
    assert again.points(metric=None).equals(before_points)
    # the next writer is not blocked by the dead one, and the garbage goes with compact
    r = again.ingest(tmp_path / "b")
    assert r.added == 6 and r.version == 2
    c = again.compact()
    assert c["files_removed"] >= 1
    assert again.runs().height == 10
    assert again.points(metric=None).height == before_points.height + r.points


def test_sigkill_at_random_moments_never_corrupts(tmp_path):
    _sweep(tmp_path / "sweep", n_lr=7, n_bs=5, points=400, cells=[(960, 9368, 15, 7, 2e10), (1280, 9472, 10, 10, 2e10)])
    script = _write_ingest_script(tmp_path, tmp_path / "sweep", tmp_path / "db")
    for i, delay in enumerate([0.05, 0.15, 0.3, 0.5, 0.8]):
        proc = subprocess.Popen(
            [sys.executable, str(script), "--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        db = sl.open(tmp_path / "db")
        runs = db.runs()
        # Either nothing or everything of the sweep is there, and every run's points are whole.
        assert runs.height in (0, 70), (i, runs.height)
        if runs.height:
            counts = db.points().group_by("run_id").len()
            merged = runs.join(counts, on="run_id")
            assert (merged["len"] == merged["n_points"]).all()


def _hold_lock(tmp_path: Path, db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the store's write lock for ``seconds`` (once it printed 'locked')."""
    holder = tmp_path / "hold.py"
    holder.write_text(
        textwrap.dedent(
            f"""
            import fcntl, sys, time
            f = open({str(db / "_lock")!r}, "a+")
            fcntl.flock(f, fcntl.LOCK_EX)
            print("locked", flush=True)
            time.sleep({seconds})
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(holder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_gets_a_clear_error(tmp_path):
    _sweep(tmp_path / "sweep", n_lr=2, n_bs=2)
    db = sl.open(tmp_path / "db")
    proc = _hold_lock(tmp_path, tmp_path / "db", 30)
    try:
        with pytest.raises(sl.StoreLockedError, match="locked by another writer"):
            db.ingest(tmp_path / "sweep")
        assert db.version == 0
        # Refused before parsing: no segment was written to be thrown away.
        assert not list((tmp_path / "db" / "points").iterdir())
    finally:
        proc.kill()
        proc.wait()
    assert db.ingest(tmp_path / "sweep", wait=5).added == 4


def test_another_writer_commits_while_an_ingest_parses(tmp_path):
    """An ingest parses and writes its segments without the store's lock: a second ingest (of
    other runs) and a compaction commit meanwhile, and both ingests' runs land."""
    _sweep(tmp_path / "a", n_lr=2, n_bs=2)
    _sweep(tmp_path / "b", n_lr=3, n_bs=2, cells=[(1280, 9472, 10, 10, 2e10)])
    db = sl.open(tmp_path / "db")
    script = _write_ingest_script(tmp_path, tmp_path / "a", tmp_path / "db")
    # The first ingest stops after parsing and writing its segments, before it commits.
    env = dict(os.environ, STEPLAW_DB_PAUSE_AT="ingest-before-commit", STEPLAW_DB_PAUSE_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        paused = tmp_path / "ingest-before-commit.paused"
        deadline = time.monotonic() + 60
        while not paused.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert paused.exists(), "the first ingest never reached its commit"
        r = db.ingest(tmp_path / "b", wait=0)  # no wait: the lock is free while the other parses
        assert r.added == 6 and r.version == 1
        assert db.compact(keep=1)["version"] == 2  # nor does compaction delete its segments
    finally:
        (tmp_path / "ingest-before-commit.go").touch()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "3"
    assert db.runs().height == 10
    db.verify()
    assert db.points(metric=None).height == db.runs()["n_points"].sum()


def test_an_ingest_waits_at_commit_for_a_writer_that_came_while_it_parsed(tmp_path):
    """`wait=0` refuses a store locked when the ingest begins, but a parse is not thrown away
    because another writer took the lock meanwhile: the commit waits for it."""
    _sweep(tmp_path / "a", n_lr=2, n_bs=2)
    sl.open(tmp_path / "db")
    script = tmp_path / "ingest0.py"
    db, sweep = str(tmp_path / "db"), str(tmp_path / "a")
    script.write_text(f"import steplaw_db as sl\nprint(sl.open({db!r}).ingest({sweep!r}, wait=0).version)\n")
    env = dict(os.environ, STEPLAW_DB_PAUSE_AT="ingest-before-commit", STEPLAW_DB_PAUSE_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    paused = tmp_path / "ingest-before-commit.paused"
    deadline = time.monotonic() + 60
    while not paused.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert paused.exists(), "the ingest never reached its commit"
    holder = _hold_lock(tmp_path, tmp_path / "db", 1.5)
    (tmp_path / "ingest-before-commit.go").touch()
    out, err = proc.communicate(timeout=60)
    holder.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "1"
    assert sl.open(tmp_path / "db").runs().height == 4


def test_replaced_runs_and_compact(tmp_path):
    _sweep(tmp_path / "sweep", fmt="csv", n_lr=2, n_bs=2, diverge=False)
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "sweep")
    # Grow a run that shares its segment with others (4 runs over 2 ingest workers: some
    # segment holds two or more), so that segment keeps live runs beside a replaced one.
    shared = next(s for s in db.files()["segments"] if len(s["run_ids"]) >= 2)
    source = db.runs().filter(pl.col("run_id") == shared["run_ids"][0])["source"].item()
    metrics = Path(source) / "metrics.csv"
    lines = metrics.read_text().splitlines()
    last_step = int(lines[-1].split(",")[0])
    metrics.write_text("\n".join([*lines, f"{last_step + 10},2.0,1e-5", f"{last_step + 20},1.9,1e-5"]) + "\n")
    r = db.ingest(tmp_path / "sweep")
    assert (r.updated, r.unchanged) == (1, 3)
    runs = db.runs()
    pts = db.points()
    assert len(pts) == runs["n_points"].sum()  # the replaced rows are not visible
    assert pts.filter(pl.col("step") == last_step + 20)["value"].to_list() == [1.9]
    files_before = db.files()
    assert any(s["live_runs"] is not None for s in files_before["segments"])
    c = db.compact(keep=1)
    assert c["versions_kept"] == [c["version"]]
    # every segment here is small (or holds a replaced run): all are merged into one
    assert c["segments_rewritten"] == len(files_before["segments"]) >= 2
    assert len(db.files()["segments"]) == 1 and c["files_removed"] >= 3
    # After compact the directory holds exactly the current data: glob it.
    globbed = pl.read_parquet(str(tmp_path / "db" / "points" / "*.parquet"))
    assert globbed.sort("run_id", "metric", "step").equals(db.points(metric=None).sort("run_id", "metric", "step"))
    assert len(list((tmp_path / "db" / "runs").glob("*.parquet"))) == 1
    assert db.runs().sort("run_id").equals(runs.sort("run_id"))


def test_compact_keeps_recent_versions_readable_by_default(tmp_path):
    """A reader that opened the version before a compaction can still read its files."""
    _sweep(tmp_path / "a", n_lr=3, n_bs=2)
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "a")
    _sweep(tmp_path / "b", n_lr=2, n_bs=2, cells=[(1280, 9472, 10, 10, 2e10)])
    db.ingest(tmp_path / "b")
    before = db.files()
    c = db.compact()
    assert c["version"] == before["version"] + 1
    assert before["version"] in c["versions_kept"] and c["version"] in c["versions_kept"]
    for seg in before["segments"]:
        assert Path(seg["file"]).is_file(), seg["file"]
    # --keep 1 then removes them.
    c = db.compact(keep=1)
    assert c["versions_kept"] == [c["version"]]
    assert not any(Path(seg["file"]).is_file() for seg in before["segments"])
    assert db.points(metric=None).height == db.runs()["n_points"].sum()


def test_points_of_some_runs_read_only_their_segments_and_equal_the_full_read(tmp_path):
    _sweep(tmp_path / "a", n_lr=3, n_bs=2)
    _sweep(tmp_path / "b", n_lr=2, n_bs=2, cells=[(1280, 9472, 10, 10, 2e10)])
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "a")
    db.ingest(tmp_path / "b")
    # Replace one run of the first segment: its old points stay there, not live.
    first = sorted((tmp_path / "a").iterdir())[0]
    log = next(p for p in first.iterdir() if p.is_file() and p.suffix == ".txt")
    log.write_text(log.read_text() + log.read_text().splitlines(keepends=True)[-1])
    assert db.ingest(tmp_path / "a").updated == 1
    assert len(db.files()["segments"]) >= 3
    everything = db.points(metric=None)
    for run_id in db.runs()["run_id"]:
        one = db.points(run_id, metric=None)
        assert one.height > 0
        assert one.equals(everything.filter(pl.col("run_id") == run_id)), run_id
    ids = db.runs()["run_id"].to_list()[::3]
    order = ["run_id", "metric", "step"]
    assert db.points(ids, metric=None).sort(order).equals(everything.filter(pl.col("run_id").is_in(ids)).sort(order))
    assert db.points([], metric=None).height == 0
