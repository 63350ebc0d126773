//! Pages lately read or written, kept decoded in memory: a commit edits
//! the leaves the previous commit wrote, and a read looks in the leaves
//! the last one opened. Without this each of them went to the local cache
//! (RocksDB on the blocking pool), then decrypted and decoded the page
//! again: 1–9 ms of a small put on a busy machine. Bounded by the pages'
//! sealed sizes; the least recently used go first.

use std::collections::{BTreeMap, HashMap};

use cairn_proto::ShardId;

/// Bytes of pages kept per tree.
pub const BUDGET: usize = 16 << 20;

/// A least-recently-used map of pages by id, bounded by their sizes.
#[derive(Debug)]
pub struct Recent<V> {
    budget: usize,
    used: usize,
    tick: u64,
    map: HashMap<ShardId, (V, usize, u64)>,
    order: BTreeMap<u64, ShardId>,
}

impl<V: Clone> Recent<V> {
    /// An empty map holding at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self { budget, used: 0, tick: 0, map: HashMap::new(), order: BTreeMap::new() }
    }

    /// The page under `id`, now the most recently used.
    pub fn get(&mut self, id: &ShardId) -> Option<V> {
        self.tick += 1;
        let (v, _, at) = self.map.get_mut(id)?;
        self.order.remove(at);
        *at = self.tick;
        self.order.insert(self.tick, *id);
        Some(v.clone())
    }

    /// Keeps `v` (of `size` bytes) under `id`, dropping the least recently
    /// used pages past the budget. A page larger than the budget is not
    /// kept.
    pub fn insert(&mut self, id: ShardId, v: V, size: usize) {
        if let Some((_, old, at)) = self.map.remove(&id) {
            self.used -= old;
            self.order.remove(&at);
        }
        if size > self.budget {
            return;
        }
        while self.used + size > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((_, s, _)) = self.map.remove(&oldest) {
                self.used -= s;
            }
        }
        self.tick += 1;
        self.used += size;
        self.order.insert(self.tick, id);
        self.map.insert(id, (v, size, self.tick));
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> ShardId {
        ShardId([b; 32])
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_budget_holds() {
        let mut r = Recent::new(100);
        r.insert(id(1), 1, 40);
        r.insert(id(2), 2, 40);
        assert_eq!(r.get(&id(1)), Some(1));
        // 3 does not fit beside both: 2, the least recently used, goes.
        r.insert(id(3), 3, 40);
        assert_eq!(r.get(&id(2)), None);
        assert_eq!((r.get(&id(1)), r.get(&id(3))), (Some(1), Some(3)));
        assert_eq!(r.used(), 80);
        // Replacing an entry counts its new size only.
        r.insert(id(3), 30, 10);
        assert_eq!((r.get(&id(3)), r.used()), (Some(30), 50));
        // Larger than the budget: not kept, nothing else dropped.
        r.insert(id(4), 4, 101);
        assert_eq!((r.get(&id(4)), r.used()), (None, 50));
        // One page that fills the budget leaves nothing else.
        r.insert(id(5), 5, 100);
        assert_eq!((r.get(&id(1)), r.get(&id(3)), r.get(&id(5)), r.used()), (None, None, Some(5), 100));
    }

    #[test]
    fn many_inserts_stay_within_the_budget() {
        let mut r = Recent::new(1000);
        for i in 0..10_000u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            r.insert(ShardId(b), i, (i % 97) as usize + 1);
            assert!(r.used() <= 1000);
            assert_eq!(r.map.len(), r.order.len());
        }
        assert_eq!(r.map.values().map(|(_, s, _)| s).sum::<usize>(), r.used());
    }
}
