//! Find the runs under the paths a user gives: a run is a directory holding log files (or
//! a log file given on its own).
use std::path::{Path, PathBuf};

use super::tabular;
use super::{hf, mlflow, nanogpt, text, tfevents, wandb, wandb_run, Format};
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

/// What discovery found: the runs, and the files it passed over with the reason (a file
/// given by name or lying among logs that is no log of a known format).
#[derive(Debug, Default)]
pub struct Discovery {
    pub runs: Vec<RunSource>,
    /// (path, why)
    pub skipped: Vec<(String, String)>,
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
    } else if wandb_run::is_wandb_file(name) {
        Some(Format::WandbRun)
    } else if mlflow::is_mlflow_file(path, name) {
        Some(Format::Mlflow)
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

/// Does the name say "a text log" (so that a file of this name that holds no log lines is
/// worth a word: a README.txt or notes among the logs)?
fn is_text_log_name(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    matches!(ext.to_ascii_lowercase().as_str(), "log" | "txt" | "out")
}

/// Why a text file given or found among logs is not read.
pub fn not_a_log_reason(forced: Option<Format>) -> String {
    match forced {
        Some(f) => format!("not a {} file (--format {})", f.name(), f.name()),
        None => "no log lines of a known format (Megatron, Step Law, nanoGPT-style: a step and a loss) \
                 in its first or last 64 KiB; --format forces one"
            .to_string(),
    }
}

fn list_files(
    dir: &Path,
    forced: Option<Format>,
    files: &mut Vec<(PathBuf, Format)>,
    skipped: Option<&mut Vec<(String, String)>>,
    keep: impl Fn(Format) -> bool,
) -> Result<()> {
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut unplaced = Vec::new();
    for f in listing.flatten() {
        let p = f.path();
        // Symlinked files are followed (metadata of the target).
        if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            match classify(&p, forced) {
                Some(fmt) if keep(fmt) => files.push((p, fmt)),
                Some(_) => {}
                None if is_text_log_name(&p) => unplaced.push(p),
                None => {}
            }
        }
    }
    if let Some(skipped) = skipped {
        unplaced.sort();
        skipped.extend(
            unplaced
                .into_iter()
                .map(|p| (p.to_string_lossy().into_owned(), not_a_log_reason(forced))),
        );
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

/// T5X writes its inference evaluations below the run: `inference_eval/<task>-metrics.jsonl`.
pub const INFERENCE_EVAL: &str = "inference_eval";

/// The task of a T5X inference-evaluation file (`inference_eval/<task>-metrics.jsonl`).
pub fn inference_eval_task(path: &Path) -> Option<&str> {
    if path.parent().map(dir_name) != Some(INFERENCE_EVAL) {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    Some(stem.strip_suffix("-metrics").unwrap_or(stem))
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
    // Trackers' folders: an MLflow run (a file store's, or each of a database's) is a run of
    // its own; a directory holding a W&B run log takes the run's display name (its
    // wandb-summary.json is read only where it is all there is).
    let files = mlflow::split(key, dir, files, runs);
    let (files, display) = wandb_run::split(files);
    let dir_name = display.as_deref().unwrap_or(dir_name);
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
    // A single one (with, say, an eval-only table beside it) is the directory's run. So are
    // several nanoGPT-style logs (a records folder of `<uuid>.txt`, one log a run: a log
    // that resumed writes on in the same file).
    let is_whole_run = |(p, f): &(PathBuf, Format)| {
        matches!(f, Format::Csv | Format::Jsonl) && tabular::has_training_loss(&head(p), *f == Format::Jsonl)
    };
    let (tables, own): (Vec<_>, Vec<_>) = own.into_iter().partition(is_whole_run);
    let (logs, mut own): (Vec<_>, Vec<_>) = own.into_iter().partition(|(_, f)| *f == Format::NanoGpt);
    for group in [tables, logs] {
        if group.len() >= 2 {
            for (path, format) in group {
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
            own.extend(group);
        }
    }
    order_files(&mut own);
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

/// All runs under `paths`, in a stable order, and the files passed over. A path that does not
/// exist is an error; a file given by name that is no log of a known format is passed over
/// and counted, as are text files among logs. Symlinked directories and files are followed
/// (a link back to a directory above is passed over, named).
pub fn discover(paths: &[PathBuf], forced: Option<Format>) -> Result<Discovery> {
    let mut found = Discovery::default();
    let runs = &mut found.runs;
    let skipped = &mut found.skipped;
    // W&B chart exports given by name are grouped by directory, as a directory walk groups
    // them: a run's columns in several exports are one run.
    let mut charts: Vec<(PathBuf, Vec<(PathBuf, Format)>)> = Vec::new();
    for root in paths {
        if !root.exists() {
            return Err(Error::Invalid(format!("{}: no such file or directory", root.display())));
        }
        if root.is_file() {
            let Some(format) = classify(root, forced).or(forced) else {
                skipped.push((root.display().to_string(), not_a_log_reason(forced)));
                continue;
            };
            let abs = absolute(root);
            let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
            if format == Format::WandbChart {
                match charts.iter_mut().find(|(d, _)| *d == dir) {
                    Some((_, fs)) => fs.push((abs, format)),
                    None => charts.push((dir, vec![(abs, format)])),
                }
                continue;
            }
            let name = abs.file_stem().and_then(|n| n.to_str()).unwrap_or("run").to_string();
            split_runs(&abs.to_string_lossy(), &dir, &name, vec![(abs.clone(), format)], runs);
            continue;
        }
        // From the absolute path: `runs`, `./runs` and `/abs/runs` give the same file paths,
        // so the runs' stats (and the store's records) are the same however the root is named.
        let walker = walkdir::WalkDir::new(absolute(root))
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let hidden = e.depth() > 0 && e.file_name().to_str().is_some_and(|n| n.starts_with('.'));
                // Never read a store (ours or another) as logs.
                let is_store = e.file_type().is_dir() && e.path().join("_manifest").is_dir();
                // A W&B run directory's files/, logs/, tmp/ and the latest-run link.
                let tracker_own = e.depth() > 0 && e.file_type().is_dir() && wandb_run::is_internal_dir(e.path());
                !hidden && !is_store && !tracker_own
            });
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                // A symlink loop or an unreadable directory: say so, read the rest.
                Err(e) => {
                    let path = e
                        .path()
                        .map_or_else(|| root.display().to_string(), |p| p.display().to_string());
                    let why = if e.loop_ancestor().is_some() {
                        "a symlink to a directory above it (a cycle): not followed".to_string()
                    } else {
                        e.to_string()
                    };
                    skipped.push((path, why));
                    continue;
                }
            };
            if !entry.file_type().is_dir() {
                continue;
            }
            let mut files = Vec::new();
            let folded_away = entry.depth() > 0 && is_part_of_parent(entry.path());
            let is_checkpoint = entry.depth() > 0 && checkpoint_index(entry.path()).is_some();
            let is_inference_eval = entry.depth() > 0 && dir_name(entry.path()) == INFERENCE_EVAL;
            // Their parent run claims these.
            let claimed = |fmt| {
                (folded_away && fmt == Format::TfEvents)
                    || (is_checkpoint && fmt == Format::HfTrainer)
                    || (is_inference_eval && fmt == Format::Jsonl)
            };
            let mut unplaced = Vec::new();
            list_files(entry.path(), forced, &mut files, Some(&mut unplaced), |fmt| {
                !claimed(fmt)
            })?;
            if forced.is_none_or(|f| f == Format::HfTrainer) {
                pick_trainer_state(entry.path(), &mut files);
            }
            // Event files of `train/`, `eval/`, `training_eval/<task>/` ... below a run
            // directory belong to that run (T5X, TF Estimator, Keras write them so).
            for part in part_dirs(entry.path()) {
                list_files(&part, forced, &mut files, None, |fmt| fmt == Format::TfEvents)?;
            }
            // ... and so do T5X's inference evaluations, beside its event files.
            let inference = entry.path().join(INFERENCE_EVAL);
            if inference.is_dir() {
                list_files(&inference, forced, &mut files, None, |fmt| fmt == Format::Jsonl)?;
            }
            skipped.extend(unplaced);
            if files.is_empty() {
                continue;
            }
            order_files(&mut files);
            let abs = absolute(entry.path());
            let name = abs.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_string();
            split_runs(&abs.to_string_lossy(), &abs, &name, files, runs);
        }
    }
    for (dir, mut files) in charts {
        order_files(&mut files);
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_string();
        split_runs(&dir.to_string_lossy(), &dir, &name, files, runs);
    }
    // A run reached twice (a directory and a file in it, or through a link) is read once.
    let mut seen = std::collections::HashSet::new();
    runs.retain(|r| seen.insert(r.key.clone()));
    let mut seen = std::collections::HashSet::new();
    skipped.retain(|(p, _)| seen.insert(p.clone()));
    // A resumed W&B run (a new run directory with the same id) is one run.
    wandb_run::join_resumed(&mut found.runs);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "print0(f\"step:{step}/{n} val_loss:{v:.4f}\")\nstep:0/100 val_loss:10.8258 train_time:0ms\n";
    const CHART: &str = "\"Step\",\"run-a - train/loss\",\"run-a - train/loss__MIN\",\"run-a - train/loss__MAX\"\n\"1\",\"3\",\"3\",\"3\"";

    fn names(d: &Discovery) -> Vec<(&str, usize)> {
        d.runs.iter().map(|r| (r.name.as_str(), r.files.len())).collect()
    }

    #[test]
    fn a_records_folder_is_one_run_per_log_and_its_readme_is_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let rec = tmp.path().join("rec");
        std::fs::create_dir(&rec).unwrap();
        for id in ["b-2", "a-1", "c-3"] {
            std::fs::write(rec.join(format!("{id}.txt")), LOG).unwrap();
        }
        std::fs::write(rec.join("README.txt"), "# record\nlr 0.0036\n").unwrap();
        std::fs::write(rec.join("train_gpt.py"), "loss = 1\n").unwrap(); // not a text log name: silent
        let d = discover(&[tmp.path().to_path_buf()], None).unwrap();
        assert_eq!(names(&d), vec![("rec/a-1", 1), ("rec/b-2", 1), ("rec/c-3", 1)]);
        assert!(d.runs.iter().all(|r| r.key.ends_with(".txt")));
        let [(path, why)] = &d.skipped[..] else {
            panic!("{:?}", d.skipped)
        };
        assert!(
            path.ends_with("README.txt") && why.contains("no log lines"),
            "{path}: {why}"
        );
        // one log (and its README) is the directory's run
        for id in ["b-2", "c-3"] {
            std::fs::remove_file(rec.join(format!("{id}.txt"))).unwrap();
        }
        let d = discover(&[tmp.path().to_path_buf()], None).unwrap();
        assert_eq!(names(&d), vec![("rec", 1)]);
        assert_eq!(d.skipped.len(), 1);
    }

    #[test]
    fn files_given_by_name_skip_non_logs_and_group_chart_exports() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        std::fs::write(p.join("a.txt"), LOG).unwrap();
        std::fs::write(p.join("notes.txt"), "nothing\n").unwrap();
        std::fs::write(p.join("wandb_export_1.csv"), CHART).unwrap();
        std::fs::write(p.join("wandb_export_2.csv"), CHART).unwrap();
        let mut given: Vec<PathBuf> = ["notes.txt", "a.txt", "wandb_export_2.csv", "wandb_export_1.csv"]
            .iter()
            .map(|n| p.join(n))
            .collect();
        given.push(p.join("a.txt")); // twice: read once
        let d = discover(&given, None).unwrap();
        assert_eq!(names(&d), vec![("a", 1), ("run-a", 2)]);
        let dir = absolute(p);
        assert_eq!(d.runs[1].key, format!("{}#run-a", dir.display()));
        // the same key as a walk of the directory gives it
        let walked = discover(&[p.to_path_buf()], None).unwrap();
        assert!(walked.runs.iter().any(|r| r.key == d.runs[1].key && r.files.len() == 2));
        assert_eq!(d.skipped.len(), 1);
        assert!(d.skipped[0].0.ends_with("notes.txt"));
        // a path that does not exist is still an error
        assert!(discover(&[p.join("missing")], None).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_runs_are_followed_and_a_cycle_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("store-elsewhere").join("run1");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("log.txt"), LOG).unwrap();
        let runs = tmp.path().join("runs");
        std::fs::create_dir(&runs).unwrap();
        std::os::unix::fs::symlink(&real, runs.join("run1")).unwrap();
        std::os::unix::fs::symlink(&runs, runs.join("loop")).unwrap();
        let d = discover(&[runs], None).unwrap();
        assert_eq!(names(&d), vec![("run1", 1)]);
        assert!(
            d.skipped
                .iter()
                .any(|(p, why)| p.ends_with("loop") && why.contains("cycle")),
            "{:?}",
            d.skipped
        );
    }
}
