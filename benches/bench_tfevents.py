"""TensorBoard benchmark: steplaw-db's event-file reader against tbparse and tensorboard's
EventAccumulator (size guidance 0: every scalar kept) on the same files.

    python benches/bench_tfevents.py [--runs 8] [--steps 25000] [--tags 3] [--data DIR]

Generates (once, cached in --data) one run directory per run holding two event files (a
restart at 80% of the steps: the second file repeats the last fifth), written as PyTorch's
SummaryWriter writes `add_scalar`: one Event per scalar, `simple_value`. Warms the page cache,
then in one process times:
  * steplaw-db's ingest of the tree into a fresh store (median of 3; it also writes the store);
  * tbparse `SummaryReader(run).scalars`, run by run;
  * tensorboard's `EventAccumulator(run, size_guidance={"scalars": 0})`, run by run.
Each baseline is skipped with a message when its package is not installed (they are not
dependencies of steplaw-db: `pip install tbparse` brings both). Prints one line per
measurement and the ratios; numbers go into benches/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import steplaw_db as sl
from _data import T5X_RUN

# The tests' TFRecord/protobuf codec writes the benchmark's files.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from references import _CRC
from references import fld as _fld
from references import varint as _varint


def _mask(c: int) -> int:
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crcs(bodies: list[bytes]) -> list[int]:
    """Masked CRC32C of each body: vectorised over bodies of one length with numpy when it is
    there (the pure-Python loop is the fallback)."""
    try:
        import numpy as np
    except ImportError:
        out = []
        for b in bodies:
            c = 0xFFFFFFFF
            for x in b:
                c = (c >> 8) ^ _CRC[(c ^ x) & 0xFF]
            out.append(_mask(c ^ 0xFFFFFFFF))
        return out
    table = np.array(_CRC, dtype=np.uint32)
    result = [0] * len(bodies)
    by_len: dict[int, list[int]] = {}
    for i, b in enumerate(bodies):
        by_len.setdefault(len(b), []).append(i)
    for n, idx in by_len.items():
        arr = np.frombuffer(b"".join(bodies[i] for i in idx), dtype=np.uint8).reshape(len(idx), n)
        c = np.full(len(idx), 0xFFFFFFFF, dtype=np.uint32)
        for j in range(n):
            c = (c >> np.uint32(8)) ^ table[(c ^ arr[:, j]) & np.uint32(0xFF)]
        c ^= np.uint32(0xFFFFFFFF)
        masked = (((c >> np.uint32(15)) | (c << np.uint32(17))) + np.uint32(0xA282EAD8)).astype(np.uint32)
        for i, m in zip(idx, masked.tolist(), strict=True):
            result[i] = m
    return result


def event_file(steps: range, tags: list[str], seed: int) -> bytes:
    """The bytes of an event file: a file_version event, then one event per (step, tag)."""
    bodies = [b"\x09" + struct.pack("<d", 1.7e9) + _fld(3, b"brain.Event:2")]
    for s in steps:
        for k, tag in enumerate(tags):
            value = (3.0 + k + seed / 100) * (1 + s) ** -0.1
            summary = _fld(1, _fld(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
            bodies.append(b"\x09" + struct.pack("<d", 1.7e9 + s) + b"\x10" + _varint(s) + _fld(5, summary))
    crcs = masked_crcs(bodies)
    headers: dict[int, bytes] = {}
    parts = []
    for body, crc in zip(bodies, crcs, strict=True):
        n = len(body)
        if n not in headers:
            h = struct.pack("<Q", n)
            headers[n] = h + struct.pack("<I", masked_crcs([h])[0])
        parts += [headers[n], body, struct.pack("<I", crc)]
    return b"".join(parts)


def make_data(root: Path, runs: int, steps: int, tags: int) -> tuple[int, int]:
    """(events, bytes) of the data set, generated once."""
    marker = root / ".complete"
    spec = f"{runs} {steps} {tags}"
    tag_names = ["train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"][:tags] + [
        f"train/extra_{i}" for i in range(max(0, tags - 4))
    ]
    restart = int(steps * 0.8)
    n_events = runs * (2 + (steps + (steps - restart + 1)) * tags)
    if marker.exists() and marker.read_text() == spec:
        return n_events, sum(p.stat().st_size for p in root.glob("*/events.out.tfevents.*"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for r in range(runs):
        run = root / f"run_{r:03d}"
        run.mkdir()
        (run / "events.out.tfevents.1700000000.host.1.0").write_bytes(event_file(range(1, steps + 1), tag_names, r))
        (run / "events.out.tfevents.1700009999.host.2.0").write_bytes(
            event_file(range(restart, steps + 1), tag_names, r + 50)
        )
    marker.write_text(spec)
    return n_events, sum(p.stat().st_size for p in root.glob("*/events.out.tfevents.*"))


def time_steplaw(data: Path, scratch: Path) -> tuple[float, list[float], int]:
    times = []
    for _ in range(3):
        db = scratch / "db"
        shutil.rmtree(db, ignore_errors=True)
        t = time.perf_counter()
        report = sl.open(db).ingest(data)
        times.append(time.perf_counter() - t)
        assert report.ok, report.failed
    return statistics.median(times), times, report.points


def time_tbparse(runs: list[Path]) -> tuple[float, int] | None:
    try:
        from tbparse import SummaryReader
    except ImportError:
        print("tbparse: not installed, skipped (pip install tbparse)")
        return None
    t = time.perf_counter()
    n = sum(len(SummaryReader(str(r), pivot=False).scalars) for r in runs)
    return time.perf_counter() - t, n


def time_event_accumulator(runs: list[Path]) -> tuple[float, int] | None:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        print("tensorboard EventAccumulator: not installed, skipped (pip install tensorboard)")
        return None
    t = time.perf_counter()
    n = 0
    for r in runs:
        acc = EventAccumulator(str(r), size_guidance={"scalars": 0})
        acc.Reload()
        n += sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25_000)
    ap.add_argument("--tags", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("STEPLAW_BENCH_DIR", "/tmp/steplaw-bench")))
    args = ap.parse_args()
    data = args.data / "tfevents"
    t = time.perf_counter()
    n_events, n_bytes = make_data(data, args.runs, args.steps, args.tags)
    runs = sorted(p for p in data.iterdir() if p.is_dir())
    print(
        f"data: {len(runs)} runs, {n_events:,} events, {n_bytes / 1e6:.0f} MB at {data} "
        f"(ready in {time.perf_counter() - t:.1f} s)"
    )
    for p in data.glob("*/events.out.tfevents.*"):  # warm the page cache
        p.read_bytes()

    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        ours, times, points = time_steplaw(data, Path(tmp))
    print(
        f"steplaw-db ingest: {points:,} points kept, {ours:.3f} s, {n_events / ours / 1e6:.2f} M events/s, "
        f"{n_bytes / 1e6 / ours:.0f} MB/s (median of {', '.join(f'{x:.3f}' for x in times)} s)"
    )
    # Points after the restart rule: the second file's steps replace the first's.
    expected_points = args.runs * args.steps * args.tags
    assert points == expected_points, (points, expected_points)

    for name, result in [
        ("tbparse", time_tbparse(runs)),
        ("EventAccumulator(size_guidance 0)", time_event_accumulator(runs)),
    ]:
        if result is None:
            continue
        secs, n = result
        # The baselines keep both files' copies of the restarted steps (no restart rule).
        print(
            f"{name}: {n:,} scalars, {secs:.2f} s, {n_events / secs / 1e6:.3f} M events/s; "
            f"steplaw-db is {secs / ours:.1f}x faster"
        )
    if T5X_RUN.is_dir():
        time_real_t5x(T5X_RUN, args.data)
    else:
        print(f"real T5X files: {T5X_RUN} not found, skipped")
    sys.stdout.flush()


def time_real_t5x(run: Path, scratch_root: Path) -> None:
    """The real T5X run of ../shared/data/colpret (tensor summaries): small, so repeated."""
    files = sorted(run.glob("**/events.out.tfevents.*"))
    n_bytes = sum(f.stat().st_size for f in files)
    with tempfile.TemporaryDirectory(dir=scratch_root) as tmp:
        times = []
        for _ in range(7):
            db = Path(tmp) / "db"
            shutil.rmtree(db, ignore_errors=True)
            t = time.perf_counter()
            report = sl.open(db).ingest(run)
            times.append(time.perf_counter() - t)
        ours = statistics.median(times)
    print(
        f"real T5X run ({len(files)} files, {n_bytes / 1e3:.0f} kB): steplaw-db {report.points:,} points, "
        f"{ours * 1000:.1f} ms (median of 7)"
    )
    try:
        from tbparse import SummaryReader
    except ImportError:
        print("tbparse: not installed, skipped")
        return
    parts = sorted({f.parent for f in files})
    t = time.perf_counter()
    n = sum(len(SummaryReader(str(p), pivot=False).tensors) for p in parts)
    secs = time.perf_counter() - t
    print(
        f"real T5X run, tbparse .tensors: {n:,} scalars, {secs * 1000:.0f} ms; steplaw-db is {secs / ours:.1f}x faster"
    )


if __name__ == "__main__":
    main()
