//! Numbered manifests: `_manifest/<version, 20 digits>.json`. Each is either a checkpoint, the
//! whole state of the store at that version (segment files and the run records: format
//! `steplaw-db/1`, what every store before deltas holds), or a delta: what its commit changed
//! over the version before (segments added and dropped, runs changed and removed: format
//! `steplaw-db/1-delta`), so that a commit writes metadata in proportion to what it changes.
//! A version is read as its newest checkpoint at or below it, then the deltas after it in order.
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::RunRecord;

pub const FORMAT: &str = "steplaw-db/1";
/// The format of a delta manifest.
pub const DELTA_FORMAT: &str = "steplaw-db/1-delta";
/// A commit writes a checkpoint rather than a delta when its version's chain would hold this
/// many deltas, or when the chain's deltas would outweigh the checkpoint (reading the version
/// then costs at most about two checkpoints' parsing and this many small files).
pub const MAX_CHAIN: u32 = 32;

/// What a version read through deltas knows of its chain (for the next commit's choice of
/// delta or checkpoint, and for retention, which must keep a kept version's whole chain).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chain {
    /// The checkpoint the version is read from (itself when it is one; 0 for no manifest).
    pub checkpoint: u64,
    /// Deltas after the checkpoint up to the version, and their bytes.
    pub deltas: u32,
    pub delta_bytes: u64,
    /// The checkpoint's bytes (0 when there is none: the next commit writes one).
    pub checkpoint_bytes: u64,
    /// The version whose runs the manifest's runs table holds: the checkpoint's (deltas write
    /// none), or a delta's written before deltas left the table out. The table is the
    /// version's own only when this is the version.
    pub runs_version: u64,
}

/// A delta manifest: what one commit changed over version `base`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delta {
    /// See `Manifest::xxh3_128` (the first key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3_128: Option<String>,
    pub format: String,
    pub version: u64,
    /// The version it changes (the one before it).
    pub base: u64,
    pub created_at_us: i64,
    /// The runs table: absent in the deltas written now (the table is written with each
    /// checkpoint only, so a commit's bytes do not grow with the store); a delta written
    /// before that has the whole table of its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_xxh3_128: Option<String>,
    /// Segments this version adds (after the base's, in order) and the base's it drops.
    pub segments_added: Vec<SegmentEntry>,
    pub segments_dropped: Vec<String>,
    /// Records added or changed (a changed one keeps its place, unless its id is also in
    /// `runs_removed`: then it goes last with the added ones, in this order), and the ids of
    /// the runs removed.
    pub runs_changed: Vec<RunRecord>,
    pub runs_removed: Vec<crate::model::RunId>,
}

impl Delta {
    /// The delta that makes `new` of `base`, or None when applying one would not give `new`
    /// exactly (its runs in another order): then a checkpoint is written.
    pub fn between(base: &Manifest, new: &Manifest) -> Option<Delta> {
        use std::collections::{HashMap, HashSet};
        let new_files: HashSet<&str> = new.segments.iter().map(|s| s.file.as_str()).collect();
        let base_files: HashSet<&str> = base.segments.iter().map(|s| s.file.as_str()).collect();
        let new_ids: HashSet<crate::model::RunId> = new.runs.iter().map(|r| r.run_id).collect();
        let before: HashMap<crate::model::RunId, &RunRecord> = base.runs.iter().map(|r| (r.run_id, r)).collect();
        let same = |a: &RunRecord, b: &RunRecord| serde_json::to_vec(a).ok() == serde_json::to_vec(b).ok();
        let delta = Delta {
            xxh3_128: None,
            format: DELTA_FORMAT.into(),
            version: new.version,
            base: base.version,
            created_at_us: new.created_at_us,
            runs_file: None,
            runs_size: None,
            runs_xxh3_128: None,
            segments_added: new
                .segments
                .iter()
                .filter(|s| !base_files.contains(s.file.as_str()))
                .cloned()
                .collect(),
            segments_dropped: base
                .segments
                .iter()
                .filter(|s| !new_files.contains(s.file.as_str()))
                .map(|s| s.file.clone())
                .collect(),
            runs_changed: new
                .runs
                .iter()
                .filter(|r| before.get(&r.run_id).is_none_or(|b| !same(b, r)))
                .cloned()
                .collect(),
            runs_removed: base
                .runs
                .iter()
                .filter(|r| !new_ids.contains(&r.run_id))
                .map(|r| r.run_id)
                .collect(),
        };
        let ids = |m: &Manifest| m.runs.iter().map(|r| r.run_id).collect::<Vec<_>>();
        let files = |m: &Manifest| m.segments.iter().map(|s| s.file.clone()).collect::<Vec<_>>();
        let gives_new = |d: &Delta| {
            let mut check = base.clone();
            d.apply_to(&mut check);
            ids(&check) == ids(new) && files(&check) == files(new)
        };
        if gives_new(&delta) {
            return Some(delta);
        }
        // Changed runs that went to the end (a writer that appends what it rewrote): removed
        // from their place and added after the others.
        let mut moved = delta;
        moved.runs_removed.extend(
            moved
                .runs_changed
                .iter()
                .map(|r| r.run_id)
                .filter(|id| before.contains_key(id)),
        );
        gives_new(&moved).then_some(moved)
    }

    /// Make `m` (the base version) the version this delta commits.
    pub fn apply_to(&self, m: &mut Manifest) {
        use std::collections::{HashMap, HashSet};
        let dropped: HashSet<&str> = self.segments_dropped.iter().map(String::as_str).collect();
        m.segments.retain(|s| !dropped.contains(s.file.as_str()));
        m.segments.extend(self.segments_added.iter().cloned());
        let removed: HashSet<crate::model::RunId> = self.runs_removed.iter().copied().collect();
        let mut changed: HashMap<crate::model::RunId, &RunRecord> =
            self.runs_changed.iter().map(|r| (r.run_id, r)).collect();
        let mut runs = Vec::with_capacity(m.runs.len() + self.runs_changed.len());
        for r in m.runs.drain(..) {
            if removed.contains(&r.run_id) {
                continue;
            }
            match changed.remove(&r.run_id) {
                Some(new) => runs.push(new.clone()),
                None => runs.push(r),
            }
        }
        runs.extend(
            self.runs_changed
                .iter()
                .filter(|r| changed.contains_key(&r.run_id))
                .cloned(),
        );
        m.runs = runs;
        m.version = self.version;
        m.created_at_us = self.created_at_us;
        if self.runs_file.is_some() {
            m.runs_file = self.runs_file.clone();
            m.runs_size = self.runs_size;
            m.runs_xxh3_128 = self.runs_xxh3_128.clone();
            m.chain.runs_version = self.version;
        }
    }
}

/// One manifest file as written: a checkpoint or a delta.
pub enum ManifestFile {
    Checkpoint(Manifest),
    Delta(Delta),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Path relative to the store root.
    pub file: String,
    pub rows: u64,
    /// Runs whose points this file holds; a run whose record names another segment was
    /// replaced, and its rows here are dead.
    pub run_ids: Vec<crate::model::RunId>,
    /// Rows of each run of `run_ids`, in the same order. Absent in stores written before
    /// steplaw-db kept it (then only the total is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_rows: Option<Vec<u64>>,
    /// The file's size in bytes and its xxh3-128 (32 hex digits). Absent in stores written
    /// before checksums: such files are read unverified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3_128: Option<String>,
    /// What the writer put in the file of each run (rows, each metric's last step), for the
    /// commit's check that every written row is accounted for. Not stored.
    #[serde(skip)]
    pub(super) written: Vec<(crate::model::RunId, super::points::RunTally)>,
}

impl SegmentEntry {
    /// Rows of `run_id` in this file, when the manifest says (stores before `run_rows`: None).
    pub fn rows_of(&self, run_id: crate::model::RunId) -> Option<u64> {
        let i = self.run_ids.iter().position(|&id| id == run_id)?;
        self.run_rows.as_ref().and_then(|r| r.get(i).copied())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// xxh3-128 of the manifest file's bytes without this field (see `write_new`). Absent in
    /// manifests written before checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3_128: Option<String>,
    pub format: String,
    pub version: u64,
    pub created_at_us: i64,
    pub runs_file: Option<String>,
    /// The runs file's size in bytes and xxh3-128 (absent before checksums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_xxh3_128: Option<String>,
    pub segments: Vec<SegmentEntry>,
    pub runs: Vec<RunRecord>,
    /// How this version was read (not stored).
    #[serde(skip)]
    pub chain: Chain,
}

impl Manifest {
    /// Whether `runs_file` is this version's own runs table (written by its checkpoint), not
    /// the table of the checkpoint a delta version is read through.
    pub fn runs_table_current(&self) -> bool {
        self.runs_file.is_some() && self.chain.runs_version == self.version
    }

    pub fn empty() -> Self {
        Manifest {
            chain: Chain::default(),
            xxh3_128: None,
            format: FORMAT.into(),
            version: 0,
            created_at_us: 0,
            runs_file: None,
            runs_size: None,
            runs_xxh3_128: None,
            segments: vec![],
            runs: vec![],
        }
    }
}

/// A checksum as the manifest spells it: 32 lowercase hex digits.
pub fn hex128(x: u128) -> String {
    format!("{x:032x}")
}

/// The manifest file of `body` (the JSON of a manifest without its checksum): the checksum of
/// `body` goes in as the first key, so the file stays plain JSON and the hashed bytes are found
/// again by taking it out.
pub(super) fn with_checksum(body: &[u8]) -> Vec<u8> {
    let sum = hex128(xxhash_rust::xxh3::xxh3_128(body));
    let mut out = Vec::with_capacity(body.len() + CHECKSUM_PREFIX.len() + 34);
    out.extend_from_slice(CHECKSUM_PREFIX.as_bytes());
    out.extend_from_slice(sum.as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(&body[1..]);
    out
}

const CHECKSUM_PREFIX: &str = "{\"xxh3_128\":\"";

/// Whether the manifest file's bytes match the checksum they carry: Some(true) or
/// Some(false), None for a manifest written without one.
pub fn checksum_matches(file: &[u8]) -> Option<bool> {
    let rest = file.strip_prefix(CHECKSUM_PREFIX.as_bytes())?;
    let (Some(sum), Some(tail)) = (rest.get(..32), rest.get(32..)) else {
        return Some(false);
    };
    let Some(tail) = tail.strip_prefix(b"\",") else {
        return Some(false);
    };
    let mut body = Vec::with_capacity(tail.len() + 1);
    body.push(b'{');
    body.extend_from_slice(tail);
    Some(hex128(xxhash_rust::xxh3::xxh3_128(&body)).as_bytes() == sum)
}

/// Whether the manifest file's bytes are a delta's: its `format` is the key after the checksum.
fn is_delta(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(CHECKSUM_PREFIX.len() + 34 + 40)];
    let key = format!("\"format\":\"{DELTA_FORMAT}\"");
    memchr::memmem::find(head, key.as_bytes()).is_some()
}

/// Parse a manifest file (a checkpoint or a delta), checking its checksum when it has one.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<ManifestFile> {
    if !is_delta(bytes) {
        return parse(path, bytes).map(ManifestFile::Checkpoint);
    }
    if checksum_matches(bytes) != Some(true) {
        return Err(Error::store(
            path,
            "damaged manifest: its bytes do not match its checksum",
        ));
    }
    let d = serde_json::from_slice::<Delta>(bytes)
        .map_err(|e| Error::store(path, format!("damaged manifest (unreadable): {e}")))?;
    check_name(path, d.version)?;
    if d.format != DELTA_FORMAT {
        return Err(Error::store(
            path,
            format!("manifest format '{}' is not '{DELTA_FORMAT}'", d.format),
        ));
    }
    let runs = d.runs_changed.iter().filter_map(|r| r.segment.as_deref());
    let files = d.segments_added.iter().map(|s| s.file.as_str());
    let dropped = d.segments_dropped.iter().map(String::as_str);
    if let Some(bad) = d
        .runs_file
        .as_deref()
        .into_iter()
        .chain(files)
        .chain(runs)
        .chain(dropped)
        .find(|p| !is_store_path(p))
    {
        return Err(Error::store(
            path,
            format!("damaged manifest: it names a file outside the store's points/ and runs/: '{bad}'"),
        ));
    }
    Ok(ManifestFile::Delta(d))
}

/// A manifest named for one version whose content is another's is a stray.
fn check_name(path: &Path, version: u64) -> Result<()> {
    let named = path.file_name().and_then(|n| n.to_str()).and_then(version_of);
    if let Some(v) = named.filter(|&v| v != version) {
        return Err(Error::store(
            path,
            format!("stray manifest: its name says version {v}, its content version {version}"),
        ));
    }
    Ok(())
}

/// Parse a checkpoint manifest file, checking its checksum when it has one.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest> {
    if checksum_matches(bytes) == Some(false) {
        return Err(Error::store(
            path,
            "damaged manifest: its bytes do not match its checksum",
        ));
    }
    if is_delta(bytes) {
        return Err(Error::store(path, "a delta manifest where a checkpoint was expected"));
    }
    let m = serde_json::from_slice::<Manifest>(bytes)
        .map_err(|e| Error::store(path, format!("damaged manifest (unreadable): {e}")))?;
    // A manifest that records its files' checksums was written with its own: a damaged first
    // key must not pass it off as one written before checksums.
    if m.runs_xxh3_128.is_some() && checksum_matches(bytes).is_none() {
        return Err(Error::store(path, "damaged manifest: its checksum is missing"));
    }
    let named = path.file_name().and_then(|n| n.to_str()).and_then(version_of);
    if let Some(v) = named.filter(|&v| v != m.version) {
        return Err(Error::store(
            path,
            format!(
                "stray manifest: its name says version {v}, its content version {}",
                m.version
            ),
        ));
    }
    if let Some(bad) = outside_paths(&m).first() {
        return Err(Error::store(
            path,
            format!("damaged manifest: it names a file outside the store's points/ and runs/: '{bad}'"),
        ));
    }
    Ok(m)
}

/// Whether `rel`, a path a manifest names (relative to the store root), stays inside the
/// store: `points/<name>` or `runs/<name>`, no `..`, not absolute.
pub fn is_store_path(rel: &str) -> bool {
    use std::path::Component;
    let mut parts = Path::new(rel).components();
    let dir_ok = matches!(parts.next(), Some(Component::Normal(d)) if d == "points" || d == "runs");
    dir_ok && matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none()
}

/// The paths `m` names that are not inside the store (see `is_store_path`).
fn outside_paths(m: &Manifest) -> Vec<&str> {
    let runs = m.runs.iter().filter_map(|r| r.segment.as_deref());
    let files = m.segments.iter().map(|s| s.file.as_str());
    m.runs_file
        .as_deref()
        .into_iter()
        .chain(files)
        .chain(runs)
        .filter(|p| !is_store_path(p))
        .collect()
}

pub fn file_name(version: u64) -> String {
    format!("{version:020}.json")
}

pub(super) fn version_of(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".json")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// The versions whose manifests are in `dir`, ascending.
pub(super) fn versions(dir: &Path) -> Result<Vec<u64>> {
    let mut versions: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().to_str().and_then(version_of)))
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// The manifest of `version` in `dir`: its checkpoint with the deltas after it applied. A
/// damaged or missing file of the chain is an error naming it (and the version read).
pub(super) fn read_version(dir: &Path, version: u64) -> Result<Manifest> {
    let mut deltas: Vec<Delta> = Vec::new();
    let mut delta_bytes = 0u64;
    let mut v = version;
    let (mut m, checkpoint_bytes) = loop {
        let path = dir.join(file_name(v));
        let in_chain = |e: Error| match e {
            Error::Store { path, message } if v != version => Error::Store {
                path,
                message: format!(
                    "{message} (version {v}, a delta or checkpoint that version {version} is read through)"
                ),
            },
            e => e,
        };
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && v != version => {
                return Err(in_chain(Error::store(&path, "damaged store: this manifest is missing")))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        match parse_file(&path, &bytes).map_err(in_chain)? {
            ManifestFile::Checkpoint(m) => {
                if m.format != FORMAT {
                    return Err(Error::store(
                        &path,
                        format!("manifest format '{}' is not '{FORMAT}' (newer steplaw-db?)", m.format),
                    ));
                }
                break (m, bytes.len() as u64);
            }
            ManifestFile::Delta(d) => {
                if d.base >= d.version || deltas.len() as u32 > MAX_CHAIN * 4 {
                    return Err(in_chain(Error::store(
                        &path,
                        format!("damaged manifest: its base is version {}", d.base),
                    )));
                }
                delta_bytes += bytes.len() as u64;
                v = d.base;
                deltas.push(d);
            }
        }
    };
    m.chain = Chain {
        checkpoint: m.version,
        deltas: deltas.len() as u32,
        delta_bytes,
        checkpoint_bytes,
        runs_version: m.version,
    };
    for d in deltas.iter().rev() {
        d.apply_to(&mut m);
    }
    m.xxh3_128 = None;
    Ok(m)
}

/// The newest manifest in `dir` (an empty one if there is none). Manifests appear whole (hard
/// link of a complete file), so the newest one parses; if it does not (a damaged disk, a stray
/// file), that is an error naming it: falling back to an older version would silently hide what
/// the newest committed, and make every later commit fail.
pub fn read_latest(dir: &Path) -> Result<Manifest> {
    let versions = versions(dir)?;
    let Some(&newest) = versions.last() else {
        return Ok(Manifest::empty());
    };
    match read_version(dir, newest) {
        Ok(m) => Ok(m),
        Err(Error::Store { path, message }) => {
            let intact = versions[..versions.len() - 1]
                .iter()
                .rev()
                .find(|&&v| read_version(dir, v).is_ok());
            let back = intact.map_or("an empty store".to_string(), |v| format!("version {v}"));
            Err(Error::store(
                path,
                format!(
                    "{message} (version {newest}, the newest); `steplaw-db check --repair` sets it aside and rolls \
                     the store back to {back}, the newest intact one"
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// `read_latest`, shared: the newest manifest parsed once per process (manifests are immutable:
/// written whole under a temporary name and linked into place), so a reader that opens the
/// store again and again (one run's points at a time) does not parse it each time. The cache
/// is keyed by the newest manifest's name, size, modification time and inode, so a new
/// version, or one set aside by `repair`, is read afresh.
pub fn read_latest_shared(dir: &Path) -> Result<std::sync::Arc<Manifest>> {
    use std::sync::{Arc, Mutex, OnceLock};
    type Key = (std::path::PathBuf, u64, Option<std::time::SystemTime>, u64);
    type Cache = Mutex<Vec<(Key, Arc<Manifest>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let Some(&newest) = versions(dir)?.last() else {
        return Ok(Arc::new(Manifest::empty()));
    };
    let path = dir.join(file_name(newest));
    let key: Option<Key> = fs::metadata(&path).ok().map(|meta| {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let ino = 0;
        (path.clone(), meta.len(), meta.modified().ok(), ino)
    });
    let cache = CACHE.get_or_init(Default::default);
    if let Some(key) = &key {
        let cached = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = cached.iter().find(|(k, _)| k == key) {
            return Ok(m.clone());
        }
    }
    let m = Arc::new(read_latest(dir)?);
    if let Some(key) = key.filter(|k| k.0 == dir.join(file_name(m.version))) {
        let mut cached = cache.lock().unwrap_or_else(|e| e.into_inner());
        // One store's newest version each (a few stores per process at most).
        cached.retain(|(k, _)| k.0.parent() != key.0.parent());
        cached.push((key, m.clone()));
    }
    Ok(m)
}

/// Publish `m` as version `m.version`, as a delta over `base` (the version it was committed
/// over) unless a checkpoint is due (`force_checkpoint`, no base manifest, a long chain, or
/// deltas that would outweigh the checkpoint): fails if that version exists (another writer
/// won). A checkpoint comes with the whole runs table: `write_runs_table` writes it and names it
/// in `m` first; a delta leaves `m` read through the base's table. Sets `m.chain`.
pub fn write_version(
    dir: &Path,
    base: &Manifest,
    m: &mut Manifest,
    force_checkpoint: bool,
    write_runs_table: impl FnOnce(&mut Manifest) -> Result<()>,
) -> Result<()> {
    let encode =
        |r: serde_json::Result<Vec<u8>>| r.map_err(|e| Error::store(dir, format!("cannot encode manifest: {e}")));
    let chain = base.chain;
    let delta = (!force_checkpoint && chain.checkpoint_bytes > 0 && chain.deltas + 1 < MAX_CHAIN)
        .then(|| Delta::between(base, m))
        .flatten();
    if let Some(d) = delta {
        let body = with_checksum(&encode(serde_json::to_vec(&d))?);
        let bytes = body.len() as u64;
        if chain.delta_bytes + bytes <= chain.checkpoint_bytes {
            super::crash_point("before-manifest");
            write_bytes(dir, m.version, &body)?;
            m.runs_file = base.runs_file.clone();
            m.runs_size = base.runs_size;
            m.runs_xxh3_128 = base.runs_xxh3_128.clone();
            m.chain = Chain {
                deltas: chain.deltas + 1,
                delta_bytes: chain.delta_bytes + bytes,
                ..chain
            };
            return Ok(());
        }
    }
    write_runs_table(m)?;
    let body = with_checksum(&encode(serde_json::to_vec(&Manifest {
        xxh3_128: None,
        ..m.clone()
    }))?);
    super::crash_point("before-manifest");
    write_bytes(dir, m.version, &body)?;
    m.chain = Chain {
        checkpoint: m.version,
        deltas: 0,
        delta_bytes: 0,
        checkpoint_bytes: body.len() as u64,
        runs_version: m.version,
    };
    Ok(())
}

/// Publish a manifest file's bytes as `version`: fails if that version exists.
fn write_bytes(dir: &Path, version: u64, body: &[u8]) -> Result<()> {
    let name = file_name(version);
    let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(body)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    let target = dir.join(&name);
    let linked = fs::hard_link(&tmp, &target);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => super::fsync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::store(
            dir,
            format!("version {version} was committed by another writer meanwhile"),
        )),
        Err(e) => Err(Error::io(&target, e)),
    }
}
