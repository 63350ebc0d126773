//! Uploading a new file while it is being written. A program that writes
//! a large new file from start to end would otherwise wait, at `close`,
//! for the whole upload after the whole write. Once such a file passes
//! [`STREAM_AFTER`] bytes, a put starts that reads the cache file as it
//! grows ([`TailReader`]); `close` ends the stream at the file's length
//! and waits for the commit. Any other change (a write elsewhere, a
//! truncate, a new mtime) aborts the stream: its reader fails, so the put
//! fails before its commit and deletes its shards, and the file goes up
//! the ordinary way. The cache file keeps every byte either way, so a
//! failed stream loses nothing.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use cairn_client::ObjectInfo;

/// A new file streams up once it is this long.
pub const STREAM_AFTER: u64 = 8 << 20;

#[derive(Debug, Default)]
struct State {
    /// Bytes the reader may read.
    len: u64,
    /// No more bytes will come: `len` is the end.
    done: bool,
    /// The file changed otherwise: fail the read.
    abort: bool,
}

/// What the writer and the reader of a stream share.
#[derive(Debug, Default)]
pub struct Tail {
    state: Mutex<State>,
    grown: Condvar,
}

impl Tail {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.grown.notify_all();
    }
}

/// Reads a cache file up to what has been written, waiting for more until
/// the stream is finished (or failing once it is aborted).
#[derive(Debug)]
pub struct TailReader {
    file: File,
    at: u64,
    tail: Arc<Tail>,
}

impl Read for TailReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let end = {
            let mut st = self.tail.state.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if st.abort {
                    return Err(std::io::Error::other("the file changed while it was streaming up"));
                }
                if self.at < st.len {
                    break st.len;
                }
                if st.done {
                    return Ok(0);
                }
                st = self.tail.grown.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let want = buf.len().min((end - self.at) as usize);
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// A put reading a growing file; aborted when dropped unfinished.
#[derive(Debug)]
pub struct Streaming {
    tail: Arc<Tail>,
    task: Option<tokio::task::JoinHandle<Result<ObjectInfo, cairn_client::Error>>>,
}

impl Streaming {
    /// A reader of `file` from its start, and the stream its put is
    /// started on with `start`.
    pub fn start(
        file: File,
        len: u64,
        start: impl FnOnce(TailReader) -> tokio::task::JoinHandle<Result<ObjectInfo, cairn_client::Error>>,
    ) -> Self {
        let tail = Arc::new(Tail::default());
        tail.update(|s| s.len = len);
        let task = start(TailReader { file, at: 0, tail: Arc::clone(&tail) });
        Self { tail, task: Some(task) }
    }

    /// The file is now `len` bytes long.
    pub fn grow(&self, len: u64) {
        self.tail.update(|s| s.len = s.len.max(len));
    }

    /// Ends the stream at `len` and waits for the put's commit.
    pub async fn finish(mut self, len: u64) -> Result<ObjectInfo, cairn_client::Error> {
        self.tail.update(|s| {
            s.len = len;
            s.done = true;
        });
        let task = self.task.take().ok_or(cairn_client::Error::Stopped)?;
        task.await.map_err(|_| cairn_client::Error::WorkerPanicked)?
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if self.task.is_some() {
            // The put's reader fails, so the put deletes what it stored.
            self.tail.update(|s| s.abort = true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_follows_the_writer_and_stops_at_the_end_or_on_abort() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, [7u8; 100]).expect("write");
        let tail = Arc::new(Tail::default());
        tail.update(|s| s.len = 40);
        let mut r = TailReader { file: File::open(&path).expect("open"), at: 0, tail: Arc::clone(&tail) };
        let t = Arc::clone(&tail);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            t.update(|s| s.len = 70);
            std::thread::sleep(std::time::Duration::from_millis(50));
            t.update(|s| s.done = true);
        });
        let mut all = Vec::new();
        r.read_to_end(&mut all).expect("read");
        writer.join().expect("writer");
        assert_eq!(all, vec![7u8; 70], "up to the length at the end, waiting for it");
        let tail = Arc::new(Tail::default());
        tail.update(|s| s.len = 10);
        let mut r = TailReader { file: File::open(&path).expect("open"), at: 0, tail: Arc::clone(&tail) };
        let mut buf = [0u8; 100];
        assert_eq!(r.read(&mut buf).expect("read"), 10);
        tail.update(|s| s.abort = true);
        assert!(r.read(&mut buf).is_err(), "an aborted stream fails its reader");
    }
}
