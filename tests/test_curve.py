"""Schedule-aware loss-curve laws (steplaw_db.curve): the Rust sums against plain numpy
implementations of the papers' formulas, the MPL authors' published parameters on their
real curves, fits that recover known parameters, bad input, JSON, plot and CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from references import PUBLISHED, TEST, TRAIN, mpl_schedule
from steplaw_db import _native
from steplaw_db.cli import app
from steplaw_db.curve import (
    FORMS,
    CurveLaw,
    Schedule,
    fit_curve_law,
    load_curves,
    plot_curve_law,
)


def mpl_files(root: Path, size: str, names: list[str]) -> list[Path]:
    """Curves of the MPL data's loss_curve_repo (conftest: ``mpl_dir``, or ``loss_curves``,
    which is also a stand-in made from the published parameters)."""
    return [root / f"csv_{size}" / f"{n}.csv" for n in names]


def published(size: str) -> CurveLaw:
    return CurveLaw("mpl", dict(zip(FORMS["mpl"], PUBLISHED[size], strict=True)))


# --- plain numpy references, straight from the papers' formulas -------------------------


def mpl_numpy(p, lrs: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The MPL as the authors' evaluation code writes it: O(steps^2)."""
    L0, A, alpha, B, C, beta, gamma = p
    lr_sum = np.cumsum(lrs)
    gap = np.zeros(len(lrs))
    gap[1:] = np.diff(lrs)
    ld = np.array(
        [
            np.sum(gap[1 : s + 1] * (1 - (1 + C * lrs[1 : s + 1] ** (-gamma) * (lr_sum[s] - lr_sum[:s])) ** (-beta)))
            for s in steps
        ]
    )
    return L0 + A * lr_sum[steps] ** (-alpha) + B * ld


def annealing_numpy(p, lrs: np.ndarray, steps: np.ndarray, lam: float) -> np.ndarray:
    L0, A, alpha, C = p
    m = np.zeros(len(lrs))
    for t in range(1, len(lrs)):
        m[t] = lam * m[t - 1] + (lrs[t - 1] - lrs[t])
    return L0 + A * np.cumsum(lrs)[steps] ** (-alpha) - C * np.cumsum(m)[steps]


def huber_objective_numpy(pred: np.ndarray, loss: np.ndarray, delta: float) -> float:
    r = np.log(loss) - np.log(pred)
    return float(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum())


def wiggly_lr(n: int) -> np.ndarray:
    """A schedule that changes at every step, up and down, after a warm-up."""
    t = np.arange(n)
    lr = 2e-4 * (1 + 0.5 * np.sin(t / 97.0)) * np.exp(-t / 4000)
    lr[:300] = np.linspace(0, lr[300], 300)
    return lr


@pytest.mark.parametrize("method", ["auto", "direct", "expsum"])
@pytest.mark.parametrize(
    "lrs",
    [
        Schedule(3e-4, 6000, 500, "cosine", 3e-5).lr(),
        Schedule(3e-4, 6000, 500, "wsd", 1e-5, decay_start=4500, wsd_shape="exponential").lr(),
        wiggly_lr(6000),
    ],
    ids=["cosine", "wsd", "wiggly"],
)
def test_mpl_matches_the_numpy_formula(lrs, method):
    steps = np.arange(5, 6000, 23)
    for p in (PUBLISHED["25"], [2.0, 1.2, 0.3, 900.0, 0.2, 1.7, 0.3]):
        want = mpl_numpy(p, lrs, steps)
        got = np.asarray(_native.curve_predict("mpl", p, lrs.tolist(), steps.tolist(), 0.999, method))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)


def test_annealing_matches_the_numpy_formula():
    lrs = wiggly_lr(5000)
    steps = np.arange(3, 5000, 31)
    for lam in (0.999, 0.99):
        p = [2.5, 0.6, 0.45, 300.0]
        law = CurveLaw("annealing", dict(zip(FORMS["annealing"], p, strict=True)), lam=lam)
        np.testing.assert_allclose(law.loss_at(lrs, steps), annealing_numpy(p, lrs, steps, lam), rtol=1e-10)


@pytest.mark.parametrize("form", ["mpl", "annealing"])
def test_objective_and_gradient_match_numpy(form):
    lrs = Schedule(3e-4, 4000, 300, "cosine", 3e-5).lr()
    steps = np.arange(300, 4000, 40)
    p = np.array(PUBLISHED["25"] if form == "mpl" else [3.0, 0.5, 0.5, 400.0])

    def predict(q):
        return mpl_numpy(q, lrs, steps) if form == "mpl" else annealing_numpy(q, lrs, steps, 0.999)

    rng = np.random.default_rng(7)
    loss = predict(p) * np.exp(rng.normal(0, 2e-3, steps.size))  # both Huber branches
    q = p * 1.02
    value, grad = _native.curve_objective(form, q.tolist(), [(lrs.tolist(), steps.tolist(), loss.tolist())], 1e-3)
    assert value == pytest.approx(huber_objective_numpy(predict(q), loss, 1e-3), rel=1e-9)
    for j in range(len(q)):
        h = 1e-6 * abs(q[j])
        up, down = q.copy(), q.copy()
        up[j] += h
        down[j] -= h
        num = (huber_objective_numpy(predict(up), loss, 1e-3) - huber_objective_numpy(predict(down), loss, 1e-3)) / (
            2 * h
        )
        assert grad[j] == pytest.approx(num, rel=1e-5, abs=1e-12), FORMS[form][j]


# --- the real curves of the MPL paper ------------------------------------------------------


def test_schedules_reproduce_the_logged_lr(mpl_dir):
    for name in TRAIN + TEST:
        df = pl.read_csv(mpl_dir / "csv_25" / f"{name}.csv")
        lr = mpl_schedule(name).lr(int(df["step"].max()) + 1)
        np.testing.assert_allclose(lr[df["step"].to_numpy()], df["lr"].to_numpy(), rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("size", ["25", "100", "400"])
def test_published_parameters_reproduce_the_real_curves(mpl_dir, size):
    """The independent check of the MPL formula: the authors' parameters must give small
    errors on all nine curves with this implementation (their paper: about 0.1-0.3%)."""
    names = TRAIN + TEST
    schedules = {n: mpl_schedule(n) for n in names}
    law = published(size)
    exact = law.evaluate(mpl_files(mpl_dir, size, names), schedules)
    assert exact["mean_rel_error"].max() < 0.003, exact
    assert exact["max_rel_error"].max() < 0.02, exact
    # The logged lr, interpolated between points (no schedule), gives nearly the same.
    interpolated = law.evaluate(mpl_files(mpl_dir, size, names))
    np.testing.assert_allclose(interpolated["mean_rel_error"], exact["mean_rel_error"], atol=5e-4)
    # And the predictions are the authors' formula's, to rounding.
    c = load_curves(mpl_files(mpl_dir, size, ["wsd_20000_24000"]), schedules)[0]
    np.testing.assert_allclose(law.loss_at(c.lr, c.step), mpl_numpy(PUBLISHED[size], c.lr, c.step), rtol=1e-9)


@pytest.mark.slow  # 5-40 s each
@pytest.mark.parametrize("size", ["25", "100", "400"])
def test_fit_on_real_curves_predicts_the_held_out_schedules(mpl_dir, size):
    """The paper's protocol: fit on three curves, predict the other six (docs/curve-laws.md)."""
    schedules = {n: mpl_schedule(n) for n in TRAIN + TEST}
    train = mpl_files(mpl_dir, size, TRAIN)
    law = fit_curve_law(train, "mpl", schedule=schedules)
    assert law.fit["converged"], law.fit
    # At least as good as the published parameters on the objective both minimise.
    curves = [c.native() for c in load_curves(train, schedules)]
    published_objective, _ = _native.curve_objective("mpl", published(size).vector, curves, 1e-3)
    assert law.fit["objective"] <= published_objective * 1.0001
    held_out = law.evaluate(mpl_files(mpl_dir, size, TEST), schedules)
    assert held_out["mean_rel_error"].max() < 0.008, held_out
    assert held_out["max_rel_error"].max() < 0.015, held_out
    annealing = fit_curve_law(train, "annealing", schedule=schedules)
    held_out = annealing.evaluate(mpl_files(mpl_dir, size, TEST), schedules)
    assert held_out["mean_rel_error"].max() < 0.006, held_out


# --- fits on synthetic curves from known parameters ---------------------------------------


def synthetic(law: CurveLaw, schedule: Schedule, every: int, noise: float = 0.0, seed: int = 0) -> pl.DataFrame:
    lr = schedule.lr()
    steps = np.arange(schedule.warmup_steps, schedule.total_steps, every)
    loss = law.loss_at(lr, steps) * np.exp(np.random.default_rng(seed).normal(0, noise, steps.size))
    return pl.DataFrame({"step": steps, "value": loss, "lr": lr[steps]})


def test_fit_recovers_mpl_parameters_from_synthetic_curves():
    truth = CurveLaw("mpl", dict(zip(FORMS["mpl"], [2.8, 0.55, 0.48, 400.0, 2.0, 0.6, 0.62], strict=True)))
    train = [
        Schedule(3e-4, 8000, 400, "cosine", 3e-5),
        Schedule(3e-4, 8000, 400, "constant"),
        Schedule(3e-4, 6000, 400, "wsd", 9e-5, decay_start=3000, decay_steps=0),
    ]
    frames = [synthetic(truth, s, 40) for s in train]
    law = fit_curve_law(frames, "mpl", schedule=train)
    for name, value in truth.params.items():
        assert law.params[name] == pytest.approx(value, rel=0.02), (name, law)
    unseen = Schedule(3e-4, 16000, 400, "wsd", 1e-5, decay_start=12000, wsd_shape="cosine")
    pred, want = law.predict(unseen)["loss"].to_numpy(), truth.predict(unseen)["loss"].to_numpy()
    assert np.max(np.abs(pred / want - 1)) < 1e-4


def test_fit_recovers_annealing_parameters_with_noise():
    truth = CurveLaw("annealing", dict(zip(FORMS["annealing"], [2.6, 0.7, 0.4, 300.0], strict=True)), lam=0.995)
    train = [Schedule(3e-4, 6000, 200, "cosine", 3e-5), Schedule(3e-4, 6000, 200, "linear", 1e-5)]
    frames = [synthetic(truth, s, 10, noise=5e-4, seed=k) for k, s in enumerate(train)]
    law = fit_curve_law(frames, "annealing", lam=0.995)  # lr interpolated from the log
    for name, value in truth.params.items():
        assert law.params[name] == pytest.approx(value, rel=0.05), (name, law)
    assert law.fit["lr_source"] == {"curve 0": "interpolated", "curve 1": "interpolated"}


def test_store_points_with_several_runs_make_several_curves():
    truth = CurveLaw("annealing", dict(zip(FORMS["annealing"], [2.6, 0.7, 0.4, 300.0], strict=True)))
    schedules = [Schedule(3e-4, 3000, 100, "cosine", 3e-5), Schedule(3e-4, 3000, 100, "constant")]
    parts = []
    for rid, s in zip((7, 3), schedules, strict=True):
        df = synthetic(truth, s, 25)
        parts.append(df.with_columns(run_id=pl.lit(rid, pl.Int64), metric=pl.lit("loss"), tokens=pl.col("step") * 1000))
    points = pl.concat(parts).select("run_id", "metric", "step", "tokens", "value", "lr")
    curves = load_curves(points)
    assert [c.label for c in curves] == ["run 3", "run 7"]
    law = fit_curve_law(points, "annealing", schedule={"run 7": schedules[0], "run 3": schedules[1]})
    assert law.fit["lr_source"] == {"run 3": "schedule", "run 7": "schedule"}
    for name, value in truth.params.items():
        assert law.params[name] == pytest.approx(value, rel=1e-3)


def test_fit_from_the_store_equals_the_fit_from_the_files(tmp_path, loss_curves):
    """End to end: the MPL CSVs (step, lr, loss) ingested as runs, fitted from Store.points."""
    for name in TRAIN:
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text((loss_curves / "csv_25" / f"{name}.csv").read_text())
    db = sl.open(tmp_path / "db")
    assert db.ingest(tmp_path / "runs", name_template="{*}").ok
    ids = dict(db.runs().select("name", "run_id").iter_rows())
    points = db.points([ids[n] for n in TRAIN], metric="loss")
    from_store = fit_curve_law(points, "annealing")
    from_files = fit_curve_law(mpl_files(loss_curves, "25", TRAIN), "annealing")
    for name, value in from_files.params.items():
        assert from_store.params[name] == pytest.approx(value, rel=1e-9)
    r = CliRunner().invoke(
        app, ["--db", str(tmp_path / "db"), "fit", "curve", "--run", str(ids["cosine_24000"]), "--form", "annealing"]
    )
    assert r.exit_code == 0 and f"run {ids['cosine_24000']}" in r.output, r.output


# --- schedules, interpolation, bad input ---------------------------------------------------


def test_schedule_shapes():
    s = Schedule(1e-3, 100, 11, "linear", 1e-4)
    lr = s.lr()
    np.testing.assert_allclose(lr[:11], np.linspace(0, 1e-3, 11))
    assert lr[11] == pytest.approx(1e-3) and lr[99] == pytest.approx(1e-3 + (1e-4 - 1e-3) * 88 / 89)
    assert s.lr(120)[110] == 1e-4  # after the end: the floor
    wsd = Schedule(1e-3, 100, 0, "wsd", 1e-4, decay_start=60, decay_steps=20, wsd_shape="cosine").lr()
    assert np.all(wsd[:60] == 1e-3) and np.all(wsd[80:] == 1e-4) and wsd[70] == pytest.approx(5.5e-4)
    assert Schedule.parse(
        "peak_lr=3e-4,total_steps=1000,warmup_steps=10,decay=wsd,decay_start=800,floor=1e-5"
    ) == Schedule(3e-4, 1000, 10, "wsd", 1e-5, decay_start=800)
    assert Schedule.parse(json.dumps(s.to_dict())) == s
    for bad in (
        dict(peak_lr=0, total_steps=10),
        dict(peak_lr=1e-3, total_steps=10, warmup_steps=10),
        dict(peak_lr=1e-3, total_steps=10, decay="step"),
        dict(peak_lr=1e-3, total_steps=10, decay="wsd"),
    ):
        with pytest.raises(sl.InvalidArgumentError):
            Schedule(**bad)
    with pytest.raises(sl.InvalidArgumentError):
        Schedule.parse("peak_lr=1e-3,total=10")


def test_schedule_from_a_run_config():
    run = {"name": "r", "lr": 2e-3, "lr_min": 1e-5, "steps": 500}
    s = Schedule.from_run(run, warmup_steps=20)
    assert (s.peak_lr, s.floor, s.total_steps, s.decay, s.warmup_steps) == (2e-3, 1e-5, 500, "cosine", 20)
    with pytest.raises(sl.InvalidArgumentError, match="lacks lr or steps"):
        Schedule.from_run({"name": "r", "lr": 1e-3, "steps": None})


def test_interpolated_lr_rebuilds_every_step():
    df = pl.DataFrame({"step": [100, 200, 400], "loss": [4.0, 3.5, 3.2], "lr": [1e-3, 1e-3, 5e-4]})
    (c,) = load_curves(df)
    assert c.lr.size == 401 and c.lr_source == "interpolated"
    assert c.lr[0] == 0 and c.lr[50] == pytest.approx(5e-4)  # linear warm-up before the first point
    assert c.lr[300] == pytest.approx(7.5e-4)  # linear between logged points


def test_bad_input_is_refused_clearly():
    good = pl.DataFrame(
        {"step": np.arange(100, 2000, 100), "value": np.linspace(4, 3, 19), "lr": np.linspace(1e-3, 1e-4, 19)}
    )
    with pytest.raises(sl.InvalidArgumentError, match="no learning rate"):
        fit_curve_law(good.drop("lr"), "mpl")
    with pytest.raises(sl.InvalidArgumentError, match="not finite"):
        fit_curve_law(
            good.with_columns(value=pl.when(pl.col("step") == 500).then(float("nan")).otherwise(pl.col("value")))
        )
    with pytest.raises(sl.InvalidArgumentError, match="too few points"):
        fit_curve_law(good.head(5), "mpl")
    with pytest.raises(sl.InvalidArgumentError, match="form"):
        fit_curve_law(good, "chinchilla")
    with pytest.raises(sl.InvalidArgumentError, match="lr is missing"):
        fit_curve_law(good.with_columns(lr=pl.when(pl.col("step") == 300).then(None).otherwise(pl.col("lr"))))
    with pytest.raises(sl.InvalidArgumentError, match="positive learning rate"):
        published("25").loss_at(np.array([1e-3, 0.0, 1e-3]), [2])
    with pytest.raises(sl.InvalidArgumentError, match="no such file"):
        load_curves("/nonexistent/curve.csv")
    with pytest.raises(sl.InvalidArgumentError, match="parameters lack"):
        CurveLaw("mpl", {"L0": 1.0})


def test_json_round_trip_and_predict(tmp_path):
    law = published("100")
    path = tmp_path / "law.json"
    law.to_json(path)
    back = CurveLaw.from_json(path)
    assert back.params == law.params and back.form == "mpl"
    s = mpl_schedule("cosine_72000")
    by_schedule = back.predict(s)
    by_array = back.predict(s.lr(), steps=by_schedule["step"])
    assert by_schedule.columns == ["step", "lr", "loss"] and by_schedule.height == 71999
    np.testing.assert_array_equal(by_schedule["loss"].to_numpy(), by_array["loss"].to_numpy())
    assert CurveLaw.from_json(law.to_json()).params == law.params
    some = back.predict(s, steps=[5000, 3000, 5000])["loss"].to_numpy()
    np.testing.assert_array_equal(some, by_schedule["loss"].to_numpy()[[4999, 2999, 4999]])


def test_plot_writes_png_svg_pdf(tmp_path, loss_curves):
    law = published("25")
    schedules = {n: mpl_schedule(n) for n in TRAIN + TEST}
    for ext in ("png", "svg", "pdf"):
        out = tmp_path / f"curves.{ext}"
        fig = plot_curve_law(
            law, mpl_files(loss_curves, "25", [*TRAIN, *TEST[:2]]), out, schedule=schedules, fitted=TRAIN
        )
        assert out.stat().st_size > 1000
        assert "(fit;" in fig.axes[0].get_legend().get_texts()[0].get_text()
    with pytest.raises(sl.InvalidArgumentError, match="png"):
        plot_curve_law(law, mpl_files(loss_curves, "25", TRAIN[:1]), tmp_path / "curves.txt")


def test_cli_fit_curve(tmp_path, loss_curves):
    out, plot = tmp_path / "law.json", tmp_path / "law.png"
    files = [str(p) for p in mpl_files(loss_curves, "25", TRAIN)]
    tests = [str(p) for p in mpl_files(loss_curves, "25", TEST[2:4])]
    args = [
        "fit",
        "curve",
        *files,
        "--form",
        "annealing",
        "--test",
        tests[0],
        "--test",
        tests[1],
        "--output",
        str(out),
        "--plot",
        str(plot),
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "wsd_20000_24000" in r.output and "held out" in r.output
    law = CurveLaw.from_json(out)
    assert law.form == "annealing" and plot.stat().st_size > 1000
    # A log without lr needs --schedule.
    no_lr = tmp_path / "no_lr.csv"
    pl.read_csv(files[0]).drop("lr").write_csv(no_lr)
    r = CliRunner().invoke(app, ["fit", "curve", str(no_lr), "--form", "annealing"])
    assert r.exit_code == 2 and "schedule" in r.output
    spec = "peak_lr=3e-4,total_steps=24000,warmup_steps=2160,decay=cosine,floor=3e-5"
    r = CliRunner().invoke(app, ["fit", "curve", str(no_lr), "--form", "annealing", "--schedule", spec])
    assert r.exit_code == 0, r.output


def test_fitting_only_constant_schedules_warns_that_the_drop_is_not_identifiable():
    truth = CurveLaw("annealing", dict(zip(FORMS["annealing"], [2.8, 0.55, 0.48, 0.5], strict=True)))
    constant = Schedule(3e-4, 6000, 400, "constant")
    with pytest.warns(UserWarning, match="not identifiable"):
        fit_curve_law(synthetic(truth, constant, 40), "annealing", schedule=constant)
    cosine = Schedule(3e-4, 6000, 400, "cosine", 3e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_curve_law(synthetic(truth, cosine, 40), "annealing", schedule=cosine)
