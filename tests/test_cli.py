"""The command line's shape: a cold start without polars, numpy or matplotlib; ``--db`` before
or after the verb; the same exit status for the same situation in every command."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import steplaw_db as sl
from steplaw_db._cli_util import db_first
from steplaw_db.cli import app

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
    sl.synth.write_sweep(root / "runs", n_lr=3, n_bs=2, points=20)
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
