//! `ingest`: discover runs, parse their logs in parallel, write their points into new
//! segments and commit them with their records in one new store version.
pub mod config;
pub mod discover;
pub mod hf;
pub mod mlflow;
pub mod nanogpt;
pub mod read;
pub mod series;
pub mod summary;
pub mod tabular;
pub mod text;
pub mod tfevents;
pub mod wandb;
pub mod wandb_run;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model::{now_us, run_id_for, FileStat, RunConfig, RunId, RunRecord};
use crate::store::{SegmentEntry, Series, Store};
use config::NameTemplate;
use discover::RunSource;
use series::{RunParse, LOSS, VAL_LOSS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Step Law's Megatron fork: `train_log_<k>.txt`, loguru lines.
    Steplaw,
    /// Megatron-LM text logs.
    Megatron,
    Jsonl,
    Csv,
    /// TensorBoard event files, `events.out.tfevents.*`.
    TfEvents,
    /// Hugging Face Trainer `trainer_state.json`.
    HfTrainer,
    /// nanoGPT / modded-nanogpt / torchtitan / NeMo text logs.
    NanoGpt,
    /// W&B chart CSV exports (several runs a file).
    WandbChart,
    /// W&B run directories: the transaction log `run-<id>.wandb` (offline and synced runs).
    WandbRun,
    /// MLflow runs: the file store (`mlruns/<experiment>/<run>/`) and SQLite (`mlflow.db`).
    Mlflow,
}

impl Format {
    pub const NAMES: &'static [&'static str] = &[
        "steplaw",
        "megatron",
        "nanogpt",
        "jsonl",
        "csv",
        "wandb-chart",
        "tensorboard",
        "hf",
        "wandb-run",
        "mlflow",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Steplaw => "steplaw",
            Format::Megatron => "megatron",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::TfEvents => "tensorboard",
            Format::HfTrainer => "hf",
            Format::NanoGpt => "nanogpt",
            Format::WandbChart => "wandb-chart",
            Format::WandbRun => "wandb-run",
            Format::Mlflow => "mlflow",
        }
    }
    pub fn from_name(s: &str) -> Result<Format> {
        Ok(match s {
            "steplaw" => Format::Steplaw,
            "megatron" => Format::Megatron,
            "jsonl" => Format::Jsonl,
            "csv" => Format::Csv,
            "tensorboard" | "tfevents" => Format::TfEvents,
            "hf" | "trainer_state" => Format::HfTrainer,
            "nanogpt" => Format::NanoGpt,
            "wandb-chart" | "wandb" => Format::WandbChart,
            "wandb-run" => Format::WandbRun,
            "mlflow" => Format::Mlflow,
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown format '{s}' ({})",
                    Format::NAMES.join(", ")
                )))
            }
        })
    }
}

/// Which series to keep: the training loss (found by name unless `loss` names it) and any
/// further metrics by their names in the log.
#[derive(Debug, Clone, Default)]
pub struct MetricSelection {
    pub loss: Option<String>,
    pub extra: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub format: Option<Format>,
    pub metrics: MetricSelection,
    pub name_template: Option<String>,
    /// `--set key=value`, applied after the name and the sidecar config.
    pub set: Vec<(String, String)>,
    pub recipe: Option<String>,
    pub seq_len: i64,
    pub force: bool,
    pub strict: bool,
    pub progress: bool,
    /// How long to wait for another writer's lock before giving up.
    pub wait: Duration,
    /// How a log that holds several trials is read (`--restarts split|merge`).
    pub restarts: Restarts,
}

/// How a log that holds several trials (the step goes back to the trial's first step, or a
/// `trial:k/n` line) is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Restarts {
    /// One run per trial: `name`, `name#2`, `name#3`, ...
    #[default]
    Split,
    /// One run: each later trial replaces the earlier's points from its first step on (the
    /// restart rule); the replaced points are counted.
    Merge,
}

impl Restarts {
    pub const NAMES: &'static [&'static str] = &["split", "merge"];

    pub fn name(self) -> &'static str {
        match self {
            Restarts::Split => "split",
            Restarts::Merge => "merge",
        }
    }

    pub fn from_name(s: &str) -> Result<Restarts> {
        match s {
            "split" => Ok(Restarts::Split),
            "merge" => Ok(Restarts::Merge),
            _ => Err(Error::Invalid(format!(
                "unknown restarts mode '{s}' ({})",
                Restarts::NAMES.join(", ")
            ))),
        }
    }
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            format: None,
            metrics: MetricSelection::default(),
            name_template: None,
            set: Vec::new(),
            recipe: None,
            seq_len: crate::model::DEFAULT_SEQ_LEN,
            force: false,
            strict: false,
            progress: false,
            wait: Duration::ZERO,
            restarts: Restarts::Split,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    pub runs_found: usize,
    pub added: usize,
    /// Runs found at a new path whose content matches a stored run whose source is gone (a
    /// moved or renamed sweep directory): that run's source is updated, not a run added.
    pub moved: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// (run source, reason)
    pub failed: Vec<(String, String)>,
    pub points: u64,
    pub bytes_read: u64,
    pub malformed_lines: u64,
    /// The first few bad lines, `file:line: reason`.
    pub warnings: Vec<String>,
    /// Files passed over, (path, why): text files among logs that hold no log lines, files
    /// given by name that are no log of a known format, symlink cycles.
    pub skipped_files: Vec<(String, String)>,
    /// Points the restart rule replaced (a later log or trial logged the same steps again)
    /// and points that differed between two copies of an export (the later file won).
    pub replaced_points: u64,
    /// Facts worth a line each (not bad lines): trials found in one log, runs without a
    /// training loss, runs whose N or D is unknown.
    pub notes: Vec<String>,
    pub seconds: f64,
    /// The store version after the ingest (unchanged if nothing was committed).
    pub version: u64,
    pub committed: bool,
}

const MAX_WARNINGS: usize = 20;
const MAX_NOTES: usize = 20;

enum Outcome {
    Unchanged {
        run_id: RunId,
        files: Vec<FileStat>,
    },
    Parsed(Box<ParsedRun>),
    Failed {
        source: String,
        reason: String,
    },
    /// A trial run of a log that now holds fewer trials.
    Removed {
        run_id: RunId,
    },
}

struct ParsedRun {
    record: RunRecord,
    series: Vec<Series>,
    messages: Vec<String>,
    notes: Vec<String>,
    replaced: u64,
    has_train_loss: bool,
    bytes: u64,
}

/// The directories a run's sidecar config is looked for in: the run's own, then those of
/// its files (a HF checkpoint's config.json).
fn sidecar_dirs(src: &RunSource) -> Vec<&std::path::Path> {
    let mut dirs = vec![src.dir.as_path()];
    for d in src.files.iter().filter_map(|(p, _)| p.parent()) {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// The run's files and its sidecar config (an edited lr must re-ingest the run).
fn stat_files(src: &RunSource) -> Result<Vec<FileStat>> {
    let sidecar = config::sidecar_path(&sidecar_dirs(src));
    src.files
        .iter()
        .map(|(p, _)| p.as_path())
        .chain(sidecar.as_deref())
        .map(|p| {
            let m = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
            let mtime_ns = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            Ok(FileStat {
                path: p.to_string_lossy().into_owned(),
                size: m.len(),
                mtime_ns,
            })
        })
        .collect()
}

struct Context<'a> {
    opts: &'a IngestOptions,
    template: NameTemplate,
    overrides: RunConfig,
    existing: HashMap<RunId, &'a RunRecord>,
    /// A log holding several trials gives one run per trial (else one, by the restart rule).
    split_trials: bool,
    /// What the options that shape a run's record (`--set`, `--recipe`, `--seq-len`,
    /// `--name-template`) add to its fingerprint: changed options re-apply to unchanged files.
    options_tag: String,
}

/// The fingerprint's suffix for the options that shape a run's record: empty for the
/// defaults (so stores ingested without them stay unchanged), else `+o<hash>`.
fn options_tag(opts: &IngestOptions, overrides: &RunConfig) -> String {
    if *overrides == RunConfig::default()
        && opts.seq_len == crate::model::DEFAULT_SEQ_LEN
        && opts.name_template.is_none()
    {
        return String::new();
    }
    let key = format!(
        "{}|seq_len={}|template={:?}",
        serde_json::to_string(overrides).unwrap_or_default(),
        opts.seq_len,
        opts.name_template
    );
    format!("+o{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

/// The options part of a stored fingerprint (see `options_tag`).
fn options_of(fingerprint: &str) -> &str {
    let main = fingerprint.split('#').next().unwrap_or_default();
    main.find("+o").map_or("", |i| &main[i..])
}

/// `text_buf`: the worker's buffer for streaming text logs, reused from run to run. A source
/// gives one outcome, or one per trial when its log holds several.
fn process(ctx: &Context, src: &RunSource, text_buf: &mut Vec<u8>) -> Vec<Outcome> {
    let run_id = run_id_for(&src.key);
    match parse_run(ctx, src, run_id, text_buf) {
        Ok(o) => o,
        Err(e) => vec![Outcome::Failed {
            source: src.key.clone(),
            reason: e.to_string(),
        }],
    }
}

/// Which of a run's sources wins when two give the same series (one run logged two ways):
/// the text log, then TensorBoard events, then the HF Trainer state, then JSONL/CSV tables.
/// Trackers' folders and chart exports make runs of their own.
fn source_rank(f: Format) -> u8 {
    match f {
        Format::Steplaw | Format::Megatron | Format::NanoGpt => 0,
        Format::TfEvents => 1,
        Format::HfTrainer => 2,
        Format::Jsonl | Format::Csv => 3,
        Format::WandbChart | Format::WandbRun | Format::Mlflow => 0,
    }
}

/// The key of the `k`-th trial (from 2) of a source whose log holds several.
fn trial_key(key: &str, k: usize) -> String {
    format!("{key}#{k}")
}

/// The stored runs of a source's 2nd, 3rd, ... trials.
fn stored_trials(ctx: &Context, key: &str) -> Vec<RunId> {
    (2..)
        .map(|k| run_id_for(&trial_key(key, k)))
        .take_while(|id| ctx.existing.contains_key(id))
        .collect()
}

/// Why a file that yields no point fails its run: what was looked for, in its words.
fn yielded_nothing(format: Format, src: &RunSource, sel: &MetricSelection, label: String, parse: &RunParse) -> Error {
    let detail = parse
        .messages
        .first()
        .map(|m| format!("; first problem: {m}"))
        .unwrap_or_default();
    let why = match format {
        Format::TfEvents => "no scalar summaries found in this event file".to_string(),
        Format::HfTrainer => "no loss or eval-loss entries in log_history".to_string(),
        Format::WandbChart => format!(
            "no values for run '{}' in this W&B chart export",
            src.member.as_deref().unwrap_or_default()
        ),
        Format::NanoGpt => format!(
            "no nanogpt log lines found (a step and a loss: '{}'; or a validation loss: '{}')",
            sel.loss.clone().unwrap_or_else(|| nanogpt::LOSS_KEYS.join("', '")),
            nanogpt::VAL_KEYS.join("', '")
        ),
        Format::Steplaw | Format::Megatron => format!(
            "no {} log lines with a training loss ('{}') found",
            format.name(),
            sel.loss.clone().unwrap_or_else(|| text::LOSS_KEYS.join("', '"))
        ),
        Format::Jsonl | Format::Csv => format!(
            "no {} rows with a step and a training loss ('{}') or validation loss ('{}') found",
            format.name(),
            sel.loss.clone().unwrap_or_else(|| tabular::LOSS_KEYS.join("', '")),
            tabular::VAL_KEYS.join("', '")
        ),
        Format::WandbRun | Format::Mlflow => format!("no values in this {} run", format.name()),
    };
    Error::parse(label, format!("{why}{detail}"))
}

fn parse_run(ctx: &Context, src: &RunSource, run_id: RunId, text_buf: &mut Vec<u8>) -> Result<Vec<Outcome>> {
    let files = stat_files(src)?;
    let previous = ctx.existing.get(&run_id);
    let trials_before = stored_trials(ctx, &src.key);
    let unchanged = |files: Vec<FileStat>| -> Vec<Outcome> {
        std::iter::once(run_id)
            .chain(trials_before.iter().copied())
            .map(|run_id| Outcome::Unchanged {
                run_id,
                files: files.clone(),
            })
            .collect()
    };
    if !ctx.opts.force && previous.is_some_and(|r| r.files == files && options_of(&r.fingerprint) == ctx.options_tag) {
        return Ok(unchanged(files));
    }
    // Megatron lines are 150-300 bytes, JSONL/CSV rows shorter: a generous guess costs only
    // address space (untouched pages), a short one costs copies.
    let total_size: u64 = files.iter().map(|f| f.size).sum();
    let mut parse = RunParse {
        capacity_hint: (total_size / 100) as usize,
        ..Default::default()
    };
    // The 2nd, 3rd, ... trials of a log that holds several.
    let mut trials: Vec<RunParse> = Vec::new();
    let mut split_megatron = false;
    let mut fingerprint = read::Fingerprint::default();
    let mut bytes = 0u64;
    let sel = &ctx.opts.metrics;
    // What a tracker says of its run (a W&B exit record, an MLflow status); the last file's.
    let mut tracker_status: Option<&'static str> = None;
    // One run logged two ways (a text log and TensorBoard events, a JSONL beside a Step Law
    // log): each lesser source is read apart and gives only the series the better lacks.
    let top = src.files.iter().map(|(_, f)| source_rank(*f)).min().unwrap_or(0);
    let mut lesser: std::collections::BTreeMap<u8, (RunParse, Vec<&std::path::Path>)> = Default::default();
    for (path, format) in &src.files {
        let rank = source_rank(*format);
        if rank > top {
            let (side, paths) = lesser.entry(rank).or_default();
            paths.push(path);
            std::mem::swap(&mut parse, side);
        }
        // Trackers' own folders: their readers take their files whole and say themselves
        // when one gives nothing.
        let tracked = match format {
            Format::WandbRun => Some(wandb_run::read(path, &mut parse, &mut fingerprint)?),
            Format::Mlflow => Some(mlflow::read(src, path, &mut parse, &mut fingerprint)?),
            _ => None,
        };
        if let Some(t) = tracked {
            bytes += t.bytes;
            tracker_status = t.status.or(tracker_status);
            continue;
        }
        let label = path.display().to_string();
        let pushed_before = parse.pushed();
        let malformed_before = parse.malformed;
        if matches!(format, Format::Steplaw | Format::Megatron) {
            // A Megatron log of several trials (its iteration back to its first): one run each.
            parse.split_trials = *format == Format::Megatron && ctx.split_trials;
            split_megatron |= parse.split_trials;
            let mut parser = text::TextParser::new(sel, &mut parse);
            bytes += read::stream_lines(path, text_buf, &mut fingerprint, |lines, at_eof| {
                parser.feed(lines, at_eof, &label, &mut parse)
            })?;
            parser.finish(&mut parse);
            parse.split_trials = false;
        } else {
            let data = read::read_file(path)?;
            bytes += data.len() as u64;
            fingerprint.add_file(&data);
            match format {
                Format::NanoGpt => {
                    read::check_text(path, &data)?;
                    trials.extend(nanogpt::parse(&data, &label, sel, &mut parse, ctx.split_trials));
                }
                // Copies or parts of one export (the same steps again, other step ranges,
                // other charts): their points are joined, not replaced by the restart rule.
                Format::WandbChart => {
                    let mut part = RunParse::default();
                    parse_whole(src, path, *format, &data, sel, &mut part)?;
                    let conflicts = parse.merge_union(part);
                    if conflicts > 0 {
                        parse.notes.push(format!(
                            "{label}: {conflicts} point(s) of run '{}' differ from an earlier export of the same \
                             steps: this later file's values are kept",
                            src.member.as_deref().unwrap_or_default()
                        ));
                    }
                    continue;
                }
                _ => parse_whole(src, path, *format, &data, sel, &mut parse)?,
            }
        }
        // A file that yields nothing fails the run, unless it is a log that has merely not
        // reached its first point (a job that just restarted) beside others.
        let yielded = parse.pushed() > pushed_before || trials.iter().any(|t| t.pushed() > 0);
        let may_be_empty = matches!(format, Format::Steplaw | Format::Megatron | Format::TfEvents);
        let just_started = may_be_empty && src.files.len() > 1 && parse.malformed == malformed_before;
        if !yielded && !just_started {
            return Err(yielded_nothing(*format, src, sel, label, &parse));
        }
        if let Some((side, _)) = lesser.get_mut(&rank).filter(|_| rank > top) {
            std::mem::swap(&mut parse, side);
        }
    }
    if parse.series.is_empty() && src.files.iter().all(|(_, f)| *f == Format::WandbChart) {
        let names: Vec<String> = src.files.iter().map(|(p, _)| p.display().to_string()).collect();
        return Err(Error::parse(
            names.join(", "),
            format!(
                "no values for run '{}' in its W&B chart export(s){}",
                src.member.as_deref().unwrap_or_default(),
                parse
                    .messages
                    .first()
                    .map(|m| format!("; first problem: {m}"))
                    .unwrap_or_default()
            ),
        ));
    }
    // Tagged scalars (a tag a series) learn which tag is the loss and join the LR to it.
    if src.files.iter().any(|(_, f)| {
        source_rank(*f) == top
            && matches!(
                f,
                Format::TfEvents | Format::WandbChart | Format::WandbRun | Format::Mlflow
            )
    }) {
        tfevents::finish(&mut parse, &ctx.opts.metrics);
    }
    for (rank, (mut side, paths)) in lesser {
        if rank == source_rank(Format::TfEvents) {
            tfevents::finish(&mut side, &ctx.opts.metrics);
        }
        let (dropped, points) = parse.merge_lesser(side);
        if !dropped.is_empty() {
            let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            parse.notes.push(format!(
                "{}: {points} point(s) of '{}' not stored: the run's {} log has these series (one series per \
                 quantity; text logs win over TensorBoard, TensorBoard over trainer_state.json, that over JSONL/CSV)",
                files.join(", "),
                dropped.join("', '"),
                src.files
                    .iter()
                    .map(|(_, f)| *f)
                    .find(|f| source_rank(*f) == top)
                    .map_or("", Format::name),
            ));
        }
    }
    // The sidecar config is part of what the run is made of.
    if let Some(side) = config::sidecar_path(&sidecar_dirs(src)) {
        fingerprint.add_file(&std::fs::read(&side).map_err(|e| Error::io(&side, e))?);
    }
    let fingerprint = fingerprint.finish() + &ctx.options_tag;
    if !ctx.opts.force && previous.is_some_and(|r| r.fingerprint == fingerprint) && trials.len() == trials_before.len()
    {
        return Ok(unchanged(files));
    }
    if split_megatron {
        let label = src
            .files
            .first()
            .map(|(p, _)| p.display().to_string())
            .unwrap_or_default();
        trials.extend(series::take_trials(&mut parse, &label));
    }
    let mut out = Vec::with_capacity(1 + trials.len());
    let n_trials = trials.len();
    let mut first = finish_run(
        ctx,
        src,
        run_id,
        (src.key.clone(), src.name.clone()),
        parse,
        fingerprint.clone(),
        files.clone(),
        bytes,
    )?;
    // A run its tracker saw crash, fail or still running is incomplete, unless diverged.
    if let Some(t) = tracker_status.filter(|_| first.record.status == crate::model::status::COMPLETE) {
        first.record.status = t.to_string();
    }
    out.push(Outcome::Parsed(Box::new(first)));
    for (i, trial) in trials.into_iter().enumerate() {
        let k = i + 2;
        let key = trial_key(&src.key, k);
        let name = format!("{}#{k}", src.name);
        let id = run_id_for(&key);
        let record = finish_run(
            ctx,
            src,
            id,
            (key, name),
            trial,
            format!("{fingerprint}#{k}"),
            files.clone(),
            0,
        );
        out.push(match record {
            Ok(p) => Outcome::Parsed(Box::new(p)),
            Err(e) => Outcome::Failed {
                source: trial_key(&src.key, k),
                reason: e.to_string(),
            },
        });
    }
    // A log that held more trials before (rewritten since): the stale trials go.
    out.extend(
        trials_before
            .iter()
            .skip(n_trials)
            .map(|&run_id| Outcome::Removed { run_id }),
    );
    Ok(out)
}

/// One run's record and series from what its files gave.
#[allow(clippy::too_many_arguments)]
fn finish_run(
    ctx: &Context,
    src: &RunSource,
    run_id: RunId,
    (key, name): (String, String),
    mut parse: RunParse,
    fingerprint: String,
    files: Vec<FileStat>,
    bytes: u64,
) -> Result<ParsedRun> {
    // A run logged without its training loss (an eval-only export) is kept for its other
    // series; its status is judged on the validation loss, or else on its first series.
    let Some(loss) = [LOSS, VAL_LOSS]
        .iter()
        .find_map(|m| parse.series.get(*m))
        .or_else(|| parse.series.values().next())
        .map(|b| &b.series)
    else {
        return Err(Error::parse(key, "no values in this run's logs"));
    };
    let has_train_loss = loss.metric == LOSS;

    // Configuration: the log (its header, then its own lines) < the name < the sidecar file
    // < the user's overrides.
    let mut config = std::mem::take(&mut parse.config);
    config.merge_from(&RunConfig {
        steps: parse.planned_steps,
        bs: parse.batch_size,
        ..Default::default()
    });
    config.merge_from(&ctx.template.read(&src.name)?);
    // The sidecar beside the run, else beside one of its files (a HF checkpoint's config.json).
    for dir in sidecar_dirs(src) {
        if let Some((side, _)) = config::read_sidecar(dir)? {
            config.merge_from(&side);
            break;
        }
    }
    config.merge_from(&ctx.overrides);
    config
        .derive(ctx.opts.seq_len)
        .map_err(|e| Error::parse(key.clone(), e.to_string()))?;

    // Divergence is judged on losses only: an eval-only run judged on its accuracy (which
    // rises) is complete or incomplete, never "diverged".
    let loss_like = loss.metric == LOSS || loss.metric == VAL_LOSS || loss.metric.contains("loss");
    let status = if loss_like {
        if let Some(v) = loss.values.iter().find(|v| **v < 0.0) {
            parse.notes.push(format!(
                "{key}: its loss '{}' goes negative ({v}): no cross-entropy, the run is marked diverged \
                 (left out of the analysis; --metric names another series)",
                loss.metric
            ));
        }
        config::run_status(loss, config.steps)
    } else {
        config::completion_status(loss, config.steps)
    }
    .to_string();
    let final_step = loss.steps.last().copied();
    let final_loss = if has_train_loss {
        loss.values.iter().rev().find(|v| v.is_finite()).copied()
    } else {
        None
    };
    let replaced = parse.replaced();
    let mut series: Vec<Series> = parse.series.into_values().map(|b| b.series).collect();
    fill_tokens(&mut series, parse.tokens_are_samples, &config);
    let n_points = series.iter().map(|s| s.len() as u64).sum();
    let record = RunRecord {
        run_id,
        name,
        source: key,
        format: src.files[0].1.name().to_string(),
        fingerprint,
        config,
        n_points,
        final_step,
        final_loss,
        smooth_loss: None,
        status,
        ingested_at_us: now_us(),
        n_malformed: parse.malformed,
        segment: None,
        files,
    };
    Ok(ParsedRun {
        record,
        series,
        messages: parse.messages,
        notes: parse.notes,
        replaced,
        has_train_loss,
        bytes,
    })
}

/// Parse one file read whole into `parse`.
fn parse_whole(
    src: &RunSource,
    path: &std::path::Path,
    format: Format,
    data: &[u8],
    sel: &MetricSelection,
    parse: &mut RunParse,
) -> Result<()> {
    let label = path.display().to_string();
    if format == Format::TfEvents {
        // Binary: only emptiness is checked here (a writer that has not flushed yet).
        if data.is_empty() && src.files.len() == 1 {
            return Err(Error::parse(label, "empty file"));
        }
    } else {
        read::check_text(path, data)?;
    }
    match format {
        Format::Steplaw | Format::Megatron => text::parse(data, &label, sel, parse),
        // T5X's `inference_eval/<task>-metrics.jsonl`: the run's evaluations, every metric kept.
        Format::Jsonl if discover::inference_eval_task(path).is_some() => {
            let task = discover::inference_eval_task(path).unwrap_or_default();
            tabular::parse_jsonl_metrics(data, &label, &format!("{}/{task}/", discover::INFERENCE_EVAL), parse)
        }
        Format::Jsonl => tabular::parse_jsonl(data, &label, sel, parse),
        Format::Csv => tabular::parse_csv(data, &label, sel, parse),
        // (parse_run reads these itself, keeping a log's trials apart)
        Format::NanoGpt => {
            nanogpt::parse(data, &label, sel, parse, false);
        }
        Format::HfTrainer => hf::parse(data, &label, sel, parse),
        Format::WandbChart => match &src.member {
            Some(run) => wandb::parse(data, &label, run, sel, parse),
            None => {
                return Err(Error::parse(
                    label,
                    "not a W&B chart export (a 'Step' column, then '<run> - <metric>' columns)",
                ))
            }
        },
        Format::TfEvents => {
            let rel = path
                .parent()
                .and_then(|p| p.strip_prefix(&src.dir).ok())
                .unwrap_or(std::path::Path::new(""));
            let dirs: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
            tfevents::parse(data, &label, &tfevents::prefix_for(&dirs), parse)
        }
        // Read by their own readers (see `parse_run`).
        Format::WandbRun | Format::Mlflow => {
            return Err(Error::Internal(format!(
                "{label}: {} read as a text file",
                format.name()
            )))
        }
    }
    Ok(())
}

/// Tokens seen at each point: consumed samples x seq_len where the log counts samples,
/// else step x batch tokens where the batch is known; the log's own token counts stay.
fn fill_tokens(series: &mut [Series], tokens_are_samples: bool, config: &RunConfig) {
    for s in series {
        if s.tokens.len() == s.len() && !s.tokens.is_empty() {
            if tokens_are_samples {
                let seq = config.seq_len.unwrap_or(crate::model::DEFAULT_SEQ_LEN);
                s.tokens.iter_mut().filter(|t| **t >= 0).for_each(|t| *t *= seq);
            }
        } else if let Some(bt) = config.bs_tokens {
            s.tokens.clear();
            s.tokens.extend(s.steps.iter().map(|&st| st * bt));
        } else {
            s.tokens.clear();
        }
    }
}

fn progress_bar(show: bool, n: usize) -> indicatif::ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(n as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} ingest [{bar:30}] {pos}/{len} runs {msg} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// Whether a run's source (a path, or `path#member` / `path#k` for a run inside a file or a
/// trial) is still there.
fn source_exists(source: &str) -> bool {
    std::path::Path::new(source).exists()
        || source
            .rsplit_once('#')
            .is_some_and(|(p, _)| std::path::Path::new(p).exists())
}

/// Moved runs, (stored run id -> the new run's id): each new run (not in `base`) whose
/// fingerprint is that of a stored run whose source no longer exists (one stored run each).
fn match_moved(
    base: &[RunRecord],
    changed: &HashMap<RunId, RunRecord>,
    removed: &std::collections::HashSet<RunId>,
) -> HashMap<RunId, RunId> {
    let known: std::collections::HashSet<RunId> = base.iter().map(|r| r.run_id).collect();
    let mut new: Vec<&RunRecord> = changed.values().filter(|r| !known.contains(&r.run_id)).collect();
    if new.is_empty() {
        return HashMap::new();
    }
    new.sort_by(|a, b| a.source.cmp(&b.source));
    let mut gone: HashMap<&str, Vec<RunId>> = HashMap::new();
    for r in base.iter().rev() {
        if !removed.contains(&r.run_id) && !changed.contains_key(&r.run_id) && !source_exists(&r.source) {
            gone.entry(r.fingerprint.as_str()).or_default().push(r.run_id);
        }
    }
    new.iter()
        .filter_map(|r| {
            let old = gone.get_mut(r.fingerprint.as_str())?.pop()?;
            Some((old, r.run_id))
        })
        .collect()
}

/// Ingest every run found under `paths` into `store`.
pub fn ingest(store: &Store, paths: &[PathBuf], opts: &IngestOptions) -> Result<IngestReport> {
    let t0 = Instant::now();
    let overrides = RunConfig::overrides(&opts.set, opts.recipe.as_deref())?;
    let template = NameTemplate::parse(opts.name_template.as_deref())?;
    let discover::Discovery {
        runs: sources,
        skipped: skipped_files,
    } = discover::discover(paths, opts.format)?;

    let tag = options_tag(opts, &overrides);
    // Parse and write segments without the lock (a slow parse never blocks other writers);
    // the lock is taken to commit, over whatever version is newest then (see Store::draft).
    // A store locked now past `wait` is refused before the parse, not after it.
    store.wait_for_lock(opts.wait)?;
    let mut tx = store.draft()?;
    let base_runs = tx.base.runs.clone();
    let ctx = Context {
        opts,
        template,
        overrides,
        existing: base_runs.iter().map(|r| (r.run_id, r)).collect(),
        split_trials: opts.restarts == Restarts::Split,
        options_tag: tag,
    };
    let mut report = IngestReport {
        version: tx.base.version,
        skipped_files,
        ..Default::default()
    };
    let mut removed: std::collections::HashSet<RunId> = std::collections::HashSet::new();
    let (mut no_train_loss, mut unknown_nd) = (Vec::new(), 0usize);
    let mut changed: HashMap<RunId, RunRecord> = HashMap::new();
    let mut restat: HashMap<RunId, Vec<FileStat>> = HashMap::new();
    let pb = progress_bar(opts.progress, sources.len());

    // One worker per core takes the next run, parses it and writes its points into a
    // segment of its own (encoding Parquet is a third of the work: it must not queue behind
    // one writer). This thread only keeps the books. The channel is bounded so outcomes never
    // pile up; series are dropped as soon as they are written.
    let workers = rayon::current_num_threads().clamp(1, sources.len().max(1));
    let next = AtomicUsize::new(0);
    let (tx_out, rx) = sync_channel::<Outcome>(4 * workers);
    let written: Result<Vec<SegmentEntry>> = std::thread::scope(|scope| {
        let (ctx, sources, next) = (&ctx, &sources, &next);
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let sender = tx_out.clone();
                let writer = tx.segment_writer(w);
                scope.spawn(move || -> Result<Vec<SegmentEntry>> {
                    let mut writer = writer?;
                    let mut text_buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(src) = sources.get(i) else { break };
                        for mut outcome in process(ctx, src, &mut text_buf) {
                            if let Outcome::Parsed(p) = &mut outcome {
                                p.record.segment = Some(writer.add_run(p.record.run_id, &p.series)?);
                                series::recycle(std::mem::take(&mut p.series));
                            }
                            if sender.send(outcome).is_err() {
                                break;
                            }
                        }
                    }
                    writer.finish()
                })
            })
            .collect();
        drop(tx_out);
        for outcome in rx {
            if !matches!(outcome, Outcome::Removed { .. }) {
                report.runs_found += 1;
                pb.inc(1);
            }
            match outcome {
                Outcome::Unchanged { run_id, files } => {
                    report.unchanged += 1;
                    restat.insert(run_id, files);
                }
                Outcome::Failed { source, reason } => report.failed.push((source, reason)),
                Outcome::Removed { run_id } => {
                    removed.insert(run_id);
                }
                Outcome::Parsed(p) => {
                    let ParsedRun {
                        record,
                        messages,
                        notes,
                        replaced,
                        has_train_loss,
                        bytes,
                        ..
                    } = *p;
                    report.bytes_read += bytes;
                    report.points += record.n_points;
                    report.malformed_lines += record.n_malformed;
                    report.replaced_points += replaced;
                    let room = MAX_WARNINGS.saturating_sub(report.warnings.len());
                    report.warnings.extend(messages.into_iter().take(room));
                    let room = MAX_NOTES.saturating_sub(report.notes.len());
                    report.notes.extend(notes.into_iter().take(room));
                    if !has_train_loss {
                        no_train_loss.push(record.name.clone());
                    }
                    if record.config.n_params.is_none() || record.config.tokens.is_none() {
                        unknown_nd += 1;
                    }
                    if ctx.existing.contains_key(&record.run_id) {
                        report.updated += 1;
                    } else {
                        report.added += 1;
                    }
                    changed.insert(record.run_id, record);
                    let secs = t0.elapsed().as_secs_f64().max(1e-9);
                    pb.set_message(format!("{:.0} MB/s", report.bytes_read as f64 / 1e6 / secs));
                }
            }
        }
        let mut segments = Vec::new();
        for h in handles {
            segments.extend(
                h.join()
                    .map_err(|_| Error::Internal("an ingest worker panicked".into()))??,
            );
        }
        Ok(segments)
    });
    pb.finish_and_clear();
    // A full disk: the error names the store and the version it stays at.
    let segments = written.map_err(|e| tx.write_failed(e))?;
    report.failed.sort();
    crate::store::pause_point("ingest-before-commit");
    if report.runs_found == 0 {
        let given: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        report.notes.push(format!(
            "no runs found in {}: looked for Step Law train_log_<k>.txt, Megatron and nanoGPT-style text logs \
             (*.log, *.txt, *.out holding a step and a loss), *.jsonl and *.csv metrics, W&B chart exports, \
             events.out.tfevents.*, trainer_state.json, W&B run folders (run-*.wandb) and MLflow runs{}",
            given.join(", "),
            match report.skipped_files.len() {
                0 => String::new(),
                n => format!("; {n} file(s) passed over (skipped_files)"),
            }
        ));
    }
    if !no_train_loss.is_empty() {
        no_train_loss.sort();
        let n = no_train_loss.len();
        let some: Vec<&str> = no_train_loss.iter().take(3).map(String::as_str).collect();
        let more = if n > 3 { ", ..." } else { "" };
        report.notes.push(format!(
            "{n} run(s) have no training loss ({}{more}): their other series are stored, final_loss is \
             empty and the status is judged on val_loss; --metric val_loss (or another series' name) \
             takes that series as the loss",
            some.join(", ")
        ));
    }
    if unknown_nd > 0 {
        report.notes.push(format!(
            "{unknown_nd} run(s) have no N or no D (neither the log, the name nor a sidecar config gives them): \
             --set N=... --set D=... (or h/ffnh/numl, bs/seq_len/steps) fills them in"
        ));
    }

    let nothing_changed = changed.is_empty()
        && removed.is_empty()
        && restat
            .iter()
            .all(|(id, f)| ctx.existing.get(id).is_some_and(|r| &r.files == f));
    // A new run whose content matches a stored run whose source is gone is that run, moved:
    // it takes the old one's place (its id follows its new source), nothing is added.
    let moved = match_moved(&base_runs, &changed, &removed);
    report.moved = moved.len();
    report.added -= moved.len();
    let refuse = opts.strict && !report.failed.is_empty();
    if refuse || nothing_changed {
        for s in &segments {
            let _ = std::fs::remove_file(store.root().join(&s.file));
        }
    } else {
        // The runs this commit changes: what another writer must not have changed meanwhile.
        let mut touched: std::collections::HashSet<RunId> = changed.keys().copied().collect();
        touched.extend(removed.iter().copied());
        touched.extend(moved.keys().copied());
        touched.extend(
            restat
                .iter()
                .filter(|(id, f)| ctx.existing.get(id).is_some_and(|r| &r.files != *f))
                .map(|(id, _)| *id),
        );
        let mut runs: Vec<RunRecord> = Vec::with_capacity(base_runs.len() + changed.len());
        for r in base_runs.iter().filter(|r| !removed.contains(&r.run_id)) {
            let id = moved.get(&r.run_id).copied().unwrap_or(r.run_id);
            match changed.remove(&id) {
                Some(new) => runs.push(new),
                None => {
                    let mut r = r.clone();
                    if let Some(files) = restat.remove(&r.run_id) {
                        r.files = files; // touched but identical: remember the new stats
                    }
                    runs.push(r);
                }
            }
        }
        let mut added: Vec<RunRecord> = changed.into_values().collect();
        added.sort_by(|a, b| a.source.cmp(&b.source));
        runs.extend(added);
        tx.add_segments(segments);
        if opts.progress {
            if let Err(Error::Locked { holder, .. }) = store.wait_for_lock(Duration::ZERO) {
                let most = crate::store::DRAFT_COMMIT_WAIT.as_secs();
                eprintln!("steplaw-db: waiting for another writer ({holder}) to release the lock, to commit (at most {most} s)");
            }
        }
        let m = tx.commit(runs, &touched, opts.wait)?;
        report.version = m.version;
        report.committed = true;
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}
