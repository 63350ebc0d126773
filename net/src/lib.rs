//! # cairn-net
//!
//! The libp2p Swarm of Cairn — QUIC first, TCP + Noise + Yamux as
//! fallback, Kademlia (`/cairn/kad/1`), identify, ping, and the shard
//! protocol `/cairn/shard/1` on raw streams so shard bodies stream instead
//! of being buffered — owned by one event-loop task ([`swarm`]) and driven
//! through a cloneable [`NetHandle`] with a bounded command channel.
//!
//! Storage nodes run it in Kademlia server mode with a RocksDB-backed
//! [`store::RecordBackend`]; clients in client mode with memory. Every DHT
//! record goes through [`store::HeadStore`], which keeps only validly
//! signed head records with increasing sequence numbers. This crate knows
//! nothing of keys or buckets.

pub mod error;
pub mod handle;
pub mod shard_client;
pub mod store;
pub mod swarm;

pub use error::Error;
pub use handle::{NetHandle, Network, SHARD};
pub use libp2p::multiaddr::Protocol as libp2p_protocol;
pub use libp2p::{Multiaddr, PeerId, Stream, identity};
pub use libp2p_stream::IncomingStreams;
pub use shard_client::{ShardClient, Timeouts};
pub use swarm::{NetConfig, Role};
