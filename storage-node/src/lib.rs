//! # cairn-storage-node
//!
//! The `cairn-node` daemon that node operators run: Kademlia server mode
//! via `cairn-net`, a RocksDB shard and record store with exact capacity
//! accounting, per-peer limits, audits, Prometheus metrics and a dashboard.
//!
//! **Invariant:** this crate never depends on `cairn-crypto` or
//! `cairn-client` (checked by `tests/tests/invariants.rs`). A node cannot
//! leak a key it never links. Built in the storage-node issue.
