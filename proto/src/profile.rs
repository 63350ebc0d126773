//! What a node says about itself for placement: its region and zone, its
//! capacity and what it uses, signed with its identity key.
//!
//! A client places shards by region and by free space; it trusts a
//! profile as far as it trusts the node's identity: the signature binds
//! the profile to the peer id, so no one else can speak for the node (a
//! relay, a cache, another node). A node that lies about its own region
//! is its operator's business (docs/SECURITY.md). Signing and checking
//! live in `cairn-net`, which holds libp2p's key types; this module only
//! fixes the bytes.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Error;

/// Longest region or zone name, in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Longest encoded public key (a protobuf-encoded libp2p key: 36 bytes
/// for Ed25519).
pub const MAX_PUBLIC_KEY_LEN: usize = 128;
/// Longest signature (64 bytes for Ed25519).
pub const MAX_SIGNATURE_LEN: usize = 128;
/// The context that starts the signed bytes.
pub const SIGNING_CONTEXT: &[u8] = b"cairn 2026 node profile v1\0";

/// A node's description of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProfile {
    /// The region the operator declared (`eu-west`), empty if none.
    pub region: String,
    /// The zone within the region (a site, a rack), empty if none.
    pub zone: String,
    /// Bytes of shard data the operator allows.
    pub capacity: u64,
    /// Bytes of shard data stored.
    pub used: u64,
    /// Set while the node is leaving the network: it takes no new shards.
    pub leaving_until: Option<u64>,
    /// When the node made this profile (Unix seconds).
    pub issued: u64,
}

impl NodeProfile {
    /// Bytes of free space (none while leaving).
    pub fn free(&self) -> u64 {
        if self.leaving_until.is_some() { 0 } else { self.capacity.saturating_sub(self.used) }
    }

    /// The bytes the node signs.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut v = SIGNING_CONTEXT.to_vec();
        v.extend_from_slice(&codec::to_bytes(self));
        v
    }

    /// Checks the names: at most [`MAX_NAME_LEN`] bytes of lowercase ASCII
    /// letters, digits, `-` and `_`.
    pub fn validate(&self) -> Result<(), Error> {
        for name in [&self.region, &self.zone] {
            check_name(name)?;
        }
        Ok(())
    }
}

/// Checks a region or zone name (see [`NodeProfile::validate`]).
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Inconsistent {
            what: "region or zone name",
            reason: format!("{name:?}: at most {MAX_NAME_LEN} of a-z, 0-9, - and _"),
        })
    }
}

/// A profile with its signer's public key and signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProfile {
    /// The profile.
    pub profile: NodeProfile,
    /// The node's public key, protobuf-encoded as libp2p does (its peer id
    /// is derived from it).
    pub public_key: Vec<u8>,
    /// The signature over [`NodeProfile::signing_bytes`].
    pub signature: Vec<u8>,
}

impl SignedProfile {
    /// Checks lengths and names (the signature is checked by `cairn-net`).
    pub fn validate(&self) -> Result<(), Error> {
        if self.public_key.len() > MAX_PUBLIC_KEY_LEN {
            return Err(Error::TooLarge {
                what: "profile key",
                len: self.public_key.len() as u64,
                max: MAX_PUBLIC_KEY_LEN as u64,
            });
        }
        if self.signature.len() > MAX_SIGNATURE_LEN {
            return Err(Error::TooLarge {
                what: "profile signature",
                len: self.signature.len() as u64,
                max: MAX_SIGNATURE_LEN as u64,
            });
        }
        self.profile.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["", "eu-west", "us_east_1", "a1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["EU", "eu west", "é", &"a".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn free_space_is_none_while_leaving() {
        let mut p = NodeProfile { capacity: 10, used: 4, ..Default::default() };
        assert_eq!(p.free(), 6);
        p.used = 12;
        assert_eq!(p.free(), 0);
        p.used = 4;
        p.leaving_until = Some(1);
        assert_eq!(p.free(), 0);
    }

    #[test]
    fn signing_bytes_are_fixed() {
        // Golden: a change here breaks every profile signed so far.
        let p = NodeProfile {
            region: "eu".into(),
            zone: "a".into(),
            capacity: 1000,
            used: 10,
            leaving_until: None,
            issued: 1_800_000_000,
        };
        let hex: String = p.signing_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let body: String = codec::to_bytes(&p).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(body, "0265750161e8070a0080a4a7da06");
        assert!(hex.ends_with(&body));
    }
}
