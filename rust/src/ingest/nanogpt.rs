//! Text logs of nanoGPT-style trainers, one `key value` list a line:
//! - nanoGPT: `iter 100: loss 4.2345, time 12.34ms, mfu 30.12%` and its evaluations
//!   `step 250: train loss 4.1000, val loss 4.2000`;
//! - modded-nanogpt: `step:125/3600 train_loss:4.6078 train_time:...` and
//!   `step:125/3600 val_loss:4.6078 ...` (the total after the slash is the planned steps);
//! - torchtitan / NeMo: `step:  1  loss: 12.2366  memory: ...`, with ANSI colour codes
//!   between a label and its number, `key=value` lists.
//!
//! Such logs often begin with the training script's own source. A line counts only when a
//! step key and a loss key both carry literal numbers, so `print(f"iter {it}: loss {l}")`
//! or `loss = model(x)` are never read as points.
use std::borrow::Cow;

use super::series::{RunParse, LOSS, VAL_LOSS};
use super::text::parse_f64;
use super::MetricSelection;

const STEP_KEYS: &[&str] = &["iter", "step", "iteration", "global_step"];
pub const LOSS_KEYS: &[&str] = &[
    "loss",
    "train_loss",
    "train loss",
    "training loss",
    "reduced_train_loss",
    "train/loss",
    "lm loss",
    "lm_loss",
];
const VAL_KEYS: &[&str] = &[
    "val loss",
    "val_loss",
    "validation loss",
    "val/loss",
    "valid loss",
    "eval loss",
    "eval_loss",
    "validation_loss",
];
const LR_KEYS: &[&str] = &["lr", "learning rate", "learning_rate"];
/// On an evaluation line nanoGPT's `train loss` is an estimate over eval batches, not the
/// training loss of that step: it is kept under this name.
pub const EVAL_TRAIN_LOSS: &str = "eval_train_loss";

/// ESC `[` ... final byte: colour and cursor codes.
fn strip_ansi(line: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(0x1B, line).is_none() {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] == 0x1B {
            i += 1;
            if line.get(i) == Some(&b'[') {
                i += 1;
                while i < line.len() && !(0x40..=0x7E).contains(&line[i]) {
                    i += 1;
                }
            }
            i += 1;
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// One `key value` pair of a line: the key as written (trimmed), the value's text, and the
/// total when the value reads `N/T`.
struct Pair<'a> {
    key: &'a [u8],
    value: &'a [u8],
    total: Option<i64>,
}

/// The numbers of a line with the label before each. A number starts at a word boundary;
/// its label is the run of letters, digits, `_`, `/`, `.` and single spaces before it, back
/// to punctuation (`:`, `=`, `,`, `|`, `-`, brackets) - so `step 250: train loss 4.1` gives
/// (step, 250), (train loss, 4.1).
fn pairs(line: &[u8]) -> Vec<Pair<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut label_floor = 0; // labels never reach back into the previous value
    while i < line.len() {
        let start = i;
        let signed =
            matches!(line[i], b'-' | b'+') && line.get(i + 1).is_some_and(|c| c.is_ascii_digit() || *c == b'.');
        let begins = line[i].is_ascii_digit()
            || signed
            || (line[i] == b'.' && line.get(i + 1).is_some_and(u8::is_ascii_digit))
            || starts_word(line, i, b"nan")
            || starts_word(line, i, b"inf");
        let boundary = i == 0 || !(is_word(line[i - 1]) || line[i - 1] == b'.');
        if !(begins && boundary) {
            i += 1;
            continue;
        }
        // A unit or junk glued to the number stays in its text (`12.34ms`, `4.2x`): such a
        // value is not a number when it is read.
        let mut end = number_end(line, i);
        while end < line.len() && is_word(line[end]) {
            end += 1;
        }
        let value = &line[start..end];
        let mut total = None;
        let mut next = end;
        if line.get(end) == Some(&b'/') {
            let t_end = number_end(line, end + 1);
            if t_end > end + 1 {
                total = parse_f64(&line[end + 1..t_end])
                    .filter(|t| t.fract() == 0.0 && *t >= 0.0)
                    .map(|t| t as i64);
                next = t_end;
            }
        }
        let key = label(&line[label_floor..start]);
        out.push(Pair { key, value, total });
        label_floor = next;
        i = next.max(i + 1);
    }
    out
}

fn starts_word(line: &[u8], i: usize, word: &[u8]) -> bool {
    line.len() >= i + word.len()
        && line[i..i + word.len()].eq_ignore_ascii_case(word)
        && !line.get(i + word.len()).is_some_and(|b| is_word(*b))
}

fn number_end(line: &[u8], mut i: usize) -> usize {
    for w in [&b"nan"[..], b"inf"] {
        if starts_word(line, i, w) {
            return i + 3;
        }
    }
    if matches!(line.get(i), Some(b'-' | b'+')) {
        i += 1;
        if starts_word(line, i, b"inf") {
            return i + 3;
        }
    }
    while i < line.len() && line[i].is_ascii_digit() {
        i += 1;
    }
    if line.get(i) == Some(&b'.') {
        i += 1;
        while i < line.len() && line[i].is_ascii_digit() {
            i += 1;
        }
    }
    if matches!(line.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(line.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        if line.get(j).is_some_and(u8::is_ascii_digit) {
            while j < line.len() && line[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    i
}

fn label(before: &[u8]) -> &[u8] {
    let mut end = before.len();
    while end > 0 && matches!(before[end - 1], b' ' | b'\t' | b':' | b'=') {
        end -= 1;
    }
    let mut start = end;
    while start > 0 {
        let b = before[start - 1];
        let single_space = b == b' ' && start >= 2 && before[start - 2] != b' ' && is_word(before[start - 2]);
        if is_word(b) || b == b'/' || b == b'.' || single_space {
            start -= 1;
        } else {
            break;
        }
    }
    &before[start..end]
}

fn key_is(key: &[u8], names: &[&str]) -> bool {
    names.iter().any(|n| key.eq_ignore_ascii_case(n.as_bytes()))
}

/// What one line holds, if it is a log line.
struct Line<'a> {
    step: i64,
    total: Option<i64>,
    loss: Option<&'a [u8]>,
    val: Option<&'a [u8]>,
    lr: Option<f64>,
    extra: Vec<(usize, f64)>,
}

fn read_line<'a>(pairs: &'a [Pair<'a>], sel: &MetricSelection) -> Option<Line<'a>> {
    let first_step = pairs.iter().position(|p| key_is(p.key, STEP_KEYS))?;
    let sp = &pairs[first_step];
    let step = parse_f64(sp.value).filter(|s| s.is_finite() && *s >= 0.0 && s.fract() == 0.0)? as i64;
    let mut line = Line {
        step,
        total: sp.total,
        loss: None,
        val: None,
        lr: None,
        extra: Vec::new(),
    };
    // Fields may stand before the step too (NeMo prints `lr=...` ahead of `global_step=`).
    for (i, p) in pairs.iter().enumerate() {
        if i == first_step {
            continue;
        }
        let is_loss = match &sel.loss {
            Some(k) => p.key == k.as_bytes(),
            None => key_is(p.key, LOSS_KEYS),
        };
        if is_loss {
            line.loss.get_or_insert(p.value);
        } else if key_is(p.key, VAL_KEYS) {
            line.val.get_or_insert(p.value);
        } else if key_is(p.key, LR_KEYS) {
            line.lr = parse_f64(p.value);
        } else if let Some(i) = sel.extra.iter().position(|e| e.as_bytes() == p.key) {
            if let Some(v) = parse_f64(p.value) {
                line.extra.push((i, v));
            }
        }
    }
    (line.loss.is_some() || line.val.is_some()).then_some(line)
}

pub fn parse(data: &[u8], file: &str, sel: &MetricSelection, out: &mut RunParse) {
    let mut line_no = 0u64;
    let ends_with_newline = data.last() == Some(&b'\n');
    let mut start = 0;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let raw = &data[start..end];
        start = end + 1;
        line_no += 1;
        // Cheap rejection: every log line names a loss.
        if memchr::memmem::find(raw, b"loss").is_none() {
            continue;
        }
        let text = strip_ansi(raw);
        let found = pairs(&text);
        let Some(line) = read_line(&found, sel) else { continue };
        if end == data.len() && !ends_with_newline {
            out.malformed(file, line_no, || {
                "truncated last line (is the file still being written?)".into()
            });
            continue;
        }
        if let Some(t) = [line.loss, line.val]
            .into_iter()
            .flatten()
            .find(|t| parse_f64(t).is_none())
        {
            out.malformed(file, line_no, || {
                format!("cannot read '{}' as a loss", String::from_utf8_lossy(t))
            });
            continue;
        }
        let val = line.val.and_then(parse_f64);
        if let Some(v) = line.loss.and_then(parse_f64) {
            let metric = if val.is_some() && sel.loss.is_none() {
                EVAL_TRAIN_LOSS
            } else {
                LOSS
            };
            out.push(metric, line.step, v, line.lr, None);
        }
        if let Some(v) = val {
            out.push(VAL_LOSS, line.step, v, None, None);
        }
        for (i, v) in line.extra {
            out.push(&sel.extra[i], line.step, v, line.lr, None);
        }
        if line.total.is_some() {
            out.planned_steps = line.total;
        }
    }
}

/// Does this text hold nanoGPT-style log lines?
pub fn sniff(text: &[u8]) -> bool {
    let sel = MetricSelection::default();
    text.split(|&b| b == b'\n').any(|raw| {
        memchr::memmem::find(raw, b"loss").is_some() && {
            let t = strip_ansi(raw);
            let p = pairs(&t);
            read_line(&p, &sel).is_some_and(|l| l.loss.or(l.val).and_then(parse_f64).is_some())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> RunParse {
        let mut out = RunParse::default();
        parse(text.as_bytes(), "log", &MetricSelection::default(), &mut out);
        out
    }

    #[test]
    fn nanogpt_lines_and_its_evaluations() {
        let p = run("step 0: train loss 10.9000, val loss 10.9500\niter 0: loss 10.9876, time 1234.56ms, mfu -100.00%\niter 10: loss 9.5000, time 100.00ms, mfu 30.12%\nstep 250: train loss 4.1000, val loss 4.2000\n");
        assert_eq!(p.series[LOSS].series.steps, vec![0, 10]);
        assert_eq!(p.series[LOSS].series.values, vec![10.9876, 9.5]);
        assert_eq!(p.series[VAL_LOSS].series.steps, vec![0, 250]);
        assert_eq!(p.series[VAL_LOSS].series.values, vec![10.95, 4.2]);
        assert_eq!(p.series[EVAL_TRAIN_LOSS].series.values, vec![10.9, 4.1]);
        assert_eq!(p.malformed, 0);
    }

    #[test]
    fn modded_nanogpt_with_its_source_code_first() {
        let text = r#"import os
    loss = model(inputs, targets)
    print0(f"step:{step}/{train_steps} val_loss:{val_loss:.4f} train_time:{training_time_ms:.0f}ms")
    print0(f"step:{step+1}/{train_steps} train_loss:{loss.item():.4f}")
# iter 5: loss is computed below
for step in range(10): loss += 1
====================================================================================================
step:0/3600 val_loss:10.8258 train_time:0ms step_avg:nanms
step:1/3600 train_loss:10.8258 train_time:28722ms step_avg:nanms
step:2/3600 train_loss:9.5000 train_time:28900ms step_avg:178.00ms
step:125/3600 val_loss:4.6078 train_time:30000ms step_avg:150.00ms
"#;
        let p = run(text);
        assert_eq!(p.series[LOSS].series.steps, vec![1, 2]);
        assert_eq!(p.series[LOSS].series.values, vec![10.8258, 9.5]);
        assert_eq!(p.series[VAL_LOSS].series.steps, vec![0, 125]);
        assert_eq!(p.planned_steps, Some(3600));
        assert_eq!(p.malformed, 0, "{:?}", p.messages);
    }

    #[test]
    fn torchtitan_colours_and_nemo_pairs() {
        let text = "[titan] 2024-11-01 10:00:00,123 - root - INFO - \x1b[31mstep:  1  \x1b[32mloss: 12.2366  \x1b[33mmemory: 27.59GiB(29.04%)  \x1b[34mtps: 1,082  \x1b[35mmfu: 2.14%\x1b[39m\n\
[titan] 2024-11-01 10:00:10,123 - root - INFO - \x1b[31mstep: 10  \x1b[32mloss:  9.3725  \x1b[33mmemory: 27.59GiB(29.04%)\x1b[39m\n\
Epoch 0: : 10%| 100/1000 [01:00<09:00, lr=3e-4, global_step=99.0, reduced_train_loss=3.450]\n\
[NeMo I 2024-11-01 10:00:20 step] \x1b[1mglobal_step\x1b[0m: \x1b[36m120\x1b[0m \x1b[1mreduced_train_loss\x1b[0m: \x1b[36m3.2\x1b[0m\n";
        let p = run(text);
        let s = &p.series[LOSS].series;
        assert_eq!(s.steps, vec![1, 10, 99, 120]);
        assert_eq!(s.values, vec![12.2366, 9.3725, 3.45, 3.2]);
        assert_eq!(s.lr.len(), 4); // padded with NaN where a line has none
        assert_eq!(s.lr[2], 3e-4);
        assert!(s.lr[0].is_nan() && s.lr[3].is_nan());
    }

    #[test]
    fn bad_numbers_and_truncated_tail() {
        let p = run(
            "iter 1: loss 4.5, time 1ms\niter 2: loss nan, time 1ms\niter 3: loss 4.2x, time 1ms\niter 4: loss 4.1",
        );
        assert_eq!(p.series[LOSS].series.steps, vec![1, 2]);
        assert!(p.series[LOSS].series.values[1].is_nan());
        assert_eq!(p.malformed, 2, "{:?}", p.messages);
        assert!(
            p.messages[0].contains("'4.2x'") && p.messages[1].contains("truncated"),
            "{:?}",
            p.messages
        );
    }

    #[test]
    fn sniffs() {
        assert!(sniff(b"x\niter 100: loss 4.2345, time 12.34ms, mfu 30.12%\n"));
        assert!(sniff(b"step:1/3600 train_loss:10.8258 train_time:28722ms"));
        assert!(!sniff(b"print(f\"iter {it}: loss {l:.4f}\")\nloss = 3\n"));
    }

    #[test]
    fn random_lines_never_panic() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let alphabet = b"iter step loss val:=/ 0123456789.eE-+nainf\x1b[m,|%\n";
        for _ in 0..5000 {
            let text: Vec<u8> = (0..(x % 120))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let mut out = RunParse::default();
            parse(&text, "f", &MetricSelection::default(), &mut out);
            sniff(&text);
        }
    }
}
