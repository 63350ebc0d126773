//! Identifiers. Each is a newtype so a shard id can never be passed where a
//! segment id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Writes the first bytes of an id as hex: enough to tell ids apart in logs.
fn short_hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in bytes.iter().take(8) {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn full_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Full lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                full_hex(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                short_hex(&self.0, f)?;
                write!(f, ")")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                short_hex(&self.0, f)
            }
        }
    };
}

hash_id!(
    /// BLAKE3 of a shard's bytes. A node refuses bytes that do not hash to it;
    /// a client rejects them too.
    ShardId
);

impl ShardId {
    /// The id of these shard bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Whether `bytes` hash to this id.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        // blake3::Hash compares in constant time; not needed here, but harmless.
        blake3::hash(bytes) == blake3::Hash::from(self.0)
    }
}

hash_id!(
    /// Identifies one segment of one object version. Derived by the client
    /// from secret material, so it says nothing about the object; the DHT
    /// key used for placement is BLAKE3 of it.
    SegmentId
);

impl SegmentId {
    /// The Kademlia key near which this segment's shards are placed.
    pub fn placement_key(&self) -> [u8; 32] {
        *blake3::hash(&self.0).as_bytes()
    }
}

hash_id!(
    /// Identifies a mutable head record in the DHT: a hash of the record's
    /// public verifying key (see [`crate::head::HeadRecord::record_id`]).
    RecordId
);

/// A random id per object version. Bound into every AEAD block so that a
/// block can never be moved from one object version to another.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectVersionId(pub [u8; 16]);

impl ObjectVersionId {
    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for ObjectVersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectVersionId(")?;
        short_hex(&self.0, f)?;
        write!(f, ")")
    }
}

/// Largest node id we accept: a libp2p PeerId is a multihash, 38 bytes for
/// Ed25519 keys; 64 leaves room for other key types without letting a peer
/// make us allocate much.
pub const MAX_NODE_ID_LEN: usize = 64;

/// A storage node's identity: the bytes of its libp2p PeerId (a multihash).
/// `proto` does not link libp2p; `net` converts.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NodeId(Vec<u8>);

impl NodeId {
    /// Wraps PeerId bytes, refusing more than [`MAX_NODE_ID_LEN`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, Error> {
        if bytes.is_empty() || bytes.len() > MAX_NODE_ID_LEN {
            return Err(Error::InvalidNodeId { len: bytes.len() });
        }
        Ok(Self(bytes))
    }

    /// The PeerId bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = <Vec<u8>>::deserialize(d)?;
        NodeId::from_bytes(bytes).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId(")?;
        // The tail of a multihash is the part that differs between peers.
        let tail = self.0.len().saturating_sub(8);
        short_hex(self.0.get(tail..).unwrap_or_default(), f)?;
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_id_matches_only_its_bytes() {
        let id = ShardId::of(b"hello");
        assert!(id.matches(b"hello"));
        assert!(!id.matches(b"hellp"));
        assert_eq!(id.to_hex().len(), 64);
    }

    #[test]
    fn node_id_length_is_bounded() {
        assert!(NodeId::from_bytes(vec![1; 38]).is_ok());
        assert!(matches!(NodeId::from_bytes(vec![1; 65]), Err(Error::InvalidNodeId { len: 65 })));
        assert!(NodeId::from_bytes(Vec::new()).is_err());
    }
}
