from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real public data lives beside the project (../shared/data); STEPLAW_SHARED_DATA overrides.
SHARED = Path(os.environ.get("STEPLAW_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
STEPLAW_CSV = SHARED / "steplaw" / "dense_lr_bs_loss.csv"


@pytest.fixture(scope="session")
def steplaw_csv() -> Path:
    if not STEPLAW_CSV.is_file():  # the tests are meant to run beside ../shared: say so loudly
        raise FileNotFoundError(f"{STEPLAW_CSV}: the public Step Law data is expected in ../shared/data")
    return STEPLAW_CSV
