"""Damage detection from Python and the CLI: `Store.check`, `Store.verify`, `steplaw-db check`.
The Rust tests flip bytes at every kind of position; these check what a user sees."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from steplaw_db import synth
from steplaw_db.cli import app


@pytest.fixture
def store(tmp_path: Path) -> sl.Store:
    synth.write_sweep(tmp_path / "runs", points=50, cells=[(960, 9368, 15, 7, 2e10)])
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    return db


def _largest_segment(db: sl.Store) -> Path:
    segments = db.files()["segments"]
    return max((Path(s["file"]) for s in segments), key=lambda p: p.stat().st_size)


def _flip(path: Path, at: float) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_an_intact_store_checks_clean(store):
    for deep in (False, True):
        report = store.check(deep=deep)
        assert report.ok, str(report)
        assert report.damaged.height == 0
        assert "no damage found" in str(report)
    store.verify()
    r = CliRunner().invoke(app, ["--db", str(store.path), "check", "--deep"])
    assert r.exit_code == 0, r.output
    assert "no damage found" in r.output


@pytest.mark.parametrize("at", [0.1, 0.5, 0.9])
def test_a_flipped_byte_is_found_and_named_with_its_runs(store, at):
    seg = _largest_segment(store)
    live = {
        run_id
        for s in store.files()["segments"]
        if Path(s["file"]) == seg
        for run_id in (s["live_runs"] if s["live_runs"] is not None else s["run_ids"])
    }
    names = store.runs().filter(pl.col("run_id").is_in(list(live)))["name"].to_list()
    _flip(seg, at)
    report = store.check()
    assert not report.ok
    damaged = report.damaged
    assert set(damaged["file"]) == {str(seg)}
    assert set(damaged["kind"]) == {"checksum"}
    # Every run whose points the file holds is named, with its source to re-ingest from.
    assert set(damaged["run_id"]) == live
    text = str(report)
    assert seg.name in text and all(n in text for n in names)
    with pytest.raises(sl.StoreError, match=seg.name):
        store.verify()
    r = CliRunner().invoke(app, ["--db", str(store.path), "check"])
    assert r.exit_code == 1
    assert seg.name in r.output and "re-ingest" in r.output


def test_reading_a_damaged_segment_is_a_store_error_naming_it_never_other_values(store):
    seg = _largest_segment(store)
    one = next(s for s in store.files()["segments"] if s["file"] == seg)["run_ids"][0]
    _flip(seg, 0.5)
    # A fresh process has verified nothing yet: open the store anew in one. All points (the
    # scan), and one run of that segment (read natively, its row groups only).
    for read in ("db.points()", f"db.points({one})"):
        code = (
            "import sys, steplaw_db as sl\n"
            "db = sl.open(sys.argv[1], create=False)\n"
            "try:\n"
            f"    {read}\n"
            "except sl.StoreError as e:\n"
            "    print('StoreError', e)\n"
            "else:\n"
            "    print('read')\n"
        )
        import subprocess
        import sys

        out = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True, text=True, check=True)
        assert out.stdout.startswith("StoreError"), read + ": " + out.stdout + out.stderr
        assert seg.name in out.stdout


def test_a_damaged_newest_manifest_is_named_and_repair_rolls_back(store, tmp_path):
    synth.write_sweep(tmp_path / "more", points=20, cells=[(1280, 9472, 10, 10, 2e10)])
    assert store.ingest(tmp_path / "more").ok
    newest = max((store.path / "_manifest").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    _flip(newest, 0.5)
    r = CliRunner().invoke(app, ["--db", str(store.path), "check"])
    assert r.exit_code == 1 and newest.name in r.output, r.output
    r = CliRunner().invoke(app, ["--db", str(store.path), "check", "--repair"])
    assert r.exit_code == 0, r.output
    assert "set aside" in r.output and "no damage found" in r.output
    db = sl.open(store.path, create=False)
    assert db.points(metric=None).height == db.runs()["n_points"].sum()
