//! Plain Parquet tables through the parquet crate's low-level column API (no Arrow: it
//! would triple the compile time for what is here a handful of flat columns).
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, Encoding};
use parquet::column::reader::ColumnReader;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;

use crate::error::{Error, ParquetResultExt, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int64,
    Float64,
    Utf8,
    /// Microseconds since the epoch, UTC.
    Timestamp,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

pub const fn field(name: &'static str, kind: Kind, nullable: bool) -> Field {
    Field { name, kind, nullable }
}

/// One column's values. `valid` is None when every value is present; otherwise it has one
/// flag per row and `values` holds only the present values, as Parquet stores them.
#[derive(Debug, Clone)]
pub enum Values {
    Int64(Vec<i64>),
    Float64(Vec<f64>),
    Utf8(Vec<ByteArray>),
}

/// An empty column: what `std::mem::take` leaves behind.
impl Default for Values {
    fn default() -> Self {
        Values::Int64(Vec::new())
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub values: Values,
    pub valid: Option<Vec<bool>>,
}

impl Column {
    pub fn int64(values: Vec<i64>) -> Self {
        Column {
            values: Values::Int64(values),
            valid: None,
        }
    }
    pub fn float64(values: Vec<f64>) -> Self {
        Column {
            values: Values::Float64(values),
            valid: None,
        }
    }
    pub fn utf8<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> Self {
        let v = values
            .into_iter()
            .map(|s| ByteArray::from(s.as_ref().as_bytes().to_vec()))
            .collect();
        Column {
            values: Values::Utf8(v),
            valid: None,
        }
    }
    pub fn opt_int64(values: impl IntoIterator<Item = Option<i64>>) -> Self {
        let (valid, present) = split_options(values);
        Column {
            values: Values::Int64(present),
            valid: Some(valid),
        }
    }
    /// Non-finite floats are stored as null.
    pub fn opt_float64(values: impl IntoIterator<Item = Option<f64>>) -> Self {
        let (valid, present) = split_options(values.into_iter().map(|v| v.filter(|x| x.is_finite())));
        Column {
            values: Values::Float64(present),
            valid: Some(valid),
        }
    }
    pub fn opt_utf8<S: AsRef<str>>(values: impl IntoIterator<Item = Option<S>>) -> Self {
        let (valid, present) = split_options(
            values
                .into_iter()
                .map(|v| v.map(|s| ByteArray::from(s.as_ref().as_bytes().to_vec()))),
        );
        Column {
            values: Values::Utf8(present),
            valid: Some(valid),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn len(&self) -> usize {
        match (&self.valid, &self.values) {
            (Some(v), _) => v.len(),
            (None, Values::Int64(v)) => v.len(),
            (None, Values::Float64(v)) => v.len(),
            (None, Values::Utf8(v)) => v.len(),
        }
    }
}

fn split_options<T>(values: impl IntoIterator<Item = Option<T>>) -> (Vec<bool>, Vec<T>) {
    let mut valid = Vec::new();
    let mut present = Vec::new();
    for v in values {
        valid.push(v.is_some());
        if let Some(x) = v {
            present.push(x);
        }
    }
    (valid, present)
}

fn message_type(fields: &[Field]) -> String {
    let mut s = String::from("message schema {\n");
    for f in fields {
        let rep = if f.nullable { "OPTIONAL" } else { "REQUIRED" };
        let ty = match f.kind {
            Kind::Int64 => "INT64".to_string(),
            Kind::Float64 => "DOUBLE".to_string(),
            Kind::Utf8 => "BYTE_ARRAY".to_string(),
            Kind::Timestamp => "INT64".to_string(),
        };
        let logical = match f.kind {
            Kind::Utf8 => " (STRING)",
            Kind::Timestamp => " (TIMESTAMP(MICROS,true))",
            _ => "",
        };
        s.push_str(&format!("  {rep} {ty} {}{logical};\n", f.name));
    }
    s.push('}');
    s
}

/// The values of one column of a row group being written, borrowed.
#[derive(Clone, Copy)]
pub enum Data<'a> {
    Int64(&'a [i64]),
    Float64(&'a [f64]),
    Utf8(&'a [ByteArray]),
    /// (value, times): each value repeated. A column of long runs (a run id, a metric name)
    /// then needs no buffer of a row per value.
    Int64Runs(&'a [(i64, usize)]),
    Utf8Runs(&'a [(ByteArray, usize)]),
}

#[derive(Clone, Copy)]
pub struct ColumnData<'a> {
    pub values: Data<'a>,
    /// Parquet definition levels of a nullable column, one per row (1: present); `values`
    /// then holds only the present values.
    pub def_levels: Option<&'a [i16]>,
}

impl ColumnData<'_> {
    fn rows(&self) -> usize {
        match (self.def_levels, self.values) {
            (Some(d), _) => d.len(),
            (None, Data::Int64(v)) => v.len(),
            (None, Data::Float64(v)) => v.len(),
            (None, Data::Utf8(v)) => v.len(),
            (None, Data::Int64Runs(r)) => r.iter().map(|x| x.1).sum(),
            (None, Data::Utf8Runs(r)) => r.iter().map(|x| x.1).sum(),
        }
    }
}

/// Write repeated values a bounded batch at a time.
fn write_runs<T: parquet::data_type::DataType>(
    col: &mut parquet::column::writer::ColumnWriterImpl<'_, T>,
    runs: &[(T::T, usize)],
) -> parquet::errors::Result<usize>
where
    T::T: Clone,
{
    const BATCH: usize = 4096;
    let mut batch: Vec<T::T> = Vec::with_capacity(BATCH);
    let mut written = 0;
    for (value, times) in runs {
        let mut left = *times;
        while left > 0 {
            let k = left.min(BATCH - batch.len());
            batch.extend(std::iter::repeat_n(value, k).cloned());
            left -= k;
            if batch.len() == BATCH {
                written += col.write_batch(&batch, None, None)?;
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        written += col.write_batch(&batch, None, None)?;
    }
    Ok(written)
}

/// Writes row groups of a fixed schema to one Parquet file. `finish` flushes and fsyncs,
/// so a file that `finish` returned for is complete on disk.
pub struct TableWriter {
    fields: Vec<Field>,
    writer: SerializedFileWriter<HashedFile>,
    path: std::path::PathBuf,
    rows: u64,
    /// The last column chunk written of one text value repeated (see `RepeatedChunk`), and
    /// how many times one was spliced in.
    repeated: Option<RepeatedChunk>,
    spliced: u64,
    /// What encoding such a chunk apart from the file takes: the columns and the properties.
    columns: Vec<parquet::schema::types::ColumnDescPtr>,
    props: parquet::file::properties::WriterPropertiesPtr,
}

/// A column chunk of one text value repeated `times`, encoded once in memory: the points'
/// metric column in row groups of one metric. Encoding it row by row (a dictionary lookup and
/// a min/max comparison per row) cost a tenth of an ingest; spliced in whole, it costs a copy.
struct RepeatedChunk {
    column: usize,
    value: ByteArray,
    times: usize,
    bytes: bytes::Bytes,
    close: parquet::column::writer::ColumnCloseResult,
}

impl RepeatedChunk {
    fn encode(
        column: usize,
        descr: parquet::schema::types::ColumnDescPtr,
        props: parquet::file::properties::WriterPropertiesPtr,
        value: &ByteArray,
        times: usize,
    ) -> parquet::errors::Result<RepeatedChunk> {
        use parquet::column::writer::{get_column_writer, get_typed_column_writer};
        use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
        let mut sink = TrackedWrite::new(Vec::new());
        let pages = Box::new(SerializedPageWriter::new(&mut sink));
        let mut col = get_typed_column_writer::<ByteArrayType>(get_column_writer(descr, props, pages));
        write_runs(&mut col, &[(value.clone(), times)])?;
        let close = col.close()?;
        let bytes = bytes::Bytes::from(sink.into_inner()?);
        Ok(RepeatedChunk {
            column,
            value: value.clone(),
            times,
            bytes,
            close,
        })
    }
}

impl TableWriter {
    /// `delta_columns`: integer columns that grow steadily (steps, tokens), stored with
    /// DELTA_BINARY_PACKED, which shrinks them to a few bits a row. `statistics`: the columns
    /// that get min/max statistics per row group, the ones readers prune by (None: all). They
    /// cost a comparison per value.
    pub fn create(path: &Path, fields: &[Field], delta_columns: &[&str], statistics: Option<&[&str]>) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Self::with_sink(Sink::File(file), path, fields, delta_columns, statistics)
    }

    /// A writer of a table held in memory (`finish_in_memory`); `name` names it in errors.
    pub fn in_memory(name: &Path, fields: &[Field]) -> Result<Self> {
        Self::with_sink(Sink::Memory(Vec::new()), name, fields, &[], None)
    }

    fn with_sink(
        sink: Sink,
        path: &Path,
        fields: &[Field],
        delta_columns: &[&str],
        statistics: Option<&[&str]>,
    ) -> Result<Self> {
        let schema = Arc::new(parse_message_type(&message_type(fields)).at(path)?);
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_size(1 << 20)
            // Values are handed to the encoders this many at a time (default 1024): fewer,
            // larger batches cut the per-batch bookkeeping; pages still end near their limit.
            .set_write_batch_size(1 << 14)
            // Min/max per column chunk is what readers prune with; per-page statistics cost a
            // comparison per value for nothing.
            .set_statistics_enabled(EnabledStatistics::Chunk)
            // Dictionaries pay for low-cardinality text only; measured values are nearly all
            // distinct, and hashing each one costs more than it saves.
            .set_dictionary_enabled(false);
        for f in fields
            .iter()
            .filter(|f| statistics.is_some_and(|keep| !keep.contains(&f.name)))
        {
            props = props.set_column_statistics_enabled(ColumnPath::from(f.name), EnabledStatistics::None);
        }
        for f in fields.iter().filter(|f| f.kind == Kind::Utf8) {
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name), true);
        }
        for name in delta_columns {
            let col = ColumnPath::from(*name);
            props = props.set_column_encoding(col.clone(), Encoding::DELTA_BINARY_PACKED);
            props = props.set_column_compression(col, Compression::UNCOMPRESSED);
        }
        for f in fields.iter().filter(|f| f.kind == Kind::Float64) {
            props = props.set_column_compression(ColumnPath::from(f.name), Compression::UNCOMPRESSED);
        }
        let file = HashedFile {
            file: sink,
            hasher: Box::default(),
            len: 0,
        };
        let writer = SerializedFileWriter::new(file, schema, Arc::new(props.build())).at(path)?;
        let (columns, props) = (writer.schema_descr().columns().to_vec(), writer.properties().clone());
        Ok(TableWriter {
            fields: fields.to_vec(),
            writer,
            path: path.to_path_buf(),
            rows: 0,
            repeated: None,
            spliced: 0,
            columns,
            props,
        })
    }

    pub fn write_row_group(&mut self, columns: &[Column]) -> Result<()> {
        let levels: Vec<Option<Vec<i16>>> = columns
            .iter()
            .map(|c| c.valid.as_ref().map(|v| v.iter().map(|&ok| ok as i16).collect()))
            .collect();
        let data: Vec<ColumnData> = columns
            .iter()
            .zip(&levels)
            .map(|(c, def)| {
                let values = match &c.values {
                    Values::Int64(v) => Data::Int64(v),
                    Values::Float64(v) => Data::Float64(v),
                    Values::Utf8(v) => Data::Utf8(v),
                };
                ColumnData {
                    values,
                    def_levels: def.as_deref(),
                }
            })
            .collect();
        self.write_row_group_data(&data)
    }

    /// Write one row group: a column per field, in order.
    pub fn write_row_group_data(&mut self, columns: &[ColumnData]) -> Result<()> {
        assert_eq!(columns.len(), self.fields.len(), "one column per field");
        let n = columns.first().map_or(0, ColumnData::rows);
        if columns.iter().any(|c| c.rows() != n) {
            return Err(Error::store(&self.path, "columns of unequal length"));
        }
        let path = self.path.clone();
        let mut rg = self.writer.next_row_group().at(&path)?;
        for (i, c) in columns.iter().enumerate() {
            if let Data::Utf8Runs([(value, times)]) = c.values {
                let cached = self
                    .repeated
                    .as_ref()
                    .is_some_and(|r| r.column == i && r.value == *value && r.times == *times);
                if cached {
                    self.spliced += 1;
                } else {
                    self.repeated = Some(
                        RepeatedChunk::encode(i, self.columns[i].clone(), self.props.clone(), value, *times)
                            .at(&path)?,
                    );
                }
                let chunk = self.repeated.as_ref().expect("just encoded");
                rg.append_column(&chunk.bytes, chunk.close.clone()).at(&path)?;
                continue;
            }
            let Some(mut col) = rg.next_column().at(&path)? else {
                break;
            };
            let def = c.def_levels;
            match c.values {
                Data::Int64(v) => col.typed::<Int64Type>().write_batch(v, def, None),
                Data::Float64(v) => col.typed::<DoubleType>().write_batch(v, def, None),
                Data::Utf8(v) => col.typed::<ByteArrayType>().write_batch(v, def, None),
                Data::Int64Runs(runs) => write_runs(col.typed::<Int64Type>(), runs),
                Data::Utf8Runs(runs) => write_runs(col.typed::<ByteArrayType>(), runs),
            }
            .at(&path)?;
            col.close().at(&path)?;
        }
        rg.close().at(&path)?;
        self.rows += n as u64;
        self.start_writeback();
        Ok(())
    }

    /// Start writing what is written so far out to disk while the next row group is built, so
    /// that the fsync of `finish`, the last thing an ingest waits for, has little left to do.
    /// (Linux only; elsewhere `finish` writes it all.)
    fn start_writeback(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let Sink::File(file) = &self.writer.inner().file else {
                return;
            };
            let fd = file.as_raw_fd();
            // SAFETY: `fd` is this writer's open file; SYNC_FILE_RANGE_WRITE only starts the
            // writeback of its dirty pages (offset 0, length 0: the whole file) and waits for none.
            unsafe { libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Column chunks spliced in from an earlier row group's encoding.
    pub fn spliced(&self) -> u64 {
        self.spliced
    }

    /// Write the footer, fsync, and say what was written: rows, bytes and their checksum
    /// (computed on the way out, so the file is never read back for it).
    pub fn finish(self) -> Result<FileSummary> {
        let path = self.path.clone();
        let out = self.writer.into_inner().at(&path)?;
        if let Sink::File(file) = &out.file {
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        Ok(FileSummary {
            rows: self.rows,
            size: out.len,
            xxh3_128: out.hasher.digest128(),
        })
    }

    /// Write the footer and return the table's bytes (a writer from `in_memory`).
    pub fn finish_in_memory(self) -> Result<Vec<u8>> {
        match self.writer.into_inner().at(&self.path)?.file {
            Sink::Memory(bytes) => Ok(bytes),
            Sink::File(_) => Err(Error::Internal("finish_in_memory of a table written to a file".into())),
        }
    }
}

/// What `TableWriter::finish` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSummary {
    pub rows: u64,
    pub size: u64,
    /// xxh3-128 of the file's bytes.
    pub xxh3_128: u128,
}

/// Where a table goes: a file, or memory (a table handed to a reader without touching disk).
enum Sink {
    File(File),
    Memory(Vec<u8>),
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Memory(v) => v.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Memory(_) => Ok(()),
        }
    }
}

/// A file that hashes (xxh3-128) and counts the bytes written through it.
struct HashedFile {
    file: Sink,
    hasher: Box<xxhash_rust::xxh3::Xxh3Default>,
    len: u64,
}

impl std::io::Write for HashedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A Parquet file's bytes mapped into memory: pages are decoded straight from the page cache,
/// without first copying them through `read`. Safe because store files are immutable: written
/// under a temporary name, renamed into place, never changed; `compact` deletes them, which
/// leaves an existing mapping valid.
pub struct MappedFile {
    pub path: std::path::PathBuf,
    pub bytes: bytes::Bytes,
    /// The file's metadata when it was mapped (size, mtime, inode: what was verified).
    pub meta: std::fs::Metadata,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let bytes = if meta.len() == 0 {
            bytes::Bytes::new()
        } else {
            // SAFETY: see above; nothing truncates or rewrites a committed store file.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            bytes::Bytes::from_owner(map)
        };
        Ok(MappedFile {
            path: path.to_path_buf(),
            bytes,
            meta,
        })
    }

    /// Parse the footer: a reader whose row groups and columns all decode from this mapping
    /// (one mapping and one footer parse per file, however many groups are read).
    pub fn reader(&self) -> Result<ParquetFile> {
        Ok(ParquetFile {
            path: self.path.clone(),
            reader: SerializedFileReader::new(self.bytes.clone()).at(&self.path)?,
            mapped: self.bytes.clone(),
        })
    }

    /// The xxh3-128 of the file's bytes, hashed a few MiB at a time, each span's pages let go
    /// once hashed (`release_pages`): hashing a file does not leave all of it resident in
    /// this process (it stays in the page cache, and a later read maps it back in).
    pub fn xxh3_128(&self) -> u128 {
        const SPAN: usize = 8 << 20;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for (i, span) in self.bytes.chunks(SPAN).enumerate() {
            hasher.update(span);
            release_pages(&self.bytes, i * SPAN..i * SPAN + span.len());
        }
        hasher.digest128()
    }
}

/// Let go of the resident pages of `range` of a file mapping (`madvise(MADV_DONTNEED)`): they
/// are dropped from this process's memory, and read back from the page cache (the file's
/// bytes, which never change: store files are immutable) if touched again. Only the pages
/// wholly inside `range` go. Nothing happens for an empty mapping or off Linux.
fn release_pages(mapping: &bytes::Bytes, range: std::ops::Range<usize>) {
    #[cfg(target_os = "linux")]
    {
        let page = 4096usize;
        let end = range.end.min(mapping.len());
        let start = range.start.div_ceil(page) * page;
        let end = if end == mapping.len() { end } else { end / page * page };
        if mapping.is_empty() || start >= end {
            return;
        }
        // SAFETY: `mapping` is a whole file mapping made by `MappedFile::open` (the mapping
        // starts on a page boundary, and `start..end` is inside it). MADV_DONTNEED on a shared
        // read-only file mapping only drops page table entries: the next access reads the
        // file's bytes again, so no value any holder of `mapping` sees can change.
        unsafe {
            libc::madvise(
                mapping.as_ptr().add(start) as *mut libc::c_void,
                end - start,
                libc::MADV_DONTNEED,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (mapping, range);
}

/// An open Parquet file (its footer parsed), over a mapping of its bytes.
pub struct ParquetFile {
    pub path: std::path::PathBuf,
    reader: SerializedFileReader<bytes::Bytes>,
    /// The mapping the reader decodes from (to let go of its pages).
    mapped: bytes::Bytes,
}

impl ParquetFile {
    pub fn open(path: &Path) -> Result<ParquetFile> {
        MappedFile::open(path)?.reader()
    }

    /// Let go of the pages of the file's mapping this process has resident (see
    /// `release_pages`): a reader that streams the file calls it after each row group, so its
    /// memory holds a row group of the file, not all of it.
    pub fn release_pages(&self) {
        release_pages(&self.mapped, 0..self.mapped.len());
    }

    /// Let go of the pages of row group `group`'s column chunks only (see `release_pages`):
    /// workers reading a file's groups in parallel each let go of theirs once read, so memory
    /// holds the groups being read, not the file, and no worker drops a page another is
    /// reading (groups' byte ranges are disjoint; a page shared with a neighbour stays).
    pub fn release_group_pages(&self, group: usize) {
        if group >= self.row_groups() {
            return;
        }
        let ranges = self
            .reader
            .metadata()
            .row_group(group)
            .columns()
            .iter()
            .map(|c| c.byte_range());
        let (start, end) = ranges.fold((u64::MAX, 0), |(s, e), (at, len)| (s.min(at), e.max(at + len)));
        if start < end {
            release_pages(&self.mapped, start as usize..end as usize);
        }
    }

    /// How many row groups the file has (units of parallel reading).
    pub fn row_groups(&self) -> usize {
        self.reader.num_row_groups()
    }

    /// The rows its footer says it has.
    pub fn rows(&self) -> u64 {
        self.reader.metadata().file_metadata().num_rows() as u64
    }

    /// The rows of row group `group` (its footer's count).
    pub fn group_rows(&self, group: usize) -> u64 {
        self.reader.metadata().row_group(group).num_rows() as u64
    }

    /// The min and max statistics of a column in one row group, as bytes (None when absent).
    pub fn column_bounds(&self, group: usize, name: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if group >= self.row_groups() {
            return Err(Error::store(&self.path, format!("no row group {group}")));
        }
        let meta = self.reader.metadata().row_group(group);
        let Some(col) = meta.columns().iter().find(|c| c.column_descr().name() == name) else {
            return Err(Error::store(&self.path, format!("no column '{name}'")));
        };
        Ok(col
            .statistics()
            .and_then(|s| Some((s.min_bytes_opt()?.to_vec(), s.max_bytes_opt()?.to_vec()))))
    }
}

/// How many row groups a Parquet file has.
pub fn row_groups(path: &Path) -> Result<usize> {
    Ok(ParquetFile::open(path)?.row_groups())
}

/// The rows a Parquet file's footer says it has.
pub fn file_rows(path: &Path) -> Result<u64> {
    Ok(ParquetFile::open(path)?.rows())
}

/// The min and max statistics of a column in one row group, as bytes (None when absent).
pub fn column_bounds(path: &Path, group: usize, name: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    ParquetFile::open(path)?.column_bounds(group, name)
}

/// Named columns of one row group read in lockstep, a batch of rows at a time, into reused
/// buffers: scanning a column costs no memory beyond one batch. Nullable columns come back
/// with their nulls filled in (-1 for integers, NaN for floats).
pub struct GroupBatches {
    path: std::path::PathBuf,
    readers: Vec<ColumnReader>,
    nullable: Vec<bool>,
    def: Vec<i16>,
    rows_left: usize,
}

impl GroupBatches {
    pub fn open(path: &Path, group: usize, names: &[&str]) -> Result<GroupBatches> {
        GroupBatches::open_in(&ParquetFile::open(path)?, group, names)
    }

    /// Open a row group of a file already open.
    pub fn open_in(file: &ParquetFile, group: usize, names: &[&str]) -> Result<GroupBatches> {
        let (reader, path) = (&file.reader, file.path.as_path());
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        if group >= reader.num_row_groups() {
            return Err(Error::store(path, format!("no row group {group}")));
        }
        let rg = reader.get_row_group(group).at(path)?;
        let mut readers = Vec::new();
        let mut nullable = Vec::new();
        for name in names {
            let i = (0..schema.num_columns())
                .find(|&i| schema.column(i).name() == *name)
                .ok_or_else(|| Error::store(path, format!("no column '{name}'")))?;
            readers.push(rg.get_column_reader(i).at(path)?);
            nullable.push(schema.column(i).max_def_level() > 0);
        }
        let rows_left = rg.metadata().num_rows() as usize;
        Ok(GroupBatches {
            path: path.to_path_buf(),
            readers,
            nullable,
            def: Vec::new(),
            rows_left,
        })
    }

    /// Pass over the next `rows` rows without decoding what need not be (whole pages are
    /// skipped by their headers' counts). Returns the rows skipped (fewer at the end).
    pub fn skip(&mut self, rows: usize) -> Result<usize> {
        let want = rows.min(self.rows_left);
        if want == 0 {
            return Ok(0);
        }
        for reader in self.readers.iter_mut() {
            let got = match reader {
                ColumnReader::Int64ColumnReader(r) => r.skip_records(want),
                ColumnReader::DoubleColumnReader(r) => r.skip_records(want),
                ColumnReader::ByteArrayColumnReader(r) => r.skip_records(want),
                _ => return Err(Error::store(&self.path, "a column has an unexpected type")),
            }
            .at(&self.path)?;
            if got != want {
                return Err(Error::store(&self.path, "columns of a row group end at different rows"));
            }
        }
        self.rows_left -= want;
        Ok(want)
    }

    /// The next `max` rows (fewer at the end) into `out`, one buffer per column, each cleared
    /// first and typed as its column. Returns the number of rows; 0 at the end.
    pub fn next(&mut self, max: usize, out: &mut [Values]) -> Result<usize> {
        let want = max.min(self.rows_left);
        if want == 0 {
            return Ok(0);
        }
        for ((reader, &nullable), buf) in self.readers.iter_mut().zip(&self.nullable).zip(out.iter_mut()) {
            let def = nullable.then_some(&mut self.def);
            let got = match (reader, buf) {
                (ColumnReader::Int64ColumnReader(r), Values::Int64(v)) => read_batch(r, want, def, v, -1),
                (ColumnReader::DoubleColumnReader(r), Values::Float64(v)) => read_batch(r, want, def, v, f64::NAN),
                (ColumnReader::ByteArrayColumnReader(r), Values::Utf8(v)) => {
                    read_batch(r, want, def, v, ByteArray::new())
                }
                _ => return Err(Error::store(&self.path, "a column has an unexpected type")),
            };
            let got = got.at(&self.path)?;
            if got != want {
                return Err(Error::store(&self.path, "columns of a row group end at different rows"));
            }
        }
        self.rows_left -= want;
        Ok(want)
    }
}

/// `want` rows of one column into `out` (cleared), nulls filled with `missing`.
fn read_batch<T: parquet::data_type::DataType>(
    r: &mut parquet::column::reader::ColumnReaderImpl<T>,
    want: usize,
    def: Option<&mut Vec<i16>>,
    out: &mut Vec<T::T>,
    missing: T::T,
) -> parquet::errors::Result<usize> {
    out.clear();
    let Some(def) = def else {
        let mut got = 0;
        while got < want {
            let (recs, _, _) = r.read_records(want - got, None, None, out)?;
            if recs == 0 {
                break;
            }
            got += recs;
        }
        return Ok(got);
    };
    def.clear();
    let mut present: Vec<T::T> = Vec::new();
    let mut got = 0;
    while got < want {
        let (recs, _, _) = r.read_records(want - got, Some(def), None, &mut present)?;
        if recs == 0 {
            break;
        }
        got += recs;
    }
    let mut it = present.into_iter();
    out.extend(def.iter().map(|&d| {
        if d > 0 {
            it.next().unwrap_or_else(|| missing.clone())
        } else {
            missing.clone()
        }
    }));
    Ok(got)
}

/// Read the named columns of a Parquet file whole. Nullable columns come back with their
/// validity; row groups are concatenated.
pub fn read_columns(path: &Path, names: &[&str]) -> Result<Vec<Column>> {
    read_columns_in(&ParquetFile::open(path)?, names)
}

/// `read_columns` of a file already open.
pub fn read_columns_in(file: &ParquetFile, names: &[&str]) -> Result<Vec<Column>> {
    let (reader, path) = (&file.reader, file.path.as_path());
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let indices: Vec<usize> = names
        .iter()
        .map(|n| {
            (0..schema.num_columns())
                .find(|&i| schema.column(i).name() == *n)
                .ok_or_else(|| Error::store(path, format!("no column '{n}'")))
        })
        .collect::<Result<_>>()?;
    let mut out: Vec<Column> = indices
        .iter()
        .map(|&i| {
            let nullable = schema.column(i).max_def_level() > 0;
            let values = match schema.column(i).physical_type() {
                parquet::basic::Type::INT64 => Values::Int64(Vec::new()),
                parquet::basic::Type::DOUBLE => Values::Float64(Vec::new()),
                _ => Values::Utf8(Vec::new()),
            };
            Column {
                values,
                valid: nullable.then(Vec::new),
            }
        })
        .collect();
    for g in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(g).at(path)?;
        let rows = rg.metadata().num_rows() as usize;
        for (k, &i) in indices.iter().enumerate() {
            let mut def: Vec<i16> = Vec::new();
            let col = &mut out[k];
            let want_def = col.valid.is_some();
            macro_rules! read_all {
                ($reader:expr, $buf:expr) => {{
                    let mut r = $reader;
                    let mut got = 0;
                    while got < rows {
                        let (recs, _, _) = r
                            .read_records(
                                rows - got,
                                if want_def { Some(&mut def) } else { None },
                                None,
                                $buf,
                            )
                            .at(path)?;
                        if recs == 0 {
                            break;
                        }
                        got += recs;
                    }
                }};
            }
            match (rg.get_column_reader(i).at(path)?, &mut col.values) {
                (ColumnReader::Int64ColumnReader(r), Values::Int64(buf)) => read_all!(r, buf),
                (ColumnReader::DoubleColumnReader(r), Values::Float64(buf)) => read_all!(r, buf),
                (ColumnReader::ByteArrayColumnReader(r), Values::Utf8(buf)) => read_all!(r, buf),
                _ => {
                    return Err(Error::store(
                        path,
                        format!("column '{}' has an unexpected type", names[k]),
                    ))
                }
            }
            if let Some(valid) = &mut col.valid {
                valid.extend(def.iter().map(|&d| d > 0));
            }
        }
    }
    Ok(out)
}
