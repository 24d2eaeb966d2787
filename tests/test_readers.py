"""Readers of the logs teams actually have: TensorBoard event files, HF Trainer state,
nanoGPT-style text logs, W&B exports.

Every reader is checked against an independent reference: TensorBoard files are written and
read back by the small pure-Python TFRecord/protobuf codec below (struct + CRC32C), and the
real T5X files of ../shared/data/colpret are decoded by it too. Bad input comes first.
"""

from __future__ import annotations

import json
import random
import struct
import tempfile
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steplaw_db as sl
from references import fld, masked, varint
from steplaw_db.errors import SteplawError


def need(path: Path) -> Path:
    if not path.exists():  # the tests are meant to run beside ../shared: say so loudly
        raise FileNotFoundError(f"{path}: the public data is expected in ../shared/data")
    return path


# -- an independent TFRecord / protobuf codec -----------------------------------------------


def record(data: bytes) -> bytes:
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", masked(head)) + data + struct.pack("<I", masked(data))


def simple_value(tag: str, v: float) -> bytes:
    return fld(1, tag.encode()) + bytes([2 << 3 | 5]) + struct.pack("<f", v)


DT_FLOAT, DT_DOUBLE, DT_HALF = 1, 2, 19


def tensor_value(tag: str, v: float, dtype: int = DT_FLOAT, as_content: bool = True) -> bytes:
    """A scalar tensor summary: T5X/TF2 write `tensor_content`, PyTorch's new style `float_val`."""
    t = varint(1 << 3) + varint(dtype) + fld(2, b"")
    if as_content:
        raw = {DT_FLOAT: struct.pack("<f", v), DT_DOUBLE: struct.pack("<d", v), DT_HALF: struct.pack("<e", v)}[dtype]
        t += fld(4, raw)
    elif dtype == DT_FLOAT:
        t += fld(5, struct.pack("<f", v))
    elif dtype == DT_DOUBLE:
        t += fld(6, struct.pack("<d", v))
    else:
        t += fld(13, varint(struct.unpack("<H", struct.pack("<e", v))[0]))
    meta = fld(9, fld(1, fld(1, b"scalars")))  # SummaryMetadata.plugin_data.plugin_name
    return fld(1, tag.encode()) + meta + fld(8, t)


def event(step: int, values: list[bytes], wall_time: float = 1.7e9) -> bytes:
    summary = b"".join(fld(1, v) for v in values)
    return bytes([1 << 3 | 1]) + struct.pack("<d", wall_time) + varint(2 << 3) + varint(step) + fld(5, summary)


def file_version() -> bytes:
    return record(bytes([1 << 3 | 1]) + struct.pack("<d", 1.7e9) + fld(3, b"brain.Event:2"))


def write_events(path: Path, points: list[tuple[int, list[bytes]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(file_version() + b"".join(record(event(s, vals)) for s, vals in points))
    return path


def _fields(buf: bytes):
    """Decode protobuf fields as (number, wire type, value)."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        n, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
        elif wire == 1:
            v, i = buf[i : i + 8], i + 8
        elif wire == 2:
            ln, i = _read_varint(buf, i)
            v, i = buf[i : i + ln], i + ln
        elif wire == 5:
            v, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield n, wire, v


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i


def _tensor_scalar(buf: bytes) -> float | None:
    dtype, dims, content, vals = 0, [], b"", []
    for n, _wire, v in _fields(buf):
        if n == 1:
            dtype = v
        elif n == 2:
            dims = [dict((m, x) for m, _, x in _fields(d)).get(1, 0) for k, _, d in _fields(v) if k == 2]
        elif n == 4:
            content = v
        elif n == 5:
            vals += [x for (x,) in struct.iter_unpack("<f", v)]
        elif n == 6:
            vals += [x for (x,) in struct.iter_unpack("<d", v)]
        elif n == 13:  # half_val: the bits of each half, as varints
            i = 0
            while i < len(v):
                bits, i = _read_varint(v, i)
                vals.append(struct.unpack("<e", struct.pack("<H", bits & 0xFFFF))[0])
    count = 1
    for d in dims:
        count *= d
    if count != 1:
        return None
    fmt = {DT_FLOAT: "<f", DT_DOUBLE: "<d", DT_HALF: "<e"}.get(dtype)
    if fmt is None:
        return None
    return struct.unpack(fmt, content[: struct.calcsize(fmt)])[0] if content else (vals[0] if len(vals) == 1 else None)


def read_events(path: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in a well-formed event file, CRCs checked."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        assert struct.unpack_from("<I", data, pos + 8)[0] == masked(data[pos : pos + 8])
        body = data[pos + 12 : pos + 12 + n]
        assert struct.unpack_from("<I", data, pos + 12 + n)[0] == masked(body)
        pos += 16 + n
        step, summary = 0, None
        for f, _, v in _fields(body):
            if f == 2:
                step = v
            elif f == 5:
                summary = v
        for f, _, v in _fields(summary or b""):
            if f != 1:
                continue
            tag, value = "", None
            for g, _, x in _fields(v):
                if g == 1:
                    tag = x.decode()
                elif g == 2:
                    value = struct.unpack("<f", x)[0]
                elif g == 8 and value is None:
                    value = _tensor_scalar(x)
            if value is not None:
                out.append((step, tag, value))
    return out


def later_wins(files: list[Path], prefix: str = "") -> dict[str, dict[int, float]]:
    """Per tag, the points of event files read in order, a repeated step dropping what
    followed it (the restart rule)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for f in files:
        for step, tag, value in read_events(f):
            pts = series.setdefault(prefix + tag, [])
            while pts and pts[-1][0] >= step:
                pts.pop()
            pts.append((step, value))
    return {k: dict(v) for k, v in series.items()}


def points_of(db: sl.Store, name: str) -> dict[str, dict[int, float]]:
    run_id = db.runs().filter(pl.col("name") == name)["run_id"].item()
    df = db.points(run_id, metric=None)
    return {m: dict(zip(g["step"].to_list(), g["value"].to_list(), strict=True)) for (m,), g in df.group_by("metric")}


# -- TensorBoard: bad input first -----------------------------------------------------------


def _five_points(run: Path) -> Path:
    return write_events(
        run / "events.out.tfevents.1700000000.host.1.0", [(s, [simple_value("loss", 5.0 - s)]) for s in range(5)]
    )


def test_tensorboard_truncated_last_record_is_read_up_to_with_a_warning(tmp_path):
    f = _five_points(tmp_path / "runs" / "r")
    f.write_bytes(f.read_bytes() + record(event(5, [simple_value("loss", 0.5)]))[:-7])
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.points == 5
    assert any("truncated last record" in w and f.name in w for w in report.warnings), report.warnings


def test_tensorboard_corrupt_middle_record_is_skipped_naming_file_and_offset(tmp_path):
    f = _five_points(tmp_path / "runs" / "r")
    data = bytearray(f.read_bytes())
    offset = len(file_version()) + len(record(event(0, [simple_value("loss", 5.0)])))  # record of step 1
    data[offset + 20] ^= 0x55  # inside its data: the data CRC fails
    f.write_bytes(bytes(data))
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok
    assert points_of(db, "r")["loss"] == {0: 5.0, 2: 3.0, 3: 2.0, 4: 1.0}
    assert any(f"offset {offset}" in w and f.name in w for w in report.warnings), report.warnings


def test_tensorboard_wrong_length_crc_resynchronises(tmp_path):
    f = _five_points(tmp_path / "runs" / "r")
    data = bytearray(f.read_bytes())
    offset = len(file_version()) + 2 * len(record(event(0, [simple_value("loss", 5.0)])))  # record of step 2
    data[offset + 9] ^= 0x01  # its length CRC: the length cannot be trusted
    f.write_bytes(bytes(data))
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok
    assert sorted(points_of(db, "r")["loss"]) == [0, 1, 3, 4]
    assert any(f"header at offset {offset}" in w for w in report.warnings), report.warnings


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (bytes(range(256)) * 64, "not a tfrecord"), (record(b"\xff\xff\xff"), "not a valid event")],
    ids=["empty", "binary-junk", "bad-protobuf"],
)
def test_tensorboard_bad_file_fails_its_run_only(tmp_path, content, reason):
    _five_points(tmp_path / "runs" / "good")
    bad = tmp_path / "runs" / "bad" / "events.out.tfevents.1700000000.host.1.0"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content)
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.added == 1
    [(source, why)] = report.failed
    assert source.endswith("bad") and reason in why.lower(), why


# -- TensorBoard: what the writers produce --------------------------------------------------


def test_tensorboard_every_point_is_kept_and_restarts_later_file_wins(tmp_path):
    run = tmp_path / "runs" / "pt"
    n = 25_000  # TensorBoard's EventAccumulator would keep 10,000 of them
    write_events(
        run / "events.out.tfevents.1700000000.host.1.0",
        [(s, [simple_value("train/loss", 10.0 / (1 + s)), simple_value("lr", 1e-3)]) for s in range(1, n + 1)],
    )
    # The job restarted from the checkpoint at step 20,000: a new file, a different LR.
    write_events(
        run / "events.out.tfevents.1700009999.host.2.0",
        [(s, [simple_value("train/loss", 1.0 / s), simple_value("lr", 5e-4)]) for s in range(20_000, 30_001, 10)],
    )
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok, report.failed
    df = db.points(db.runs()["run_id"].item())
    expected = later_wins(sorted(run.iterdir()))
    assert df.height == len(expected["train/loss"]) == 19_999 + 1_001
    assert dict(zip(df["step"].to_list(), df["value"].to_list(), strict=True)) == expected["train/loss"]
    # the learning rate is joined to the loss by step (float32 as written)
    lr = dict(zip(df["step"].to_list(), df["lr"].to_list(), strict=True))
    assert lr[19_999] == pytest.approx(1e-3) and lr[20_000] == pytest.approx(5e-4)
    assert db.runs()["final_loss"].item() == pytest.approx(1.0 / 30_000)


@pytest.mark.parametrize(
    "dtype, as_content",
    [(DT_FLOAT, True), (DT_DOUBLE, True), (DT_HALF, True), (DT_FLOAT, False), (DT_DOUBLE, False), (DT_HALF, False)],
)
def test_tensorboard_scalar_tensor_summaries(tmp_path, dtype, as_content):
    f = write_events(
        tmp_path / "runs" / "t" / "events.out.tfevents.1.h",
        [(s, [tensor_value("loss", 4.0 - s / 8, dtype, as_content)]) for s in range(0, 20)],
    )
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    got = points_of(db, "t")["loss"]
    assert got == {s: v for s, _, v in read_events(f)} == {s: 4.0 - s / 8 for s in range(20)}


def test_tensorboard_eval_directory_gives_val_loss_never_mixed_into_loss(tmp_path):
    run = tmp_path / "runs" / "keras"
    write_events(
        run / "train" / "events.out.tfevents.1.h", [(s, [simple_value("epoch_loss", 3.0 - s / 10)]) for s in range(5)]
    )
    write_events(
        run / "validation" / "events.out.tfevents.1.h",
        [(s, [simple_value("epoch_loss", 3.5 - s / 10)]) for s in range(5)],
    )
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.runs_found == 1, report
    pts = points_of(db, "keras")
    assert pts["loss"] == pytest.approx({s: 3.0 - s / 10 for s in range(5)})
    assert pts["val_loss"] == pytest.approx({s: 3.5 - s / 10 for s in range(5)})


def test_tensorboard_real_t5x_run_matches_an_independent_decoder(tmp_path, colpret_dir):
    run = need(colpret_dir / "t5_pile" / "base")
    db = sl.open(tmp_path / "db")
    report = db.ingest(run)
    names = db.runs()["name"].to_list()
    assert "base" in names, report
    got = points_of(db, "base")
    train = sorted((run / "train").glob("events.out.tfevents.*"))
    evals = sorted((run / "training_eval" / "pile_r_denoiser").glob("events.out.tfevents.*"))
    assert len(train) == 3 and len(evals) == 3
    expected = later_wins(train)
    expected.update(later_wins(evals, prefix="eval/pile_r_denoiser/"))
    # T5X's `loss` is summed over the batch: the per-token loss is the loss (the sum kept as
    # loss_sum), the eval task's per-token loss the val loss (its sum keeps its tag)
    expected["loss_sum"] = expected.pop("loss")
    expected["loss"] = expected.pop("loss_per_nonpadding_target_token")
    expected["val_loss"] = expected.pop("eval/pile_r_denoiser/loss_per_nonpadding_target_token")
    assert not any(v > 10 for v in expected["loss"].values()), "a summed loss taken for the per-token one"
    notes = " ".join(report.notes)
    assert "'loss' is a sum over the batch" in notes and "loss_per_nonpadding_target_token" in notes
    # inference_eval/<task>-metrics.jsonl: every number of each row, at its step.
    for jsonl in sorted((run / "inference_eval").glob("*-metrics.jsonl")):
        task = jsonl.name.removesuffix("-metrics.jsonl")
        for line in jsonl.read_text().splitlines():
            row = json.loads(line)
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    expected.setdefault(f"inference_eval/{task}/{key}", {})[row["step"]] = value
    assert any(m.startswith("inference_eval/") for m in expected)
    assert sorted(got) == sorted(expected)
    for metric, pts in expected.items():
        assert got[metric] == pts, metric
    # scalars are tensor summaries (tensor_content, float32): 100 train points per file
    # from step 10,000 to 2,000,000, the restart at 1,000,000 replacing the first file's last
    assert sorted(got["loss"]) == list(range(10_000, 2_000_001, 10_000))
    row = db.runs().filter(pl.col("name") == "base")
    assert row["format"].item() == "tensorboard" and row["final_step"].item() == 2_000_000
    # this run's per-token training loss goes negative: flagged, never a complete run
    assert min(expected["loss"].values()) < 0
    assert row["status"].item() == "diverged" and "goes negative" in notes


# -- HF Trainer state ------------------------------------------------------------------------


def trainer_state(
    n_train: int = 10, every: int = 10, eval_every: int = 50, max_steps: int = 100, nan_at: int | None = None
) -> dict:
    history = []
    for i in range(1, n_train + 1):
        step = i * every
        loss = float("nan") if step == nan_at else round(4.0 - 0.02 * step, 4)
        history.append(
            {
                "epoch": step / max_steps,
                "grad_norm": 1.0,
                "learning_rate": 3e-4 * (1 - step / max_steps),
                "loss": loss,
                "step": step,
            }
        )
        if step % eval_every == 0:
            history.append(
                {
                    "epoch": step / max_steps,
                    "eval_loss": round(4.1 - 0.02 * step, 4),
                    "eval_runtime": 3.2,
                    "eval_samples_per_second": 100.0,
                    "eval_steps_per_second": 12.5,
                    "step": step,
                }
            )
    history.append(
        {
            "epoch": 1.0,
            "step": n_train * every,
            "total_flos": 1.2e15,
            "train_loss": 3.1,
            "train_runtime": 600.0,
            "train_samples_per_second": 10.0,
            "train_steps_per_second": 0.2,
        }
    )
    return {
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": 1.0,
        "eval_steps": eval_every,
        "global_step": n_train * every,
        "is_hyper_param_search": False,
        "logging_steps": every,
        "max_steps": max_steps,
        "num_train_epochs": 1,
        "total_flos": 1.2e15,
        "train_batch_size": 8,
        "log_history": history,
    }


LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "max_position_embeddings": 2048,
    "vocab_size": 32000,
    "torch_dtype": "bfloat16",
}


def test_hf_truncated_state_fails_its_run_only_naming_the_line(tmp_path):
    good = tmp_path / "runs" / "good"
    good.mkdir(parents=True)
    (good / "trainer_state.json").write_text(json.dumps(trainer_state(), indent=2))
    bad = tmp_path / "runs" / "bad"
    bad.mkdir()
    text = json.dumps(trainer_state(), indent=2)
    (bad / "trainer_state.json").write_text(text[: len(text) // 2])  # the Trainer was killed mid-write
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.added == 1
    [(source, why)] = report.failed
    assert source.endswith("bad") and "trainer_state.json:" in why and "not a trainer_state.json object" in why, why


def test_hf_loss_and_eval_entries_apart_with_the_shape_from_config(tmp_path):
    out = tmp_path / "runs" / "llama-60m"
    # The Trainer's output directory: checkpoints, each with the history so far, and config.json.
    for step in (50, 100):
        ckpt = out / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps(trainer_state(n_train=step // 10, nan_at=None), indent=2))
        (ckpt / "config.json").write_text(json.dumps(LLAMA_CONFIG))
        (ckpt / "model.safetensors").write_bytes(b"\0" * 64)
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.runs_found == 1, report
    run = db.runs().row(0, named=True)
    assert run["name"] == "llama-60m" and run["format"] == "hf"
    assert (run["h"], run["ffnh"], run["numl"], run["numh"]) == (512, 1376, 8, 8)
    assert run["N"] == 8 * (4 * 512**2 + 3 * 512 * 1376)
    assert run["steps"] == 100 and run["status"] == "complete"
    pts = points_of(db, "llama-60m")
    assert pts["loss"] == {s: pytest.approx(4.0 - 0.02 * s) for s in range(10, 101, 10)}
    assert pts["val_loss"] == {50: pytest.approx(3.1), 100: pytest.approx(2.1)}
    assert run["final_loss"] == pytest.approx(2.0)  # the last training entry, not the summary's mean 3.1
    lr = db.points(run["run_id"])["lr"].to_list()
    assert lr == pytest.approx([3e-4 * (1 - s / 100) for s in range(10, 101, 10)])


def test_hf_the_newest_state_wins_between_its_own_and_the_latest_checkpoint(tmp_path):
    import os

    out = tmp_path / "runs" / "resumed"
    (out / "checkpoint-200").mkdir(parents=True)
    (out / "trainer_state.json").write_text(json.dumps(trainer_state(n_train=5)))  # an earlier attempt's
    (out / "checkpoint-200" / "trainer_state.json").write_text(json.dumps(trainer_state(n_train=20, max_steps=200)))
    os.utime(out / "trainer_state.json", (1_600_000_000, 1_600_000_000))
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    assert sorted(points_of(db, "resumed")["loss"]) == list(range(10, 201, 10))
    assert db.runs()["steps"].item() == 200


def test_hf_nan_loss_marks_the_run_diverged(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "trainer_state.json").write_text(json.dumps(trainer_state(nan_at=70)))  # json writes NaN bare
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    assert db.runs()["status"].item() == "diverged"


# -- nanoGPT-style text logs -----------------------------------------------------------------

NANOGPT_SOURCE = """import os
import time
from model import GPTConfig, GPT
@torch.no_grad()
def estimate_loss():
    out = {}
    for split in ['train', 'val']:
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean()
    return out
while True:
    if iter_num % eval_interval == 0 and master_process:
        losses = estimate_loss()
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    if iter_num % log_interval == 0 and master_process:
        lossf = loss.item() * gradient_accumulation_steps
        print(f"iter {iter_num}: loss {lossf:.4f}, time {dt*1000:.2f}ms, mfu {running_mfu*100:.2f}%")
# step 5: loss spikes are normal early on
"""


def nanogpt_log(max_iters: int = 100, log_interval: int = 10, eval_interval: int = 50) -> tuple[str, dict, dict, dict]:
    lines, loss, val, eval_train = [], {}, {}, {}
    for it in range(0, max_iters + 1):
        if it % eval_interval == 0:
            eval_train[it], val[it] = round(4.5 - it / 100, 4), round(4.6 - it / 100, 4)
            lines.append(f"step {it}: train loss {eval_train[it]:.4f}, val loss {val[it]:.4f}")
            if it > 0:
                lines.append(f"saving checkpoint to out-{it}")
        if it % log_interval == 0:
            loss[it] = round(4.4 - it / 90, 4)
            lines.append(f"iter {it}: loss {loss[it]:.4f}, time {12.34 + it:.2f}ms, mfu {30.12 if it else -100.0:.2f}%")
    return "\n".join(lines) + "\n", loss, val, eval_train


def test_nanogpt_code_lines_with_loss_at_the_top_are_not_log_lines(tmp_path):
    run = tmp_path / "runs" / "shakespeare"
    run.mkdir(parents=True)
    text, loss, val, eval_train = nanogpt_log()
    (run / "train.log").write_text(NANOGPT_SOURCE + text)
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.malformed_lines == 0, report
    pts = points_of(db, "shakespeare")
    assert pts["loss"] == loss
    assert pts["val_loss"] == val
    assert pts["eval_train_loss"] == eval_train  # an estimate on eval batches: never the training loss
    assert db.runs()["format"].item() == "nanogpt"


def test_modded_nanogpt_source_longer_than_the_sniffed_head_and_planned_steps(tmp_path):
    run = tmp_path / "runs" / "speedrun"
    run.mkdir(parents=True)
    code = "".join(f"    x{i} = loss_fn(logits, targets)  # train_loss:{{loss:.4f}}\n" for i in range(3000))  # > 64 KiB
    code += 'print0(f"step:{step}/{train_steps} val_loss:{val_loss:.4f} train_time:{training_time_ms:.0f}ms")\n'
    steps = list(range(1, 3001))
    log = ["=" * 100, "step:0/3600 val_loss:10.8258 train_time:0ms step_avg:nanms"]
    log += [f"step:{s}/3600 train_loss:{10 - s / 1000:.4f} train_time:{s * 100}ms step_avg:100.00ms" for s in steps]
    log += ["step:3000/3600 val_loss:7.1000 train_time:300000ms step_avg:100.00ms"]
    (run / "0194a3c3-8a1f.txt").write_text(code + "\n".join(log) + "\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.malformed_lines == 0, report
    pts = points_of(db, "speedrun")
    assert pts["loss"] == {s: pytest.approx(10 - s / 1000) for s in steps}
    assert pts["val_loss"] == {0: 10.8258, 3000: 7.1}
    row = db.runs().row(0, named=True)
    assert row["steps"] == 3600 and row["status"] == "incomplete"  # stopped at 3000 of 3600


def test_torchtitan_lines_with_colour_codes(tmp_path):
    run = tmp_path / "runs" / "titan"
    run.mkdir(parents=True)
    red, green, yellow, blue, reset = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[39m"
    lines = ["[titan] 2024-11-01 10:00:00,001 - root - INFO - Training starts at step 1, with local batch size 8"]
    losses = {s: 12.0 - s / 10 for s in range(1, 51)}
    for s, v in losses.items():
        lines.append(
            f"[titan] 2024-11-01 10:00:{s:02d},123 - root - INFO - {red}step: {s:2}  {green}loss: {v:7.4f}  "
            f"{yellow}memory: 27.59GiB(29.04%)  {blue}tps: 1,082  mfu: 2.14%{reset}"
        )
    (run / "stdout.log").write_text("\n".join(lines) + "\n")
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    assert points_of(db, "titan")["loss"] == {s: pytest.approx(v) for s, v in losses.items()}


def test_nanogpt_bad_lines_are_counted_and_a_code_only_file_fails(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "train.log").write_text(
        "iter 0: loss 4.5000, time 1.00ms\niter 10: loss 4.4x00, time 1.00ms\n"
        "iter 20: loss 4.3000, time 1.00ms\niter 30: loss 4.2"
    )
    code_only = tmp_path / "runs" / "code"
    code_only.mkdir()
    (code_only / "train.log").write_text(NANOGPT_SOURCE)
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs", format="nanogpt")
    assert points_of(db, "r")["loss"] == {0: 4.5, 20: 4.3}
    assert any("train.log:2" in w for w in report.warnings) and any(
        "train.log:4" in w and "truncated" in w for w in report.warnings
    )
    [(source, why)] = report.failed
    assert source.endswith("code") and "no nanogpt log lines" in why, why


# -- W&B exports ----------------------------------------------------------------------------


def chart_columns(path: Path) -> dict[str, dict[str, dict[int, float]]]:
    """run -> metric -> {step: value} of a W&B chart export, read with the csv module."""
    import csv

    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    out: dict[str, dict[str, dict[int, float]]] = {}
    for j, col in enumerate(rows[0]):
        if j == 0 or col.endswith(("__MIN", "__MAX")):
            continue
        run, metric = col.rsplit(" - ", 1)
        pts = out.setdefault(run, {}).setdefault(metric, {})
        for r in rows[1:]:
            if r[j] != "":
                pts[int(float(r[0]))] = float(r[j])
    return out


def test_wandb_chart_exports_real_olmo_files_one_run_per_wandb_run(tmp_path, colpret_dir):
    olmo = need(colpret_dir / "OLMO")
    files = sorted(olmo.glob("wandb_export_*.csv"))
    assert len(files) == 2
    expected: dict[str, dict[str, dict[int, float]]] = {}
    for f in files:
        for run, metrics in chart_columns(f).items():
            expected.setdefault(run, {}).update(metrics)
    expected = {r: {m: p for m, p in ms.items() if p} for r, ms in expected.items()}
    expected = {r: ms for r, ms in expected.items() if ms}
    db = sl.open(tmp_path / "db")
    report = db.ingest(olmo)
    assert report.ok and report.malformed_lines == 0, report
    runs = db.runs()
    assert sorted(runs["name"].to_list()) == sorted(expected) and len(expected) == 36
    assert set(runs["format"].to_list()) == {"wandb-chart"}
    for run in ["OLMo-7B-run-002", "OLMo-7B-run-038", "OLMo-7B-run-030"]:
        assert points_of(db, run) == expected[run], run
    # eval-only runs: no training loss, never a val loss mixed into it
    assert runs["final_loss"].null_count() == runs.height
    assert "loss" not in set(db.points(metric=None)["metric"].to_list())


def test_wandb_chart_export_with_train_and_eval_loss(tmp_path):
    header = ['"Step"']
    runs = ["lr3e-4-bs256", "lr1e-3-bs256"]
    for r in runs:
        for m in ["train/loss", "eval/loss", "train/learning_rate"]:
            header += [f'"{r} - {m}"', f'"{r} - {m}__MIN"', f'"{r} - {m}__MAX"']
    rows = [",".join(header)]
    for step in range(0, 1000, 100):
        cells = [f'"{step}"']
        for k in range(len(runs)):
            train = f"{3.0 - step / 1000 + k:.3f}"
            ev = f"{3.2 - step / 1000 + k:.3f}" if step % 500 == 0 else ""
            cells += [f'"{train}"'] * 3 + [f'"{ev}"'] * 3 + [f'"{1e-3 * (1 - step / 1000):.6f}"'] * 3
        rows.append(",".join(cells))
    export = tmp_path / "exports" / "wandb_export_2024-05-01.csv"
    export.parent.mkdir()
    export.write_text("\n".join(rows))  # W&B writes no final newline
    db = sl.open(tmp_path / "db")
    report = db.ingest(export)
    assert report.ok and report.runs_found == 2, report
    for k, r in enumerate(runs):
        pts = points_of(db, r)
        assert pts["loss"] == {s: pytest.approx(3.0 - s / 1000 + k) for s in range(0, 1000, 100)}
        assert pts["val_loss"] == {0: pytest.approx(3.2 + k), 500: pytest.approx(2.7 + k)}
        run_id = db.runs().filter(pl.col("name") == r)["run_id"].item()
        assert db.points(run_id)["lr"].to_list() == pytest.approx([1e-3 * (1 - s / 1000) for s in range(0, 1000, 100)])


def test_wandb_history_export_long_csv_with_step_and_empty_cells(tmp_path):
    run = tmp_path / "runs" / "hist"
    run.mkdir(parents=True)
    rows = ["_step,_runtime,_timestamp,train/loss,train/learning_rate,eval/loss,train/global_step"]
    for s in range(0, 300):
        ev = f"{3.5 - s / 300:.4f}" if s % 100 == 99 else ""
        train = "" if ev else f"{3.4 - s / 300:.4f}"
        lr = "" if ev else "0.0003"
        rows.append(f"{s},{s * 1.5},{1.7e9 + s},{train},{lr},{ev},{s}")
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    (run / "config.yaml").write_text(
        "wandb_version: 1\nlearning_rate:\n  desc: null\n  value: 0.0003\n"
        "global_batch_size:\n  desc: null\n  value: 256\n"
    )
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.malformed_lines == 0, report
    pts = points_of(db, "hist")
    assert pts["loss"] == {s: pytest.approx(3.4 - s / 300, abs=1e-4) for s in range(300) if s % 100 != 99}
    assert pts["val_loss"] == {s: pytest.approx(3.5 - s / 300, abs=1e-4) for s in (99, 199, 299)}
    row = db.runs().row(0, named=True)
    assert (row["lr"], row["bs"]) == (3e-4, 256)  # from W&B's wrapped config values


def test_multipowerlaw_csv_with_an_lr_column(tmp_path, loss_curves):
    files = sorted(need(loss_curves / "csv_100").glob("*.csv"))
    assert len(files) == 9
    db = sl.open(tmp_path / "db")
    report = db.ingest(files)
    assert report.ok and report.runs_found == 9, report
    ref = pl.read_csv(loss_curves / "csv_100" / "cosine_24000.csv")
    got = db.points(db.runs().filter(pl.col("name") == "cosine_24000")["run_id"].item())
    assert got["step"].to_list() == ref["step"].to_list()
    assert got["value"].to_list() == ref["loss"].to_list()
    assert got["lr"].to_list() == ref["lr"].to_list()


# -- no input crashes or hangs a reader (hypothesis) ----------------------------------------

_VALID_EVENTS = file_version() + b"".join(
    record(event(s, [simple_value("loss", 3.0 - s / 100), tensor_value("lr", 1e-3, DT_DOUBLE)])) for s in range(40)
)
_VALID = {
    # (file name, forced format): a valid file of that format
    ("events.out.tfevents.1.h", "tensorboard"): _VALID_EVENTS,
    ("trainer_state.json", "hf"): json.dumps(trainer_state()).encode(),
    ("train.log", "nanogpt"): (NANOGPT_SOURCE + nanogpt_log()[0]).encode(),
    (
        "export.csv",
        "wandb-chart",
    ): b'"Step","a - train/loss","a - train/loss__MIN","b - eval/loss"\n"1","3.0","2.9",""\n"2","","","2.5"',
    ("history.csv", "csv"): b"_step,train/loss,eval/loss\n0,3.0,\n1,2.9,3.1\n",
    ("train_log_0.txt", "steplaw"): "".join(
        f"2024-06-18 12:00:00.010 | INFO     | megatron.core.trainerv2:training_log:812 - iter {i:>8}/{20:>8} "
        f"| consumed samples: {i * 8:>12} | learning rate: 3.0E-04 | global batch size: 8 | lm loss: {3 - i / 50:E} |\n"
        for i in range(1, 21)
    ).encode(),
    ("train.log", "megatron"): "".join(
        f" [2024-06-18 12:00:00] iteration {i:>8}/{20:>8} | consumed samples: {i * 8:>12} "
        f"| elapsed time per iteration (ms): 1234.5 | learning rate: 1.000000E-04 | global batch size: 8 "
        f"| lm loss: {3 - i / 50:E} | loss scale: 1.0 |\n"
        for i in range(1, 21)
    ).encode(),
    ("metrics.jsonl", "jsonl"): b"".join(
        b'{"step": %d, "loss": %f, "lr": 0.0003}\n' % (i, 3 - i / 50) for i in range(1, 21)
    ),
}
_PROPERTY = settings(
    max_examples=60, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _ingest_survives(name: str, fmt: str | None, data: bytes) -> None:
    """Ingest `data` as a run's only file: a report or a SteplawError, nothing else; what
    is committed reads back."""
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "runs" / "r"
        run.mkdir(parents=True)
        (run / name).write_bytes(data)
        db = sl.open(Path(d) / "db")
        try:
            report = db.ingest(Path(d) / "runs", format=fmt)
        except SteplawError:
            return
        assert report.added + len(report.failed) == report.runs_found
        for _, why in report.failed:
            assert why  # every failure says why
        if report.added:
            assert db.points(metric=None).height == report.points


@st.composite
def mutated(draw, fmt_key):
    data = bytearray(_VALID[fmt_key])
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["flip", "delete", "insert"]))
        if not data:
            break
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut] if draw(st.booleans()) else data)


@pytest.mark.slow  # 60 examples per format: 3-40 s for the 8 on 2 busy cores
@pytest.mark.parametrize("key", list(_VALID), ids=[k[1] for k in _VALID])
@given(data=st.binary(max_size=2048))
@_PROPERTY
def test_random_bytes_never_crash_a_reader(key, data):
    _ingest_survives(key[0], key[1], data)
    _ingest_survives(key[0], None, data)  # detection by name and content too


@pytest.mark.slow  # 60 mutations per format: 3-30 s for the 8 on 2 busy cores
@pytest.mark.parametrize("key", list(_VALID), ids=[k[1] for k in _VALID])
@given(st.data())
@_PROPERTY
def test_mutated_valid_files_never_crash_a_reader(key, data):
    _ingest_survives(key[0], key[1], data.draw(mutated(key)))


# -- the command line ------------------------------------------------------------------------


def test_cli_ingests_the_new_formats_and_lists_them_in_help(tmp_path):
    from typer.testing import CliRunner

    from steplaw_db.cli import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["ingest", "--help"]).output
    for name in ["nanogpt", "wandb-chart", "tensorboard", "hf"]:
        assert name in help_text
    _five_points(tmp_path / "runs" / "tb")
    hf = tmp_path / "runs" / "hf"
    hf.mkdir()
    (hf / "trainer_state.json").write_text(json.dumps(trainer_state()))
    db = str(tmp_path / "db")
    result = runner.invoke(app, ["--db", db, "ingest", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert sorted(sl.open(db).runs()["format"].to_list()) == ["hf", "tensorboard"]
    bad = runner.invoke(app, ["--db", db, "ingest", "--format", "parquet", str(tmp_path / "runs")])
    assert bad.exit_code != 0 and "tensorboard" in bad.output


def test_wandb_history_jsonl_with_media_rows_and_nan(tmp_path):
    run = tmp_path / "runs" / "files"
    run.mkdir(parents=True)
    rows = []
    for s in range(50):
        rows.append(
            {"_step": s, "_runtime": s * 2.0, "_timestamp": 1.7e9 + s, "train/loss": 3.0 - s / 100, "train/lr": 1e-3}
        )
        if s % 25 == 24:
            rows.append(
                {"_step": s, "eval/loss": 3.1 - s / 100, "samples": {"_type": "table-file", "path": "media/t.json"}}
            )
    text = "\n".join(json.dumps(r) for r in rows).replace('"train/loss": 2.9,', '"train/loss": NaN,')
    (run / "wandb-history.jsonl").write_text(text + "\n")
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok and report.malformed_lines == 0, report
    pts = points_of(db, "files")
    assert len(pts["loss"]) == 50 and pts["val_loss"] == {24: pytest.approx(2.86), 49: pytest.approx(2.61)}
    assert db.runs()["status"].item() == "diverged"  # the NaN loss at step 10


def test_json_and_csv_floats_are_read_correctly_rounded(tmp_path):
    """Every float is the double Python's own parser gives, to the last bit (serde_json's
    default parser was one ulp off on values such as 1.0509785658196473)."""
    rng = random.Random(5)
    values = [1.0509785658196473, 1.0516128669561333, 2.2250738585072014e-308, 0.1, 1e23]
    values += [rng.uniform(0.5, 12.0) for _ in range(300)]
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(f'{{"step": {i}, "loss": {v!r}}}\n' for i, v in enumerate(values)))
    csv_run = tmp_path / "runs" / "c"
    csv_run.mkdir()
    (csv_run / "metrics.csv").write_text("step,loss\n" + "".join(f"{i},{v!r}\n" for i, v in enumerate(values)))
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    for name in ("r", "c"):
        got = points_of(db, name)["loss"]
        assert [got[i] for i in range(len(values))] == values, name


def test_csv_and_jsonl_know_every_declared_series_name(tmp_path):
    """One list of names for every reader: `validation/loss` is a val loss in a CSV as it is
    in TensorBoard, `trainer/global_step` a step, `learning rate` an lr."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    rows = "".join(f"{s},{3 - s / 10},{3.2 - s / 10},{1e-3 * (1 - s / 10)}\n" for s in range(5))
    (run / "metrics.csv").write_text("trainer/global_step,train_loss,validation/loss,learning rate\n" + rows)
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs").ok
    pts = points_of(db, "r")
    assert pts["loss"] == pytest.approx({s: 3 - s / 10 for s in range(5)})
    assert pts["val_loss"] == pytest.approx({s: 3.2 - s / 10 for s in range(5)})


@pytest.mark.parametrize(
    ("ext", "body", "last", "kept"),
    [
        # a whole last line without its newline is kept (a final eval line was dropped before)
        ("csv", "step,loss,val_loss\n1,3.10,3.20\n2,2.90,3.00\n", "3,2.80,2.95", True),
        ("jsonl", '{"step": 1, "loss": 3.1}\n{"step": 2, "loss": 2.9}\n', '{"step": 3, "loss": 2.8}', True),
        # a line truly cut short is dropped and counted: a shorter last value, a missing column,
        # an unclosed object
        ("csv", "step,loss,val_loss\n1,3.10,3.20\n2,2.90,3.00\n", "3,2.80,2.9", False),
        ("csv", "step,loss,val_loss\n1,3.10,3.20\n2,2.90,3.00\n", "3,2.80", False),
        ("jsonl", '{"step": 1, "loss": 3.1}\n{"step": 2, "loss": 2.9}\n', '{"step": 3, "loss": 2.8', False),
    ],
)
def test_last_line_without_newline_is_kept_when_whole(tmp_path, ext, body, last, kept):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / f"metrics.{ext}").write_text(body + last)
    db = sl.open(tmp_path / "db")
    report = db.ingest(tmp_path / "runs")
    assert report.ok, report.failed
    steps = sorted(points_of(db, "r")["loss"])
    assert steps == ([1, 2, 3] if kept else [1, 2])
    assert report.malformed_lines == (0 if kept else 1), report.warnings
    if not kept:
        assert f"metrics.{ext}:{body.count(chr(10)) + 1}: " in report.warnings[0], report.warnings
