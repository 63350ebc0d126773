//! Range reads: decrypt only the blocks that cover the range, fetched from
//! only the data shards that hold them while the segment is healthy.
//!
//! If a data shard is missing, the same aligned columns are fetched from
//! any `k` shards and the missing columns rebuilt. If the fetched bytes do
//! not authenticate (a node served a bad range), the read falls back to
//! whole shards, each verified against its id, and reports the bad one.

use std::ops::Range;

use bytes::Bytes;
use cairn_crypto::ObjectCipher;
use cairn_proto::ShardId;
use cairn_proto::layout::{Layout, SegmentLayout};

use crate::error::Error;
use crate::segment::{self, SegmentPos, align_columns, open_blocks, rebuild_columns};

/// Where a range read gets shard bytes from (a node, a cache, memory).
pub trait ShardSource {
    /// Bytes `range` of shard `index` of the segment, or `None` if that
    /// shard cannot be had.
    fn read(&self, index: u16, range: Range<u32>) -> Option<Bytes>;
}

/// Whole shards held in memory (`None` = missing).
impl ShardSource for [Option<Bytes>] {
    fn read(&self, index: u16, range: Range<u32>) -> Option<Bytes> {
        let shard = self.get(usize::from(index))?.as_ref()?;
        (range.end as usize <= shard.len()).then(|| shard.slice(range.start as usize..range.end as usize))
    }
}

/// Fetched pieces of data shards: `(shard, range within it, bytes)`.
struct Pieces(Vec<(u16, Range<u32>, Bytes)>);

impl Pieces {
    fn get(&self, shard: u16, r: &Range<u32>) -> &[u8] {
        self.0
            .iter()
            .find(|(s, have, _)| *s == shard && have.start <= r.start && r.end <= have.end)
            .and_then(|(_, have, b)| b.get((r.start - have.start) as usize..(r.end - have.start) as usize))
            .unwrap_or(&[])
    }
}

/// Reads plaintext bytes `plain` (relative to the segment) of one segment.
pub fn read_segment_range(
    cipher: &ObjectCipher,
    layout: SegmentLayout,
    pos: SegmentPos,
    ids: &[ShardId],
    plain: Range<u32>,
    source: &(impl ShardSource + ?Sized),
) -> Result<Vec<u8>, Error> {
    let blocks = layout.blocks_covering(plain.clone());
    if blocks.is_empty() {
        return Ok(Vec::new());
    }
    let base = layout.block_plain_range(blocks.start).start;
    let want = (plain.start - base) as usize..(plain.end - base) as usize;
    let c = layout.block_cipher_range(blocks.start).start..layout.block_cipher_range(blocks.end - 1).end;
    let wanted = layout.data_pieces(c);

    // Healthy path: only the data shards that hold the blocks.
    let fetched: Option<Vec<_>> = wanted
        .iter()
        .map(|(s, r)| source.read(*s, r.clone()).filter(|b| b.len() == r.len()).map(|b| (*s, r.clone(), b)))
        .collect();
    if let Some(fetched) = fetched {
        let pieces = Pieces(fetched);
        if let Ok(p) = open_blocks(cipher, &layout, pos, blocks.clone(), |s, r| pieces.get(s, &r)) {
            return Ok(p[want].to_vec());
        }
    } else if let Ok(p) = degraded(cipher, &layout, pos, blocks.clone(), &wanted, source) {
        return Ok(p[want].to_vec());
    }

    // Last resort: whole shards, each verified against its id.
    let s = layout.shard_len();
    let whole: Vec<Option<Bytes>> = (0..layout.n).map(|i| source.read(i, 0..s)).collect();
    let decoded = segment::decode(cipher, layout, pos, &whole, ids)?;
    Ok(decoded.plaintext[plain.start as usize..plain.end as usize].to_vec())
}

/// The aligned columns of the shards (of `shard_len` bytes) that cover the
/// data pieces `wanted`: what every shard must give to rebuild them.
pub(crate) fn columns_of(wanted: &[(u16, Range<u32>)], shard_len: u32) -> Range<u32> {
    let lo = wanted.iter().map(|(_, r)| r.start as usize).min().unwrap_or(0);
    let hi = wanted.iter().map(|(_, r)| r.end as usize).max().unwrap_or(0);
    let cols = align_columns(lo..hi, shard_len as usize);
    cols.start as u32..cols.end as u32
}

/// Rebuilds the missing data columns of the range from any `k` shards.
fn degraded(
    cipher: &ObjectCipher,
    layout: &SegmentLayout,
    pos: SegmentPos,
    blocks: Range<u32>,
    wanted: &[(u16, Range<u32>)],
    source: &(impl ShardSource + ?Sized),
) -> Result<Vec<u8>, Error> {
    let k = usize::from(layout.k);
    let col_range = columns_of(wanted, layout.shard_len());
    let cols = col_range.start as usize..col_range.end as usize;
    let mut columns: Vec<Option<Bytes>> = vec![None; usize::from(layout.n)];
    let mut chosen = Vec::with_capacity(k);
    for i in 0..layout.n {
        if chosen.len() == k {
            break;
        }
        if let Some(b) = source.read(i, col_range.clone()).filter(|b| b.len() == cols.len()) {
            columns[usize::from(i)] = Some(b);
            chosen.push(usize::from(i));
        }
    }
    if chosen.len() < k {
        return Err(Error::NotEnoughShards { segment: pos.index, usable: chosen.len(), needed: k, bad: Vec::new() });
    }
    let get = |i: usize| columns.get(i).and_then(|c| c.as_deref()).unwrap_or(&[]);
    let rebuilt = rebuild_columns(layout, &chosen, cols.clone(), get)?;
    let mut pieces = Vec::new();
    for (shard, r) in wanted {
        let i = usize::from(*shard);
        let from = (r.start as usize - cols.start)..(r.end as usize - cols.start);
        let bytes = match rebuilt.iter().find(|(j, _)| *j == i) {
            Some((_, v)) => Bytes::copy_from_slice(v.get(from).unwrap_or(&[])),
            None => columns[i].as_ref().map(|b| b.slice(from)).unwrap_or_default(),
        };
        pieces.push((*shard, r.clone(), bytes));
    }
    let pieces = Pieces(pieces);
    open_blocks(cipher, layout, pos, blocks, |s, r| pieces.get(s, &r))
}

/// Reads plaintext bytes `range` of an object of `size` bytes. `segment_ids`
/// gives each segment's shard ids, `source(i)` a shard source for segment `i`.
pub fn read_object_range<S: ShardSource + ?Sized>(
    cipher: &ObjectCipher,
    layout: &Layout,
    size: u64,
    segment_ids: &[Vec<ShardId>],
    range: Range<u64>,
    source: impl Fn(u64) -> Box<S>,
) -> Result<Vec<u8>, Error> {
    if range.start > range.end || range.end > size {
        return Err(Error::BadRange { start: range.start, end: range.end, size });
    }
    let seg = u64::from(layout.segment_size);
    let count = layout.segment_count(size);
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut at = range.start;
    while at < range.end {
        let index = at / seg;
        let seg_start = index * seg;
        let seg_layout = layout.segment(layout.segment_len(size, index));
        let end = range.end.min(seg_start + u64::from(seg_layout.plain_len));
        let ids = segment_ids.get(index as usize).map(Vec::as_slice).unwrap_or(&[]);
        let pos = SegmentPos { index, last: index + 1 == count };
        let plain = (at - seg_start) as u32..(end - seg_start) as u32;
        out.extend_from_slice(&read_segment_range(cipher, seg_layout, pos, ids, plain, &*source(index))?);
        at = end;
    }
    Ok(out)
}
