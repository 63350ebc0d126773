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

type Chunk = Shared<BoxFuture<'static, Result<Bytes, Errno>>>;

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
    /// Reads `range` (inside the object) of `object`.
    pub async fn read(&mut self, bucket: &Bucket, object: &Arc<Opened>, range: Range<u64>) -> Result<Vec<u8>, Errno> {
        let size = object.info.size;
        if range.start == self.next {
            self.streak += 1;
        } else {
            self.streak = 0;
            self.chunks.clear();
        }
        self.next = range.end;
        if self.streak == 0 {
            let mut out = Vec::with_capacity((range.end - range.start) as usize);
            bucket.read(object, range, &mut out).await.map_err(|e| errno(&e))?;
            return Ok(out);
        }
        let want = wanted(&range, self.streak, size);
        self.chunks.retain(|i, _| want.contains(i));
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
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut at = range.start;
        while at < range.end {
            let i = at / CHUNK;
            let chunk = self.chunks.get(&i).map(|f| f.0.clone()).ok_or(Errno::EIO)?.await?;
            let from = (at - i * CHUNK) as usize;
            let to = ((range.end - i * CHUNK) as usize).min(chunk.len());
            if from >= to {
                return Err(Errno::EIO);
            }
            out.extend_from_slice(&chunk[from..to]);
            at = i * CHUNK + to as u64;
        }
        Ok(out)
    }
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
