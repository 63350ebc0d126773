//! The key hierarchy. One 32-byte root secret; every other key is derived
//! from it with BLAKE3 `derive_key` under a fixed, versioned context string,
//! so keys for different purposes can never collide.
//!
//! ```text
//! root ─► account ─┬─► bucket list: index key, record signing key
//!                  ├─► x25519 identity (receives grants)
//!                  └─► bucket(name) ─┬─► index key   (encrypts index pages)
//!                                    ├─► name key    (keyed hashes of names, segment ids)
//!                                    └─► signing key (Ed25519, signs the head record)
//! ```

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::DecryptError;

const ACCOUNT_CONTEXT: &str = "cairn 2026 account key v1";
const BUCKET_CONTEXT: &str = "cairn 2026 bucket root key v1";
const BUCKET_INDEX_CONTEXT: &str = "cairn 2026 bucket index key v1";
const BUCKET_NAME_CONTEXT: &str = "cairn 2026 bucket name key v1";
const BUCKET_SIGNING_CONTEXT: &str = "cairn 2026 bucket signing key v1";
const LIST_INDEX_CONTEXT: &str = "cairn 2026 bucket list index key v1";
const LIST_SIGNING_CONTEXT: &str = "cairn 2026 bucket list signing key v1";
const IDENTITY_CONTEXT: &str = "cairn 2026 x25519 identity v1";
const DELETE_TOKEN_CONTEXT: &str = "cairn 2026 shard delete token v2";

/// The token that deletes `shard` from the node `holder` (its peer id
/// bytes), derived from a key only its owner has (an object's data key, a
/// bucket's index key), so nothing per shard needs to be stored.
///
/// The holder is part of the derivation: each copy of a shard has its own
/// token, so a node that receives one cannot replay it to the other
/// holders. Nodes keep only a hash of a hash of it
/// (`cairn_proto::shard::owner_of`), and the middle link, the renew token,
/// extends the lease without the power to delete.
pub fn delete_token(owner_key: &[u8; 32], shard: &[u8; 32], holder: &[u8]) -> [u8; 32] {
    // The holder's id is variable-length; its length goes first.
    let mut material = Zeroizing::new(Vec::with_capacity(72 + holder.len()));
    material.extend_from_slice(owner_key);
    material.extend_from_slice(shard);
    material.extend_from_slice(&(holder.len() as u64).to_le_bytes());
    material.extend_from_slice(holder);
    blake3::derive_key(DELETE_TOKEN_CONTEXT, &material)
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    OsRng.fill_bytes(buf);
}

/// 32 fresh random bytes.
pub fn random_32() -> [u8; 32] {
    let mut b = [0u8; 32];
    random_bytes(&mut b);
    b
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps existing key bytes.
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The key bytes. Handle with care: never log them.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

secret_type!(
    /// The root of all keys, the 32 bytes held in the key file.
    RootSecret
);
secret_type!(
    /// A symmetric key for small records (index pages, bucket lists).
    SymmetricKey
);

impl RootSecret {
    /// A fresh random root secret.
    pub fn generate() -> Self {
        Self(random_32())
    }

    /// The account keys.
    pub fn account(&self) -> AccountKeys {
        AccountKeys(blake3::derive_key(ACCOUNT_CONTEXT, &self.0))
    }
}

/// Keys of one account: everything below the root.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AccountKeys([u8; 32]);

impl std::fmt::Debug for AccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountKeys(..)")
    }
}

impl AccountKeys {
    /// Keys of the bucket called `name`.
    pub fn bucket(&self, name: &str) -> BucketKeys {
        let mut material = Zeroizing::new(Vec::with_capacity(32 + name.len()));
        material.extend_from_slice(&self.0);
        material.extend_from_slice(name.as_bytes());
        let root = Zeroizing::new(blake3::derive_key(BUCKET_CONTEXT, &material));
        BucketKeys::from_root(&root)
    }

    /// Key that encrypts the account's bucket list.
    pub fn bucket_list_key(&self) -> SymmetricKey {
        SymmetricKey(blake3::derive_key(LIST_INDEX_CONTEXT, &self.0))
    }

    /// Key that signs the account's bucket list head record.
    pub fn bucket_list_signer(&self) -> RecordSigner {
        RecordSigner::from_seed(&blake3::derive_key(LIST_SIGNING_CONTEXT, &self.0))
    }

    /// The account's X25519 identity, to which grants are sealed.
    pub fn identity(&self) -> crate::share::Identity {
        crate::share::Identity::from_seed(blake3::derive_key(IDENTITY_CONTEXT, &self.0))
    }
}

/// Keys of one bucket.
#[derive(Clone)]
pub struct BucketKeys {
    /// Encrypts index pages and the head record payload.
    pub index: SymmetricKey,
    /// Keys hashes of names and derives segment ids.
    pub name: SymmetricKey,
    /// Signs the bucket's head record.
    pub signer: RecordSigner,
}

impl std::fmt::Debug for BucketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BucketKeys(..)")
    }
}

impl BucketKeys {
    /// Derives the bucket's keys from its root key (also what a read-write
    /// grant carries).
    pub fn from_root(root: &[u8; 32]) -> Self {
        Self {
            index: SymmetricKey(blake3::derive_key(BUCKET_INDEX_CONTEXT, root)),
            name: SymmetricKey(blake3::derive_key(BUCKET_NAME_CONTEXT, root)),
            signer: RecordSigner::from_seed(&blake3::derive_key(BUCKET_SIGNING_CONTEXT, root)),
        }
    }

    /// A keyed hash of `name` (32 bytes); nodes see only such hashes.
    pub fn name_hash(&self, name: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(self.name.as_bytes(), name).as_bytes()
    }
}

/// An Ed25519 key that signs head records.
#[derive(Clone)]
pub struct RecordSigner(SigningKey);

impl std::fmt::Debug for RecordSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordSigner(public {:02x?}..)", &self.public_key()[..4])
    }
}

impl RecordSigner {
    /// From a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs `msg` (e.g. `HeadRecord::signing_bytes`).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl SymmetricKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(random_32())
    }

    /// Seals a small record under a random nonce: `nonce ‖ ciphertext ‖ tag`.
    /// `aad` binds the record to its context (which page, which bucket).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let aead = XChaCha20Poly1305::new(&self.0.into());
        let mut nonce = [0u8; 24];
        random_bytes(&mut nonce);
        let ct = aead
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            // Encryption only fails for inputs over 256 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what [`Self::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let (nonce, ct) = sealed.split_first_chunk::<24>().ok_or(DecryptError)?;
        let aead = XChaCha20Poly1305::new(&self.0.into());
        aead.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_bucket() {
        let root = RootSecret::from_bytes([7; 32]);
        let a = root.account();
        let b1 = a.bucket("photos");
        let b2 = a.bucket("photos2");
        assert_ne!(b1.index.as_bytes(), b2.index.as_bytes());
        assert_ne!(b1.index.as_bytes(), b1.name.as_bytes());
        assert_ne!(b1.signer.public_key(), b2.signer.public_key());
        assert_ne!(a.bucket_list_key().as_bytes(), b1.index.as_bytes());
        // Deterministic: the same root gives the same keys on any machine.
        assert_eq!(root.account().bucket("photos").index.as_bytes(), b1.index.as_bytes());
    }

    #[test]
    fn delete_tokens_are_bound_to_key_shard_and_holder() {
        let t = delete_token(&[1; 32], &[2; 32], b"node a");
        // Golden: a token must not change between versions, or shards
        // stored earlier could no longer be deleted or renewed.
        assert_eq!(hex(&t[..8]), GOLDEN_DELETE_TOKEN);
        assert_ne!(t, delete_token(&[1; 32], &[2; 32], b"node b"));
        assert_ne!(t, delete_token(&[1; 32], &[3; 32], b"node a"));
        assert_ne!(t, delete_token(&[9; 32], &[2; 32], b"node a"));
        // The holder's length is framed: ids that concatenate alike differ.
        assert_ne!(delete_token(&[1; 32], &[2; 32], b"ab"), delete_token(&[1; 32], &[2; 32], b"a"));
    }

    const GOLDEN_DELETE_TOKEN: &str = "b3f3fa611f39af2c";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn symmetric_seal_round_trips_and_binds_aad() {
        let k = SymmetricKey::generate();
        let s = k.seal(b"page 1", b"secret index");
        assert_eq!(k.open(b"page 1", &s).as_deref(), Ok(&b"secret index"[..]));
        assert_eq!(k.open(b"page 2", &s), Err(DecryptError));
        assert_eq!(SymmetricKey::generate().open(b"page 1", &s), Err(DecryptError));
        assert_eq!(k.open(b"", &s[..10]), Err(DecryptError));
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let k = SymmetricKey::from_bytes([0xab; 32]);
        assert!(!format!("{k:?}").contains("ab"));
        assert!(!format!("{:?}", RootSecret::from_bytes([0xcd; 32])).contains("cd"));
    }
}
