//! What a storage node keeps on disk about each shard (its bytes live in a
//! plain file named by the shard id).

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Error;

/// Version marker of [`ShardMeta`].
pub const SHARD_META_V1: u8 = 1;
/// Most uploaders (deletion token hashes) one shard keeps. Identical shards
/// from different uploaders share one copy; each may delete its claim.
pub const MAX_OWNERS: usize = 64;
const MAX_SHARD_META_SIZE: usize = 64 + MAX_OWNERS * 33;

/// Metadata of one stored shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Bytes in the shard file.
    pub len: u64,
    /// BLAKE3 hashes of the deletion tokens of everyone who stored it.
    pub owners: Vec<[u8; 32]>,
    /// Unix seconds after which the shard may be collected.
    pub expires_at: u64,
}

impl ShardMeta {
    /// Encodes with the version marker.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_versioned(SHARD_META_V1, self)
    }

    /// Decodes (bounded).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let m: Self = codec::from_versioned("shard metadata", SHARD_META_V1, bytes, MAX_SHARD_META_SIZE)?;
        if m.owners.len() > MAX_OWNERS {
            return Err(Error::Inconsistent { what: "shard metadata", reason: format!("{} owners", m.owners.len()) });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_and_round_trip() {
        let m = ShardMeta { len: 300, owners: vec![[7; 32]], expires_at: 1 };
        let b = m.to_bytes();
        assert_eq!(b[..4], [1, 0xac, 0x02, 1]);
        assert_eq!(ShardMeta::from_bytes(&b), Ok(m));
        assert!(ShardMeta::from_bytes(&[2, 0]).is_err());
    }
}
