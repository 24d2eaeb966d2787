"""The store: runs and their loss curves in Parquet, read back as Polars frames."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import polars as pl

from . import _native
from ._checkpoints import VAL_COLUMNS, checkpoint_grouping, checkpoint_runs, read_table
from ._html import ingest_html, store_html
from ._typing import BudgetKind, IngestFormat, Restarts, Smoothing, WidthUnit
from .errors import InsufficientDataError, InvalidArgumentError, ParseError, StoreError
from .fields import CONFIG_COLUMNS, DEFAULT_SEQ_LEN

if TYPE_CHECKING:
    from ._native import _CheckReport, _CompactReport, _IngestReport, _Snapshot

PathLike: TypeAlias = str | os.PathLike[str]

DEFAULT_DB = "steplaw.db"

#: Schema of the points table (see docs/store.md).
POINTS_SCHEMA = {
    "run_id": pl.Int64,
    "metric": pl.String,
    "step": pl.Int64,
    "tokens": pl.Int64,
    "value": pl.Float64,
    "lr": pl.Float64,
}

#: Summary-table columns recognised without ``map=`` (the public Step Law CSV among them).
_NAME_COLUMNS = ("exp_name", "name", "run_name", "run")
_FINAL_LOSS_COLUMNS = ("loss", "final_loss", "train_loss", "final loss")
_SMOOTH_LOSS_COLUMNS = ("smooth loss", "smooth_loss", "smoothed_loss", "final_smooth_loss")


def default_path() -> str:
    """The store path used when none is given: ``$STEPLAW_DB`` or ``./steplaw.db``."""
    return os.environ.get("STEPLAW_DB", DEFAULT_DB)


@dataclass
class IngestReport:
    """What an ingest (or a table import) did."""

    _repr_html_ = ingest_html  # a notebook's view

    runs_found: int
    added: int
    updated: int
    unchanged: int
    failed: list[tuple[str, str]]
    points: int
    bytes_read: int
    malformed_lines: int
    warnings: list[str]
    seconds: float
    version: int
    committed: bool
    strict_refused: bool = field(default=False)
    #: Files that are not logs (a README among the logs, a notes file): (path, why), skipped.
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    #: Points a later trial or file replaced by the restart rule (``restarts="merge"``, or a
    #: restarted run's files), counted so that nothing is dropped unsaid.
    replaced_points: int = 0
    #: What the reader decided that the user should know (trials split, no training loss, ...).
    notes: list[str] = field(default_factory=list)
    #: Runs found at a new path whose content is that of a stored run whose source is gone (a
    #: moved or renamed sweep): the stored run's source was updated, no run added.
    moved: int = 0

    @property
    def ok(self) -> bool:
        """True when no run failed."""
        return not self.failed

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """The closing lines an ingest prints."""
        lines = [
            f"runs: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.failed)} failed (of {self.runs_found} found)",
            f"points: {self.points:,}; read {self.bytes_read / 1e6:,.1f} MB in {self.seconds:.2f} s "
            f"({self.mb_per_s:,.0f} MB/s)",
        ]
        if self.moved:
            lines.append(f"moved: {self.moved} (found at a new path, their old source gone: source updated)")
        if self.malformed_lines:
            lines.append(f"skipped {self.malformed_lines:,} malformed line(s); first ones:")
            lines += [f"  {w}" for w in self.warnings]
        if self.skipped_files:
            lines.append(f"skipped {len(self.skipped_files)} file(s) that hold no log:")
            lines += [f"  {path}: {why}" for path, why in self.skipped_files]
        if self.replaced_points:
            lines.append(f"replaced {self.replaced_points:,} point(s) logged again by a later trial or file")
        if self.notes:
            lines.append("notes:")
            lines += [f"  {n}" for n in self.notes]
        if self.failed:
            lines.append("failed runs:")
            lines += [f"  {src}: {why}" for src, why in self.failed]
        if self.strict_refused:
            lines.append("--strict: nothing was committed because some runs failed")
        elif self.committed:
            lines.append(f"committed store version {self.version}")
        else:
            lines.append(f"nothing to commit; store stays at version {self.version}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True)
class CheckReport:
    """What :meth:`Store.check` found: ``ok``, the ``damaged`` files (one row per file and
    affected run: file, kind, detail, recovery, run_id, name, source, source_exists) and
    the ``unverified`` files (no checksum recorded). ``str()`` is the readable report."""

    raw: _CheckReport = field(repr=False)

    @property
    def ok(self) -> bool:
        return not self.raw["damaged"]

    @property
    def version(self) -> int:
        return self.raw["version"]

    @property
    def unverified(self) -> list[Path]:
        return list(self.raw["unverified"])

    @property
    def damaged(self) -> pl.DataFrame:
        rows: list[dict[str, Any]] = []
        for d in self.raw["damaged"]:
            file = {"file": str(d["file"]), "kind": d["kind"], "detail": d["detail"], "recovery": d["recovery"]}
            # A damaged file that holds no live run (a manifest, an orphan) still gets its row.
            rows.extend({**file, **run} for run in d["runs"])
            if not d["runs"]:
                rows.append(file)
        schema = {
            "file": pl.String,
            "kind": pl.String,
            "detail": pl.String,
            "recovery": pl.String,
            "run_id": pl.Int64,
            "name": pl.String,
            "source": pl.String,
            "source_exists": pl.Boolean,
        }
        return pl.DataFrame(rows, schema=schema)

    def __str__(self) -> str:
        return self.raw["text"]


def _report(d: _IngestReport, strict: bool = False) -> IngestReport:
    failed = [(source, why) for source, why in d["failed"]]
    return IngestReport(
        runs_found=d["runs_found"],
        added=d["added"],
        updated=d["updated"],
        unchanged=d["unchanged"],
        failed=failed,
        points=d["points"],
        bytes_read=d["bytes_read"],
        malformed_lines=d["malformed_lines"],
        warnings=d["warnings"],
        skipped_files=[(path, why) for path, why in d.get("skipped_files", [])],
        replaced_points=d.get("replaced_points", 0),
        notes=list(d.get("notes", [])),
        moved=d.get("moved", 0),
        seconds=d["seconds"],
        version=d["version"],
        committed=d["committed"],
        strict_refused=strict and bool(failed) and not d["committed"],
    )


def _require_a_loss(
    path: Path, df: pl.DataFrame, roles: Mapping[str, str], loss: str | None, smooth: str | None, checkpoints: bool
) -> None:
    """Refuse a table none of whose columns holds a loss: its runs would have no final loss and
    no curve, nothing any analysis can use (a one-row-per-run table needs a final or smoothed
    loss; a checkpoint table a loss or validation-loss column, its points)."""
    val = [c for c, r in roles.items() if r in VAL_COLUMNS]
    if (loss or val) if checkpoints else (loss or smooth):
        return
    kind, other = ("a checkpoint table", VAL_COLUMNS[:3]) if checkpoints else ("a table", _SMOOTH_LOSS_COLUMNS[:3])
    raise ParseError(
        f"{path}: no loss column: {kind} needs one of {', '.join([*_FINAL_LOSS_COLUMNS, *other])}, ... "
        f"(--map COLUMN=final_loss names one); its columns: {', '.join(df.columns)}"
    )


def _pairs(values: Mapping[str, Any] | Iterable[str] | None, what: str) -> list[tuple[str, str]]:
    """``{"k": v}`` or ``["k=v", ...]`` -> ``[("k", "v"), ...]``."""
    if values is None:
        return []
    if isinstance(values, Mapping):
        return [(str(k), str(v)) for k, v in values.items()]
    out = []
    for item in values:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(f"{what} '{item}': expected key=value")
        out.append((key.strip(), value.strip()))
    return out


class Store:
    """A steplaw-db store: a directory of Parquet files and versioned manifests.

    Open one with :func:`steplaw_db.open`. Every read goes through the newest manifest, so a
    reader never sees a half-committed ingest; writers take a lock (a second writer gets
    :class:`~steplaw_db.errors.StoreLockedError`, or waits ``wait`` seconds).
    """

    def __init__(self, path: PathLike | None = None, *, create: bool = True, force: bool = False) -> None:
        # ``force``: create the store even in a non-empty directory that is not one (refused
        # otherwise, as is an empty path: it would make the current directory a store).
        self._native = _native.Store(os.fspath(path if path is not None else default_path()), create, force)

    _repr_html_ = store_html  # a notebook's view: runs by status, the first runs

    def __repr__(self) -> str:
        return f"steplaw_db.Store({str(self.path)!r}, version={self.version})"

    @property
    def path(self) -> Path:
        return Path(self._native.path)

    @property
    def version(self) -> int:
        """The newest committed version (0 for an empty store)."""
        return int(self._native.snapshot()["version"])

    # -- writing -------------------------------------------------------------------------
    def ingest(
        self,
        paths: PathLike | Sequence[PathLike],
        *,
        format: IngestFormat | None = None,
        metric: str | None = None,
        metrics: Sequence[str] = (),
        name_template: str | None = None,
        set: Mapping[str, Any] | Iterable[str] | None = None,
        recipe: str | None = None,
        seq_len: int = DEFAULT_SEQ_LEN,
        force: bool = False,
        strict: bool = False,
        progress: bool = False,
        wait: float = 0.0,
        restarts: Restarts = "split",
    ) -> IngestReport:
        """Ingest every run found under ``paths`` (directories, any depth, or log files).

        A run is a directory holding log files: Step Law ``train_log_<k>.txt``, Megatron or
        nanoGPT-style text logs (``*.log``/``*.txt``/``*.out``; nanoGPT, modded-nanogpt,
        torchtitan, NeMo lines), ``*.jsonl`` or ``*.csv`` metrics (W&B history exports
        included), TensorBoard ``events.out.tfevents.*`` (those of ``train/``, ``eval/``,
        ``training_eval/<task>/`` ... below it too; every scalar is kept under its tag) or a HF
        Trainer ``trainer_state.json`` (the newest of its own and its latest
        ``checkpoint-<n>/``). A W&B chart export (``Step`` and ``"<run> - <metric>"`` columns)
        holds one run per W&B run name. A W&B run directory (``run-<id>.wandb``, offline or
        synced) and MLflow runs (file store ``mlruns/`` or an ``mlflow.db``) are read without
        their trackers. ``format`` forces one (``steplaw``, ``megatron``, ``nanogpt``,
        ``jsonl``, ``csv``, ``wandb-chart``, ``wandb-run``, ``mlflow``, ``tensorboard``, ``hf``).
        The training loss is found by name (``lm loss``, ``loss``, ``train/loss``, ...) and
        stored as metric ``"loss"``, validation losses as ``"val_loss"``, never mixed;
        ``metric`` names another source field for the training loss, and ``metrics`` stores
        further series under their own names. A run logged without a training loss (an
        eval-only export) keeps its other series and has no ``final_loss``.

        Configuration comes from the log, then the run's name (``name_template``, default
        Step Law names), then a sidecar ``config.json``/``config.yaml``/``args.json``, then
        ``set`` and ``recipe``; N, batch tokens and D are derived where missing.

        A log that holds several trials (the step goes back to the first step) gives one run
        per trial (``name``, ``name#2``, ...); ``restarts="merge"`` makes it one run whose
        later trials replace the earlier's points from their first step on (counted in
        ``replaced_points``).

        Unchanged runs are skipped; changed ones replaced (``force`` re-reads everything).
        A run whose files cannot be read fails alone and is listed in the report; with
        ``strict`` nothing is committed if any run fails.

        ``wait``: seconds to wait for another writer's lock before parsing
        (:class:`~steplaw_db.errors.StoreLockedError` after that, nothing parsed). The parse
        runs without the lock; the commit waits for a writer that took it meanwhile (up to 10
        minutes), so the parse is not thrown away.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        report = self._native.ingest(
            [os.fspath(p) for p in paths],
            format=format,
            metric=metric,
            metrics=list(metrics),
            name_template=name_template,
            set=_pairs(set, "set"),
            recipe=recipe,
            seq_len=int(seq_len),
            force=force,
            strict=strict,
            progress=progress,
            wait=float(wait),
            restarts=restarts,
        )
        return _report(report, strict)

    def import_table(
        self,
        path: PathLike,
        *,
        map: Mapping[str, str] | Iterable[str] | None = None,
        name_template: str | None = None,
        set: Mapping[str, Any] | Iterable[str] | None = None,
        recipe: str | None = None,
        seq_len: int = DEFAULT_SEQ_LEN,
        wait: float = 0.0,
        one_row_per_run: bool = False,
    ) -> IngestReport:
        """Import a summary table (CSV or Parquet): one row per run with its final loss.

        Columns are matched to run fields by name (``N``, ``D``, ``lr``, ``bs`` in sequences,
        ``h``, ``numl``, ...; ``loss`` is the raw final loss, ``smooth loss`` the smoothed one,
        ``exp_name`` the run name); ``map`` renames columns (``{"column": "field"}`` or
        ``["column=field"]``). The public Step Law CSV reads correctly with no options.
        Imported runs have status ``summary-only`` and no curve.

        A table with one row per checkpoint (a ``current_steps`` / ``step`` / ``tokens_seen``
        column, rows that share a run's configuration) is grouped into runs with one point per
        checkpoint (their final loss the last checkpoint's; a run that stops short of its
        ``total_steps`` is ``incomplete``); the report's first note says how rows were grouped
        (docs/formats.md). ``one_row_per_run`` imports one summary-only run per row instead.

        A table that yields no run is refused, nothing committed: no rows
        (:class:`~steplaw_db.errors.InsufficientDataError`), or no column that holds a loss
        (:class:`~steplaw_db.errors.ParseError`, naming the columns it looked for).
        """
        path = Path(path)
        if not path.is_file():
            raise InvalidArgumentError(f"{path}: no such file")
        df = read_table(path)
        if df.height == 0:  # as ingest finding no run, but said by an error: the table is the one source
            what = f"a header only: {', '.join(df.columns)}" if df.columns else "an empty file"
            raise InsufficientDataError(f"{path}: no rows to import ({what})")
        renames = dict(_pairs(map, "map"))
        missing = [c for c in renames if c not in df.columns]
        if missing:
            raise InvalidArgumentError(f"{path}: no column(s) {missing} to map (columns: {df.columns})")
        roles = {c: renames.get(c, c) for c in df.columns}

        def find(role_names: Sequence[str]) -> str | None:
            for want in role_names:
                for col, role in roles.items():
                    if role == want:
                        return col
            return None

        name_col = find(("name", *_NAME_COLUMNS))
        loss_col = find(("final_loss", *_FINAL_LOSS_COLUMNS))
        smooth_col = find(("smooth_loss", *_SMOOTH_LOSS_COLUMNS))
        special = {name_col, loss_col, smooth_col}
        grouping = None if one_row_per_run else checkpoint_grouping(df, roles, name_col, special)
        _require_a_loss(path, df, roles, loss_col, smooth_col, grouping is not None)
        if grouping is not None:
            runs, configs, series = checkpoint_runs(df, grouping, roles, name_col, loss_col, smooth_col, _text)
            report = self._native.import_summaries(
                str(path.resolve()), names=runs, fields=configs, final_loss=[None] * len(runs),
                smooth_loss=[None] * len(runs), name_template=name_template, set=_pairs(set, "set"),
                recipe=recipe, seq_len=int(seq_len), wait=float(wait), series=series,
            )  # fmt: skip
            out = _report(report)
            out.notes.insert(0, grouping.note(df.height))
            return out
        names: list[str] = []
        fields: list[list[tuple[str, str]]] = []
        final_loss: list[float | None] = []
        smooth_loss: list[float | None] = []
        for i, rec in enumerate(df.iter_rows(named=True)):
            names.append(str(rec[name_col]) if name_col and rec[name_col] is not None else f"row{i + 1}")
            fields.append([(roles[c], _text(v)) for c, v in rec.items() if c not in special and v is not None])
            final_loss.append(_float(rec[loss_col]) if loss_col else None)
            smooth_loss.append(_float(rec[smooth_col]) if smooth_col else None)
        report = self._native.import_summaries(
            str(path.resolve()),
            names=names,
            fields=fields,
            final_loss=final_loss,
            smooth_loss=smooth_loss,
            name_template=name_template,
            set=_pairs(set, "set"),
            recipe=recipe,
            seq_len=int(seq_len),
            wait=float(wait),
        )
        return _report(report)

    def remove(
        self,
        names: str | Sequence[str] = (),
        *,
        sources: PathLike | Sequence[PathLike] = (),
        run_ids: int | Sequence[int] = (),
        missing_source: bool = False,
        dry_run: bool = False,
        wait: float = 0.0,
    ) -> pl.DataFrame:
        """Remove runs in one commit: by ``names`` (exact or globs: ``*``, ``?``), ``sources``
        (a run directory or file, or any run below a directory), ``run_ids``, or
        ``missing_source`` (runs whose source is gone); a run matching any of them goes. Returns
        the runs removed (``run_id``, ``name``, ``source``); with ``dry_run`` those that would
        be, and nothing is committed. Their points leave the files at the next :meth:`compact`."""
        r = self._native.remove(
            names=[names] if isinstance(names, str) else list(names),
            sources=[os.fspath(sources)]
            if isinstance(sources, (str, os.PathLike))
            else [os.fspath(s) for s in sources],
            run_ids=[run_ids] if isinstance(run_ids, int) else list(run_ids),
            missing_source=missing_source,
            dry_run=dry_run,
            wait=float(wait),
        )
        return pl.DataFrame(
            r["removed"], schema={"run_id": pl.Int64, "name": pl.String, "source": pl.String}, orient="row"
        )

    def compact(self, wait: float = 0.0, keep: int | None = None) -> _CompactReport:
        """Merge small segments, drop replaced runs' points and delete the files of versions
        not kept. ``keep``: how many versions stay readable, the new one included; by default
        every version that was the newest in the last 15 minutes, so that readers that opened
        one can finish. With ``keep=1``, ``points/*.parquet`` and ``runs/*.parquet`` can be
        globbed afterwards (else read the paths :meth:`files` gives). Returns the new
        ``version``, ``segments_rewritten``, ``files_removed``, ``bytes_freed`` and
        ``versions_kept``."""
        return self._native.compact(float(wait), keep)

    def repair(self, wait: float = 0.0) -> str:
        """Set damaged newest manifests aside (``_manifest/damaged-*``), roll back to the
        newest intact version and rewrite a damaged runs table. Returns what was done and
        which runs were lost (to re-ingest from their sources)."""
        return self._native.repair(float(wait))["text"]

    def check(self, deep: bool = False) -> CheckReport:
        """Check the store for damage: every manifest (parses, matches its checksum), and in the
        newest version the runs table and every segment (present, size, xxh3 checksum, rows per
        run as the manifest says). ``deep`` also decodes every segment and counts each run's
        points against its ``n_points`` and last step against its ``final_step`` (it reads
        files written before checksums were kept). Damage is reported, not raised; see
        :meth:`verify`."""
        return CheckReport(self._native.check(bool(deep)))

    def verify(self) -> None:
        """Raise :class:`StoreError` naming every damaged file and run unless a deep
        :meth:`check` finds the store intact."""
        report = self.check(deep=True)
        if not report.ok:
            raise StoreError(f"store {self.path}: {report}")

    # -- reading -------------------------------------------------------------------------
    def files(self) -> _Snapshot:
        """The files of the newest version (for other tools): the runs file, and the segments,
        each with its ``rows``, the ``run_ids`` written to it and its ``live_runs`` (None when
        every run in it is current; else those that are). The runs file is None when the
        newest version was committed as a delta (the runs table is written with checkpoints
        only, e.g. by every ``compact``): :meth:`runs` is always the newest table."""
        return self._native.snapshot()

    def runs(self) -> pl.DataFrame:
        """One row per run: identity, configuration, status and curve summary."""
        return _read_runs(self._native.runs_table())

    def scan_points(self, run_ids: Sequence[int] | None = None) -> pl.LazyFrame:
        """All points of the newest version (or of ``run_ids``), lazily (columns: run_id,
        metric, step, tokens, value, lr). Points of replaced runs that still sit in old
        segments are filtered out. With ``run_ids``, only the segments that hold them are
        read (a run's points are all in one segment)."""
        snap = self._native.snapshot()
        wanted = None if run_ids is None else set(run_ids)
        frames = []
        clean = []
        for s in snap["segments"]:
            live = s["run_ids"] if s["live_runs"] is None else s["live_runs"]
            if wanted is not None:
                live = [r for r in live if r in wanted]
                if live:
                    frames.append(pl.scan_parquet(s["file"]).filter(pl.col("run_id").is_in(live)))
            elif s["live_runs"] is None:
                clean.append(s["file"])
            else:
                frames.append(pl.scan_parquet(s["file"]).filter(pl.col("run_id").is_in(live)))
        if clean:
            frames.insert(0, pl.scan_parquet(clean))
        if not frames:
            return pl.LazyFrame(schema=POINTS_SCHEMA)
        return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]

    def points(self, run_ids: int | Sequence[int] | None = None, metric: str | None = "loss") -> pl.DataFrame:
        """Points of ``run_ids`` (all runs if None) for ``metric`` (all metrics if None),
        sorted by run and step."""
        if run_ids is None:
            lf = self.scan_points()
            return lf.collect() if metric is None else lf.filter(pl.col("metric") == metric).collect()
        # Given runs are read natively: only the row groups that hold them, and only their
        # segments verified (scan_points verifies and scans every segment).
        ids = [run_ids] if isinstance(run_ids, int) else [int(r) for r in run_ids]
        c = self._native.points(ids, metric)
        names = pl.DataFrame(
            {"metric": c["metric_names"], "rows": c["metric_rows"]}, schema={"metric": pl.String, "rows": pl.Int64}
        )
        return pl.DataFrame(
            {
                "run_id": c["run_id"],
                "metric": names.select(pl.col("metric").repeat_by("rows").explode())["metric"],
                "step": c["step"],
                "tokens": c["tokens"],
                "value": c["value"],
                "lr": c["lr"],
            },
            schema=POINTS_SCHEMA,
        )

    def final_losses(
        self,
        smooth: Smoothing = "robust",
        *,
        width: float | None = None,
        unit: WidthUnit = "fraction",
        weight: float | None = None,
        at: int | None = None,
        at_tokens: int | None = None,
        at_fraction: float | None = None,
        metric: str = "loss",
    ) -> pl.DataFrame:
        """The final loss of every run, raw and smoothed, beside its configuration.

        ``smooth`` is one of:

        - ``"robust"`` (default): a local linear fit at the end of the curve over the last
          ``width`` (tricube kernel, Huber weights): unbiased on a curve that is still falling,
          and a loss spike barely moves it (docs/final-loss.md compares the modes);
        - ``"steplaw"``: Step Law's public ``smooth loss`` exactly (a reflect-mode Gaussian
          filter, sigma = min(100, 1% of the entries) / log interval), to compare with theirs;
        - ``"gaussian"``: a one-sided Gaussian kernel mean with sigma ``width``;
        - ``"ema"``: TensorBoard's debiased exponential moving average with ``weight``
          (default 0.6);
        - ``"tail-mean"``: the mean over the last ``width`` of the tokens;
        - ``"none"``: the last logged value.

        ``width`` is in ``unit``: ``"fraction"`` of the run (default 0.1), ``"steps"`` or
        ``"tokens"``. The budget is the end of the run unless ``at`` (a step), ``at_tokens``
        or ``at_fraction`` (of the planned steps) says otherwise.

        Summary-only runs (from :meth:`import_table`) have no curve: their imported final loss
        (the smoothed one when the table had it) is used, with ``origin == "imported"``.
        Returns one row per run with columns ``run_id``, ``name``, ``recipe``, ``N``, ``D``,
        ``lr``, ``bs``, ``seq_len``, ``bs_tokens``, ``steps``, shape fields, ``status``,
        ``raw_loss``, ``loss`` (smoothed), ``step``, ``points_used`` and ``origin``.
        """
        given: tuple[tuple[BudgetKind, float | None], ...] = (
            ("step", at),
            ("tokens", at_tokens),
            ("fraction", at_fraction),
        )
        budgets = [(k, v) for k, v in given if v is not None]
        if len(budgets) > 1:
            raise InvalidArgumentError("give at most one of at, at_tokens and at_fraction")
        at_kind, at_value = budgets[0] if budgets else ("end", 0.0)
        if at_kind == "fraction" and not 0 < float(at_value) <= 1:
            raise InvalidArgumentError(f"at_fraction must be in (0, 1], got {at_value}")
        cols = self._native.final_losses(
            metric=metric,
            smooth=smooth,
            width=None if width is None else float(width),
            unit=unit,
            weight=None if weight is None else float(weight),
            at_kind=at_kind,
            at_value=float(at_value),
        )
        finals = pl.DataFrame(
            {k: v for k, v in cols.items() if k != "runs_table"},
            schema={
                "run_id": pl.Int64, "raw_loss": pl.Float64, "loss": pl.Float64, "step": pl.Int64,
                "points_used": pl.Int64, "origin": pl.String,
            },
        )  # fmt: skip
        table = _read_runs(cols["runs_table"], tags=False)
        runs = table.select(_FINAL_CONFIG_COLUMNS).hstack(_tag_columns(table["tags"], taken=table.columns))
        return runs.join(finals, on="run_id", how="inner").sort("N", "D", "lr", "bs", "name", nulls_last=True)

    def forecast(self, **kwargs: Any) -> pl.DataFrame:
        """Every run's final loss forecast from its curve so far, with an interval, its chance of
        ending near its cell's optimum and a verdict (keep / stop / done):
        :func:`steplaw_db.forecast.forecast` of this store; ``kwargs`` go there (docs/forecast.md)."""
        from .forecast import forecast

        return forecast(self, **kwargs)

    def cells(self, by: str | Sequence[str] = ("N", "D"), smooth: Smoothing = "robust", **kwargs: Any) -> pl.DataFrame:
        """The cells every analysis of this store uses: :func:`steplaw_db.optima.cells` of
        :meth:`final_losses` (``smooth``); ``kwargs`` go to :func:`~steplaw_db.optima.cells`."""
        from .optima import cells

        return cells(self.final_losses(smooth), by, **kwargs)


#: Configuration columns carried into final-loss frames: every run field (``sl.RUN_FIELDS``).
_FINAL_CONFIG_COLUMNS = ["run_id", "name", *CONFIG_COLUMNS, "tags", "status"]


def _text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 9e18:
        return str(int(v))
    return str(v)


def _float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _read_runs(table: bytes, tags: bool = True) -> pl.DataFrame:
    """A version's runs table (the native layer's Parquet bytes), with every key of the ``tags``
    JSON (configuration keys that are not run fields) as a typed column of its own."""
    runs = pl.read_parquet(io.BytesIO(table))
    return runs.hstack(_tag_columns(runs["tags"], taken=runs.columns)) if tags else runs


def _tag_names(tags: pl.Series) -> list[str]:
    """The tag keys of a runs table, in order of first appearance."""
    names: dict[str, None] = {}
    for text in tags.drop_nulls().unique(maintain_order=True):
        names.update(dict.fromkeys(json.loads(text) if text else {}))
    return list(names)


def _typed(values: pl.Series) -> pl.Series:
    """Tag values (text) as integers, numbers or booleans when every one reads as such."""
    present = values.drop_nulls()
    if present.is_empty():
        return values
    if present.str.contains(r"^[+-]?(0|[1-9][0-9]{0,17})$").all():
        return values.cast(pl.Int64)
    if present.str.contains(r"^[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$").all():
        return values.cast(pl.Float64)
    if present.str.to_lowercase().is_in(["true", "false"]).all():
        return values.str.to_lowercase() == "true"
    return values


def _tag_columns(tags: pl.Series, taken: Sequence[str]) -> pl.DataFrame:
    """One typed column per tag key (``tag_<key>`` where a run field has the key's name)."""
    names = _tag_names(tags)
    parsed = [json.loads(t) if t else {} for t in tags.fill_null("{}")]
    return pl.DataFrame(
        [_typed(pl.Series(f"tag_{k}" if k in taken else k, [p.get(k) for p in parsed], dtype=pl.String)) for k in names]
    )


def open(path: PathLike | None = None, *, create: bool = True, force: bool = False) -> Store:
    """Open (or create) the store at ``path`` (default ``$STEPLAW_DB`` or ``./steplaw.db``).
    A store is not created in a directory that holds other files unless ``force``."""
    return Store(path, create=create, force=force)
