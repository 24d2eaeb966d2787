"""The store at its boundary and over time (issue 13, sections 4-6): store paths, options in the
fingerprint, a full disk, the same directory named three ways, moved sweeps, removal."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

import steplaw_db as sl


def _runs(root: Path, n: int = 3, points: int = 50, first: int = 0) -> Path:
    """``n`` run directories of one ``metrics.csv`` each under ``root``."""
    for i in range(first, first + n):
        d = root / f"run{i}"
        d.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{s},{3.0 + i / 10 + 1 / s}\n" for s in range(1, points + 1))
        (d / "metrics.csv").write_text("step,loss\n" + rows)
    return root


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steplaw_db.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- section 5: the store path ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["--db", "env"])
def test_an_empty_store_path_is_refused_and_the_current_directory_left_alone(tmp_path, how):
    _runs(tmp_path / "runs")
    args, env = (["--db", ""], None) if how == "--db" else ([], {"STEPLAW_DB": ""})
    r = _cli(*args, "ingest", "runs", cwd=tmp_path, env=env)
    assert r.returncode == 2, r.stderr
    assert "empty" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "_manifest").exists()
    with pytest.raises(sl.InvalidArgumentError, match="empty"):
        sl.open("")


def test_a_store_is_not_made_of_a_directory_of_other_files_without_force(tmp_path):
    _runs(tmp_path / "runs")
    (tmp_path / "notes.txt").write_text("mine\n")
    r = _cli("--db", ".", "ingest", "runs", cwd=tmp_path)
    assert r.returncode == 1 and "holds other files" in r.stderr and "--force" in r.stderr, r.stderr
    assert not (tmp_path / "_manifest").exists()
    with pytest.raises(sl.StoreError, match="holds other files"):
        sl.open(tmp_path)
    r = _cli("--db", ".", "ingest", "--force", "runs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(sl.open(tmp_path).runs()) == 3
    # A file is no store either.
    with pytest.raises(sl.StoreError, match="not a directory"):
        sl.open(tmp_path / "notes.txt")


# --- section 5: the options are part of the fingerprint ---------------------------------------


def test_a_changed_set_re_applies_to_unchanged_runs(tmp_path):
    runs = _runs(tmp_path / "runs")
    db = sl.open(tmp_path / "db")
    assert db.ingest(runs, set={"lr": "1e-3", "N": "1e8"}).added == 3
    again = db.ingest(runs, set={"lr": "1e-3", "N": "1e8"})
    assert (again.unchanged, again.committed) == (3, False)
    changed = db.ingest(runs, set={"lr": "2e-3", "N": "1e8"})
    assert (changed.updated, changed.unchanged) == (3, 0)
    assert db.runs()["lr"].to_list() == [2e-3] * 3
    assert db.ingest(runs, set={"lr": "2e-3", "N": "1e8"}).committed is False
    # Back to no options: the overrides go.
    assert db.ingest(runs).updated == 3
    assert db.runs()["lr"].null_count() == 3
    assert db.ingest(runs).committed is False
    rec = db.ingest(runs, recipe="web")
    assert rec.updated == 3 and db.runs()["recipe"].to_list() == ["web"] * 3


# --- section 5: a full disk -----------------------------------------------------------------


def test_a_write_that_fails_names_the_store_and_leaves_the_old_version(tmp_path):
    """No tmpfs without root: the file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes the
    writer's write() fail (EFBIG) as a full disk's would (ENOSPC), after it has written some."""
    db_path = tmp_path / "db"
    db = sl.open(db_path)
    db.ingest(_runs(tmp_path / "small", n=2))
    before = db.runs()
    _runs(tmp_path / "big", n=4, points=20_000)
    code = textwrap.dedent(
        f"""
        import steplaw_db as sl
        try:
            sl.open({str(db_path)!r}).ingest([{str(tmp_path / "big")!r}])
        except sl.StoreError as e:
            print("ERR", e)
        """
    )

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    r = subprocess.run([sys.executable, "-c", code], preexec_fn=limit, capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("ERR"), (r.stdout, r.stderr)
    assert f"store {db_path}: writing failed, nothing committed: the store stays at version 1" in r.stdout, r.stdout
    assert "File too large" in r.stdout, r.stdout
    db = sl.open(db_path)
    assert db.version == 1
    assert db.runs().equals(before)
    assert db.check(deep=True).ok
    # The next writer cleans what the failed one left, and the ingest then goes through.
    assert db.ingest(tmp_path / "big").added == 4
    assert db.check(deep=True).ok


# --- section 6: one directory, three names ------------------------------------------------------


def test_the_same_directory_named_three_ways_is_not_read_again(tmp_path):
    _runs(tmp_path / "runs")
    db = tmp_path / "db"
    first = _cli("--db", str(db), "ingest", "runs", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    for name in ["./runs", str(tmp_path / "runs"), "runs/", "runs/../runs"]:
        r = _cli("--db", str(db), "ingest", name, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "3 unchanged" in r.stderr and "nothing to commit" in r.stderr, (name, r.stderr)
    assert sl.open(db).version == 1
    files = pl.Series([f for fs in sl.open(db).runs()["source"].to_list() for f in [fs]])
    assert all(Path(f).is_absolute() for f in files)


# --- section 4: run identity and removal ------------------------------------------------------


def test_a_moved_sweep_is_the_same_runs_not_new_ones(tmp_path):
    _runs(tmp_path / "sweep", n=5)
    db = sl.open(tmp_path / "db")
    db.ingest(tmp_path / "sweep")
    before = db.final_losses("none").sort("name")
    (tmp_path / "sweep").rename(tmp_path / "sweep-renamed")
    r = db.ingest(tmp_path / "sweep-renamed")
    assert (r.added, r.moved, r.updated) == (0, 5, 0), r
    assert "moved: 5" in r.summary()
    runs = db.runs()
    assert len(runs) == 5
    assert all(s.startswith(str(tmp_path / "sweep-renamed")) for s in runs["source"])
    after = db.final_losses("none").sort("name")
    assert after["raw_loss"].to_list() == before["raw_loss"].to_list()
    assert db.check(deep=True).ok
    # Ingested again from its new place: unchanged.
    assert db.ingest(tmp_path / "sweep-renamed").unchanged == 5
    # A copy (its original still there) is new runs, not a move.
    import shutil

    shutil.copytree(tmp_path / "sweep-renamed", tmp_path / "copy")
    r = db.ingest(tmp_path / "copy")
    assert (r.added, r.moved) == (5, 0)
    assert len(db.runs()) == 10


def test_moved_through_the_cli_summary(tmp_path):
    _runs(tmp_path / "a", n=2)
    db = tmp_path / "db"
    assert _cli("--db", str(db), "ingest", "a", cwd=tmp_path).returncode == 0
    (tmp_path / "a").rename(tmp_path / "b")
    r = _cli("--db", str(db), "ingest", "b", cwd=tmp_path)
    assert r.returncode == 0 and "moved: 2" in r.stderr and "0 added" in r.stderr, r.stderr


def test_remove_by_name_glob_source_id_and_missing_source(tmp_path):
    _runs(tmp_path / "a", n=4)
    _runs(tmp_path / "b", n=3, first=10)
    db = sl.open(tmp_path / "db")
    db.ingest([tmp_path / "a", tmp_path / "b"])
    runs = db.runs()
    assert len(runs) == 7
    v = db.version
    # Dry run: listed, nothing committed.
    would = db.remove("run1*", dry_run=True)
    assert sorted(would["name"]) == ["run1", "run10", "run11", "run12"]
    assert db.version == v and len(db.runs()) == 7
    # By exact name and glob, one commit.
    gone = db.remove(["run0", "run1?"])
    assert sorted(gone["name"]) == ["run0", "run10", "run11", "run12"]
    assert db.version == v + 1
    assert sorted(db.runs()["name"]) == ["run1", "run2", "run3"]
    assert db.points(metric="loss")["run_id"].unique().len() == 3
    # By run id and by source prefix.
    rid = int(db.runs().filter(pl.col("name") == "run1")["run_id"][0])
    assert db.remove(run_ids=rid)["name"].to_list() == ["run1"]
    assert db.remove(sources=tmp_path / "a" / "run2")["name"].to_list() == ["run2"]
    # Missing source.
    import shutil

    shutil.rmtree(tmp_path / "a" / "run3")
    assert db.remove(missing_source=True)["name"].to_list() == ["run3"]
    assert len(db.runs()) == 0
    assert db.remove("nothing*").height == 0
    with pytest.raises(sl.InvalidArgumentError, match="which runs"):
        db.remove()
    # The points leave at the next compact.
    db.compact(keep=1)
    assert list((tmp_path / "db" / "points").glob("*.parquet")) == []
    assert db.check(deep=True).ok


def test_rm_on_the_command_line(tmp_path):
    _runs(tmp_path / "runs", n=3)
    db = str(tmp_path / "db")
    _cli("--db", db, "ingest", "runs", cwd=tmp_path)
    r = _cli("--db", db, "rm", "--dry-run", "run*", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count("\n") == 3 and "would remove 3" in r.stderr, r
    r = _cli("--db", db, "rm", "--source", "runs/run0", cwd=tmp_path)
    assert r.returncode == 0 and "removed 1 run(s)" in r.stderr, r
    assert sorted(sl.open(db).runs()["name"]) == ["run1", "run2"]
    r = _cli("--db", db, "rm", cwd=tmp_path)
    assert r.returncode == 2 and "which runs" in r.stderr, r.stderr
