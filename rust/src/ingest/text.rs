//! Megatron-style text logs, the Step Law fork's loguru lines included:
//! `... iter       35/   69259 | consumed samples: 4935 | learning rate: 1.1E-02 | ... | lm loss: 2.73E+00 |`
//! The hot path of an ingest: lines are found with memchr, fields are compared as bytes,
//! and only the numbers that are kept are parsed. Nothing is allocated per line.
use memchr::memmem::Finder;

use super::series::{RunParse, SeriesBuilder, LOSS, VAL_LOSS};
use super::MetricSelection;

/// Names under which Megatron logs print the training loss, best first.
pub const LOSS_KEYS: &[&str] = &["lm loss", "lm loss only", "loss", "train loss", "training loss"];
/// Names of the loss on Megatron's validation lines (`validation loss at iteration 100 | lm loss value: ...`).
const VAL_KEYS: &[&[u8]] = &[b"lm loss value", b"lm loss", b"loss"];

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

/// Where the bytes of `w` (8 text bytes loaded little-endian) are not ASCII digits: non-zero
/// bytes. Every non-digit is marked; a carry out of a byte 0xFA-0xFF can also mark a digit
/// after it, never one before, so the first mark is exact and no mark means eight digits.
#[inline(always)]
fn non_digits(w: u64) -> u64 {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let zeros = ONES * b'0' as u64;
    ((w & HIGH) ^ zeros) | ((w.wrapping_add(ONES * 6) & HIGH) ^ zeros)
}

/// The value of eight ASCII digits loaded little-endian (the first digit in the lowest byte),
/// combined pairwise in three multiplications.
#[inline(always)]
fn eight_digits(w: u64) -> u64 {
    let w = w - ONES * b'0' as u64;
    let w = (w * 10 + (w >> 8)) & 0x00FF_00FF_00FF_00FF;
    let w = (w * 100 + (w >> 16)) & 0x0000_FFFF_0000_FFFF;
    (w * 10_000 + (w >> 32)) & 0xFFFF_FFFF
}

/// The unsigned integer at the start of `s` and its length in digits.
#[inline]
fn parse_uint(s: &[u8]) -> Option<(i64, usize)> {
    let (mut v, mut n) = (0i64, 0usize);
    if let Some(w) = word_at(s, 0) {
        // Fewer than eight digits (counts, steps): read them from one word, padded with
        // leading zeros to eight.
        n = (non_digits(w).trailing_zeros() / 8) as usize;
        match n {
            0 => return None,
            1..=7 => {
                let padded = (w << (8 * (8 - n))) | (ONES * b'0' as u64) >> (8 * n);
                return Some((eight_digits(padded) as i64, n));
            }
            _ => v = eight_digits(w) as i64,
        }
    }
    // Up to 18 digits always fit an i64: no overflow checks in the common case.
    while let Some(d) = s.get(n).map(|b| b.wrapping_sub(b'0')).filter(|&d| d <= 9) {
        if n == 18 {
            return parse_long_uint(s);
        }
        v = v * 10 + d as i64;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

#[cold]
fn parse_long_uint(s: &[u8]) -> Option<(i64, usize)> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let v = s[..n]
        .iter()
        .try_fold(0i64, |v, &b| v.checked_mul(10)?.checked_add((b - b'0') as i64))?;
    Some((v, n))
}

/// A float in any of Rust's float syntaxes: Megatron's fixed `%E` form by the SWAR reader
/// below (2.5x faster than fast-float2 on that form: benches/RESULTS.md), anything else by
/// fast-float2 (the same results as `str::parse`, correctly rounded).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    parse_printf_e(s).or_else(|| fast_float2::parse(s).ok())
}

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// `m x 10^scale`, correctly rounded, when both m and 10^|scale| are exact doubles
/// (m < 2^53, |scale| <= 22): one IEEE operation then rounds once (Clinger's fast path).
fn exact_scaled(m: u64, scale: i32) -> Option<f64> {
    let m = m as f64;
    Some(if scale >= 0 {
        *POW10.get(scale as usize)? * m
    } else {
        m / *POW10.get(scale.unsigned_abs() as usize)?
    })
}

/// Megatron prints its floats with C's `%E`: `2.737994E+00`, 12 bytes in fixed places. Read
/// that form without a loop; anything else returns None.
#[inline]
fn parse_printf_e(s: &[u8]) -> Option<f64> {
    let s: &[u8; 12] = s.try_into().ok()?;
    let head = u64::from_le_bytes(s[..8].try_into().ok()?);
    let &[b'E', sign, e1, e2] = &s[8..] else { return None };
    if s[1] != b'.' {
        return None;
    }
    // The seven mantissa digits without the point, after a leading '0': eight digits.
    let digits = ((head & 0xFF) | ((head >> 8) & !0xFF)) << 8 | b'0' as u64;
    let (e1, e2) = (e1.wrapping_sub(b'0'), e2.wrapping_sub(b'0'));
    if non_digits(digits) != 0 || e1 > 9 || e2 > 9 {
        return None;
    }
    let mantissa = eight_digits(digits);
    let exp = (e1 * 10 + e2) as i32;
    match sign {
        b'+' => exact_scaled(mantissa, exp - 6),
        b'-' => exact_scaled(mantissa, -exp - 6),
        _ => None,
    }
}

// Byte scans over the short stretches of a log line (a field, a run of padding) go 8 bytes
// at a time through a u64: there, a call into memchr's SIMD search costs more in setup than
// it saves.
const ONES: u64 = 0x0101_0101_0101_0101;

#[inline(always)]
fn word_at(s: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(s.get(i..i + 8)?.try_into().ok()?))
}

/// The index of the first byte at or after `i` that is not a space (or `s.len()`).
#[inline(always)]
fn skip_spaces(s: &[u8], i: usize) -> usize {
    // Most calls skip one space or none: settle those before going a word at a time.
    match s.get(i) {
        Some(b' ') if s.get(i + 1) != Some(&b' ') => i + 1,
        Some(b' ') => skip_space_run(s, i + 2),
        _ => i,
    }
}

fn skip_space_run(s: &[u8], mut i: usize) -> usize {
    while let Some(w) = word_at(s, i) {
        let other = w ^ (ONES * b' ' as u64); // non-zero bytes: not spaces
        if other != 0 {
            return i + (other.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    i
}

/// The index of the first `byte` in `s`.
#[inline]
fn find_byte(s: &[u8], byte: u8) -> Option<usize> {
    let mut i = 0;
    while let Some(w) = word_at(s, i) {
        // Zero bytes of x are matches. The high bit of each zero byte of x; a borrow can also
        // mark bytes above a zero byte, never below one, so the lowest mark is exact.
        let x = w ^ (ONES * byte as u64);
        let zeros = x.wrapping_sub(ONES) & !x & (ONES << 7);
        if zeros != 0 {
            return Some(i + (zeros.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&b| b == byte).map(|p| i + p)
}

/// Where a line's `iter N/M` (or `iteration N/M`, or `iteration N |`) is: (step, total,
/// where "iter" starts, index after the numbers). None when it is not a training-log line.
fn find_iteration(finder: &Finder, line: &[u8]) -> Option<(i64, Option<i64>, usize, usize)> {
    let mut from = 0;
    while let Some(off) = finder.find(&line[from..]) {
        let p = from + off;
        from = p + 4;
        if p > 0 && (line[p - 1].is_ascii_alphanumeric() || line[p - 1] == b'_') {
            continue;
        }
        let mut i = p + 4;
        if line[i..].starts_with(b"ation") {
            i += 5;
        }
        let j = skip_spaces(line, if line.get(i) == Some(&b':') { i + 1 } else { i });
        if j == i {
            continue; // "iterations", "iter_time", ...
        }
        let Some((step, n)) = parse_uint(&line[j..]) else {
            continue;
        };
        let k = skip_spaces(line, j + n);
        if line.get(k) == Some(&b'/') {
            let t = skip_spaces(line, k + 1);
            if let Some((total, m)) = parse_uint(&line[t..]) {
                return Some((step, Some(total), p, t + m));
            }
        } else if line.get(k) == Some(&b'|') {
            return Some((step, None, p, k));
        }
    }
    None
}

struct Wanted<'a> {
    loss_keys: Vec<&'a [u8]>,
    extra: Vec<(&'a [u8], &'a str)>,
}

/// The standard fields of one line: the loss (its text when that is not a number), learning
/// rate, consumed samples and global batch size.
struct StandardFields<'a> {
    loss: Result<f64, &'a [u8]>,
    lr: Option<f64>,
    samples: Option<i64>,
    batch: Option<i64>,
}

/// A standard field's value: read as a number where it lies, or else its text.
#[derive(Clone, Copy)]
enum Value<'a> {
    Float(f64),
    Int(i64),
    Text(&'a [u8]),
}

impl<'a> Value<'a> {
    fn float(self) -> Result<f64, &'a [u8]> {
        match self {
            Value::Float(x) => Ok(x),
            Value::Int(x) => Ok(x as f64),
            Value::Text(t) => parse_f64(t).ok_or(t),
        }
    }
    fn int(self) -> Option<i64> {
        match self {
            Value::Int(x) => Some(x),
            Value::Float(_) => None,
            Value::Text(t) => parse_uint(t).map(|x| x.0),
        }
    }
}

/// The keys of the standard fields, in the order `read_standard_fields` returns them.
const STANDARD_KEYS: [&[u8]; 4] = [
    b"lm loss:",
    b"learning rate:",
    b"consumed samples:",
    b"global batch size:",
];

/// Which standard field's key `field` starts with, if any. The keys are compared at constant
/// length: a few word compares, no call to memcmp.
#[inline(always)]
fn standard_key(field: &[u8]) -> Option<usize> {
    match field.first()? {
        b'l' if field.starts_with(STANDARD_KEYS[0]) => Some(0),
        b'l' if field.starts_with(STANDARD_KEYS[1]) => Some(1),
        b'c' if field.starts_with(STANDARD_KEYS[2]) => Some(2),
        b'g' if field.starts_with(STANDARD_KEYS[3]) => Some(3),
        _ => None,
    }
}

/// The length of the token at the start of `s`: up to the first space, tab, CR or '|'.
#[inline(always)]
fn token_len(s: &[u8]) -> usize {
    s.iter()
        .position(|b| matches!(b, b' ' | b'|' | b'\t' | b'\r'))
        .unwrap_or(s.len())
}

/// A standard field's value read where it starts, at `v`, in the form Megatron prints: `%E`
/// for the loss and learning rate, digits for the counts. Returns the value and where it
/// ends; the caller checks that only spaces follow up to the field's end.
#[inline(always)]
fn number_at(fields: &[u8], v: usize, slot: usize) -> Option<(Value<'_>, usize)> {
    if slot < 2 {
        Some((Value::Float(parse_printf_e(fields.get(v..v + 12)?)?), v + 12))
    } else {
        let (x, n) = parse_uint(&fields[v..])?;
        Some((Value::Int(x), v + n))
    }
}

/// The fields of a standard Megatron line: `lm loss`, `learning rate`, `consumed samples`,
/// `global batch size`. One pass over the fields with a dispatch on each field's first
/// letter; most lines of most logs take this path and skip the fields nobody asked for.
/// A field's value is its text after the key, trimmed. Where that is one token with only
/// spaces after it up to the next '|' (as Megatron prints numbers), the token is read as a
/// number in place, and its end gives the field's without a search for that '|'.
/// Returns the fields when the line has an `lm loss` field.
fn read_standard_fields(fields: &[u8]) -> Option<StandardFields<'_>> {
    // The first field of each name counts (as in the general scan), and the scan stops once
    // all four are found (Megatron prints them before its many other fields).
    let mut found: [Option<Value>; 4] = [None; 4];
    let mut start = 0;
    while start < fields.len() {
        let k = skip_spaces(fields, start);
        let field_end = |from: usize| find_byte(&fields[from..], b'|').map_or(fields.len(), |i| from + i);
        let Some(slot) = standard_key(&fields[k..]) else {
            start = field_end(k) + 1;
            continue;
        };
        let v = skip_spaces(fields, k + STANDARD_KEYS[slot].len());
        let (mut value, t) = number_at(fields, v, slot).unwrap_or_else(|| {
            let t = v + token_len(&fields[v..]);
            (Value::Text(&fields[v..t]), t)
        });
        let u = skip_spaces(fields, t);
        if u == fields.len() || fields[u] == b'|' {
            start = u + 1;
        } else {
            let end = field_end(t);
            value = Value::Text(trim(&fields[v..end]));
            start = end + 1;
        }
        found[slot].get_or_insert(value);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    let [loss, lr, samples, batch] = found;
    Some(StandardFields {
        loss: loss?.float(),
        lr: lr.and_then(|v| v.float().ok()),
        samples: samples.and_then(Value::int),
        batch: batch.and_then(Value::int),
    })
}

/// Parses Megatron-style lines a chunk of whole lines at a time (a log streamed in blocks).
pub struct TextParser<'a> {
    iter: Finder<'static>,
    validation: Finder<'static>,
    evaluation: Finder<'static>,
    /// The direct field scan serves the default selection only: a chosen loss key or extra
    /// metrics need the general one.
    standard: bool,
    wanted: Wanted<'a>,
    line_no: u64,
    /// The training loss's series, held here while parsing: most lines add a point to it.
    loss: SeriesBuilder,
}

impl<'a> TextParser<'a> {
    /// A parser of one file's lines into `out`; `finish` hands its points over.
    pub fn new(sel: &'a MetricSelection, out: &mut RunParse) -> Self {
        TextParser {
            loss: out.take_builder(LOSS),
            iter: Finder::new(b"iter"),
            validation: Finder::new(b"validation"),
            evaluation: Finder::new(b"evaluation"),
            standard: sel.loss.is_none() && sel.extra.is_empty(),
            wanted: Wanted {
                loss_keys: match &sel.loss {
                    Some(k) => vec![k.as_bytes()],
                    None => LOSS_KEYS.iter().map(|k| k.as_bytes()).collect(),
                },
                extra: sel.extra.iter().map(|k| (k.as_bytes(), k.as_str())).collect(),
            },
            line_no: 0,
        }
    }

    /// Parse the whole lines of `data` into `out`; only a chunk `at_eof` may end in an
    /// unterminated line. `file` names the file in messages.
    pub fn feed(&mut self, data: &[u8], at_eof: bool, file: &str, out: &mut RunParse) {
        out.tokens_are_samples = true;
        let ends_with_newline = data.last() == Some(&b'\n');
        let mut start = 0;
        while start < data.len() {
            let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
            let line = &data[start..end];
            start = end + 1;
            self.line_no += 1;
            let line_no = self.line_no;
            let Some((step, total, at, rest)) = find_iteration(&self.iter, line) else {
                continue;
            };
            let is_last_unterminated = at_eof && end == data.len() && !ends_with_newline;
            if is_last_unterminated && trim(line).last() != Some(&b'|') {
                out.malformed(file, line_no, || {
                    "truncated last line (is the file still being written?)".into()
                });
                continue;
            }
            // Megatron's validation lines read "validation loss at iteration 100 | ...".
            let is_validation = {
                let head = &line[..at];
                head.ends_with(b"loss at ")
                    && (self.validation.find(head).is_some() || self.evaluation.find(head).is_some())
            };
            if !is_validation {
                if let Some(f) = self.standard.then(|| read_standard_fields(&line[rest..])).flatten() {
                    // A line whose loss cannot be read is skipped whole, as in `parse_fields`.
                    match f.loss {
                        Ok(v) => {
                            self.loss.push(step, v, f.lr, f.samples);
                            out.planned_steps = total.or(out.planned_steps);
                            out.batch_size = f.batch.or(out.batch_size);
                        }
                        Err(text) => out.malformed(file, line_no, || {
                            format!(
                                "field 'lm loss': cannot read '{}' as a number",
                                String::from_utf8_lossy(text)
                            )
                        }),
                    }
                    continue;
                }
            }
            parse_fields(
                line,
                rest,
                step,
                total,
                is_validation,
                &self.wanted,
                file,
                line_no,
                &mut self.loss,
                out,
            );
        }
    }

    pub fn finish(self, out: &mut RunParse) {
        out.put_builder(self.loss);
    }
}

/// Parse a whole Megatron-style log `data` into `out`. `file` names the file in messages.
pub fn parse(data: &[u8], file: &str, sel: &MetricSelection, out: &mut RunParse) {
    let mut parser = TextParser::new(sel, out);
    parser.feed(data, true, file, out);
    parser.finish(out);
}

#[allow(clippy::too_many_arguments)]
fn parse_fields(
    line: &[u8],
    rest: usize,
    step: i64,
    total: Option<i64>,
    is_validation: bool,
    wanted: &Wanted,
    file: &str,
    line_no: u64,
    loss_series: &mut SeriesBuilder,
    out: &mut RunParse,
) {
    let mut loss: Option<(usize, &[u8])> = None; // (priority, value text)
    let mut lr = None;
    let mut samples = None;
    let mut batch = None;
    let mut extras: Vec<Option<&[u8]>> = vec![None; wanted.extra.len()];
    let keys: &[&[u8]] = if is_validation { VAL_KEYS } else { &wanted.loss_keys };
    // Fields are `key: value |`. One SIMD scan finds every ':' and '|' of the line; the
    // first ':' after a '|' splits key from value.
    let fields = &line[rest..];
    let delims = memchr::memchr2_iter(b':', b'|', fields).chain(std::iter::once(fields.len()));
    let mut field_start = 0;
    let mut colon: Option<usize> = None;
    for d in delims {
        if d < fields.len() && fields[d] == b':' {
            colon.get_or_insert(d);
            continue;
        }
        let (start, end) = (field_start, d);
        field_start = d + 1;
        let Some(c) = colon.take() else { continue };
        let key = trim(&fields[start..c]);
        let value = trim(&fields[c + 1..end]);
        if let Some(prio) = keys.iter().position(|k| *k == key) {
            if loss.is_none_or(|(p, _)| prio < p) {
                loss = Some((prio, value));
            }
        } else if key == b"learning rate" {
            lr.get_or_insert_with(|| parse_f64(value));
        } else if key == b"consumed samples" {
            samples.get_or_insert_with(|| parse_uint(value).map(|(v, _)| v));
        } else if key == b"global batch size" {
            batch.get_or_insert_with(|| parse_uint(value).map(|(v, _)| v));
        } else if let Some(i) = wanted.extra.iter().position(|(k, _)| *k == key) {
            extras[i] = Some(value);
        }
    }
    // The first field of each name counts, as in `read_standard_fields`.
    let (lr, samples, batch) = (lr.flatten(), samples.flatten(), batch.flatten());
    match loss {
        Some((_, text)) => match parse_f64(text) {
            Some(v) if is_validation => out.push(VAL_LOSS, step, v, lr, samples),
            Some(v) => loss_series.push(step, v, lr, samples),
            None => {
                let key = String::from_utf8_lossy(keys[loss.map_or(0, |l| l.0)]).into_owned();
                out.malformed(file, line_no, || {
                    format!(
                        "field '{key}': cannot read '{}' as a number",
                        String::from_utf8_lossy(text)
                    )
                });
                return;
            }
        },
        None if is_validation => return,
        None => {
            let names = keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
                .join("' or '");
            out.malformed(file, line_no, || format!("no field '{names}' on this log line"));
            return;
        }
    }
    for (i, v) in extras.iter().enumerate() {
        if let (Some(text), Some((_, name))) = (v, wanted.extra.get(i)) {
            if let Some(x) = parse_f64(text) {
                out.push(name, step, x, lr, samples);
            }
        }
    }
    if total.is_some() {
        out.planned_steps = total;
    }
    if batch.is_some() {
        out.batch_size = batch;
    }
}

/// Does this text look like a Megatron-style training log? (For files whose name says nothing.)
pub fn sniff(head: &[u8]) -> bool {
    let finder = Finder::new(b"iter");
    head.split(|&b| b == b'\n')
        .any(|line| find_iteration(&finder, line).is_some() && memchr::memmem::find(line, b"loss").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> RunParse {
        let mut out = RunParse::default();
        parse(s.as_bytes(), "f.txt", &MetricSelection::default(), &mut out);
        out
    }

    const LOGURU: &str = "2024-06-18 12:00:00.010 | INFO     | megatron.core.trainerv2:training_log:812 - iter       35/   69259 | consumed samples:         4935 | learning rate: 1.100000E-02 | global batch size:   141 | lm loss: 2.737994E+00 | grad norm: 0.412 |\n";

    #[test]
    fn reads_a_step_law_loguru_line() {
        let p = parse_str(LOGURU);
        let s = &p.series[LOSS].series;
        assert_eq!(s.steps, vec![35]);
        assert_eq!(s.values, vec![2.737994]);
        assert_eq!(s.lr, vec![0.011]);
        assert_eq!(s.tokens, vec![4935]);
        assert_eq!(p.planned_steps, Some(69259));
        assert_eq!(p.batch_size, Some(141));
        assert_eq!(p.malformed, 0);
    }

    #[test]
    fn reads_megatron_lm_lines_and_validation() {
        let text = " [2024-06-18 12:00:00] iteration      100/  500000 | consumed samples:        51200 | elapsed time per iteration (ms): 1234.5 | learning rate: 1.000000E-04 | global batch size:   512 | lm loss: 7.123456E+00 | loss scale: 1.0 | grad norm: 1.234 | number of skipped iterations:   0 | number of nan iterations:   0 |\n validation loss at iteration 100 | lm loss value: 7.5 | lm loss PPL: 1808.0 |\n";
        let p = parse_str(text);
        assert_eq!(p.series[LOSS].series.values, vec![7.123456]);
        assert_eq!(p.series[VAL_LOSS].series.values, vec![7.5]);
        assert_eq!(p.malformed, 0);
    }

    #[test]
    fn other_lines_are_ignored_and_bad_numbers_counted() {
        let text = format!(
            "building model\nsaved checkpoint at iteration 1000 to /ckpt\n{}{}",
            LOGURU.replace("2.737994E+00", "2.7x"),
            LOGURU.replace("iter       35", "iter       36")
        );
        let p = parse_str(&text);
        assert_eq!(p.series[LOSS].series.steps, vec![36]);
        assert_eq!(p.malformed, 1);
        assert!(
            p.messages[0].starts_with("f.txt:3: field 'lm loss'"),
            "{:?}",
            p.messages
        );
    }

    #[test]
    fn nan_and_inf_are_values_and_a_truncated_tail_is_skipped() {
        let text = format!(
            "{}{}{}",
            LOGURU.replace("2.737994E+00", "nan"),
            LOGURU
                .replace("iter       35", "iter       36")
                .replace("2.737994E+00", "inf"),
            &LOGURU.replace("iter       35", "iter       37")[..150]
        );
        let p = parse_str(&text);
        let v = &p.series[LOSS].series.values;
        assert!(v[0].is_nan() && v[1].is_infinite());
        assert_eq!(v.len(), 2);
        assert_eq!(p.malformed, 1);
        assert!(p.messages[0].contains("truncated"), "{:?}", p.messages);
    }

    #[test]
    fn floats_agree_with_std() {
        let cases = [
            "2.737994E+00",
            "1.100000E-02",
            "0",
            "-0.5",
            "+3",
            "1e-5",
            "3.453e-04",
            "123456789012345",
            "0.1",
            "9.999999E+22",
            "7.",
            ".5",
            "1234567890123456789",
            "1e400",
            "nan",
            "inf",
            "-",
            "1e",
            "1.2.3",
            "",
        ];
        for c in cases {
            let std = c.parse::<f64>().ok();
            let fast = parse_f64(c.as_bytes());
            assert_eq!(fast.map(f64::to_bits), std.map(f64::to_bits), "{c}");
        }
        // exhaustive-ish: every %E form of many values round-trips bit for bit
        let mut x = 1.234567e-7_f64;
        for _ in 0..2000 {
            for text in [format!("{x:.6E}"), format!("{x:.7}"), format!("{x}")] {
                assert_eq!(
                    parse_f64(text.as_bytes()).map(f64::to_bits),
                    text.parse::<f64>().ok().map(f64::to_bits),
                    "{text}"
                );
            }
            x *= 1.0173;
        }
    }

    #[test]
    fn printf_e_floats_agree_with_std() {
        // C's %E, as Megatron prints: a sign and at least two exponent digits.
        let printf_e = |x: f64| {
            let rust = format!("{x:.6E}");
            let (m, e) = rust.split_once('E').unwrap();
            let e: i32 = e.parse().unwrap();
            format!("{m}E{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        };
        let mut x = 3.7e-40_f64;
        while x < 1e40 {
            for v in [x, -x] {
                let text = printf_e(v);
                assert_eq!(
                    parse_f64(text.as_bytes()).map(f64::to_bits),
                    text.parse::<f64>().ok().map(f64::to_bits),
                    "{text}"
                );
            }
            x *= 1.0131;
        }
        assert_eq!(parse_printf_e(b"2.737994E+00"), Some(2.737994));
        assert_eq!(parse_printf_e(b"1.000000E-30"), None); // beyond the exact range: the general parser
        for bad in [
            "2.737994E+0",
            "2.737994e+00",
            "2,737994E+00",
            "2.73799xE+00",
            "2.737994E*00",
        ] {
            assert_eq!(parse_printf_e(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn word_scans_agree_with_plain_ones() {
        let text = b"  iter      12/ 3400 | a:1|\x80\x01|\xff  |  x   | y|";
        for start in 0..text.len() {
            let s = &text[start..];
            for byte in [b'|', b' ', b':', 0x80, 0x01, 0xff, b'z'] {
                assert_eq!(find_byte(s, byte), s.iter().position(|&b| b == byte), "{start} {byte}");
            }
            for i in 0..=s.len() {
                let plain = i + s[i..].iter().take_while(|&&b| b == b' ').count();
                assert_eq!(skip_spaces(s, i), plain, "{start} {i}");
            }
        }
    }

    #[test]
    fn word_parsed_integers_agree_with_a_digit_loop() {
        let plain = |s: &[u8]| {
            let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
            let v = std::str::from_utf8(&s[..n]).ok()?.parse::<i64>().ok()?;
            Some((v, n))
        };
        let mut rng = crate::fit::rng::Rng::new(3);
        let alphabet = b"0123456789 |/:.+-Ee\xfa\xff\x00";
        for _ in 0..200_000 {
            let len = rng.below(24);
            let s: Vec<u8> = (0..len)
                .map(|_| {
                    let range = if rng.below(2) == 0 { 10 } else { alphabet.len() };
                    alphabet[rng.below(range)]
                })
                .collect();
            assert_eq!(parse_uint(&s), plain(&s), "{:?}", String::from_utf8_lossy(&s));
        }
        for &(x, n) in &[
            (0i64, 1usize),
            (7, 1),
            (12345678, 8),
            (99999999, 8),
            (1234567, 7),
            (123456789012345678, 18),
        ] {
            let text = format!("{x:0n$}|more");
            assert_eq!(parse_uint(text.as_bytes()), Some((x, n)), "{text}");
        }
    }

    #[test]
    fn integers_at_the_edge_of_i64() {
        assert_eq!(parse_uint(b"9223372036854775807|"), Some((i64::MAX, 19)));
        assert_eq!(parse_uint(b"9223372036854775808"), None);
        assert_eq!(parse_uint(b"000000000000000000042"), Some((42, 21)));
        assert_eq!(parse_uint(b"x1"), None);
    }

    /// The direct scan of the standard fields must read every line as the general scan does.
    #[test]
    fn the_direct_field_scan_agrees_with_the_general_one() {
        let mut rng = crate::fit::rng::Rng::new(11);
        let values = [
            "1.088281E+01",
            "2.413302E-06",
            "9.999999E+22",
            "1.000000E-30",
            "2.737994E+00\t",
            "2.737994E+0",
            "nan",
            "inf",
            "-1.5",
            "7",
            "",
            "1e400",
            "3.4e",
            "12 34",
            "0x1",
            "\t5",
            "00012",
            "99999999999999999999",
            "464abc",
            "1:2",
            "+3",
            "1.0\r",
        ];
        let keys = [
            "consumed samples",
            "learning rate",
            "global batch size",
            "lm loss",
            "grad norm",
            "lm loss only",
            "loss",
        ];
        let general = MetricSelection {
            loss: None,
            extra: vec!["no such metric".into()],
        };
        for case in 0..20_000 {
            let mut text = String::new();
            for line in 0..3 {
                let step = 10 * case + line;
                text.push_str(&format!(
                    "2024-06-18 12:00:00.010 | INFO     | t:training_log:812 - iter {step:>8}/{:>8} |",
                    5000
                ));
                for _ in 0..rng.below(8) {
                    let key = keys[rng.below(keys.len())];
                    let value = match rng.below(3) {
                        0 => values[rng.below(values.len())].to_string(),
                        1 => format!("{}", rng.below(1 << 20)),
                        _ => format!("{:.6E}", rng.below(1000) as f64 * 1e-3)
                            .replace("E-", "E-0")
                            .replace("E0", "E+00"),
                    };
                    let pad = |r: &mut crate::fit::rng::Rng| " ".repeat(r.below(12));
                    text.push_str(&format!(
                        "{}{key}:{}{value}{}|",
                        pad(&mut rng),
                        pad(&mut rng),
                        pad(&mut rng)
                    ));
                }
                if rng.below(4) > 0 {
                    text.push('\n');
                }
            }
            let mut direct = RunParse::default();
            parse(text.as_bytes(), "f", &MetricSelection::default(), &mut direct);
            let mut scanned = RunParse::default();
            parse(text.as_bytes(), "f", &general, &mut scanned);
            let summary = |p: &RunParse| {
                let series: Vec<_> = p
                    .series
                    .values()
                    .map(|b| {
                        let s = &b.series;
                        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        (
                            s.metric.clone(),
                            s.steps.clone(),
                            bits(&s.values),
                            bits(&s.lr),
                            s.tokens.clone(),
                        )
                    })
                    .collect();
                (series, p.planned_steps, p.batch_size, p.malformed, p.messages.clone())
            };
            assert_eq!(summary(&direct), summary(&scanned), "{text}");
        }
    }

    #[test]
    fn lm_loss_only_is_a_loss_key() {
        let p = parse_str(&LOGURU.replace("lm loss:", "lm loss only:"));
        assert_eq!(p.series[LOSS].series.values, vec![2.737994]);
    }
}
