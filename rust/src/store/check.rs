//! Integrity: the commit's check that every written row is accounted for, checksums verified
//! when a reader first opens a file, and `Store::check`, which says what is damaged, which runs
//! it affects and how to get them back.
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use parquet::data_type::ByteArray;

use super::manifest::{self, hex128, Manifest, SegmentEntry};
use super::points::{self, RunTally, Tally};
use super::table::{self, MappedFile, ParquetFile, Values};
use super::{Store, MANIFEST_DIR};
use crate::error::{Error, Result};
use crate::model::{RunId, RunRecord};

/// The metrics whose last step a run's `final_step` is, in order of preference (as ingest
/// picks the series it reads the final step from: the training loss, else the validation loss).
const FINAL_METRICS: [&str; 2] = ["loss", "val_loss"];

/// Whether a run whose series end at `tally`'s last steps may have `final_step`.
fn final_step_matches(tally: &RunTally, final_step: Option<i64>) -> bool {
    let Some(step) = final_step else {
        return true;
    };
    match FINAL_METRICS.iter().find_map(|m| tally.last_step_of(m)) {
        Some(last) => last == step,
        // Another series stands for the loss (the first by name): one of them ends there.
        None => tally.last_steps.iter().any(|(_, s)| *s == step),
    }
}

fn describe(r: &RunRecord) -> String {
    format!("run {} ({})", r.name, r.source)
}

/// Refuse a commit whose manifest does not account for every row written in the transaction:
/// a run's rows must all be in the segment its record names, as many as its `n_points`, and
/// its loss series must end at its `final_step`. `segments` are the new version's, `new` the
/// ones written in this transaction (with what their writers put in them).
pub(super) fn check_commit(runs: &[RunRecord], segments: &[SegmentEntry], new: &[SegmentEntry]) -> Result<()> {
    let mut problems = manifest_problems(runs, segments);
    let mut written: HashMap<RunId, (&str, &RunTally)> = HashMap::new();
    for seg in new {
        for (id, tally) in &seg.written {
            if tally.rows == 0 {
                continue;
            }
            if let Some((other, _)) = written.insert(*id, (&seg.file, tally)) {
                problems.push(format!("run id {id} has rows in both {other} and {}", seg.file));
            }
        }
    }
    let records: HashMap<RunId, &RunRecord> = runs.iter().map(|r| (r.run_id, r)).collect();
    for (id, (file, tally)) in &written {
        let Some(r) = records.get(id) else {
            problems.push(format!(
                "{} rows of run id {id} were written to {file}, and the version has no such run",
                tally.rows
            ));
            continue;
        };
        if r.segment.as_deref() != Some(*file) {
            problems.push(format!(
                "{}: {} rows written to {file}, but its record names {}",
                describe(r),
                tally.rows,
                r.segment.as_deref().unwrap_or("no segment")
            ));
        } else if tally.rows != r.n_points {
            problems.push(format!(
                "{}: {} rows written to {file}, n_points says {}",
                describe(r),
                tally.rows,
                r.n_points
            ));
        }
        if !final_step_matches(tally, r.final_step) {
            problems.push(format!(
                "{}: final_step {:?}, but its series end at {:?}",
                describe(r),
                r.final_step,
                tally
                    .last_steps
                    .iter()
                    .map(|(m, s)| (String::from_utf8_lossy(m.data()).into_owned(), *s))
                    .collect::<Vec<_>>()
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort();
    let more = problems.len().saturating_sub(10);
    problems.truncate(10);
    let more = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    Err(Error::Internal(format!(
        "commit refused: the new version would not account for every point written: {}{more}",
        problems.join("; ")
    )))
}

/// What a manifest says that does not add up: a run whose record names a segment the version
/// does not have or that does not list it, a run with points and no segment, per-run row
/// counts that disagree with `n_points` or with the segment's total.
fn manifest_problems(runs: &[RunRecord], segments: &[SegmentEntry]) -> Vec<String> {
    let mut problems = Vec::new();
    let by_file: HashMap<&str, &SegmentEntry> = segments.iter().map(|s| (s.file.as_str(), s)).collect();
    for seg in segments {
        if let Some(rows) = &seg.run_rows {
            if rows.len() != seg.run_ids.len() {
                problems.push(format!(
                    "{}: {} run ids but {} row counts",
                    seg.file,
                    seg.run_ids.len(),
                    rows.len()
                ));
            } else if rows.iter().sum::<u64>() != seg.rows {
                problems.push(format!(
                    "{}: its runs' rows add up to {}, not its {} rows",
                    seg.file,
                    rows.iter().sum::<u64>(),
                    seg.rows
                ));
            }
        }
    }
    for r in runs {
        match r.segment.as_deref() {
            None if r.n_points > 0 => {
                problems.push(format!("{}: {} points and no segment", describe(r), r.n_points));
            }
            None => {}
            Some(file) => match by_file.get(file) {
                None => problems.push(format!("{}: its segment {file} is not in the version", describe(r))),
                Some(seg) if !seg.run_ids.contains(&r.run_id) => {
                    problems.push(format!("{}: its segment {file} does not list it", describe(r)))
                }
                Some(seg) => {
                    if let Some(rows) = seg.rows_of(r.run_id).filter(|&n| n != r.n_points) {
                        problems.push(format!(
                            "{}: {file} holds {rows} of its rows, n_points says {}",
                            describe(r),
                            r.n_points
                        ));
                    }
                }
            },
        }
    }
    problems
}

/// What is wrong with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A manifest that does not parse or does not match its checksum.
    Manifest,
    /// A manifest whose records do not add up (runs, segments and row counts disagree).
    Inconsistent,
    /// A file the manifest names is not there.
    Missing,
    /// Not the size the manifest says.
    Size,
    /// Not the checksum the manifest says.
    Checksum,
    /// Parquet that cannot be read (a file without a checksum, or read in `deep` mode).
    Unreadable,
    /// Readable, but its rows disagree with the manifest (rows per run, last steps).
    Rows,
}

impl DamageKind {
    pub fn name(self) -> &'static str {
        match self {
            DamageKind::Manifest => "manifest",
            DamageKind::Inconsistent => "inconsistent",
            DamageKind::Missing => "missing",
            DamageKind::Size => "size",
            DamageKind::Checksum => "checksum",
            DamageKind::Unreadable => "unreadable",
            DamageKind::Rows => "rows",
        }
    }
}

/// A run whose points (or record) a damaged file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedRun {
    pub run_id: RunId,
    pub name: String,
    /// Where its logs were ingested from: what to re-ingest.
    pub source: String,
    /// Whether that source is still there (if not, the run cannot be recovered from it).
    pub source_exists: bool,
}

impl AffectedRun {
    fn of(r: &RunRecord) -> AffectedRun {
        AffectedRun::new(r.run_id, r.name.clone(), r.source.clone())
    }

    fn new(run_id: RunId, name: String, source: String) -> AffectedRun {
        // A W&B chart run's source is `file.csv#run`.
        let exists = Path::new(&source).exists()
            || source
                .rsplit_once('#')
                .is_some_and(|(file, _)| Path::new(file).exists());
        AffectedRun {
            run_id,
            name,
            source,
            source_exists: exists,
        }
    }
}

/// One damaged file: what is wrong, which runs it affects, how to recover.
#[derive(Debug, Clone)]
pub struct Damage {
    /// The file, under the store's root.
    pub file: PathBuf,
    pub kind: DamageKind,
    pub detail: String,
    /// The runs whose points or records the file holds (live runs only: rows of replaced runs
    /// are not needed).
    pub runs: Vec<AffectedRun>,
    /// What to do about it.
    pub recovery: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.file.display(), self.kind.name(), self.detail)?;
        if !self.runs.is_empty() {
            write!(
                f,
                "; runs affected ({}): {}",
                self.runs.len(),
                run_names(&self.runs, 10)
            )?;
        }
        write!(f, "; {}", self.recovery)
    }
}

fn run_names(runs: &[AffectedRun], at_most: usize) -> String {
    let mut s: Vec<String> = runs.iter().take(at_most).map(|r| r.name.clone()).collect();
    if runs.len() > at_most {
        s.push(format!("and {} more", runs.len() - at_most));
    }
    s.join(", ")
}

/// What `Store::repair` did.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// The version the store is at now (0: empty).
    pub version: u64,
    /// The damaged manifests set aside, newest first: (version, where the file is now).
    pub set_aside: Vec<(u64, PathBuf)>,
    /// The runs the set-aside versions held that the store now holds otherwise or not at all:
    /// what to re-ingest.
    pub lost: Vec<AffectedRun>,
    /// Whether `lost` is complete (the runs table of every set-aside version could be read).
    pub lost_known: bool,
    /// The current version's runs table was damaged, and was written anew (as `version`).
    pub runs_table_rewritten: bool,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.set_aside.is_empty() && !self.runs_table_rewritten {
            return write!(f, "nothing to repair (version {})", self.version);
        }
        for (v, path) in &self.set_aside {
            writeln!(f, "version {v}: damaged manifest set aside as {}", path.display())?;
        }
        if self.runs_table_rewritten {
            writeln!(f, "the runs table was damaged: written anew from the manifest")?;
        }
        writeln!(f, "the store is now at version {}", self.version)?;
        if !self.lost.is_empty() {
            writeln!(
                f,
                "{} run(s) lost their latest ingest; re-ingest them:",
                self.lost.len()
            )?;
            for r in &self.lost {
                writeln!(f, "  {}  {}", r.name, r.source)?;
            }
        }
        if !self.lost_known {
            writeln!(
                f,
                "what the set-aside versions committed is not fully known (their runs tables are unreadable): \
                 re-ingest what was ingested last"
            )?;
        }
        Ok(())
    }
}

/// What `Store::check` found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// The version checked (the newest intact one).
    pub version: u64,
    /// Whether every segment's rows were decoded and counted too.
    pub deep: bool,
    pub manifests_checked: usize,
    /// Files of the version checked (runs table and segments), and their bytes.
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// Files the manifest names without a checksum (written before steplaw-db kept them): not
    /// verified against one (only `deep` reads them through).
    pub unverified: Vec<PathBuf>,
    pub damaged: Vec<Damage>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.damaged.is_empty()
    }

    /// Every run a damaged file affects, once.
    pub fn affected_runs(&self) -> Vec<&AffectedRun> {
        let mut seen = HashSet::new();
        self.damaged
            .iter()
            .flat_map(|d| &d.runs)
            .filter(|r| seen.insert(r.run_id))
            .collect()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "version {}: {} manifest(s), {} file(s), {} bytes checked{}",
            self.version,
            self.manifests_checked,
            self.files_checked,
            self.bytes_checked,
            if self.deep { ", every row read" } else { "" }
        )?;
        if !self.unverified.is_empty() {
            writeln!(
                f,
                "{} file(s) have no checksum in the manifest (written by an older steplaw-db): not verified{}",
                self.unverified.len(),
                if self.deep { " by checksum (read through)" } else { "" }
            )?;
        }
        if self.damaged.is_empty() {
            return write!(f, "no damage found");
        }
        writeln!(f, "{} damaged file(s):", self.damaged.len())?;
        for d in &self.damaged {
            writeln!(f, "  {d}")?;
        }
        let runs = self.affected_runs();
        if !runs.is_empty() {
            writeln!(f, "{} run(s) affected; re-ingest each from its source:", runs.len())?;
            for r in runs {
                let gone = if r.source_exists {
                    ""
                } else {
                    "  (source gone: cannot be recovered)"
                };
                writeln!(f, "  {}  {}{gone}", r.name, r.source)?;
            }
        }
        Ok(())
    }
}

/// How to get the runs of a damaged segment back.
fn segment_recovery(runs: &[AffectedRun]) -> String {
    if runs.is_empty() {
        return "no live run's points are in it: `steplaw-db compact` drops it".into();
    }
    let gone = runs.iter().filter(|r| !r.source_exists).count();
    let mut s = "re-ingest the affected runs from their sources (`steplaw-db ingest --force SOURCE`); the damaged \
                 file then holds no live run and the next `steplaw-db compact` removes it"
        .to_string();
    if gone > 0 {
        s.push_str(&format!(
            "; {gone} of them have no source any more: their points cannot be recovered"
        ));
    }
    s
}

const RUNS_RECOVERY: &str = "every run record is also in the manifest: `steplaw-db compact` writes a new runs table";

/// The live runs (those whose record names it) of a segment.
fn live_runs(manifest: &Manifest, file: &str) -> Vec<AffectedRun> {
    manifest
        .runs
        .iter()
        .filter(|r| r.segment.as_deref() == Some(file))
        .map(AffectedRun::of)
        .collect()
}

/// A file a reader needs is damaged: the error names it, the runs affected, and the way back.
pub(super) fn damaged_error(root: &Path, manifest: &Manifest, file: &str, detail: &str) -> Error {
    let runs = live_runs(manifest, file);
    let (runs_part, recovery) = if manifest.runs_file.as_deref() == Some(file) {
        (String::new(), RUNS_RECOVERY.to_string())
    } else {
        (
            format!(
                "; runs affected ({}): {}",
                runs.len(),
                runs.iter()
                    .take(10)
                    .map(|r| format!("{} ({})", r.name, r.source))
                    .chain((runs.len() > 10).then(|| format!("and {} more", runs.len() - 10)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            segment_recovery(&runs),
        )
    };
    Error::store(
        root.join(file),
        format!("damaged: {detail}{runs_part}; {recovery} (`steplaw-db check` lists all damage)"),
    )
}

/// Files already verified by this process, by path, size, modification time, inode and the
/// checksum they matched: a file is hashed when first opened, and again only if it changed.
type FileKey = (PathBuf, u64, Option<std::time::SystemTime>, u64, String);

fn verified() -> &'static Mutex<HashSet<FileKey>> {
    static VERIFIED: OnceLock<Mutex<HashSet<FileKey>>> = OnceLock::new();
    VERIFIED.get_or_init(Default::default)
}

/// Forget which files were verified (tests that damage a file already read).
#[cfg(test)]
pub(super) fn forget_verified() {
    verified().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The outcome of checking one file against its manifest entry.
pub(super) enum FileState {
    /// Size and checksum match (now, or when this process first checked it).
    Verified {
        bytes: u64,
    },
    /// The manifest has no checksum for it (an older store).
    Unverified,
    Damaged(DamageKind, String),
}

/// Check a mapped file against its size and checksum in the manifest, hashing its bytes unless
/// this process already verified the file unchanged.
pub(super) fn check_mapped(file: &MappedFile, size: Option<u64>, sum: Option<&str>) -> FileState {
    let len = file.meta.len();
    if let Some(want) = size.filter(|&s| s != len) {
        return FileState::Damaged(DamageKind::Size, format!("{len} bytes, the manifest says {want}"));
    }
    let Some(sum) = sum else {
        return FileState::Unverified;
    };
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&file.meta);
    #[cfg(not(unix))]
    let ino = 0;
    let key: FileKey = (file.path.clone(), len, file.meta.modified().ok(), ino, sum.to_string());
    if verified().lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
        return FileState::Verified { bytes: len };
    }
    let found = hex128(file.xxh3_128());
    if found != sum {
        return FileState::Damaged(
            DamageKind::Checksum,
            format!("its checksum is {found}, the manifest says {sum}"),
        );
    }
    verified().lock().unwrap_or_else(|e| e.into_inner()).insert(key);
    FileState::Verified { bytes: len }
}

/// Map the file `rel` (under `root`): `Err` is the damage when it is missing or unreadable.
fn map(root: &Path, rel: &str) -> std::result::Result<MappedFile, FileState> {
    MappedFile::open(&root.join(rel)).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            FileState::Damaged(DamageKind::Missing, "the file is missing".into())
        }
        e => FileState::Damaged(DamageKind::Unreadable, format!("cannot read it: {e}")),
    })
}

/// Check the file `rel` (under `root`) against its size and checksum.
pub(super) fn check_file(root: &Path, rel: &str, size: Option<u64>, sum: Option<&str>) -> FileState {
    match map(root, rel) {
        Ok(file) => check_mapped(&file, size, sum),
        Err(state) => state,
    }
}

/// Open a segment for reading: mapped once, verified against its checksum on those very bytes
/// (once per process), its footer parsed. Damage is an `Error::Store` naming the file, the runs
/// it affects and how to recover them.
pub(super) fn open_segment(root: &Path, manifest: &Manifest, seg: &SegmentEntry) -> Result<ParquetFile> {
    let damaged = |state| match state {
        FileState::Damaged(_, detail) => damaged_error(root, manifest, &seg.file, &detail),
        _ => unreachable!("only damage is an error"),
    };
    let file = map(root, &seg.file).map_err(damaged)?;
    if let state @ FileState::Damaged(..) = check_mapped(&file, seg.size, seg.xxh3_128.as_deref()) {
        return Err(damaged(state));
    }
    file.reader().map_err(|e| {
        let detail = match &e {
            Error::Store { message, .. } => message.clone(),
            other => other.to_string(),
        };
        damaged_error(root, manifest, &seg.file, &format!("cannot be read: {detail}"))
    })
}

/// Verify the runs table of `manifest` (readers join it with what they read).
pub(super) fn verify_runs_table(root: &Path, manifest: &Manifest) -> Result<()> {
    let Some(rel) = &manifest.runs_file else {
        return Ok(());
    };
    match check_file(root, rel, manifest.runs_size, manifest.runs_xxh3_128.as_deref()) {
        FileState::Damaged(_, detail) => Err(damaged_error(root, manifest, rel, &detail)),
        _ => Ok(()),
    }
}

impl Store {
    /// Check the store: every manifest (parses, matches its checksum), and in the newest
    /// version the runs table and every segment (present, size, checksum, row counts as the
    /// manifest says). `deep` also decodes every segment's rows and counts them per run (the
    /// points of each run = its `n_points`, its loss series ending at its `final_step`), which
    /// reads through files written without checksums. Damage is reported, not returned as an
    /// error; an `Err` is a store that cannot be read at all.
    pub fn check(&self, deep: bool) -> Result<CheckReport> {
        let mut report = CheckReport {
            deep,
            ..Default::default()
        };
        // The newest intact version (a damaged newer one is reported by check_manifests).
        let dir = self.root.join(MANIFEST_DIR);
        let mut manifest = Manifest::empty();
        for &v in manifest::versions(&dir)?.iter().rev() {
            match manifest::read_version(&dir, v) {
                Ok(m) => {
                    manifest = m;
                    break;
                }
                Err(Error::Store { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        report.version = manifest.version;
        self.check_manifests(&manifest, &mut report)?;
        let root = self.root.as_path();
        let problems = manifest_problems(&manifest.runs, &manifest.segments);
        if !problems.is_empty() {
            report.damaged.push(Damage {
                file: root.join(MANIFEST_DIR).join(manifest::file_name(manifest.version)),
                kind: DamageKind::Inconsistent,
                detail: problems.join("; "),
                runs: vec![],
                recovery: "a bug in the steplaw-db that wrote it: please report it; re-ingest the runs named".into(),
            });
        }
        if let Some(rel) = &manifest.runs_file {
            self.check_runs_table(&manifest, rel, &mut report);
        }
        use rayon::prelude::*;
        let results: Vec<(FileState, Option<Damage>)> = manifest
            .segments
            .par_iter()
            .map(|seg| match map(root, &seg.file) {
                Err(state) => (state, None),
                Ok(file) => {
                    let state = check_mapped(&file, seg.size, seg.xxh3_128.as_deref());
                    let rows = match &state {
                        FileState::Damaged(..) => None,
                        _ => check_segment_rows(&file, &manifest, seg, deep).err(),
                    };
                    (state, rows)
                }
            })
            .collect();
        for (seg, (state, rows)) in manifest.segments.iter().zip(results) {
            report.files_checked += 1;
            let path = root.join(&seg.file);
            match state {
                FileState::Verified { bytes } => report.bytes_checked += bytes,
                FileState::Unverified => report.unverified.push(path.clone()),
                FileState::Damaged(kind, detail) => {
                    let runs = live_runs(&manifest, &seg.file);
                    report.damaged.push(Damage {
                        file: path,
                        kind,
                        detail,
                        recovery: segment_recovery(&runs),
                        runs,
                    });
                    continue;
                }
            }
            if let Some(d) = rows {
                report.damaged.push(d);
            }
        }
        Ok(report)
    }

    /// Check the store deeply and fail unless nothing is damaged: for every run, the points
    /// in the store = its `n_points` and its loss series ends at its `final_step`; every file
    /// matches its size and checksum.
    pub fn verify(&self) -> Result<()> {
        let report = self.check(true)?;
        if report.is_ok() {
            return Ok(());
        }
        Err(Error::store(&self.root, report.to_string()))
    }

    /// Roll back past damaged newest manifests: each is set aside (renamed `damaged-<name>` in
    /// `_manifest/`, where it stays) until the newest is intact, and a damaged runs table of that
    /// version is written anew (as the next version, from the manifest's records). Says what was
    /// lost: the runs the set-aside versions had that the store now has otherwise or not at all,
    /// as far as their runs tables (if readable) tell. Segments cannot be repaired: re-ingest
    /// the runs `check` names.
    pub fn repair(&self, wait: std::time::Duration) -> Result<RepairReport> {
        let lock = self.lock(wait)?;
        self.remove_temporary_files();
        let dir = self.root.join(MANIFEST_DIR);
        let mut report = RepairReport {
            lost_known: true,
            ..Default::default()
        };
        let mut current = Manifest::empty();
        for &v in manifest::versions(&dir)?.iter().rev() {
            match manifest::read_version(&dir, v) {
                Ok(m) => {
                    current = m;
                    break;
                }
                Err(Error::Store { .. }) => {
                    let name = manifest::file_name(v);
                    let aside = dir.join(format!("{}{name}", super::DAMAGED_PREFIX));
                    std::fs::rename(dir.join(&name), &aside).map_err(|e| Error::io(&aside, e))?;
                    report.set_aside.push((v, aside));
                }
                Err(e) => return Err(e),
            }
        }
        super::fsync_dir(&dir)?;
        report.version = current.version;
        let now: HashMap<RunId, &str> = current
            .runs
            .iter()
            .map(|r| (r.run_id, r.fingerprint.as_str()))
            .collect();
        let mut seen = HashSet::new();
        for (v, aside) in &report.set_aside {
            match self.runs_of_version(*v).or_else(|| runs_in_damaged_manifest(aside)) {
                Some(runs) => {
                    let lost = runs
                        .into_iter()
                        .filter(|(id, .., fp)| now.get(id) != Some(&fp.as_str()) && seen.insert(*id));
                    report
                        .lost
                        .extend(lost.map(|(id, name, source, _)| AffectedRun::new(id, name, source)));
                }
                None => report.lost_known = false,
            }
        }
        if let Some(rel) = &current.runs_file {
            if let FileState::Damaged(..) =
                check_file(&self.root, rel, current.runs_size, current.runs_xxh3_128.as_deref())
            {
                let runs = current.runs.clone();
                let mut tx = super::Transaction::new(self, lock, current);
                // Only a checkpoint writes a runs table.
                tx.force_checkpoint = true;
                report.version = tx.commit(runs)?.version;
                report.runs_table_rewritten = true;
            }
        }
        Ok(report)
    }

    /// The runs (id, name, source, fingerprint) of version `v`'s runs table (a checkpoint's), found by its name
    /// (`runs/runs-<v>-*.parquet`) when its manifest is unreadable; None if it cannot be read.
    fn runs_of_version(&self, v: u64) -> Option<Vec<(RunId, String, String, String)>> {
        let dir = self.root.join(super::RUNS_DIR);
        let prefix = format!("runs-{v:08}-");
        let path = std::fs::read_dir(&dir).ok()?.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })?;
        let names = ["run_id", "name", "source", "fingerprint"];
        let cols = std::panic::catch_unwind(|| table::read_columns(&path, &names))
            .ok()?
            .ok()?;
        let (Values::Int64(ids), Values::Utf8(name), Values::Utf8(source), Values::Utf8(fp)) =
            (&cols[0].values, &cols[1].values, &cols[2].values, &cols[3].values)
        else {
            return None;
        };
        let text = |b: &ByteArray| String::from_utf8_lossy(b.data()).into_owned();
        let runs = (0..ids.len()).map(|i| (ids[i], text(&name[i]), text(&source[i]), text(&fp[i])));
        Some(runs.collect())
    }
    /// Every manifest file: parses and matches its checksum. A damaged one that is not the
    /// version read is reported as such; `latest` already skipped it.
    fn check_manifests(&self, current: &Manifest, report: &mut CheckReport) -> Result<()> {
        let dir = self.root.join(MANIFEST_DIR);
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                Some((manifest::version_of(&name)?, e.path()))
            })
            .collect();
        names.sort();
        for (version, path) in names {
            report.manifests_checked += 1;
            let parsed = std::fs::read(&path).map_err(|e| Error::io(&path, e)).and_then(|b| {
                if manifest::checksum_matches(&b).is_none() {
                    report.unverified.push(path.clone());
                }
                manifest::parse_file(&path, &b)
            });
            if let Err(e) = parsed {
                let newer = version > current.version;
                report.damaged.push(Damage {
                    file: path,
                    kind: DamageKind::Manifest,
                    detail: format!("version {version}: {e}"),
                    runs: vec![],
                    recovery: if newer {
                        format!(
                            "readers and writers stop at it: `steplaw-db check --repair` sets it aside and rolls \
                             the store back to version {} (what version {version} committed is then lost: \
                             re-ingest it)",
                            current.version
                        )
                    } else {
                        "an older version, which readers do not use: nothing is lost".into()
                    },
                });
            }
        }
        Ok(())
    }

    fn check_runs_table(&self, manifest: &Manifest, rel: &str, report: &mut CheckReport) {
        let path = self.root.join(rel);
        report.files_checked += 1;
        let damage = |kind, detail: String| Damage {
            file: path.clone(),
            kind,
            detail,
            runs: vec![],
            recovery: RUNS_RECOVERY.into(),
        };
        match check_file(&self.root, rel, manifest.runs_size, manifest.runs_xxh3_128.as_deref()) {
            FileState::Damaged(kind, detail) => return report.damaged.push(damage(kind, detail)),
            FileState::Unverified => report.unverified.push(path.clone()),
            FileState::Verified { bytes } => report.bytes_checked += bytes,
        }
        let read = std::panic::catch_unwind(|| table::read_columns(&path, &["run_id", "n_points"]));
        let cols = match read {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return report.damaged.push(damage(DamageKind::Unreadable, e.to_string())),
            Err(_) => {
                return report.damaged.push(damage(
                    DamageKind::Unreadable,
                    "the Parquet decoder failed on it".into(),
                ))
            }
        };
        let (Values::Int64(ids), Values::Int64(points)) = (&cols[0].values, &cols[1].values) else {
            return report
                .damaged
                .push(damage(DamageKind::Unreadable, "unexpected column types".into()));
        };
        // The table holds the runs of the version that wrote it (a delta version's is its
        // checkpoint's).
        let written;
        let runs = if manifest.runs_table_current() {
            &manifest.runs
        } else {
            let dir = self.root.join(MANIFEST_DIR);
            match manifest::read_version(&dir, manifest.chain.runs_version) {
                Ok(m) => {
                    written = m;
                    &written.runs
                }
                Err(e) => return report.damaged.push(damage(DamageKind::Unreadable, e.to_string())),
            }
        };
        let want_ids: Vec<RunId> = runs.iter().map(|r| r.run_id).collect();
        let want_points: Vec<i64> = runs.iter().map(|r| r.n_points as i64).collect();
        if *ids != want_ids || *points != want_points {
            report.damaged.push(damage(
                DamageKind::Rows,
                format!(
                    "its run ids or n_points differ from the manifest's ({} rows, the manifest has {} runs)",
                    ids.len(),
                    want_ids.len()
                ),
            ));
        }
    }
}

/// A segment's row counts against its manifest entry: the footer's total always; with `deep`,
/// every row decoded and counted per run (and per run's series, their last steps and order).
fn check_segment_rows(
    file: &MappedFile,
    manifest: &Manifest,
    seg: &SegmentEntry,
    deep: bool,
) -> std::result::Result<(), Damage> {
    let path = &file.path;
    // The runs a problem is about, when it is about some (else every live run of the file).
    let mut affected: HashSet<RunId> = HashSet::new();
    let damage = |kind, detail: String, affected: &HashSet<RunId>| {
        let mut runs = live_runs(manifest, &seg.file);
        if runs.iter().any(|r| affected.contains(&r.run_id)) {
            runs.retain(|r| affected.contains(&r.run_id));
        }
        Damage {
            file: path.clone(),
            kind,
            detail,
            recovery: segment_recovery(&runs),
            runs,
        }
    };
    type Counted = std::result::Result<Option<Tally>, (String, Option<RunId>)>;
    let counted = std::panic::catch_unwind(|| -> Result<Counted> {
        let file = file.reader()?;
        let rows = file.rows();
        if rows != seg.rows {
            return Ok(Err((format!("{rows} rows, the manifest says {}", seg.rows), None)));
        }
        if !deep {
            return Ok(Ok(None));
        }
        Ok(tally_segment(&file)?.map(Some))
    });
    let tally = match counted {
        Err(_) => {
            let detail = "the Parquet decoder failed on it".to_string();
            return Err(damage(DamageKind::Unreadable, detail, &affected));
        }
        Ok(Err(e)) => return Err(damage(DamageKind::Unreadable, e.to_string(), &affected)),
        Ok(Ok(Err((detail, run)))) => {
            affected.extend(run);
            return Err(damage(DamageKind::Rows, detail, &affected));
        }
        Ok(Ok(Ok(None))) => return Ok(()),
        Ok(Ok(Ok(Some(t)))) => t,
    };
    let mut problems = Vec::new();
    let listed: HashSet<RunId> = seg.run_ids.iter().copied().collect();
    for id in &tally.order {
        if !listed.contains(id) {
            affected.insert(*id);
            let rows = tally.runs[id].rows;
            problems.push(format!(
                "{rows} rows of run id {id}, which the manifest does not list in it"
            ));
        }
    }
    for id in &seg.run_ids {
        let got = tally.runs.get(id).map_or(0, |t| t.rows);
        if let Some(want) = seg.rows_of(*id).filter(|&w| w != got) {
            affected.insert(*id);
            problems.push(format!("run id {id}: {got} rows, the manifest says {want}"));
        }
    }
    let empty = RunTally::default();
    let live = manifest
        .runs
        .iter()
        .filter(|r| r.segment.as_deref() == Some(seg.file.as_str()));
    for r in live {
        let t = tally.runs.get(&r.run_id).unwrap_or(&empty);
        if t.rows != r.n_points {
            affected.insert(r.run_id);
            problems.push(format!(
                "{}: {} points, n_points says {}",
                describe(r),
                t.rows,
                r.n_points
            ));
        }
        if !final_step_matches(t, r.final_step) {
            affected.insert(r.run_id);
            let fs = r.final_step;
            problems.push(format!(
                "{}: its loss series does not end at final_step {fs:?}",
                describe(r)
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let more = problems.len().saturating_sub(10);
    problems.truncate(10);
    if more > 0 {
        problems.push(format!("and {more} more"));
    }
    Err(damage(DamageKind::Rows, problems.join("; "), &affected))
}

/// Decode every row of a segment: rows per run and each series' last step, checking that each
/// series' steps increase. `Ok(Err(..))` when they do not, with the run whose do not.
fn tally_segment(file: &ParquetFile) -> Result<std::result::Result<Tally, (String, Option<RunId>)>> {
    let names = points::POINT_NAMES;
    let mut tally = Tally::default();
    let mut batch = points::empty_point_batch();
    let mut prev: Option<(RunId, ByteArray, i64)> = None;
    for g in 0..file.row_groups() {
        let mut stream = table::GroupBatches::open_in(file, g, &names)?;
        loop {
            let n = stream.next(1 << 16, &mut batch)?;
            if n == 0 {
                break;
            }
            let (Values::Int64(rid), Values::Utf8(metric), Values::Int64(step)) = (&batch[0], &batch[1], &batch[2])
            else {
                unreachable!("typed above")
            };
            let mut i = 0;
            while i < n {
                let mut j = i + 1;
                while j < n && rid[j] == rid[i] && metric[j] == metric[i] {
                    j += 1;
                }
                let continues = prev.as_ref().is_some_and(|(r, m, _)| *r == rid[i] && *m == metric[i]);
                let after = if continues { prev.as_ref().map(|p| p.2) } else { None };
                let mut last = after;
                for &s in &step[i..j] {
                    if last.is_some_and(|l| s <= l) {
                        let detail = format!(
                            "run id {}: steps of '{}' do not increase ({} after {})",
                            rid[i],
                            String::from_utf8_lossy(metric[i].data()),
                            s,
                            last.unwrap_or_default()
                        );
                        return Ok(Err((detail, Some(rid[i]))));
                    }
                    last = Some(s);
                }
                tally.add(rid[i], &metric[i], j - i, step[j - 1]);
                prev = Some((rid[i], metric[i].clone(), step[j - 1]));
                i = j;
            }
        }
    }
    Ok(Ok(tally))
}

/// The runs a damaged manifest committed (a delta's runs added or changed, a checkpoint's every
/// run), when the damage left it readable as JSON: what a roll-back past a version written as a
/// delta, which has no runs table of its own, loses. None if it does not parse.
fn runs_in_damaged_manifest(path: &Path) -> Option<Vec<(RunId, String, String, String)>> {
    let bytes = std::fs::read(path).ok()?;
    let records = match serde_json::from_slice::<manifest::Delta>(&bytes) {
        Ok(d) if d.format == manifest::DELTA_FORMAT => d.runs_changed,
        _ => serde_json::from_slice::<Manifest>(&bytes).ok()?.runs,
    };
    Some(
        records
            .into_iter()
            .map(|r| (r.run_id, r.name, r.source, r.fingerprint))
            .collect(),
    )
}
