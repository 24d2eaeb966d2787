"""Cold start of the command line, as a ratio to a bare interpreter start on the same machine.

    python benches/bench_cli.py [--repeat 15]

Runs ``python -c pass``, ``steplaw-db --help`` and ``steplaw-db predict 7e9 1.4e12`` in turn,
``--repeat`` rounds (alternating, so a loaded machine slows all three alike), and prints each
one's median wall time and its ratio to the bare start. The target (issue 17) is at most 15x.
The ``steplaw-db`` script is the one installed beside this interpreter (no pyenv shim)."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _script() -> list[str]:
    beside = Path(sys.executable).with_name("steplaw-db")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("steplaw-db")
    return [found] if found else [sys.executable, "-m", "steplaw_db.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    cli = _script()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "steplaw-db --help": [*cli, "--help"],
        "steplaw-db predict 7e9 1.4e12": [*cli, "predict", "7e9", "1.4e12"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():  # warm the file cache once
        subprocess.run(cmd, check=True, capture_output=True)
    for _ in range(args.repeat):
        for name, cmd in commands.items():
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<32} {'median s':>9} {'ratio':>7}   ({args.repeat} alternating runs each)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<32} {med:>9.3f} {med / base:>6.1f}x")


if __name__ == "__main__":
    main()
