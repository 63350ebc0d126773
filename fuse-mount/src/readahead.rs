//! Read-ahead for one open file: the kernel asks for at most 1 MiB at a
//! time, one request after another, which over the network would pay a
//! round trip per MiB. Once reads are sequential, chunks ahead of the
//! reader are fetched in the background, the window growing with the
//! streak; a read elsewhere drops them and is served on its own.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use cairn_client::{Bucket, Opened};
use fuser::Errno;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::error::errno;

/// Bytes fetched per chunk.
pub const CHUNK: u64 = 4 << 20;
/// Most chunks in flight or held ahead of the reader.
pub const WINDOW: u64 = 8;

/// A chunk being fetched (or fetched).
pub type Chunk = Shared<BoxFuture<'static, Result<Bytes, Errno>>>;

/// A chunk's fetch, cancelled when the chunk is dropped.
struct Fetch(Chunk, tokio::task::AbortHandle);

impl Drop for Fetch {
    fn drop(&mut self) {
        self.1.abort();
    }
}

/// The read-ahead state of one open file.
#[derive(Default)]
pub struct ReadAhead {
    /// Where the last read ended.
    next: u64,
    /// Sequential reads in a row.
    streak: u64,
    /// A read came before (the first is served on its own: it may be the
    /// only one).
    started: bool,
    chunks: BTreeMap<u64, Fetch>,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead").field("next", &self.next).field("streak", &self.streak).finish()
    }
}

/// Which chunks to hold after a read of `range` with `streak` sequential
/// reads before it (the window grows with the streak).
pub fn wanted(range: &Range<u64>, streak: u64, size: u64) -> Range<u64> {
    let first = range.start / CHUNK;
    let last_needed = (range.end.max(range.start + 1) - 1) / CHUNK;
    let chunks = size.div_ceil(CHUNK);
    let ahead = streak.min(WINDOW);
    first..(last_needed + 1 + ahead).min(chunks).max(last_needed + 1)
}

impl ReadAhead {
    /// Notes a read of `range` (inside `object`) and starts the chunks a
    /// sequential reader will want; returns the chunks that hold `range`,
    /// or None for a read elsewhere (served on its own). The kernel sends
    /// a sequential reader's requests several at a time, so a read within
    /// a chunk of the last one still counts as sequential.
    pub fn start(&mut self, bucket: &Bucket, object: &Arc<Opened>, range: &Range<u64>) -> Option<Vec<Chunk>> {
        let size = object.info.size;
        let near = self.started && range.start <= self.next + CHUNK && range.start + CHUNK >= self.next;
        self.started = true;
        if near {
            self.streak += 1;
            self.next = self.next.max(range.end);
        } else {
            self.streak = 0;
            self.next = range.end;
            self.chunks.clear();
            return None;
        }
        let want = wanted(range, self.streak, size);
        // Keep one chunk behind: requests arrive slightly out of order.
        self.chunks.retain(|i, _| *i + 1 >= want.start && *i < want.end);
        for i in want.clone() {
            self.chunks.entry(i).or_insert_with(|| {
                let (bucket, object) = (bucket.clone(), Arc::clone(object));
                let span = i * CHUNK..((i + 1) * CHUNK).min(size);
                let fetch = async move {
                    let mut out = Vec::with_capacity((span.end - span.start) as usize);
                    bucket.read(&object, span, &mut out).await.map_err(|e| errno(&e))?;
                    Ok(Bytes::from(out))
                };
                let shared = fetch.boxed().shared();
                // Driven in the background, awaited by whoever reads it.
                let task = tokio::spawn(shared.clone());
                Fetch(shared, task.abort_handle())
            });
        }
        let first = range.start / CHUNK;
        let last = (range.end.max(range.start + 1) - 1) / CHUNK;
        (first..=last).map(|i| self.chunks.get(&i).map(|f| f.0.clone())).collect()
    }
}

/// Copies `range` out of `chunks` (the ones [`ReadAhead::start`] gave).
pub async fn assemble(chunks: Vec<Chunk>, range: Range<u64>) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut at = range.start;
    for c in chunks {
        let i = at / CHUNK;
        let chunk = c.await?;
        let from = (at - i * CHUNK) as usize;
        let to = ((range.end - i * CHUNK) as usize).min(chunk.len());
        if from >= to {
            return Err(Errno::EIO);
        }
        out.extend_from_slice(&chunk[from..to]);
        at = i * CHUNK + to as u64;
    }
    if at != range.end {
        return Err(Errno::EIO);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_with_the_streak_and_stops_at_the_end() {
        let size = 100 * CHUNK;
        assert_eq!(wanted(&(0..4096), 1, size), 0..2);
        assert_eq!(wanted(&(0..4096), 3, size), 0..4);
        assert_eq!(wanted(&(CHUNK..CHUNK + 1), 50, size), 1..2 + WINDOW);
        // A read across two chunks needs both.
        assert_eq!(wanted(&(CHUNK - 1..CHUNK + 1), 1, size), 0..3);
        // Never past the last chunk.
        assert_eq!(wanted(&(99 * CHUNK..size), 5, size), 99..100);
        assert_eq!(wanted(&(0..10), 5, 10), 0..1);
    }
}
