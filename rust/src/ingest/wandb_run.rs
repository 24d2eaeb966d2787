//! W&B run directories, read without W&B: the transaction log `run-<id>.wandb` that every run
//! writes, offline (`wandb/offline-run-<time>-<id>/`) or synced (`wandb/run-<time>-<id>/`).
//!
//! The file: a 7-byte header (`:W&B`, magic 0xBEE1 little endian, version 0), then LevelDB's
//! log framing: 32 KiB blocks (the header counts in the first), each holding chunks of a
//! 7-byte header (u32 checksum, u16 length, u8 type: FULL 1, FIRST 2, MIDDLE 3, LAST 4) and
//! a payload; a chunk never crosses a block, and fewer than 7 bytes left in a block are zero
//! padding. W&B's checksum is the CRC-32 (IEEE, zlib's) of the type byte and the payload,
//! unmasked (wandb-core's `CRCAlgoIEEE`); LevelDB's own masked CRC32C is accepted too. Every
//! checksum is checked: a bad chunk is skipped with the rest of its block (LevelDB's recovery),
//! and a tail that holds no whole record (a run killed mid-write, or still writing) is
//! dropped, its bytes counted.
//!
//! Each record is a protobuf `Record` (`wandb/proto/wandb_internal.proto`), decoded by hand:
//! history rows (`_step` and items whose values are JSON), config updates, the run record
//! (id, display name, config), metric definitions (`define_metric`'s step metric) and the exit
//! record; the rest (summaries, system stats, console output, files) is skipped.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::discover::RunSource;
use super::read::Fingerprint;
use super::series::{RunParse, MAX_MESSAGES};
use super::tfevents::{Field, Proto};
use super::Format;
use crate::error::{Error, Result};
use crate::model::{status, RunConfig};

/// What a tracker's reader tells the ingest beyond the points: the bytes it read and the
/// tracker's verdict on the run (`complete` when it finished cleanly, `incomplete` when it
/// crashed, was killed or is still running), which a diverged loss still overrides.
#[derive(Debug, Default)]
pub struct Tracked {
    pub bytes: u64,
    pub status: Option<&'static str>,
}

const HEADER_LEN: usize = 7;
const IDENT: &[u8; 4] = b":W&B";
const MAGIC: u16 = 0xBEE1;
const VERSION: u8 = 0;
const BLOCK: usize = 32 * 1024;
const CHUNK_HEADER: usize = 7;
const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

/// A W&B run folder's summary (the last value of each metric), `files/wandb-summary.json`.
pub const SUMMARY: &str = "wandb-summary.json";

/// Is this file name a W&B transaction log (`run-<id>.wandb`)?
pub fn is_log_name(name: &str) -> bool {
    name.ends_with(".wandb") && name.len() > ".wandb".len()
}

/// A W&B transaction log, or a run folder's `wandb-summary.json`.
pub fn is_wandb_file(name: &str) -> bool {
    is_log_name(name) || name == SUMMARY
}

/// The W&B run id a log's name carries (`run-<id>.wandb` -> `<id>`).
fn run_id_of(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".wandb").map(|s| s.strip_prefix("run-").unwrap_or(s))
}

/// A W&B run directory's name: `run-<yyyymmdd_hhmmss>-<id>` or `offline-run-...`.
fn is_run_dir_name(name: &str) -> bool {
    let rest = name.strip_prefix("offline-").unwrap_or(name);
    let Some(rest) = rest.strip_prefix("run-") else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() > 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'_'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'-'
}

/// Directories of a W&B folder that are the tracker's own, never a run of their own: a run
/// directory's `files/` (console output, requirements, copies of event files), `logs/` and
/// `tmp/`, and the `latest-run` link beside the runs.
pub fn is_internal_dir(path: &Path) -> bool {
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
    let (Some(me), Some(parent)) = (name(path), path.parent().and_then(name)) else {
        return false;
    };
    match me.as_str() {
        "files" | "logs" | "tmp" => is_run_dir_name(&parent),
        "latest-run" => parent == "wandb",
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Checksums.

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, zlib's) of the parts in sequence.
fn crc32_ieee(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for part in parts {
        for &b in *part {
            c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
    }
    !c
}

fn checksum_ok(kind: u8, payload: &[u8], expected: u32) -> bool {
    crc32_ieee(&[&[kind], payload]) == expected || {
        let c = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
        c.rotate_right(15).wrapping_add(0xA282_EAD8) == expected
    }
}

// ---------------------------------------------------------------------------------------
// Framing.

/// How a log's framing went.
#[derive(Debug, Default, PartialEq)]
pub struct Framing {
    /// Whole records read.
    pub records: u64,
    /// Bytes at the end that hold no whole record (the run was killed while writing, or
    /// still writes): not read.
    pub truncated: usize,
    /// Chunks skipped (bad checksum, bad framing), with the offset and reason of the first few.
    pub corrupt: Vec<(usize, &'static str)>,
    pub corrupt_chunks: u64,
    /// Bytes skipped with them (the rest of their blocks).
    pub corrupt_bytes: usize,
}

impl Framing {
    fn bad(&mut self, at: usize, why: &'static str, skipped: usize) {
        self.corrupt_chunks += 1;
        self.corrupt_bytes += skipped;
        if self.corrupt.len() < 5 {
            self.corrupt.push((at, why));
        }
    }
}

/// Check the file header; the reason when it is not a W&B log this reader knows.
pub fn check_header(data: &[u8]) -> std::result::Result<(), String> {
    if data.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes: too short for a W&B transaction log's header",
            data.len()
        ));
    }
    if &data[..4] != IDENT || u16::from_le_bytes([data[4], data[5]]) != MAGIC {
        return Err("not a W&B transaction log (no ':W&B' header)".into());
    }
    if data[6] != VERSION {
        return Err(format!(
            "W&B transaction log version {} (this reader knows version {VERSION})",
            data[6]
        ));
    }
    Ok(())
}

/// Call `each(offset, record)` for every whole record of a log whose header checked out.
pub fn frames(data: &[u8], mut each: impl FnMut(usize, &[u8])) -> Framing {
    let mut out = Framing::default();
    let mut pos = HEADER_LEN;
    // A record in pieces: the offset of its first chunk and its bytes so far.
    let mut pending: Option<(usize, Vec<u8>)> = None;
    let next_block = |p: usize| (p / BLOCK + 1) * BLOCK;
    loop {
        let left = BLOCK - pos % BLOCK;
        if left < CHUNK_HEADER {
            pos += left; // a block's trailer: zero padding
        }
        if pos >= data.len() {
            break;
        }
        if pos + CHUNK_HEADER > data.len() {
            break; // a chunk header cut short
        }
        let h = &data[pos..pos + CHUNK_HEADER];
        let crc = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let len = u16::from_le_bytes([h[4], h[5]]) as usize;
        let kind = h[6];
        let block_end = next_block(pos).min(data.len());
        if crc == 0 && len == 0 && kind == 0 {
            // Zeros where a chunk should be: the rest of the file zero-filled (a crash on
            // some file systems), else an unused block end.
            if data[pos..].iter().all(|&b| b == 0) {
                break;
            }
            if let Some((at, _)) = pending.take() {
                out.bad(at, "a record left unfinished", 0);
            }
            out.bad(pos, "zeros where a chunk header should be", block_end - pos);
            pos = block_end;
            continue;
        }
        let end = pos + CHUNK_HEADER + len;
        if len > BLOCK - pos % BLOCK - CHUNK_HEADER {
            if let Some((at, _)) = pending.take() {
                out.bad(at, "a record left unfinished", 0);
            }
            out.bad(pos, "a chunk longer than its block", block_end - pos);
            pos = block_end;
            continue;
        }
        if end > data.len() {
            break; // a chunk cut short
        }
        let payload = &data[pos + CHUNK_HEADER..end];
        if !checksum_ok(kind, payload, crc) {
            // The length cannot be trusted either: go on at the next block.
            if let Some((at, _)) = pending.take() {
                out.bad(at, "a record left unfinished", 0);
            }
            out.bad(pos, "checksum mismatch", block_end - pos);
            pos = block_end;
            continue;
        }
        match kind {
            FULL => {
                if let Some((at, _)) = pending.take() {
                    out.bad(at, "a record left unfinished", 0);
                }
                out.records += 1;
                each(pos, payload);
            }
            FIRST => {
                if let Some((at, _)) = pending.replace((pos, payload.to_vec())) {
                    out.bad(at, "a record left unfinished", 0);
                }
            }
            MIDDLE | LAST => match pending.as_mut() {
                Some((_, buf)) => {
                    buf.extend_from_slice(payload);
                    if kind == LAST {
                        let (at, buf) = pending.take().unwrap_or_default();
                        out.records += 1;
                        each(at, &buf);
                    }
                }
                None => out.bad(pos, "a chunk continuing no record", end - pos),
            },
            _ => out.bad(pos, "unknown chunk type", end - pos),
        }
        pos = end;
    }
    let stop = pending.map_or(pos, |(at, _)| at).min(data.len());
    out.truncated = data.len() - stop;
    out
}

// ---------------------------------------------------------------------------------------
// Records.

mod field {
    pub const HISTORY: u64 = 2;
    pub const CONFIG: u64 = 5;
    pub const METRIC: u64 = 12;
    pub const RUN: u64 = 17;
    pub const EXIT: u64 = 18;
}

/// A key/value item of a history row or a config record: `key`, or the path `nested_key`
/// (W&B 0.17+ writes history keys there), and the JSON text of the value.
struct Item<'a> {
    key: &'a [u8],
    nested: Vec<&'a [u8]>,
    value_json: &'a [u8],
}

impl Item<'_> {
    fn name(&self) -> String {
        if !self.key.is_empty() || self.nested.is_empty() {
            return String::from_utf8_lossy(self.key).into_owned();
        }
        let parts: Vec<String> = self
            .nested
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        parts.join(".")
    }
}

fn item(buf: &[u8]) -> Option<Item<'_>> {
    let mut it = Item {
        key: &[],
        nested: Vec::new(),
        value_json: &[],
    };
    let mut p = Proto::new(buf);
    while let Some(f) = p.next() {
        match f.ok()? {
            (1, Field::Bytes(b)) => it.key = b,
            (2, Field::Bytes(b)) => it.nested.push(b),
            (16, Field::Bytes(b)) => it.value_json = b,
            _ => {}
        }
    }
    Some(it)
}

/// The fields of a message that is a list of items (ConfigRecord: update 1, remove 2;
/// HistoryRecord: item 1, step 2).
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut p = Proto::new(buf);
    let mut out = Vec::new();
    while let Some(f) = p.next() {
        out.push(f.ok()?);
    }
    Some(out)
}

fn as_str(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// A JSON number (or Python's NaN / Infinity) as f64; None for anything else (strings,
/// booleans, media and histogram objects).
fn json_number(b: &[u8]) -> Option<f64> {
    as_str(b)?.trim().parse::<f64>().ok()
}

/// The step metric set by `define_metric(name, step_metric=...)`, by exact name or glob.
struct StepMetric {
    pattern: String,
    glob: bool,
    step_metric: String,
}

fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob_match(tail, &rest[i..]))
        }
    }
}

/// History keys that are W&B's own bookkeeping, not metrics.
const NOT_METRICS: &[&str] = &["_step", "_runtime", "_timestamp"];

/// Everything one log (or several, for a resumed run) tells.
#[derive(Default)]
struct Reader {
    step_metrics: Vec<StepMetric>,
    /// The last value seen of each step metric (W&B fills a row's missing step metric so).
    last_step_value: HashMap<String, f64>,
    config: serde_json::Map<String, Value>,
    exit: Option<(i64, bool)>,
    bad_records: u64,
    first_bad: Option<usize>,
}

impl Reader {
    fn record(&mut self, at: usize, buf: &[u8], out: &mut RunParse) {
        if self.try_record(buf, out).is_none() {
            self.bad_records += 1;
            self.first_bad.get_or_insert(at);
        }
    }

    fn try_record(&mut self, buf: &[u8], out: &mut RunParse) -> Option<()> {
        let mut p = Proto::new(buf);
        while let Some(f) = p.next() {
            match f.ok()? {
                (field::HISTORY, Field::Bytes(b)) => self.history(b, out)?,
                (field::CONFIG, Field::Bytes(b)) => self.config_record(b)?,
                (field::RUN, Field::Bytes(b)) => {
                    for (n, f) in fields(b)? {
                        if let (4, Field::Bytes(c)) = (n, f) {
                            self.config_record(c)?;
                        }
                    }
                }
                (field::METRIC, Field::Bytes(b)) => self.metric(b)?,
                (field::EXIT, Field::Bytes(b)) => {
                    let (mut code, mut not_complete) = (0i64, false);
                    for (n, f) in fields(b)? {
                        match (n, f) {
                            (1, Field::Varint(v)) => code = v as i32 as i64,
                            (3, Field::Varint(v)) => not_complete = v != 0,
                            _ => {}
                        }
                    }
                    self.exit = Some((code, not_complete));
                }
                _ => {}
            }
        }
        Some(())
    }

    fn metric(&mut self, buf: &[u8]) -> Option<()> {
        let (mut name, mut glob, mut step_metric) = ("", "", "");
        for (n, f) in fields(buf)? {
            match (n, f) {
                (1, Field::Bytes(b)) => name = as_str(b)?,
                (2, Field::Bytes(b)) => glob = as_str(b)?,
                (4, Field::Bytes(b)) => step_metric = as_str(b)?,
                _ => {}
            }
        }
        if step_metric.is_empty() || (name.is_empty() && glob.is_empty()) {
            return Some(());
        }
        let (pattern, is_glob) = if name.is_empty() { (glob, true) } else { (name, false) };
        self.step_metrics.retain(|m| m.pattern != pattern);
        self.step_metrics.push(StepMetric {
            pattern: pattern.to_string(),
            glob: is_glob,
            step_metric: step_metric.to_string(),
        });
        Some(())
    }

    /// The step metric of `key`: its own definition first, then the last glob that matches.
    fn step_metric_of(&self, key: &str) -> Option<&str> {
        self.step_metrics
            .iter()
            .find(|m| !m.glob && m.pattern == key)
            .or_else(|| {
                self.step_metrics
                    .iter()
                    .rev()
                    .find(|m| m.glob && glob_match(&m.pattern, key))
            })
            .map(|m| m.step_metric.as_str())
            .filter(|s| *s != key)
    }

    fn config_record(&mut self, buf: &[u8]) -> Option<()> {
        for (n, f) in fields(buf)? {
            let (1 | 2, Field::Bytes(b)) = (n, &f) else { continue };
            let it = item(b)?;
            let path: Vec<String> = if it.key.is_empty() {
                it.nested
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            } else {
                vec![String::from_utf8_lossy(it.key).into_owned()]
            };
            let Some((last, parents)) = path.split_last() else {
                continue;
            };
            let mut map = &mut self.config;
            for p in parents {
                let entry = map
                    .entry(p.clone())
                    .or_insert_with(|| Value::Object(Default::default()));
                if !entry.is_object() {
                    *entry = Value::Object(Default::default());
                }
                let Value::Object(m) = entry else { unreachable!() };
                map = m;
            }
            if n == 2 {
                map.remove(last);
            } else {
                let v = serde_json::from_slice(it.value_json)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(it.value_json).into_owned()));
                map.insert(last.clone(), v);
            }
        }
        Some(())
    }

    fn history(&mut self, buf: &[u8], out: &mut RunParse) -> Option<()> {
        let mut items: Vec<(String, Option<f64>)> = Vec::new();
        let mut step_num: Option<i64> = None;
        for (n, f) in fields(buf)? {
            match (n, f) {
                (1, Field::Bytes(b)) => {
                    let it = item(b)?;
                    items.push((it.name(), json_number(it.value_json)));
                }
                (2, Field::Bytes(b)) => {
                    for (n, f) in fields(b)? {
                        if let (1, Field::Varint(v)) = (n, f) {
                            step_num = Some(v as i64);
                        }
                    }
                }
                _ => {}
            }
        }
        let step = items
            .iter()
            .find(|(k, _)| k == "_step")
            .and_then(|(_, v)| *v)
            .filter(|v| v.is_finite())
            .map(|v| v as i64)
            .or(step_num)
            .unwrap_or(0);
        // Step metrics first: their values in this row (else their last) place the others.
        for (k, v) in &items {
            if let Some(v) = v {
                if self.step_metrics.iter().any(|m| m.step_metric == *k) {
                    self.last_step_value.insert(k.clone(), *v);
                }
            }
        }
        for (k, v) in items {
            let Some(v) = v else { continue };
            if NOT_METRICS.contains(&k.as_str()) || self.step_metrics.iter().any(|m| m.step_metric == k) {
                continue;
            }
            let at = match self.step_metric_of(&k) {
                Some(sm) if sm != "_step" => match self.last_step_value.get(sm) {
                    Some(s) if s.is_finite() => *s as i64,
                    _ => continue, // not placeable on its axis yet
                },
                _ => step,
            };
            out.push(&k, at, v, None, None);
        }
        Some(())
    }

    /// The run's configuration: its fields at any depth (shallowest first) and every other key
    /// as a tag (`model.dropout`), as [`super::config::config_from_map`] reads a config.
    fn run_config(&self, file: &str, out: &mut RunParse) -> RunConfig {
        super::config::config_from_map(&self.config, |key, e| {
            problem(out, file, format!("config '{key}': {e}"))
        })
    }
}

/// Count a problem of a binary file (no lines to number) and describe it if among the first few.
pub(crate) fn problem(out: &mut RunParse, file: &str, what: String) {
    out.malformed += 1;
    if out.messages.len() < MAX_MESSAGES {
        out.messages.push(format!("{file}: {what}"));
    }
}

/// Read one W&B transaction log into `out`: every numeric history value under its key (the
/// training loss, validation loss and LR are named later, as for event files), the run's
/// config into `out.config`. A resumed run's logs are read in order into one `out`.
pub fn read(path: &Path, out: &mut RunParse, fp: &mut Fingerprint) -> Result<Tracked> {
    if path.file_name().is_some_and(|n| n == SUMMARY) {
        return read_summary(path, out, fp);
    }
    let label = path.display().to_string();
    let data = super::read::read_file(path)?;
    fp.add_file(&data);
    check_header(&data).map_err(|e| Error::parse(label.clone(), e))?;
    let pushed_before = out.pushed();
    let mut reader = Reader::default();
    let framing = frames(&data, |at, rec| reader.record(at, rec, out));
    for (at, why) in &framing.corrupt {
        problem(
            out,
            &label,
            format!("byte {at}: {why}: the rest of its 32 KiB block skipped"),
        );
    }
    out.malformed += framing.corrupt_chunks - framing.corrupt.len() as u64;
    if framing.corrupt_chunks > 0 {
        out.notes.push(format!(
            "{label}: {} corrupt chunk(s) skipped ({} bytes)",
            framing.corrupt_chunks, framing.corrupt_bytes
        ));
    }
    if reader.bad_records > 0 {
        let first = reader.first_bad.unwrap_or_default();
        out.malformed += reader.bad_records - 1;
        problem(
            out,
            &label,
            format!("byte {first}: a record whose checksum holds but is no valid protobuf Record"),
        );
    }
    if framing.truncated > 0 {
        let msg = format!(
            "the last {} bytes hold no whole record (the run was killed while writing, or still writes): \
             read up to byte {}",
            framing.truncated,
            data.len() - framing.truncated
        );
        problem(out, &label, msg);
    }
    let config = reader.run_config(&label, out);
    out.config.merge_from(&config);
    if out.pushed() == pushed_before {
        let detail = out
            .messages
            .first()
            .map(|m| format!("; first problem: {m}"))
            .unwrap_or_default();
        let why = if framing.records == 0 {
            "no record in this W&B run log: the run wrote nothing before it stopped (killed at its start, or \
             still starting)"
                .to_string()
        } else {
            format!(
                "no numeric history values in this W&B run log ({} records read)",
                framing.records
            )
        };
        return Err(Error::parse(label, format!("{why}{detail}")));
    }
    let verdict = match reader.exit {
        Some((0, false)) => status::COMPLETE,
        Some((code, not_complete)) => {
            out.notes.push(if not_complete {
                format!("{label}: the W&B run's exit record leaves it running: incomplete")
            } else {
                format!("{label}: the W&B run exited with code {code}: incomplete")
            });
            status::INCOMPLETE
        }
        None => {
            out.notes.push(format!(
                "{label}: no exit record (the run crashed, was killed or still runs): incomplete"
            ));
            status::INCOMPLETE
        }
    };
    Ok(Tracked {
        bytes: data.len() as u64,
        status: Some(verdict),
    })
}

/// The display name of the run a log records (`wandb.init(name=...)`), from its first records.
pub fn display_name(path: &Path) -> Option<String> {
    use std::io::Read;
    // The run record comes second, after the header record: the first 64 KiB hold it unless
    // its config is huge.
    for limit in [64u64 << 10, 4 << 20] {
        let mut head = Vec::new();
        let len = std::fs::File::open(path)
            .ok()?
            .take(limit)
            .read_to_end(&mut head)
            .ok()?;
        check_header(&head).ok()?;
        if let Some(found) = run_record_name(&head) {
            return found;
        }
        if (len as u64) < limit {
            break;
        }
    }
    None
}

/// The display name in the first run record of `head`: Some(None) when the record names none.
fn run_record_name(head: &[u8]) -> Option<Option<String>> {
    let mut name = None;
    frames(head, |_, rec| {
        if name.is_some() {
            return;
        }
        let mut p = Proto::new(rec);
        while let Some(Ok((n, f))) = p.next() {
            if let (field::RUN, Field::Bytes(run)) = (n, f) {
                let mut found = None;
                let mut r = Proto::new(run);
                while let Some(Ok((n, f))) = r.next() {
                    if let (8, Field::Bytes(b)) = (n, f) {
                        found = as_str(b).map(str::to_string).filter(|s| !s.trim().is_empty());
                    }
                }
                name = Some(found);
            }
        }
    });
    name
}

/// A directory's files less a W&B summary that other files make redundant (a transaction log,
/// a history export: a summary is read only where it is all there is), and the run's name when
/// the directory holds a W&B log: the display name it records, if any.
pub fn split(files: Vec<(PathBuf, Format)>) -> (Vec<(PathBuf, Format)>, Option<String>) {
    let is_summary = |p: &Path| p.file_name().is_some_and(|n| n == SUMMARY);
    let has_history = files.iter().any(|(p, _)| !is_summary(p));
    let files: Vec<_> = files
        .into_iter()
        .filter(|(p, f)| !(*f == Format::WandbRun && is_summary(p) && has_history))
        .collect();
    let name = match files.iter().find(|(_, f)| *f == Format::WandbRun) {
        Some((p, _)) if !is_summary(p) => display_name(p),
        // A run folder's `files/` is named by the folder.
        Some((p, _)) => p
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == "files"))
            .and_then(|d| std::fs::canonicalize(d).ok())
            .and_then(|d| d.parent()?.file_name()?.to_str().map(str::to_string)),
        None => None,
    };
    (files, name)
}

/// Python's json writes NaN and Infinity, which JSON has no words for: quote them (outside
/// strings they can only be those values).
fn quote_non_finite(text: &str) -> String {
    text.replace("-Infinity", "\"-inf\"")
        .replace("Infinity", "\"inf\"")
        .replace("NaN", "\"NaN\"")
}

/// A run folder's `wandb-summary.json` where it is all there is (no log, no history export):
/// one point per numeric summary value at the summary's `_step` (nested values as `a.b`;
/// media and histograms passed over); the run is `summary-only`.
fn read_summary(path: &Path, out: &mut RunParse, fp: &mut Fingerprint) -> Result<Tracked> {
    let label = path.display().to_string();
    let data = super::read::read_file(path)?;
    fp.add_file(&data);
    let text = String::from_utf8_lossy(&data);
    let parsed = serde_json::from_str::<Value>(&text).or_else(|_| serde_json::from_str(&quote_non_finite(&text)));
    let Ok(Value::Object(summary)) = parsed else {
        return Err(Error::parse(label, "not a W&B summary (a JSON object)"));
    };
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok().filter(|x| !x.is_finite()),
        _ => None,
    };
    let step = summary.get("_step").and_then(number).map_or(0, |s| s as i64);
    let mut stack: Vec<(String, &serde_json::Map<String, Value>)> = vec![(String::new(), &summary)];
    while let Some((prefix, map)) = stack.pop() {
        for (k, v) in map {
            let key = format!("{prefix}{k}");
            if k.starts_with('_') {
                continue; // _step, _runtime, _timestamp, _wandb
            }
            match v {
                Value::Object(m) if !m.contains_key("_type") => stack.push((format!("{key}."), m)),
                _ => {
                    if let Some(x) = number(v) {
                        out.push(&key, step, x, None, None);
                    }
                }
            }
        }
    }
    if out.series.is_empty() {
        return Err(Error::parse(label, "no numeric values in this W&B summary"));
    }
    out.notes.push(format!(
        "{label}: only the W&B run's summary (the last value of each metric, at step {step}): no history"
    ));
    Ok(Tracked {
        bytes: data.len() as u64,
        status: Some(status::SUMMARY_ONLY),
    })
}

/// A run resumed (`wandb.init(id=..., resume=...)`) writes a new run directory with the same
/// id: one run, its logs read in time order (the later log wins where steps repeat). Runs
/// whose every file is a W&B log and whose directories lie side by side with the same id are
/// joined into the earliest.
pub fn join_resumed(runs: &mut Vec<RunSource>) {
    let id_of = |r: &RunSource| -> Option<(PathBuf, String)> {
        if r.files.is_empty() || !r.files.iter().all(|(_, f)| *f == Format::WandbRun) {
            return None;
        }
        let id = run_id_of(&r.files[0].0)?.to_string();
        Some((r.dir.parent()?.to_path_buf(), id))
    };
    // The time a run directory's name holds orders a run's parts.
    let time_of = |r: &RunSource| -> String {
        let name = r.dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.strip_prefix("offline-").unwrap_or(name).to_string()
    };
    let mut groups: HashMap<(PathBuf, String), Vec<usize>> = HashMap::new();
    for (i, r) in runs.iter().enumerate() {
        if let Some(k) = id_of(r) {
            groups.entry(k).or_default().push(i);
        }
    }
    let mut drop = vec![false; runs.len()];
    for (_, mut members) in groups.into_iter().filter(|(_, m)| m.len() > 1) {
        members.sort_by_key(|&i| time_of(&runs[i]));
        let first = members[0];
        let mut files = Vec::new();
        for &i in &members {
            files.extend(runs[i].files.iter().cloned());
            if i != first {
                drop[i] = true;
            }
        }
        // The latest part names the run (a resume may rename it).
        if let Some(&last) = members.last() {
            runs[first].name = runs[last].name.clone();
        }
        runs[first].files = files;
    }
    let mut i = 0;
    runs.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ingest::tfevents::tests::{field_bytes, varint};

    /// A tiny independent writer of W&B logs: protobuf by hand, framed as wandb-core does.
    pub struct Writer {
        pub data: Vec<u8>,
    }

    impl Writer {
        pub fn new() -> Self {
            let mut data = IDENT.to_vec();
            data.extend_from_slice(&MAGIC.to_le_bytes());
            data.push(VERSION);
            Writer { data }
        }

        fn chunk(&mut self, kind: u8, payload: &[u8]) {
            let crc = crc32_ieee(&[&[kind], payload]);
            self.data.extend_from_slice(&crc.to_le_bytes());
            self.data.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            self.data.push(kind);
            self.data.extend_from_slice(payload);
        }

        pub fn record(&mut self, rec: &[u8]) {
            let mut left = BLOCK - self.data.len() % BLOCK;
            if left < CHUNK_HEADER {
                self.data.resize(self.data.len() + left, 0);
                left = BLOCK;
            }
            if rec.len() + CHUNK_HEADER <= left {
                return self.chunk(FULL, rec);
            }
            let mut rest = rec;
            let mut kind = FIRST;
            loop {
                let left = BLOCK - self.data.len() % BLOCK;
                let room = left - CHUNK_HEADER;
                if rest.len() <= room {
                    self.chunk(LAST, rest);
                    return;
                }
                self.chunk(kind, &rest[..room]);
                rest = &rest[room..];
                kind = MIDDLE;
            }
        }
    }

    pub fn item(key: &str, nested: bool, json: &str) -> Vec<u8> {
        let mut b = Vec::new();
        field_bytes(if nested { 2 } else { 1 }, key.as_bytes(), &mut b);
        field_bytes(16, json.as_bytes(), &mut b);
        b
    }

    pub fn history(step: i64, items: &[(&str, &str)]) -> Vec<u8> {
        let mut h = Vec::new();
        for (k, v) in items {
            field_bytes(1, &item(k, true, v), &mut h);
        }
        field_bytes(1, &item("_step", true, &step.to_string()), &mut h);
        let mut s = Vec::new();
        varint(8, &mut s);
        varint(step as u64, &mut s);
        field_bytes(2, &s, &mut h);
        let mut r = Vec::new();
        field_bytes(field::HISTORY, &h, &mut r);
        r
    }

    pub fn run(name: &str, config: &[(&str, &str)]) -> Vec<u8> {
        let mut c = Vec::new();
        for (k, v) in config {
            field_bytes(1, &item(k, false, v), &mut c);
        }
        let mut run = Vec::new();
        field_bytes(1, b"abc123", &mut run);
        field_bytes(4, &c, &mut run);
        field_bytes(8, name.as_bytes(), &mut run);
        let mut r = Vec::new();
        field_bytes(field::RUN, &run, &mut r);
        r
    }

    pub fn exit(code: i32) -> Vec<u8> {
        let mut e = Vec::new();
        if code != 0 {
            varint(8, &mut e);
            varint(code as i64 as u64, &mut e);
        }
        let mut r = Vec::new();
        field_bytes(field::EXIT, &e, &mut r);
        r
    }

    pub fn define_metric(glob: &str, step_metric: &str) -> Vec<u8> {
        let mut m = Vec::new();
        field_bytes(2, glob.as_bytes(), &mut m);
        field_bytes(4, step_metric.as_bytes(), &mut m);
        let mut r = Vec::new();
        field_bytes(field::METRIC, &m, &mut r);
        r
    }

    fn read_bytes(data: &[u8]) -> (RunParse, Result<Tracked>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run-abc123.wandb");
        std::fs::write(&path, data).unwrap();
        let mut out = RunParse::default();
        let t = read(&path, &mut out, &mut Fingerprint::default());
        (out, t)
    }

    fn loss_log(n: i64, with_exit: Option<i32>) -> Writer {
        let mut w = Writer::new();
        w.record(&run(
            "lr1e-3_bs32",
            &[("lr", "0.001"), ("batch_size", "32"), ("_wandb", "{}")],
        ));
        for k in 0..n {
            let loss = format!("{}", 5.0 - k as f64 * 0.01);
            w.record(&history(k, &[("loss", &loss), ("lr", "0.001"), ("_runtime", "1.5")]));
        }
        if let Some(code) = with_exit {
            w.record(&exit(code));
        }
        w
    }

    #[test]
    fn crc32_ieee_known_values() {
        assert_eq!(crc32_ieee(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32_ieee(&[b"1234", b"56789"]), 0xCBF4_3926);
        assert_eq!(crc32_ieee(&[b""]), 0);
    }

    #[test]
    fn a_finished_run_reads_every_row_and_its_config() {
        let w = loss_log(3000, Some(0)); // > 32 KiB: chunks meet block trailers
        assert!(w.data.len() > 3 * BLOCK);
        let (out, t) = read_bytes(&w.data);
        let t = t.unwrap();
        assert_eq!(t.status, Some(status::COMPLETE));
        let loss = &out.series["loss"].series;
        assert_eq!(loss.len(), 3000);
        assert_eq!(loss.steps[2999], 2999);
        assert_eq!(loss.values[1], 4.99);
        assert_eq!(out.series["lr"].series.len(), 3000);
        assert!(!out.series.contains_key("_runtime") && !out.series.contains_key("_step"));
        assert_eq!((out.config.lr, out.config.bs), (Some(1e-3), Some(32)));
        assert_eq!(out.malformed, 0, "{:?}", out.messages);
        assert!(out.config.tags.is_empty(), "{:?}", out.config.tags); // `_wandb` is W&B's own
                                                                      // every other key of the config is kept, nested keys joined with '.'
        let mut w = Writer::new();
        w.record(&run(
            "moe",
            &[("lr", "0.001"), ("moe", r#"{"name": "e8k1", "capacity": 1.25}"#)],
        ));
        w.record(&history(0, &[("loss", "3.0")]));
        let (out, _) = read_bytes(&w.data);
        let tags: Vec<(&str, &str)> = out.config.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(tags, [("moe.capacity", "1.25"), ("moe.name", "e8k1")]);
    }

    #[test]
    fn records_longer_than_a_block_are_joined() {
        let mut w = Writer::new();
        let big: Vec<(String, String)> = (0..6000).map(|i| (format!("m{i}"), format!("{i}.5"))).collect();
        let items: Vec<(&str, &str)> = big.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        w.record(&history(7, &items));
        w.record(&history(8, &[("loss", "2.5")]));
        w.record(&exit(0));
        assert!(w.data.len() > 2 * BLOCK);
        let (out, t) = read_bytes(&w.data);
        t.unwrap();
        assert_eq!(out.series.len(), 6001);
        assert_eq!(out.series["m5999"].series.values, vec![5999.5]);
        assert_eq!(out.series["loss"].series.steps, vec![8]);
    }

    #[test]
    fn a_crashed_run_keeps_its_whole_records_and_counts_the_rest() {
        let w = loss_log(2000, None);
        for cut in [1usize, 5, 8, 100, BLOCK + 3] {
            let data = &w.data[..w.data.len() - cut];
            let mut whole = 0;
            let framing = frames(data, |_, _| whole += 1);
            assert!(
                framing.truncated > 0 && framing.truncated < BLOCK + 200,
                "{cut}: {framing:?}"
            );
            assert!(framing.corrupt.is_empty(), "{cut}: {framing:?}");
            let (out, t) = read_bytes(data);
            assert_eq!(t.unwrap().status, Some(status::INCOMPLETE));
            let n = out.series["loss"].series.len();
            assert_eq!(n as u64, whole - 1, "{cut}"); // the run record holds no point
            assert!(n < 2000 && n > 1000);
            assert_eq!(out.malformed, 1);
            assert!(out.messages[0].contains("hold no whole record"), "{:?}", out.messages);
            assert!(out.notes.iter().any(|n| n.contains("no exit record")));
        }
    }

    #[test]
    fn a_zero_filled_tail_is_a_truncation_and_exit_codes_count() {
        let mut data = loss_log(10, None).data;
        data.resize(data.len() + 5000, 0);
        let (out, t) = read_bytes(&data);
        assert_eq!(t.unwrap().status, Some(status::INCOMPLETE));
        assert_eq!(out.series["loss"].series.len(), 10);
        let (out, t) = read_bytes(&loss_log(10, Some(1)).data);
        assert_eq!(t.unwrap().status, Some(status::INCOMPLETE));
        assert!(
            out.notes.iter().any(|n| n.contains("exited with code 1")),
            "{:?}",
            out.notes
        );
        let (_, t) = read_bytes(&loss_log(10, Some(-9)).data);
        assert_eq!(t.unwrap().status, Some(status::INCOMPLETE));
    }

    #[test]
    fn a_bad_checksum_skips_the_rest_of_its_block_only() {
        let w = loss_log(3000, Some(0));
        let mut data = w.data.clone();
        data[HEADER_LEN + 200] ^= 0xFF; // inside the first block's records
        let (out, t) = read_bytes(&data);
        t.unwrap();
        let n = out.series["loss"].series.len();
        assert!(n > 2000 && n < 3000, "{n}");
        assert!(out.malformed >= 1);
        assert!(out.messages[0].contains("checksum mismatch"), "{:?}", out.messages);
        // The first block lost from the corrupt chunk on; everything after it is read.
        assert_eq!(*out.series["loss"].series.steps.last().unwrap(), 2999);
    }

    #[test]
    fn headers_are_checked() {
        assert!(check_header(b":W&B").is_err());
        assert!(check_header(b"PK\x03\x04abc").is_err());
        assert!(check_header(b":W&B\xe1\xbe\x01").unwrap_err().contains("version 1"));
        assert!(check_header(b":W&B\xe1\xbe\x00").is_ok());
        let (_, t) = read_bytes(b":W&B\xe1\xbe\x00");
        assert!(t.unwrap_err().to_string().contains("wrote nothing"));
        let mut w = Writer::new();
        w.record(&run("x", &[]));
        let (_, t) = read_bytes(&w.data);
        assert!(t.unwrap_err().to_string().contains("no numeric history values"));
    }

    #[test]
    fn define_metric_places_points_on_their_step_metric() {
        let mut w = Writer::new();
        w.record(&define_metric("train/*", "train/global_step"));
        for k in 0..5 {
            let gs = format!("{}", k * 100);
            w.record(&history(k, &[("train/loss", "3.0"), ("train/global_step", &gs)]));
        }
        w.record(&history(5, &[("eval/loss", "3.5")]));
        w.record(&exit(0));
        let (out, t) = read_bytes(&w.data);
        t.unwrap();
        assert_eq!(out.series["train/loss"].series.steps, vec![0, 100, 200, 300, 400]);
        assert_eq!(out.series["eval/loss"].series.steps, vec![5]);
        assert!(!out.series.contains_key("train/global_step"));
    }

    #[test]
    fn a_summary_alone_is_a_summary_only_run() {
        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join(SUMMARY);
        std::fs::write(
            &summary,
            r#"{"_step": 199, "_runtime": 12.5, "_wandb": {"runtime": 12}, "loss": 3.01, "lr": 5e-06,
                "eval": {"loss": 3.2}, "hist": {"_type": "histogram", "bins": [1, 2]}, "note": "x", "bad": NaN}"#,
        )
        .unwrap();
        let mut out = RunParse::default();
        let t = read(&summary, &mut out, &mut Fingerprint::default()).unwrap();
        assert_eq!(t.status, Some(status::SUMMARY_ONLY));
        let keys: Vec<&String> = out.series.keys().collect();
        assert_eq!(keys, vec!["bad", "eval.loss", "loss", "lr"]);
        assert_eq!(out.series["loss"].series.steps, vec![199]);
        assert!(out.series["bad"].series.values[0].is_nan());
        // Beside a log or a history export, the summary is dropped.
        let log = dir.path().join("run-abc.wandb");
        std::fs::write(&log, loss_log(2, Some(0)).data).unwrap();
        let both = vec![(log.clone(), Format::WandbRun), (summary.clone(), Format::WandbRun)];
        let (files, name) = split(both);
        assert_eq!(files, vec![(log, Format::WandbRun)]);
        assert_eq!(name.as_deref(), Some("lr1e-3_bs32"));
        let (files, name) = split(vec![(summary.clone(), Format::WandbRun)]);
        assert_eq!((files.len(), name), (1, None));
        let with_export = vec![(dir.path().join("h.jsonl"), Format::Jsonl), (summary, Format::WandbRun)];
        assert_eq!(split(with_export).0.len(), 1);
    }

    #[test]
    fn history_values_as_wandb_encodes_them() {
        // As wandb 0.31 writes them: nested dicts as key paths, NaN and Infinity bare.
        assert_eq!(json_number(b"3"), Some(3.0));
        assert_eq!(json_number(b"1.7964152873103538e+09"), Some(1.7964152873103538e9));
        assert_eq!(json_number(b"1152921504606846976"), Some(2f64.powi(60)));
        assert!(json_number(b"NaN").unwrap().is_nan());
        assert_eq!(json_number(b"Infinity"), Some(f64::INFINITY));
        assert_eq!(json_number(b"-Infinity"), Some(f64::NEG_INFINITY));
        for not_a_number in [&b"true"[..], b"\"str\"", b"{\"_type\": \"histogram\"}", b"null", b""] {
            assert_eq!(json_number(not_a_number), None);
        }
        let mut w = Writer::new();
        let mut h = Vec::new();
        let mut nested = Vec::new();
        for part in ["train", "loss"] {
            field_bytes(2, part.as_bytes(), &mut nested);
        }
        field_bytes(16, b"2.5", &mut nested);
        field_bytes(1, &nested, &mut h);
        field_bytes(1, &item("_step", true, "7"), &mut h);
        let mut r = Vec::new();
        field_bytes(field::HISTORY, &h, &mut r);
        w.record(&r);
        let (out, t) = read_bytes(&w.data);
        assert_eq!(t.unwrap().status, Some(status::INCOMPLETE));
        assert_eq!(out.series["train.loss"].series.steps, vec![7]);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "loss"));
        assert!(glob_match("train/*", "train/loss"));
        assert!(!glob_match("train/*", "eval/loss"));
        assert!(glob_match("*/loss", "eval/loss"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXbY"));
        assert!(glob_match("loss", "loss"));
    }

    #[test]
    fn display_names_and_internal_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run-abc123.wandb");
        std::fs::write(&path, loss_log(3, Some(0)).data).unwrap();
        assert_eq!(display_name(&path).as_deref(), Some("lr1e-3_bs32"));
        assert!(is_internal_dir(Path::new(
            "wandb/offline-run-20240101_120000-abc/files"
        )));
        assert!(is_internal_dir(Path::new("wandb/run-20240101_120000-abc/logs")));
        assert!(is_internal_dir(Path::new("x/wandb/latest-run")));
        assert!(!is_internal_dir(Path::new("runs/files")));
        assert!(!is_internal_dir(Path::new("wandb/run-x/files")));
    }
}
