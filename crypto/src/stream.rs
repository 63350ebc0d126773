//! Object data encryption: XChaCha20-Poly1305 over fixed-size blocks, in
//! the manner of the STREAM construction.
//!
//! Every object version has a fresh random [`DataKey`]. The AEAD key is
//! `derive_key("cairn 2026 object block key v1", data key ‖ version id)`, so
//! even a data key reused by mistake never repeats a (key, nonce) pair across
//! versions. Each block's nonce and associated data encode its position:
//!
//! ```text
//! nonce (24) = segment index (u64 LE) ‖ block index (u32 LE) ‖ flags (u8) ‖ 0 (11 bytes)
//! aad        = "cairn block v1" ‖ version id (16) ‖ segment (u64 LE) ‖ block (u32 LE) ‖ flags (u8)
//! flags      = bit 0: last block of its segment; bit 1: block of the last segment
//! ```
//!
//! So a block flipped, moved to another index, swapped in from another
//! segment or another object, or a segment truncated or extended by whole
//! blocks, fails to authenticate. Any block decrypts on its own, which is
//! what range reads need.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::DecryptError;

/// Bytes of the Poly1305 tag after every block.
pub const TAG_LEN: usize = 16;
const BLOCK_KEY_CONTEXT: &str = "cairn 2026 object block key v1";
const FILL_KEY_CONTEXT: &str = "cairn 2026 shard fill key v1";
const AAD_PREFIX: &[u8; 14] = b"cairn block v1";
const AAD_LEN: usize = AAD_PREFIX.len() + 16 + 8 + 4 + 1;

/// A per-object-version random key. Stored only inside the encrypted manifest.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(crate::keys::random_32())
    }

    /// Wraps key bytes read from a manifest.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes, to be stored in the (encrypted) manifest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Where a block sits; bound into its nonce and associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPosition {
    /// Segment index within the object.
    pub segment: u64,
    /// Block index within the segment.
    pub block: u32,
    /// Whether this is the last block of its segment.
    pub last_in_segment: bool,
    /// Whether its segment is the last of the object.
    pub last_segment: bool,
}

impl BlockPosition {
    fn flags(&self) -> u8 {
        u8::from(self.last_in_segment) | (u8::from(self.last_segment) << 1)
    }

    fn nonce(&self) -> XNonce {
        let mut n = [0u8; 24];
        n[..8].copy_from_slice(&self.segment.to_le_bytes());
        n[8..12].copy_from_slice(&self.block.to_le_bytes());
        n[12] = self.flags();
        XNonce::from(n)
    }
}

/// Seals and opens the blocks of one object version.
#[derive(Clone)]
pub struct ObjectCipher {
    aead: XChaCha20Poly1305,
    version: [u8; 16],
    /// Keys the stream that fills shard bytes past the ciphertext.
    fill_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ObjectCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectCipher(..)")
    }
}

impl ObjectCipher {
    /// The cipher for object version `version` under `key`.
    pub fn new(key: &DataKey, version: [u8; 16]) -> Self {
        let mut material = Zeroizing::new([0u8; 48]);
        material[..32].copy_from_slice(&key.0);
        material[32..].copy_from_slice(&version);
        let block_key = Zeroizing::new(blake3::derive_key(BLOCK_KEY_CONTEXT, &material[..]));
        let fill_key = Zeroizing::new(blake3::derive_key(FILL_KEY_CONTEXT, &material[..]));
        Self { aead: XChaCha20Poly1305::new(&(*block_key).into()), version, fill_key }
    }

    /// Fills `out` with the keyed stream for segment `segment`: the bytes
    /// that pad its data shards past the ciphertext. They look random to
    /// anyone without the data key, and differ per object version and
    /// segment, so no shard is all zeros or shared between objects.
    pub fn fill(&self, segment: u64, out: &mut [u8]) {
        let mut h = blake3::Hasher::new_keyed(&self.fill_key);
        h.update(&segment.to_le_bytes());
        h.finalize_xof().fill(out);
    }

    fn aad(&self, pos: &BlockPosition) -> [u8; AAD_LEN] {
        let mut a = [0u8; AAD_LEN];
        let (prefix, rest) = a.split_at_mut(AAD_PREFIX.len());
        prefix.copy_from_slice(AAD_PREFIX);
        rest[..16].copy_from_slice(&self.version);
        rest[16..24].copy_from_slice(&pos.segment.to_le_bytes());
        rest[24..28].copy_from_slice(&pos.block.to_le_bytes());
        rest[28] = pos.flags();
        a
    }

    /// Encrypts `block` in place and returns its tag.
    pub fn seal_block(&self, pos: BlockPosition, block: &mut [u8]) -> [u8; TAG_LEN] {
        self.aead
            .encrypt_in_place_detached(&pos.nonce(), &self.aad(&pos), block)
            // Only fails for blocks over 256 GiB.
            .map(Into::into)
            .unwrap_or([0; TAG_LEN])
    }

    /// Decrypts `block` in place if `tag` authenticates it at `pos`. On
    /// failure `block` is left as ciphertext.
    pub fn open_block(&self, pos: BlockPosition, block: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), DecryptError> {
        self.aead
            .decrypt_in_place_detached(&pos.nonce(), &self.aad(&pos), block, Tag::from_slice(tag))
            .map_err(|_| DecryptError)
    }

    /// Seals a whole segment: blocks of `block_size` bytes (the last may be
    /// shorter), each followed by its tag. Convenience for tests and small
    /// data; the client pipeline seals in place block by block.
    pub fn seal_segment(&self, segment: u64, last_segment: bool, block_size: usize, plaintext: &[u8]) -> Vec<u8> {
        let blocks = plaintext.len().div_ceil(block_size.max(1));
        let mut out = Vec::with_capacity(plaintext.len() + blocks * TAG_LEN);
        for (i, chunk) in plaintext.chunks(block_size.max(1)).enumerate() {
            let pos = BlockPosition { segment, block: i as u32, last_in_segment: i + 1 == blocks, last_segment };
            let start = out.len();
            out.extend_from_slice(chunk);
            let tag = self.seal_block(pos, &mut out[start..]);
            out.extend_from_slice(&tag);
        }
        out
    }

    /// Opens a segment sealed by [`Self::seal_segment`]. The number of
    /// blocks is implied by the ciphertext length; a truncated or extended
    /// segment fails because the block that claims to be last is not.
    pub fn open_segment(
        &self,
        segment: u64,
        last_segment: bool,
        block_size: usize,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, DecryptError> {
        let stride = block_size.max(1) + TAG_LEN;
        let blocks = ciphertext.len().div_ceil(stride);
        let mut out = Vec::with_capacity(ciphertext.len());
        for (i, chunk) in ciphertext.chunks(stride).enumerate() {
            let (body, tag) = chunk.split_at_checked(chunk.len().saturating_sub(TAG_LEN)).ok_or(DecryptError)?;
            let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| DecryptError)?;
            let pos = BlockPosition { segment, block: i as u32, last_in_segment: i + 1 == blocks, last_segment };
            let start = out.len();
            out.extend_from_slice(body);
            self.open_block(pos, &mut out[start..], tag)?;
        }
        Ok(out)
    }
}
