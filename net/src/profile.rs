//! Signing and checking node profiles ([`cairn_proto::profile`]) with
//! the node's libp2p identity key.

use cairn_proto::profile::{NodeProfile, SignedProfile};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};

/// Why a profile was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileRefused {
    /// The key does not decode.
    #[error("its public key does not decode")]
    BadKey,
    /// The key is another peer's.
    #[error("it is signed by another peer than the one that sent it")]
    OtherPeer,
    /// The signature does not verify.
    #[error("its signature does not verify")]
    BadSignature,
    /// A length or name is out of bounds.
    #[error("{0}")]
    Invalid(String),
}

/// Signs `profile` with `key`.
pub fn sign(key: &Keypair, profile: NodeProfile) -> SignedProfile {
    // Signing with an Ed25519 key cannot fail; other key types are not used.
    let signature = key.sign(&profile.signing_bytes()).unwrap_or_default();
    SignedProfile { public_key: key.public().encode_protobuf(), signature, profile }
}

/// The profile in `signed` if it is `peer`'s own: its key is the peer's
/// and its signature verifies.
pub fn verify(peer: &PeerId, signed: &SignedProfile) -> Result<NodeProfile, ProfileRefused> {
    signed.validate().map_err(|e| ProfileRefused::Invalid(e.to_string()))?;
    let key = PublicKey::try_decode_protobuf(&signed.public_key).map_err(|_| ProfileRefused::BadKey)?;
    let signer = key.to_peer_id();
    if signer != *peer {
        return Err(ProfileRefused::OtherPeer);
    }
    if !key.verify(&signed.profile.signing_bytes(), &signed.signature) {
        return Err(ProfileRefused::BadSignature);
    }
    Ok(signed.profile.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> NodeProfile {
        NodeProfile { region: "eu".into(), capacity: 100, used: 1, issued: 5, ..Default::default() }
    }

    #[test]
    fn a_node_signs_for_itself_only() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let signed = sign(&key, profile());
        assert_eq!(verify(&peer, &signed), Ok(profile()));
        let other = Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(verify(&other, &signed), Err(ProfileRefused::OtherPeer));
    }

    #[test]
    fn a_changed_profile_is_refused() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let mut signed = sign(&key, profile());
        signed.profile.region = "us".into();
        assert_eq!(verify(&peer, &signed), Err(ProfileRefused::BadSignature));
        let mut signed = sign(&key, profile());
        signed.public_key[5] ^= 1;
        assert!(verify(&peer, &signed).is_err());
        let mut signed = sign(&key, profile());
        signed.profile.region = "EU".into();
        assert!(matches!(verify(&peer, &signed), Err(ProfileRefused::Invalid(_))));
    }
}
