//! Find the runs under the paths a user gives: a run is a directory holding log files (or
//! a log file given on its own).
use std::path::{Path, PathBuf};

use super::{text, tfevents, Format};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct RunSource {
    /// Absolute path of the run's directory (or file): its identity in the store.
    pub key: String,
    pub name: String,
    pub dir: PathBuf,
    pub files: Vec<(PathBuf, Format)>,
}

/// `train_log_<k>.txt` -> k (Step Law's fork numbers its log files; the last is the newest).
fn step_law_index(name: &str) -> Option<u64> {
    name.strip_prefix("train_log_")?.strip_suffix(".txt")?.parse().ok()
}

fn sniff_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = vec![0u8; 64 * 1024];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    text::sniff(&head[..n])
}

/// The format of a file, from its name (and, for generic text logs, its first 64 KiB).
pub fn classify(path: &Path, forced: Option<Format>) -> Option<Format> {
    let name = path.file_name()?.to_str()?;
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let by_name = if step_law_index(name).is_some() {
        Some(Format::Steplaw)
    } else if name.starts_with("events.out.tfevents.") {
        Some(Format::TfEvents)
    } else {
        match ext.as_str() {
            "jsonl" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            "log" | "txt" | "out" => None, // decided below
            _ => return None,
        }
    };
    match (forced, by_name) {
        (Some(f @ (Format::Steplaw | Format::Megatron)), _) if matches!(ext.as_str(), "log" | "txt" | "out") => Some(f),
        (Some(f), Some(g)) if f == g => Some(f),
        (Some(_), _) => None,
        (None, Some(g)) => Some(g),
        (None, None) => sniff_file(path).then_some(Format::Megatron),
    }
}

fn list_files(dir: &Path, forced: Option<Format>, files: &mut Vec<(PathBuf, Format)>, keep: impl Fn(Format) -> bool) -> Result<()> {
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
        let mut v: Vec<PathBuf> = std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
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
                Error::Invalid(format!("{}: not a log file of a known format (use --format to force one)", root.display()))
            })?;
            let abs = absolute(root);
            let name = abs.file_stem().and_then(|n| n.to_str()).unwrap_or("run").to_string();
            let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
            runs.push(RunSource { key: abs.to_string_lossy().into_owned(), name, dir, files: vec![(abs, format)] });
            continue;
        }
        let walker = walkdir::WalkDir::new(root).sort_by_file_name().into_iter().filter_entry(|e| {
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
            list_files(entry.path(), forced, &mut files, |fmt| !(folded_away && fmt == Format::TfEvents))?;
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
            runs.push(RunSource { key: abs.to_string_lossy().into_owned(), name, dir: abs, files });
        }
    }
    runs.dedup_by(|a, b| a.key == b.key);
    Ok(runs)
}
