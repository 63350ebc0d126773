//! # cairn-client
//!
//! The client side of Cairn: everything that sees plaintext and keys.
//!
//! Today this is the data pipeline, with no network: an object's bytes are
//! cut into segments ([`pipeline`]), each segment's 64 KiB blocks sealed
//! with XChaCha20-Poly1305 and the ciphertext erasure-coded into `k` data
//! and `n - k` parity shards, each named by its BLAKE3 hash ([`segment`]);
//! and back, from any `k` verified shards, or for a byte range from only
//! the shards and blocks that hold it ([`range`]).
//!
//! Placement, transfer, the bucket index and repair come with the network
//! issues. This crate must not depend on FUSE or HTTP.

pub mod bench;
pub mod error;
pub mod pipeline;
pub mod pool;
pub mod range;
pub mod segment;

pub use error::Error;
pub use pipeline::{EncodeSummary, Parallelism, decode_object, encode_object};
pub use range::{ShardSource, read_object_range, read_segment_range};
pub use segment::{DecodedSegment, EncodedSegment, SegmentPos};
