//! Text logs of nanoGPT-style trainers, one `key value` list a line:
//! - nanoGPT: `iter 100: loss 4.2345, time 12.34ms, mfu 30.12%` and its evaluations
//!   `step 250: train loss 4.1000, val loss 4.2000`;
//! - modded-nanogpt: `step:125/3600 train_loss:4.6078 train_time:...` and
//!   `step:125/3600 val_loss:4.6078 ...` (the total after the slash is the planned steps);
//! - torchtitan / NeMo: `step:  1  loss: 12.2366  memory: ...`, with ANSI colour codes
//!   between a label and its number, `key=value` lists;
//! - llm.c (`main.log`): `s:100 trl:4.2345 lr:0.0006 norm:0.52` and `s:250 tel:4.2000`.
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
    "trl",
];
pub const VAL_KEYS: &[&str] = &[
    "val loss",
    "val_loss",
    "validation loss",
    "val/loss",
    "valid loss",
    "eval loss",
    "eval_loss",
    "validation_loss",
    "tel",
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
    // llm.c writes `s:<step>` before `trl:` / `tel:`; a bare `s` is a step only there.
    let llmc = || {
        let loss_or_val = |p: &Pair| key_is(p.key, &["trl", "tel"]);
        (pairs.first()?.key == b"s" && pairs.iter().any(loss_or_val)).then_some(0)
    };
    let first_step = pairs.iter().position(|p| key_is(p.key, STEP_KEYS)).or_else(llmc)?;
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

/// The configuration a nanoGPT-style log prints before (or between) its points:
/// - modded-nanogpt prints its own source first: the `class Hyperparameters:` block's
///   `name: type = value  # comment` lines are read (products such as `64*1024` too);
/// - nanoGPT prints `Overriding config with <file>:` then the file's `name = value` lines,
///   `Overriding: name = value`, and `tokens per iteration will be: 491,520`;
/// - sweep scripts print `config key=value key=value ...` and `trial:2/10 seed:1`;
/// - the model built in the printed source, `GPT(..., num_layers=12, model_dim=768)` or
///   `GPTConfig(n_layer=12, n_head=6, n_embd=768)`, gives the shape (literal numbers only).
///
/// Known names fill the configuration's fields (lr, batch size in sequences or tokens, seq
/// len, steps, n_layer/n_embd/n_head and from them N = 12 n_layer n_embd^2, GPT-2's
/// non-embedding count); other numbers become tags (`weight_decay`, `lr_head`, ...).
mod header {
    use crate::model::RunConfig;

    pub enum Seen {
        Nothing,
        /// A `trial:k/n` line: a trial begins (its tags wait in `pending`).
        Trial,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Source {
        /// modded-nanogpt's `class Hyperparameters` block.
        Hyper,
        /// nanoGPT's configurator output (its `batch_size` is per device).
        Override,
        /// `config key=value ...` lines.
        Line,
    }

    #[derive(Default)]
    pub struct Reader {
        in_hyper: bool,
        hyper_done: bool,
        overriding: bool,
        /// The model's shape was read from the source (the first model built).
        shape_done: bool,
        pending: Vec<(String, String)>,
    }

    /// A number or a product of numbers (`8*64`, `2048 * 24 * 8`, `3e-4`, `1_000`).
    fn eval(expr: &str) -> Option<f64> {
        let mut v = 1.0;
        for factor in expr.split('*') {
            let f = factor.trim().replace('_', "");
            if f.is_empty() {
                return None;
            }
            v *= f.parse::<f64>().ok().filter(|x| x.is_finite())?;
        }
        Some(v)
    }

    fn is_name(s: &str) -> bool {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    }

    fn int_text(v: f64) -> String {
        if v.fract() == 0.0 && v.abs() < 9e18 {
            format!("{}", v as i64)
        } else {
            format!("{v}")
        }
    }

    fn set_int(slot: &mut Option<i64>, v: f64) {
        if v.fract() == 0.0 && v > 0.0 && v < 9e18 {
            *slot = Some(v as i64);
        }
    }

    fn apply(cfg: &mut RunConfig, key: &str, v: f64, comment: &str, source: Source) {
        let comment = comment.to_ascii_lowercase();
        match key {
            "batch_size" if source == Source::Override => {
                cfg.tags.insert("micro_batch_size".into(), int_text(v));
            }
            "batch_size" | "train_batch_size" | "global_batch_size" | "total_batch_size" | "batch_tokens" => {
                let tokens = key.contains("token")
                    || comment.contains("token")
                    || (!comment.contains("sequence") && v >= 65536.0);
                set_int(if tokens { &mut cfg.bs_tokens } else { &mut cfg.bs }, v);
            }
            "sequence_length" | "seq_len" | "seq_length" | "train_seq_len" | "train_max_seq_len" | "max_seq_len" => {
                set_int(&mut cfg.seq_len, v)
            }
            // nanoGPT's context length; modded-nanogpt's block_size is an attention block.
            "block_size" if source == Source::Override => set_int(&mut cfg.seq_len, v),
            "num_iterations" | "max_iters" | "train_steps" | "num_steps" | "total_steps" | "max_steps" => {
                set_int(&mut cfg.steps, v)
            }
            "learning_rate" | "lr" => cfg.lr = Some(v).filter(|x| *x > 0.0),
            "min_lr" => cfg.lr_min = Some(v).filter(|x| *x >= 0.0),
            "n_layer" | "n_layers" | "num_layers" => set_int(&mut cfg.numl, v),
            "n_embd" | "n_embed" | "model_dim" | "d_model" => set_int(&mut cfg.h, v),
            "n_head" | "n_heads" | "num_heads" => set_int(&mut cfg.numh, v),
            "weight_decay" | "wd" => {
                cfg.tags.insert("weight_decay".into(), format!("{v}"));
            }
            _ => {
                cfg.tags.insert(key.to_string(), int_text(v));
            }
        }
    }

    /// `name[: type] = value  # comment` -> (name, value, comment).
    fn assignment(line: &str) -> Option<(&str, f64, &str)> {
        let (code, comment) = line.split_once('#').unwrap_or((line, ""));
        let (lhs, rhs) = code.split_once('=')?;
        if rhs.starts_with('=') {
            return None; // `==`
        }
        let name = lhs.split(':').next()?.trim();
        Some((name, eval(rhs)?, comment)).filter(|(n, ..)| is_name(n))
    }

    impl Reader {
        /// Read one line that is not a log line.
        pub fn line(&mut self, raw: &[u8], cfg: &mut RunConfig) -> Seen {
            let Ok(line) = std::str::from_utf8(raw) else {
                return Seen::Nothing;
            };
            let line = line.trim_end_matches('\r');
            if self.in_hyper {
                if line.starts_with([' ', '\t']) || line.trim().is_empty() {
                    if let Some((k, v, c)) = assignment(line) {
                        apply(cfg, k, v, c, Source::Hyper);
                    }
                    return Seen::Nothing;
                }
                self.in_hyper = false;
                self.hyper_done = true;
            }
            if !self.hyper_done && line.starts_with("class Hyperparameters") {
                self.in_hyper = true;
            } else if let Some(rest) = line.strip_prefix("Overriding: ") {
                if let Some((k, v, c)) = assignment(rest) {
                    apply(cfg, k, v, c, Source::Override);
                }
            } else if line.starts_with("Overriding config with ") {
                self.overriding = true;
            } else if let Some(rest) = line.strip_prefix("tokens per iteration will be:") {
                if let Some(v) = eval(&rest.trim().replace(',', "")) {
                    set_int(&mut cfg.bs_tokens, v);
                }
            } else if let Some(rest) = line.strip_prefix("config ") {
                for item in rest.split_whitespace() {
                    if item.contains(['{', '[', '(']) {
                        break; // a dict or list value: the rest is its text
                    }
                    if let Some((k, v)) = item.split_once('=').and_then(|(k, t)| Some((k, eval(t)?))) {
                        if is_name(k) {
                            apply(cfg, k, v, "", Source::Line);
                        }
                    }
                }
            } else if let Some(rest) = line.strip_prefix("trial:").or_else(|| line.strip_prefix("trial ")) {
                // `trial:2/10 seed:1`
                let mut words = rest.split_whitespace();
                let k = words
                    .next()
                    .and_then(|w| w.split('/').next())
                    .and_then(|t| t.parse::<u64>().ok());
                let Some(k) = k else { return Seen::Nothing };
                self.pending = vec![("trial".into(), k.to_string())];
                for w in words {
                    if let Some((key, v)) = w.split_once([':', '=']) {
                        if is_name(key) && eval(v).is_some() {
                            self.pending.push((key.to_string(), v.to_string()));
                        }
                    }
                }
                return Seen::Trial;
            } else if !self.shape_done && (line.contains("GPT(") || line.contains("GPTConfig(")) {
                // The model built in the printed source: `GPT(vocab_size=50304, num_layers=12,
                // num_heads=6, model_dim=768)` or `GPTConfig(n_layer=12, n_head=6, n_embd=768)`.
                let mut shape = RunConfig::default();
                for arg in line.split(['(', ',', ')']) {
                    if let Some((k, v)) = arg.split_once('=') {
                        let k = k.trim();
                        if matches!(
                            k,
                            "num_layers" | "n_layer" | "model_dim" | "n_embd" | "num_heads" | "n_head"
                        ) {
                            if let Some(v) = eval(v) {
                                apply(&mut shape, k, v, "", Source::Line);
                            }
                        }
                    }
                }
                if shape.numl.is_some() && shape.h.is_some() {
                    self.shape_done = true;
                    if cfg.numl.is_none() && cfg.h.is_none() {
                        (cfg.numl, cfg.h, cfg.numh) = (shape.numl, shape.h, shape.numh.or(cfg.numh));
                    }
                }
            } else if self.overriding && !line.starts_with([' ', '\t']) {
                if let Some((k, v, c)) = assignment(line) {
                    apply(cfg, k, v, c, Source::Override);
                }
            }
            Seen::Nothing
        }

        /// A log line was read: nanoGPT's configurator output is over.
        pub fn log_line(&mut self) {
            self.overriding = false;
        }

        /// Give a trial the tags of the `trial:` line that began it.
        pub fn apply_pending(&mut self, cfg: &mut RunConfig) {
            for (k, v) in self.pending.drain(..) {
                cfg.tags.insert(k, v);
            }
        }

        /// N from the shape the log printed (GPT-2 blocks: 4 h^2 attention + 8 h^2 MLP).
        pub fn finish(&self, cfg: &mut RunConfig) {
            if let (None, Some(l), Some(h), None) = (cfg.n_params, cfg.numl, cfg.h, cfg.ffnh) {
                cfg.n_params = h
                    .checked_mul(h)
                    .and_then(|x| x.checked_mul(12))
                    .and_then(|x| x.checked_mul(l));
            }
        }
    }
}

/// Where a trial of a log stands: the first and last step of its training loss (0) and of
/// its validation loss (1), and how precisely each is printed (digits after the point).
#[derive(Default)]
struct Trial {
    first: [Option<i64>; 2],
    last: [Option<i64>; 2],
    decimals: [Option<usize>; 2],
    has_points: bool,
}

fn decimals(text: &[u8]) -> usize {
    memchr::memchr(b'.', text).map_or(0, |i| text[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count())
}

/// Does `value` (a slice of `line`) end the line? Then a last line without its newline
/// may have been cut inside it.
fn ends_line(line: &[u8], value: &[u8]) -> bool {
    let end = line.as_ptr() as usize + line.trim_ascii_end().len();
    value.as_ptr() as usize + value.len() == end
}

/// Read a nanoGPT-style log into `out`. A log that holds several trials (its step goes back
/// to the first step of the trial, or a `trial:k/n` line starts one) keeps every trial:
/// with `split_trials` the second and later come back as runs of their own (in order), else
/// they follow in `out` under the restart rule (the later trial replaces the earlier points,
/// which are counted as replaced).
pub fn parse(data: &[u8], file: &str, sel: &MetricSelection, out: &mut RunParse, split_trials: bool) -> Vec<RunParse> {
    let mut later: Vec<RunParse> = Vec::new();
    let mut trial = Trial::default();
    let mut header = header::Reader::default();
    let mut breaks: Vec<(u64, i64)> = Vec::new(); // (line, step) where a trial began
    let mut line_no = 0u64;
    let ends_with_newline = data.last() == Some(&b'\n');
    let mut start = 0;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let raw = &data[start..end];
        start = end + 1;
        line_no += 1;
        let is_last_unterminated = end == data.len() && !ends_with_newline;
        // Every log line names a loss (cheap rejection); other lines may print the
        // configuration, or begin a trial.
        let text = strip_ansi(raw);
        let found = if memchr::memmem::find(raw, b"loss").is_some() || raw.starts_with(b"s:") {
            pairs(&text)
        } else {
            Vec::new()
        };
        let Some(line) = read_line(&found, sel) else {
            let cur = later.last_mut().unwrap_or(out);
            if let header::Seen::Trial = header.line(&text, &mut cur.config) {
                if trial.has_points {
                    breaks.push((line_no, 0));
                    start_trial(out, &mut later, &mut trial, split_trials);
                }
                header.apply_pending(&mut later.last_mut().unwrap_or(out).config);
            }
            continue;
        };
        header.log_line();
        if let Some(t) = [line.loss, line.val]
            .into_iter()
            .flatten()
            .find(|t| parse_f64(t).is_none())
        {
            let cur = later.last_mut().unwrap_or(out);
            cur.malformed(file, line_no, || {
                format!("cannot read '{}' as a loss", String::from_utf8_lossy(t))
            });
            continue;
        }
        let val = line.val.and_then(parse_f64);
        let loss = line.loss.and_then(parse_f64);
        // The loss of an evaluation line (nanoGPT's `train loss` beside `val loss`) is an
        // estimate on eval batches: it goes with the validation loss.
        let eval_line = val.is_some() && sel.loss.is_none();
        let kinds: [(usize, Option<&[u8]>); 2] = if eval_line {
            [(1, line.val), (1, None)]
        } else {
            [(0, line.loss.filter(|_| loss.is_some())), (1, line.val)]
        };
        // A last line without its newline is kept only when it is complete: a loss that
        // ends it must be printed as precisely as that loss was before.
        if is_last_unterminated {
            let cut = kinds
                .iter()
                .any(|(k, v)| v.is_some_and(|v| ends_line(&text, v) && trial.decimals[*k] != Some(decimals(v))));
            if cut {
                let cur = later.last_mut().unwrap_or(out);
                cur.malformed(file, line_no, || {
                    "truncated last line (no newline, and its last number is shorter than the ones before: \
                     is the file still being written?)"
                        .into()
                });
                continue;
            }
        }
        // A step back to (or before) the first step of this trial begins another trial.
        let new_trial = kinds.iter().any(|(k, v)| {
            v.is_some()
                && matches!((trial.first[*k], trial.last[*k]), (Some(f), Some(l)) if line.step < l && line.step <= f)
        });
        if new_trial {
            breaks.push((line_no, line.step));
            start_trial(out, &mut later, &mut trial, split_trials);
        }
        for (k, v) in kinds {
            if let Some(v) = v {
                trial.first[k].get_or_insert(line.step);
                trial.last[k] = Some(line.step);
                trial.decimals[k] = Some(decimals(v));
            }
        }
        trial.has_points = true;
        let cur = later.last_mut().unwrap_or(out);
        if let Some(v) = loss {
            let metric = if eval_line { EVAL_TRAIN_LOSS } else { LOSS };
            cur.push(metric, line.step, v, line.lr, None);
        }
        if let Some(v) = val {
            cur.push(VAL_LOSS, line.step, v, None, None);
        }
        for (i, v) in line.extra {
            cur.push(&sel.extra[i], line.step, v, line.lr, None);
        }
        if line.total.is_some() {
            cur.planned_steps = line.total;
        }
    }
    if !breaks.is_empty() {
        let at: Vec<String> = breaks.iter().take(3).map(|(l, _)| format!("line {l}")).collect();
        let more = if breaks.len() > 3 { ", ..." } else { "" };
        let n = breaks.len() + 1;
        out.notes.push(if split_trials {
            format!(
                "{file}: {n} trials in one log (a new one at {}{more}): one run each, the 2nd on named '#2', ... \
                 (--restarts merge keeps one run, the later trial replacing the earlier's points)",
                at.join(", ")
            )
        } else {
            format!(
                "{file}: {n} trials in one log (a new one at {}{more}) merged by the restart rule \
                 (--restarts merge): each later trial replaced the earlier's points from its first step on",
                at.join(", ")
            )
        });
    }
    for p in std::iter::once(&mut *out).chain(later.iter_mut()) {
        header.finish(&mut p.config);
    }
    later
}

/// Begin a trial: with `split`, a new run (its configuration so far inherited from the
/// trial before); else the same run goes on (the restart rule merges it).
fn start_trial(out: &mut RunParse, later: &mut Vec<RunParse>, trial: &mut Trial, split: bool) {
    *trial = Trial::default();
    if split {
        let prev = later.last().unwrap_or(out);
        let mut config = prev.config.clone();
        config.tags.remove("trial");
        config.tags.remove("seed");
        later.push(RunParse {
            config,
            ..Default::default()
        });
    }
}

/// Does this text hold nanoGPT-style log lines?
pub fn sniff(text: &[u8]) -> bool {
    let sel = MetricSelection::default();
    text.split(|&b| b == b'\n').any(|raw| {
        (memchr::memmem::find(raw, b"loss").is_some() || raw.starts_with(b"s:")) && {
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
        parse(text.as_bytes(), "log", &MetricSelection::default(), &mut out, true);
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

    fn trials(text: &str, split: bool) -> (RunParse, Vec<RunParse>) {
        let mut out = RunParse::default();
        let later = parse(text.as_bytes(), "log", &MetricSelection::default(), &mut out, split);
        (out, later)
    }

    const TWO_TRIALS: &str = "config train_steps=250 batch_size=524288 lr_head=0.009 family_mult={'a': 1.0}\n\
trial:1/2 seed:0\n\
step:0/250 val_loss:10.8258 train_time:0ms\n\
step:1/250 train_loss:10.8000 train_time:1ms\n\
step:250/250 val_loss:4.1000 train_time:9ms\n\
trial:2/2 seed:1\n\
step:0/250 val_loss:10.8259 train_time:0ms\n\
step:1/250 train_loss:10.8100 train_time:1ms\n\
step:125/250 val_loss:5.0000 train_time:5ms\n";

    #[test]
    fn a_log_of_several_trials_gives_one_run_each() {
        let (first, later) = trials(TWO_TRIALS, true);
        assert_eq!(first.series[VAL_LOSS].series.steps, vec![0, 250]);
        assert_eq!(first.series[LOSS].series.values, vec![10.8]);
        let [second] = &later[..] else {
            panic!("{}", later.len())
        };
        assert_eq!(second.series[VAL_LOSS].series.steps, vec![0, 125]);
        assert_eq!(second.series[VAL_LOSS].series.values, vec![10.8259, 5.0]);
        assert_eq!(second.series[LOSS].series.values, vec![10.81]);
        for (p, seed) in [(&first, "0"), (second, "1")] {
            assert_eq!(p.config.steps, Some(250));
            assert_eq!(p.config.bs_tokens, Some(524288)); // a batch_size this large counts tokens
            assert_eq!(p.config.tags["lr_head"], "0.009");
            assert_eq!(p.config.tags["seed"], seed);
            assert_eq!(p.replaced(), 0);
        }
        assert!(
            first.notes[0].contains("2 trials") && first.notes[0].contains("line 6"),
            "{:?}",
            first.notes
        );
        // without a trial line, the step going back to the first step starts one
        let bare: String = TWO_TRIALS
            .lines()
            .filter(|l| !l.starts_with("trial"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (first, later) = trials(&bare, true);
        assert_eq!(later.len(), 1);
        assert_eq!(first.series[VAL_LOSS].series.steps, vec![0, 250]);
        // merged: the restart rule, every replaced point counted
        let (merged, later) = trials(TWO_TRIALS, false);
        assert!(later.is_empty());
        assert_eq!(merged.series[VAL_LOSS].series.values, vec![10.8259, 5.0]);
        assert_eq!(merged.replaced(), 3);
        assert!(merged.notes[0].contains("merged"), "{:?}", merged.notes);
    }

    #[test]
    fn a_resume_from_a_checkpoint_is_no_new_trial() {
        let (p, later) = trials("iter 0: loss 5.0000\niter 10: loss 4.0000\niter 20: loss 3.0000\niter 10: loss 4.1000\niter 20: loss 3.1000\n", true);
        assert!(later.is_empty());
        assert_eq!(p.series[LOSS].series.values, vec![5.0, 4.1, 3.1]);
        assert_eq!(p.replaced(), 2);
    }

    #[test]
    fn a_last_line_without_newline_is_kept_when_complete() {
        let base = "step:0/250 val_loss:10.8258 train_time:0ms\nstep:125/250 val_loss:5.1234 train_time:1ms\n";
        // the val loss is followed by more fields: complete
        let p = run(&format!(
            "{base}step:250/250 val_loss:4.1 train_time:9ms step_avg:1.00ms"
        ));
        assert_eq!(p.series[VAL_LOSS].series.steps, vec![0, 125, 250]);
        assert_eq!(p.malformed, 0);
        // it ends the line, as precise as the ones before: complete
        let p = run(&format!("{base}step:250/250 val_loss:4.1000"));
        assert_eq!(p.series[VAL_LOSS].series.values, vec![10.8258, 5.1234, 4.1]);
        // shorter than the ones before: cut
        let p = run(&format!("{base}step:250/250 val_loss:4.10"));
        assert_eq!(p.series[VAL_LOSS].series.steps, vec![0, 125]);
        assert_eq!(p.malformed, 1);
        assert!(p.messages[0].starts_with("log:3: truncated"), "{:?}", p.messages);
    }

    #[test]
    fn val_only_logs_and_the_val_loss_as_the_loss() {
        let text = "step:0/500 val_loss:10.8258 train_time:0ms\nstep:1/500 train_time:1ms step_avg:1.00ms\nstep:500/500 val_loss:3.2800 train_time:9ms\n";
        let p = run(text);
        assert!(!p.series.contains_key(LOSS));
        assert_eq!(p.series[VAL_LOSS].series.steps, vec![0, 500]);
        let mut q = RunParse::default();
        let sel = MetricSelection {
            loss: Some("val_loss".into()),
            extra: vec![],
        };
        parse(text.as_bytes(), "log", &sel, &mut q, true);
        assert_eq!(q.series[LOSS].series.values, vec![10.8258, 3.28]);
        assert!(!q.series.contains_key(VAL_LOSS));
    }

    #[test]
    fn configuration_printed_by_modded_nanogpt_and_nanogpt() {
        let modded = "@dataclass\nclass Hyperparameters:\n    # optimization hyperparams\n    batch_size : int = 8*64 # batch size, in sequences, across all devices\n    sequence_length : int = 64*1024 # sequence length, in tokens\n    num_iterations : int = 1530 # number of iterations to run\n    learning_rate : float = 0.0036\n    weight_decay : float = 0\n    block_size: int = 128\n    run_id: str = f\"{uuid.uuid4()}\"\n\n    val_loss_every : int = 125 # every how many steps\nargs = Hyperparameters()\n    batch_size = 3\nstep:1/1530 train_loss:10.8258 train_time:1ms\n";
        let c = run(modded).config;
        assert_eq!(
            (c.bs, c.seq_len, c.steps, c.lr),
            (Some(512), Some(65536), Some(1530), Some(0.0036))
        );
        assert_eq!(
            (c.tags["weight_decay"].as_str(), c.tags["val_loss_every"].as_str()),
            ("0", "125")
        );
        assert_eq!(c.tags["block_size"], "128"); // an attention block, not the context length
        assert_eq!((c.numl, c.h, c.n_params), (None, None, None));
        let shaped = format!("{modded}    model = GPT(vocab_size=50304, num_layers=MODEL_NUM_LAYERS, model_dim=768)\n    model: nn.Module = GPT(vocab_size=50257, num_layers=12, num_heads=6, model_dim=768, max_seq_len=max(a, b)).cuda()\n    other = GPT(vocab_size=1, num_layers=2, model_dim=64)\n");
        let c = run(&shaped).config;
        assert_eq!(
            (c.numl, c.h, c.numh, c.n_params),
            (Some(12), Some(768), Some(6), Some(12 * 12 * 768 * 768))
        );
        let nano = "Overriding config with config/train_gpt2.py:\nbatch_size = 12\nblock_size = 1024\ngradient_accumulation_steps = 5 * 8\nn_layer = 12\nn_head = 12\nn_embd = 768\nlearning_rate = 6e-4 # max learning rate\nmax_iters = 600000\nOverriding: learning_rate = 1e-3\ntokens per iteration will be: 491,520\nfound vocab_size = 50304 (inside data/meta.pkl)\nstep 0: train loss 10.9000, val loss 10.9500\niter 0: loss 10.9876, time 1.00ms\nlearning_rate = 5\n";
        let c = run(nano).config;
        assert_eq!((c.bs, c.bs_tokens, c.seq_len), (None, Some(491520), Some(1024)));
        assert_eq!(c.tags["micro_batch_size"], "12"); // nanoGPT's batch_size is per device
        assert_eq!(
            (c.lr, c.steps, c.numl, c.h, c.numh),
            (Some(1e-3), Some(600000), Some(12), Some(768), Some(12))
        );
        assert_eq!(c.n_params, Some(12 * 12 * 768 * 768));
        assert_eq!(c.tags["gradient_accumulation_steps"], "40");
    }

    #[test]
    fn llmc_main_log() {
        let p = run("s:0 tel:10.9823\ns:0 trl:11.0094 lr:0.000003 norm:15.48\ns:1 trl:9.8812 lr:0.000006 norm:6.21\ns:250 tel:4.2722\nnot s:3 x:4\n");
        assert_eq!(p.series[LOSS].series.steps, vec![0, 1]);
        assert_eq!(p.series[LOSS].series.lr, vec![0.000003, 0.000006]);
        assert_eq!(p.series[VAL_LOSS].series.values, vec![10.9823, 4.2722]);
        assert!(sniff(b"s:19560 tel:3.2722\n"));
        assert!(!sniff(b"s:19560 x:3.2722\n"));
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
            parse(&text, "f", &MetricSelection::default(), &mut out, true);
            sniff(&text);
        }
    }
}
