//! Points segments: Parquet files of (run_id, metric, step, tokens, value, lr), grouped by
//! run and sorted by step within each run's series.
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use parquet::data_type::ByteArray;

use super::table::{self, ColumnData, Data, Field, Kind, TableWriter, Values};
use super::SegmentEntry;
use crate::error::{Error, Result};
use crate::model::{Curve, RunId};

/// The points table's column names, in `POINT_FIELDS` order (what readers ask a file for).
pub(super) const POINT_NAMES: [&str; 6] = ["run_id", "metric", "step", "tokens", "value", "lr"];

/// Reusable buffers for one decoded batch of the points table's columns, in `POINT_NAMES` order.
pub(super) fn empty_point_batch() -> Vec<Values> {
    POINT_FIELDS
        .iter()
        .map(|f| match f.kind {
            Kind::Utf8 => Values::Utf8(Vec::new()),
            Kind::Float64 => Values::Float64(Vec::new()),
            Kind::Int64 | Kind::Timestamp => Values::Int64(Vec::new()),
        })
        .collect()
}

pub const POINT_FIELDS: &[Field] = &[
    table::field("run_id", Kind::Int64, false),
    table::field("metric", Kind::Utf8, false),
    table::field("step", Kind::Int64, false),
    table::field("tokens", Kind::Int64, true),
    table::field("value", Kind::Float64, false),
    table::field("lr", Kind::Float64, true),
];

/// Rows of a row group. The buffers of a group in the making (~34 bytes a row) for both ingest
/// workers then stay inside the L3 cache while they are encoded (1M-row groups measured slower);
/// readers stream a group at a time in parallel.
pub const ROW_GROUP_ROWS: usize = 1 << 18;
/// Rows after which a segment file is closed (after the run that reaches them: a segment never
/// splits a run) and the next one begun.
pub const SEGMENT_ROWS: u64 = 16 << 20;

/// How segment writers cut their rows into files and row groups. The defaults are what a store
/// is written with; tests make them small to reach the boundaries with few rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLayout {
    /// A segment is closed after the run that brings it to this many rows (so it holds fewer
    /// than `segment_rows` plus that run's rows).
    pub segment_rows: u64,
    /// Rows of each row group but the last of a segment.
    pub row_group_rows: usize,
}

impl Default for SegmentLayout {
    fn default() -> Self {
        SegmentLayout {
            segment_rows: SEGMENT_ROWS,
            row_group_rows: ROW_GROUP_ROWS,
        }
    }
}
/// Segments smaller than this are merged by `compact`.
pub const COMPACT_MIN_ROWS: u64 = 1 << 20;

/// One metric's series of a run, sorted by step with unique steps. `lr` and `tokens` are
/// empty when the log does not have them, else as long as `steps`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub metric: String,
    pub steps: Vec<i64>,
    pub values: Vec<f64>,
    pub lr: Vec<f64>,
    pub tokens: Vec<i64>,
}

impl Series {
    pub fn new(metric: impl Into<String>) -> Self {
        Series {
            metric: metric.into(),
            ..Default::default()
        }
    }
    pub fn len(&self) -> usize {
        self.steps.len()
    }
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The rows of the row group being gathered. The run id and metric columns are kept as
/// runs (a block of rows per run and metric), the nullable columns as present values plus
/// Parquet definition levels: what the writer takes, with no conversion pass.
#[derive(Default)]
struct Buffers {
    run_ids: Vec<(i64, usize)>,
    metrics: Vec<(ByteArray, usize)>,
    step: Vec<i64>,
    tokens: Vec<i64>,
    tokens_def: Vec<i16>,
    value: Vec<f64>,
    lr: Vec<f64>,
    lr_def: Vec<i16>,
}

impl Buffers {
    fn len(&self) -> usize {
        self.step.len()
    }

    /// The first `rows` rows.
    fn head(&self, rows: usize) -> Head<'_> {
        let present = |def: &[i16]| def[..rows].iter().filter(|&&d| d == 1).count();
        Head {
            run_ids: runs_head(&self.run_ids, rows),
            metrics: runs_head(&self.metrics, rows),
            tokens: present(&self.tokens_def),
            lr: present(&self.lr_def),
            buf: self,
            rows,
        }
    }

    /// Drop the first `rows` rows (of which `tokens` and `lr` have those values), keeping the
    /// rest and the memory.
    fn drop_head(&mut self, rows: usize, tokens: usize, lr: usize) {
        runs_drop_head(&mut self.run_ids, rows);
        runs_drop_head(&mut self.metrics, rows);
        self.step.drain(..rows);
        self.value.drain(..rows);
        self.tokens_def.drain(..rows);
        self.lr_def.drain(..rows);
        self.tokens.drain(..tokens);
        self.lr.drain(..lr);
    }

    /// Append one series of a run: its rows as `add_run` stores them (tokens below 0 and
    /// lr that are not finite are nulls).
    fn push_series(&mut self, run_id: RunId, s: &Series) {
        self.push_block(run_id, metric_name(&s.metric), &s.steps, &s.values, &s.tokens, &s.lr);
    }

    /// Append a block of rows of one run and one metric. `tokens` and `lr` are either as long
    /// as `steps` (a token count below 0, an lr that is not finite, is a null) or empty (all null).
    fn push_block(
        &mut self,
        run_id: RunId,
        metric: ByteArray,
        steps: &[i64],
        values: &[f64],
        tokens: &[i64],
        lr: &[f64],
    ) {
        let n = steps.len();
        if n == 0 {
            return;
        }
        extend_runs(&mut self.run_ids, run_id, n);
        extend_runs(&mut self.metrics, metric, n);
        self.step.extend_from_slice(steps);
        self.value.extend_from_slice(values);
        if tokens.len() == n {
            self.tokens.extend(tokens.iter().copied().filter(|&t| t >= 0));
            self.tokens_def.extend(tokens.iter().map(|&t| (t >= 0) as i16));
        } else {
            self.tokens_def.extend(std::iter::repeat_n(0, n));
        }
        if lr.len() == n {
            self.lr.extend(lr.iter().copied().filter(|x| x.is_finite()));
            self.lr_def.extend(lr.iter().map(|x| x.is_finite() as i16));
        } else {
            self.lr_def.extend(std::iter::repeat_n(0, n));
        }
    }

    /// Make room for a row group and one more run's rows without growing (and copying) the
    /// vectors on the way.
    fn reserve(&mut self, group_rows: usize, rows: usize) {
        let want = group_rows.max(self.len() + rows) - self.len();
        self.step.reserve(want);
        self.value.reserve(want);
        self.tokens.reserve(want);
        self.tokens_def.reserve(want);
        self.lr.reserve(want);
        self.lr_def.reserve(want);
    }
}

/// The first rows of the buffers, to be written as one row group.
struct Head<'a> {
    buf: &'a Buffers,
    run_ids: Vec<(i64, usize)>,
    metrics: Vec<(ByteArray, usize)>,
    rows: usize,
    /// How many of the rows have a token count, and an lr.
    tokens: usize,
    lr: usize,
}

impl Head<'_> {
    fn columns(&self) -> [ColumnData<'_>; 6] {
        let (b, n) = (self.buf, self.rows);
        let dense = |values| ColumnData {
            values,
            def_levels: None,
        };
        [
            dense(Data::Int64Runs(&self.run_ids)),
            dense(Data::Utf8Runs(&self.metrics)),
            dense(Data::Int64(&b.step[..n])),
            ColumnData {
                values: Data::Int64(&b.tokens[..self.tokens]),
                def_levels: Some(&b.tokens_def[..n]),
            },
            dense(Data::Float64(&b.value[..n])),
            ColumnData {
                values: Data::Float64(&b.lr[..self.lr]),
                def_levels: Some(&b.lr_def[..n]),
            },
        ]
    }
}

/// Add `times` repeats of `value` to (value, times) runs: a longer last run when it has that
/// value (consecutive runs of one metric make one; a row group of one metric, one run).
fn extend_runs<T: PartialEq>(runs: &mut Vec<(T, usize)>, value: T, times: usize) {
    match runs.last_mut() {
        Some((last, n)) if *last == value => *n += times,
        _ => runs.push((value, times)),
    }
}

/// The (value, times) runs that cover the first `rows` rows, the last one cut to fit.
fn runs_head<T: Clone>(runs: &[(T, usize)], rows: usize) -> Vec<(T, usize)> {
    let mut left = rows;
    let mut head = Vec::new();
    for (value, times) in runs {
        if left == 0 {
            break;
        }
        let k = (*times).min(left);
        head.push((value.clone(), k));
        left -= k;
    }
    head
}

fn runs_drop_head<T>(runs: &mut Vec<(T, usize)>, rows: usize) {
    let (mut left, mut whole) = (rows, 0);
    while whole < runs.len() && runs[whole].1 <= left {
        left -= runs[whole].1;
        whole += 1;
    }
    runs.drain(..whole);
    if left > 0 {
        runs[0].1 -= left;
    }
}

struct OpenSegment {
    writer: TableWriter,
    tmp: PathBuf,
    name: String,
    /// The runs `add_run` put into this segment, in order.
    run_ids: Vec<RunId>,
    /// What the row groups written to the file hold of each run: the manifest entry is made
    /// from this, not from what the segment was meant to hold.
    tally: Tally,
}

/// Rows of each run, and the last step of each of its metrics, in the order runs appear.
#[derive(Debug, Default, Clone)]
pub(super) struct Tally {
    pub order: Vec<RunId>,
    pub runs: HashMap<RunId, RunTally>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct RunTally {
    pub rows: u64,
    /// (metric, last step) of each series, in the order met.
    pub last_steps: Vec<(ByteArray, i64)>,
}

impl RunTally {
    pub fn last_step_of(&self, metric: &str) -> Option<i64> {
        self.last_steps
            .iter()
            .find(|(m, _)| m.data() == metric.as_bytes())
            .map(|(_, s)| *s)
    }
}

impl Tally {
    /// Count a block of `rows` rows of one run and one metric whose last step is `last_step`.
    pub fn add(&mut self, run_id: RunId, metric: &ByteArray, rows: usize, last_step: i64) {
        let run = self.runs.entry(run_id).or_insert_with(|| {
            self.order.push(run_id);
            RunTally::default()
        });
        run.rows += rows as u64;
        match run.last_steps.iter_mut().find(|(m, _)| m == metric) {
            Some((_, s)) => *s = last_step,
            None => run.last_steps.push((metric.clone(), last_step)),
        }
    }

    /// Count rows given as (run, times) and (metric, times) runs over `steps`.
    fn add_runs(&mut self, run_ids: &[(i64, usize)], metrics: &[(ByteArray, usize)], steps: &[i64]) {
        let (mut ri, mut mi, mut row) = (0, 0, 0);
        let (mut r_left, mut m_left) = (0, 0);
        while row < steps.len() {
            if r_left == 0 {
                r_left = run_ids[ri].1;
                ri += 1;
            }
            if m_left == 0 {
                m_left = metrics[mi].1;
                mi += 1;
            }
            let k = r_left.min(m_left);
            if k > 0 {
                self.add(run_ids[ri - 1].0, &metrics[mi - 1].0, k, steps[row + k - 1]);
            }
            (r_left, m_left, row) = (r_left - k, m_left - k, row + k);
        }
    }
}

/// The metric column's value for `name`. Every row repeats it, and cloning (and dropping) a
/// heap-backed ByteArray is an atomic reference count per row that both writer threads fight
/// over; a static one costs nothing. Metric names are few (one per series kind), so each
/// distinct name is leaked once.
fn metric_name(name: &str) -> ByteArray {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let name: &'static str = match names.get(name) {
        Some(&known) => known,
        None => {
            let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
            names.insert(leaked);
            leaked
        }
    };
    ByteArray::from(bytes::Bytes::from_static(name.as_bytes()))
}

/// Streams runs' points into one or more new segment files of a transaction.
pub struct SegmentWriter {
    root: PathBuf,
    dir: &'static str,
    version: u64,
    writer: usize,
    layout: SegmentLayout,
    buf: Buffers,
    open: Option<OpenSegment>,
    done: Vec<SegmentEntry>,
    next_index: usize,
}

impl SegmentWriter {
    pub(super) fn new(
        root: PathBuf,
        dir: &'static str,
        version: u64,
        writer: usize,
        layout: SegmentLayout,
    ) -> Result<Self> {
        if layout.segment_rows == 0 || layout.row_group_rows == 0 {
            return Err(Error::Invalid(format!("segment layout with zero rows: {layout:?}")));
        }
        Ok(SegmentWriter {
            root,
            dir,
            version,
            writer,
            layout,
            buf: Buffers::default(),
            open: None,
            done: Vec::new(),
            next_index: 0,
        })
    }

    fn segment(&mut self) -> Result<&mut OpenSegment> {
        if self.open.is_none() {
            let name = format!(
                "seg-{:08}-{:02}-{:04}-{}.parquet",
                self.version,
                self.writer,
                self.next_index,
                super::unique_suffix()
            );
            self.next_index += 1;
            let tmp = self.root.join(self.dir).join(format!(".tmp-{name}"));
            let writer = TableWriter::create(
                &tmp,
                POINT_FIELDS,
                &["run_id", "step", "tokens"],
                Some(&["run_id", "metric"]),
            )?;
            self.open = Some(OpenSegment {
                writer,
                tmp,
                name,
                run_ids: Vec::new(),
                tally: Tally::default(),
            });
        }
        Ok(self.open.as_mut().expect("just opened"))
    }

    /// Add all series of one run. Returns the segment file (relative to the store root)
    /// that holds them: all of them, as a segment never splits a run.
    pub fn add_run(&mut self, run_id: RunId, series: &[Series]) -> Result<String> {
        let file = self.begin_run(run_id, series.iter().map(Series::len).sum())?;
        for s in series {
            self.buf.push_series(run_id, s);
        }
        self.end_run()?;
        Ok(file)
    }

    /// Begin a run whose rows follow (about `rows` of them, to reserve room): it goes into the
    /// open segment (opened if none), whose file name is returned. The caller adds its rows and
    /// then calls `end_run`, which is where a segment may close: never inside a run.
    fn begin_run(&mut self, run_id: RunId, rows: usize) -> Result<String> {
        let dir = self.dir;
        let group_rows = self.layout.row_group_rows;
        let seg = self.segment()?;
        seg.run_ids.push(run_id);
        let file = format!("{dir}/{}", seg.name);
        self.buf.reserve(group_rows, rows);
        Ok(file)
    }

    /// Write the full row groups buffered so far (a run may go on in the next group).
    fn flush_full_groups(&mut self) -> Result<()> {
        // Row groups hold `row_group_rows` rows each (a run may go on in the next one), so that
        // a group of one metric writes that column as the same bytes each time (see TableWriter).
        let group_rows = self.layout.row_group_rows;
        while self.buf.len() >= group_rows {
            self.flush(group_rows)?;
        }
        Ok(())
    }

    /// The run `begin_run` began has all its rows: write full row groups, and close the
    /// segment if this run brought it to `segment_rows`.
    fn end_run(&mut self) -> Result<()> {
        self.flush_full_groups()?;
        // A segment closes only between runs: the run that fills it goes out whole with it, and
        // the next run begins a new one. Every row of a run is then in the file `add_run` named.
        let rows = self.open.as_ref().map_or(0, |s| s.writer.rows()) + self.buf.len() as u64;
        if rows >= self.layout.segment_rows {
            self.close_segment()?;
        }
        Ok(())
    }

    /// Write the first `rows` buffered rows as a row group of the open segment.
    fn flush(&mut self, rows: usize) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let Some(seg) = self.open.as_mut() else {
            return Err(Error::Internal(format!(
                "segment writer: {rows} rows buffered with no open segment"
            )));
        };
        let head = self.buf.head(rows);
        seg.writer.write_row_group_data(&head.columns())?;
        seg.tally.add_runs(&head.run_ids, &head.metrics, &self.buf.step[..rows]);
        let (tokens, lr) = (head.tokens, head.lr);
        self.buf.drop_head(rows, tokens, lr);
        Ok(())
    }

    /// Write what is buffered, close the open segment, rename it into place and make its
    /// manifest entry from what its row groups hold.
    fn close_segment(&mut self) -> Result<()> {
        self.flush(self.buf.len())?;
        if let Some(seg) = self.open.take() {
            let written = seg.writer.finish()?;
            let target = self.root.join(self.dir).join(&seg.name);
            fs::rename(&seg.tmp, &target).map_err(|e| Error::io(&target, e))?;
            let mut tally = seg.tally;
            // Runs added with no rows are listed too (with 0): their records name this file.
            let mut run_ids = seg.run_ids;
            let listed: HashSet<RunId> = run_ids.iter().copied().collect();
            run_ids.extend(tally.order.iter().filter(|id| !listed.contains(id)));
            let run_rows = run_ids
                .iter()
                .map(|id| tally.runs.get(id).map_or(0, |t| t.rows))
                .collect();
            let last_steps = run_ids
                .iter()
                .filter_map(|id| tally.runs.remove(id).map(|t| (*id, t)))
                .collect();
            self.done.push(SegmentEntry {
                file: format!("{}/{}", self.dir, seg.name),
                rows: written.rows,
                run_ids,
                run_rows: Some(run_rows),
                size: Some(written.size),
                xxh3_128: Some(super::manifest::hex128(written.xxh3_128)),
                written: last_steps,
            });
        }
        Ok(())
    }

    /// Copy the rows of the given runs from an existing segment (for `compact`), streaming:
    /// a batch of `STREAM_BATCH_ROWS` rows of one row group at a time is decoded into reused
    /// buffers and appended to the rows being written, so memory follows a batch and a row
    /// group in the making, not the segment. Row groups whose `run_id` statistics hold none of
    /// `run_ids` are skipped undecoded. A run's rows are contiguous in a segment, so a run
    /// ends where the next run's rows begin (or the file ends): only there may the segment
    /// being written close, never inside a run.
    pub fn copy_rows_of(&mut self, file: &table::ParquetFile, run_ids: &HashSet<RunId>) -> Result<()> {
        if run_ids.is_empty() {
            return Ok(());
        }
        let path = file.path.as_path();
        let mut batch = empty_point_batch();
        let (lo, hi) = (
            *run_ids.iter().min().expect("not empty"),
            *run_ids.iter().max().expect("not empty"),
        );
        // The run being copied (its rows go on across batches and row groups), and the last
        // run id seen, copied or not: a run's rows are contiguous, so one seen again is damage.
        let mut current: Option<RunId> = None;
        let mut seen: HashSet<RunId> = HashSet::new();
        let mut last_seen: Option<RunId> = None;
        for g in 0..file.row_groups() {
            if let Some((min, max)) = file.column_bounds(g, "run_id")? {
                let (min, max) = (stat_i64(&min), stat_i64(&max));
                if let (Some(min), Some(max)) = (min, max) {
                    if max < lo || min > hi || !run_ids.iter().any(|id| (min..=max).contains(id)) {
                        continue;
                    }
                }
            }
            let mut stream = table::GroupBatches::open_in(file, g, &POINT_NAMES)?;
            loop {
                let n = stream.next(STREAM_BATCH_ROWS, &mut batch)?;
                if n == 0 {
                    break;
                }
                let [Values::Int64(rid), Values::Utf8(metric), Values::Int64(step), Values::Int64(tokens), Values::Float64(value), Values::Float64(lr)] =
                    &batch[..]
                else {
                    return Err(Error::store(path, "unexpected column types in segment"));
                };
                // Rows are grouped by run and by metric: copy each contiguous block.
                let mut start = 0;
                while start < n {
                    let mut end = start + 1;
                    while end < n && rid[end] == rid[start] && metric[end] == metric[start] {
                        end += 1;
                    }
                    let id = rid[start];
                    if last_seen != Some(id) {
                        if !seen.insert(id) {
                            return Err(Error::store(
                                path,
                                format!("the rows of run {id} are not contiguous in the segment"),
                            ));
                        }
                        last_seen = Some(id);
                        if let Some(done) = current.take() {
                            debug_assert_ne!(done, id);
                            self.end_run()?;
                        }
                        if run_ids.contains(&id) {
                            self.begin_run(id, 0)?;
                            current = Some(id);
                        }
                    }
                    if current == Some(id) {
                        let name = std::str::from_utf8(metric[start].data())
                            .map_err(|_| Error::store(path, "a metric name is not UTF-8"))?;
                        let r = start..end;
                        self.buf.push_block(
                            id,
                            metric_name(name),
                            &step[r.clone()],
                            &value[r.clone()],
                            &tokens[r.clone()],
                            &lr[r],
                        );
                    }
                    start = end;
                }
                // Full row groups go out as they fill (the segment stays open: mid-run).
                self.flush_full_groups()?;
            }
            // The group's pages of the mapping are done with: memory holds one row group of
            // the file being read, not the whole file.
            file.release_pages();
        }
        if current.is_some() {
            self.end_run()?;
        }
        Ok(())
    }

    /// Flush, close and rename every segment into place; returns their manifest entries.
    pub fn finish(mut self) -> Result<Vec<SegmentEntry>> {
        self.close_segment()?;
        Ok(self.done)
    }
}

/// An Int64 statistic's bytes (little-endian, as Parquet stores them) as a number.
fn stat_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.try_into().ok()?))
}

/// Visit every live run's series of `metric` in the manifest's segments: row groups are
/// streamed in parallel, a batch of rows at a time into reused buffers, and `visit` sees each
/// run's series as soon as it is complete, so memory follows one run, not the store. A run
/// split across row groups is joined first (its parts kept whole until then). A run's points
/// sit in the segment its record names; rows of replaced runs in older segments are skipped.
/// Token counts are read only `with_tokens` (reading fewer columns is faster).
pub fn visit_metric<T: Send>(
    root: &Path,
    manifest: &super::Manifest,
    metric: &str,
    with_tokens: bool,
    visit: &(dyn Fn(RunId, Curve) -> T + Sync),
) -> Result<Vec<(RunId, T)>> {
    use rayon::prelude::*;
    use std::collections::HashMap;
    let live: HashMap<&str, HashSet<RunId>> = manifest.runs.iter().fold(HashMap::new(), |mut m, r| {
        if let Some(seg) = r.segment.as_deref() {
            m.entry(seg).or_default().insert(r.run_id);
        }
        m
    });
    let segments: Vec<&SegmentEntry> = manifest
        .segments
        .iter()
        .filter(|s| live.contains_key(s.file.as_str()))
        .collect();
    // Damaged data is an error naming the file and its runs, never different values: each
    // segment is mapped once, checked against its checksum on the very bytes then decoded (the
    // first time this process opens it), and its footer parsed once for all its row groups.
    let files: Vec<(&SegmentEntry, table::ParquetFile)> = segments
        .par_iter()
        .map(|seg| Ok((*seg, super::check::open_segment(root, manifest, seg)?)))
        .collect::<Result<_>>()?;
    let units: Vec<(usize, usize)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, (_, file))| (0..file.row_groups()).map(move |g| (i, g)))
        .collect();
    // Runs split by a row-group boundary are joined as soon as the groups on both sides are
    // read (not after all of them): memory holds the split runs of the groups being read.
    let joiner = std::sync::Mutex::new(Joiner::new(units.len()));
    let parts: Vec<UnitRead<T>> = units
        .par_iter()
        .enumerate()
        .map(|(u, &(i, g))| {
            let (seg, file) = &files[i];
            let ids = &live[seg.file.as_str()];
            let result = if seg.xxh3_128.is_some() {
                visit_group(file, g, metric, ids, with_tokens, visit)
            } else {
                // A file without a checksum (an older store) may be damaged where it is decoded:
                // a failure there (or the decoder's panic) names the file and its runs.
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    visit_group(file, g, metric, ids, with_tokens, visit)
                }));
                match read {
                    Ok(r) => r.map_err(|e| unreadable(root, manifest, seg, e)),
                    Err(_) => Err(unreadable(
                        root,
                        manifest,
                        seg,
                        Error::store(&file.path, "the Parquet decoder failed on it"),
                    )),
                }
            };
            // Every segment is mapped at once: without letting each group's pages go once read,
            // memory would end up holding all the store's points (8x an ingest's at 1e8 points).
            file.release_group_pages(g);
            let result = result?;
            let whole = joiner
                .lock()
                .map_err(|_| Error::Internal("a reader panicked".into()))?
                .add(u, result.edges);
            let joined = whole
                .into_iter()
                .map(|p| {
                    let value = visit(p.run_id, curve(&p.series.steps, &p.series.values, &p.series.tokens));
                    (p.order, p.run_id, value)
                })
                .collect();
            Ok((result.done, joined))
        })
        .collect::<Result<_>>()?;
    let joiner = joiner
        .into_inner()
        .map_err(|_| Error::Internal("a reader panicked".into()))?;
    if !joiner.parts.is_empty() {
        return Err(Error::Internal(format!(
            "{} split run(s) left unjoined after every row group was read",
            joiner.parts.len()
        )));
    }
    // Runs read whole in a group, in file order, then the joined ones, in the file order of
    // their first part (the order the runs come in is the same whichever worker read what).
    let mut out = Vec::new();
    let mut joined = Vec::new();
    for (done, j) in parts {
        out.extend(done);
        joined.extend(j);
    }
    joined.sort_unstable_by_key(|j| j.0);
    out.extend(joined.into_iter().map(|(_, id, value)| (id, value)));
    Ok(out)
}

/// A joined run's visit: (position of its first part, run, value).
type JoinedRun<T> = ((usize, usize), RunId, T);
/// What reading a row group gives: the runs whole in it, and those joined once it was read.
type UnitRead<T> = (Vec<(RunId, T)>, Vec<JoinedRun<T>>);

/// A wanted block at an edge of its row group, which may go on in the group before
/// (`open_left`: it starts at the group's first row) or after (`open_right`: it ends at its
/// last row).
struct Edge {
    run_id: RunId,
    series: Series,
    open_left: bool,
    open_right: bool,
}

/// Edge blocks joined so far: `first..=last` are the units (row groups in file order) they
/// span; a side still open waits for the neighbouring unit to be read.
struct Part {
    run_id: RunId,
    series: Series,
    first: usize,
    last: usize,
    open_left: bool,
    open_right: bool,
    /// (unit, index among its edges) of the first block: where the run comes in the output.
    order: (usize, usize),
}

/// Joins the blocks of runs split across row groups, whichever order the groups are read in:
/// a block that may go on is kept until the neighbouring group is read, then joined with the
/// block there (the same run, steps going on) or closed.
struct Joiner {
    read: Vec<bool>,
    next_key: usize,
    parts: HashMap<usize, Part>,
    /// Keys of the parts open on the right, by their last unit.
    by_end: HashMap<usize, usize>,
    /// Keys of the parts open on the left, by their first unit.
    by_start: HashMap<usize, usize>,
}

impl Joiner {
    fn new(units: usize) -> Joiner {
        Joiner {
            read: vec![false; units],
            next_key: 0,
            parts: HashMap::new(),
            by_end: HashMap::new(),
            by_start: HashMap::new(),
        }
    }

    /// Take in the edge blocks of unit `u` (just read); returns the runs now whole.
    fn add(&mut self, u: usize, edges: Vec<Edge>) -> Vec<Part> {
        self.read[u] = true;
        let mut whole = Vec::new();
        for (k, e) in edges.into_iter().enumerate() {
            let mut p = Part {
                run_id: e.run_id,
                series: e.series,
                first: u,
                last: u,
                open_left: e.open_left,
                open_right: e.open_right,
                order: (u, k),
            };
            if p.open_left && (u == 0 || self.read[u - 1]) {
                p.open_left = false;
                if let Some(mut prev) = u.checked_sub(1).and_then(|v| self.take(self.by_end.get(&v).copied())) {
                    if joins(&prev, &p) {
                        append(&mut prev.series, p.series);
                        (prev.last, prev.open_right) = (p.last, p.open_right);
                        p = prev;
                    } else {
                        prev.open_right = false;
                        self.settle(prev, &mut whole);
                    }
                }
            }
            if p.open_right && (u + 1 == self.read.len() || self.read[u + 1]) {
                p.open_right = false;
                if let Some(mut next) = self.take(self.by_start.get(&(u + 1)).copied()) {
                    if joins(&p, &next) {
                        append(&mut p.series, next.series);
                        (p.last, p.open_right) = (next.last, next.open_right);
                    } else {
                        next.open_left = false;
                        self.settle(next, &mut whole);
                    }
                }
            }
            self.settle(p, &mut whole);
        }
        // Blocks of the neighbours that waited for this unit and do not go on in it.
        let waiting = [
            u.checked_sub(1).and_then(|v| self.by_end.get(&v).copied()),
            self.by_start.get(&(u + 1)).copied(),
        ];
        for key in waiting {
            if let Some(mut p) = self.take(key) {
                if p.last + 1 == u {
                    p.open_right = false;
                } else {
                    p.open_left = false;
                }
                self.settle(p, &mut whole);
            }
        }
        whole
    }

    /// Remove the part `key` (if any) from the waiting ones.
    fn take(&mut self, key: Option<usize>) -> Option<Part> {
        let p = self.parts.remove(&key?)?;
        if p.open_left {
            self.by_start.remove(&p.first);
        }
        if p.open_right {
            self.by_end.remove(&p.last);
        }
        Some(p)
    }

    /// A part closed on both sides is whole; one still open waits.
    fn settle(&mut self, p: Part, whole: &mut Vec<Part>) {
        if !p.open_left && !p.open_right {
            whole.push(p);
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        if p.open_left {
            self.by_start.insert(p.first, key);
        }
        if p.open_right {
            self.by_end.insert(p.last, key);
        }
        self.parts.insert(key, p);
    }
}

/// Whether `next` goes on from `prev`: the same run, its steps after `prev`'s.
fn joins(prev: &Part, next: &Part) -> bool {
    prev.run_id == next.run_id && prev.series.steps.last() < next.series.steps.first()
}

fn append(to: &mut Series, more: Series) {
    to.steps.extend(more.steps);
    to.values.extend(more.values);
    to.tokens.extend(more.tokens);
}

/// A segment that could not be read: an `Error::Store` naming it and its runs.
fn unreadable(root: &Path, manifest: &super::Manifest, seg: &SegmentEntry, e: Error) -> Error {
    let detail = match &e {
        Error::Store { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let unverified = if seg.xxh3_128.is_none() {
        " (the file has no checksum: written by an older steplaw-db)"
    } else {
        ""
    };
    super::check::damaged_error(
        root,
        manifest,
        &seg.file,
        &format!("cannot be read: {detail}{unverified}"),
    )
}

/// What one row group gives: visited runs, and the blocks at its edges still to be joined.
struct GroupResult<T> {
    done: Vec<(RunId, T)>,
    edges: Vec<Edge>,
}

/// A borrowed curve; token counts that are all missing read back as absent, as written.
fn curve<'a>(steps: &'a [i64], values: &'a [f64], tokens: &'a [i64]) -> Curve<'a> {
    let tokens = if tokens.iter().any(|&t| t != -1) { tokens } else { &[] };
    Curve { steps, values, tokens }
}

fn visit_group<T>(
    file: &table::ParquetFile,
    group: usize,
    metric: &str,
    live: &HashSet<RunId>,
    with_tokens: bool,
    visit: &(dyn Fn(RunId, Curve) -> T + Sync),
) -> Result<GroupResult<T>> {
    let mut result = GroupResult {
        done: Vec::new(),
        edges: Vec::new(),
    };
    // The metric column's statistics settle most row groups without decoding a string:
    // all rows of the metric (min == max == metric), or none of them.
    let all_rows_match = match file.column_bounds(group, "metric")? {
        Some((min, max)) if metric.as_bytes() < min.as_slice() || metric.as_bytes() > max.as_slice() => {
            return Ok(result)
        }
        Some((min, max)) => min == max,
        None => false,
    };
    let mut names = vec!["run_id", "step", "value"];
    for (wanted, name) in [(with_tokens, "tokens"), (!all_rows_match, "metric")] {
        if wanted {
            names.push(name);
        }
    }
    let slot = |name: &str| names.iter().position(|n| *n == name);
    let (tokens_at, metric_at) = (slot("tokens"), slot("metric"));
    let mut batch: Vec<Values> = names
        .iter()
        .map(|n| match *n {
            "value" => Values::Float64(Vec::new()),
            "metric" => Values::Utf8(Vec::new()),
            _ => Values::Int64(Vec::new()),
        })
        .collect();
    let mut stream = table::GroupBatches::open_in(file, group, &names)?;
    let mut current = BlockBuffer::default();
    let mut row = 0usize;
    loop {
        let n = stream.next(STREAM_BATCH_ROWS, &mut batch)?;
        if n == 0 {
            break;
        }
        let int = |i: usize| match &batch[i] {
            Values::Int64(v) => v.as_slice(),
            _ => unreachable!("typed above"),
        };
        let Values::Float64(values) = &batch[2] else {
            unreachable!("typed above")
        };
        let (rid, steps) = (int(0), int(1));
        let tokens = tokens_at.map(int);
        let metrics = metric_at.map(|i| match &batch[i] {
            Values::Utf8(v) => v.as_slice(),
            _ => unreachable!("typed above"),
        });
        let mut i = 0;
        while i < n {
            let name = metrics.map(|m| m[i].data());
            // This block's rows in the batch.
            let mut j = i + 1;
            while j < n && rid[j] == rid[i] && metrics.is_none_or(|m| m[j] == m[i]) {
                j += 1;
            }
            let slice = |r: std::ops::Range<usize>| (&steps[r.clone()], &values[r.clone()], tokens.map(|t| &t[r]));
            if current.holds(rid[i], name) {
                // The block went on from the previous batch.
                let (st, va, to) = slice(i..j);
                current.extend(st, va, to);
                if j < n {
                    current.finish(&mut result, visit, false);
                }
            } else {
                current.finish(&mut result, visit, false);
                let is_wanted = name.is_none_or(|m| m == metric.as_bytes()) && live.contains(&rid[i]);
                if j < n && row + i > 0 {
                    // Whole inside this batch and inside the group: visited where it lies.
                    if is_wanted {
                        let (st, va, to) = slice(i..j);
                        result
                            .done
                            .push((rid[i], visit(rid[i], curve(st, va, to.unwrap_or_default()))));
                    }
                } else {
                    current.start(rid[i], name, is_wanted, row + i);
                    let (st, va, to) = slice(i..j);
                    current.extend(st, va, to);
                }
            }
            i = j;
        }
        row += n;
    }
    current.finish(&mut result, visit, true);
    Ok(result)
}

/// Rows streamed at a time when scanning a row group.
const STREAM_BATCH_ROWS: usize = 1 << 16;

/// The rows of the block (one run, one metric) being gathered while streaming.
#[derive(Default)]
struct BlockBuffer {
    run_id: Option<RunId>,
    /// The metric's name when the row group mixes metrics (else every row is the wanted one).
    metric: Option<Vec<u8>>,
    /// The wanted metric of a live run: visited when complete (others are only skipped over).
    is_wanted: bool,
    first_row: usize,
    series: Series,
}

impl BlockBuffer {
    fn holds(&self, run_id: RunId, metric: Option<&[u8]>) -> bool {
        self.run_id == Some(run_id) && self.metric.as_deref() == metric
    }

    fn start(&mut self, run_id: RunId, metric: Option<&[u8]>, is_wanted: bool, row: usize) {
        self.run_id = Some(run_id);
        self.metric = metric.map(<[u8]>::to_vec);
        self.is_wanted = is_wanted;
        self.first_row = row;
        let s = &mut self.series;
        s.steps.clear();
        s.values.clear();
        s.tokens.clear();
    }

    fn extend(&mut self, steps: &[i64], values: &[f64], tokens: Option<&[i64]>) {
        let s = &mut self.series;
        s.steps.extend_from_slice(steps);
        s.values.extend_from_slice(values);
        s.tokens.extend_from_slice(tokens.unwrap_or_default());
    }

    /// Visit the block, or keep it for joining when it may continue in a neighbouring group;
    /// the buffer is then free for the next block.
    fn finish<T>(
        &mut self,
        result: &mut GroupResult<T>,
        visit: &(dyn Fn(RunId, Curve) -> T + Sync),
        at_group_end: bool,
    ) {
        let Some(run_id) = self.run_id.take().filter(|_| self.is_wanted) else {
            return;
        };
        let s = &mut self.series;
        if self.first_row == 0 || at_group_end {
            // Taken, not copied: `start` gives the buffer a new series.
            result.edges.push(Edge {
                run_id,
                series: std::mem::take(s),
                open_left: self.first_row == 0,
                open_right: at_group_end,
            });
        } else {
            result
                .done
                .push((run_id, visit(run_id, curve(&s.steps, &s.values, &s.tokens))));
        }
    }
}

/// Points of some runs, column by column in the points table's order. Nulls as the readers of
/// `GroupBatches` give them: a missing token count is -1, a missing lr NaN (the writer stores a
/// token count below 0 and an lr that is not finite as null, so neither is ever a value).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PointRows {
    pub run_id: Vec<RunId>,
    /// The metric column as (name, rows) runs: rows are grouped by run and metric.
    pub metric: Vec<(String, usize)>,
    pub step: Vec<i64>,
    pub tokens: Vec<i64>,
    pub value: Vec<f64>,
    pub lr: Vec<f64>,
}

impl PointRows {
    pub fn len(&self) -> usize {
        self.step.len()
    }
    pub fn is_empty(&self) -> bool {
        self.step.is_empty()
    }
}

/// The points of `run_ids` (those of `metric` only, if given) in `manifest`'s version, in the
/// order they lie in the store (segments in manifest order, rows in file order); ids the version
/// does not hold, or whose run has no points, give nothing.
///
/// A run's rows are one contiguous block of the segment its record names, at the offset the
/// manifest's per-run row counts (`run_rows`, in file order) give: only the row groups that
/// overlap the block are read, and inside them the rows before it are skipped page by page, so
/// reading one run costs about a row group whatever the store's size. Segments written before
/// `run_rows` was kept are scanned, row groups pruned by their `run_id` statistics. Only the
/// segments read are verified against their checksums (once per process).
pub fn read_runs(
    root: &Path,
    manifest: &super::Manifest,
    run_ids: &[RunId],
    metric: Option<&str>,
) -> Result<PointRows> {
    let wanted: HashSet<RunId> = run_ids.iter().copied().collect();
    let mut by_segment: HashMap<&str, Vec<RunId>> = HashMap::new();
    for r in manifest.runs.iter().filter(|r| wanted.contains(&r.run_id)) {
        if let Some(seg) = r.segment.as_deref() {
            by_segment.entry(seg).or_default().push(r.run_id);
        }
    }
    let mut out = PointRows::default();
    for seg in &manifest.segments {
        let Some(ids) = by_segment.get(seg.file.as_str()) else {
            continue;
        };
        let file = super::check::open_segment(root, manifest, seg)?;
        let read = |out: &mut PointRows| read_runs_of(&file, seg, ids, metric, out);
        if seg.xxh3_128.is_some() {
            read(&mut out).map_err(|e| damaged_rows(root, manifest, seg, e))?;
        } else {
            // A file without a checksum (an older store) may be damaged where it is decoded.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&mut out))) {
                Ok(r) => r.map_err(|e| unreadable(root, manifest, seg, e))?,
                Err(_) => {
                    let e = Error::store(&file.path, "the Parquet decoder failed on it");
                    return Err(unreadable(root, manifest, seg, e));
                }
            }
        }
        file.release_pages();
    }
    Ok(out)
}

/// A verified segment whose rows are not where its manifest entry says: damage (or a writer's
/// bug), named with the file and its runs.
fn damaged_rows(root: &Path, manifest: &super::Manifest, seg: &SegmentEntry, e: Error) -> Error {
    match e {
        Error::Store { message, .. } => super::check::damaged_error(root, manifest, &seg.file, &message),
        e => e,
    }
}

/// The rows of `ids` (live runs of `seg`) in `file`, appended to `out`.
fn read_runs_of(
    file: &table::ParquetFile,
    seg: &SegmentEntry,
    ids: &[RunId],
    metric: Option<&str>,
    out: &mut PointRows,
) -> Result<()> {
    let ids: HashSet<RunId> = ids.iter().copied().collect();
    // Each wanted run's block of rows, from the manifest's per-run counts (file order).
    let blocks: Option<Vec<(RunId, u64, u64)>> = seg.run_rows.as_ref().map(|rows| {
        let mut start = 0;
        let mut blocks = Vec::new();
        for (&id, &n) in seg.run_ids.iter().zip(rows) {
            if ids.contains(&id) {
                blocks.push((id, start, start + n));
            }
            start += n;
        }
        blocks
    });
    let mut group_start = Vec::with_capacity(file.row_groups() + 1);
    group_start.push(0u64);
    for g in 0..file.row_groups() {
        group_start.push(group_start[g] + file.group_rows(g));
    }
    let mut batch = empty_point_batch();
    let Some(blocks) = blocks else {
        // No per-run counts: every row group whose run_id range may hold a wanted run.
        let (lo, hi) = (ids.iter().min().copied(), ids.iter().max().copied());
        for g in 0..file.row_groups() {
            if let Some((min, max)) = file.column_bounds(g, "run_id")? {
                if let (Some(min), Some(max), Some(lo), Some(hi)) = (stat_i64(&min), stat_i64(&max), lo, hi) {
                    if max < lo || min > hi {
                        continue;
                    }
                }
            }
            let mut stream = table::GroupBatches::open_in(file, g, &POINT_NAMES)?;
            while stream.next(STREAM_BATCH_ROWS, &mut batch)? > 0 {
                append_rows(&batch, |id| ids.contains(&id), metric, None, out)?;
            }
        }
        return Ok(());
    };
    for (id, start, end) in blocks {
        let before = out.len();
        for g in 0..file.row_groups() {
            let (gs, ge) = (group_start[g], group_start[g + 1]);
            if ge <= start || gs >= end {
                continue;
            }
            let mut stream = table::GroupBatches::open_in(file, g, &POINT_NAMES)?;
            let skip = start.saturating_sub(gs) as usize;
            if stream.skip(skip)? != skip {
                return Err(Error::store(&file.path, "a row group ends before its footer says"));
            }
            let mut left = (end.min(ge) - gs.max(start)) as usize;
            while left > 0 {
                let n = stream.next(left.min(STREAM_BATCH_ROWS), &mut batch)?;
                if n == 0 {
                    return Err(Error::store(&file.path, "a row group ends before its footer says"));
                }
                append_rows(&batch, |_| true, metric, Some(id), out)?;
                left -= n;
            }
        }
        if metric.is_none() && (out.len() - before) as u64 != end - start {
            return Err(Error::store(
                &file.path,
                format!(
                    "holds {} rows of run {id} where the manifest says {} (rows {start}..{end})",
                    out.len() - before,
                    end - start
                ),
            ));
        }
    }
    Ok(())
}

/// Append the rows of a decoded batch that `keep` (by run id) and `metric` select. With
/// `expect`, every row must be that run's: the manifest said the rows are its.
fn append_rows(
    batch: &[Values],
    keep: impl Fn(RunId) -> bool,
    metric: Option<&str>,
    expect: Option<RunId>,
    out: &mut PointRows,
) -> Result<()> {
    let [Values::Int64(rid), Values::Utf8(names), Values::Int64(step), Values::Int64(tokens), Values::Float64(value), Values::Float64(lr)] =
        batch
    else {
        return Err(Error::Internal("point batch with unexpected column types".into()));
    };
    let mut i = 0;
    while i < rid.len() {
        let mut j = i + 1;
        while j < rid.len() && rid[j] == rid[i] && names[j] == names[i] {
            j += 1;
        }
        if let Some(want) = expect.filter(|&w| w != rid[i]) {
            return Err(Error::store(
                "",
                format!("holds rows of run {} where the manifest says run {want}'s are", rid[i]),
            ));
        }
        let name = std::str::from_utf8(names[i].data()).map_err(|_| Error::store("", "a metric name is not UTF-8"))?;
        if keep(rid[i]) && metric.is_none_or(|m| m == name) {
            let n = j - i;
            out.run_id.extend(std::iter::repeat_n(rid[i], n));
            match out.metric.last_mut() {
                Some((last, k)) if last == name => *k += n,
                _ => out.metric.push((name.to_string(), n)),
            }
            out.step.extend_from_slice(&step[i..j]);
            out.tokens.extend_from_slice(&tokens[i..j]);
            out.value.extend_from_slice(&value[i..j]);
            out.lr.extend_from_slice(&lr[i..j]);
        }
        i = j;
    }
    Ok(())
}
