//! The on-disk store: immutable Parquet segments of points, a runs table, and numbered
//! manifests that say which files make up each version.
//!
//! Commit protocol (see docs/store.md): under an exclusive lock on `_lock`, new segment and
//! runs files are written under temporary names, fsynced and renamed into place; then the
//! manifest of the next version is written to a temporary file, fsynced, and hard-linked to
//! `_manifest/<version>.json`, which fails if that name exists (create-new). A reader takes the
//! newest manifest, so it sees either the old version or the new one whole; files no manifest
//! names are garbage that `compact` removes.
mod check;
mod manifest;
mod points;
mod remove;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use check::{AffectedRun, CheckReport, Damage, DamageKind, RepairReport};
pub use manifest::{Manifest, SegmentEntry};
pub use points::{
    read_runs, visit_metric, PointRows, SegmentLayout, SegmentWriter, Series, POINT_FIELDS, ROW_GROUP_ROWS,
    SEGMENT_ROWS,
};
pub use remove::{RemoveReport, RemoveSelection};

use crate::error::{Error, Result};
use crate::model::{now_us, FieldKind, FieldValue, RunId, RunRecord, CONFIG_FIELDS};
use table::{Column, Field, Kind, TableWriter};

const MANIFEST_DIR: &str = "_manifest";
const POINTS_DIR: &str = "points";
const RUNS_DIR: &str = "runs";
const LOCK_FILE: &str = "_lock";
/// Writers that write segments before they take `_lock` (`Store::draft`: an ingest parses and
/// writes without the lock) hold a shared lock on this file meanwhile; whoever deletes files no
/// manifest names (temporary files, compaction's garbage) does so only under an exclusive lock
/// on it, so never the files of a draft still to commit.
const DRAFTS_FILE: &str = "_drafts";
/// `repair` renames a damaged manifest `<DAMAGED_PREFIX><name>`: out of the versions, kept.
const DAMAGED_PREFIX: &str = "damaged-";

/// A store directory. Cheap to open; every read goes through the newest manifest.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    layout: SegmentLayout,
}

/// Where a test may ask a commit to stop dead (`STEPLAW_DB_CRASH_AT`), to show that a kill
/// at that moment leaves the store at its previous version.
pub(super) fn crash_point(name: &str) {
    if std::env::var("STEPLAW_DB_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("steplaw-db: simulated crash at {name}");
        std::process::abort();
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// A file name no other writer will pick: version, process and clock.
fn unique_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let key = format!("{}-{}", std::process::id(), t.as_nanos());
    format!("{:08x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as u32)
}

impl Store {
    /// Open the store at `root`, creating an empty one if `create` and it does not exist.
    /// A store is never created in a directory that holds anything else (`open_with`'s
    /// `force` allows it), and an empty path is refused (it would make the current
    /// directory a store).
    pub fn open(root: impl AsRef<Path>, create: bool) -> Result<Store> {
        Store::open_with(root, create, false)
    }

    /// `open`; `force`: create the store even in a non-empty directory that is not one.
    pub fn open_with(root: impl AsRef<Path>, create: bool, force: bool) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        if root.as_os_str().is_empty() {
            return Err(Error::Invalid(
                "the store path is empty (--db \"\" or STEPLAW_DB=\"\"): name a directory".into(),
            ));
        }
        let manifest_dir = root.join(MANIFEST_DIR);
        if !manifest_dir.is_dir() {
            if root.exists() && !root.is_dir() {
                return Err(Error::store(&root, "exists and is not a directory"));
            }
            if !create {
                return Err(Error::store(
                    &root,
                    "no store here (no _manifest directory); ingest something first",
                ));
            }
            if !force && root.is_dir() {
                let mut entries = fs::read_dir(&root).map_err(|e| Error::io(&root, e))?;
                if let Some(entry) = entries.next() {
                    let first = entry.map_err(|e| Error::io(&root, e))?.file_name();
                    return Err(Error::store(
                        &root,
                        format!(
                            "is a directory that holds other files ('{}', ...) and no store: refusing to make it \
                             a store (name a new or empty directory, or force it: `steplaw-db ingest --force`, \
                             `steplaw_db.open(path, force=True)`)",
                            first.to_string_lossy()
                        ),
                    ));
                }
            }
            for d in [MANIFEST_DIR, POINTS_DIR, RUNS_DIR] {
                fs::create_dir_all(root.join(d)).map_err(|e| Error::io(root.join(d), e))?;
            }
        }
        Ok(Store {
            root,
            layout: SegmentLayout::default(),
        })
    }

    /// The same store, whose writers cut segments and row groups at `layout` (tests use small
    /// ones to reach the boundaries with few rows).
    pub fn with_layout(mut self, layout: SegmentLayout) -> Store {
        self.layout = layout;
        self
    }

    pub fn layout(&self) -> SegmentLayout {
        self.layout
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The newest committed manifest (version 0, empty, for a new store).
    pub fn latest(&self) -> Result<Manifest> {
        manifest::read_latest(&self.root.join(MANIFEST_DIR))
    }

    /// `latest`, parsed once per process for each new version (for readers that open the
    /// store again and again; writers read the manifest afresh under the lock).
    pub fn latest_shared(&self) -> Result<std::sync::Arc<Manifest>> {
        manifest::read_latest_shared(&self.root.join(MANIFEST_DIR))
    }

    /// Take the write lock, waiting up to `wait` for another writer to finish. Files a dead
    /// writer left under temporary names (`.tmp-*`) are removed, then the newest version read.
    pub fn begin(&self, wait: Duration) -> Result<Transaction> {
        let lock = self.lock(wait)?;
        self.remove_temporary_files();
        let base = self.latest()?;
        Ok(Transaction::new(self, lock, base))
    }

    /// Fail now, as `begin` would, when another writer holds the lock past `wait`: a writer
    /// that works without the lock (an ingest parsing) checks first, so that a store that is
    /// busy is refused before the work, not after it.
    pub fn wait_for_lock(&self, wait: Duration) -> Result<()> {
        self.lock(wait).map(drop)
    }

    /// The exclusive write lock (held while the returned file is open).
    fn lock(&self, wait: Duration) -> Result<File> {
        let lock_path = self.root.join(LOCK_FILE);
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        let start = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = lock.read_to_string(&mut holder);
                    let holder = if holder.trim().is_empty() {
                        "unknown process".to_string()
                    } else {
                        holder.trim().to_string()
                    };
                    return Err(Error::Locked {
                        path: self.root.clone(),
                        holder,
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
            }
        }
        // Who holds the lock, for the next writer's error message. The lock itself is the
        // OS's (flock), so a killed writer never leaves a stale lock behind.
        let _ = lock
            .set_len(0)
            .and_then(|_| lock.rewind())
            .and_then(|_| write!(lock, "pid {} since {} us", std::process::id(), now_us()));
        Ok(lock)
    }

    /// Rewrite segments that hold replaced runs or are small into fresh ones, then delete every
    /// file no manifest but the new one names, older manifests too (`compact_with` and
    /// `Keep::Versions(1)`): afterwards `points/*.parquet` and `runs/*.parquet` hold exactly the
    /// current store, for tools that glob them. A reader still reading an older version may
    /// then find its files gone; `compact_with(wait, Keep::default())` keeps them a while.
    pub fn compact(&self, wait: Duration) -> Result<CompactReport> {
        self.compact_with(wait, Keep::Versions(1))
    }

    /// `compact`, keeping the manifests and files of the versions `keep` says (the new one
    /// always), so that readers that opened one of them can finish.
    pub fn compact_with(&self, wait: Duration, keep: Keep) -> Result<CompactReport> {
        if keep == Keep::Versions(0) {
            return Err(Error::Invalid(
                "compact --keep: at least 1 version (the new one)".into(),
            ));
        }
        let mut tx = self.begin(wait)?;
        // The new version is read without the manifests before it: they can all go.
        tx.force_checkpoint = true;
        let runs = tx.base.runs.clone();
        let live: HashMap<RunId, &str> = runs
            .iter()
            .filter_map(|r| r.segment.as_deref().map(|s| (r.run_id, s)))
            .collect();
        let mut rewrite = Vec::new();
        for seg in &tx.base.segments {
            let all_live = seg.run_ids.iter().all(|id| live.get(id) == Some(&seg.file.as_str()));
            if !(all_live && seg.rows >= points::COMPACT_MIN_ROWS) {
                rewrite.push(seg.clone());
            }
        }
        let has_dead_rows = |s: &SegmentEntry| s.run_ids.iter().any(|id| live.get(id) != Some(&s.file.as_str()));
        // One small segment and nothing to drop: rewriting it would change nothing.
        if rewrite.len() == 1 && !has_dead_rows(&rewrite[0]) {
            rewrite.clear();
        }
        let mut report = CompactReport {
            segments_rewritten: rewrite.len(),
            ..Default::default()
        };
        let mut moved: HashMap<RunId, String> = HashMap::new();
        if !rewrite.is_empty() {
            let mut writer = tx.segment_writer(0)?;
            for seg in &rewrite {
                let keep_ids: HashSet<RunId> = seg
                    .run_ids
                    .iter()
                    .copied()
                    .filter(|id| live.get(id) == Some(&seg.file.as_str()))
                    .collect();
                if keep_ids.is_empty() {
                    continue;
                }
                // Read through the checksum: damaged rows are never copied into a new segment.
                let file = check::open_segment(&self.root, &tx.base, seg)?;
                writer.copy_rows_of(&file, &keep_ids)?;
            }
            let written = writer.finish()?;
            for entry in &written {
                for id in &entry.run_ids {
                    moved.insert(*id, entry.file.clone());
                }
            }
            tx.new_segments.extend(written);
        }
        let mut new_runs = runs;
        for r in &mut new_runs {
            if let Some(seg) = moved.get(&r.run_id) {
                r.segment = Some(seg.clone());
            }
        }
        let manifest = tx.commit(new_runs)?;
        let removed = self.remove_unkept(&manifest, keep)?;
        report.files_removed = removed.0;
        report.bytes_freed = removed.1;
        report.versions_kept = removed.2;
        report.version = manifest.version;
        Ok(report)
    }

    /// After committing `current` (under the lock): delete the manifests of the versions `keep`
    /// does not keep, and every file in points/ and runs/ that no kept manifest names. Returns
    /// (files removed, bytes freed, versions kept).
    fn remove_unkept(&self, current: &Manifest, keep: Keep) -> Result<(usize, u64, Vec<u64>)> {
        let dir = self.root.join(MANIFEST_DIR);
        let versions = manifest::versions(&dir)?;
        let now = now_us();
        // A version is kept while its successor is younger than the keep time: a reader that
        // opened it did so before its successor appeared.
        let mut kept: Vec<(u64, Option<Manifest>)> = Vec::new();
        let mut successor_at = i64::MAX;
        for &v in versions.iter().rev() {
            let m = if v == current.version {
                Some(current.clone())
            } else {
                manifest::read_version(&dir, v).ok()
            };
            let keep_it = match keep {
                _ if v == current.version => true,
                _ if v > current.version => true, // not ours to judge (cannot happen under the lock)
                Keep::Versions(n) => kept.len() < n,
                Keep::Recent(age) => {
                    successor_at != i64::MAX && now.saturating_sub(successor_at) < age.as_micros() as i64
                }
            };
            // The next older version's successor is this one.
            successor_at = m.as_ref().map_or(i64::MIN, |m| m.created_at_us);
            if keep_it {
                kept.push((v, m));
            }
        }
        let mut named: HashSet<PathBuf> = HashSet::new();
        for (_, m) in &kept {
            if let Some(m) = m {
                named.extend(m.segments.iter().map(|s| self.root.join(&s.file)));
                named.extend(m.runs_file.iter().map(|r| self.root.join(r)));
            }
        }
        // A kept version is read through its chain: its checkpoint and the deltas after it.
        let kept_names: HashSet<String> = kept
            .iter()
            .flat_map(|(v, m)| {
                let from = m.as_ref().map_or(*v, |m| m.chain.checkpoint.min(*v));
                versions.iter().filter(move |&&w| w >= from && w <= *v)
            })
            .map(|&v| manifest::file_name(v))
            .collect();
        // While a draft is being written (an ingest parsing without the lock), the files no
        // manifest names may be its segments, to be committed: only the files of the versions
        // not kept go then (their names are known); the rest goes at the next compaction.
        let no_drafts = self.no_drafts();
        let mut dropped: HashSet<PathBuf> = HashSet::new();
        if no_drafts.is_none() {
            for &v in &versions {
                if kept.iter().any(|(k, _)| *k == v) || kept_names.contains(&manifest::file_name(v)) {
                    continue;
                }
                if let Ok(m) = manifest::read_version(&dir, v) {
                    dropped.extend(m.segments.iter().map(|s| self.root.join(&s.file)));
                    dropped.extend(m.runs_file.iter().map(|r| self.root.join(r)));
                }
            }
        }
        let (mut files, mut bytes) = (0, 0);
        for sub in [POINTS_DIR, RUNS_DIR, MANIFEST_DIR] {
            let d = self.root.join(sub);
            for entry in fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
                let p = entry.map_err(|e| Error::io(&d, e))?.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let is_kept = if sub == MANIFEST_DIR {
                    // Manifests set aside by `repair` stay for the user to look at.
                    kept_names.contains(&name) || name.starts_with(DAMAGED_PREFIX) || !p.is_file()
                } else {
                    named.contains(&p) || (no_drafts.is_none() && !dropped.contains(&p))
                };
                if !is_kept {
                    bytes += p.metadata().map(|m| m.len()).unwrap_or(0);
                    files += 1;
                    fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                }
            }
        }
        let mut versions_kept: Vec<u64> = kept.iter().map(|(v, _)| *v).collect();
        versions_kept.sort_unstable();
        Ok((files, bytes, versions_kept))
    }

    /// The drafts lock (`DRAFTS_FILE`), exclusive, if no draft holds it now: while held, every
    /// file that no manifest names is garbage (no writer is writing one to commit later).
    fn no_drafts(&self) -> Option<File> {
        let path = self.root.join(DRAFTS_FILE);
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ok()?;
        f.try_lock().ok().map(|()| f)
    }

    /// Remove files left under temporary names by writers that died (the caller holds the
    /// lock; and no draft is being written, else nothing is removed: its files may be among
    /// them, and the next writer removes them).
    fn remove_temporary_files(&self) {
        let Some(_no_drafts) = self.no_drafts() else {
            return;
        };
        for sub in [POINTS_DIR, RUNS_DIR, MANIFEST_DIR] {
            let Ok(entries) = fs::read_dir(self.root.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().to_str().is_some_and(|n| n.starts_with(".tmp-")) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    /// The points of `run_ids` (of `metric` only, if given) in the newest version: only the
    /// row groups that hold them are read (see `points::read_runs`).
    pub fn points(&self, run_ids: &[RunId], metric: Option<&str>) -> Result<PointRows> {
        read_runs(&self.root, self.latest_shared()?.as_ref(), run_ids, metric)
    }

    /// Verify the files a reader of `manifest` needs, its runs table and every segment a live
    /// run is in, against their sizes and checksums (each file hashed once per process). For
    /// readers outside this crate's own (Polars on the paths `Manifest` names): the first
    /// damaged file is an `Error::Store` naming it, the runs it affects and how to recover them.
    pub fn verify_files(&self, manifest: &Manifest) -> Result<()> {
        use rayon::prelude::*;
        if manifest.runs_table_current() {
            check::verify_runs_table(&self.root, manifest)?;
        }
        let live: HashSet<&str> = manifest.runs.iter().filter_map(|r| r.segment.as_deref()).collect();
        manifest
            .segments
            .par_iter()
            .filter(|s| live.contains(s.file.as_str()))
            .try_for_each(|seg| check::open_segment(&self.root, manifest, seg).map(|_| ()))
    }
}

/// Where a test may hold a writer (`STEPLAW_DB_PAUSE_AT=<name>`): it creates
/// `$STEPLAW_DB_PAUSE_DIR/<name>.paused` and waits until `<name>.go` appears there, so a test can
/// do something else meanwhile (another writer committing while an ingest is "parsing").
pub(crate) fn pause_point(name: &str) {
    if !std::env::var("STEPLAW_DB_PAUSE_AT").is_ok_and(|v| v == name) {
        return;
    }
    let Ok(dir) = std::env::var("STEPLAW_DB_PAUSE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = fs::write(dir.join(format!("{name}.paused")), b"");
    let start = Instant::now();
    while !dir.join(format!("{name}.go")).exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Store {
    /// Begin a write whose segments are written without the lock: a slow parse never blocks
    /// other writers. The draft reads the newest version as its base and holds a shared lock
    /// on `_drafts` (so no writer deletes its files as garbage); `Draft::commit` takes the lock
    /// and commits over whatever version is newest then, if the writers between touched none
    /// of the draft's runs.
    pub fn draft(&self) -> Result<Draft> {
        let path = self.root.join(DRAFTS_FILE);
        let drafts = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // Blocks only while a writer deletes garbage (a moment): the draft's files are then
        // never among what it deletes.
        drafts.lock_shared().map_err(|e| Error::io(&path, e))?;
        let base = self.latest()?;
        Ok(Draft {
            pending: Pending::new(self, base),
            _drafts: drafts,
        })
    }
}

/// How long a draft's commit waits at least for the lock (see `Draft::commit`).
pub const DRAFT_COMMIT_WAIT: Duration = Duration::from_secs(600);

/// A write in the making without the lock (see `Store::draft`). Dropping it without committing
/// leaves the store as it was (its segments are garbage for the next writer).
pub struct Draft {
    pending: Pending,
    _drafts: File,
}

impl std::ops::Deref for Draft {
    type Target = Pending;
    fn deref(&self) -> &Pending {
        &self.pending
    }
}

impl std::ops::DerefMut for Draft {
    fn deref_mut(&mut self) -> &mut Pending {
        &mut self.pending
    }
}

impl Draft {
    /// Commit `runs`, the complete runs table the draft makes of its base, in which it changed,
    /// added or removed the runs `touched` (and no other). Takes the lock, waiting up to `wait`
    /// but at least `DRAFT_COMMIT_WAIT` (a writer that took it while the draft was written
    /// holds it for a commit or a compaction: throwing the draft away would cost more than
    /// waiting; whether the store was busy at the start is `Store::wait_for_lock`'s to say).
    /// If other writers committed since the base, the draft's changes are applied to
    /// the newest version instead when none of them touched a run of `touched` (else nothing is
    /// committed and the error says to run again).
    pub fn commit(self, runs: Vec<RunRecord>, touched: &HashSet<RunId>, wait: Duration) -> Result<Manifest> {
        let mut tx = self.store.begin(wait.max(DRAFT_COMMIT_WAIT))?;
        let runs = rebase(&self.store.root, &self.base, &tx.base, runs, touched)?;
        tx.new_segments = self.pending.new_segments;
        let m = tx.commit(runs)?;
        drop(self._drafts);
        Ok(m)
    }
}

/// `runs` (made from `base`, changing the runs `touched`) applied to `newest`: the same list
/// when nothing was committed meanwhile; else `newest`'s runs with the touched ones replaced,
/// removed or added, in its order (added runs last, in `runs`' order). An error when a writer
/// since `base` changed, added or removed a touched run, or the store went back past `base`.
fn rebase(
    root: &Path,
    base: &Manifest,
    newest: &Manifest,
    runs: Vec<RunRecord>,
    touched: &HashSet<RunId>,
) -> Result<Vec<RunRecord>> {
    if newest.version == base.version {
        return Ok(runs);
    }
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    if newest.version < base.version {
        return Err(Error::store(
            root,
            format!(
                "the store went back from version {} to {} (repaired) while this write was prepared: nothing \
                 committed, run it again",
                base.version, newest.version
            ),
        ));
    }
    // A record as far as writers change it: `compact` only moves a run's points to another
    // segment (its `segment`), which does not clash with a draft's change of that run.
    let record = |m: &Manifest, id: RunId| {
        m.runs.iter().find(|r| r.run_id == id).map(|r| {
            let mut r = r.clone();
            r.segment = None;
            serde_json::to_vec(&r).unwrap_or_default()
        })
    };
    let mut clashes: Vec<String> = Vec::new();
    let (before, now): (HashMap<RunId, &RunRecord>, HashMap<RunId, &RunRecord>) = (
        base.runs.iter().map(|r| (r.run_id, r)).collect(),
        newest.runs.iter().map(|r| (r.run_id, r)).collect(),
    );
    for &id in touched {
        let (a, b) = (before.get(&id), now.get(&id));
        let same = match (a, b) {
            (None, None) => true,
            (Some(_), Some(_)) => record(base, id) == record(newest, id),
            _ => false,
        };
        if !same {
            let r = b.or(a).expect("one of them holds it");
            clashes.push(format!("{} ({})", r.name, r.source));
        }
    }
    if !clashes.is_empty() {
        clashes.sort();
        let n = clashes.len();
        clashes.truncate(3);
        return Err(Error::store(
            root,
            format!(
                "{n} run(s) this write changes were changed by another writer meanwhile (version {} -> {}): {}{}; \
                 nothing committed, run it again",
                base.version,
                newest.version,
                clashes.join(", "),
                if n > 3 { ", ..." } else { "" }
            ),
        ));
    }
    let mut mine: HashMap<RunId, RunRecord> = HashMap::new();
    let mut added_order: Vec<RunId> = Vec::new();
    for mut r in runs.into_iter().filter(|r| touched.contains(&r.run_id)) {
        match (before.get(&r.run_id), now.get(&r.run_id)) {
            // Points the draft did not rewrite (a record whose files' stats changed) are where
            // the newest version has them (compaction may have moved them).
            (Some(b), Some(n)) if b.segment == r.segment => r.segment = n.segment.clone(),
            (_, None) => added_order.push(r.run_id),
            _ => {}
        }
        mine.insert(r.run_id, r);
    }
    let mut out: Vec<RunRecord> = Vec::with_capacity(newest.runs.len() + added_order.len());
    for r in &newest.runs {
        if touched.contains(&r.run_id) {
            out.extend(mine.remove(&r.run_id)); // replaced, or removed when the draft has none
        } else {
            out.push(r.clone());
        }
    }
    out.extend(added_order.into_iter().filter_map(|id| mine.remove(&id)));
    Ok(out)
}

/// Which versions `compact_with` keeps readable (their manifests and files), besides the one it
/// commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The newest `n` versions, the new one included (`compact --keep N`; 1: only the new one).
    Versions(usize),
    /// Every version that was the newest within this long before now: a reader that opened a
    /// version that long ago or less can finish reading it.
    Recent(Duration),
}

/// The default: versions that were the newest in the last 15 minutes.
impl Default for Keep {
    fn default() -> Self {
        Keep::Recent(Duration::from_secs(15 * 60))
    }
}

#[derive(Debug, Default, Clone)]
pub struct CompactReport {
    pub version: u64,
    pub segments_rewritten: usize,
    pub files_removed: usize,
    pub bytes_freed: u64,
    /// The versions whose manifests and files are still there (the new one and those kept).
    pub versions_kept: Vec<u64>,
}

/// What a write has made so far, with the lock (`Transaction`) or before taking it (`Draft`):
/// the version it changes and the segments it wrote for the next one.
pub struct Pending {
    store: Store,
    pub base: Manifest,
    new_segments: Vec<SegmentEntry>,
}

impl Pending {
    fn new(store: &Store, base: Manifest) -> Pending {
        Pending {
            store: store.clone(),
            base,
            new_segments: Vec::new(),
        }
    }

    /// The version the write makes (a draft's commit may land it later, rebased).
    pub fn version(&self) -> u64 {
        self.base.version + 1
    }

    /// A writer of new segments; `writer` tells concurrent writers' file names apart (names
    /// carry a per-process, per-moment suffix too, so drafts of several processes never clash).
    pub fn segment_writer(&self, writer: usize) -> Result<SegmentWriter> {
        SegmentWriter::new(
            self.store.root.clone(),
            POINTS_DIR,
            self.version(),
            writer,
            self.store.layout,
        )
    }

    pub fn add_segments(&mut self, entries: Vec<SegmentEntry>) {
        self.new_segments.extend(entries);
    }

    /// A failed write (a full disk, a file-size limit, an I/O error) as the user needs it: the
    /// store (absolute path), that nothing was committed and the version it stays at, then the
    /// file and the cause. Other errors pass through.
    pub fn write_failed(&self, e: Error) -> Error {
        write_failed(&self.store.root, self.base.version, e)
    }
}

/// A write in progress: holds the lock until committed or dropped. Dropping it without
/// committing leaves the store as it was (its files are garbage for `compact`).
pub struct Transaction {
    pending: Pending,
    _lock: File,
    /// Write the version's manifest whole (a checkpoint), not as a delta over the base.
    force_checkpoint: bool,
}

impl std::ops::Deref for Transaction {
    type Target = Pending;
    fn deref(&self) -> &Pending {
        &self.pending
    }
}

impl std::ops::DerefMut for Transaction {
    fn deref_mut(&mut self) -> &mut Pending {
        &mut self.pending
    }
}

fn write_failed(root: &Path, base: u64, e: Error) -> Error {
    let is_write =
        matches!(&e, Error::Io { .. }) || matches!(&e, Error::Store { message, .. } if message.starts_with("parquet"));
    if !is_write {
        return e;
    }
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    Error::store(
        root,
        format!("writing failed, nothing committed: the store stays at version {base} ({e})"),
    )
}

impl Transaction {
    fn new(store: &Store, lock: File, base: Manifest) -> Transaction {
        Transaction {
            pending: Pending::new(store, base),
            _lock: lock,
            force_checkpoint: false,
        }
    }

    /// Commit `runs` as the complete runs table of the next version. Segments of the base
    /// version that no run refers to any more are dropped from the manifest.
    ///
    /// Refused with `Error::Internal` (nothing is published) when the new version would not
    /// account for every row written: each run's rows all in the segment its record names, as
    /// many as its `n_points`, its loss series ending at its `final_step`.
    pub fn commit(self, runs: Vec<RunRecord>) -> Result<Manifest> {
        let (root, base) = (self.store.root.clone(), self.base.version);
        self.commit_inner(runs).map_err(|e| write_failed(&root, base, e))
    }

    fn commit_inner(self, runs: Vec<RunRecord>) -> Result<Manifest> {
        let root = &self.store.root;
        let version = self.version();
        let referenced: HashSet<&str> = runs.iter().filter_map(|r| r.segment.as_deref()).collect();
        let segments: Vec<SegmentEntry> = self
            .base
            .segments
            .iter()
            .chain(self.new_segments.iter())
            .filter(|s| referenced.contains(s.file.as_str()))
            .cloned()
            .collect();
        check::check_commit(&runs, &segments, &self.new_segments)?;
        crash_point("after-segments");
        fsync_dir(&root.join(POINTS_DIR))?;
        let mut manifest = Manifest {
            chain: Default::default(),
            xxh3_128: None,
            format: manifest::FORMAT.to_string(),
            version,
            created_at_us: now_us(),
            runs_file: None,
            runs_size: None,
            runs_xxh3_128: None,
            segments,
            runs,
        };
        // The runs table is written with a checkpoint only: a delta's bytes grow with what
        // its commit changed, not with the store (readers build the table from the records).
        let write_runs = |m: &mut Manifest| {
            let runs_name = format!("runs-{version:08}-{}.parquet", unique_suffix());
            let runs_dir = root.join(RUNS_DIR);
            let tmp = runs_dir.join(format!(".tmp-{runs_name}"));
            let written = write_runs_table(&tmp, &m.runs)?;
            fs::rename(&tmp, runs_dir.join(&runs_name)).map_err(|e| Error::io(&tmp, e))?;
            fsync_dir(&runs_dir)?;
            m.runs_file = Some(format!("{RUNS_DIR}/{runs_name}"));
            m.runs_size = Some(written.size);
            m.runs_xxh3_128 = Some(manifest::hex128(written.xxh3_128));
            Ok(())
        };
        let dir = root.join(MANIFEST_DIR);
        manifest::write_version(&dir, &self.base, &mut manifest, self.force_checkpoint, write_runs)?;
        Ok(manifest)
    }
}

/// The runs table's columns before the configuration's.
const RUN_HEAD: &[Field] = &[
    table::field("run_id", Kind::Int64, false),
    table::field("name", Kind::Utf8, false),
    table::field("source", Kind::Utf8, false),
    table::field("format", Kind::Utf8, false),
    table::field("fingerprint", Kind::Utf8, false),
];

/// The runs table's columns after the configuration's (`tags`: the JSON object of the
/// configuration keys that are no run field, typed columns in Python).
const RUN_TAIL: &[Field] = &[
    table::field("tags", Kind::Utf8, false),
    table::field("n_points", Kind::Int64, false),
    table::field("final_step", Kind::Int64, true),
    table::field("final_loss", Kind::Float64, true),
    table::field("smooth_loss", Kind::Float64, true),
    table::field("status", Kind::Utf8, false),
    table::field("n_malformed", Kind::Int64, false),
    table::field("ingested_at", Kind::Timestamp, false),
];

fn config_kind(kind: FieldKind) -> Kind {
    match kind {
        FieldKind::Int => Kind::Int64,
        FieldKind::Float => Kind::Float64,
        FieldKind::Text => Kind::Utf8,
    }
}

/// The runs table's columns: the run's identity, one nullable column per configuration field
/// (`model::CONFIG_FIELDS`, declared once, in its order), then the tags and what ingest found.
pub fn run_fields() -> Vec<Field> {
    let config = CONFIG_FIELDS
        .iter()
        .map(|f| table::field(f.name, config_kind(f.kind), true));
    RUN_HEAD
        .iter()
        .copied()
        .chain(config)
        .chain(RUN_TAIL.iter().copied())
        .collect()
}

fn write_runs_table(path: &Path, runs: &[RunRecord]) -> Result<table::FileSummary> {
    let mut w = TableWriter::create(path, &run_fields(), &[], None)?;
    w.write_row_group(&runs_columns(runs))?;
    w.finish()
}

/// The runs table of `runs` as Parquet bytes in memory: what a reader of a version gets (a
/// version committed as a delta has no table file of its own; its records are the truth).
pub fn runs_table_bytes(runs: &[RunRecord]) -> Result<Vec<u8>> {
    let mut w = TableWriter::in_memory(Path::new("the runs table"), &run_fields())?;
    w.write_row_group(&runs_columns(runs))?;
    w.finish_in_memory()
}

fn runs_columns(runs: &[RunRecord]) -> Vec<Column> {
    let c = |f: fn(&RunRecord) -> Option<i64>| Column::opt_int64(runs.iter().map(f));
    let mut columns = vec![
        Column::int64(runs.iter().map(|r| r.run_id).collect()),
        Column::utf8(runs.iter().map(|r| &r.name)),
        Column::utf8(runs.iter().map(|r| &r.source)),
        Column::utf8(runs.iter().map(|r| &r.format)),
        Column::utf8(runs.iter().map(|r| &r.fingerprint)),
    ];
    for f in CONFIG_FIELDS {
        let values = runs.iter().map(|r| r.config.get(f.name));
        columns.push(match f.kind {
            FieldKind::Int => Column::opt_int64(values.map(|v| match v {
                Some(FieldValue::Int(i)) => Some(i),
                _ => None,
            })),
            FieldKind::Float => Column::opt_float64(values.map(|v| match v {
                Some(FieldValue::Float(x)) => Some(x),
                _ => None,
            })),
            FieldKind::Text => Column::opt_utf8(values.map(|v| match v {
                Some(FieldValue::Text(t)) => Some(t),
                _ => None,
            })),
        });
    }
    columns.extend([
        Column::utf8(
            runs.iter()
                .map(|r| serde_json::to_string(&r.config.tags).unwrap_or_default()),
        ),
        Column::int64(runs.iter().map(|r| r.n_points as i64).collect()),
        c(|r| r.final_step),
        Column::opt_float64(runs.iter().map(|r| r.final_loss)),
        Column::opt_float64(runs.iter().map(|r| r.smooth_loss)),
        Column::utf8(runs.iter().map(|r| &r.status)),
        Column::int64(runs.iter().map(|r| r.n_malformed as i64).collect()),
        Column::int64(runs.iter().map(|r| r.ingested_at_us).collect()),
    ]);
    columns
}

#[cfg(test)]
mod tests;
