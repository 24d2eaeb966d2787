"""The command line's shape: a cold start without polars, numpy or matplotlib; ``--db`` before
or after the verb; the same exit status for the same situation in every command."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from steplaw_db.cli import app
from steplaw_db.cli._util import db_first

HEAVY = ("polars", "numpy", "scipy", "matplotlib")


def _imported_after(code: str) -> list[str]:
    report = f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    probe = f"{code}\nimport sys\nsys.stdout = sys.__stdout__\n{report}"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return out.stdout.split()


def test_cli_import_loads_no_heavy_module():
    assert _imported_after("import steplaw_db.cli") == []
    assert _imported_after("import steplaw_db") == []


def test_help_runs_without_heavy_modules():
    code = (
        "import contextlib, io, sys\nfrom steplaw_db.cli import app\n"
        "sys.stdout = io.StringIO()\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "for verb in ('ingest', 'optima', 'fit', 'plot', 'predict'):\n"
        "    try:\n        app([verb, '--help'])\n    except SystemExit:\n        pass"
    )
    assert _imported_after(code) == []


def test_lazy_names_are_the_same_objects():
    from steplaw_db import optima as optima_module  # noqa: F401  (the function, bound over the module)
    from steplaw_db import stability as stability_module  # noqa: F401

    assert callable(sl.stability) and sl.stability.__name__ == "stability"
    assert callable(sl.optima) and sl.optima.__name__ == "optima"
    import steplaw_db.report  # noqa: F401  (imports the stability and optima modules)

    assert callable(sl.stability) and callable(sl.optima)
    assert sl.Store is sl.store.Store
    assert sl.RUN_FIELDS.height > 0
    assert "fit_law" in dir(sl)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ingest", "runs", "--db", "x.db"], ["--db", "x.db", "ingest", "runs"]),
        (["ingest", "--db=x.db", "runs"], ["--db=x.db", "ingest", "runs"]),
        (["--db", "x.db", "runs"], ["--db", "x.db", "runs"]),
        (["fit", "curve", "--", "--db", "a"], ["fit", "curve", "--", "--db", "a"]),
    ],
)
def test_db_moves_to_the_front(args, expected):
    assert db_first(args) == expected


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    sl.synth.write_sweep(root / "runs", points=20)
    return root


def test_db_after_the_verb_and_from_the_environment(store, monkeypatch):
    runner = CliRunner()
    db = str(store / "after.db")
    r = runner.invoke(app, ["ingest", str(store / "runs"), "--db", db])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["runs", "--db", db, "--format", "csv"])
    assert r.exit_code == 0 and r.output.count("\n") > 10, r.output
    monkeypatch.setenv("STEPLAW_DB", db)
    r = runner.invoke(app, ["runs", "--format", "csv"])
    assert r.exit_code == 0 and r.output.count("\n") > 10, r.output


def test_exit_codes(store, tmp_path):
    runner = CliRunner()
    db = str(store / "codes.db")
    assert runner.invoke(app, ["--db", db, "ingest", str(store / "runs")]).exit_code == 0
    png = str(tmp_path / "x.png")
    # not found: a run, a store
    r = runner.invoke(app, ["--db", db, "plot", "curves", "nonexistent", "-o", png])
    assert r.exit_code == 1 and "no runs named" in r.output, r.output
    r = runner.invoke(app, ["--db", str(tmp_path / "none.db"), "runs"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    r = runner.invoke(app, ["--db", db, "fit", "curve", "--run", "99999"])
    assert r.exit_code == 1, r.output
    # usage: unknown options and values
    assert runner.invoke(app, ["--db", db, "runs", "--nope"]).exit_code == 2
    assert runner.invoke(app, ["--db", db, "optima", "--method", "nope"]).exit_code == 2
    assert runner.invoke(app, ["predict", "7e9", "x"]).exit_code == 2
    assert runner.invoke(app, ["predict", "7e9", "1e12", "--law", "nope"]).exit_code == 2


def test_unexpected_exception_is_exit_3(monkeypatch):
    from steplaw_db import laws

    def boom(spec):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(laws, "resolve", boom)
    r = CliRunner().invoke(app, ["predict", "7e9", "1e12"])
    assert r.exit_code == 3 and "internal error" in r.output and "boom" in r.output, r.output


# --- --format and -o on every table ---------------------------------------------------------

TABLE_COMMANDS = [
    ["runs"],
    ["final"],
    ["cells"],
    ["optima"],
    ["near-optimal"],
    ["evaluate", "--law", "step-law"],
    ["predict", "7e9", "1.4e12"],
    ["stability", "--table", "verdicts", "--bootstrap", "20", "--smoothing", "robust"],
]


@pytest.fixture(scope="module")
def db(store):
    path = str(store / "formats.db")
    r = CliRunner().invoke(app, ["--db", path, "ingest", str(store / "runs")])
    assert r.exit_code == 0, r.output
    return path


@pytest.mark.parametrize("command", TABLE_COMMANDS, ids=lambda c: c[0])
def test_every_table_command_writes_every_format(db, command, tmp_path):
    import polars as pl

    runner = CliRunner()
    for fmt in ("table", "csv", "json", "markdown", "latex"):
        r = runner.invoke(app, [*command, "--db", db, "--format", fmt])
        assert r.exit_code == 0, (fmt, r.output)
        assert r.stdout.strip(), fmt
        if fmt == "markdown":
            assert r.stdout.splitlines()[1].startswith("|---") or "|---" in r.stdout
        if fmt == "latex":
            assert r"\begin{tabular}" in r.stdout and r"\bottomrule" in r.stdout
    # csv on stdout is pure CSV (sentences go to stderr); -o FILE takes the format from the extension
    r = runner.invoke(app, [*command, "--db", db, "--format", "csv"])
    csv = pl.read_csv(r.stdout.encode())
    for suffix in ("csv", "json", "md", "tex", "parquet"):
        out = tmp_path / f"t.{suffix}"
        r = runner.invoke(app, [*command, "--db", db, "-o", str(out)])
        assert r.exit_code == 0 and out.stat().st_size > 0, (suffix, r.output)
    if command[0] != "evaluate":  # evaluate: -o takes the per-cell rows, stdout the summary
        assert pl.read_parquet(tmp_path / "t.parquet").height == csv.height
    assert runner.invoke(app, [*command, "--db", db, "--format", "nope"]).exit_code == 2


def test_machine_formats_carry_full_precision_and_the_table_units(db):
    import polars as pl

    runner = CliRunner()
    store_runs = sl.open(db).runs().sort("run_id")
    r = runner.invoke(app, ["runs", "--db", db, "--format", "csv"])
    csv = pl.read_csv(r.stdout.encode()).sort("run_id")
    assert csv["lr"].to_list() == store_runs["lr"].to_list()  # every digit
    r = runner.invoke(app, ["runs", "--db", db, "--format", "json"])
    assert pl.read_json(r.stdout.encode()).sort("run_id")["lr"].to_list() == store_runs["lr"].to_list()
    r = runner.invoke(app, ["optima", "--db", db])
    assert "tokens" in r.stdout and "e-" in r.stdout, r.stdout


def test_readable_values():
    from steplaw_db.cli._util import latex_escape, readable

    assert readable("N", 214_000_000) == "214M"
    assert readable("D", 1e11) == "100B tokens"
    assert readable("lr", 9.347e-4) == "9.35e-4"
    assert readable("lr_opt", 0.01) == "1e-2"
    assert readable("bs_tokens", 4_996_961.3) == "5M tokens"
    assert readable("bs", 2439.92) == "2,440 seq"  # whole sequences (tests/test_numbers.py)
    assert readable("rel_error", 0.0025) == "0.25%"
    assert readable("median_%", 0.0669) == "0.0669%"
    assert readable("loss", 2.3456789) == "2.346"  # 4 significant digits, as the HTML report
    assert readable("loss", None) == "-"
    assert readable("flags", ["edge", "flat"]) == "edge, flat"
    assert latex_escape("bs_tokens 5%") == r"bs\_tokens 5\%"


def test_fit_tables_take_a_format(db):
    runner = CliRunner()
    r = runner.invoke(app, ["fit", "lr-bs", "--db", db, "--method", "steplaw", "--bootstrap", "0", "--format", "csv"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("target,term,estimate"), r.stdout  # the sentences went to stderr
    r = runner.invoke(app, ["fit", "lr-bs", "--db", db, "--method", "steplaw", "--bootstrap", "0", "--format", "latex"])
    assert r.exit_code == 0 and r"\begin{tabular}" in r.stdout, r.output
    r = runner.invoke(app, ["evaluate", "--db", db, "--law", "step-law", "--per-cell", "--format", "json"])
    assert r.exit_code == 0 and r.stdout.lstrip().startswith("[") and '"rel_error"' in r.stdout, r.output


def test_stability_format_without_table_writes_the_verdicts(db):
    r = CliRunner().invoke(
        app, ["stability", "--db", db, "--bootstrap", "20", "--smoothing", "robust", "--format", "csv"]
    )
    assert r.exit_code == 0 and "verdict" in r.stdout.splitlines()[0].split(","), r.output


@pytest.mark.slow  # the demo fits with 1,000 bootstraps and writes the report
def test_demo_table_is_readable(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "tokens" in r.output and "e-" in r.output and "┆" not in r.output, r.output


def test_every_command_runs_under_the_one_error_handler():
    # cli/__init__.py's convention: commands are added to an App from cli/_app.py, which wraps
    # each in reports_errors; a group made with a plain typer.Typer would miss it.
    def walk(t):
        yield from t.registered_commands
        for group in t.registered_groups:
            yield from walk(group.typer_instance)

    commands = list(walk(app))
    assert len(commands) >= 23
    unwrapped = [c.name or c.callback.__name__ for c in commands if not hasattr(c.callback, "__wrapped__")]
    assert unwrapped == []


def test_what_the_cli_prints_is_computed_by_the_library():
    # evaluate's summary and the demo's true optima (issue 17: the CLI does no analysis of its own)
    import polars as pl

    from steplaw_db.fit import evaluation_summary

    rows = pl.DataFrame({"law": ["a", "a", "b"], "rel_error": [0.0, 0.02, 0.01]})
    summary = evaluation_summary(rows).select("law", "cells", "median_%", "mean_%", "max_%", "at_optimum")
    assert summary.rows() == [("a", 2, 1.0, 1.0, 2.0, 1), ("b", 1, 1.0, 1.0, 1.0, 0)]
    truth = sl.synth.TRUTH.with_optima(pl.DataFrame({"N": [2e8, 1e9], "D": [1e10, 1e11]}))
    assert truth["lr_true"].to_list() == pytest.approx([sl.synth.lr_opt(2e8, 1e10), sl.synth.lr_opt(1e9, 1e11)])
    assert truth["bs_tokens_true"].to_list() == pytest.approx(
        [sl.synth.bs_tokens_opt(1e10), sl.synth.bs_tokens_opt(1e11)]
    )


def test_predict_gives_a_fitted_laws_interval_and_a_usable_batch(db, tmp_path):
    import polars as pl

    runner = CliRunner()
    law = tmp_path / "law.json"
    r = runner.invoke(app, ["fit", "lr-bs", "--db", db, "--bootstrap", "50", "-o", str(law)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", "7e9", "1.4e12", "--law", f"step-law,{law}", "--format", "csv"])
    assert r.exit_code == 0, r.output
    rows = {row["law"]: row for row in pl.read_csv(r.stdout.encode()).iter_rows(named=True)}
    fitted, published = rows[next(k for k in rows if k != "step-law")], rows["step-law"]
    assert fitted["lr_lo"] < fitted["lr"] < fitted["lr_hi"]
    assert fitted["bs_tokens_lo"] < fitted["bs_tokens"] < fitted["bs_tokens_hi"]
    assert published["lr_lo"] is None  # a published law without draws: no interval, none made up
    for row in rows.values():  # the nearest power of two in ratio, and the same batch in tokens
        assert row["bs_rounded"] in (2 ** math.floor(math.log2(row["bs"])), 2 ** math.ceil(math.log2(row["bs"])))
        assert abs(math.log(row["bs_rounded"] / row["bs"])) <= math.log(2) / 2 + 1e-12
        assert row["bs_tokens_rounded"] == row["bs_rounded"] * row["seq_len"]
    r = runner.invoke(app, ["predict", "7e9", "1.4e12", "--law", str(law)])
    assert r.exit_code == 0 and "lr_lo" in r.stdout and "bs_rounded" in r.stdout, r.output
    r = runner.invoke(app, ["predict", "7e9", "1.4e12", "--round", "48", "--format", "json"])
    assert r.exit_code == 0 and pl.read_json(r.stdout.encode())["bs_rounded"][0] % 48 == 0, r.output
    assert runner.invoke(app, ["predict", "7e9", "1.4e12", "--round", "0"]).exit_code == 2


# --- progress: on a terminal only ----------------------------------------------------------


def _cli_streams(args: list[str], *, terminal: bool) -> tuple[str, str]:
    """stdout and stderr of ``python -m steplaw_db.cli ARGS``, stderr a pseudo-terminal or a pipe."""
    import os
    from pathlib import Path

    package_root = str(Path(sl.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "TERM": "xterm",
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "steplaw_db.cli", *args]
    if not terminal:
        out = subprocess.run(command, capture_output=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout.decode(), out.stderr.decode()
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout = proc.stdout.read() if proc.stdout else b""
    assert proc.wait(timeout=300) == 0
    return stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_progress_shows_on_a_terminal_and_never_in_a_pipe(db, store, tmp_path):
    pytest.importorskip("pty")
    # ingest's bar (Rust, indicatif) too: runs and MB/s on a terminal, nothing in a pipe
    _, tty_err = _cli_streams(["--db", str(tmp_path / "t.db"), "ingest", str(store / "runs")], terminal=True)
    assert "ingest [" in tty_err and "runs" in tty_err, tty_err
    _, piped_err = _cli_streams(["--db", str(tmp_path / "p.db"), "ingest", str(store / "runs")], terminal=False)
    assert "\x1b" not in piped_err and "\r" not in piped_err and "ingest [" not in piped_err, piped_err
    args = ["--db", db, "stability", "--bootstrap", "20", "--smoothing", "robust", "--format", "csv"]
    piped_out, piped_err = _cli_streams(args, terminal=False)
    tty_out, tty_err = _cli_streams(args, terminal=True)
    # on a terminal: the command's stage, and the library's count of law fits, on stderr only
    assert "stability (20 draws a fit)" in tty_err and "law fits" in tty_err, tty_err
    assert tty_out == piped_out and "law fits" not in tty_out
    # in a pipe: no progress noise, no control characters; stderr holds warnings only
    assert "\x1b" not in piped_err and "\r" not in piped_err and "law fits" not in piped_err, piped_err
    assert all(line.startswith("warning: ") for line in piped_err.splitlines()), piped_err


# --- warnings: one readable line each, grouped, on stderr -----------------------------------


def test_warning_lines_are_one_line_each_grouped_and_say_whose():
    import warnings

    from steplaw_db.cli._util import warning_lines
    from steplaw_db.optima import AnalysisWarning

    here = "/x/python/steplaw_db/fit.py"
    numpy_file = "/venv/lib/python3.11/site-packages/numpy/core/_methods.py"

    def message(text, category=AnalysisWarning, filename=here):
        return warnings.WarningMessage(text, category, filename, 1)

    caught = [
        message("lr: only 4 cells\n   for 3 coefficients"),
        message("D: 4 cells merged"),
        message("lr: 19 of 50 draws left out"),
        message("D: 4 cells merged"),  # the same again: once
        message("invalid value encountered in log", RuntimeWarning, numpy_file),
        message("old API", DeprecationWarning, numpy_file),  # for developers, as Python's filters say
    ]
    assert warning_lines(caught) == [
        "warning: lr: only 4 cells for 3 coefficients",
        "warning: lr: 19 of 50 draws left out",
        "warning: D: 4 cells merged",
        "warning: invalid value encountered in log (numpy RuntimeWarning)",
    ]


def test_the_error_comes_after_the_warnings(db):
    # 4 cells cannot fit a 5-parameter loss law; the cells' note is a warning before it
    r = CliRunner().invoke(app, ["fit", "loss", "--db", db])
    assert r.exit_code == 1, r.output  # the data cannot support the law
    lines = r.stderr.splitlines()
    assert lines[-1].startswith("error: ") and lines[0].startswith("warning: "), r.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["runs"],
        ["final"],
        ["optima"],
        ["evaluate", "--law", "all"],
        ["predict", "7e9", "1.4e12", "--law", "all"],
        ["fit", "lr-bs", "--bootstrap", "50"],
        ["stability", "--bootstrap", "20", "--smoothing", "robust"],
        ["plot", "law", "--bootstrap", "50", "-o", "{tmp}/law.png"],
    ],
    ids=lambda c: "-".join(c[:2]),
)
def test_no_python_warning_lines_reach_the_terminal(db, command, tmp_path):
    # a real process with Python's default warning filters: only our lines on stderr
    args = ["--db", db, *(a.format(tmp=tmp_path) for a in command)]
    _, stderr = _cli_streams(args, terminal=False)
    for line in stderr.splitlines():
        assert line.startswith("warning: ") and ".py:" not in line and "Warning:" not in line, stderr


def test_stability_prints_readable_tables_not_polars_reprs(db):
    # the default output is four titled tables drawn like every other command's table format
    stdout, _ = _cli_streams(["--db", db, "stability", "--bootstrap", "20", "--smoothing", "robust"], terminal=False)
    for title in ("coefficients:", "group comparison:", "leave-one-cell-out (median over cells):", "verdicts:"):
        assert title in stdout
    assert "shape: (" not in stdout and "╞" not in stdout, stdout
