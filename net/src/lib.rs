//! # cairn-net
//!
//! The libp2p Swarm of Cairn — QUIC first, TCP + Noise + Yamux as fallback,
//! Kademlia, identify, ping and the shard protocol `/cairn/shard/1` on
//! streams — owned by one event-loop task and driven through a cloneable
//! handle with a bounded command channel. Used by storage nodes (Kademlia
//! server mode) and clients (client mode).
//!
//! It knows nothing of keys or buckets. Built in the storage-node issue.
