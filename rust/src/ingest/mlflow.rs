//! MLflow runs, read without MLflow: the file store (`mlruns/<experiment>/<run>/`: `meta.yaml`,
//! `metrics/<key>` with lines `timestamp value step`, `params/<key>`, `tags/<key>`; a key with
//! `/` is a sub-directory) and the SQLite backend (`mlflow.db`: tables `runs`, `metrics`,
//! `params`, `tags`). One run per MLflow run: its name (`run_name`, else the `mlflow.runName`
//! tag), its params as configuration, its status (FINISHED is complete; RUNNING, FAILED,
//! KILLED and SCHEDULED runs are incomplete), every metric point with its step. Deleted runs
//! (`lifecycle_stage: deleted`) are passed over.
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use super::discover::RunSource;
use super::read::Fingerprint;
use super::series::RunParse;
use super::wandb_run::{problem, Tracked};
use super::Format;
use crate::error::{Error, Result};
use crate::model::{canonical_field, status};

const META: &str = "meta.yaml";
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Is this file an MLflow run's `meta.yaml` (beside `metrics/` or `params/`, naming a run)
/// or an MLflow SQLite database?
pub fn is_mlflow_file(path: &Path, name: &str) -> bool {
    if name == META {
        let dir = path.parent().unwrap_or(Path::new(""));
        return (dir.join("metrics").is_dir() || dir.join("params").is_dir())
            && std::fs::read_to_string(path).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.starts_with("run_uuid:") || l.starts_with("run_id:"))
            });
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(ext.as_str(), "db" | "sqlite" | "sqlite3") && is_db(path)
}

fn is_db(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 16];
    let is_sqlite = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == SQLITE_MAGIC;
    is_sqlite
        && open(path).is_ok_and(|c| {
            let n: i64 = c
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('runs', 'metrics', 'params')",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            n == 3
        })
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    // A tracking server may be writing: wait for its lock rather than fail.
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

fn db_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::parse(path.display().to_string(), format!("MLflow SQLite database: {e}"))
}

/// The fields of a run's `meta.yaml` (flat YAML).
fn read_meta(path: &Path) -> Option<serde_json::Map<String, Value>> {
    let bytes = std::fs::read(path).ok()?;
    match serde_saphyr::from_slice::<Value>(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

/// MLflow's RunStatus, by number (the file store writes numbers) or name; None if unknown.
fn status_name(v: &Value) -> Option<&'static str> {
    const NAMES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];
    match v {
        Value::Number(n) => n
            .as_u64()
            .filter(|&i| (1..=5).contains(&i))
            .map(|i| NAMES[i as usize - 1]),
        Value::String(s) => NAMES.iter().find(|n| n.eq_ignore_ascii_case(s)).copied(),
        _ => None,
    }
}

/// The ingest's verdict on an MLflow status.
fn verdict(name: &str, status_of: &str, out: &mut RunParse) -> &'static str {
    if status_of == "FINISHED" {
        status::COMPLETE
    } else {
        out.notes
            .push(format!("MLflow run '{name}' has status {status_of}: incomplete"));
        status::INCOMPLETE
    }
}

/// Every file below `dir`, sorted (metric keys with `/` are nested directories).
fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(listing) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = listing.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_below(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

/// Take the MLflow files out of a directory's files and make their runs: a file-store run's
/// `meta.yaml` becomes one run with all its metric, param and tag files; a database, one
/// run per run it holds. The other files are returned.
pub fn split(
    key: &str,
    dir: &Path,
    files: Vec<(PathBuf, Format)>,
    runs: &mut Vec<RunSource>,
) -> Vec<(PathBuf, Format)> {
    let (mine, rest): (Vec<_>, Vec<_>) = files.into_iter().partition(|(_, f)| *f == Format::Mlflow);
    for (path, _) in mine {
        if path.file_name().is_some_and(|n| n == META) {
            file_store_run(key, &path, runs);
        } else {
            db_runs(&path, dir, runs);
        }
    }
    rest
}

fn file_store_run(key: &str, meta_path: &Path, runs: &mut Vec<RunSource>) {
    let dir = meta_path.parent().unwrap_or(Path::new("")).to_path_buf();
    let meta = read_meta(meta_path).unwrap_or_default();
    if text(meta.get("lifecycle_stage")).as_deref() == Some("deleted") {
        return;
    }
    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_string();
    let name = text(meta.get("run_name"))
        .or_else(|| {
            std::fs::read_to_string(dir.join("tags").join("mlflow.runName"))
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or(dir_name);
    let mut files = vec![(meta_path.to_path_buf(), Format::Mlflow)];
    for sub in ["params", "metrics", "tags"] {
        let mut found = Vec::new();
        files_below(&dir.join(sub), &mut found);
        files.extend(found.into_iter().map(|p| (p, Format::Mlflow)));
    }
    runs.push(RunSource {
        key: key.to_string(),
        name,
        dir,
        files,
        member: None,
    });
}

fn db_runs(path: &Path, dir: &Path, runs: &mut Vec<RunSource>) {
    let db_key = path.to_string_lossy().into_owned();
    let listed = open(path).and_then(|c| {
        let mut st = c.prepare("SELECT run_uuid, name, lifecycle_stage FROM runs ORDER BY start_time, run_uuid")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    });
    match listed {
        Ok(listed) => {
            for (uuid, name, stage) in listed {
                if stage.as_deref() == Some("deleted") {
                    continue;
                }
                runs.push(RunSource {
                    key: format!("{db_key}#{uuid}"),
                    name: name.filter(|n| !n.is_empty()).unwrap_or_else(|| uuid.clone()),
                    dir: dir.to_path_buf(),
                    files: vec![(path.to_path_buf(), Format::Mlflow)],
                    member: Some(uuid),
                });
            }
        }
        // Unreadable now (it was readable when classified): its run fails with the reason.
        Err(_) => runs.push(RunSource {
            key: db_key,
            name: dir.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_string(),
            dir: dir.to_path_buf(),
            files: vec![(path.to_path_buf(), Format::Mlflow)],
            member: None,
        }),
    }
}

/// Read one file of an MLflow run (or, for a database, the run `src.member`) into `out`.
pub fn read(src: &RunSource, path: &Path, out: &mut RunParse, fp: &mut Fingerprint) -> Result<Tracked> {
    let rel = path.strip_prefix(&src.dir).unwrap_or(path);
    let in_file_store = rel == Path::new(META) || ["params", "metrics", "tags"].iter().any(|d| rel.starts_with(d));
    if src.member.is_some() || !in_file_store {
        return read_db(src, path, out, fp);
    }
    let data = super::read::read_file(path)?;
    fp.add_file(&data);
    let label = path.display().to_string();
    let mut parts = rel.iter().filter_map(|c| c.to_str());
    let (Some(kind), rest) = (parts.next(), parts.collect::<Vec<_>>()) else {
        return Ok(Tracked::default());
    };
    let mut tracked = Tracked {
        bytes: data.len() as u64,
        status: None,
    };
    let text_of = || String::from_utf8_lossy(&data).into_owned();
    match (kind, rest.is_empty()) {
        (META, true) => {
            let meta = read_meta(path).unwrap_or_default();
            match meta.get("status").and_then(status_name) {
                Some(s) => tracked.status = Some(verdict(&src.name, s, out)),
                None => problem(out, &label, "no run status this reader knows".into()),
            }
        }
        ("params", false) => set_param(&rest.join("/"), text_of().trim(), &label, out),
        ("metrics", false) => metric_lines(&rest.join("/"), &data, &label, out),
        _ => {}
    }
    Ok(tracked)
}

/// Set a configuration field from a param. Loggers flatten nested hyperparameters
/// (Lightning: `model/lr`, others `optim.lr`): a key this reader does not know is tried by its
/// last part, which fills a field only while no param has set it (an exact key always wins).
/// Every param that is not exactly a field's key is also kept as a tag under its own key (a
/// typed column of the runs table), whatever order the params are read in.
fn set_param(key: &str, value: &str, label: &str, out: &mut RunParse) {
    let field_key = match canonical_field(key) {
        Some(_) => Some(key),
        None => {
            out.config.tags.insert(key.to_string(), value.to_string());
            match key.rsplit_once(['/', '.']) {
                Some((_, last)) if canonical_field(last).is_some_and(|f| !out.config.is_set(f)) => Some(last),
                _ => None,
            }
        }
    };
    if let Some(field_key) = field_key {
        if let Err(e) = out.config.set(field_key, value, false) {
            problem(out, label, format!("param '{key}': {e}"));
        }
    }
}

/// Push a metric's points (`(step, value)` in logging order). A metric logged without steps
/// has every point at step 0 (MLflow's default): its points are numbered in order instead,
/// so none is lost to the restart rule.
fn push_metric(key: &str, points: &[(i64, f64)], label: &str, out: &mut RunParse) {
    let unstepped = points.len() > 1 && points.iter().all(|(s, _)| *s == 0);
    if unstepped {
        out.notes.push(format!(
            "{label}: metric '{key}' was logged without steps (all at step 0): its {} points are numbered \
             in logging order",
            points.len()
        ));
    }
    let mut b = out.take_builder(key);
    for (i, &(step, v)) in points.iter().enumerate() {
        b.push(if unstepped { i as i64 } else { step }, v, None, None);
    }
    out.put_builder(b);
}

/// A file-store metric file: lines `timestamp value [step]`.
fn metric_lines(key: &str, data: &[u8], label: &str, out: &mut RunParse) {
    let mut points = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let value = fields.get(1).and_then(|v| v.parse::<f64>().ok());
        let step = match fields.get(2) {
            Some(s) => s.parse::<i64>().ok(),
            None => Some(0),
        };
        match (fields.len(), value, step) {
            (2 | 3, Some(v), Some(s)) => points.push((s, v)),
            _ => out.malformed(label, i as u64 + 1, || format!("not 'timestamp value step': {line:?}")),
        }
    }
    push_metric(key, &points, label, out);
}

fn read_db(src: &RunSource, path: &Path, out: &mut RunParse, fp: &mut Fingerprint) -> Result<Tracked> {
    let label = path.display().to_string();
    let Some(uuid) = src.member.as_deref() else {
        return Err(Error::parse(
            label,
            "not an MLflow database (tables runs, metrics, params)",
        ));
    };
    let c = open(path).map_err(|e| db_error(path, e))?;
    let err = |e| db_error(path, e);
    // What the fingerprint sees: the run's rows, not the whole database (other runs change it).
    let mut rows: Vec<u8> = Vec::new();
    let (status_of, stage): (Option<String>, Option<String>) = c
        .query_row(
            "SELECT status, lifecycle_stage FROM runs WHERE run_uuid = ?1",
            [uuid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(err)?;
    for s in [&status_of, &stage] {
        rows.extend_from_slice(s.as_deref().unwrap_or_default().as_bytes());
        rows.push(0);
    }
    let mut st = c
        .prepare("SELECT key, value FROM params WHERE run_uuid = ?1 ORDER BY key")
        .map_err(err)?;
    let params = st
        .query_map([uuid], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))
        .map_err(err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(err)?;
    for (k, v) in &params {
        let v = v.as_deref().unwrap_or_default();
        rows.extend_from_slice(k.as_bytes());
        rows.push(0);
        rows.extend_from_slice(v.as_bytes());
        rows.push(0);
        set_param(k, v.trim(), &format!("{label} ({uuid})"), out);
    }
    // Older schemas lack `step` (MLflow < 1.0) or `is_nan` (< 1.4).
    let columns: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('metrics')")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(err)?;
    let has = |n: &str| columns.iter().any(|c| c == n);
    let sql = format!(
        "SELECT key, value, {}, {}, timestamp FROM metrics WHERE run_uuid = ?1 ORDER BY key, timestamp, {}",
        if has("step") { "step" } else { "0" },
        if has("is_nan") { "is_nan" } else { "0" },
        if has("step") { "step" } else { "rowid" },
    );
    let mut st = c.prepare(&sql).map_err(err)?;
    let mut q = st.query([uuid]).map_err(err)?;
    let mut current: Option<String> = None;
    let mut points: Vec<(i64, f64)> = Vec::new();
    let metric_label = format!("{label} ({uuid})");
    while let Some(r) = q.next().map_err(err)? {
        let key: String = r.get(0).map_err(err)?;
        let value: Option<f64> = r.get(1).map_err(err)?;
        let step: i64 = r.get(2).map_err(err)?;
        let is_nan: bool = r.get::<_, Option<bool>>(3).map_err(err)?.unwrap_or(false);
        let ts: i64 = r.get::<_, Option<i64>>(4).map_err(err)?.unwrap_or(0);
        let v = if is_nan { f64::NAN } else { value.unwrap_or(f64::NAN) };
        if current.as_deref() != Some(key.as_str()) {
            if let Some(k) = current.take() {
                push_metric(&k, &points, &metric_label, out);
                points.clear();
            }
            rows.extend_from_slice(key.as_bytes());
            rows.push(0);
            current = Some(key);
        }
        rows.extend_from_slice(&step.to_le_bytes());
        rows.extend_from_slice(&v.to_bits().to_le_bytes());
        rows.extend_from_slice(&ts.to_le_bytes());
        points.push((step, v));
    }
    if let Some(k) = current {
        push_metric(&k, &points, &metric_label, out);
    }
    fp.add_file(&rows);
    let tracked_status = match status_of.as_deref().and_then(|s| status_name(&Value::String(s.into()))) {
        Some(s) => Some(verdict(&src.name, s, out)),
        None => {
            problem(out, &metric_label, "no run status this reader knows".into());
            None
        }
    };
    Ok(Tracked {
        bytes: rows.len() as u64,
        status: tracked_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_store(root: &Path) -> PathBuf {
        let run = root.join("mlruns").join("1").join("0123abcd");
        std::fs::create_dir_all(run.join("metrics").join("train")).unwrap();
        std::fs::create_dir_all(run.join("params")).unwrap();
        std::fs::create_dir_all(run.join("tags")).unwrap();
        std::fs::write(
            root.join("mlruns").join("1").join("meta.yaml"),
            "experiment_id: '1'\nname: sweep\nlifecycle_stage: active\n",
        )
        .unwrap();
        std::fs::write(
            run.join("meta.yaml"),
            "artifact_uri: file:///x\nend_time: 2\nexperiment_id: '1'\nlifecycle_stage: active\nrun_id: 0123abcd\n\
             run_name: lr1e-3_bs32\nrun_uuid: 0123abcd\nstart_time: 1\nstatus: 3\ntags: []\nuser_id: me\n",
        )
        .unwrap();
        std::fs::write(
            run.join("metrics").join("loss"),
            "100 5.0 0\n101 4.5 10\n102 nan 20\n103 4.0 30\n",
        )
        .unwrap();
        std::fs::write(
            run.join("metrics").join("train").join("lr"),
            "100 0.001 0\n101 0.0005 10\n",
        )
        .unwrap();
        std::fs::write(run.join("metrics").join("acc"), "100 0.1\n101 0.2\n102 0.3\n").unwrap();
        std::fs::write(run.join("params").join("lr"), "0.001").unwrap();
        std::fs::write(run.join("params").join("batch_size"), "32").unwrap();
        std::fs::write(run.join("params").join("optimizer"), "adamw").unwrap();
        std::fs::create_dir_all(run.join("params").join("model")).unwrap();
        std::fs::write(run.join("params").join("model").join("n_layer"), "12").unwrap();
        std::fs::write(run.join("params").join("model").join("lr"), "0.5").unwrap();
        std::fs::write(run.join("tags").join("mlflow.runName"), "lr1e-3_bs32").unwrap();
        run
    }

    fn read_source(src: &RunSource) -> (RunParse, Vec<Tracked>) {
        let mut out = RunParse::default();
        let mut fp = Fingerprint::default();
        let t = src
            .files
            .iter()
            .map(|(p, _)| read(src, p, &mut out, &mut fp).unwrap())
            .collect();
        (out, t)
    }

    #[test]
    fn a_file_store_run() {
        let dir = tempfile::tempdir().unwrap();
        let run = file_store(dir.path());
        let meta = run.join("meta.yaml");
        assert!(is_mlflow_file(&meta, "meta.yaml"));
        assert!(!is_mlflow_file(&dir.path().join("mlruns/1/meta.yaml"), "meta.yaml"));
        let mut runs = Vec::new();
        let rest = split("k", &run, vec![(meta, Format::Mlflow)], &mut runs);
        assert!(rest.is_empty());
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].name, "lr1e-3_bs32");
        assert_eq!(runs[0].files.len(), 1 + 5 + 3 + 1);
        let (out, tracked) = read_source(&runs[0]);
        assert_eq!(tracked[0].status, Some(status::COMPLETE));
        let loss = &out.series["loss"].series;
        assert_eq!(loss.steps, vec![0, 10, 20, 30]);
        assert!(loss.values[2].is_nan());
        assert_eq!(out.series["train/lr"].series.values, vec![0.001, 0.0005]);
        assert_eq!(out.series["acc"].series.steps, vec![0, 1, 2]); // unstepped: numbered
        assert_eq!((out.config.lr, out.config.bs), (Some(1e-3), Some(32)));
        // Flattened nested params by their last part; an exact key wins (`lr` over `model/lr`).
        assert_eq!(out.config.numl, Some(12));
        // every other param is kept: a tag under its own key
        let tags: Vec<(&str, &str)> = out.config.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            tags,
            [("model/lr", "0.5"), ("model/n_layer", "12"), ("optimizer", "adamw")]
        );
        assert_eq!(out.malformed, 0, "{:?}", out.messages);
    }

    #[test]
    fn failed_and_deleted_runs() {
        let dir = tempfile::tempdir().unwrap();
        let run = file_store(dir.path());
        let meta = run.join("meta.yaml");
        let text = std::fs::read_to_string(&meta).unwrap();
        std::fs::write(&meta, text.replace("status: 3", "status: 4")).unwrap();
        let mut runs = Vec::new();
        split("k", &run, vec![(meta.clone(), Format::Mlflow)], &mut runs);
        let (out, tracked) = read_source(&runs[0]);
        assert_eq!(tracked[0].status, Some(status::INCOMPLETE));
        assert!(out.notes[0].contains("FAILED"), "{:?}", out.notes);
        std::fs::write(
            &meta,
            text.replace("lifecycle_stage: active", "lifecycle_stage: deleted"),
        )
        .unwrap();
        let mut runs = Vec::new();
        split("k", &run, vec![(meta, Format::Mlflow)], &mut runs);
        assert!(runs.is_empty());
    }

    #[test]
    fn a_sqlite_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mlflow.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE runs (run_uuid VARCHAR(32) PRIMARY KEY, name VARCHAR(250), status VARCHAR(9), \
               start_time BIGINT, lifecycle_stage VARCHAR(20));
             CREATE TABLE metrics (key VARCHAR(250), value FLOAT, timestamp BIGINT, run_uuid VARCHAR(32), \
               step BIGINT DEFAULT 0, is_nan BOOLEAN DEFAULT 0);
             CREATE TABLE params (key VARCHAR(250), value VARCHAR(8000), run_uuid VARCHAR(32));
             CREATE TABLE tags (key VARCHAR(250), value VARCHAR(8000), run_uuid VARCHAR(32));
             INSERT INTO runs VALUES ('a', 'lr1e-3', 'FINISHED', 1, 'active'), ('b', 'crashed', 'RUNNING', 2, 'active'),
               ('c', 'gone', 'FINISHED', 3, 'deleted');
             INSERT INTO params VALUES ('lr', '0.001', 'a'), ('batch_size', '64', 'a');
             INSERT INTO metrics VALUES ('loss', 5.0, 10, 'a', 0, 0), ('loss', 4.0, 11, 'a', 1, 0),
               ('loss', 0, 12, 'a', 2, 1), ('val_loss', 4.5, 12, 'a', 2, 0), ('loss', 3.0, 10, 'b', 0, 0);",
        )
        .unwrap();
        drop(c);
        assert!(is_mlflow_file(&path, "mlflow.db"));
        let mut runs = Vec::new();
        split("k", dir.path(), vec![(path.clone(), Format::Mlflow)], &mut runs);
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["lr1e-3", "crashed"]);
        let (out, t) = read_source(&runs[0]);
        assert_eq!(t[0].status, Some(status::COMPLETE));
        let loss = &out.series["loss"].series;
        assert_eq!(loss.steps, vec![0, 1, 2]);
        assert!(loss.values[2].is_nan());
        assert_eq!(out.series["val_loss"].series.values, vec![4.5]);
        assert_eq!((out.config.lr, out.config.bs), (Some(1e-3), Some(64)));
        let (_, t) = read_source(&runs[1]);
        assert_eq!(t[0].status, Some(status::INCOMPLETE));
        // Not an MLflow database: another SQLite file, or no SQLite at all.
        let other = dir.path().join("optuna.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE trials (x INT);")
            .unwrap();
        assert!(!is_mlflow_file(&other, "optuna.db"));
        std::fs::write(dir.path().join("x.db"), "hello").unwrap();
        assert!(!is_mlflow_file(&dir.path().join("x.db"), "x.db"));
    }
}
