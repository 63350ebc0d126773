//! The shard protocol, `/cairn/shard/1`, spoken between clients and nodes.
//!
//! One request per stream. The requester writes a framed [`Request`]; a
//! `Put` is followed by exactly `len` raw body bytes. The node answers with
//! a framed [`Response`]; `Data` is followed by exactly `len` raw body bytes.
//! Frames are a `u32` little-endian length and a postcard body of at most
//! [`MAX_MESSAGE_SIZE`] bytes; shard bodies never sit inside a frame, so they
//! stream instead of being buffered whole.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Error;
use crate::head::{HeadRecord, RecordRefused};
use crate::ids::{RecordId, ShardId};
use crate::profile::SignedProfile;

/// libp2p protocol name; the version changes when the encoding does.
pub const SHARD_PROTOCOL: &str = "/cairn/shard/1";
/// Largest request or response frame body (bodies of shards are not
/// framed): room for a head record of [`crate::head::MAX_HEAD_RECORD_SIZE`]
/// and the largest other message (a few KiB).
pub const MAX_MESSAGE_SIZE: usize = crate::head::MAX_HEAD_RECORD_SIZE + 4 * 1024;
/// Largest shard any node accepts, whatever its configuration: a 256 MiB
/// segment with k = 1.
pub const MAX_SHARD_SIZE: u64 = 256 * 1024 * 1024 + 64 * 1024;

/// A byte range within a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl ByteRange {
    /// Whether the range lies within `total` bytes.
    pub fn within(&self, total: u64) -> bool {
        self.offset.checked_add(self.len).is_some_and(|end| end <= total)
    }
}

/// What a client asks a node. Variants are never reordered: new ones go at
/// the end and retired ones stay as placeholders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Store `len` bytes (they follow the frame) under `shard`. The node
    /// checks BLAKE3 of the bytes against `shard` as they stream in.
    Put {
        /// Claimed BLAKE3 of the body.
        shard: ShardId,
        /// Body length.
        len: u64,
        /// Who may delete and renew: [`owner_of`] the uploader's renew
        /// token for this shard on this node.
        owner: [u8; 32],
        /// How long to keep the shard unless renewed, in seconds.
        lease_secs: u64,
    },
    /// Send the shard, or a range of it.
    Get {
        /// Which shard.
        shard: ShardId,
        /// The whole shard when `None`.
        range: Option<ByteRange>,
    },
    /// Delete a shard; `token` is the delete token whose
    /// [`renew_token_of`] has the put's [`owner_of`].
    Delete {
        /// Which shard.
        shard: ShardId,
        /// The delete token.
        token: [u8; 32],
    },
    /// Retired (nodes answer [`ShardError::Malformed`]): it asked for
    /// BLAKE3(nonce ‖ bytes of `range`), which the auditor could not check
    /// without the bytes. See [`Request::Prove`].
    Audit {
        /// Which shard.
        shard: ShardId,
        /// Fresh random nonce from the auditor.
        nonce: [u8; 32],
        /// Which bytes to hash.
        range: ByteRange,
    },
    /// Report capacity and usage.
    Stats,
    /// Send the head record held under `record`, if any.
    GetHead {
        /// Which record.
        record: RecordId,
    },
    /// Store a head record if it is valid and newer than the one held
    /// (compare-and-swap on the sequence: see [`crate::head::accept`]).
    PutHead {
        /// The signed record.
        record: HeadRecord,
    },
    /// Extend the leases of up to [`MAX_RENEW_BATCH`] shards to `lease_secs`
    /// from now (capped by the node's `max_lease`). Each shard comes with
    /// its renew token, whose [`owner_of`] must be one of its owners. The
    /// answer is [`Response::Renewed`], one [`Renewal`] per shard, in order.
    Renew {
        /// How long to keep the shards from now, in seconds.
        lease_secs: u64,
        /// The shards and their renew tokens.
        shards: Vec<(ShardId, [u8; 32])>,
    },
    /// Prove possession of `range` of the shard: the answer is
    /// [`Response::Proof`], a verified slice ([`crate::proof`]) of the
    /// range cut to the shard and to
    /// [`MAX_PROOF_RANGE`](crate::proof::MAX_PROOF_RANGE).
    Prove {
        /// Which shard.
        shard: ShardId,
        /// Which bytes (the auditor picks them at random).
        range: ByteRange,
    },
    /// Report capacity, usage and whether the node is leaving the network:
    /// answered by [`Response::Status`].
    Status,
    /// Send the node's signed profile (region, zone, capacity, usage):
    /// answered by [`Response::Profile`].
    Profile,
    /// Say what the asking peer uses of this node: answered by
    /// [`Response::Usage`].
    Usage,
}

/// Most shards one [`Request::Renew`] names (so that it fits in a frame).
pub const MAX_RENEW_BATCH: usize = 56;

/// The outcome of renewing one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Renewal {
    /// Kept until this Unix second (the later of its old and new lease).
    Until(u64),
    /// The node does not hold it (never did, or collected it).
    NotFound,
    /// The token is not one of the shard's owners'.
    BadToken,
}

const RENEW_TOKEN_CONTEXT: &str = "cairn 2026 shard renew token v1";

/// The renew token that belongs to a delete token: it extends a shard's
/// lease but cannot delete it (the delete token cannot be computed from it).
pub fn renew_token_of(delete_token: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(RENEW_TOKEN_CONTEXT, delete_token)
}

/// What a node keeps to recognise the uploader: BLAKE3 of its renew token.
pub fn owner_of(renew_token: &[u8; 32]) -> [u8; 32] {
    *blake3::hash(renew_token).as_bytes()
}

/// Capacity figures a node reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Bytes the operator allows.
    pub capacity: u64,
    /// Bytes of shard data stored.
    pub used: u64,
    /// Number of shards stored.
    pub shards: u64,
}

/// A node's answer. Variants are never reordered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The shard is stored (or was already).
    Stored,
    /// `len` bytes of shard data follow the frame.
    Data {
        /// Bytes that follow.
        len: u64,
    },
    /// The shard is gone.
    Deleted,
    /// Retired: the answer to [`Request::Audit`].
    AuditProof {
        /// The hash.
        hash: [u8; 32],
    },
    /// Usage figures.
    Stats(NodeStats),
    /// The request failed.
    Error(ShardError),
    /// The head record held under the asked id (`None`: none held).
    Head(Option<HeadRecord>),
    /// The head record is stored (or the node held this very record).
    HeadStored,
    /// The head record was not stored: the node holds this one, with the
    /// same sequence or a higher one. The writer lost a race and learns the
    /// record it lost to in the same round trip.
    HeadHeld(HeadRecord),
    /// One outcome per shard of a [`Request::Renew`], in its order.
    Renewed(Vec<Renewal>),
    /// `len` bytes of a verified slice ([`crate::proof`]) follow the frame.
    Proof {
        /// Bytes that follow.
        len: u64,
    },
    /// The answer to [`Request::Status`].
    Status(NodeState),
    /// The answer to [`Request::Profile`].
    Profile(SignedProfile),
    /// The answer to [`Request::Usage`].
    Usage(PeerUse),
}

/// What one peer uses of a node, as the node counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerUse {
    /// Requests served.
    pub requests: u64,
    /// Shard bytes received from it.
    pub received: u64,
    /// Shard bytes sent to it.
    pub sent: u64,
    /// Bytes of the shards it uploaded that the node holds now.
    pub stored: u64,
    /// Bytes stored × seconds, summed since the node first saw it.
    pub byte_seconds: u64,
}

/// A node's figures and standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Capacity and usage.
    pub stats: NodeStats,
    /// Set while the node is leaving the network (graceful exit): it
    /// accepts no new shards, still serves what it holds, and stops at
    /// this Unix second at the latest, or sooner once it holds nothing.
    /// Repairers move its shards elsewhere.
    pub leaving_until: Option<u64>,
}

impl Response {
    /// How many raw bytes follow this frame on the stream.
    pub fn body_len(&self) -> u64 {
        match self {
            Self::Data { len } | Self::Proof { len } => *len,
            _ => 0,
        }
    }
}

/// Typed failures of the shard protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ShardError {
    /// The node has no such shard.
    #[error("shard {0} not found")]
    NotFound(ShardId),
    /// The body did not hash to the shard id; nothing was kept.
    #[error("bytes do not hash to shard {0}")]
    HashMismatch(ShardId),
    /// Not enough free capacity.
    #[error("no space: {needed} bytes needed, {available} available")]
    NoSpace {
        /// Bytes the put needs.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// The shard is larger than the node allows.
    #[error("shard of {len} bytes exceeds the node's limit of {max}")]
    TooLarge {
        /// Offered length.
        len: u64,
        /// The node's limit.
        max: u64,
    },
    /// The deletion token does not match.
    #[error("wrong deletion token for shard {0}")]
    BadToken(ShardId),
    /// The range is not inside the shard.
    #[error("range {offset}+{len} is outside a shard of {total} bytes")]
    BadRange {
        /// Range start.
        offset: u64,
        /// Range length.
        len: u64,
        /// Shard length.
        total: u64,
    },
    /// Too many requests from this peer; retry later.
    #[error("rate limited; retry after {retry_after_ms} ms")]
    RateLimited {
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// The request could not be decoded.
    #[error("malformed request")]
    Malformed,
    /// The node failed (disk error...). Details are in the node's log.
    #[error("internal node error")]
    Internal,
    /// A head record was refused for what it is (not for being older):
    /// wrong id, bad signature, too large.
    #[error("head record refused: {0}")]
    HeadRefused(RecordRefused),
    /// A new head record was refused: the node holds as many as it may.
    #[error("the node holds as many head records as it may ({max})")]
    RecordsFull {
        /// Its limit.
        max: u64,
    },
    /// The node's copy of the shard is damaged (its bytes no longer hash to
    /// its id); it cannot serve or prove it.
    #[error("shard {0} is damaged on this node")]
    Damaged(ShardId),
    /// The node is leaving the network and accepts no new shards.
    #[error("the node is leaving the network and accepts no new shards")]
    Leaving,
    /// The uploading peer stores as much on this node as its operator
    /// allows one peer.
    #[error("this peer stores {used} bytes here, the node allows {quota} per peer")]
    PeerQuota {
        /// Bytes the peer stores (and has in flight).
        used: u64,
        /// The node's quota per peer.
        quota: u64,
    },
}

impl Request {
    /// Encodes as a frame.
    pub fn to_frame(&self) -> Vec<u8> {
        codec::to_frame(self)
    }

    /// Decodes a frame body (after [`codec::frame_len`] checked its length).
    pub fn from_body(body: &[u8]) -> Result<Self, Error> {
        codec::from_bytes("shard request", body, MAX_MESSAGE_SIZE)
    }
}

impl Response {
    /// Encodes as a frame.
    pub fn to_frame(&self) -> Vec<u8> {
        codec::to_frame(self)
    }

    /// Decodes a frame body (after [`codec::frame_len`] checked its length).
    pub fn from_body(body: &[u8]) -> Result<Self, Error> {
        codec::from_bytes("shard response", body, MAX_MESSAGE_SIZE)
    }
}
