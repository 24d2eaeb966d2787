"""One rule for a table's numbers: the CLI's table formats (``readable``) and the HTML tables
(``_html.fmt``) show the same column's number the same way (``_numbers.kind`` / ``number``).
They used to classify columns each their own way and disagreed on about 40 of the columns the
commands print (a loss 2.8225 against 2.823, an optimal batch in "seq" against tokens, a lr 1.27e-2 against
0.0127, relative losses 0.227% against 0.002273, D_spread "2.04e-05 tokens" against 2.04e-05)."""

from __future__ import annotations

import math
import re

import polars as pl
import pytest

from steplaw_db import _html
from steplaw_db._numbers import kind, number
from steplaw_db.cli._util import readable, render_table

CASES = [
    # parameters: SI suffixes, no unit word (N is parameters by definition)
    ("N", 214_000_000, "214M"),
    ("N", 214_663_680.0, "215M"),
    ("n_params", 7e9, "7B"),
    # tokens: SI suffixes and the unit (a batch in tokens says ``tokens`` in its name)
    ("D", 1e11, "100B tokens"),
    ("D", 79_999_897_600, "80B tokens"),
    ("bs_tokens", 4_996_961.3, "5M tokens"),
    ("bs_tokens", 407_552, "408k tokens"),
    ("bs_tokens_grid", 663_552.0, "664k tokens"),
    ("bs_tokens_opt", 274_432.0, "274k tokens"),
    ("bs_tokens_pred", 441_832.63, "442k tokens"),
    ("bs_tokens_at", 940_032.0, "940k tokens"),
    ("bs_tokens_quad_lo", 1.2e6, "1.2M tokens"),
    # optima's plateau: the band tag (within +0.25%) is not the column's unit
    ("bs_tokens_lo_0.25%", 196_608.0, "197k tokens"),
    ("lr_hi_1%", 1e-3, "1e-3"),
    # a batch in sequences: whole sequences
    ("bs", 2439.92, "2,440 seq"),
    ("bs", 233, "233 seq"),
    ("bs_rounded", 2048.0, "2,048 seq"),
    # compute
    ("C", 1.2e21, "1.2e21 FLOPs"),
    # learning rates: always scientific
    ("lr", 9.347e-4, "9.35e-4"),
    ("lr", 0.01269, "1.27e-2"),
    ("lr_opt", 0.01, "1e-2"),
    ("lr_min", 1e-5, "1e-5"),
    # named lr_ / bs_ but not a learning rate or a batch: coefficients, grid levels, log errors
    ("lr_coefN", -0.712922, "-0.7129"),
    ("lr_intercept", 0.586308, "0.5863"),
    ("lr_levels", 7, "7"),
    ("bs_levels", 5, "5"),
    ("lr_log_error", -0.37784154, "-0.3778"),
    ("bs_log_error", 0.10791601, "0.1079"),
    ("offset_bs_steps", -2, "-2"),
    # losses: 4 significant digits, trailing zeros kept so a column lines up
    ("loss", 2.3456789, "2.346"),
    ("loss", 2.8, "2.800"),
    ("final_loss", 2.538169, "2.538"),
    ("loss_min", 2.752955798, "2.753"),
    ("loss_forecast", 10.5, "10.50"),
    # fractions shown in percent; columns already in percent
    ("rel_error", 0.0025, "0.25%"),
    ("rel_loss", 0.002272886, "0.227%"),
    ("rel_loss", 0.0, "0%"),
    ("median_rel_error", 0.002454117, "0.245%"),
    ("loss_penalty", 0.000371403, "0.0371%"),
    ("max_loss_penalty", 0.0102, "1.02%"),
    ("rel_penalty_expected", 0.0031, "0.31%"),
    ("threshold", 0.0025, "0.25%"),
    ("coverage", 0.9, "90%"),
    ("D_spread", 2.04e-5, "0.00204%"),
    ("N_spread", 0.0, "0%"),
    ("median_%", 0.0669, "0.0669%"),
    # probabilities: 2 significant digits
    ("p", 0.000347673, "3.5e-4"),
    ("p", 0.2353, "0.24"),
    ("p_near_optimal", 0.371, "0.37"),
    # counts: thousands separated; ids and architecture sizes as a config writes them
    ("steps", 167_650, "167,650"),
    ("runs", 1911, "1,911"),
    ("cells", 4, "4"),
    ("run_id", 22_530_076_637_432_290, "22530076637432290"),
    ("h", 2048, "2048"),
    ("seq_len", 2048, "2048"),
    # anything else: 4 significant digits, plain up to 1e5
    ("objective", 123.456, "123.5"),
    ("estimate", -0.20347843, "-0.2035"),
    ("mean", 12345.6, "12346"),
    ("D/N", 93.13225746, "93.13"),
    ("sd", 2.1e-5, "2.1e-5"),
    # not a number
    ("loss", math.nan, "nan"),
    ("range_in_sds", math.inf, "inf"),
]


@pytest.mark.parametrize(("column", "value", "expected"), CASES, ids=[f"{c}={v!r}" for c, v, _ in CASES])
def test_cli_and_html_show_a_number_the_same_way(column, value, expected):
    assert (readable(column, value), _html.fmt(column, value)) == (expected, expected)


def test_a_frame_reads_the_same_in_the_cli_table_and_the_html_table():
    """The whole path: polars rows through ``render_table`` and ``_html.table``."""
    df = pl.DataFrame(
        {
            "N": [214_663_680],
            "D": [8.0e10],
            "lr": [0.01269],
            "bs": [233],
            "bs_tokens": [477_184],
            "bs_tokens_opt": [274_432.0],
            "loss": [2.8],
            "rel_loss": [0.002272886],
            "steps": [167_650],
        }
    )
    cli_cells = render_table(df).splitlines()[2].split()
    html_cells = re.findall(r"<td[^>]*>(.*?)</td>", _html.table(df))
    expected = ["215M", "80B tokens", "1.27e-2", "233 seq", "477k tokens", "274k tokens", "2.800", "0.227%", "167,650"]
    assert " ".join(html_cells).split() == " ".join(expected).split() == cli_cells


def test_the_interval_cell_names_its_unit_once():
    assert _html.interval(4.996e6, 4.1e6, 6.2e6, "tokens") == "5M [4.1M, 6.2M] tokens"
    assert _html.interval(9.347e-4, 8.5e-4, 1.02e-3, "lr") == "9.35e-4 [8.5e-4, 1.02e-3]"
    assert _html.interval(-0.7129, None, None) == "-0.7129"


def test_kind_reads_n_d_c_case_sensitively():
    """``N``/``D``/``C`` are parameters, tokens and FLOPs; ``n_points`` is a count."""
    assert [kind(c) for c in ("N", "D", "C", "n_points", "d", "c")] == [
        "params", "tokens", "flops", "plain", "plain", "plain"
    ]  # fmt: skip
    assert number("n_points", 12_000) == "12,000"


def test_every_batch_column_the_analyses_return_says_its_unit(synthetic_dense):
    """A batch in tokens is named ``bs_tokens*`` and so read as tokens by its name alone (there
    is no list of exceptions): every numeric ``bs*`` column of optima, evaluate and the
    leave-one-cell-out table whose values are batch-sized in tokens (the synthetic sweep's
    batches are 1e5-1e7 tokens, 1e2-1e3 sequences) must read as tokens, and every column that
    reads as tokens must hold such values. A ``bs_pred`` in tokens would read as a plain number."""
    import warnings

    from steplaw_db.fit import evaluate
    from steplaw_db.optima import optima
    from steplaw_db.stability import stability

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = {
            "optima": optima(synthetic_dense, method="quadratic", bootstrap=20),
            "evaluate": evaluate("step-law", synthetic_dense, method="quadratic", loco=("quadratic",)),
            "loco": stability(synthetic_dense, bootstrap=20, thresholds=(0.0025,), methods=("grid",)).loco,
        }
    seen = set()
    for name, df in frames.items():
        for c in df.columns:
            if not c.startswith("bs") or not df.schema[c].is_numeric():
                continue
            v = df[c].cast(pl.Float64)
            v = v.filter(v.is_finite() & (v != 0))  # an unbounded interval end reads 0 / inf
            if v.is_empty():
                continue
            seen.add(c)
            in_tokens = v.abs().min() > 2e4
            assert (kind(c) == "tokens") == in_tokens, (name, c, kind(c), v.min(), v.max())
    assert {"bs_tokens_opt", "bs_tokens_quad_lo", "bs_tokens_pred", "bs_tokens_at"} <= seen


def test_a_table_says_each_unit_once_in_the_header_or_the_cells():
    """N's cells read ``215M``, so its header names the unit; D's and a batch's cells carry it
    (``100B tokens``, ``2,440 seq``), so their headers do not (``D (tokens)`` said it twice)."""
    df = pl.DataFrame({"N": [2.147e8], "D": [1e11], "bs": [2439.9], "bs_tokens": [4.99e6], "bs_tokens_grid": [4e5]})
    html = _html.table(df)
    heads = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", html)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", html)
    assert list(zip(heads, cells, strict=True)) == [
        ("N (params)", "215M"), ("D", "100B tokens"), ("batch", "2,440 seq"), ("batch", "4.99M tokens"),
        ("bs_tokens_grid", "400k tokens"),
    ]  # fmt: skip
