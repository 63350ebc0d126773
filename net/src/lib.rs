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
pub mod identity_file;
pub mod ip_limits;
pub mod network_key;
pub mod profile;
pub mod shard_client;
pub mod store;
pub mod swarm;

pub use error::Error;
pub use handle::{NetHandle, Network, SHARD};
pub use ip_limits::IpLimit;
pub use libp2p::multiaddr::Protocol as libp2p_protocol;
pub use libp2p::{Multiaddr, PeerId, Stream, identity};
pub use libp2p_stream::IncomingStreams;
pub use shard_client::{ShardClient, Timeouts};
pub use swarm::{LookupStats, NetConfig, NetworkKey, Role};

/// Orders `peers` by Kademlia distance to `key`, nearest first (the order
/// in which a lookup of `key` would find them). A record's closest nodes
/// are then a function of the nodes known, the same for every client that
/// knows the same nodes, rather than of how far one lookup got.
pub fn sort_by_distance(key: &[u8], peers: &mut [PeerId]) {
    let target = libp2p::kad::KBucketKey::new(key.to_vec());
    peers.sort_by_cached_key(|p| libp2p::kad::KBucketKey::from(*p).distance(&target));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_sort_nearest_first_whatever_their_order() {
        let key = b"some record id";
        let target = libp2p::kad::KBucketKey::new(key.to_vec());
        let peers: Vec<PeerId> = (0..12).map(|_| PeerId::random()).collect();
        let mut a = peers.clone();
        let mut b: Vec<PeerId> = peers.into_iter().rev().collect();
        sort_by_distance(key, &mut a);
        sort_by_distance(key, &mut b);
        assert_eq!(a, b, "the order depends only on the set");
        let d: Vec<_> = a.iter().map(|p| libp2p::kad::KBucketKey::from(*p).distance(&target)).collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "nearest first");
    }
}
