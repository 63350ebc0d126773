//! Verified slices: how a node proves it holds a shard.
//!
//! A shard's id is the BLAKE3 hash of its bytes, which is also the root of
//! BLAKE3's binary tree over 1 KiB chunks. A node answers a
//! [`Request::Prove`](crate::shard::Request::Prove) with a *verified slice*
//! (the `bao-tree` encoding): the bytes of the asked range, widened to whole
//! 16 KiB chunk groups, and the sibling hashes on their path to the root, in
//! pre-order. The auditor checks the slice against the shard id and the
//! shard's length alone, so no challenge needs precomputing and a node can
//! only answer for a random range if it holds the shard's bytes.
//!
//! A node keeps the hashes of each shard's inner tree nodes (its
//! *outboard*: 64 bytes per 16 KiB group, 0.4 % of the shard) to answer
//! without reading the whole shard.

use std::io::{Cursor, Read};

use bao_tree::io::outboard::PostOrderMemOutboard;
use bao_tree::io::sync::{DecodeResponseIter, Outboard, ReadAt, encode_ranges_validated, outboard_post_order};
use bao_tree::io::{round_up_to_chunks, round_up_to_chunks_groups};
use bao_tree::{BaoTree, BlockSize, ByteRanges, ChunkRanges};

use crate::ids::ShardId;
use crate::shard::ByteRange;

/// Chunk groups of 16 chunks (16 KiB): the unit a slice carries.
pub const PROOF_BLOCK: BlockSize = BlockSize::from_chunk_log(4);
/// Longest range a node proves: longer ones are cut to this.
pub const MAX_PROOF_RANGE: u64 = 64 * 1024;
/// Largest slice an auditor accepts: [`MAX_PROOF_RANGE`] widened by a
/// chunk group on each side, and the hashes of a path in a tree of
/// [`MAX_SHARD_SIZE`](crate::shard::MAX_SHARD_SIZE).
pub const MAX_SLICE_LEN: u64 = MAX_PROOF_RANGE + 2 * 16 * 1024 + 64 * 64 * 8;

/// Why a slice does not prove what it should.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// A hash or a chunk on the path does not match the shard id.
    #[error("the slice does not verify against the shard id")]
    Mismatch,
    /// The slice ends before the range is covered.
    #[error("the slice is cut short")]
    Short,
    /// Bytes follow the proof.
    #[error("{0} unexpected bytes follow the proof")]
    Trailing(usize),
    /// The outboard given to [`slice`] does not fit the shard's length.
    #[error("the outboard is {got} bytes, a shard of this length has {expected}")]
    Outboard {
        /// Its length.
        got: usize,
        /// What it should be.
        expected: u64,
    },
    /// The node's copy of the shard is damaged: its bytes no longer hash
    /// to its id.
    #[error("the shard's bytes no longer match its id")]
    Damaged,
    /// Reading the shard failed.
    #[error("cannot read the shard")]
    Read,
}

/// The range a node proves for an asked one: cut to the shard's length and
/// to [`MAX_PROOF_RANGE`]. `None` when nothing of it is inside the shard.
pub fn proved_range(asked: ByteRange, shard_len: u64) -> Option<ByteRange> {
    if asked.offset >= shard_len || asked.len == 0 {
        return None;
    }
    let len = asked.len.min(MAX_PROOF_RANGE).min(shard_len - asked.offset);
    Some(ByteRange { offset: asked.offset, len })
}

/// The chunk groups a slice of `range` carries.
fn chunks(range: ByteRange) -> ChunkRanges {
    let bytes = ByteRanges::from(range.offset..range.offset.saturating_add(range.len));
    round_up_to_chunks_groups(round_up_to_chunks(&bytes), PROOF_BLOCK)
}

/// The outboard of a shard of `len` bytes read from `data`, and the root
/// it hashes to (the shard id, for bytes that are intact). Blocking.
pub fn outboard(data: impl Read, len: u64) -> Result<(ShardId, Vec<u8>), ProofError> {
    let tree = BaoTree::new(len, PROOF_BLOCK);
    let mut out = Vec::with_capacity(usize::try_from(tree.outboard_size()).unwrap_or(0));
    let root = outboard_post_order(data.take(len), tree, &mut out).map_err(|_| ProofError::Read)?;
    Ok((ShardId(*root.as_bytes()), out))
}

/// The verified slice of `range` of the shard `id` (`len` bytes, readable
/// from `data`), using its `outboard`. Every hash and chunk sent is checked
/// on the way: a damaged shard gives [`ProofError::Damaged`], never a bad
/// slice. Blocking.
pub fn slice(
    data: impl ReadAt,
    id: &ShardId,
    len: u64,
    outboard: &[u8],
    range: ByteRange,
) -> Result<Vec<u8>, ProofError> {
    let tree = BaoTree::new(len, PROOF_BLOCK);
    if outboard.len() as u64 != tree.outboard_size() {
        return Err(ProofError::Outboard { got: outboard.len(), expected: tree.outboard_size() });
    }
    let ob = PostOrderMemOutboard { root: blake3::Hash::from_bytes(id.0), tree, data: outboard };
    let mut out = Vec::new();
    encode_ranges_validated(data, &ob, &chunks(range), &mut out).map_err(|e| match e {
        bao_tree::io::EncodeError::Io(_) => ProofError::Read,
        _ => ProofError::Damaged,
    })?;
    debug_assert!(ob.root().as_bytes() == &id.0);
    Ok(out)
}

/// Checks that `slice` proves `range` of the shard `id` of `len` bytes,
/// and returns the bytes of the chunk groups it carries (which cover
/// `range`), with the offset of the first.
pub fn verify(id: &ShardId, len: u64, range: ByteRange, slice: &[u8]) -> Result<(u64, Vec<u8>), ProofError> {
    if slice.len() as u64 > MAX_SLICE_LEN || len > crate::shard::MAX_SHARD_SIZE {
        return Err(ProofError::Mismatch);
    }
    let tree = BaoTree::new(len, PROOF_BLOCK);
    let ranges = chunks(range);
    let mut reader = Cursor::new(slice);
    let mut start = None;
    let mut bytes = Vec::new();
    for item in DecodeResponseIter::new(blake3::Hash::from_bytes(id.0), tree, &mut reader, &ranges) {
        match item {
            Ok(bao_tree::io::BaoContentItem::Leaf(leaf)) => {
                start.get_or_insert(leaf.offset);
                bytes.extend_from_slice(&leaf.data);
            }
            Ok(bao_tree::io::BaoContentItem::Parent(_)) => {}
            Err(bao_tree::io::DecodeError::Io(_))
            | Err(bao_tree::io::DecodeError::LeafNotFound(_))
            | Err(bao_tree::io::DecodeError::ParentNotFound(_)) => return Err(ProofError::Short),
            Err(_) => return Err(ProofError::Mismatch),
        }
    }
    let used = reader.position() as usize;
    if used != slice.len() {
        return Err(ProofError::Trailing(slice.len() - used));
    }
    let start = start.ok_or(ProofError::Short)?;
    if start > range.offset || start.saturating_add(bytes.len() as u64) < range.offset.saturating_add(range.len) {
        return Err(ProofError::Short);
    }
    Ok((start, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(len: usize) -> (ShardId, Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let (id, ob) = outboard(&data[..], len as u64).expect("outboard");
        assert_eq!(id.0, *blake3::hash(&data).as_bytes(), "the root is the shard id");
        (id, data, ob)
    }

    #[test]
    fn slices_verify_against_the_shard_id_and_carry_the_range() {
        for len in [1usize, 1024, 16 * 1024, 16 * 1024 + 1, 1 << 20, 4 * (1 << 20) + 4096] {
            let (id, data, ob) = shard(len);
            for (offset, n) in [(0u64, 1u64), (len as u64 / 2, 1000), (len as u64 - 1, 1), (0, len as u64)] {
                let range = proved_range(ByteRange { offset, len: n }, len as u64).expect("inside");
                let s = slice(&data[..], &id, len as u64, &ob, range).expect("slice");
                assert!(s.len() as u64 <= MAX_SLICE_LEN, "{} bytes", s.len());
                let (start, bytes) = verify(&id, len as u64, range, &s).expect("verifies");
                let end = start as usize + bytes.len();
                assert_eq!(bytes, data[start as usize..end]);
                assert!(start <= range.offset && end as u64 >= range.offset + range.len);
            }
        }
    }

    #[test]
    fn altered_cut_or_padded_slices_and_wrong_ids_are_refused() {
        let len = 1 << 20;
        let (id, data, ob) = shard(len);
        let range = ByteRange { offset: 300_000, len: 10 };
        let s = slice(&data[..], &id, len as u64, &ob, range).expect("slice");
        for at in [0, 63, 64, s.len() / 2, s.len() - 1] {
            let mut bad = s.clone();
            bad[at] ^= 1;
            assert_eq!(verify(&id, len as u64, range, &bad), Err(ProofError::Mismatch), "flip at {at}");
        }
        assert_eq!(verify(&id, len as u64, range, &s[..s.len() - 1]), Err(ProofError::Short));
        let mut long = s.clone();
        long.push(0);
        assert_eq!(verify(&id, len as u64, range, &long), Err(ProofError::Trailing(1)));
        assert_eq!(verify(&ShardId([7; 32]), len as u64, range, &s), Err(ProofError::Mismatch));
        // The slice of another range does not prove this one.
        let other = slice(&data[..], &id, len as u64, &ob, ByteRange { offset: 0, len: 10 }).expect("slice");
        assert!(verify(&id, len as u64, range, &other).is_err());
        // Nor does a slice made for another length.
        assert!(verify(&id, len as u64 + 1, range, &s).is_err());
    }

    #[test]
    fn a_node_with_damaged_bytes_cannot_make_a_slice() {
        let len = 200_000;
        let (id, mut data, ob) = shard(len);
        data[150_000] ^= 0x80;
        let r = slice(&data[..], &id, len as u64, &ob, ByteRange { offset: 150_000, len: 1 });
        assert_eq!(r, Err(ProofError::Damaged));
        // Other groups still prove.
        assert!(slice(&data[..], &id, len as u64, &ob, ByteRange { offset: 0, len: 1 }).is_ok());
        // An outboard rebuilt from the damaged bytes hashes elsewhere.
        assert_ne!(outboard(&data[..], len as u64).expect("outboard").0, id);
        assert!(matches!(
            slice(&data[..], &id, len as u64, &ob[1..], ByteRange { offset: 0, len: 1 }),
            Err(ProofError::Outboard { .. })
        ));
    }

    #[test]
    fn ranges_are_cut_to_the_shard_and_the_limit() {
        assert_eq!(proved_range(ByteRange { offset: 10, len: 0 }, 100), None);
        assert_eq!(proved_range(ByteRange { offset: 100, len: 1 }, 100), None);
        assert_eq!(proved_range(ByteRange { offset: 90, len: 50 }, 100), Some(ByteRange { offset: 90, len: 10 }));
        assert_eq!(
            proved_range(ByteRange { offset: 0, len: u64::MAX }, 1 << 30),
            Some(ByteRange { offset: 0, len: MAX_PROOF_RANGE })
        );
    }
}
