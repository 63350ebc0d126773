//! The object manifest: everything needed to find, fetch, verify and
//! decrypt one object version. It is only ever stored inside encrypted
//! index pages, never in the clear, because it holds the data key.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Error;
use crate::ids::{NodeId, ObjectVersionId, SegmentId, ShardId};
use crate::layout::Layout;

/// Version marker of the stored manifest encoding.
pub const MANIFEST_V1: u8 = 1;
/// Largest encoded manifest we decode (about 100 000 segments of a 4-of-6
/// code, i.e. 1.6 TB at 16 MiB segments). Larger objects get larger
/// segments.
pub const MAX_MANIFEST_SIZE: usize = 64 * 1024 * 1024;

/// One shard of a segment and the node believed to hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlacement {
    /// BLAKE3 of the shard bytes.
    pub id: ShardId,
    /// Where it was stored, if it was.
    pub holder: Option<NodeId>,
}

/// One segment of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentManifest {
    /// Placement key source for this segment.
    pub id: SegmentId,
    /// Plaintext bytes in this segment.
    pub plain_len: u32,
    /// Bytes in each shard.
    pub shard_len: u32,
    /// `n` shards: data shards first, then parity.
    pub shards: Vec<ShardPlacement>,
}

/// An object version.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectManifest {
    /// Random per version; bound into every AEAD block.
    pub version: ObjectVersionId,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Segment, block and erasure parameters.
    pub layout: Layout,
    /// The object's data key. Opaque bytes to `proto`.
    pub data_key: [u8; 32],
    /// The segments, in order.
    pub segments: Vec<SegmentManifest>,
}

impl std::fmt::Debug for ObjectManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the data key.
        f.debug_struct("ObjectManifest")
            .field("version", &self.version)
            .field("size", &self.size)
            .field("layout", &self.layout)
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

impl ObjectManifest {
    /// Encodes with the version marker.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_versioned(MANIFEST_V1, self)
    }

    /// Decodes and checks that the manifest is self-consistent.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let m: Self = codec::from_versioned("manifest", MANIFEST_V1, bytes, MAX_MANIFEST_SIZE)?;
        m.validate()?;
        Ok(m)
    }

    /// Checks every field against the layout: segment count and lengths,
    /// shard count and shard lengths.
    pub fn validate(&self) -> Result<(), Error> {
        self.layout.validate()?;
        let bad = |reason: String| Err(Error::Inconsistent { what: "manifest", reason });
        let count = self.layout.segment_count(self.size);
        if self.segments.len() as u64 != count {
            return bad(format!("{} segments for {} bytes, expected {count}", self.segments.len(), self.size));
        }
        for (i, seg) in self.segments.iter().enumerate() {
            let expect = self.layout.segment_len(self.size, i as u64);
            if seg.plain_len != expect {
                return bad(format!("segment {i} holds {} bytes, expected {expect}", seg.plain_len));
            }
            let shard_len = self.layout.segment(seg.plain_len).shard_len();
            if seg.shard_len != shard_len {
                return bad(format!("segment {i} shard length {} != {shard_len}", seg.shard_len));
            }
            if seg.shards.len() != usize::from(self.layout.n) {
                return bad(format!("segment {i} has {} shards, n={}", seg.shards.len(), self.layout.n));
            }
        }
        Ok(())
    }
}
