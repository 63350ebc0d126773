//! Sizes hidden: what a node can tell of an object's size from the shards
//! it holds.
//!
//! Full segments all have the same shard length, so only an object's last
//! segment says anything about its size. Its plaintext is padded with
//! zeros to the next Padmé length ([`padme`]: at most 12 % more, and the
//! more the bytes, the fewer the lengths a node can tell apart) before it
//! is sealed: the padding is encrypted like the rest, and the entry's
//! extents cover only the object's own bytes, so reads never see it. The
//! bytes that fill a segment's last shard past the ciphertext are not
//! sealed; they come from a keyed stream ([`fill_tail`]), not zeros, so no
//! two segments share a shard and no shard is all zeros.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The Padmé length of `len` (Nikitin et al., "Reducing metadata leakage
/// from encrypted files and communication with PURBs", 2019): `len` with
/// its low bits rounded up, keeping `floor(log2(log2(len))) + 1` bits of
/// precision: at most 12 % more than `len` (less as `len` grows).
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = 63 - u64::from(len.leading_zeros()); // floor(log2 len)
    let s = 64 - u64::from(e.leading_zeros()); // floor(log2 e) + 1
    let low = e.saturating_sub(s);
    let mask = (1u64 << low) - 1;
    (len + mask) & !mask
}

/// The length a data version of `len` plaintext bytes is stored with: its
/// last segment padded to its Padmé length (at most `segment_size`).
pub fn padded_len(len: u64, segment_size: u32) -> u64 {
    let seg = u64::from(segment_size);
    let last = len % seg;
    if last == 0 {
        return len;
    }
    len - last + padme(last).min(seg)
}

/// A reader that yields `inner`'s bytes, then zeros up to
/// [`padded_len`] of what `inner` yielded.
#[derive(Debug)]
pub struct PadReader<R> {
    inner: Option<R>,
    segment_size: u32,
    read: u64,
    pad: u64,
    /// The bytes `inner` yielded, for whoever needs the unpadded length.
    counted: Arc<AtomicU64>,
}

impl<R: Read> PadReader<R> {
    /// Pads what `inner` yields for segments of `segment_size`.
    pub fn new(inner: R, segment_size: u32) -> Self {
        Self { inner: Some(inner), segment_size, read: 0, pad: 0, counted: Arc::default() }
    }

    /// Where the count of `inner`'s bytes is kept (final once the reader
    /// has ended).
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.counted)
    }
}

impl<R: Read> Read for PadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(inner) = &mut self.inner {
            let n = inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.read += n as u64;
                self.counted.store(self.read, Ordering::Relaxed);
                return Ok(n);
            }
            self.inner = None;
            self.pad = padded_len(self.read, self.segment_size) - self.read;
        }
        let n = (self.pad.min(buf.len() as u64)) as usize;
        buf[..n].fill(0);
        self.pad -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_rounds_up_by_at_most_12_percent_and_keeps_few_lengths() {
        assert_eq!([0, 1, 2, 3].map(padme), [0, 1, 2, 3]);
        assert_eq!(padme(9), 10);
        assert_eq!(padme(1000), 1024);
        assert_eq!(padme(1 << 20), 1 << 20);
        assert_eq!(padme((1 << 20) + 1), (1 << 20) + (1 << 15));
        let mut lengths = std::collections::BTreeSet::new();
        for len in 1..200_000u64 {
            let p = padme(len);
            assert!(p >= len && (p - len) as f64 <= len as f64 * 0.12, "{len} -> {p}");
            assert_eq!(padme(p), p, "a Padmé length is its own bucket");
            if len >= 100_000 {
                lengths.insert(p);
            }
        }
        // 100 000 lengths fall into a few dozen.
        assert!(lengths.len() < 40, "{}", lengths.len());
    }

    #[test]
    fn only_the_last_segment_is_padded() {
        let seg = 1 << 20;
        assert_eq!(padded_len(0, seg), 0);
        assert_eq!(padded_len(3 << 20, seg), 3 << 20);
        assert_eq!(padded_len((2 << 20) + 1000, seg), (2 << 20) + 1024);
        assert_eq!(padded_len(seg as u64 - 1, seg), seg as u64, "capped at the segment size");
    }

    #[test]
    fn the_reader_yields_the_bytes_then_zeros_and_counts_only_the_bytes() {
        for len in [0usize, 1, 1000, 5000, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let mut r = PadReader::new(&data[..], 64 * 1024);
            let counter = r.counter();
            let mut out = Vec::new();
            let mut buf = [0u8; 777];
            loop {
                let n = r.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out.len() as u64, padded_len(len as u64, 64 * 1024), "{len}");
            assert_eq!(&out[..len], &data[..]);
            assert!(out[len..].iter().all(|&b| b == 0));
            assert_eq!(counter.load(Ordering::Relaxed), len as u64);
        }
    }
}
