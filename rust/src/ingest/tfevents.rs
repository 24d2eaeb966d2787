//! TensorBoard event files (`events.out.tfevents.*`): TFRecord framing with masked CRC32C,
//! `Event` protobufs decoded by hand. Every scalar is kept under its tag (TensorBoard's own
//! reader samples 10,000 a tag); [`finish`] then names the training loss, the validation
//! loss and the learning rate among them.
//!
//! Framing: `[u64 length][u32 masked crc32c(length)][data][u32 masked crc32c(data)]`, little
//! endian. A record cut short at the end of the file is a writer still at work: read up to
//! it and warn. A record whose data fails its CRC is skipped with a warning naming the file
//! and offset; a header that fails its CRC cannot be trusted for its length, so the reader
//! scans forward for the next valid header.
use super::series::{RunParse, LOSS, VAL_LOSS};
use super::MetricSelection;

/// Tags under which trainers log the training loss, best first (T5X's `loss` includes its
/// z-loss; PyTorch, Lightning, HF and Keras names follow).
pub const LOSS_TAGS: &[&str] = &[
    "loss",
    "train/loss",
    "train_loss",
    "training_loss",
    "loss/train",
    "Loss/train",
    "train/lm_loss",
    "lm_loss",
    "lm loss",
    "train/loss_step",
    "epoch_loss",
    "cross_ent_loss",
];
/// T5X's losses summed over the batch's tokens, and its per-token losses, best first: when both
/// are logged the per-token one is the loss (`loss_per_nonpadding_target_token` is what T5X's
/// own summaries call the loss per token).
pub const SUMMED_LOSS_TAGS: &[&str] = &["loss", "cross_ent_loss"];
pub const PER_TOKEN_LOSS_TAGS: &[&str] = &[
    "loss_per_nonpadding_target_token",
    "loss_per_all_target_tokens",
    "cross_ent_loss_per_all_target_tokens",
];
/// Where a summed `loss` goes when the per-token loss takes its name.
pub const SUMMED_LOSS: &str = "loss_sum";
/// Tags of the validation loss (in the run's own files).
pub const VAL_TAGS: &[&str] = &[
    "val_loss",
    "val/loss",
    "eval/loss",
    "eval_loss",
    "validation/loss",
    "valid/loss",
    "loss/val",
    "Loss/val",
    "validation_loss",
];
/// Tags of the learning rate, joined to the loss by step.
pub const LR_TAGS: &[&str] = &[
    "learning_rate",
    "lr",
    "train/learning_rate",
    "train/lr",
    "lr-Adam",
    "lr-AdamW",
    "learning rate",
];

/// Where eval writers put their event files, below the run directory (T5X
/// `training_eval/<task>`, TF Estimator `eval`, Keras `validation`).
const EVAL_DIRS: &[&str] = &["eval", "evaluation", "validation", "val", "valid", "training_eval"];
/// Prefix of the metrics read from an eval directory.
pub const EVAL_PREFIX: &str = "eval/";

/// Is this directory name one whose event files belong to the run above it?
pub fn is_part_dir(name: &str) -> bool {
    name == "train" || name == "training" || EVAL_DIRS.contains(&name)
}

/// The metric-name prefix for an event file `rel` (its path relative to the run directory,
/// without the file name): "" for training files, `eval/` or `eval/<task>/` for eval files.
pub fn prefix_for(rel_dirs: &[&str]) -> String {
    match rel_dirs {
        [first] if EVAL_DIRS.contains(first) => EVAL_PREFIX.to_string(),
        [first, task @ ..] if EVAL_DIRS.contains(first) => format!("{EVAL_PREFIX}{}/", task.join("/")),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
/// TFRecord's masked CRC: a CRC of data holding CRCs is rotated and offset.
pub fn masked_crc(data: &[u8]) -> u32 {
    crc32c::crc32c(data).rotate_right(15).wrapping_add(0xA282_EAD8)
}

// ---------------------------------------------------------------------------------------
// Protobuf wire format: just what Event, Summary and TensorProto need (the W&B transaction
// log reader uses it too). Every read checks its bounds and returns None on malformed input.

pub(crate) struct Proto<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub(crate) enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Proto<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Proto { buf, pos: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= ((b & 0x7F) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Some(s)
    }

    /// The next (field number, value), None at the end; Some(Err) on malformed input.
    pub(crate) fn next(&mut self) -> Option<Result<(u64, Field<'a>), ()>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        Some(self.field().ok_or(()))
    }

    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            2 => {
                let n = usize::try_from(self.varint()?).ok()?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().ok()?)),
            _ => return None, // groups (3, 4) are not used by these messages
        };
        Some((key >> 3, value))
    }
}

/// TensorFlow's DataType values that a scalar summary may carry.
mod dtype {
    pub const FLOAT: u64 = 1;
    pub const DOUBLE: u64 = 2;
    pub const INT32: u64 = 3;
    pub const UINT8: u64 = 4;
    pub const INT16: u64 = 5;
    pub const INT8: u64 = 6;
    pub const INT64: u64 = 9;
    pub const BFLOAT16: u64 = 14;
    pub const HALF: u64 = 19;
    pub const UINT32: u64 = 22;
    pub const UINT64: u64 = 23;
}

/// IEEE half to double, subnormals, infinities and NaN included.
pub fn half_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1F) as i32;
    let frac = (bits & 0x3FF) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// The one value of a scalar `TensorProto`, None for anything else (histograms, text,
/// images: more than one element, or not a number).
fn tensor_scalar(buf: &[u8]) -> Option<f64> {
    let mut dtype = 0;
    let mut elements: u64 = 1;
    let mut content: &[u8] = &[];
    let mut first: Option<f64> = None; // from the typed *_val fields
    let mut vals: u64 = 0;
    let mut p = Proto::new(buf);
    while let Some(f) = p.next() {
        match f.ok()? {
            (1, Field::Varint(v)) => dtype = v,
            (2, Field::Bytes(shape)) => elements = shape_elements(shape)?,
            (4, Field::Bytes(b)) => content = b,
            // float_val (5), double_val (6): packed, or one unpacked value.
            (5, Field::Bytes(b)) => {
                vals += (b.len() / 4) as u64;
                if let (None, Some(c)) = (first, b.get(..4)) {
                    first = Some(f32::from_le_bytes(c.try_into().ok()?) as f64);
                }
            }
            (5, Field::Fixed32(v)) => {
                vals += 1;
                first.get_or_insert(f32::from_bits(v) as f64);
            }
            (6, Field::Bytes(b)) => {
                vals += (b.len() / 8) as u64;
                if let (None, Some(c)) = (first, b.get(..8)) {
                    first = Some(f64::from_le_bytes(c.try_into().ok()?));
                }
            }
            (6, Field::Fixed64(v)) => {
                vals += 1;
                first.get_or_insert(f64::from_bits(v));
            }
            // int_val (7), int64_val (10), half_val (13, the bits of a half or bfloat16),
            // uint32_val (16), uint64_val (17): varints, packed or not.
            (n @ (7 | 10 | 13 | 16 | 17), f) => {
                let mut read = |x: u64| {
                    vals += 1;
                    if first.is_none() {
                        first = Some(match (n, dtype) {
                            (13, dtype::BFLOAT16) => f32::from_bits((x as u32 & 0xFFFF) << 16) as f64,
                            (13, _) => half_to_f64(x as u16),
                            (7, _) => x as i32 as f64,
                            (10, _) => x as i64 as f64,
                            _ => x as f64,
                        });
                    }
                };
                match f {
                    Field::Varint(x) => read(x),
                    Field::Bytes(b) => {
                        let mut q = Proto::new(b);
                        while q.pos < b.len() {
                            read(q.varint()?);
                        }
                    }
                    _ => return None,
                }
            }
            _ => {}
        }
    }
    if elements != 1 {
        return None;
    }
    let le = |n: usize| content.get(..n);
    let from_content = match dtype {
        dtype::FLOAT => le(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64),
        dtype::DOUBLE => le(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())),
        dtype::HALF => le(2).map(|b| half_to_f64(u16::from_le_bytes(b.try_into().unwrap()))),
        dtype::BFLOAT16 => {
            le(2).map(|b| f32::from_bits((u16::from_le_bytes(b.try_into().unwrap()) as u32) << 16) as f64)
        }
        dtype::INT32 => le(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f64),
        dtype::INT64 => le(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64),
        dtype::UINT32 => le(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as f64),
        dtype::UINT64 => le(8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as f64),
        dtype::INT16 => le(2).map(|b| i16::from_le_bytes(b.try_into().unwrap()) as f64),
        dtype::INT8 => le(1).map(|b| b[0] as i8 as f64),
        dtype::UINT8 => le(1).map(|b| b[0] as f64),
        _ => return None, // strings, bools, complex, resources: not a metric
    };
    // A scalar has its value either as raw content or as exactly one typed value.
    from_content.or(if vals == 1 { first } else { None })
}

/// The number of elements a `TensorShapeProto` describes (1 for a scalar).
fn shape_elements(buf: &[u8]) -> Option<u64> {
    let mut n: u64 = 1;
    let mut p = Proto::new(buf);
    while let Some(f) = p.next() {
        match f.ok()? {
            (2, Field::Bytes(dim)) => {
                let mut size = 0u64;
                let mut d = Proto::new(dim);
                while let Some(g) = d.next() {
                    if let (1, Field::Varint(s)) = g.ok()? {
                        size = s;
                    }
                }
                n = n.saturating_mul(size);
            }
            (3, Field::Varint(1)) => return Some(u64::MAX), // unknown rank: not a scalar
            _ => {}
        }
    }
    Some(n)
}

/// One `Summary.Value`: its tag and, when it is a scalar, its value.
fn summary_value(buf: &[u8]) -> Option<(&[u8], Option<f64>)> {
    let mut tag: &[u8] = &[];
    let mut value = None;
    let mut p = Proto::new(buf);
    while let Some(f) = p.next() {
        match f.ok()? {
            (1, Field::Bytes(t)) => tag = t,
            (2, Field::Fixed32(v)) => value = Some(f32::from_bits(v) as f64),
            (8, Field::Bytes(t)) => value = value.or_else(|| tensor_scalar(t)),
            _ => {}
        }
    }
    Some((tag, value))
}

/// The step of one `Event` and its scalars as (tag offset in `buf`, tag length, value);
/// Ok(None) for events without a summary, Err when the protobuf is malformed.
fn event_scalars(buf: &[u8], scalars: &mut Vec<(usize, usize, f64)>) -> Result<Option<i64>, ()> {
    // Field order is free: the step may follow the summary. Collect, then emit.
    scalars.clear();
    let mut step = 0i64;
    let mut summary: Option<&[u8]> = None;
    let mut p = Proto::new(buf);
    while let Some(f) = p.next() {
        match f? {
            (2, Field::Varint(s)) => step = s as i64,
            (5, Field::Bytes(s)) => summary = Some(s),
            _ => {}
        }
    }
    let Some(summary) = summary else { return Ok(None) };
    let mut p = Proto::new(summary);
    while let Some(f) = p.next() {
        if let (1, Field::Bytes(v)) = f? {
            let (tag, value) = summary_value(v).ok_or(())?;
            if let Some(x) = value {
                let at = tag.as_ptr() as usize - buf.as_ptr() as usize;
                scalars.push((at, tag.len(), x));
            }
        }
    }
    Ok(Some(step))
}

/// Per-file cache from tag bytes to metric name: a file repeats its tags at every step.
struct TagNames {
    prefix: String,
    known: std::collections::HashMap<Vec<u8>, Option<String>>,
}

impl TagNames {
    fn metric(&mut self, tag: &[u8]) -> Option<&str> {
        if !self.known.contains_key(tag) {
            // Tags are UTF-8 in practice; one that is not is not a metric name.
            let name = std::str::from_utf8(tag)
                .ok()
                .filter(|t| !t.is_empty())
                .map(|t| format!("{}{t}", self.prefix));
            self.known.insert(tag.to_vec(), name);
        }
        self.known[tag].as_deref()
    }
}

/// Read one event file into `out`: every scalar under `prefix` + its tag.
pub fn parse(data: &[u8], file: &str, prefix: &str, out: &mut RunParse) {
    let mut names = TagNames {
        prefix: prefix.to_string(),
        known: Default::default(),
    };
    let mut scalars = Vec::new();
    let mut pos = 0usize;
    let mut records = 0u64;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 12 {
            out.malformed(file, pos as u64, || {
                format!("truncated last record at offset {pos} (is the file still being written?)")
            });
            break;
        }
        let header_ok = masked_crc(&rest[..8]) == u32::from_le_bytes(rest[8..12].try_into().unwrap());
        if !header_ok {
            // The length cannot be trusted: look for the next record that checks out.
            let next = resync(data, pos + 1);
            let what = if records == 0 && pos == 0 && next.is_none() {
                "not a TFRecord file (bad length checksum in the first record)".to_string()
            } else {
                match next {
                    Some(n) => format!("corrupt record header at offset {pos}: skipped {} bytes", n - pos),
                    None => format!(
                        "corrupt record header at offset {pos}: skipped the remaining {} bytes",
                        data.len() - pos
                    ),
                }
            };
            out.malformed(file, pos as u64, || what);
            match next {
                Some(n) => {
                    pos = n;
                    continue;
                }
                None => break,
            }
        }
        let len = u64::from_le_bytes(rest[..8].try_into().unwrap());
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(16))
            .filter(|&e| e <= rest.len());
        let Some(end) = end else {
            out.malformed(file, pos as u64, || {
                format!("truncated last record at offset {pos} ({len} data bytes announced, {} present; is the file still being written?)", rest.len() - 12)
            });
            break;
        };
        let body = &rest[12..end - 4];
        records += 1;
        if masked_crc(body) != u32::from_le_bytes(rest[end - 4..end].try_into().unwrap()) {
            out.malformed(file, pos as u64, || {
                format!("corrupt record at offset {pos} (data checksum mismatch): skipped")
            });
        } else {
            match event_scalars(body, &mut scalars) {
                Ok(Some(step)) => {
                    for &(at, n, value) in &scalars {
                        if let Some(metric) = names.metric(&body[at..at + n]) {
                            out.push(metric, step, value, None, None);
                        }
                    }
                }
                Ok(None) => {}
                Err(()) => out.malformed(file, pos as u64, || {
                    format!("record at offset {pos}: not a valid Event protobuf")
                }),
            }
        }
        pos += end;
    }
}

/// The offset of the next record header (from `from` on) whose length checksum holds and
/// whose data checksum holds too (or which runs past the end: a truncated last record).
fn resync(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(11)).find(|&p| {
        let h = &data[p..p + 12];
        if masked_crc(&h[..8]) != u32::from_le_bytes(h[8..12].try_into().unwrap()) {
            return false;
        }
        let len = u64::from_le_bytes(h[..8].try_into().unwrap());
        match usize::try_from(len).ok().and_then(|l| l.checked_add(p + 16)) {
            Some(end) if end <= data.len() => {
                masked_crc(&data[p + 12..end - 4]) == u32::from_le_bytes(data[end - 4..end].try_into().unwrap())
            }
            _ => true,
        }
    })
}

/// Once every file of a run of tagged scalars (TensorBoard, W&B charts) is read: the best
/// training-loss tag becomes `loss` (with the learning rate joined to it by step), the best
/// validation tag `val_loss`. The other tags stay under their own names.
pub fn finish(out: &mut RunParse, sel: &MetricSelection) {
    let present = |names: &[&str], out: &RunParse| {
        names
            .iter()
            .find(|n| out.series.contains_key(**n))
            .map(|n| n.to_string())
    };
    let mut loss_tag = match &sel.loss {
        Some(k) => out.series.contains_key(k.as_str()).then(|| k.clone()),
        None => present(LOSS_TAGS, out),
    };
    // T5X's `loss` (and `cross_ent_loss`) is a sum over the batch's tokens: its per-token loss,
    // when logged, is the loss; the sum stays, as `loss_sum` where it held the name `loss`.
    if let (None, Some(summed)) = (&sel.loss, loss_tag.as_deref().filter(|t| SUMMED_LOSS_TAGS.contains(t))) {
        if let Some(per_token) = present(PER_TOKEN_LOSS_TAGS, out) {
            out.notes.push(format!(
                "T5X: '{summed}' is a sum over the batch; the per-token '{per_token}' is read as the loss{}",
                if summed == LOSS {
                    " (the sum kept as 'loss_sum')"
                } else {
                    ""
                }
            ));
            if summed == LOSS {
                rename(out, Some(LOSS.to_string()), SUMMED_LOSS);
            }
            loss_tag = Some(per_token);
        }
    }
    rename(out, loss_tag, LOSS);
    let mut val_tag = present(VAL_TAGS, out);
    if val_tag.is_none() {
        // The loss of the one eval directory; several eval tasks stay apart, none named so.
        let is_eval_loss = |k: &str, l: &str| k.starts_with(EVAL_PREFIX) && k.ends_with(&format!("/{l}"));
        let eval_losses: Vec<&String> = out
            .series
            .keys()
            .filter(|k| LOSS_TAGS.iter().any(|l| is_eval_loss(k, l)))
            .collect();
        let tasks: std::collections::BTreeSet<&str> = eval_losses
            .iter()
            .filter_map(|k| k.rsplit_once('/').map(|(task, _)| task))
            .collect();
        if tasks.len() == 1 {
            val_tag = LOSS_TAGS
                .iter()
                .find_map(|l| eval_losses.iter().find(|k| is_eval_loss(k, l)))
                .map(|k| k.to_string());
            // T5X's eval `loss` is summed too: its task's per-token loss is the val loss.
            if let Some((task, last)) = val_tag.as_deref().and_then(|t| t.rsplit_once('/')) {
                if sel.loss.is_none() && SUMMED_LOSS_TAGS.contains(&last) {
                    let per_token = PER_TOKEN_LOSS_TAGS.iter().map(|p| format!("{task}/{p}"));
                    if let Some(p) = per_token.into_iter().find(|p| out.series.contains_key(p)) {
                        val_tag = Some(p);
                    }
                }
            }
        }
    }
    rename(out, val_tag, VAL_LOSS);
    let lr_tag = present(LR_TAGS, out);
    if let (Some(lr), Some(loss)) = (lr_tag.and_then(|t| out.series.get(&t)), out.series.get(LOSS)) {
        let joined = join_by_step(&loss.series.steps, &lr.series.steps, &lr.series.values);
        out.series.get_mut(LOSS).unwrap().series.lr = joined;
    }
}

fn rename(out: &mut RunParse, from: Option<String>, to: &str) {
    if let Some(from) = from.filter(|f| f != to) {
        if let Some(mut b) = out.series.remove(&from) {
            b.series.metric = to.to_string();
            out.series.insert(to.to_string(), b);
        }
    }
}

/// The values of (`steps`, `values`) at each of `at` (both ascending), NaN where absent;
/// empty when no step matches at all.
fn join_by_step(at: &[i64], steps: &[i64], values: &[f64]) -> Vec<f64> {
    let mut j = 0;
    let mut hits = 0;
    let joined: Vec<f64> = at
        .iter()
        .map(|&s| {
            while j < steps.len() && steps[j] < s {
                j += 1;
            }
            if j < steps.len() && steps[j] == s {
                hits += 1;
                values[j]
            } else {
                f64::NAN
            }
        })
        .collect();
    if hits == 0 {
        Vec::new()
    } else {
        joined
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny independent writer: protobuf by hand, framed as TFRecord.
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    pub fn field_bytes(n: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    pub fn record(data: &[u8]) -> Vec<u8> {
        let mut r = (data.len() as u64).to_le_bytes().to_vec();
        r.extend_from_slice(&masked_crc(&r.clone()).to_le_bytes());
        r.extend_from_slice(data);
        r.extend_from_slice(&masked_crc(data).to_le_bytes());
        r
    }
    pub fn event(step: i64, values: &[Vec<u8>]) -> Vec<u8> {
        let mut e = Vec::new();
        e.push(1 << 3 | 1);
        e.extend_from_slice(&1.7e9f64.to_le_bytes());
        varint(2 << 3, &mut e);
        varint(step as u64, &mut e);
        let mut summary = Vec::new();
        for v in values {
            field_bytes(1, v, &mut summary);
        }
        field_bytes(5, &summary, &mut e);
        e
    }
    pub fn simple(tag: &str, v: f32) -> Vec<u8> {
        let mut b = Vec::new();
        field_bytes(1, tag.as_bytes(), &mut b);
        b.push(2 << 3 | 5);
        b.extend_from_slice(&v.to_le_bytes());
        b
    }
    fn tensor_value(tag: &str, tensor: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        field_bytes(1, tag.as_bytes(), &mut b);
        field_bytes(8, tensor, &mut b);
        b
    }
    fn tensor(dtype: u64, dims: &[u64], content: &[u8], typed: Option<(u64, Vec<u8>)>) -> Vec<u8> {
        let mut t = Vec::new();
        varint(1 << 3, &mut t);
        varint(dtype, &mut t);
        let mut shape = Vec::new();
        for &d in dims {
            let mut dim = Vec::new();
            varint(1 << 3, &mut dim);
            varint(d, &mut dim);
            field_bytes(2, &dim, &mut shape);
        }
        field_bytes(2, &shape, &mut t);
        if !content.is_empty() {
            field_bytes(4, content, &mut t);
        }
        if let Some((n, packed)) = typed {
            field_bytes(n, &packed, &mut t);
        }
        t
    }
    fn file_version() -> Vec<u8> {
        let mut e = Vec::new();
        field_bytes(3, b"brain.Event:2", &mut e);
        record(&e)
    }

    fn parse_bytes(data: &[u8]) -> RunParse {
        let mut out = RunParse::default();
        parse(data, "ev", "", &mut out);
        out
    }

    #[test]
    fn masked_crc_known_answer() {
        // CRC32C("123456789") = 0xE3069283 (RFC 3720 B.4), rotated right by 15 and offset.
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn half_precision() {
        assert_eq!(half_to_f64(0x3C00), 1.0);
        assert_eq!(half_to_f64(0xC000), -2.0);
        assert_eq!(half_to_f64(0x4248), 3.140625);
        assert_eq!(half_to_f64(0x0001), 2f64.powi(-24));
        assert!(half_to_f64(0x7C00).is_infinite() && half_to_f64(0x7E00).is_nan());
    }

    #[test]
    fn simple_values_and_every_tensor_kind() {
        let mut f = file_version();
        f.extend(record(&event(
            10,
            &[simple("loss", 2.5), simple("learning_rate", 1e-3)],
        )));
        f.extend(record(&event(
            20,
            &[tensor_value(
                "loss",
                &tensor(dtype::FLOAT, &[], &2.25f32.to_le_bytes(), None),
            )],
        )));
        f.extend(record(&event(
            30,
            &[tensor_value(
                "loss",
                &tensor(dtype::DOUBLE, &[], &2.125f64.to_le_bytes(), None),
            )],
        )));
        f.extend(record(&event(
            40,
            &[tensor_value(
                "loss",
                &tensor(dtype::HALF, &[], &0x4000u16.to_le_bytes(), None),
            )],
        )));
        // PyTorch's new-style scalars: float_val packed; a half in half_val
        f.extend(record(&event(
            50,
            &[tensor_value(
                "loss",
                &tensor(dtype::FLOAT, &[], &[], Some((5, 1.75f32.to_le_bytes().to_vec()))),
            )],
        )));
        let mut hv = Vec::new();
        varint(0x3E00, &mut hv); // 1.5
        f.extend(record(&event(
            60,
            &[tensor_value("loss", &tensor(dtype::HALF, &[], &[], Some((13, hv))))],
        )));
        f.extend(record(&event(
            70,
            &[tensor_value(
                "loss",
                &tensor(dtype::BFLOAT16, &[1], &0x3FA0u16.to_le_bytes(), None),
            )],
        )));
        // not scalars: a histogram-like [2,3] tensor and a string
        f.extend(record(&event(
            80,
            &[tensor_value("hist", &tensor(dtype::DOUBLE, &[2, 3], &[0u8; 48], None))],
        )));
        f.extend(record(&event(
            80,
            &[tensor_value("text", &tensor(7, &[], &[], Some((8, b"hi".to_vec()))))],
        )));
        let mut p = parse_bytes(&f);
        assert_eq!(p.malformed, 0, "{:?}", p.messages);
        finish(&mut p, &MetricSelection::default());
        let s = &p.series[LOSS].series;
        assert_eq!(s.steps, vec![10, 20, 30, 40, 50, 60, 70]);
        assert_eq!(s.values, vec![2.5, 2.25, 2.125, 2.0, 1.75, 1.5, 1.25]);
        assert_eq!(s.lr.len(), 7);
        assert_eq!(s.lr[0], 1e-3f32 as f64);
        assert!(s.lr[1].is_nan());
        assert!(!p.series.contains_key("hist") && !p.series.contains_key("text"));
    }

    #[test]
    fn truncated_tail_corrupt_middle_and_bad_header() {
        let recs: Vec<Vec<u8>> = (0..5).map(|i| record(&event(i, &[simple("loss", i as f32)]))).collect();
        let mut f: Vec<u8> = recs.concat();
        // corrupt the data of record 1 (offset of record 1 + 12 + a few)
        let r1 = recs[0].len();
        f[r1 + 14] ^= 0xFF;
        // corrupt the header of record 3
        let r3 = recs[..3].iter().map(Vec::len).sum::<usize>();
        f[r3] ^= 0x01;
        // a truncated record at the end
        let last = record(&event(9, &[simple("loss", 9.0)]));
        f.extend_from_slice(&last[..last.len() - 3]);
        let p = parse_bytes(&f);
        assert_eq!(p.series[LOSS].series.steps, vec![0, 2, 4]);
        assert_eq!(p.malformed, 3, "{:?}", p.messages);
        assert!(p.messages[0].contains(&format!("offset {r1}")), "{:?}", p.messages);
        assert!(
            p.messages[1].contains(&format!("header at offset {r3}")),
            "{:?}",
            p.messages
        );
        assert!(p.messages[2].contains("truncated last record"), "{:?}", p.messages);
    }

    #[test]
    fn junk_and_empty() {
        let p = parse_bytes(b"this is not a tfrecord file at all, just some text\n");
        assert!(p.series.is_empty());
        assert!(p.messages[0].contains("not a TFRecord file"), "{:?}", p.messages);
        let p = parse_bytes(b"");
        assert!(p.series.is_empty() && p.malformed == 0);
        let p = parse_bytes(b"abc");
        assert!(p.messages[0].contains("truncated"));
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic pseudo-random inputs and mutations of a valid file
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid: Vec<u8> = (0..20)
            .flat_map(|i| record(&event(i, &[simple("loss", 1.0), simple("lr", 0.1)])))
            .collect();
        for _ in 0..3000 {
            let mut f = valid.clone();
            for _ in 0..(rnd() % 8) {
                let i = (rnd() as usize) % f.len();
                f[i] = rnd() as u8;
            }
            f.truncate((rnd() as usize) % (f.len() + 1));
            let mut p = parse_bytes(&f);
            finish(&mut p, &MetricSelection::default());
            let junk: Vec<u8> = (0..(rnd() % 300)).map(|_| rnd() as u8).collect();
            parse_bytes(&junk);
            // a record announcing a huge length with a valid header checksum
            let mut big = (u64::MAX - 3).to_le_bytes().to_vec();
            big.extend_from_slice(&masked_crc(&big.clone()).to_le_bytes());
            big.extend_from_slice(&junk);
            parse_bytes(&big);
            // protobuf bodies of random bytes inside valid framing
            parse_bytes(&record(&junk));
        }
    }

    #[test]
    fn eval_prefixes_and_val_loss() {
        assert_eq!(prefix_for(&[]), "");
        assert_eq!(prefix_for(&["train"]), "");
        assert_eq!(prefix_for(&["validation"]), "eval/");
        assert_eq!(prefix_for(&["training_eval", "pile"]), "eval/pile/");
        let mut p = RunParse::default();
        parse(&record(&event(5, &[simple("epoch_loss", 3.0)])), "t", "", &mut p);
        parse(&record(&event(5, &[simple("epoch_loss", 3.5)])), "v", "eval/", &mut p);
        finish(&mut p, &MetricSelection::default());
        assert_eq!(p.series[LOSS].series.values, vec![3.0]);
        assert_eq!(p.series[VAL_LOSS].series.values, vec![3.5]);
        // two eval tasks: which one would be "the" validation loss? neither
        let mut p = RunParse::default();
        parse(&record(&event(5, &[simple("loss", 3.0)])), "t", "", &mut p);
        parse(&record(&event(5, &[simple("loss", 3.5)])), "a", "eval/a/", &mut p);
        parse(&record(&event(5, &[simple("loss", 3.625)])), "b", "eval/b/", &mut p);
        finish(&mut p, &MetricSelection::default());
        assert!(!p.series.contains_key(VAL_LOSS));
        assert_eq!(p.series["eval/b/loss"].series.values, vec![3.625]);
    }

    #[test]
    fn t5x_per_token_loss_is_preferred_to_the_summed_one() {
        let mut out = RunParse::default();
        for step in [10, 20] {
            out.push("loss", step, 4.0e5, None, None);
            out.push("loss_per_nonpadding_target_token", step, 2.5, None, None);
            out.push("eval/pile/loss", step, 3.0e5, None, None);
            out.push("eval/pile/loss_per_nonpadding_target_token", step, 2.7, None, None);
        }
        finish(&mut out, &MetricSelection::default());
        assert_eq!(out.series[LOSS].series.values, vec![2.5, 2.5]);
        assert_eq!(out.series[SUMMED_LOSS].series.values, vec![4.0e5, 4.0e5]);
        assert_eq!(out.series[VAL_LOSS].series.values, vec![2.7, 2.7]);
        assert!(out.series.contains_key("eval/pile/loss"));
        assert!(out.notes[0].contains("sum over the batch"), "{:?}", out.notes);
        // --metric loss keeps the sum as the loss
        let mut out = RunParse::default();
        out.push("loss", 10, 4.0e5, None, None);
        out.push("loss_per_nonpadding_target_token", 10, 2.5, None, None);
        let sel = MetricSelection {
            loss: Some("loss".into()),
            ..Default::default()
        };
        finish(&mut out, &sel);
        assert_eq!(out.series[LOSS].series.values, vec![4.0e5]);
    }
}
