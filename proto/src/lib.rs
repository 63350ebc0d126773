//! # Cairn's wire and disk formats
//!
//! This crate is the protocol specification; `docs/PROTOCOL.md` points
//! here. It is pure: no sockets, no files, no clock, no keys. Everything
//! that crosses a network or lands on a disk is defined in this crate, and
//! every decoder checks lengths against a named limit before allocating.
//!
//! ## Encoding
//!
//! All structured values use [postcard] (varint integers, length-prefixed
//! byte strings and sequences, enums as a varint variant index). Stored
//! values start with a one-byte version marker ([`codec::to_versioned`]).
//! Messages on a stream are framed as a `u32` little-endian length and a
//! postcard body ([`codec::to_frame`]). A decoder refuses trailing bytes.
//! Enum variants of wire types are never reordered or reused.
//!
//! ## Identifiers ([`ids`])
//!
//! | id | bytes | what it is |
//! |---|---|---|
//! | [`ShardId`] | 32 | BLAKE3 of the shard's bytes |
//! | [`SegmentId`] | 32 | secret-derived per segment; placement key = BLAKE3(id) |
//! | [`RecordId`] | 32 | BLAKE3 `derive_key("cairn 2026 head record id v1", public key)` |
//! | [`ObjectVersionId`] | 16 | random per object version |
//! | [`NodeId`] | 1..=64 | a libp2p PeerId (multihash) |
//!
//! ## Object layout ([`layout`])
//!
//! An object is cut into segments (16 MiB by default); each segment's
//! plaintext into 64 KiB blocks sealed with XChaCha20-Poly1305 (the sealing
//! rules are in `cairn-crypto`); the segment ciphertext is split into `k`
//! contiguous data shards of equal, 64-byte-aligned length and extended by
//! `n - k` Reed-Solomon parity shards (`reed-solomon-simd`, GF(2^16),
//! systematic). Shard `i < k` holds ciphertext bytes
//! `[i * shard_len, (i + 1) * shard_len)`; the bytes past the ciphertext
//! come from a keyed stream (`cairn-crypto`'s `ObjectCipher::fill`).
//!
//! ## Object manifest ([`manifest`])
//!
//! `0x01 ‖ postcard(ObjectManifest)`: version id, size, layout, data key,
//! and per segment its id, plaintext length, shard length and `n`
//! `(ShardId, Option<NodeId>)` pairs. Manifests hold the data key and are
//! only stored inside encrypted index pages.
//!
//! ## Head records ([`head`])
//!
//! `0x01 ‖ postcard(HeadRecord)`: Ed25519 public key, sequence, payload
//! (≤ 1 KiB), signature over
//! `"cairn 2026 head record v1\0" ‖ key ‖ sequence (u64 LE) ‖ payload length (u64 LE) ‖ payload`.
//! A node stores a record under `RecordId` only if the id matches the key,
//! the signature verifies strictly, and the sequence is higher than the one
//! it holds ([`head::accept`]).
//!
//! ## Shard protocol ([`shard`], `/cairn/shard/1`)
//!
//! One request per stream: a framed [`shard::Request`] (a `Put` is followed
//! by its raw body), answered by a framed [`shard::Response`] (a `Data` is
//! followed by its raw body). Frames are at most [`shard::MAX_MESSAGE_SIZE`]
//! bytes; shards at most [`shard::MAX_SHARD_SIZE`].

pub mod codec;
pub mod error;
pub mod head;
pub mod ids;
pub mod layout;
pub mod manifest;
pub mod node;
pub mod profile;
pub mod proof;
pub mod shard;
pub mod units;

pub use error::Error;
pub use ids::{NodeId, ObjectVersionId, RecordId, SegmentId, ShardId};
pub use layout::{Layout, SegmentLayout};
pub use manifest::{ObjectManifest, SegmentManifest, ShardPlacement};
