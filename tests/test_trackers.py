"""Trackers' own folders, read without the tracker (issue 14): W&B run directories (the binary
``run-<id>.wandb`` transaction log of offline runs) and MLflow runs (the file store and the
SQLite backend).

The folders are written here by the real libraries (``wandb`` in offline mode, no account or
network; ``mlflow-skinny`` with SQLAlchemy for ``sqlite:///``), from small scripts run in
subprocesses with known values: finished, failed, killed (SIGKILL before finish), resumed and
``define_metric`` runs. What steplaw-db stores is compared point by point with the values the
scripts logged and, as an independent reader, with what the tracker itself reads back:
wandb's own protobuf classes over a framing written here with zlib's CRC-32 for the ``.wandb``
logs, ``MlflowClient.get_metric_history`` for MLflow. These packages are test dependencies:
a missing one fails the tests, it never skips them.
"""

from __future__ import annotations

import importlib
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import steplaw_db as sl

# Each writer is a real tracker in a subprocess (wandb starts its service; MLflow migrates its
# database): about a minute in all, so those tests are outside the inner loop.
slow = pytest.mark.slow


def need(module: str):
    """Import a test dependency; fail (never skip) without it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{module} is a test dependency of steplaw-db (pip install -e '.[test]'): {e}")


def run_script(script: str, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        pytest.fail(f"the writer script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def points_of(db: sl.Store, run_id: int) -> dict[str, dict[int, float]]:
    """metric -> {step: value} of one stored run."""
    out: dict[str, dict[int, float]] = {}
    for row in db.points(run_ids=run_id, metric=None).iter_rows(named=True):
        out.setdefault(row["metric"], {})[row["step"]] = row["value"]
    return out


def run_by_name(db: sl.Store, name: str) -> dict:
    rows = db.runs().filter(name=name).to_dicts()
    assert len(rows) == 1, f"{len(rows)} runs named {name!r}: {db.runs().select('name', 'source').to_dicts()}"
    return rows[0]


# -- W&B ---------------------------------------------------------------------------------------

# Logged values, known here and in the writer script.
WANDB_SCRIPT = r"""
import json, os, signal, sys, time
import wandb

def loss(k, base=5.0):
    return base - 0.01 * k

def lr(k):
    return 1e-3 * (1 - k / 200)

root, which = sys.argv[1], sys.argv[2]
if which == "finished":
    run = wandb.init(dir=root, project="p", name="lr1e-3_bs32",
                     config={"lr": 1e-3, "batch_size": 32, "model": {"n_layer": 2}, "notes": "x"})
    for k in range(200):
        row = {"loss": loss(k), "lr": lr(k), "grad_norm": 1.0 + k / 7}
        if k % 10 == 9:
            row["val/loss"] = loss(k) + 0.1
        wandb.log(row, step=k)
    run.finish()
elif which == "failed":
    run = wandb.init(dir=root, project="p", name="failed", config={"lr": 3e-3})
    for k in range(30):
        wandb.log({"loss": loss(k, 4.0)}, step=k)
    run.finish(exit_code=1)
elif which == "resumed":
    for part, steps, base in ((1, range(0, 20), 4.0), (2, range(15, 40), 3.0)):
        run = wandb.init(dir=root, project="p", id="resumeme1", name="resumed", config={"lr": 4e-3},
                         resume="allow")
        for k in steps:
            wandb.log({"loss": loss(k, base)}, step=k)
        run.finish()
        time.sleep(1.1)  # a new run directory per second
elif which == "define_metric":
    # As Hugging Face's WandbCallback logs: its own step counter as the x axis.
    run = wandb.init(dir=root, project="p", name="hf-style", config={"learning_rate": 5e-4})
    wandb.define_metric("train/*", step_metric="train/global_step")
    for k in range(1, 21):
        wandb.log({"train/loss": loss(k), "train/global_step": 10 * k})
    run.finish()
elif which == "killed":
    run = wandb.init(dir=root, project="p", name="killed", config={"lr": 2e-3})
    for k in range(3000):
        wandb.log({"loss": 4.0 - 1e-4 * k}, step=k)
    time.sleep(float(sys.argv[3]))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def loss(k: int, base: float = 5.0) -> float:
    return base - 0.01 * k


def lr(k: int) -> float:
    return 1e-3 * (1 - k / 200)


def read_wandb_log(path: Path) -> list[bytes]:
    """An independent reader of a .wandb log's framing (zlib's CRC-32): its whole records."""
    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, data[:7]
    records, pos, pending = [], 7, b""
    while True:
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
        if pos + 7 > len(data):
            return records
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        if len(payload) < length or (crc, length, kind) == (0, 0, 0):
            return records
        assert zlib.crc32(bytes([kind]) + payload) == crc, f"{path}: checksum at byte {pos}"
        pos += 7 + length
        if kind == 1:
            records.append(payload)
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            records.append(pending + payload)


def wandb_history(path: Path) -> dict[str, dict[int, float]]:
    """key -> {_step: value} of a .wandb log, decoded by wandb's own protobuf classes."""
    pb = need("wandb.proto.wandb_internal_pb2")
    out: dict[str, dict[int, float]] = {}
    for raw in read_wandb_log(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") != "history":
            continue
        items = {(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
        step = int(items.get("_step", rec.history.step.num))
        for key, value in items.items():
            if not key.startswith("_") and isinstance(value, (int, float)):
                out.setdefault(key, {})[step] = float(value)
    return out


@pytest.fixture(scope="module")
def wandb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of W&B offline runs written by the real wandb: ``<root>/wandb/offline-run-*``."""
    need("wandb")
    root = tmp_path_factory.mktemp("wandb_runs")
    home = tmp_path_factory.mktemp("wandb_home")
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_DATA_DIR": str(home / "data"),
    }
    for which in ("finished", "failed", "resumed", "define_metric"):
        run_script(WANDB_SCRIPT, str(root), which, env=env)
    killed = run_script(WANDB_SCRIPT, str(root), "killed", "3", env=env, check=False)
    assert killed.returncode == -9, killed.stderr
    return root


def wandb_logs(root: Path) -> dict[str, list[Path]]:
    """W&B run id -> its .wandb logs, oldest first."""
    out: dict[str, list[Path]] = {}
    for p in sorted((root / "wandb").glob("offline-run-*/run-*.wandb")):
        out.setdefault(p.stem.removeprefix("run-"), []).append(p)
    return out


@pytest.fixture(scope="module")
def wandb_store(wandb_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[sl.Store, sl.IngestReport]:
    db = sl.open(tmp_path_factory.mktemp("store") / "s.db")
    report = db.ingest(wandb_root)
    return db, report


@slow
def test_wandb_offline_folder_is_one_run_per_wandb_run(wandb_root: Path, wandb_store) -> None:
    db, report = wandb_store
    assert not report.failed, report.failed
    runs = db.runs()
    # finished, failed, resumed (two run directories, one run), hf-style, killed.
    assert sorted(runs["name"].to_list()) == sorted(["lr1e-3_bs32", "failed", "resumed", "hf-style", "killed"])
    assert set(runs["format"]) == {"wandb-run"}
    assert len(wandb_logs(wandb_root)["resumeme1"]) == 2


@slow
def test_wandb_finished_run_point_by_point(wandb_root: Path, wandb_store) -> None:
    db, _ = wandb_store
    run = run_by_name(db, "lr1e-3_bs32")
    assert run["status"] == "complete"
    assert (run["lr"], run["bs"]) == (1e-3, 32)
    # a config key that is no run field is a column of its own; a nested field still the field
    assert run["notes"] == "x" and run["numl"] == 2
    assert not [c for c in db.runs().columns if c.startswith("_wandb")]
    pts = points_of(db, run["run_id"])
    assert pts["loss"] == {k: loss(k) for k in range(200)}
    assert pts["val_loss"] == {k: loss(k) + 0.1 for k in range(9, 200, 10)}
    assert pts["lr"] == {k: lr(k) for k in range(200)}
    assert pts["grad_norm"] == {k: 1.0 + k / 7 for k in range(200)}
    assert set(pts) == {"loss", "val_loss", "lr", "grad_norm"}
    # The LR is joined to the loss points too.
    loss_rows = db.points(run_ids=run["run_id"], metric="loss").sort("step")
    assert loss_rows["lr"].to_list() == [lr(k) for k in range(200)]
    assert run["final_loss"] == loss(199) and run["final_step"] == 199
    # The independent reader (wandb's protobuf) sees exactly these points.
    (log,) = wandb_logs(wandb_root)[Path(run["source"]).name.rsplit("-", 1)[1]]
    history = wandb_history(log)
    assert history["loss"] == pts["loss"] and history["val/loss"] == pts["val_loss"]
    assert sum(len(v) for v in history.values()) == run["n_points"] == 620


@slow
def test_wandb_failed_and_killed_runs_are_incomplete_with_what_was_written(wandb_root: Path, wandb_store) -> None:
    db, _ = wandb_store
    failed = run_by_name(db, "failed")
    assert failed["status"] == "incomplete"
    assert points_of(db, failed["run_id"])["loss"] == {k: loss(k, 4.0) for k in range(30)}
    killed = run_by_name(db, "killed")
    assert killed["status"] == "incomplete"
    pts = points_of(db, killed["run_id"])["loss"]
    # Whatever the killed run had written, every whole record of it, and nothing else.
    (log,) = wandb_logs(wandb_root)[Path(killed["source"]).name.rsplit("-", 1)[1]]
    assert pts == wandb_history(log)["loss"]
    assert len(pts) > 100, len(pts)
    assert pts == {k: 4.0 - 1e-4 * k for k in range(len(pts))}


@slow
def test_wandb_truncated_log_keeps_whole_records_and_counts_the_rest(wandb_root: Path, tmp_path: Path) -> None:
    (log,) = next(logs for logs in wandb_logs(wandb_root).values() if b"lr1e-3_bs32" in logs[0].read_bytes()[:65536])
    data = log.read_bytes()
    run_dir = tmp_path / "wandb" / "offline-run-20240101_000000-cut0001"
    run_dir.mkdir(parents=True)
    cut = data[: len(data) - 300]  # the middle of a record near the end
    (run_dir / "run-cut0001.wandb").write_bytes(cut)
    whole = read_wandb_log(run_dir / "run-cut0001.wandb")
    db = sl.open(tmp_path / "s.db")
    report = db.ingest(tmp_path / "wandb")
    assert not report.failed, report.failed
    run = db.runs().to_dicts()[0]
    assert run["status"] == "incomplete"
    assert run["n_malformed"] >= 1
    assert any("hold no whole record" in w for w in report.warnings), report.warnings
    pts = points_of(db, run["run_id"])["loss"]
    expected = wandb_history(run_dir / "run-cut0001.wandb")["loss"]
    assert pts == expected and 150 < len(pts) < 200
    assert len(whole) > 0


@slow
def test_wandb_resumed_run_is_one_run_the_later_log_wins(wandb_store) -> None:
    db, _ = wandb_store
    run = run_by_name(db, "resumed")
    assert run["status"] == "complete" and run["lr"] == 4e-3
    expected = {k: loss(k, 4.0) for k in range(15)} | {k: loss(k, 3.0) for k in range(15, 40)}
    assert points_of(db, run["run_id"])["loss"] == expected


@slow
def test_wandb_define_metric_places_points_on_its_step_metric(wandb_store) -> None:
    db, _ = wandb_store
    run = run_by_name(db, "hf-style")
    assert run["lr"] == 5e-4
    pts = points_of(db, run["run_id"])
    assert pts["loss"] == {10 * k: loss(k) for k in range(1, 21)}
    assert "train/global_step" not in pts


@slow
def test_wandb_reingest_is_unchanged(wandb_root: Path, wandb_store) -> None:
    db, _ = wandb_store
    again = db.ingest(wandb_root)
    assert (again.added, again.updated, again.unchanged, again.failed) == (0, 0, 5, [])


# -- MLflow ------------------------------------------------------------------------------------

MLFLOW_SCRIPT = r"""
import os, sys
import mlflow

def loss(k, base=5.0):
    return base - 0.01 * k

uri = sys.argv[1]
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("sweep")
ids = {}
with mlflow.start_run(run_name="lr1e-3_bs32") as r:
    mlflow.log_params({"lr": 1e-3, "batch_size": 32, "optimizer": "adamw"})
    for k in range(100):
        mlflow.log_metric("loss", loss(k), step=k)
        mlflow.log_metric("train/lr", 1e-3 * (1 - k / 100), step=k)
        if k % 10 == 9:
            mlflow.log_metric("val_loss", loss(k) + 0.1, step=k)
    mlflow.log_metric("loss", float("nan"), step=100)
    ids["finished"] = r.info.run_id
with mlflow.start_run(run_name="failed") as r:
    mlflow.log_param("learning_rate", 3e-3)
    for k in range(10):
        mlflow.log_metric("loss", loss(k, 4.0), step=k)
    ids["failed"] = r.info.run_id
    mlflow.end_run(status="FAILED")
with mlflow.start_run(run_name="unstepped") as r:
    for k in range(5):
        mlflow.log_metric("loss", loss(k, 3.0))  # no step: MLflow puts every point at step 0
    ids["unstepped"] = r.info.run_id
r = mlflow.start_run(run_name="running")
mlflow.log_metric("loss", 2.0, step=0)
ids["running"] = r.info.run_id
print(ids, flush=True)
os._exit(0)  # never ended (no atexit hook ends it): RUNNING, as a crashed job leaves it
"""


def mlflow_env(tmp: Path) -> dict[str, str]:
    return {"MLFLOW_ALLOW_FILE_STORE": "true", "GIT_PYTHON_REFRESH": "quiet", "HOME": str(tmp)}


@pytest.fixture(scope="module", params=["file", "sqlite"])
def mlflow_uri(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(tracking uri, directory to ingest) of MLflow runs written by the real mlflow."""
    need("mlflow")
    if request.param == "sqlite":
        need("sqlalchemy")
        need("alembic")
    root = tmp_path_factory.mktemp(f"mlflow_{request.param}")
    uri = f"file:{root / 'mlruns'}" if request.param == "file" else f"sqlite:///{root / 'mlflow.db'}"
    run_script(MLFLOW_SCRIPT, uri, env=mlflow_env(root))
    return uri, root


def mlflow_history(uri: str, name: str) -> dict[str, dict[int, float]]:
    """metric -> {step: value} of an MLflow run, as MLflow itself reads it back."""
    mlflow = need("mlflow")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "sweep"]
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    out: dict[str, dict[int, float]] = {}
    for key in run.data.metrics:
        for m in client.get_metric_history(run.info.run_id, key):
            out.setdefault(key, {})[m.step] = m.value
    return out


def same(a: dict[int, float], b: dict[int, float]) -> bool:
    """Equal point by point, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


@slow
def test_mlflow_runs_point_by_point(mlflow_uri: tuple[str, Path], tmp_path: Path) -> None:
    uri, root = mlflow_uri
    db = sl.open(tmp_path / "s.db")
    report = db.ingest(root)
    assert not report.failed, report.failed
    runs = db.runs()
    assert sorted(runs["name"]) == ["failed", "lr1e-3_bs32", "running", "unstepped"]
    assert set(runs["format"]) == {"mlflow"}

    run = run_by_name(db, "lr1e-3_bs32")
    assert run["status"] == "diverged"  # a NaN loss at the end
    assert (run["lr"], run["bs"]) == (1e-3, 32)
    assert run["optimizer"] == "adamw"  # a param that is no run field: a column of its own
    pts = points_of(db, run["run_id"])
    expected_loss = {k: loss(k) for k in range(100)} | {100: float("nan")}
    assert same(pts["loss"], expected_loss)
    assert pts["val_loss"] == {k: loss(k) + 0.1 for k in range(9, 100, 10)}
    assert pts["train/lr"] == {k: 1e-3 * (1 - k / 100) for k in range(100)}
    theirs = mlflow_history(uri, "lr1e-3_bs32")
    assert same(theirs["loss"], pts["loss"]) and theirs["val_loss"] == pts["val_loss"]
    assert sum(len(v) for v in theirs.values()) == run["n_points"] == 101 + 10 + 100

    failed = run_by_name(db, "failed")
    assert failed["status"] == "incomplete" and failed["lr"] == 3e-3
    assert points_of(db, failed["run_id"])["loss"] == {k: loss(k, 4.0) for k in range(10)}
    running = run_by_name(db, "running")
    assert running["status"] == "incomplete"
    # Logged without steps: all at step 0 in MLflow; every point kept, numbered in order.
    unstepped = run_by_name(db, "unstepped")
    assert points_of(db, unstepped["run_id"])["loss"] == {k: loss(k, 3.0) for k in range(5)}
    assert set(mlflow_history(uri, "unstepped")["loss"]) == {0}

    again = db.ingest(root)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)


def test_wandb_run_folder_with_only_its_summary_and_config(tmp_path: Path) -> None:
    """A W&B run folder as synced runs keep it and as the W&B UI downloads it (``files/``):
    ``config.yaml`` (every value under ``value:``) and ``wandb-summary.json`` (the last value of
    each metric), no history: a ``summary-only`` run with one point per metric."""
    files = tmp_path / "sweep" / "run-lr3e-4" / "files"
    files.mkdir(parents=True)
    (files / "config.yaml").write_text(
        "_wandb:\n  desc: null\n  value:\n    cli_version: 0.16.0\n    python_version: 3.10.12\n"
        "lr:\n  desc: null\n  value: 0.0003\nglobal_batch_size:\n  desc: null\n  value: 512\n"
        "model:\n  desc: null\n  value:\n    n_layer: 12\n"
        "optimizer:\n  desc: null\n  value:\n    name: adamw\n    beta2: 0.95\n"
    )
    summary = {
        "_step": 4999,
        "_runtime": 3600.5,
        "_timestamp": 1700000000.0,
        "_wandb": {"runtime": 3600},
        "train/loss": 2.875,
        "eval": {"loss": 2.95},
        "lr": 3e-05,
        "hist": {"_type": "histogram", "values": [1, 2], "bins": [0, 1, 2]},
        "note": "done",
    }
    (files / "wandb-summary.json").write_text(json.dumps(summary))
    (files / "requirements.txt").write_text("torch==2.4.0\n")
    db = sl.open(tmp_path / "s.db")
    report = db.ingest(tmp_path / "sweep")
    assert not report.failed, report.failed
    (run,) = db.runs().to_dicts()
    assert run["status"] == "summary-only" and run["name"] == "run-lr3e-4"
    assert (run["lr"], run["bs"]) == (3e-4, 512)
    # every other config key is a typed column, nested keys joined with '.'; `_wandb` is W&B's
    assert (run["numl"], run["optimizer.name"], run["optimizer.beta2"]) == (12, "adamw", 0.95)
    assert not [c for c in db.runs().columns if c.startswith("_wandb")]
    assert points_of(db, run["run_id"]) == {"loss": {4999: 2.875}, "eval.loss": {4999: 2.95}, "lr": {4999: 3e-05}}
    assert run["final_loss"] == 2.875


@slow
def test_wandb_synced_run_directory_reads_its_log_not_its_files(wandb_root: Path, tmp_path: Path) -> None:
    """A synced run's directory (``wandb/run-<time>-<id>/``) holds the same log, and ``files/``
    with the console output, the config, the summary and requirements: the tracker's own, never
    a second run (the console output below prints loss lines a text-log reader would take)."""
    (log,) = next(logs for logs in wandb_logs(wandb_root).values() if b"lr1e-3_bs32" in logs[0].read_bytes()[:65536])
    run_dir = tmp_path / "wandb" / f"run-20240101_120000-{log.stem.removeprefix('run-')}"
    (run_dir / "files").mkdir(parents=True)
    (run_dir / "logs").mkdir()
    (run_dir / log.name).write_bytes(log.read_bytes())
    console = "".join(f"step {k}: train loss 9.9, val loss 9.9\n" for k in range(50))
    (run_dir / "files" / "output.log").write_text(console)
    (run_dir / "files" / "config.yaml").write_text("lr:\n  desc: null\n  value: 0.001\n")
    (run_dir / "files" / "wandb-summary.json").write_text('{"_step": 199, "loss": 3.01}')
    (run_dir / "files" / "requirements.txt").write_text("torch\n")
    (run_dir / "logs" / "debug.log").write_text("2024-01-01 INFO starting\n")
    (tmp_path / "wandb" / "latest-run").symlink_to(run_dir.name)
    db = sl.open(tmp_path / "s.db")
    report = db.ingest(tmp_path / "wandb")
    assert not report.failed, report.failed
    (run,) = db.runs().to_dicts()
    assert (run["name"], run["format"], run["status"]) == ("lr1e-3_bs32", "wandb-run", "complete")
    assert points_of(db, run["run_id"])["loss"] == {k: loss(k) for k in range(200)}
