//! # cairn-storage-node
//!
//! The `cairn-node` daemon that node operators run. It joins the Cairn DHT
//! in Kademlia server mode (via `cairn-net`), stores ciphertext shards in
//! plain files with their metadata, leases and the DHT's head records in
//! RocksDB ([`store`]), serves the shard protocol with per-peer limits
//! ([`service`], [`limits`]), and shows itself over HTTP ([`admin`],
//! [`metrics`]).
//!
//! **Invariant:** this crate never depends on `cairn-crypto` or
//! `cairn-client` (checked by `tests/tests/invariants.rs`). A node cannot
//! leak a key it never links, and it checks head-record signatures with
//! `cairn-proto` alone.

pub mod admin;
pub mod charts;
pub mod config;
pub mod error;
pub mod identity;
pub mod leaving;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod quota;
pub mod service;
pub mod shard_file;
pub mod store;
pub mod usage;

pub use config::NodeConfig;
pub use error::Error;
pub use node::Node;
pub use store::ShardStore;
