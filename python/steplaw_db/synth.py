"""Synthetic hyperparameter sweeps with a known ground truth.

``write_sweep`` writes one directory per training run, in the log formats the ingester reads
(Step Law's loguru Megatron fork, Megatron-LM, JSONL and CSV metrics), plus ``truth.json`` at the
top level.  The runs follow a Step Law optimum (GUIDE.md section 2) and a quadratic loss
landscape in (ln lr, ln B) around a Chinchilla loss (Epoch AI's refit), so the analysis can be
checked against the truth it is supposed to recover.

Pure Python + numpy + polars; deliberately imports nothing from the rest of ``steplaw_db``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

if TYPE_CHECKING:  # for type checkers only: this module imports nothing of the package at run time
    from ._typing import SynthFormat

__all__ = [
    "BS_COEF",
    "BS_EXP_D",
    "DEFAULT_CELLS",
    "DEFAULT_D",
    "DEFAULT_SHAPES",
    "DIVERGE_LOSS",
    "DIVERGE_LR_FACTOR",
    "DIVERGE_START",
    "FORMATS",
    "LANDSCAPE_A",
    "LANDSCAPE_B",
    "LOSS_A",
    "LOSS_ALPHA",
    "LOSS_B",
    "LOSS_BETA",
    "LOSS_E",
    "LOSS_INIT",
    "LR_COEF",
    "LR_EXP_D",
    "LR_EXP_N",
    "PLATEAU_LOSS",
    "RECIPE_NAME_RE",
    "RUN_NAME_RE",
    "TRUTH",
    "GroundTruth",
    "bs_tokens_opt",
    "landscape",
    "loss_opt",
    "lr_opt",
    "n_params",
    "parse_run_name",
    "run_name",
    "write_sweep",
]

# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------

# Step Law (Li et al. 2025): eta* = 1.79 N^-0.713 D^0.307 (peak LR), B* = 0.58 D^0.571 (tokens).
LR_COEF = 1.79
LR_EXP_N = -0.713
LR_EXP_D = 0.307
BS_COEF = 0.58
BS_EXP_D = 0.571

# Chinchilla form L = E + A / N^alpha + B / D^beta, Epoch AI's refit (Besiroglu et al. 2024).
LOSS_E = 1.82
LOSS_A = 482.01
LOSS_B = 2085.43
LOSS_ALPHA = 0.3478
LOSS_BETA = 0.3658

# Landscape L = Lopt * (1 + a (ln lr - ln lr*)^2 + b (ln B - ln B*)^2):
# halving (or doubling) the LR costs +0.3 %, halving (or doubling) the batch +0.5 %.
LANDSCAPE_A = 0.003 / math.log(2.0) ** 2
LANDSCAPE_B = 0.005 / math.log(2.0) ** 2

LOSS_INIT = 10.8  # loss at t = 0 (about ln(vocab))
DIVERGE_LR_FACTOR = (
    2.0**1.25
)  # runs with lr >= factor * lr* diverge (when diverge=True): the top LRs of the default grid
DIVERGE_START = 0.7  # fraction of the steps where a diverging run's loss starts to rise
DIVERGE_LOSS = 7.5  # level the loss of a diverging run rises towards
DIVERGE_NAN = 2  # a diverging run's last entries that read nan
WARMUP_FRACTION = 0.01  # linear warm-up over the first 1 % of the steps, then cosine to lr_min
#: A run at too high an lr that never leaves the early plateau (``plateau_lr_factor``) ends near
#: the unigram entropy of the data: about 7.3 nats for a 50k-token BPE vocabulary on web text
#: (the loss a model reaches that learns token frequencies and nothing else).
PLATEAU_LOSS = 7.3
PLATEAU_EXIT = 0.02  # fraction of the steps over which such a run falls from loss_init to its plateau

FORMATS = ("steplaw", "megatron", "jsonl", "csv")

# Two dense shapes of the public Step Law data, each at two token budgets.
DEFAULT_SHAPES = ((960, 9368, 15, 7), (1280, 9472, 10, 10))
DEFAULT_D = (2e10, 8e10)
DEFAULT_CELLS = tuple((*shape, d) for shape in DEFAULT_SHAPES for d in DEFAULT_D)


@dataclass(frozen=True)
class GroundTruth:
    """The laws the synthetic sweep is generated from: the optimum, the landscape and the shape
    of the curves. The module constants are only these fields' defaults; the generator reads
    every field from the GroundTruth it is given (a recipe's own, or TRUTH), so truth.json,
    which records the fields, is what the runs follow."""

    lr_coef: float = LR_COEF
    lr_exp_N: float = LR_EXP_N
    lr_exp_D: float = LR_EXP_D
    bs_coef: float = BS_COEF
    bs_exp_D: float = BS_EXP_D
    loss_E: float = LOSS_E
    loss_A: float = LOSS_A
    loss_B: float = LOSS_B
    loss_alpha: float = LOSS_ALPHA
    loss_beta: float = LOSS_BETA
    landscape_a: float = LANDSCAPE_A
    landscape_b: float = LANDSCAPE_B
    loss_init: float = LOSS_INIT
    diverge_lr_factor: float = DIVERGE_LR_FACTOR
    diverge_start: float = DIVERGE_START
    diverge_loss: float = DIVERGE_LOSS
    diverge_nan: int = DIVERGE_NAN
    warmup_fraction: float = WARMUP_FRACTION

    def __post_init__(self) -> None:
        # a value the generator cannot honour would give curves that silently differ from the
        # recorded law (a negative nan count writes none, a warm-up past the end never ends)
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"GroundTruth.{f.name} must be a number, got {v!r}")
            if math.isnan(v) or (math.isinf(v) and f.name != "diverge_lr_factor"):
                raise ValueError(f"GroundTruth.{f.name} must be finite, got {v!r}")
        checks = {
            "loss_init": (self.loss_init > 0, "> 0"),
            "diverge_loss": (self.diverge_loss > 0, "> 0"),
            "diverge_lr_factor": (self.diverge_lr_factor > 0, "> 0 (inf: no run diverges)"),
            "diverge_start": (0.0 <= self.diverge_start <= 1.0, "a fraction of the steps in [0, 1]"),
            "warmup_fraction": (0.0 <= self.warmup_fraction < 1.0, "a fraction of the steps in [0, 1)"),
            "diverge_nan": (
                float(self.diverge_nan).is_integer() and self.diverge_nan >= 0,
                "a whole number of log entries >= 0",
            ),
        }
        for name, (ok, what) in checks.items():
            if not ok:
                raise ValueError(f"GroundTruth.{name} must be {what}, got {getattr(self, name)!r}")

    def lr_opt(self, N, D):
        """Optimal peak learning rate (Step Law)."""
        return self.lr_coef * np.power(N, self.lr_exp_N) * np.power(D, self.lr_exp_D)

    def bs_tokens_opt(self, D):
        """Optimal global batch in tokens (Step Law)."""
        return self.bs_coef * np.power(D, self.bs_exp_D)

    def loss_opt(self, N, D):
        """Final loss at the optimum (Chinchilla form, Epoch AI's refit)."""
        return self.loss_E + self.loss_A / np.power(N, self.loss_alpha) + self.loss_B / np.power(D, self.loss_beta)

    def landscape(self, N, D, lr, bs_tokens):
        """Noise-free final loss of a run with peak ``lr`` and batch ``bs_tokens``."""
        x = np.log(lr) - np.log(self.lr_opt(N, D))
        y = np.log(bs_tokens) - np.log(self.bs_tokens_opt(D))
        return self.loss_opt(N, D) * (1.0 + self.landscape_a * x * x + self.landscape_b * y * y)

    def diverges(self, N, D, lr):
        return np.asarray(lr) >= self.diverge_lr_factor * self.lr_opt(N, D)

    def with_optima(self, cells: pl.DataFrame) -> pl.DataFrame:
        """``cells`` (columns N and D) with the true optimum of each beside it: ``lr_true``
        and ``bs_tokens_true``, to compare with what an analysis found."""
        n, d = cells["N"].cast(pl.Float64).to_numpy(), cells["D"].cast(pl.Float64).to_numpy()
        return cells.with_columns(lr_true=self.lr_opt(n, d), bs_tokens_true=self.bs_tokens_opt(d))


TRUTH = GroundTruth()


def n_params(h: int, ffnh: int, numl: int) -> int:
    """Non-embedding parameters of a dense SwiGLU transformer: numl (4 h^2 + 3 h ffnh)."""
    return int(numl) * (4 * int(h) ** 2 + 3 * int(h) * int(ffnh))


def lr_opt(N, D):
    return TRUTH.lr_opt(N, D)


def bs_tokens_opt(D):
    return TRUTH.bs_tokens_opt(D)


def loss_opt(N, D):
    return TRUTH.loss_opt(N, D)


def landscape(N, D, lr, bs_tokens):
    return TRUTH.landscape(N, D, lr, bs_tokens)


# --------------------------------------------------------------------------------------------
# Run names
# --------------------------------------------------------------------------------------------

RUN_NAME_RE = re.compile(
    r"^(?P<prefix>.*?)_h(?P<h>\d+)_ffnh(?P<ffnh>\d+)_numh(?P<numh>\d+)_numl(?P<numl>\d+)"
    r"_lr(?P<lr>[0-9.eE+-]+)_bs(?P<bs>\d+)_ti(?P<steps>\d+)_mlr(?P<lr_min>[0-9.eE+-]+)$"
)


#: A recipe's name: it names a directory under the sweep's root and a part of each run's name,
#: so a letter or digit first, then letters, digits, '.', '_' or '-' (no '/', no '..').
RECIPE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def run_name(
    h: int, ffnh: int, numh: int, numl: int, lr: float, bs: int, steps: int, lr_min: float, prefix: str = "synth"
) -> str:
    return f"{prefix}_h{h}_ffnh{ffnh}_numh{numh}_numl{numl}_lr{lr:.3e}_bs{bs}_ti{steps}_mlr{lr_min:.2e}"


def parse_run_name(name: str) -> dict[str, Any]:
    """Inverse of :func:`run_name` (also reads real Step Law names such as
    ``step2v2_0618_h960_ffnh9368_numh15_numl7_lr3.453e-04_bs736_ti66342_mlr1.00e-05``)."""
    m = RUN_NAME_RE.match(name)
    if m is None:
        raise ValueError(f"not a Step Law run name: {name!r}")
    g = m.groupdict()
    out: dict[str, Any] = {k: int(g[k]) for k in ("h", "ffnh", "numh", "numl", "bs", "steps")}
    out["lr"] = float(g["lr"])
    out["lr_min"] = float(g["lr_min"])
    out["prefix"] = g["prefix"]
    return out


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


def _iterations(steps: int, points: int) -> np.ndarray:
    """interval, 2 interval, ..., with the last entry exactly ``steps``."""
    interval = max(1, steps // max(1, points))
    it = np.arange(interval, steps + 1, interval, dtype=np.int64)
    if it.size == 0 or it[-1] != steps:
        it = np.append(it, np.int64(steps))
    return it


def _lr_schedule(t: np.ndarray, steps: int, lr: float, lr_min: float, warmup_fraction: float) -> np.ndarray:
    """Linear warm-up over the first ``warmup_fraction`` of the steps (at least one step), then
    cosine decay from lr to lr_min."""
    warm = max(1, round(warmup_fraction * steps))
    t = t.astype(np.float64)
    span = max(1, steps - warm)
    prog = np.clip((t - warm) / span, 0.0, 1.0)
    cos = lr_min + 0.5 * (lr - lr_min) * (1.0 + np.cos(np.pi * prog))
    return np.where(t < warm, lr * t / warm, cos)


def _decay(t: np.ndarray, steps: int) -> np.ndarray:
    """Smooth decreasing g with g(0) = 1 and g(steps) = 0 (a power law in t + t0)."""
    t0 = steps / 100.0
    end = (steps + t0) ** -0.5
    g = ((t + t0) ** -0.5 - end) / (t0**-0.5 - end)
    return np.clip(g, 0.0, 1.0)  # rounding can give -1e-17 at t = steps


def _curves(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-entry arrays of one run: iterations, lr, loss (noisy, nan at a divergence's end),
    grad norm and time per iteration. Deterministic in (seed, run index). The curve's shape
    comes from the run's GroundTruth, which ``_plan`` put in ``spec["truth"]`` (as a dict:
    the pool's workers get plain data)."""
    truth = spec["truth"]
    steps = spec["steps"]
    it = _iterations(steps, spec["points"])
    n = it.size
    rng = np.random.default_rng([spec["seed"], 1, spec["index"]])
    eps_loss = rng.standard_normal(n)
    eps_gn = rng.standard_normal(n)
    eps_ms = rng.standard_normal(n)

    t = it.astype(np.float64)
    g = _decay(t, steps)
    final = spec["true_final_loss"] * (1.0 + spec["run_offset"])
    if spec["plateau"]:
        # stuck at the unigram level after a short fall: finite to the end, never nan
        g = np.exp(-t / max(1.0, PLATEAU_EXIT * steps))
    loss = final + (truth["loss_init"] - final) * g
    gn = 0.15 + 1.5 * np.sqrt(g)
    if spec["diverged"]:
        t_div = truth["diverge_start"] * steps
        rise = np.where(t >= t_div, 1.0 - np.exp(-(t - t_div) / (0.05 * steps)), 0.0)
        loss = loss + (truth["diverge_loss"] - loss) * rise
        gn = gn * (1.0 + 20.0 * rise)
    loss = loss * (1.0 + spec["noise"] * eps_loss)
    gn = np.abs(gn * (1.0 + 0.05 * eps_gn))
    if spec["diverged"]:
        k = min(int(truth["diverge_nan"]), n)
        loss[n - k :] = np.nan
        gn[n - k :] = np.nan
    lr = _lr_schedule(it, steps, spec["lr"], spec["lr_min"], truth["warmup_fraction"])
    ms = spec["ms_per_iter"] * (1.0 + 0.02 * eps_ms)
    return it, lr, loss, gn, ms


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------

_BASE_TIME = np.datetime64("2024-06-18T12:00:00.000", "ms")

_STEPLAW_LINE = (
    "%s | INFO     | megatron.core.trainerv2:training_log:812 - iter %8d/%8d"
    " | consumed samples: %12d | learning rate: %.6E | global batch size: %5d"
    " | lm loss: %.6E | grad norm: %.3f |\n"
)
_MEGATRON_LINE = (
    " [%s] iteration %8d/%8d | consumed samples: %12d | elapsed time per iteration (ms): %.1f"
    " | learning rate: %.6E | global batch size: %5d | lm loss: %.6E | loss scale: 1.0"
    " | grad norm: %.3f | number of skipped iterations: %3d | number of nan iterations: %3d |\n"
)
_JSONL_LINE = '{"step": %d, "loss": %.7g, "lr": %.7g}\n'
_CSV_LINE = "%d,%.7g,%.7g\n"


def _timestamps(ms_offsets: np.ndarray, base: np.datetime64, unit: Literal["ms", "s"]) -> list[str]:
    """``YYYY-MM-DD HH:MM:SS[.mmm]`` strings (vectorised: numpy formats, one byte is patched)."""
    ts = base + np.round(ms_offsets).astype(np.int64).astype("timedelta64[ms]")
    s = np.datetime_as_string(ts, unit=unit)
    width = s.dtype.itemsize // 4
    b = s.astype(f"S{width}")
    b.view(np.uint8).reshape(-1, width)[:, 10] = ord(" ")  # the ISO 'T'
    return b.astype(f"U{width}").tolist()


def _format_steplaw_lines(
    ts: list[str],
    it: list[int],
    steps: int,
    consumed: list[int],
    lr: list[float],
    bs: int,
    loss: list[float],
    gn: list[float],
) -> str:
    n = len(it)
    text = "".join(
        map(
            _STEPLAW_LINE.__mod__,
            zip(ts, it, [steps] * n, consumed, lr, [bs] * n, loss, gn, strict=True),
        )
    )
    # '%E' writes nan as 'NAN'; no other upper-case NAN can occur in these lines.
    return text.replace("NAN", "nan") if "NAN" in text else text


def _format_megatron_lines(
    ts: list[str],
    it: list[int],
    steps: int,
    consumed: list[int],
    ms: list[float],
    lr: list[float],
    bs: int,
    loss: list[float],
    gn: list[float],
    nan_flags: list[int],
) -> str:
    n = len(it)
    text = "".join(
        map(
            _MEGATRON_LINE.__mod__,
            zip(ts, it, [steps] * n, consumed, ms, lr, [bs] * n, loss, gn, [0] * n, nan_flags, strict=True),
        )
    )
    return text.replace("NAN", "nan") if "NAN" in text else text


def _config(spec: dict) -> dict:
    return {
        "hidden_size": spec["h"],
        "ffn_hidden_size": spec["ffnh"],
        "num_layers": spec["numl"],
        "num_attention_heads": spec["numh"],
        "seq_length": spec["seq_len"],
        "global_batch_size": spec["bs"],
        "lr": spec["lr"],
        "min_lr": spec["lr_min"],
        "train_iters": spec["steps"],
        **({"recipe": spec["recipe"]} if spec.get("recipe") else {}),
    }


def _write_text(path: Path, text: str) -> None:
    with open(path, "wb") as f:
        f.write(text.encode("ascii"))


def _write_run(spec: dict) -> int:
    """Write one run directory; returns the number of log entries."""
    d = Path(spec["out"]) / spec["name"]
    d.mkdir(parents=True, exist_ok=True)
    it, lr, loss, gn, ms = _curves(spec)
    n = it.size
    steps, bs, fmt = spec["steps"], spec["bs"], spec["fmt"]
    it_l = it.tolist()
    lr_l = lr.tolist()
    loss_l = loss.tolist()

    if fmt in ("steplaw", "megatron"):
        consumed = (it * bs).tolist()
        gn_l = gn.tolist()
        setup_ms = 5000.0
        # wall clock: start of run + setup + cumulative iteration times
        t_ms = setup_ms + np.cumsum(np.diff(np.concatenate(([0], it))) * ms)
        base = _BASE_TIME + np.timedelta64(int(spec["index"]) * 60_000, "ms")
        if fmt == "steplaw":
            ts = _timestamps(t_ms, base, "ms")
            pre_ts = _timestamps(np.array([10.0, 900.0, 2500.0]), base, "ms")
            pre = (
                f"{pre_ts[0]} | INFO     | megatron.training:initialize:57 - "
                f"initializing torch distributed with world size 8\n"
                f"{pre_ts[1]} | INFO     | megatron.training:setup:101 - "
                f"building model with {spec['numl']} layers\n"
                f"{pre_ts[2]} | INFO     | megatron.training:setup:133 - "
                f"number of parameters (non-embedding): {spec['N']}\n"
            )
            body = _format_steplaw_lines(ts, it_l, steps, consumed, lr_l, bs, loss_l, gn_l)
            _write_text(d / "train_log_0.txt", pre + body)
        else:
            ts = _timestamps(t_ms, base, "s")
            pre_ts = _timestamps(np.array([0.0]), base, "s")
            nan_flags = np.isnan(loss).astype(np.int64).tolist()
            pre = (
                f"using world size: 8, data-parallel size: 8, tensor-model-parallel size: 1\n"
                f"building GPT model ...\n"
                f"[after dataloaders are built] datetime: {pre_ts[0]}\n"
                f"training ...\n"
            )
            body = _format_megatron_lines(ts, it_l, steps, consumed, ms.tolist(), lr_l, bs, loss_l, gn_l, nan_flags)
            _write_text(d / "train.log", pre + body)
    elif fmt == "jsonl":
        text = "".join(map(_JSONL_LINE.__mod__, zip(it_l, loss_l, lr_l, strict=True)))
        if spec["diverged"]:
            text = text.replace("nan", "NaN")  # keys hold no 'nan'
        _write_text(d / "metrics.jsonl", text)
    elif fmt == "csv":
        text = "step,loss,lr\n" + "".join(map(_CSV_LINE.__mod__, zip(it_l, loss_l, lr_l, strict=True)))
        _write_text(d / "metrics.csv", text)
    else:  # write_sweep checked the format
        raise ValueError(fmt)

    if fmt != "steplaw" or spec.get("recipe"):
        # a Step Law log names its configuration in the run name; a recipe needs a sidecar
        config = _config(spec) if fmt != "steplaw" else {"recipe": spec["recipe"]}
        with open(d / "config.json", "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
    return n


# --------------------------------------------------------------------------------------------
# Sweep
# --------------------------------------------------------------------------------------------


def _centred(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) - (n // 2)


def _plan(
    cells,
    n_lr,
    n_bs,
    seq_len,
    lr_min,
    seed,
    diverge,
    noise,
    points,
    fmt,
    out,
    shift=(0.0, 0.0),
    truth=TRUTH,
    recipe=None,
    index=0,
    plateau_lr_factor=None,
    final_noise=0.0,
):
    runs, cell_rows = [], []
    prefix = "synth" if recipe is None else f"synth-{recipe}"
    curve_truth = asdict(truth)
    for c, cell in enumerate(cells):
        if len(cell) != 5:
            raise ValueError(f"a cell is (h, ffnh, numh, numl, D), got {cell!r}")
        h, ffnh, numh, numl = (int(v) for v in cell[:4])
        D = float(cell[4])
        N = n_params(h, ffnh, numl)
        lr_star = float(truth.lr_opt(N, D))
        b_star = float(truth.bs_tokens_opt(D))
        l_star = float(truth.loss_opt(N, D))
        # deterministic per-cell offset of the grid, in grid steps, so that the optimum
        # falls between grid points
        off_lr, off_bs = np.random.default_rng([seed, 0, c]).uniform(-0.5, 0.5, size=2) + np.asarray(shift)
        lrs = [float(f"{v:.3e}") for v in lr_star * 2.0 ** ((_centred(n_lr) + off_lr) / 2.0)]
        bss = []
        for v in b_star * 2.0 ** ((_centred(n_bs) + off_bs) / 2.0) / seq_len:
            b = max(1, round(float(v)))
            if b not in bss:  # tiny budgets: rounding can merge grid levels
                bss.append(b)
        cell_rows.append(
            {
                **({"recipe": recipe} if recipe is not None else {}),
                "cell": c,
                "h": h,
                "ffnh": ffnh,
                "numh": numh,
                "numl": numl,
                "N": N,
                "D": D,
                "lr_opt": lr_star,
                "bs_tokens_opt": b_star,
                "bs_seqs_opt": b_star / seq_len,
                "loss_opt": l_star,
                "lr_grid_offset": float(off_lr),
                "bs_grid_offset": float(off_bs),
                "lr_grid": lrs,
                "bs_grid": bss,
            }
        )
        for lr in lrs:
            for bs in bss:
                steps = max(1, round(D / (bs * seq_len)))
                bs_tokens = bs * seq_len
                name = run_name(h, ffnh, numh, numl, lr, bs, steps, lr_min, prefix)
                plateau = plateau_lr_factor is not None and lr >= plateau_lr_factor * lr_star
                # run-to-run noise of the final loss (seeds, data order): one offset a run
                offset = final_noise * float(np.random.default_rng([seed, 2, index]).standard_normal())
                runs.append(
                    {
                        "index": index,
                        "cell": c,
                        "name": name,
                        "N": N,
                        "D": D,
                        "h": h,
                        "ffnh": ffnh,
                        "numh": numh,
                        "numl": numl,
                        "lr": lr,
                        "bs": bs,
                        "seq_len": seq_len,
                        "bs_tokens": bs_tokens,
                        "steps": steps,
                        "true_final_loss": PLATEAU_LOSS if plateau else float(truth.landscape(N, D, lr, bs_tokens)),
                        "diverged": bool(diverge and truth.diverges(N, D, lr)) and not plateau,
                        "plateau": plateau,
                        "run_offset": offset,
                        "recipe": recipe,
                        "lr_opt": lr_star,
                        "bs_tokens_opt": b_star,
                        "truth": curve_truth,
                        # throughput of 8 GPUs at 150 TFLOP/s each
                        "ms_per_iter": max(10.0, 6.0 * N * bs_tokens / 1.2e15 * 1e3),
                        "lr_min": lr_min,
                        "seed": seed,
                        "noise": noise,
                        "points": points,
                        "fmt": fmt,
                        "out": str(out if recipe is None else Path(out) / recipe),
                    }
                )
                index += 1
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("two runs of the sweep get the same name; give the cells distinct shapes or D")
    return runs, cell_rows


def _pool_context():
    # 'fork' needs no re-import of this module in the children (it may have been loaded from
    # a file path); the children only use numpy, never polars.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _diverge_some(runs: list[dict[str, Any]], n: int, seed: int) -> None:
    """Mark ``n`` runs (picked by ``seed`` among those that neither diverge nor plateau) diverged."""
    if not n:
        return
    others = [k for k, r in enumerate(runs) if not (r["diverged"] or r["plateau"])]
    if n > len(others):
        raise ValueError(f"diverge_runs={n} but only {len(others)} runs neither diverge nor plateau")
    for k in np.random.default_rng([seed, 3]).choice(others, size=n, replace=False):
        runs[int(k)]["diverged"] = True


def write_sweep(
    out: str | os.PathLike[str],
    *,
    fmt: SynthFormat = "steplaw",
    cells: Sequence[tuple[float, ...]] | Mapping[str, Sequence[tuple[float, ...]]] | None = None,
    n_lr: int = 7,
    n_bs: int = 5,
    points: int = 200,
    noise: float = 0.005,
    seed: int = 0,
    diverge: bool = True,
    seq_len: int = 2048,
    lr_min: float = 1e-5,
    workers: int = 1,
    lr_shift: float = 0.0,
    bs_shift: float = 0.0,
    plateau_lr_factor: float | None = None,
    diverge_runs: int = 0,
    final_noise: float = 0.0,
    recipes: Mapping[str, GroundTruth] | None = None,
) -> pl.DataFrame:
    """Write a synthetic sweep to ``out`` (one directory per run + ``truth.json``).

    Returns one row per run: name, N, D, h, ffnh, numh, numl, lr, bs, seq_len, bs_tokens,
    steps, true_final_loss (noise-free landscape value), diverged, lr_opt, bs_tokens_opt,
    plateau (and recipe with ``recipes``). The output is byte-identical whatever ``workers`` is.

    ``lr_shift`` / ``bs_shift`` move every cell's grid by that many grid steps (factors sqrt 2)
    beyond its random offset: a grid of ``n_bs`` batches is centred on the optimum, so
    ``bs_shift > n_bs // 2 + 0.5`` puts the optimum below the smallest batch (an edge optimum,
    issue 19), a negative shift above the largest.

    Shapes of real sweeps (issue 19):

    - ``plateau_lr_factor``: runs at lr >= that factor times the optimum never leave the early
      plateau: their loss falls from the law's loss_init to PLATEAU_LOSS (about the unigram entropy) in
      the first 2% of the steps and stays there, finite (not nan, not diverged); below
      the law's diverge_lr_factor they take precedence over divergence.
    - ``diverge_runs``: that many runs besides (picked by ``seed`` among the others) diverge
      whatever their lr, as a bad node or a loss spike does.
    - ``final_noise``: run-to-run noise of the final loss (seeds, data order), a relative SD
      (0.003: about 0.3%); each run's curve is shifted by its own offset, which the smoothing of
      ``noise`` (per log entry) does not average away.
    - ``recipes``: data recipes with their own laws, ``{"web": TRUTH, "code": GroundTruth(...)}``:
      each recipe's runs go under ``out/<recipe>/`` (run names ``synth-<recipe>_...``, a
      ``recipe`` key in each run's config.json, read by ``ingest``), on ``cells`` (or
      ``cells[recipe]`` when a mapping); truth.json holds each recipe's law and cells. A
      recipe's name matches RECIPE_NAME_RE (it names a directory).

    Raises ValueError for arguments it cannot honour (an unknown format, a count below 1, more
    ``diverge_runs`` than runs that neither diverge nor plateau, ...) before any run is written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if n_lr < 1 or n_bs < 1 or points < 1 or seq_len < 1:
        raise ValueError("n_lr, n_bs, points and seq_len must be >= 1")
    if diverge_runs < 0 or final_noise < 0 or (plateau_lr_factor is not None and plateau_lr_factor <= 0):
        raise ValueError("diverge_runs and final_noise must be >= 0, plateau_lr_factor > 0")
    groups: dict[str | None, GroundTruth] = {None: TRUTH} if not recipes else {}
    for name, law in (recipes or {}).items():
        if not RECIPE_NAME_RE.match(str(name)):
            raise ValueError(f"recipe name {name!r}: a letter or digit, then letters, digits, '.', '_' or '-'")
        groups[name] = law
    if isinstance(cells, Mapping) and not recipes:
        raise ValueError("cells per recipe need recipes=")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = int(seed)
    runs: list[dict[str, Any]] = []
    cell_rows: list[dict[str, Any]] = []
    for recipe, truth in groups.items():
        these = cells.get(str(recipe), DEFAULT_CELLS) if isinstance(cells, Mapping) else cells
        r, c = _plan(
            list(DEFAULT_CELLS if these is None else these),
            int(n_lr),
            int(n_bs),
            int(seq_len),
            float(lr_min),
            seed,
            bool(diverge),
            float(noise),
            int(points),
            fmt,
            out,
            (float(lr_shift), float(bs_shift)),
            truth=truth,
            recipe=recipe,
            index=len(runs),
            plateau_lr_factor=plateau_lr_factor,
            final_noise=float(final_noise),
        )
        runs += r
        cell_rows += c
    _diverge_some(runs, int(diverge_runs), seed)

    workers = max(1, min(int(workers), len(runs)))
    if workers == 1:
        n_entries = [_write_run(r) for r in runs]
    else:
        chunk = max(1, len(runs) // (4 * workers))
        with _pool_context().Pool(workers) as pool:
            n_entries = pool.map(_write_run, runs, chunksize=chunk)

    counts: dict[tuple[str | None, int], int] = {}
    for r in runs:
        counts[(r["recipe"], r["cell"])] = counts.get((r["recipe"], r["cell"]), 0) + 1
    for row in cell_rows:
        row["n_runs"] = counts.get((row.get("recipe"), row["cell"]), 0)
    extra = {
        **({"lr_shift": float(lr_shift), "bs_shift": float(bs_shift)} if lr_shift or bs_shift else {}),
        **({"plateau_lr_factor": float(plateau_lr_factor), "plateau_loss": PLATEAU_LOSS} if plateau_lr_factor else {}),
        **({"plateau_runs": sum(r["plateau"] for r in runs)} if plateau_lr_factor else {}),
        **({"diverge_runs": int(diverge_runs)} if diverge_runs else {}),
        **({"final_noise": float(final_noise)} if final_noise else {}),
    }
    truth_json: dict[str, Any] = {
        "description": "steplaw_db.synth ground truth: lr* = lr_coef N^lr_exp_N D^lr_exp_D, "
        "B* (tokens) = bs_coef D^bs_exp_D, L = Lopt (1 + a (ln lr/lr*)^2 + b (ln B/B*)^2), "
        "Lopt = E + A/N^alpha + B/D^beta",
        "law": asdict(next(iter(groups.values()))),
        "settings": {
            "fmt": fmt,
            "n_lr": int(n_lr),
            "n_bs": int(n_bs),
            "points": int(points),
            "noise": float(noise),
            "seed": seed,
            "diverge": bool(diverge),
            "seq_len": int(seq_len),
            "lr_min": float(lr_min),
            "n_runs": len(runs),
            "n_entries": int(sum(n_entries)),
            "n_diverged": sum(r["diverged"] for r in runs),
            **extra,
        },
        "cells": cell_rows,
    }
    if recipes:
        truth_json["recipes"] = {
            str(name): {"law": asdict(t), "cells": [c for c in cell_rows if c.get("recipe") == name]}
            for name, t in recipes.items()
        }
    with open(out / "truth.json", "w") as f:
        json.dump(truth_json, f, indent=2)
        f.write("\n")

    cols = [
        "name",
        "N",
        "D",
        "h",
        "ffnh",
        "numh",
        "numl",
        "lr",
        "bs",
        "seq_len",
        "bs_tokens",
        "steps",
        "true_final_loss",
        "diverged",
        "lr_opt",
        "bs_tokens_opt",
        "plateau",
        *(["recipe"] if recipes else []),
    ]
    schema = {
        "name": pl.Utf8,
        "N": pl.Int64,
        "D": pl.Float64,
        "h": pl.Int64,
        "ffnh": pl.Int64,
        "numh": pl.Int64,
        "numl": pl.Int64,
        "lr": pl.Float64,
        "bs": pl.Int64,
        "seq_len": pl.Int64,
        "bs_tokens": pl.Int64,
        "steps": pl.Int64,
        "true_final_loss": pl.Float64,
        "diverged": pl.Boolean,
        "lr_opt": pl.Float64,
        "bs_tokens_opt": pl.Float64,
        "plateau": pl.Boolean,
        "recipe": pl.String,
    }
    return pl.DataFrame({c: [r[c] for r in runs] for c in cols}, schema={c: schema[c] for c in cols})
