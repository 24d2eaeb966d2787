"""The forecast's annealing areas in one Rust pass (forecast.areas_at, issue 18's speed) equal
numpy's per-step arrays (forecast.areas) read at the same positions."""

from __future__ import annotations

import numpy as np
import pytest

from steplaw_db import forecast as fc
from steplaw_db.curve import Schedule, _per_step_lr
from steplaw_db.errors import InvalidArgumentError


def _logged_lr() -> np.ndarray:
    # a logged lr every 37 steps with jitter (a real log's rounding), interpolated to every step
    rng = np.random.default_rng(3)
    step = np.arange(0, 9001, 37)
    lr = Schedule(2e-3, 9000, 200, "linear", floor=2e-4).lr(9001)[step] * (1 + 1e-3 * rng.standard_normal(step.size))
    return _per_step_lr(step, lr)


SCHEDULES = {
    "cosine": lambda: Schedule(1e-3, 20000, 300, "cosine", floor=1e-5).lr(20001),
    "wsd": lambda: Schedule(3e-3, 12000, 100, "wsd", floor=3e-5, decay_start=9000, wsd_shape="exponential").lr(12001),
    "logged": _logged_lr,
}


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("lam", [0.999, 0.9])
def test_areas_at_equal_numpys_areas(name: str, lam: float) -> None:
    lr = SCHEDULES[name]()
    s1, s2 = fc.areas(lr, lam)
    grid = np.arange(lr.size, dtype=float)
    rng = np.random.default_rng(0)
    # integer steps, bin centres between steps, both ends and beyond them (clamped like np.interp)
    at = np.sort(np.concatenate([[-3.0, 0.0, lr.size - 1.0, lr.size + 5.0], rng.uniform(0, lr.size - 1, 500),
                                 rng.integers(0, lr.size, 300).astype(float)]))  # fmt: skip
    a1, a2 = fc.areas_at(lr, at, lam)
    scale1, scale2 = np.abs(s1).max(), np.abs(s2).max()
    np.testing.assert_allclose(a1, np.interp(at, grid, s1), rtol=0, atol=1e-12 * scale1)
    np.testing.assert_allclose(a2, np.interp(at, grid, s2), rtol=0, atol=1e-12 * scale2)
    # at the steps themselves, the values are numpy's sums
    ints = np.flatnonzero((at == np.round(at)) & (at >= 0) & (at < lr.size))
    np.testing.assert_allclose(a1[ints], s1[at[ints].astype(int)], rtol=1e-12)
    np.testing.assert_allclose(a2[ints], s2[at[ints].astype(int)], rtol=0, atol=1e-12 * scale2)
    # the annealing area is not trivially zero on these schedules: the test can fail
    assert scale2 > 0 and np.ptp(a2) > 0


def test_areas_at_refuses_unsorted_positions() -> None:
    lr = np.full(100, 1e-3)
    with pytest.raises(InvalidArgumentError, match="nondecreasing"):
        fc.areas_at(lr, np.array([5.0, 2.0]))
    with pytest.raises(InvalidArgumentError, match="not finite"):
        fc.areas_at(lr, np.array([1.0, np.nan]))


@pytest.mark.parametrize(
    "sched",
    [
        Schedule(1e-3, 20000, 300, "cosine", floor=1e-5),
        Schedule(2e-3, 9000, 200, "linear", floor=2e-4, warmup_start=1e-4),
        Schedule(5e-4, 4000, 1, "constant"),
        Schedule(3e-3, 12000, 100, "wsd", floor=3e-5, decay_start=9000, wsd_shape="exponential"),
        Schedule(3e-3, 12000, 0, "wsd", floor=3e-5, decay_start=6000, decay_steps=2000, wsd_shape="cosine"),
        Schedule(3e-3, 12000, 50, "wsd", floor=0.0, decay_start=11000, wsd_shape="linear"),
    ],
    ids=["cosine", "linear", "constant", "wsd-exp", "wsd-cos", "wsd-lin"],
)
def test_schedule_lr_in_rust_equals_schedule_lr(sched: Schedule) -> None:
    n = sched.total_steps + 500  # past the end too
    want = sched.lr(n)
    got = fc._schedule_lr(sched, n)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)
    # the warm-up and the flat parts are the same bits (no transcendental functions there)
    flat = (np.arange(n) < sched.warmup_steps) | (want == sched.peak_lr) | (want == sched.floor)
    np.testing.assert_array_equal(got[flat], want[flat])
    # a range from a step on, and single steps, are the same values
    np.testing.assert_array_equal(fc._schedule_lr(sched, n, start=777), got[777:])
    steps = np.array([0, 1, sched.warmup_steps, 1234, sched.total_steps - 1, n - 1])
    np.testing.assert_array_equal(fc._schedule_lr(sched, n, steps=steps), got[steps])
