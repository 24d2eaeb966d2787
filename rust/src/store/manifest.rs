//! Numbered manifests: `_manifest/<version, 20 digits>.json`, each the whole state of the
//! store at that version (segment files and the run records).
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::RunRecord;

pub const FORMAT: &str = "steplaw-db/1";

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
}

impl Manifest {
    pub fn empty() -> Self {
        Manifest {
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

/// Parse a manifest file, checking its checksum when it has one.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest> {
    if checksum_matches(bytes) == Some(false) {
        return Err(Error::store(
            path,
            "damaged manifest: its bytes do not match its checksum",
        ));
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

/// The manifest of `version` in `dir`.
pub(super) fn read_version(dir: &Path, version: u64) -> Result<Manifest> {
    let path = dir.join(file_name(version));
    let m = parse(&path, &fs::read(&path).map_err(|e| Error::io(&path, e))?)?;
    if m.format != FORMAT {
        return Err(Error::store(
            &path,
            format!("manifest format '{}' is not '{FORMAT}' (newer steplaw-db?)", m.format),
        ));
    }
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

/// Publish `m` as version `m.version`: fails if that version exists (another writer won).
pub fn write_new(dir: &Path, m: &Manifest) -> Result<()> {
    let name = file_name(m.version);
    let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    let body = match m.xxh3_128 {
        None => serde_json::to_vec(m),
        Some(_) => serde_json::to_vec(&Manifest {
            xxh3_128: None,
            ..m.clone()
        }),
    }
    .map_err(|e| Error::store(dir, format!("cannot encode manifest: {e}")))?;
    let body = with_checksum(&body);
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(&body)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    let target = dir.join(&name);
    let linked = fs::hard_link(&tmp, &target);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => super::fsync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::store(
            dir,
            format!("version {} was committed by another writer meanwhile", m.version),
        )),
        Err(e) => Err(Error::io(&target, e)),
    }
}
