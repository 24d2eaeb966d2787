"""How exact is each final-loss mode? Synthetic curves with a known final loss.

    python benches/study_final_loss.py

Writes a synthetic sweep (Step Law format, the synth module's curves: a power-law decay to
the true final loss, multiplicative Gaussian noise), optionally with loss spikes, ingests it
and prints, per smoothing mode, the RMS and mean relative error of the final loss against
the truth (diverged runs left out). The table goes into docs/final-loss.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl

import steplaw_db as sl
from steplaw_db import synth

MODES = [
    ("robust", {}),
    ("robust", {"width": 0.05}),
    ("robust", {"width": 0.2}),
    ("steplaw", {}),
    ("gaussian", {"width": 0.01}),
    ("ema", {"weight": 0.9}),
    ("tail-mean", {"width": 0.02}),
    ("none", {}),
]


def add_spikes(root: Path, rng: np.random.Generator, per_run: int = 3) -> None:
    """Multiply a few random entries of each curve's last 10% by 1.5 (loss spikes)."""
    for log in root.rglob("train_log_0.txt"):
        lines = log.read_text().splitlines(keepends=True)
        n = len(lines)
        for i in rng.choice(np.arange(int(0.9 * n), n - 1), size=per_run, replace=False):
            head, _, tail = lines[i].partition("lm loss: ")
            value, sep, rest = tail.partition(" |")
            lines[i] = f"{head}lm loss: {float(value) * 1.5:E}{sep}{rest}"
        log.write_text("".join(lines))


def study(noise: float, points: int, spikes: bool) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        truth = synth.write_sweep(root / "sweep", points=points, noise=noise, seed=11)
        if spikes:
            add_spikes(root / "sweep", np.random.default_rng(0))
        db = sl.open(root / "db")
        assert db.ingest(root / "sweep").ok
        ok = truth.filter(~pl.col("diverged")).select("name", "true_final_loss")
        rows = []
        for mode, kw in MODES:
            f = db.final_losses(mode, **kw).join(ok, on="name")
            e = (f["loss"] / f["true_final_loss"] - 1).to_numpy()
            label = mode + "".join(f" {k}={v}" for k, v in kw.items())
            rows.append(
                {"mode": label, "rms_%": 100 * float(np.sqrt(np.mean(e**2))), "bias_%": 100 * float(np.mean(e))}
            )
        return rows


def main() -> None:
    for noise, points, spikes in [(0.005, 1000, False), (0.02, 1000, False), (0.005, 1000, True), (0.005, 200, False)]:
        print(f"\nnoise {noise:.1%} per point, {points} points per curve, spikes: {spikes}")
        print("| mode | RMS error % | mean error % |\n|---|---|---|")
        for r in study(noise, points, spikes):
            print(f"| {r['mode']} | {r['rms_%']:.4f} | {r['bias_%']:+.4f} |")


if __name__ == "__main__":
    main()
