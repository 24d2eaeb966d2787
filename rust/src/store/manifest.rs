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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u64,
    pub created_at_us: i64,
    pub runs_file: Option<String>,
    pub segments: Vec<SegmentEntry>,
    pub runs: Vec<RunRecord>,
}

impl Manifest {
    pub fn empty() -> Self {
        Manifest {
            format: FORMAT.into(),
            version: 0,
            created_at_us: 0,
            runs_file: None,
            segments: vec![],
            runs: vec![],
        }
    }
}

pub fn file_name(version: u64) -> String {
    format!("{version:020}.json")
}

fn version_of(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".json")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// The newest manifest in `dir`. Manifests appear whole (hard link of a complete file), so
/// the newest one parses; if it does not (a damaged disk), the one before is used.
pub fn read_latest(dir: &Path) -> Result<Manifest> {
    let mut versions: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().to_str().and_then(version_of)))
        .collect();
    versions.sort_unstable();
    let mut last_err = None;
    for v in versions.into_iter().rev() {
        let path = dir.join(file_name(v));
        let parsed = fs::read(&path).map_err(|e| Error::io(&path, e)).and_then(|b| {
            serde_json::from_slice::<Manifest>(&b).map_err(|e| Error::store(&path, format!("unreadable manifest: {e}")))
        });
        match parsed {
            Ok(m) if m.format == FORMAT => return Ok(m),
            Ok(m) => {
                return Err(Error::store(
                    &path,
                    format!("manifest format '{}' is not '{FORMAT}' (newer steplaw-db?)", m.format),
                ))
            }
            Err(e) => {
                eprintln!("steplaw-db: warning: skipping damaged manifest: {e}");
                last_err = Some(e)
            }
        }
    }
    match last_err {
        None => Ok(Manifest::empty()),
        Some(e) => Err(e),
    }
}

/// Publish `m` as version `m.version`: fails if that version exists (another writer won).
pub fn write_new(dir: &Path, m: &Manifest) -> Result<()> {
    let name = file_name(m.version);
    let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    let body = serde_json::to_vec(m).map_err(|e| Error::store(dir, format!("cannot encode manifest: {e}")))?;
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
