//! Sharing: grants and sealing them to a recipient, in the manner of age.
//!
//! A [`Grant`] is a capability on one bucket (optionally a key prefix):
//! read, or read-write. It carries the bucket's root key, from which the
//! recipient derives the index and name keys, and, for read-write, the
//! signing key. As a string it is `cairn-grant1-<base64url>`.
//!
//! A grant is sealed to a recipient's X25519 public key: a fresh ephemeral
//! key pair, `shared = X25519(ephemeral secret, recipient)`, the sealing key
//! `derive_key("cairn 2026 grant seal v1", shared ‖ ephemeral public ‖
//! recipient)`, XChaCha20-Poly1305 under a random nonce. As a string it is
//! `cairn-sealed1-<base64url(ephemeral public ‖ nonce ‖ ciphertext)>`.
//!
//! Limits: a read grant holds the bucket's index key, so the prefix is
//! advisory — it scopes what the recipient's tools show, not what the key
//! can decrypt. Per-prefix keys are future work.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{DecryptError, Error};
use crate::keys::{BucketKeys, random_bytes};

const GRANT_PREFIX: &str = "cairn-grant1-";
const SEALED_PREFIX: &str = "cairn-sealed1-";
const RECIPIENT_PREFIX: &str = "cairn-recipient1-";
const SEAL_CONTEXT: &str = "cairn 2026 grant seal v1";
const MAX_GRANT_LEN: usize = 8 * 1024;

/// What a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// List and read.
    Read,
    /// List, read, write and delete.
    ReadWrite,
}

/// A capability on a bucket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Grant {
    /// The bucket's name.
    #[zeroize(skip)]
    pub bucket: String,
    /// Key prefix the grant is meant for ("" for the whole bucket).
    #[zeroize(skip)]
    pub prefix: String,
    /// Read or read-write.
    #[zeroize(skip)]
    pub access: Access,
    /// The bucket's root key (index and name keys derive from it).
    bucket_root: [u8; 32],
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Grant {
    /// A grant on `bucket` whose root key is `bucket_root`.
    pub fn new(bucket: &str, prefix: &str, access: Access, bucket_root: [u8; 32]) -> Self {
        Self { bucket: bucket.to_owned(), prefix: prefix.to_owned(), access, bucket_root }
    }

    /// The bucket keys this grant gives. A read grant's signer is derived
    /// too (the root key implies it); read-only enforcement is by nodes
    /// refusing writes that are not signed — see SECURITY.md.
    pub fn bucket_keys(&self) -> BucketKeys {
        BucketKeys::from_root(&self.bucket_root)
    }

    /// `cairn-grant1-…`: the grant as one string. It is a secret.
    pub fn to_string_secret(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(postcard::to_stdvec(self).unwrap_or_default());
        Zeroizing::new(format!("{GRANT_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes[..])))
    }

    /// Parses a `cairn-grant1-…` string.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let b64 = s.trim().strip_prefix(GRANT_PREFIX).ok_or(Error::BadGrant("missing cairn-grant1- prefix"))?;
        if b64.len() > MAX_GRANT_LEN {
            return Err(Error::BadGrant("too long"));
        }
        let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(b64).map_err(|_| Error::BadGrant("not base64url"))?);
        postcard::from_bytes(&bytes).map_err(|_| Error::BadGrant("malformed"))
    }
}

/// An X25519 key pair that can open grants sealed to it.
#[derive(Clone)]
pub struct Identity(StaticSecret);

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.recipient())
    }
}

/// The public half: where grants are sealed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipient(PublicKey);

impl Identity {
    /// From a 32-byte seed (derived from the account key).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(StaticSecret::from(seed))
    }

    /// A fresh random identity.
    pub fn generate() -> Self {
        Self(StaticSecret::random_from_rng(OsRng))
    }

    /// The public key to give to others.
    pub fn recipient(&self) -> Recipient {
        Recipient(PublicKey::from(&self.0))
    }

    /// Opens a `cairn-sealed1-…` string sealed to this identity.
    pub fn open_grant(&self, sealed: &str) -> Result<Grant, Error> {
        let b64 = sealed.trim().strip_prefix(SEALED_PREFIX).ok_or(Error::BadGrant("missing cairn-sealed1- prefix"))?;
        if b64.len() > MAX_GRANT_LEN {
            return Err(Error::BadGrant("too long"));
        }
        let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| Error::BadGrant("not base64url"))?;
        let (eph, rest) = bytes.split_first_chunk::<32>().ok_or(Error::BadGrant("too short"))?;
        let (nonce, ct) = rest.split_first_chunk::<24>().ok_or(Error::BadGrant("too short"))?;
        let eph = PublicKey::from(*eph);
        let key = seal_key(&self.0.diffie_hellman(&eph), &eph, &self.recipient().0).ok_or(DecryptError)?;
        let aead = XChaCha20Poly1305::new(&(*key).into());
        let plain = Zeroizing::new(
            aead.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: SEALED_PREFIX.as_bytes() })
                .map_err(|_| DecryptError)?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| Error::BadGrant("not text"))?;
        Grant::parse(text)
    }
}

impl Recipient {
    /// Parses a `cairn-recipient1-…` string.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let b64 = s.trim().strip_prefix(RECIPIENT_PREFIX).ok_or(Error::BadGrant("missing cairn-recipient1- prefix"))?;
        let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| Error::BadGrant("not base64url"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| Error::BadGrant("recipient is not 32 bytes"))?;
        Ok(Self(PublicKey::from(key)))
    }

    /// Seals `grant` so that only this recipient can open it.
    pub fn seal_grant(&self, grant: &Grant) -> Result<String, Error> {
        let eph = StaticSecret::random_from_rng(OsRng);
        let eph_pub = PublicKey::from(&eph);
        let key = seal_key(&eph.diffie_hellman(&self.0), &eph_pub, &self.0)
            .ok_or(Error::BadGrant("recipient key is a low-order point"))?;
        let mut nonce = [0u8; 24];
        random_bytes(&mut nonce);
        let aead = XChaCha20Poly1305::new(&(*key).into());
        let text = grant.to_string_secret();
        let ct = aead
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: text.as_bytes(), aad: SEALED_PREFIX.as_bytes() })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(56 + ct.len());
        out.extend_from_slice(eph_pub.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{RECIPIENT_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0.as_bytes()))
    }
}

fn seal_key(
    shared: &x25519_dalek::SharedSecret,
    eph: &PublicKey,
    recipient: &PublicKey,
) -> Option<Zeroizing<[u8; 32]>> {
    // A low-order recipient key gives an all-zero secret: refuse it.
    if !shared.was_contributory() {
        return None;
    }
    let mut material = Zeroizing::new([0u8; 96]);
    material[..32].copy_from_slice(shared.as_bytes());
    material[32..64].copy_from_slice(eph.as_bytes());
    material[64..].copy_from_slice(recipient.as_bytes());
    Some(Zeroizing::new(blake3::derive_key(SEAL_CONTEXT, &material[..])))
}
