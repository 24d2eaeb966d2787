//! What a reader produces for one run: a series per metric, built point by point with the
//! restart rule, plus what the log says of the configuration and of its own bad lines.
use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::model::RunConfig;
use crate::store::Series;

/// How many bad lines are described in full (the rest are only counted).
pub const MAX_MESSAGES: usize = 5;

/// Well-known metric names: the training loss and the validation loss.
pub const LOSS: &str = "loss";
pub const VAL_LOSS: &str = "val_loss";

/// Appends points in log order. A step at or before the last one with another value means
/// the job restarted from a checkpoint: the points from that step on are replaced (the later
/// log wins). The same step with the same value is a repeat: kept once, nothing replaced.
#[derive(Debug, Default)]
pub struct SeriesBuilder {
    pub series: Series,
    pub restarts: u64,
    /// Points replaced by the restart rule (counted, never lost silently).
    pub replaced: u64,
    /// Whether a step back to (or before) the series' first step begins another trial, kept
    /// whole in `trials`, instead of replacing the points (`--restarts split`).
    pub split: bool,
    /// The earlier trials' series, in log order (`series` is the latest).
    pub trials: Vec<Series>,
}

impl SeriesBuilder {
    pub fn push(&mut self, step: i64, value: f64, lr: Option<f64>, tokens: Option<i64>) {
        let s = &mut self.series;
        if let Some(&last) = s.steps.last() {
            if step <= last {
                let cut = s.steps.partition_point(|&x| x < step);
                // The same point again (a log that echoes its last evaluations at the end of
                // a run) is no restart: it is kept once and nothing after it goes.
                let known = s.steps.get(cut) == Some(&step) && s.values[cut].to_bits() == value.to_bits();
                if known {
                    return;
                }
                if cut == 0 && self.split {
                    let metric = s.metric.clone();
                    self.trials.push(std::mem::replace(s, Series::new(metric)));
                    self.series.steps.push(step);
                    self.series.values.push(value);
                    push_padded(&mut self.series.lr, lr, 1, f64::NAN);
                    push_padded(&mut self.series.tokens, tokens, 1, -1);
                    return;
                }
                self.replaced += (s.steps.len() - cut) as u64;
                s.steps.truncate(cut);
                s.values.truncate(cut);
                s.lr.truncate(cut);
                s.tokens.truncate(cut);
                self.restarts += 1;
            }
        }
        s.steps.push(step);
        s.values.push(value);
        // lr / tokens columns are kept only when every point has them: pad lazily.
        push_padded(&mut s.lr, lr, s.steps.len(), f64::NAN);
        push_padded(&mut s.tokens, tokens, s.steps.len(), -1);
    }
}

fn push_padded<T: Copy>(col: &mut Vec<T>, v: Option<T>, len: usize, missing: T) {
    match v {
        Some(x) => {
            if col.len() + 1 != len {
                col.resize(len - 1, missing);
            }
            col.push(x);
        }
        None if !col.is_empty() => col.resize(len, missing),
        None => {}
    }
}

/// The union of two step-sorted series (see [`RunParse::merge_union`]) and how many steps
/// both hold with different values (`b`'s is kept).
fn union(a: &Series, b: &Series) -> (Series, u64) {
    let has_lr = !a.lr.is_empty() || !b.lr.is_empty();
    let has_tokens = !a.tokens.is_empty() || !b.tokens.is_empty();
    let lr = |s: &Series, i: usize| s.lr.get(i).copied().unwrap_or(f64::NAN);
    let tok = |s: &Series, i: usize| s.tokens.get(i).copied().unwrap_or(-1);
    let mut out = Series {
        metric: a.metric.clone(),
        ..Default::default()
    };
    let mut conflicts = 0;
    let (mut i, mut j) = (0, 0);
    let take = |out: &mut Series, s: &Series, k: usize| {
        out.steps.push(s.steps[k]);
        out.values.push(s.values[k]);
        if has_lr {
            out.lr.push(lr(s, k));
        }
        if has_tokens {
            out.tokens.push(tok(s, k));
        }
    };
    while i < a.len() || j < b.len() {
        let next_a = a.steps.get(i).copied().unwrap_or(i64::MAX);
        let next_b = b.steps.get(j).copied().unwrap_or(i64::MAX);
        if next_a < next_b {
            take(&mut out, a, i);
            i += 1;
        } else if next_b < next_a {
            take(&mut out, b, j);
            j += 1;
        } else {
            let same = a.values[i] == b.values[j] || (a.values[i].is_nan() && b.values[j].is_nan());
            if !same {
                conflicts += 1;
            }
            take(&mut out, b, j);
            i += 1;
            j += 1;
        }
    }
    (out, conflicts)
}

/// The 2nd, 3rd, ... trials of a log whose step went back to its first (Megatron logs of
/// several trials read with `split_trials`), each a run of its own; `parse` keeps the first.
/// Each series' k-th trial goes to the k-th run, with the log's configuration. A note says so.
pub fn take_trials(parse: &mut RunParse, file: &str) -> Vec<RunParse> {
    let n = parse.series.values().map(|b| b.trials.len()).max().unwrap_or(0);
    if n == 0 {
        return Vec::new();
    }
    let mut later: Vec<RunParse> = (0..n)
        .map(|_| RunParse {
            planned_steps: parse.planned_steps,
            batch_size: parse.batch_size,
            tokens_are_samples: parse.tokens_are_samples,
            config: parse.config.clone(),
            ..Default::default()
        })
        .collect();
    for b in parse.series.values_mut() {
        if b.trials.is_empty() {
            continue;
        }
        let mut all: Vec<Series> = std::mem::take(&mut b.trials);
        all.push(std::mem::take(&mut b.series));
        let mut all = all.into_iter();
        b.series = all.next().expect("one trial at least");
        for (run, series) in later.iter_mut().zip(all) {
            let metric = series.metric.clone();
            run.series.insert(
                metric,
                SeriesBuilder {
                    series,
                    ..Default::default()
                },
            );
        }
    }
    parse.notes.push(format!(
        "{file}: {} trials in one log (the step went back to its first): one run each, the 2nd named '#2', ... \
         (--restarts merge keeps one run, the later trial replacing the earlier's points)",
        n + 1
    ));
    later
}

thread_local! {
    /// Emptied series of this thread's earlier runs. A run's points go into vectors that are
    /// already mapped: fresh multi-megabyte ones would cost a page fault per 4 KiB written.
    static SPARE: RefCell<Vec<Series>> = const { RefCell::new(Vec::new()) };
}

/// Spare series kept per thread: a run rarely has more series than this.
const MAX_SPARE: usize = 8;

fn spare_series(metric: &str) -> Series {
    let mut s = SPARE.with_borrow_mut(Vec::pop).unwrap_or_default();
    s.metric.clear();
    s.metric.push_str(metric);
    s
}

/// Give series whose points are written back to this thread, for its next runs.
pub fn recycle(series: impl IntoIterator<Item = Series>) {
    SPARE.with_borrow_mut(|spare| {
        for mut s in series.into_iter().take(MAX_SPARE.saturating_sub(spare.len())) {
            s.steps.clear();
            s.values.clear();
            s.lr.clear();
            s.tokens.clear();
            spare.push(s);
        }
    });
}

/// Everything the readers learned from one run's files.
#[derive(Debug, Default)]
pub struct RunParse {
    pub series: BTreeMap<String, SeriesBuilder>,
    /// Planned steps (the total after the slash in `iter 35/ 69259`).
    pub planned_steps: Option<i64>,
    /// Global batch size in sequences, as the log prints it.
    pub batch_size: Option<i64>,
    /// Token columns hold consumed samples (Megatron); multiply by seq_len once known.
    pub tokens_are_samples: bool,
    pub malformed: u64,
    /// Points a new series should make room for (a guess from the file sizes), so the
    /// vectors grow without copying.
    pub capacity_hint: usize,
    pub messages: Vec<String>,
    /// What the log prints of its configuration (nanoGPT headers, `config k=v` lines): the
    /// lowest-ranked source, below the run's name, its sidecar and the user's `--set`.
    pub config: RunConfig,
    /// Facts about the run worth a line in the report (not bad lines): trials found,
    /// points that disagreed between copies of an export, ...
    pub notes: Vec<String>,
    /// New series split trials (see `SeriesBuilder::split`); `take_trials` takes them apart.
    pub split_trials: bool,
}

impl RunParse {
    pub fn push(&mut self, metric: &str, step: i64, value: f64, lr: Option<f64>, tokens: Option<i64>) {
        match self.series.get_mut(metric) {
            Some(b) => b.push(step, value, lr, tokens),
            None => {
                let mut b = self.take_builder(metric);
                b.push(step, value, lr, tokens);
                self.series.insert(metric.to_string(), b);
            }
        }
    }

    /// Take a metric's builder out (a new one if it has none yet), for a reader that pushes
    /// many points to it: it then skips a lookup by name per point. Give it back with
    /// `put_builder`.
    pub fn take_builder(&mut self, metric: &str) -> SeriesBuilder {
        self.series.remove(metric).unwrap_or_else(|| {
            let mut b = SeriesBuilder {
                series: spare_series(metric),
                split: self.split_trials,
                ..Default::default()
            };
            let s = &mut b.series;
            s.steps.reserve(self.capacity_hint);
            s.values.reserve(self.capacity_hint);
            s.lr.reserve(self.capacity_hint);
            s.tokens.reserve(self.capacity_hint);
            b
        })
    }

    /// Put back a builder from `take_builder`; one that stayed empty is dropped (a series
    /// exists only with points).
    pub fn put_builder(&mut self, b: SeriesBuilder) {
        if !b.series.is_empty() {
            self.series.insert(b.series.metric.clone(), b);
        }
    }

    /// Every point pushed so far, including those the restart rule replaced since.
    pub fn pushed(&self) -> u64 {
        self.series.values().map(|b| b.series.len() as u64 + b.replaced).sum()
    }

    /// Points the restart rule replaced (a later log of the same steps won).
    pub fn replaced(&self) -> u64 {
        self.series.values().map(|b| b.replaced).sum()
    }

    /// Join the points of `other` (another copy or part of the same run's data, e.g. a
    /// second W&B chart export) to these, step by step: a step only one side has is kept, a
    /// step both have with the same value is kept once, and a step both have with different
    /// values takes `other`'s (the later file) and counts as replaced. Returns the number of
    /// such conflicts.
    pub fn merge_union(&mut self, other: RunParse) -> u64 {
        let mut conflicts = 0;
        for (metric, b) in other.series {
            match self.series.get_mut(&metric) {
                None => {
                    self.series.insert(metric, b);
                }
                Some(mine) => {
                    let (merged, c) = union(&mine.series, &b.series);
                    conflicts += c;
                    mine.series = merged;
                    mine.replaced += b.replaced + c;
                    mine.restarts += b.restarts;
                }
            }
        }
        self.malformed += other.malformed;
        for m in other.messages {
            if self.messages.len() < MAX_MESSAGES {
                self.messages.push(m);
            }
        }
        self.notes.extend(other.notes);
        self.planned_steps = other.planned_steps.or(self.planned_steps);
        self.batch_size = other.batch_size.or(self.batch_size);
        self.tokens_are_samples |= other.tokens_are_samples;
        self.config.merge_from(&other.config);
        conflicts
    }

    /// Add what a lesser source of the same run gave (a JSONL beside a text log, TensorBoard
    /// events beside one): its series this run lacks join it; those it has already are not
    /// stored and count as replaced. Returns the metrics left out and their points.
    pub fn merge_lesser(&mut self, other: RunParse) -> (Vec<String>, u64) {
        let mut dropped = Vec::new();
        let mut points = 0;
        for (metric, b) in other.series {
            match self.series.entry(metric) {
                std::collections::btree_map::Entry::Occupied(mut mine) => {
                    points += b.series.len() as u64;
                    mine.get_mut().replaced += b.series.len() as u64 + b.replaced;
                    dropped.push(mine.key().clone());
                }
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(b);
                }
            }
        }
        self.malformed += other.malformed;
        for m in other.messages {
            if self.messages.len() < MAX_MESSAGES {
                self.messages.push(m);
            }
        }
        self.notes.extend(other.notes);
        self.planned_steps = self.planned_steps.or(other.planned_steps);
        self.batch_size = self.batch_size.or(other.batch_size);
        let mut config = other.config;
        config.merge_from(&self.config);
        self.config = config;
        (dropped, points)
    }

    /// Count a bad line; describe it if it is among the first few.
    pub fn malformed(&mut self, file: &str, line: u64, what: impl FnOnce() -> String) {
        self.malformed += 1;
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(format!("{file}:{line}: {}", what()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_replaces_points_from_the_restart_step_on() {
        let mut b = SeriesBuilder::default();
        for (s, v) in [
            (10, 5.0),
            (20, 4.0),
            (30, 3.5),
            (40, 3.4),
            (20, 4.1),
            (30, 3.6),
            (30, 3.7),
        ] {
            b.push(s, v, None, None);
        }
        assert_eq!(b.series.steps, vec![10, 20, 30]);
        assert_eq!(b.series.values, vec![5.0, 4.1, 3.7]);
        assert_eq!(b.restarts, 2);
        assert_eq!(b.replaced, 4); // 20, 30, 40, then 30
        assert!(b.series.lr.is_empty());
    }

    #[test]
    fn a_repeated_point_is_no_restart() {
        let mut b = SeriesBuilder::default();
        // modded-nanogpt batch logs echo the last evaluations after a run ends
        for (s, v) in [
            (3000, 3.278),
            (3010, 3.277),
            (3020, 3.276),
            (3040, 3.275),
            (3000, 3.278),
            (3040, 3.275),
        ] {
            b.push(s, v, None, None);
        }
        assert_eq!(b.series.steps, vec![3000, 3010, 3020, 3040]);
        assert_eq!((b.replaced, b.restarts), (0, 0));
        // a repeat, then a differing value: a restart from there
        b.push(3020, 3.276, None, None);
        b.push(3040, 3.5, None, None);
        assert_eq!(b.series.values, vec![3.278, 3.277, 3.276, 3.5]);
        assert_eq!((b.replaced, b.restarts), (1, 1));
    }

    #[test]
    fn lr_column_is_padded_when_it_appears_late() {
        let mut b = SeriesBuilder::default();
        b.push(1, 1.0, None, None);
        b.push(2, 1.0, Some(0.1), None);
        b.push(3, 1.0, None, None);
        assert_eq!(b.series.lr.len(), 3);
        assert!(b.series.lr[0].is_nan() && b.series.lr[2].is_nan());
        assert_eq!(b.series.lr[1], 0.1);
    }

    fn parse_of(points: &[(i64, f64)]) -> RunParse {
        let mut p = RunParse::default();
        for &(s, v) in points {
            p.push(LOSS, s, v, None, None);
        }
        p
    }

    #[test]
    fn union_of_copies_ranges_and_conflicts() {
        // an identical copy: nothing added, nothing replaced
        let mut a = parse_of(&[(0, 3.0), (10, 2.5), (20, 2.0)]);
        assert_eq!(a.merge_union(parse_of(&[(0, 3.0), (10, 2.5), (20, 2.0)])), 0);
        assert_eq!(a.series[LOSS].series.steps, vec![0, 10, 20]);
        assert_eq!(a.replaced(), 0);
        // another step range, interleaved, and one conflict (the later value wins)
        assert_eq!(a.merge_union(parse_of(&[(5, 2.8), (20, 2.1), (30, 1.9)])), 1);
        assert_eq!(a.series[LOSS].series.steps, vec![0, 5, 10, 20, 30]);
        assert_eq!(a.series[LOSS].series.values, vec![3.0, 2.8, 2.5, 2.1, 1.9]);
        assert_eq!(a.replaced(), 1);
        // another metric joins; an lr column on one side is padded
        let mut b = RunParse::default();
        b.push(VAL_LOSS, 10, 2.6, None, None);
        b.push(LOSS, 40, 1.8, Some(1e-4), None);
        a.merge_union(b);
        assert_eq!(a.series[VAL_LOSS].series.values, vec![2.6]);
        let s = &a.series[LOSS].series;
        assert_eq!(s.lr.len(), s.len());
        assert!(s.lr[..5].iter().all(|x| x.is_nan()) && s.lr[5] == 1e-4);
        assert!(s.tokens.is_empty());
    }
}
