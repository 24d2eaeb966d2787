//! Reading a run's files and fingerprinting their bytes.
//!
//! Text logs, which make up nearly all the bytes of a large ingest, are streamed a block at a
//! time through one buffer that each worker reuses: every block is read, hashed and parsed
//! while it sits in the core's cache, and no page of the log is mapped or faulted in. Other
//! formats are read whole (mapped when large). Both ways give a file the same digest.
use std::fs::File;
use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use crate::error::{Error, Result};

/// Bytes read, hashed and parsed at a time: well inside a core's L2 cache. The fingerprint
/// hashes blocks at these file offsets, so changing it changes every fingerprint.
pub const BLOCK: usize = 256 << 10;

/// The fingerprint of a run's source bytes: xxh3 over each file's block digests and length.
/// (One-shot digests of blocks, fed to a streaming hasher, are faster than streaming every byte.)
pub struct Fingerprint(Xxh3);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(Xxh3::new())
    }
}

impl Fingerprint {
    /// Add one file read whole.
    pub fn add_file(&mut self, data: &[u8]) {
        data.chunks(BLOCK).for_each(|b| self.add_block(b));
        self.end_file(data.len() as u64);
    }
    fn add_block(&mut self, block: &[u8]) {
        self.0.update(&xxh3_128(block).to_le_bytes());
    }
    fn end_file(&mut self, len: u64) {
        self.0.update(&len.to_le_bytes());
    }
    pub fn finish(&self) -> String {
        format!("xxh3:{:016x}", self.0.digest())
    }
}

/// The bytes of a file read whole: mapped when it is large (no copy out of the page cache,
/// no zeroed buffer to fault in), read when small.
pub enum FileBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Read(v) => v,
        }
    }
}

pub fn read_file(path: &Path) -> Result<FileBytes> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len >= 1 << 20 {
        // SAFETY: the map is read-only and private to this function's caller; a log that is
        // appended to meanwhile only grows past the mapped length. A file truncated under us
        // could fault (SIGBUS), as with any mmap reader; logs are not truncated in place.
        if let Ok(m) = unsafe { memmap2::Mmap::map(&file) } {
            return Ok(FileBytes::Mapped(m));
        }
    }
    let mut v = Vec::with_capacity(len as usize);
    (&file).read_to_end(&mut v).map_err(|e| Error::io(path, e))?;
    Ok(FileBytes::Read(v))
}

fn is_binary(head: &[u8]) -> bool {
    memchr::memchr(0, &head[..head.len().min(8192)]).is_some()
}

fn has_text(data: &[u8]) -> bool {
    data.iter().any(|b| !b.is_ascii_whitespace())
}

fn binary_file(path: &Path) -> Error {
    Error::parse(path.display().to_string(), "binary file (NUL bytes), not a text log")
}

fn empty_file(path: &Path) -> Error {
    Error::parse(path.display().to_string(), "empty file")
}

/// Why a file read whole cannot be a text log at all: empty, or binary.
pub fn check_text(path: &Path, data: &[u8]) -> Result<()> {
    if !has_text(data) {
        return Err(empty_file(path));
    }
    if is_binary(data) {
        return Err(binary_file(path));
    }
    Ok(())
}

/// Stream a text log through `buf` (reused from file to file): `lines(chunk, at_eof)` is
/// called with whole lines, in order; only the chunk that ends the file (`at_eof`) may end
/// in an unterminated line. The file's blocks go into `fp` as they are read. Fails, as
/// `check_text` does, on an empty or binary file. Returns the bytes read.
pub fn stream_lines(
    path: &Path,
    buf: &mut Vec<u8>,
    fp: &mut Fingerprint,
    mut lines: impl FnMut(&[u8], bool),
) -> Result<u64> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut total = 0u64;
    let mut seen_text = false;
    // buf[..kept] holds the unterminated tail of the previous block.
    let mut kept = 0;
    loop {
        if buf.len() < kept + BLOCK {
            buf.resize(kept + BLOCK, 0);
        }
        let n = read_block(&mut file, &mut buf[kept..kept + BLOCK]).map_err(|e| Error::io(path, e))?;
        let block = &buf[kept..kept + n];
        if total == 0 && is_binary(block) {
            return Err(binary_file(path));
        }
        seen_text = seen_text || has_text(block);
        if n > 0 {
            fp.add_block(block);
        }
        total += n as u64;
        let end = kept + n;
        if n < BLOCK {
            if end > 0 {
                lines(&buf[..end], true);
            }
            break;
        }
        match memchr::memrchr(b'\n', block) {
            Some(i) => {
                let cut = kept + i + 1;
                lines(&buf[..cut], false);
                buf.copy_within(cut..end, 0);
                kept = end - cut;
            }
            None => kept = end, // a line longer than a block: keep reading it
        }
    }
    fp.end_file(total);
    if !seen_text {
        return Err(empty_file(path));
    }
    Ok(total)
}

/// Fill `buf` from `file`: fewer bytes only at the end of the file.
fn read_block(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(data: &[u8]) -> (Vec<(Vec<u8>, bool)>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.txt");
        std::fs::write(&path, data).unwrap();
        let mut fp = Fingerprint::default();
        let mut chunks = Vec::new();
        let mut buf = Vec::new();
        let n = stream_lines(&path, &mut buf, &mut fp, |c, eof| chunks.push((c.to_vec(), eof))).unwrap();
        assert_eq!(n, data.len() as u64);
        (chunks, fp.finish())
    }

    #[test]
    fn streamed_chunks_are_whole_lines_and_the_digest_matches_a_whole_read() {
        for len in [10, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17] {
            for tail in ["", "unterminated"] {
                // lines of varying length, one longer than a block
                let mut data = Vec::new();
                let mut i = 0;
                while data.len() < len {
                    let width = if i == 7 { BLOCK + 100 } else { 1 + (i * 37) % 300 };
                    data.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, width));
                    data.push(b'\n');
                    i += 1;
                }
                data.truncate(len);
                data.extend_from_slice(tail.as_bytes());
                let (chunks, digest) = streamed(&data);
                let joined: Vec<u8> = chunks.iter().flat_map(|(c, _)| c.clone()).collect();
                assert_eq!(joined, data, "len {len}");
                let (last, rest) = chunks.split_last().unwrap();
                assert!(last.1 && rest.iter().all(|(c, eof)| !eof && c.ends_with(b"\n")));
                let mut whole = Fingerprint::default();
                whole.add_file(&data);
                assert_eq!(whole.finish(), digest);
            }
        }
    }

    #[test]
    fn empty_and_binary_files_fail() {
        let dir = tempfile::tempdir().unwrap();
        for (name, data, why) in [
            ("e", &b" \n\n"[..], "empty file"),
            ("b", &b"iter 1 \0\0 loss"[..], "binary"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            let err = stream_lines(&path, &mut Vec::new(), &mut Fingerprint::default(), |_, _| {}).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            assert!(check_text(&path, data).unwrap_err().to_string().contains(why));
        }
    }
}
