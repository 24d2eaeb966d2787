//! Find the runs under the paths a user gives: a run is a directory holding log files (or
//! a log file given on its own).
use std::path::{Path, PathBuf};

use super::tabular;
use super::{hf, nanogpt, text, tfevents, wandb, Format};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct RunSource {
    /// Absolute path of the run's directory (or file): its identity in the store.
    pub key: String,
    pub name: String,
    pub dir: PathBuf,
    pub files: Vec<(PathBuf, Format)>,
    /// The run's name inside files that hold several runs (W&B chart exports).
    pub member: Option<String>,
}

/// `train_log_<k>.txt` -> k (Step Law's fork numbers its log files; the last is the newest).
fn step_law_index(name: &str) -> Option<u64> {
    name.strip_prefix("train_log_")?.strip_suffix(".txt")?.parse().ok()
}

const SNIFF_BYTES: usize = 64 * 1024;

/// The first 64 KiB of a file.
fn head(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(SNIFF_BYTES);
    let _ = std::fs::File::open(path).and_then(|f| f.take(SNIFF_BYTES as u64).read_to_end(&mut buf));
    buf
}

/// The last 64 KiB of a file longer than that (empty otherwise).
fn tail(path: &Path) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    let _ = std::fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        if len > SNIFF_BYTES as u64 {
            f.seek(SeekFrom::Start(len - SNIFF_BYTES as u64))?;
            f.take(SNIFF_BYTES as u64).read_to_end(&mut buf)?;
        }
        Ok(())
    });
    buf
}

/// A text log's kind, from its first and last 64 KiB: nanoGPT-style logs may begin with
/// the script's whole source, so their first log line can lie past the head.
fn sniff_text(path: &Path) -> Option<Format> {
    let (h, t) = (head(path), tail(path));
    if text::sniff(&h) || text::sniff(&t) {
        Some(Format::Megatron)
    } else if nanogpt::sniff(&h) || nanogpt::sniff(&t) {
        Some(Format::NanoGpt)
    } else {
        None
    }
}

/// The format of a file, from its name (and, for generic text logs and CSV, its content).
pub fn classify(path: &Path, forced: Option<Format>) -> Option<Format> {
    let name = path.file_name()?.to_str()?;
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let is_text = matches!(ext.as_str(), "log" | "txt" | "out");
    let by_name = if step_law_index(name).is_some() {
        Some(Format::Steplaw)
    } else if name.starts_with("events.out.tfevents.") {
        Some(Format::TfEvents)
    } else if name == hf::FILE_NAME {
        Some(Format::HfTrainer)
    } else {
        match ext.as_str() {
            "jsonl" => Some(Format::Jsonl),
            "csv" if forced.is_none() && wandb::runs_in(&head(path)).is_some() => Some(Format::WandbChart),
            "csv" => Some(Format::Csv),
            _ if is_text => None, // decided below
            _ => return None,
        }
    };
    match (forced, by_name) {
        (Some(f @ (Format::Steplaw | Format::Megatron | Format::NanoGpt)), _) if is_text => Some(f),
        (Some(f @ (Format::Csv | Format::WandbChart)), _) if ext == "csv" => Some(f),
        (Some(f), Some(g)) if f == g => Some(f),
        (Some(_), _) => None,
        (None, Some(g)) => Some(g),
        (None, None) => sniff_text(path),
    }
}

fn list_files(
    dir: &Path,
    forced: Option<Format>,
    files: &mut Vec<(PathBuf, Format)>,
    keep: impl Fn(Format) -> bool,
) -> Result<()> {
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for f in listing.flatten() {
        let p = f.path();
        if f.file_type().is_ok_and(|t| t.is_file()) {
            if let Some(fmt) = classify(&p, forced).filter(|f| keep(*f)) {
                files.push((p, fmt));
            }
        }
    }
    Ok(())
}

fn dir_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

/// Is `dir` one whose event files its parent run claims (see [`part_dirs`])?
fn is_part_of_parent(dir: &Path) -> bool {
    tfevents::is_part_dir(dir_name(dir)) || dir.parent().is_some_and(|p| dir_name(p) == "training_eval")
}

/// The sub-directories of a run directory whose event files are the run's: `train/`,
/// `eval/` and the like, and `training_eval/<task>/`.
fn part_dirs(dir: &Path) -> Vec<PathBuf> {
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        v
    };
    let mut parts = Vec::new();
    for sub in subdirs(dir).into_iter().filter(|s| tfevents::is_part_dir(dir_name(s))) {
        if dir_name(&sub) == "training_eval" {
            parts.extend(subdirs(&sub));
        } else {
            parts.push(sub);
        }
    }
    parts
}

/// `checkpoint-<n>` -> n (HF Trainer checkpoints).
fn checkpoint_index(dir: &Path) -> Option<u64> {
    dir_name(dir).strip_prefix("checkpoint-")?.parse().ok()
}

/// A HF Trainer output directory keeps one state per `checkpoint-<n>/` (each holds the
/// whole log history so far) and maybe its own at the end: the run reads only the newest
/// (by modification time) of its own and the latest checkpoint's.
fn pick_trainer_state(dir: &Path, files: &mut Vec<(PathBuf, Format)>) {
    let latest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(hf::FILE_NAME).is_file())
        .filter_map(|p| checkpoint_index(&p).map(|n| (n, p)))
        .max();
    let Some((_, ckpt)) = latest else { return };
    let candidate = ckpt.join(hf::FILE_NAME);
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match files.iter().position(|(_, f)| *f == Format::HfTrainer) {
        Some(i) if mtime(&files[i].0) >= mtime(&candidate) => {}
        Some(i) => files[i].0 = candidate,
        None => files.push((candidate, Format::HfTrainer)),
    }
}

/// Split a directory's files into its runs: W&B chart exports hold one run per W&B run
/// name (a run's columns in several exports of one directory make one run); the other
/// files make the directory's own run.
fn split_runs(key: &str, dir: &Path, dir_name: &str, files: Vec<(PathBuf, Format)>, runs: &mut Vec<RunSource>) {
    let (charts, own): (Vec<_>, Vec<_>) = files.into_iter().partition(|(_, f)| *f == Format::WandbChart);
    let mut members: Vec<(String, Vec<(PathBuf, Format)>)> = Vec::new();
    for (path, format) in charts {
        match wandb::runs_in(&head(&path)) {
            Some(names) => {
                for name in names {
                    match members.iter_mut().find(|(m, _)| *m == name) {
                        Some((_, fs)) => fs.push((path.clone(), format)),
                        None => members.push((name, vec![(path.clone(), format)])),
                    }
                }
            }
            // Forced on a file that is not one: its run fails with the reason.
            None => runs.push(RunSource {
                key: path.to_string_lossy().into_owned(),
                name: dir_name.to_string(),
                dir: dir.to_path_buf(),
                files: vec![(path, format)],
                member: None,
            }),
        }
    }
    // Several metric tables that each hold a training loss are several runs (one export per
    // run, as W&B history exports and many sweeps keep them): one run per file, named by it.
    // A single one (with, say, an eval-only table beside it) is the directory's run.
    let is_whole_run = |(p, f): &(PathBuf, Format)| {
        matches!(f, Format::Csv | Format::Jsonl) && tabular::has_training_loss(&head(p), *f == Format::Jsonl)
    };
    let (tables, mut own): (Vec<_>, Vec<_>) = own.into_iter().partition(is_whole_run);
    if tables.len() >= 2 {
        for (path, format) in tables {
            let stem = path.file_stem().and_then(|n| n.to_str()).unwrap_or("run");
            let name = format!("{dir_name}/{stem}");
            let key = path.to_string_lossy().into_owned();
            runs.push(RunSource {
                key,
                name,
                dir: dir.to_path_buf(),
                files: vec![(path, format)],
                member: None,
            });
        }
    } else {
        own.extend(tables);
        order_files(&mut own);
    }
    if !own.is_empty() {
        runs.push(RunSource {
            key: key.to_string(),
            name: dir_name.to_string(),
            dir: dir.to_path_buf(),
            files: own,
            member: None,
        });
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    for (member, files) in members {
        runs.push(RunSource {
            key: format!("{key}#{member}"),
            name: member.clone(),
            dir: dir.to_path_buf(),
            files,
            member: Some(member),
        });
    }
}

fn order_files(files: &mut [(PathBuf, Format)]) {
    files.sort_by_key(|(p, _)| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        (step_law_index(&name).unwrap_or(u64::MAX), name)
    });
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// All runs under `paths`, in a stable order. A path that does not exist is an error.
pub fn discover(paths: &[PathBuf], forced: Option<Format>) -> Result<Vec<RunSource>> {
    let mut runs = Vec::new();
    for root in paths {
        if !root.exists() {
            return Err(Error::Invalid(format!("{}: no such file or directory", root.display())));
        }
        if root.is_file() {
            let format = classify(root, forced).or(forced).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: not a log file of a known format (use --format to force one)",
                    root.display()
                ))
            })?;
            let abs = absolute(root);
            let name = abs.file_stem().and_then(|n| n.to_str()).unwrap_or("run").to_string();
            let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
            split_runs(
                &abs.to_string_lossy(),
                &dir,
                &name,
                vec![(abs.clone(), format)],
                &mut runs,
            );
            continue;
        }
        let walker = walkdir::WalkDir::new(root)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let hidden = e.depth() > 0 && e.file_name().to_str().is_some_and(|n| n.starts_with('.'));
                // Never read a store (ours or another) as logs.
                let is_store = e.file_type().is_dir() && e.path().join("_manifest").is_dir();
                !hidden && !is_store
            });
        for entry in walker {
            let entry = entry.map_err(|e| Error::Invalid(format!("{}: {e}", root.display())))?;
            if !entry.file_type().is_dir() {
                continue;
            }
            let mut files = Vec::new();
            let folded_away = entry.depth() > 0 && is_part_of_parent(entry.path());
            let is_checkpoint = entry.depth() > 0 && checkpoint_index(entry.path()).is_some();
            // Their parent run claims these.
            let claimed = |fmt| (folded_away && fmt == Format::TfEvents) || (is_checkpoint && fmt == Format::HfTrainer);
            list_files(entry.path(), forced, &mut files, |fmt| !claimed(fmt))?;
            if forced.is_none_or(|f| f == Format::HfTrainer) {
                pick_trainer_state(entry.path(), &mut files);
            }
            // Event files of `train/`, `eval/`, `training_eval/<task>/` ... below a run
            // directory belong to that run (T5X, TF Estimator, Keras write them so).
            for part in part_dirs(entry.path()) {
                list_files(&part, forced, &mut files, |fmt| fmt == Format::TfEvents)?;
            }
            if files.is_empty() {
                continue;
            }
            order_files(&mut files);
            let abs = absolute(entry.path());
            let name = abs.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_string();
            split_runs(&abs.to_string_lossy(), &abs, &name, files, &mut runs);
        }
    }
    runs.dedup_by(|a, b| a.key == b.key);
    Ok(runs)
}
