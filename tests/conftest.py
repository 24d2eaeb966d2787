from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STEPLAW_CSV = SHARED / "steplaw" / "dense_lr_bs_loss.csv"


@pytest.fixture(scope="session")
def steplaw_csv() -> Path:
    if not STEPLAW_CSV.is_file():  # the tests are meant to run beside ../shared: say so loudly
        raise FileNotFoundError(f"{STEPLAW_CSV}: the public Step Law data is expected in ../shared/data")
    return STEPLAW_CSV
