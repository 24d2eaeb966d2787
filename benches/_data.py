"""The public data the benchmarks read, and where they find it: ../shared/data beside the
project, or wherever ``STEPLAW_SHARED_DATA`` points (as for the tests, whose conftest.py has
the same paths and the same dense-CSV frame as pytest fixtures)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import polars as pl

SHARED = Path(os.environ.get("STEPLAW_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
#: Step Law's public dense CSV (1,911 runs, 17 cells).
STEPLAW_CSV = SHARED / "steplaw" / "dense_lr_bs_loss.csv"
#: The Multi-Power Law paper's loss curves: csv_25, csv_100, csv_400.
MPL_DIR = SHARED / "multipowerlaw" / "loss_curve_repo"
#: A real T5X run (TensorBoard tensor summaries).
T5X_RUN = SHARED / "colpret" / "raw_data" / "t5_pile" / "base"


def need(path: Path) -> Path:
    """``path``, or exit with a message saying where the public data is expected."""
    if not path.exists():
        sys.exit(f"{path}: the public data is expected in ../shared/data (or set STEPLAW_SHARED_DATA)")
    return path


def final_losses(table: Path | pl.DataFrame) -> pl.DataFrame:
    """A Step Law-format table as a final-loss frame: their smoothed loss, the batch in tokens
    (``bs`` counts sequences of 2048)."""
    df = pl.read_csv(table) if isinstance(table, Path) else table
    return df.with_columns(loss=pl.col("smooth loss"), bs_tokens=pl.col("bs") * 2048)


def public_dense() -> pl.DataFrame:
    """The public dense CSV as final losses."""
    return final_losses(need(STEPLAW_CSV))
