//! Signed mutable head records: the only mutable thing in the DHT.
//!
//! A head record says "the current root of this bucket (or account) is
//! `payload`, version `sequence`", signed by the bucket's Ed25519 key. The
//! payload is ciphertext to everyone but key holders. Nodes check the
//! signature and the sequence with [`accept`] and keep only the newest
//! valid record; checking needs no secret, which is why it lives here and
//! nodes need not link `crypto`.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Error;
use crate::ids::RecordId;

/// Version marker of the head record encoding.
pub const HEAD_RECORD_V1: u8 = 1;
/// Largest payload: an encrypted root pointer and the tree's journal (the
/// entries written since its pages were last rewritten), 32 KiB.
pub const MAX_HEAD_PAYLOAD: usize = 32 * 1024;
/// Largest encoded head record.
pub const MAX_HEAD_RECORD_SIZE: usize = MAX_HEAD_PAYLOAD + 128;
/// Domain separation for the signed bytes.
const SIGNING_CONTEXT: &[u8] = b"cairn 2026 head record v1\0";
/// Context for deriving record ids from public keys.
const RECORD_ID_CONTEXT: &str = "cairn 2026 head record id v1";

/// A signed `(sequence, payload)` under an Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    /// The Ed25519 verifying key that signs this record.
    pub public_key: [u8; 32],
    /// Strictly increases with every publish.
    pub sequence: u64,
    /// Opaque (encrypted) payload, at most [`MAX_HEAD_PAYLOAD`] bytes.
    #[serde(with = "codec::bytes")]
    pub payload: Vec<u8>,
    /// Ed25519 signature over [`HeadRecord::signing_bytes`].
    #[serde(with = "codec::bytes64")]
    pub signature: [u8; 64],
}

/// Why a node refused to store a head record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RecordRefused {
    /// The record is stored under an id that is not the hash of its key.
    #[error("record id does not match its public key")]
    WrongId,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The node holds a record with this sequence or a higher one.
    #[error("sequence {offered} is not newer than the stored {stored}")]
    Stale {
        /// Sequence of the offered record.
        offered: u64,
        /// Sequence of the stored record.
        stored: u64,
    },
    /// The payload is larger than [`MAX_HEAD_PAYLOAD`].
    #[error("payload of {0} bytes is too large")]
    TooLarge(usize),
}

impl HeadRecord {
    /// The bytes an owner signs: context, key, sequence, payload length and payload.
    pub fn signing_bytes(public_key: &[u8; 32], sequence: u64, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + 48 + payload.len());
        m.extend_from_slice(SIGNING_CONTEXT);
        m.extend_from_slice(public_key);
        m.extend_from_slice(&sequence.to_le_bytes());
        m.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        m.extend_from_slice(payload);
        m
    }

    /// The DHT id of records signed by `public_key`.
    pub fn record_id_for(public_key: &[u8; 32]) -> RecordId {
        RecordId(blake3::derive_key(RECORD_ID_CONTEXT, public_key))
    }

    /// The DHT id of this record.
    pub fn record_id(&self) -> RecordId {
        Self::record_id_for(&self.public_key)
    }

    /// Checks the payload size and the signature (strict verification:
    /// no malleable or small-order signatures).
    pub fn verify(&self) -> Result<(), Error> {
        if self.payload.len() > MAX_HEAD_PAYLOAD {
            return Err(RecordRefused::TooLarge(self.payload.len()).into());
        }
        let key = VerifyingKey::from_bytes(&self.public_key).map_err(|_| Error::BadSignature)?;
        let sig = Signature::from_bytes(&self.signature);
        let msg = Self::signing_bytes(&self.public_key, self.sequence, &self.payload);
        key.verify_strict(&msg, &sig).map_err(|_| Error::BadSignature)
    }

    /// Encodes with the version marker.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_versioned(HEAD_RECORD_V1, self)
    }

    /// Decodes (bounded). Does not verify: call [`accept`] or [`Self::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        codec::from_versioned("head record", HEAD_RECORD_V1, bytes, MAX_HEAD_RECORD_SIZE)
    }
}

/// The rule every node applies before storing `offered` under `id`,
/// given the record it already holds there (if any).
pub fn accept(id: &RecordId, stored: Option<&HeadRecord>, offered: &HeadRecord) -> Result<(), RecordRefused> {
    if offered.record_id() != *id {
        return Err(RecordRefused::WrongId);
    }
    match offered.verify() {
        Ok(()) => {}
        Err(Error::RecordRefused(r)) => return Err(r),
        Err(_) => return Err(RecordRefused::BadSignature),
    }
    if let Some(s) = stored {
        // Republishing the very record a node holds is not an error.
        if s == offered {
            return Ok(());
        }
        if offered.sequence <= s.sequence {
            return Err(RecordRefused::Stale { offered: offered.sequence, stored: s.sequence });
        }
    }
    Ok(())
}
