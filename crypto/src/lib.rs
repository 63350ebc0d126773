//! # cairn-crypto
//!
//! Everything secret in Cairn: the key file ([`keyfile`]), the key
//! hierarchy ([`keys`]), object data encryption in 64 KiB AEAD blocks
//! ([`stream`]) and grants sealed to X25519 recipients ([`share`]).
//!
//! Pure: no sockets, no clock, no runtime; the only I/O is reading and
//! writing the key file. Errors are opaque where they must be
//! ([`DecryptError`] says nothing about why), and no `Debug` output ever
//! shows key bytes. Storage nodes never link this crate.

pub mod error;
pub mod keyfile;
pub mod keys;
pub mod share;
pub mod stream;

pub use error::{DecryptError, Error};
pub use keyfile::KdfParams;
pub use keys::{AccountKeys, BucketKeys, RecordSigner, RootSecret, SymmetricKey, delete_token};
pub use share::{Access, Grant, Identity, Recipient};
pub use stream::{BlockPosition, DataKey, ObjectCipher, TAG_LEN};
