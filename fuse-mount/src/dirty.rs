//! The local copy of a file being written: a sparse cache file that holds
//! every byte written since the last upload, which bytes those are, and
//! how the file was cut. Reads of a dirty file take written bytes from
//! here and the rest from the stored version; an upload sends only what
//! was written (or the whole file, when the cache holds all of it).

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cairn_client::{ObjectInfo, Posix};

use crate::ranges::Ranges;
use crate::stream::{STREAM_AFTER, Streaming, TailReader};

/// Changes not yet uploaded.
#[derive(Debug)]
pub struct Dirty {
    file: File,
    path: PathBuf,
    /// Bytes written here.
    pub written: Ranges,
    /// Bytes of the stored version still in the file (the smallest size it
    /// was cut to); bytes between this and `len` not written read as zeros.
    pub keep: u64,
    /// The file's size.
    pub len: u64,
    /// POSIX attributes to record with the upload.
    pub posix: Option<Posix>,
    /// Modification time to record (set by `utimens`), ms.
    pub mtime_ms: Option<u64>,
    /// The upload running while a new file is written ([`crate::stream`]).
    pub stream: Option<Streaming>,
    /// A stream failed: the file goes up the ordinary way.
    pub stream_failed: bool,
}

impl Dirty {
    /// A cache file at `path` for the file `name` (its path in the bucket,
    /// noted beside it for a later mount to find after a crash) whose
    /// stored version has `size` bytes (0 for a new file).
    pub fn create(path: PathBuf, name: &str, size: u64) -> std::io::Result<Self> {
        std::fs::write(note_of(&path), name)?;
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        file.set_len(size)?;
        Ok(Self {
            file,
            path,
            written: Ranges::default(),
            keep: size,
            len: size,
            posix: None,
            mtime_ms: None,
            stream: None,
            stream_failed: false,
        })
    }

    /// Where the cache file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `data` at `at`; returns how many bytes the cache holds more.
    pub fn write(&mut self, at: u64, data: &[u8]) -> std::io::Result<u64> {
        if at != self.len {
            // Not an append: a stream of the file so far no longer holds.
            self.stream = None;
        }
        self.file.write_all_at(data, at)?;
        let before = self.written.total();
        self.written.insert(at..at + data.len() as u64);
        self.len = self.len.max(at + data.len() as u64);
        if let Some(s) = &self.stream {
            s.grow(self.len);
        }
        Ok(self.written.total() - before)
    }

    /// Whether the file is new and was written from its start to its end
    /// in order (so a stream of it can go on).
    pub fn appended_only(&self) -> bool {
        self.keep == 0 && self.written.iter().count() == 1 && self.written.covers(0..self.len)
    }

    /// Starts a stream of this file if it is new, written in order and
    /// long enough; `start` starts the put on the reader it is given.
    pub fn maybe_stream(
        &mut self,
        start: impl FnOnce(TailReader) -> tokio::task::JoinHandle<Result<ObjectInfo, cairn_client::Error>>,
    ) -> std::io::Result<()> {
        if self.stream.is_none()
            && !self.stream_failed
            && self.mtime_ms.is_none()
            && self.len >= STREAM_AFTER
            && self.appended_only()
        {
            self.stream = Some(Streaming::start(self.file.try_clone()?, self.len, start));
        }
        Ok(())
    }

    /// Cuts or extends the file to `len`; returns how many bytes the cache
    /// holds fewer.
    pub fn truncate(&mut self, len: u64) -> std::io::Result<u64> {
        self.stream = None;
        self.file.set_len(len)?;
        let before = self.written.total();
        self.written.truncate(len);
        self.keep = self.keep.min(len);
        self.len = len;
        Ok(before - self.written.total())
    }

    /// Whether the cache holds the whole file (written, or zeros past `keep`).
    pub fn complete(&self) -> bool {
        self.written.covers(0..self.keep)
    }

    /// Pieces of `range` (clipped to the file), each to read from the
    /// cache (true) or from the stored version (false).
    pub fn plan(&self, range: Range<u64>) -> Vec<(Range<u64>, bool)> {
        let r = range.start.min(self.len)..range.end.min(self.len);
        let mut out = Vec::new();
        for (piece, local) in self.written.split(r) {
            if local || piece.end <= self.keep {
                out.push((piece, local));
            } else if piece.start >= self.keep {
                out.push((piece, true));
            } else {
                out.push((piece.start..self.keep, false));
                out.push((self.keep..piece.end, true));
            }
        }
        out
    }

    /// Reads `range` from the cache file into `out`.
    pub fn read_local(&self, range: Range<u64>, out: &mut Vec<u8>) -> std::io::Result<()> {
        let at = out.len();
        out.resize(at + (range.end - range.start) as usize, 0);
        self.file.read_exact_at(&mut out[at..], range.start)
    }

    /// A reader of `range` of the cache file (for an upload).
    pub fn reader(&self, range: Range<u64>) -> std::io::Result<CacheReader> {
        Ok(CacheReader { file: self.file.try_clone()?, at: range.start, end: range.end })
    }

    /// Removes the cache file.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(note_of(&self.path));
    }
}

/// The file beside a cache file that names the file it holds.
pub fn note_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".path");
    PathBuf::from(p)
}

/// Reads a range of a cache file.
#[derive(Debug)]
pub struct CacheReader {
    file: File,
    at: u64,
    end: u64,
}

impl Read for CacheReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min((self.end - self.at) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the cache file is shorter than its data",
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_separates_written_kept_and_zero_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = Dirty::create(dir.path().join("f"), "a/f", 100).expect("create");
        assert_eq!(std::fs::read_to_string(dir.path().join("f.path")).expect("note"), "a/f");
        assert!(!d.complete());
        d.write(10, &[1; 10]).expect("write");
        d.truncate(50).expect("cut");
        d.truncate(80).expect("extend");
        // 0..10 stored, 10..20 written, 20..50 stored, 50..80 zeros (local).
        assert_eq!(d.plan(0..200), vec![(0..10, false), (10..20, true), (20..50, false), (50..80, true)]);
        d.write(0, &[2; 50]).expect("write");
        assert!(d.complete());
        let mut out = Vec::new();
        d.read_local(45..55, &mut out).expect("read");
        assert_eq!(out, [2, 2, 2, 2, 2, 0, 0, 0, 0, 0]);
        let mut all = Vec::new();
        d.reader(0..80).expect("reader").read_to_end(&mut all).expect("read");
        assert_eq!(all.len(), 80);
        d.remove();
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}
