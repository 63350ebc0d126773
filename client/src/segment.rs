//! One segment: plaintext → sealed blocks → `n` shards and their ids, and back.
//!
//! Encoding is one fused pass over the segment in column slices of
//! [`COLUMN`] bytes: for each slice, seal the AEAD blocks it touches, run
//! Reed-Solomon over the `k` data columns, and feed all `n` columns to their
//! BLAKE3 hashers. A slice of all shards (6 × 64 KiB for 4-of-6) stays in
//! L2 cache, where multi-MiB whole-shard passes would not.

use std::ops::Range;

use bytes::Bytes;
use cairn_crypto::{BlockPosition, ObjectCipher, TAG_LEN};
use cairn_proto::ShardId;
use cairn_proto::layout::{SHARD_ALIGN, SegmentLayout};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::error::Error;
use crate::pool;

/// Column slice width for fused encoding and decoding of narrow codes, a
/// multiple of [`SHARD_ALIGN`]: 6 × 64 KiB plus the Reed-Solomon work
/// buffer stay in a 2-4 MiB L2.
pub const COLUMN: usize = 64 * 1024;
/// Column width for codes of more than 16 shards: 30 × 16 KiB keeps the
/// same footprint. Measured 8/16/32/64 KiB for 10-of-30: within noise, 16
/// KiB slightly ahead (docs/BENCHMARKS.md).
pub const WIDE_COLUMN: usize = 16 * 1024;

/// Column width for rebuilding lost data shards. Decoding is not fused with
/// other stages and the decoder's setup per call (erasure locator) is
/// costly for wide codes, so it works in wider slices.
pub const DECODE_COLUMN: usize = 256 * 1024;

/// Column width for a code with `n` shards.
pub fn column_width(n: u16) -> usize {
    if n > 16 { WIDE_COLUMN } else { COLUMN }
}

/// Where a segment sits in its object; needed for block positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentPos {
    /// Index within the object.
    pub index: u64,
    /// Whether it is the last segment.
    pub last: bool,
}

/// The `n` shards of one segment and their ids.
#[derive(Clone, Debug)]
pub struct EncodedSegment {
    /// Position in the object.
    pub pos: SegmentPos,
    /// Geometry.
    pub layout: SegmentLayout,
    /// Data shards then parity shards, each `layout.shard_len()` bytes.
    pub shards: Vec<Bytes>,
    /// BLAKE3 of each shard.
    pub ids: Vec<ShardId>,
}

/// A zeroed buffer of `layout.padded_len()` bytes into which plaintext is
/// placed block by block, leaving room for each block's tag.
pub fn new_buffer(layout: &SegmentLayout) -> Vec<u8> {
    pool::global().take_zeroed(layout.padded_len())
}

/// Where block `b`'s plaintext goes in the segment buffer.
pub fn plaintext_slot(layout: &SegmentLayout, b: u32) -> Range<usize> {
    let c = layout.block_cipher_range(b);
    c.start as usize..c.end as usize - TAG_LEN
}

/// Copies contiguous plaintext into a fresh segment buffer.
pub fn place_plaintext(layout: &SegmentLayout, plain: &[u8]) -> Vec<u8> {
    let mut buf = new_buffer(layout);
    for b in 0..layout.block_count() {
        let p = layout.block_plain_range(b);
        let slot = plaintext_slot(layout, b);
        buf[slot].copy_from_slice(&plain[p.start as usize..p.end as usize]);
    }
    buf
}

fn position(layout: &SegmentLayout, pos: SegmentPos, b: u32) -> BlockPosition {
    BlockPosition {
        segment: pos.index,
        block: b,
        last_in_segment: b + 1 == layout.block_count(),
        last_segment: pos.last,
    }
}

/// Seals, in place, every not-yet-sealed block overlapping `range` of the
/// segment buffer.
fn seal_range(
    cipher: &ObjectCipher,
    layout: &SegmentLayout,
    pos: SegmentPos,
    buf: &mut [u8],
    sealed: &mut [bool],
    range: Range<u64>,
) {
    let stride = u64::from(layout.cipher_block_size());
    let count = layout.block_count();
    if count == 0 || range.start >= layout.cipher_len() {
        return;
    }
    let first = (range.start / stride) as u32;
    let last = (((range.end.max(1) - 1) / stride) as u32).min(count - 1);
    for b in first..=last {
        let Some(done) = sealed.get_mut(b as usize) else { continue };
        if *done {
            continue;
        }
        let slot = plaintext_slot(layout, b);
        let tag = cipher.seal_block(position(layout, pos, b), &mut buf[slot.clone()]);
        buf[slot.end..slot.end + TAG_LEN].copy_from_slice(&tag);
        *done = true;
    }
}

/// Encodes one segment whose plaintext was placed in `buf` (see
/// [`place_plaintext`] and [`plaintext_slot`]).
pub fn encode(
    cipher: &ObjectCipher,
    layout: SegmentLayout,
    pos: SegmentPos,
    mut buf: Vec<u8>,
) -> Result<EncodedSegment, Error> {
    let k = usize::from(layout.k);
    let m = usize::from(layout.n - layout.k);
    let s = layout.shard_len() as usize;
    debug_assert_eq!(buf.len(), k * s);
    // The bytes past the ciphertext are not sealed: a keyed stream, not
    // zeros, so that no shard is all zeros or the same in two objects.
    let end = (layout.cipher_len() as usize).min(buf.len());
    cipher.fill(pos.index, &mut buf[end..]);
    // Every parity byte is overwritten below, so a recycled buffer is fine.
    let mut parity = pool::global().take(m * s);
    let mut hashers: Vec<blake3::Hasher> = (0..k + m).map(|_| blake3::Hasher::new()).collect();
    let mut sealed = vec![false; layout.block_count() as usize];
    let column = column_width(layout.n);
    let mut rs = ReedSolomonEncoder::new(k, m, column.min(s))?;
    let mut col = 0;
    while col < s {
        let w = column.min(s - col);
        for i in 0..k {
            let start = (i * s + col) as u64;
            seal_range(cipher, &layout, pos, &mut buf, &mut sealed, start..start + w as u64);
        }
        rs.reset(k, m, w)?;
        for i in 0..k {
            rs.add_original_shard(&buf[i * s + col..i * s + col + w])?;
        }
        let out = rs.encode()?;
        for (j, rec) in out.recovery_iter().enumerate() {
            parity[j * s + col..j * s + col + w].copy_from_slice(rec);
        }
        for (i, h) in hashers.iter_mut().enumerate() {
            let slice = if i < k {
                &buf[i * s + col..i * s + col + w]
            } else {
                &parity[(i - k) * s + col..(i - k) * s + col + w]
            };
            h.update(slice);
        }
        col += w;
    }
    let data = pool::shared(pool::global(), buf);
    let parity = pool::shared(pool::global(), parity);
    let shards: Vec<Bytes> = (0..k)
        .map(|i| data.slice(i * s..(i + 1) * s))
        .chain((0..m).map(|j| parity.slice(j * s..(j + 1) * s)))
        .collect();
    let ids = hashers.iter().map(|h| ShardId(*h.finalize().as_bytes())).collect();
    Ok(EncodedSegment { pos, layout, shards, ids })
}

/// The outcome of decoding a segment.
#[derive(Debug)]
pub struct DecodedSegment {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// Shards that were present but did not hash to their id.
    pub bad_shards: Vec<u16>,
}

/// Picks `k` shards, data shards first, verifying each against its id and
/// skipping (and reporting) those that do not match.
pub(crate) fn choose_verified(
    layout: &SegmentLayout,
    pos: SegmentPos,
    shards: &[Option<Bytes>],
    ids: &[ShardId],
) -> Result<(Vec<usize>, Vec<u16>), Error> {
    let k = usize::from(layout.k);
    let s = layout.shard_len() as usize;
    let mut chosen = Vec::with_capacity(k);
    let mut bad = Vec::new();
    for (i, shard) in shards.iter().enumerate().take(usize::from(layout.n)) {
        if chosen.len() == k {
            break;
        }
        let Some(bytes) = shard else { continue };
        let Some(id) = ids.get(i) else { continue };
        if bytes.len() != s || !id.matches(bytes) {
            bad.push(i as u16);
            continue;
        }
        chosen.push(i);
    }
    if chosen.len() < k {
        return Err(Error::NotEnoughShards { segment: pos.index, usable: chosen.len(), needed: k, bad });
    }
    Ok((chosen, bad))
}

/// Rebuilds the columns `cols` of the data shards missing from `chosen`,
/// from the chosen shards' same columns. `column(i)` gives shard `i`'s bytes
/// for `cols`. Returns the missing data shards' columns, by index.
pub(crate) fn rebuild_columns<'a>(
    layout: &SegmentLayout,
    chosen: &[usize],
    cols: Range<usize>,
    column: impl Fn(usize) -> &'a [u8],
) -> Result<Vec<(usize, Vec<u8>)>, Error> {
    let k = usize::from(layout.k);
    let m = usize::from(layout.n - layout.k);
    let missing: Vec<usize> = (0..k).filter(|i| !chosen.contains(i)).collect();
    let mut out: Vec<(usize, Vec<u8>)> = missing.iter().map(|&i| (i, pool::global().take(cols.len()))).collect();
    if missing.is_empty() {
        return Ok(out);
    }
    let width = DECODE_COLUMN;
    let mut rs = ReedSolomonDecoder::new(k, m, width.min(cols.len().max(2)))?;
    let mut col = cols.start;
    while col < cols.end {
        let w = width.min(cols.end - col);
        rs.reset(k, m, w)?;
        for &i in chosen {
            let c = &column(i)[col - cols.start..col - cols.start + w];
            if i < k {
                rs.add_original_shard(i, c)?;
            } else {
                rs.add_recovery_shard(i - k, c)?;
            }
        }
        let res = rs.decode()?;
        for (i, buf) in &mut out {
            let r = res.restored_original(*i).ok_or(reed_solomon_simd::Error::TooFewOriginalShards {
                original_count: k,
                original_received_count: chosen.len(),
            })?;
            let at = col - cols.start;
            buf[at..at + w].copy_from_slice(r);
        }
        col += w;
    }
    Ok(out)
}

/// Decodes a segment from any `k` of its `n` shards (`None` = missing).
/// Each shard used is first verified against its id; a bad one is skipped
/// and reported, and the decode goes on with the others if it can.
pub fn decode(
    cipher: &ObjectCipher,
    layout: SegmentLayout,
    pos: SegmentPos,
    shards: &[Option<Bytes>],
    ids: &[ShardId],
) -> Result<DecodedSegment, Error> {
    let k = usize::from(layout.k);
    let s = layout.shard_len() as usize;
    let (chosen, bad_shards) = choose_verified(&layout, pos, shards, ids)?;
    let get = |i: usize| shards.get(i).and_then(|x| x.as_deref()).unwrap_or(&[]);
    let rebuilt = rebuild_columns(&layout, &chosen, 0..s, get)?;
    let data: Vec<&[u8]> = (0..k)
        .map(|i| match rebuilt.iter().find(|(j, _)| *j == i) {
            Some((_, v)) => v.as_slice(),
            None => get(i),
        })
        .collect();
    let plaintext = open_blocks(cipher, &layout, pos, 0..layout.block_count(), |shard, r| {
        data.get(usize::from(shard)).and_then(|d| d.get(r.start as usize..r.end as usize)).unwrap_or(&[])
    });
    for (_, buf) in rebuilt {
        pool::global().give(buf);
    }
    Ok(DecodedSegment { plaintext: plaintext?, bad_shards })
}

/// Decrypts `blocks`, reading their ciphertext through `piece(shard,
/// range)` (ranges within data shards). Returns the blocks' plaintext,
/// contiguous.
pub(crate) fn open_blocks<'a>(
    cipher: &ObjectCipher,
    layout: &SegmentLayout,
    pos: SegmentPos,
    blocks: Range<u32>,
    piece: impl Fn(u16, Range<u32>) -> &'a [u8],
) -> Result<Vec<u8>, Error> {
    let first = layout.block_plain_range(blocks.start).start;
    let last = layout.block_plain_range(blocks.end.saturating_sub(1)).end;
    // Every byte is overwritten block by block below.
    let mut out = pool::global().take(last.saturating_sub(first) as usize);
    for b in blocks {
        let c = layout.block_cipher_range(b);
        let start = (layout.block_plain_range(b).start - first) as usize;
        let mut at = start;
        let mut tag = [0u8; TAG_LEN];
        let mut filled = 0usize;
        let body_len = (c.end - c.start) as usize - TAG_LEN;
        for (shard, r) in layout.data_pieces(c) {
            let bytes = piece(shard, r.clone());
            if bytes.len() != (r.end - r.start) as usize {
                return Err(Error::Decrypt { segment: pos.index });
            }
            let body_part = body_len.saturating_sub(filled).min(bytes.len());
            out[at..at + body_part].copy_from_slice(&bytes[..body_part]);
            at += body_part;
            let tag_part = &bytes[body_part..];
            let tag_at = (filled + body_part).saturating_sub(body_len);
            tag[tag_at..tag_at + tag_part.len()].copy_from_slice(tag_part);
            filled += bytes.len();
        }
        cipher
            .open_block(position(layout, pos, b), &mut out[start..at], &tag)
            .map_err(|_| Error::Decrypt { segment: pos.index })?;
    }
    Ok(out)
}

/// Shard lengths are aligned so that any aligned column range decodes on
/// its own; exposed for range reads.
pub(crate) fn align_columns(cols: Range<usize>, shard_len: usize) -> Range<usize> {
    let a = SHARD_ALIGN as usize;
    (cols.start / a * a)..(cols.end.div_ceil(a) * a).min(shard_len)
}
