"""The run data model, as the Rust core declares it once (``rust/src/model.rs``): the
configuration fields of a run with their types, units, aliases and meaning, the series names
every reader recognises, and the default sequence length.

>>> import steplaw_db as sl
>>> sl.RUN_FIELDS.filter(sl.RUN_FIELDS["name"].is_in(["N", "bs", "bs_tokens"])).select("name", "type", "unit").rows()
[('N', 'int', 'parameters'), ('bs', 'int', 'sequences'), ('bs_tokens', 'int', 'tokens')]
>>> sl.fields.DEFAULT_SEQ_LEN
2048
>>> "validation/loss" in sl.fields.METRIC_NAMES["val_loss"]
True
"""

from __future__ import annotations

import polars as pl

from . import _native

__all__ = ["CONFIG_COLUMNS", "DEFAULT_SEQ_LEN", "METRIC_NAMES", "POLARS_TYPES", "RUN_FIELDS", "config_schema"]

#: Sequence length assumed when neither the log, the config nor the user gives one.
DEFAULT_SEQ_LEN: int = _native.DEFAULT_SEQ_LEN

#: One row per configuration field of a run, in the runs table's column order: ``name`` (the
#: column), ``type`` (int, float, text), ``unit``, ``aliases`` (the names other tools give it,
#: matched case-insensitively) and ``doc``.
RUN_FIELDS: pl.DataFrame = pl.DataFrame(
    _native.run_fields(),
    schema={"name": pl.String, "type": pl.String, "unit": pl.String, "aliases": pl.List(pl.String), "doc": pl.String},
)

#: The configuration columns of the runs table (and of final-loss frames).
CONFIG_COLUMNS: tuple[str, ...] = tuple(RUN_FIELDS["name"])

#: The Polars type of each field type.
POLARS_TYPES: dict[str, type[pl.DataType]] = {"int": pl.Int64, "float": pl.Float64, "text": pl.String}

#: The series names the readers recognise, by role (``loss``, ``val_loss``, ``lr``, ``step``,
#: ``tokens``), best first.
METRIC_NAMES: dict[str, list[str]] = _native.metric_names()


def config_schema() -> dict[str, type[pl.DataType]]:
    """``{column: Polars type}`` of the configuration columns."""
    return {row["name"]: POLARS_TYPES[row["type"]] for row in RUN_FIELDS.iter_rows(named=True)}
