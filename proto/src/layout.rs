//! Where every byte of an object goes: segments, AEAD blocks, shards.
//!
//! An object of `size` bytes is cut into segments of `segment_size` bytes
//! (the last may be shorter; an empty object has none). A segment's
//! plaintext is cut into blocks of `block_size` bytes, each sealed into
//! `block_size + TAG_LEN` bytes of ciphertext, laid end to end. The segment
//! ciphertext, padded (with a keyed stream, by the encoder), is split into `k` equal contiguous **data
//! shards** of `shard_len` bytes (a multiple of [`SHARD_ALIGN`]); Reed-Solomon
//! adds `n - k` **parity shards** of the same length. Byte `j` of a parity
//! shard depends only on the bytes of the data shards in the same
//! [`SHARD_ALIGN`]-byte column, so any aligned byte range of the shards
//! decodes on its own.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Plaintext bytes per AEAD block: small enough that a range read decrypts
/// little it does not need, large enough that the 16-byte tag costs 0.02 %.
pub const DEFAULT_BLOCK_SIZE: u32 = 64 * 1024;
/// Poly1305 tag appended to every block.
pub const TAG_LEN: u32 = 16;
/// Default segment size: large enough to amortise a DHT lookup and n
/// connections, small enough that a few segments in flight fit in memory.
pub const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// Largest segment we accept in a manifest; bounds memory per segment.
pub const MAX_SEGMENT_SIZE: u32 = 256 * 1024 * 1024;
/// Shard lengths are a multiple of this, the column width of the
/// Reed-Solomon implementation (`reed-solomon-simd` works in 64-byte chunks).
pub const SHARD_ALIGN: u32 = 64;
/// Most shards per segment (n). Wide codes like Storj's 29/80 fit easily.
pub const MAX_SHARDS: u16 = 256;

/// Erasure and segmenting parameters of one object; stored in its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Plaintext bytes per segment (all but the last).
    pub segment_size: u32,
    /// Plaintext bytes per AEAD block.
    pub block_size: u32,
    /// Data shards per segment: any `k` shards rebuild it.
    pub k: u16,
    /// Total shards per segment (`n - k` parity).
    pub n: u16,
}

impl Default for Layout {
    fn default() -> Self {
        Self { segment_size: DEFAULT_SEGMENT_SIZE, block_size: DEFAULT_BLOCK_SIZE, k: 4, n: 6 }
    }
}

impl Layout {
    /// A layout with the default segment and block sizes and this code.
    pub fn with_code(k: u16, n: u16) -> Result<Self, Error> {
        let l = Self { k, n, ..Self::default() };
        l.validate()?;
        Ok(l)
    }

    /// Checks that the parameters make sense; every decoded manifest is checked.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::Inconsistent { what: "layout", reason });
        if self.k == 0 || self.n <= self.k || self.n > MAX_SHARDS {
            return bad(format!("k={} n={}: need 1 <= k < n <= {MAX_SHARDS}", self.k, self.n));
        }
        if self.block_size < 1024 || self.block_size > 1024 * 1024 || !self.block_size.is_multiple_of(SHARD_ALIGN) {
            return bad(format!("block size {} not a multiple of 64 in 1 KiB..=1 MiB", self.block_size));
        }
        if self.segment_size == 0
            || self.segment_size > MAX_SEGMENT_SIZE
            || !self.segment_size.is_multiple_of(self.block_size)
        {
            return bad(format!(
                "segment size {} not a multiple of the block size up to {MAX_SEGMENT_SIZE}",
                self.segment_size
            ));
        }
        Ok(())
    }

    /// Parity shards per segment.
    pub fn parity(&self) -> u16 {
        self.n - self.k
    }

    /// Number of segments of an object of `size` bytes.
    pub fn segment_count(&self, size: u64) -> u64 {
        size.div_ceil(u64::from(self.segment_size))
    }

    /// Plaintext length of segment `index` of an object of `size` bytes.
    pub fn segment_len(&self, size: u64, index: u64) -> u32 {
        let start = index.saturating_mul(u64::from(self.segment_size));
        let left = size.saturating_sub(start);
        left.min(u64::from(self.segment_size)) as u32
    }

    /// The layout of one segment holding `plain_len` plaintext bytes.
    pub fn segment(&self, plain_len: u32) -> SegmentLayout {
        SegmentLayout { plain_len, block_size: self.block_size, k: self.k, n: self.n }
    }
}

/// The byte geometry of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentLayout {
    /// Plaintext bytes in this segment.
    pub plain_len: u32,
    /// Plaintext bytes per block.
    pub block_size: u32,
    /// Data shards.
    pub k: u16,
    /// Total shards.
    pub n: u16,
}

impl SegmentLayout {
    /// Number of AEAD blocks (the last may be short).
    pub fn block_count(&self) -> u32 {
        self.plain_len.div_ceil(self.block_size)
    }

    /// Ciphertext block stride: a full block and its tag.
    pub fn cipher_block_size(&self) -> u32 {
        self.block_size + TAG_LEN
    }

    /// Bytes of ciphertext (blocks and tags, no padding).
    pub fn cipher_len(&self) -> u64 {
        u64::from(self.plain_len) + u64::from(self.block_count()) * u64::from(TAG_LEN)
    }

    /// Length of every shard, data and parity.
    pub fn shard_len(&self) -> u32 {
        let per = self.cipher_len().div_ceil(u64::from(self.k));
        per.div_ceil(u64::from(SHARD_ALIGN)) as u32 * SHARD_ALIGN
    }

    /// Bytes of the padded ciphertext buffer: `k * shard_len`.
    pub fn padded_len(&self) -> usize {
        self.shard_len() as usize * usize::from(self.k)
    }

    /// Plaintext byte range of block `b`, relative to the segment.
    pub fn block_plain_range(&self, b: u32) -> Range<u32> {
        let start = b.saturating_mul(self.block_size).min(self.plain_len);
        let end = start.saturating_add(self.block_size).min(self.plain_len);
        start..end
    }

    /// Ciphertext byte range of block `b` (its bytes then its tag).
    pub fn block_cipher_range(&self, b: u32) -> Range<u64> {
        let p = self.block_plain_range(b);
        let start = u64::from(b) * u64::from(self.cipher_block_size());
        start..start + u64::from(p.end - p.start) + u64::from(TAG_LEN)
    }

    /// Blocks that hold any byte of the plaintext range.
    pub fn blocks_covering(&self, plain: Range<u32>) -> Range<u32> {
        if plain.start >= plain.end {
            return 0..0;
        }
        plain.start / self.block_size..plain.end.div_ceil(self.block_size)
    }

    /// Pieces of data shards that hold the ciphertext range:
    /// `(shard index, byte range within the shard)`, in order.
    pub fn data_pieces(&self, cipher: Range<u64>) -> Vec<(u16, Range<u32>)> {
        let s = u64::from(self.shard_len());
        let mut out = Vec::new();
        let mut at = cipher.start;
        while at < cipher.end && s > 0 {
            let shard = at / s;
            let shard_end = (shard + 1) * s;
            let end = cipher.end.min(shard_end);
            out.push((shard as u16, (at - shard * s) as u32..(end - shard * s) as u32));
            at = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_of_a_full_default_segment() {
        let l = Layout::default().segment(DEFAULT_SEGMENT_SIZE);
        assert_eq!(l.block_count(), 256);
        assert_eq!(l.cipher_len(), 16 * 1024 * 1024 + 256 * 16);
        assert_eq!(l.shard_len() % SHARD_ALIGN, 0);
        assert!(l.padded_len() as u64 >= l.cipher_len());
        assert!((l.padded_len() as u64) < l.cipher_len() + 4 * 64);
    }

    #[test]
    fn last_block_is_short() {
        let l = Layout::default().segment(DEFAULT_BLOCK_SIZE + 1);
        assert_eq!(l.block_count(), 2);
        assert_eq!(l.block_plain_range(1), DEFAULT_BLOCK_SIZE..DEFAULT_BLOCK_SIZE + 1);
        let c = l.block_cipher_range(1);
        assert_eq!(c.end - c.start, 17);
        assert_eq!(c.end, l.cipher_len());
    }

    #[test]
    fn pieces_cover_the_range_exactly() {
        let l = Layout::default().segment(1_000_000);
        let s = u64::from(l.shard_len());
        let pieces = l.data_pieces(s - 10..s + 10);
        assert_eq!(pieces, vec![(0, l.shard_len() - 10..l.shard_len()), (1, 0..10)]);
        assert!(l.data_pieces(5..5).is_empty());
    }

    #[test]
    fn invalid_layouts_are_refused() {
        assert!(Layout::with_code(4, 4).is_err());
        assert!(Layout::with_code(0, 2).is_err());
        assert!(Layout::with_code(10, 300).is_err());
        assert!(Layout::with_code(29, 80).is_ok());
        let odd = Layout { block_size: 1000, ..Layout::default() };
        assert!(odd.validate().is_err());
    }

    #[test]
    fn segment_lengths_add_up() {
        let l = Layout::default();
        let size = 3 * u64::from(DEFAULT_SEGMENT_SIZE) + 17;
        assert_eq!(l.segment_count(size), 4);
        let total: u64 = (0..4).map(|i| u64::from(l.segment_len(size, i))).sum();
        assert_eq!(total, size);
        assert_eq!(l.segment_count(0), 0);
    }
}
