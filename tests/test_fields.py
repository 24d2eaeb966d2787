"""The run data model is declared once (rust/src/model.rs) and the Python side reads it from
there: the configuration columns, their types and units, the series names of every reader,
the default sequence length."""

from __future__ import annotations

import polars as pl

import steplaw_db as sl
from steplaw_db import fields


def test_run_fields_are_the_runs_tables_configuration_columns(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "m.csv").write_text("step,loss\n1,3.0\n2,2.9\n")
    db = sl.open(tmp_path / "db")
    empty = db.runs()
    assert db.ingest(tmp_path / "runs", set=["h=64", "lr=1e-3", "recipe=web", "moe_name=e8k1"]).ok
    runs, final = db.runs(), db.final_losses()
    schema = fields.config_schema()
    assert list(schema) == list(sl.RUN_FIELDS["name"]) and len(schema) == 15
    for frame in (empty, runs, final):
        for name, dtype in schema.items():
            assert frame.schema[name] == dtype, (name, frame.schema[name])
    # every configuration column, then the tags (typed), reach the final-loss frame
    assert final.columns[: 2 + len(schema)] == ["run_id", "name", *schema]
    assert final["moe_name"].item() == "e8k1" and final["recipe"].item() == "web"


def test_units_and_aliases_are_declared():
    by_name = {r["name"]: r for r in sl.RUN_FIELDS.iter_rows(named=True)}
    assert by_name["bs"]["unit"] == "sequences" and by_name["bs_tokens"]["unit"] == "tokens"
    assert "budget" in by_name["D"]["doc"]  # the run's tokens, not those seen at a point
    assert "global_batch_size" in by_name["bs"]["aliases"] and by_name["recipe"]["type"] == "text"
    aliases = [a.lower() for r in sl.RUN_FIELDS.iter_rows(named=True) for a in r["aliases"]]
    assert len(aliases) == len(set(aliases))


def test_series_names_and_the_sequence_length_come_from_the_core():
    from steplaw_db.optima import DEFAULT_SEQ_LEN

    assert fields.DEFAULT_SEQ_LEN == 2048 == DEFAULT_SEQ_LEN
    names = fields.METRIC_NAMES
    assert set(names) == {"loss", "val_loss", "lr", "step", "tokens"}
    assert "validation/loss" in names["val_loss"] and "train/loss" in names["loss"]
    assert not set(names["loss"]) & set(names["val_loss"])
    assert pl.Series(names["step"]).is_unique().all()
