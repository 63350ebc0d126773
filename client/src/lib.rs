//! # cairn-client
//!
//! The client side of Cairn: everything that sees plaintext and keys.
//!
//! - The data pipeline: an object's bytes are cut into segments
//!   ([`pipeline`]), each segment's 64 KiB blocks sealed with
//!   XChaCha20-Poly1305 and the ciphertext erasure-coded into `k` data and
//!   `n - k` parity shards, each named by its BLAKE3 hash ([`segment`]);
//!   and back, from any `k` verified shards, or for a byte range from only
//!   the shards and blocks that hold it ([`range`]).
//! - The network side: which nodes get which shards ([`placement`]),
//!   uploads with long-tail cancellation and verified downloads
//!   ([`transfer`]).
//! - Metadata: each bucket is a tree of sealed index pages ([`index`],
//!   [`pages`]) whose root a signed head record in the DHT names, written
//!   with group commit and compare-and-swap ([`tree`]) on a majority of
//!   the record's nodes (`heads`); objects live in
//!   buckets ([`bucket`]), buckets in the account's list ([`client`]).
//! - Objects as extents over shared data versions ([`entry`], [`objects`]),
//!   collected once no name uses them ([`gc`]); listing ([`listing`]);
//!   multipart uploads kept in the index ([`multipart`]); every stored
//!   format in one place ([`formats`]).
//! - A local RocksDB cache of pages and nodes ([`cache`]).
//!
//! Repair comes later. This crate must not depend on FUSE or HTTP.

pub mod audit;
mod batch;
pub mod bench;
pub mod bucket;
pub mod cache;
pub mod client;
pub mod entry;
pub mod error;
pub mod etag;
pub mod formats;
pub mod gc;
mod heads;
pub mod index;
pub mod journal;
pub mod listing;
pub mod multipart;
pub mod objects;
pub mod padding;
pub mod pages;
pub mod pipeline;
pub mod placement;
pub mod policy;
pub mod pool;
pub mod range;
mod ranged;
pub mod recent;
pub mod renew;
pub mod repair;
pub mod schedule;
pub mod segment;
pub mod tasks;
pub mod transfer;
pub mod tree;

pub use bucket::{Bucket, BucketSettings, Listing, ObjectInfo, Opened, PutOptions, SegmentHealth};
pub use client::{BucketInfo, Client, ClientConfig, Maintenance, MaintenanceLoop, NodeStatus};
pub use entry::{Checksum, ChecksumAlgorithm, Kind, Posix};
pub use error::Error;
pub use multipart::{Part, Upload};
pub use objects::{MetadataDirective, Patch};
pub use pipeline::{EncodeSummary, Parallelism, decode_object, encode_object};
pub use range::{ShardSource, read_object_range, read_segment_range};
pub use renew::RenewReport;
pub use repair::{RepairOptions, RepairReport};
pub use segment::{DecodedSegment, EncodedSegment, SegmentPos};
pub use transfer::Hedging;
