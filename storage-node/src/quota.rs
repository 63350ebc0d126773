//! Bytes stored per uploading peer, against the quota an operator sets
//! (`[limits] max_mib_per_peer`). The store records who uploaded each shard
//! (`'p' ‖ shard id → peer id` in RocksDB, written and removed in the same
//! batches as the shard) and rebuilds these counts from it at start.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_proto::shard::ShardError;

/// Stored and reserved bytes per peer (peer ids as bytes).
#[derive(Debug, Default)]
pub struct PeerUsage {
    /// Bytes one peer may store; 0: no limit.
    quota: AtomicU64,
    peers: Mutex<HashMap<Vec<u8>, Usage>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    stored: u64,
    reserved: u64,
}

impl PeerUsage {
    /// Sets the quota (0: none).
    pub fn set_quota(&self, bytes: u64) {
        self.quota.store(bytes, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Usage>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Promises `len` more bytes to `peer`, or refuses with its usage.
    pub fn reserve(&self, peer: &[u8], len: u64) -> Result<(), ShardError> {
        if len == 0 {
            // A shard the node holds already: nothing to count (and no
            // entry for a peer that stores nothing).
            return Ok(());
        }
        let quota = self.quota.load(Ordering::Relaxed);
        let mut peers = self.lock();
        let u = peers.entry(peer.to_vec()).or_default();
        let used = u.stored + u.reserved;
        if quota > 0 && used.saturating_add(len) > quota {
            return Err(ShardError::PeerQuota { used, quota });
        }
        u.reserved += len;
        Ok(())
    }

    /// Gives back a promise (the put ended, stored or not).
    pub fn release(&self, peer: &[u8], len: u64) {
        let mut peers = self.lock();
        if let Some(u) = peers.get_mut(peer) {
            u.reserved = u.reserved.saturating_sub(len);
            if u.stored == 0 && u.reserved == 0 {
                // A put that stored nothing leaves no entry behind (peer
                // ids are free: the map holds only peers that store).
                peers.remove(peer);
            }
        }
    }

    /// `peer` now stores `len` more bytes.
    pub fn stored(&self, peer: &[u8], len: u64) {
        self.lock().entry(peer.to_vec()).or_default().stored += len;
    }

    /// A shard of `len` bytes that `peer` uploaded is gone.
    pub fn removed(&self, peer: &[u8], len: u64) {
        let mut peers = self.lock();
        if let Some(u) = peers.get_mut(peer) {
            u.stored = u.stored.saturating_sub(len);
            if u.stored == 0 && u.reserved == 0 {
                peers.remove(peer);
            }
        }
    }

    /// Bytes stored by each peer that stores any.
    pub fn all_stored(&self) -> HashMap<Vec<u8>, u64> {
        self.lock().iter().filter(|(_, u)| u.stored > 0).map(|(p, u)| (p.clone(), u.stored)).collect()
    }

    /// Bytes `peer` stores.
    pub fn used(&self, peer: &[u8]) -> u64 {
        self.lock().get(peer).map_or(0, |u| u.stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_held_to_its_quota_and_others_are_not_affected() {
        let u = PeerUsage::default();
        u.set_quota(100);
        u.reserve(b"a", 60).expect("fits");
        assert_eq!(u.reserve(b"a", 41), Err(ShardError::PeerQuota { used: 60, quota: 100 }), "reserved counts");
        u.stored(b"a", 60);
        u.release(b"a", 60);
        assert_eq!(u.used(b"a"), 60);
        u.reserve(b"b", 100).expect("another peer");
        u.release(b"b", 100);
        u.removed(b"a", 60);
        u.reserve(b"a", 100).expect("freed");
        u.reserve(b"c", 10).expect("c");
        u.release(b"c", 10);
        u.reserve(b"d", 0).expect("a shard held already");
        assert_eq!(u.lock().len(), 1, "peers that store nothing leave no entry");
        u.set_quota(0);
        u.reserve(b"a", u64::MAX / 2).expect("no limit");
    }
}
