"""The core's refusals arrive as the class that says whose fault they are: ``Error::InsufficientData``
(the data cannot support the call) as :class:`InsufficientDataError`, ``Error::Invalid`` (an option
or argument is wrong) as a plain :class:`InvalidArgumentError` (``rust/src/py/mod.rs``). The class,
not the message's wording, decides the command line's exit status (1 or 2)."""

from __future__ import annotations

import polars as pl
import pytest

import steplaw_db as sl
from steplaw_db import _native
from steplaw_db.cli._util import EXIT_FAILED, EXIT_USAGE, _failure
from steplaw_db.errors import InsufficientDataError, InvalidArgumentError

# three points of a Chinchilla-like loss (E 1.82, A 482, B 2085, alpha 0.35, beta 0.37)
N3, D3 = [1e8, 4e8, 1.6e9], [2e9, 8e9, 3.2e10]
LOSS3 = [1.82 + 482 / n**0.35 + 2085 / d**0.37 for n, d in zip(N3, D3, strict=True)]


def test_fitting_the_loss_law_on_three_points_is_a_data_refusal():
    # the public API: the core refuses (5 parameters need 6 points), no Python check before it
    frame = pl.DataFrame({"N": N3, "D": D3, "loss": LOSS3})
    with pytest.raises(InsufficientDataError, match="too few points for the Chinchilla law: 3") as e:
        sl.fit.fit_loss_law(frame)
    assert isinstance(e.value, InvalidArgumentError)  # code that caught the parent still catches it


def test_the_core_raises_the_data_class_itself():
    # straight from the extension, with no Python wrapper that could re-class it by its wording
    with pytest.raises(InsufficientDataError, match="too few points for the Chinchilla law"):
        _native.fit_chinchilla(N3, D3, LOSS3, 1e-3, None, 0, 0, 1)
    lr = [0.0] + [3e-4] * 9
    with pytest.raises(InsufficientDataError, match="too few points to fit the law's 7 parameters"):
        _native.curve_fit("mpl", [(lr, [3, 6, 9], [3.0, 2.9, 2.8])], 1e-3, 0.999, "auto", None, 100)


def test_a_bad_option_the_core_refuses_stays_an_invalid_argument():
    n = [1e8, 2e8, 4e8, 1e8, 2e8, 4e8, 8e8]
    d = [1e9, 2e9, 4e9, 8e9, 1e9, 2e9, 4e9]
    with pytest.raises(InvalidArgumentError, match="Huber delta must be positive") as e:
        _native.fit_chinchilla(n, d, [3.0] * 7, -1.0, None, 0, 0, 1)
    assert not isinstance(e.value, InsufficientDataError)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InsufficientDataError("lr: too few cells to fit 3 coefficients"), EXIT_FAILED),
        # the same wording in the parent class is a usage error: the class decides, not the text
        (InvalidArgumentError("lr: too few cells to fit 3 coefficients"), EXIT_USAGE),
        (InsufficientDataError("anything at all"), EXIT_FAILED),
    ],
)
def test_the_exit_status_follows_the_class_not_the_message(error, code):
    assert _failure(error) == (str(error), code)
