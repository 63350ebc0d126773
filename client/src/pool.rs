//! A small process-wide pool of segment-sized buffers.
//!
//! Fresh multi-MiB allocations are served by `mmap` and cost a page fault
//! per 4 KiB on first touch: measured here, half of the pipeline's CPU time
//! went to the kernel. Buffers come back to the pool when the last `Bytes`
//! that shares them is dropped (see [`shared`]), so a streaming upload
//! cycles through the same few buffers.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Most buffers kept idle. With the default parallelism (2 per core, 2-3
/// buffers per segment) this covers the segments in flight on small hosts.
const MAX_IDLE: usize = 16;
/// Most bytes kept idle, so a process serving many transfers does not keep
/// a buffer resident for each. (48 MiB was measured too: 50 MiB less
/// resident at rest, the same peak, 10-20 % slower large puts.)
const MAX_IDLE_BYTES: usize = 96 * 1024 * 1024;
/// Buffers larger than this are not kept.
const MAX_POOLED_LEN: usize = 80 * 1024 * 1024;

/// Idle buffers.
#[derive(Debug, Default)]
pub struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
}

static POOL: std::sync::LazyLock<Arc<BufferPool>> = std::sync::LazyLock::new(Arc::default);

/// The process-wide pool.
pub fn global() -> &'static Arc<BufferPool> {
    &POOL
}

impl BufferPool {
    /// A buffer of `len` bytes with unspecified contents: callers must
    /// overwrite every byte they use.
    pub fn take(&self, len: usize) -> Vec<u8> {
        match self.find(len) {
            Some(mut b) => {
                // Shrinking keeps old bytes, growing zero-fills: either way no fault.
                b.resize(len, 0);
                b
            }
            None => vec![0u8; len],
        }
    }

    /// A buffer with room for `len` bytes whose length is whatever a
    /// pooled buffer had (at most `len`; its bytes unspecified) or 0 for a
    /// fresh one: callers grow it as they fill it, so a fresh buffer only
    /// becomes resident as far as it is used (a small object in a 16 MiB
    /// segment slot touches only its own pages).
    pub fn take_growable(&self, len: usize) -> Vec<u8> {
        match self.find(len) {
            Some(mut b) => {
                b.truncate(len);
                b
            }
            None => Vec::with_capacity(len),
        }
    }

    /// The smallest idle buffer with room for `len` bytes (a segment's
    /// parity buffer is larger than its data buffer: the first fit handed
    /// parity buffers to data, and parity then allocated afresh while the
    /// data-sized ones sat idle).
    fn find(&self, len: usize) -> Option<Vec<u8>> {
        let mut idle = self.idle.lock().ok()?;
        let (i, _) = idle.iter().enumerate().filter(|(_, b)| b.capacity() >= len).min_by_key(|(_, b)| b.capacity())?;
        Some(idle.swap_remove(i))
    }

    /// A zero-filled buffer of `len` bytes.
    pub fn take_zeroed(&self, len: usize) -> Vec<u8> {
        let mut b = self.take(len);
        b.fill(0);
        b
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() > MAX_POOLED_LEN || buf.capacity() == 0 {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
            && idle.iter().map(Vec::capacity).sum::<usize>() + buf.capacity() <= MAX_IDLE_BYTES
        {
            idle.push(buf);
        }
    }
}

/// Owns a pooled buffer inside a `Bytes`; gives it back on drop.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Wraps `buf` in a `Bytes` whose buffer returns to `pool` when the last
/// slice of it is dropped.
pub fn shared(pool: &Arc<BufferPool>, buf: Vec<u8>) -> Bytes {
    Bytes::from_owner(Pooled { buf, pool: Arc::clone(pool) })
}
