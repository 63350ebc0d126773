//! The shape of a bucket index, without any I/O: a root page that lists
//! leaf pages in key order, and leaf pages of sorted `key → value` entries.
//!
//! Writers apply a batch of [`Op`]s to the leaves they touch ([`apply`]),
//! which yields [`Slot`]s: leaves kept as they were and new leaves to be
//! sealed and stored. Two roots that diverged are joined by [`merge`],
//! last writer wins per key (by [`Value::stamp`]).
//!
//! Two levels hold about 4 000 leaves in a 1 MiB root, i.e. some hundreds
//! of thousands of keys; deeper trees are future work (see ARCHITECTURE.md).

use std::collections::BTreeMap;

use cairn_proto::{NodeId, ShardId};
use serde::{Deserialize, Serialize};

/// A leaf is split when its entries grow past twice this many bytes.
pub const LEAF_TARGET: usize = 64 * 1024;

/// A stored, sealed page: its id (BLAKE3 of the ciphertext), its length
/// and the nodes that hold copies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagePtr {
    /// BLAKE3 of the sealed page.
    pub id: ShardId,
    /// Sealed length in bytes.
    pub len: u32,
    /// Nodes holding a copy.
    pub holders: Vec<NodeId>,
}

/// A value with the stamp that orders concurrent writes of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// `(milliseconds since the epoch, random)`: the larger stamp wins a merge.
    pub stamp: (u64, u64),
    /// The encoded entry (an object entry, a bucket description).
    pub data: Vec<u8>,
}

/// One change to the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace.
    Put(String, Value),
    /// Remove if present.
    Delete(String),
}

impl Op {
    /// The key the op changes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put(k, _) | Op::Delete(k) => k,
        }
    }
}

/// A leaf page: entries sorted by key, keys unique.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    /// The entries.
    pub entries: Vec<(String, Value)>,
}

/// Where a leaf is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafRef {
    /// Its first key (keys below the first leaf's go to the first leaf).
    pub first: String,
    /// The sealed page.
    pub page: PagePtr,
    /// Entries in it.
    pub count: u64,
}

/// The root page: leaves in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// The leaves.
    pub leaves: Vec<LeafRef>,
}

/// A page as stored (sealed) in the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Page {
    /// The root.
    Root(Root),
    /// A leaf.
    Leaf(Leaf),
}

/// One leaf of a new root: kept from the old root, or new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Unchanged.
    Keep(LeafRef),
    /// To be sealed and stored.
    New(Leaf),
}

fn entry_size(key: &str, v: &Value) -> usize {
    key.len() + v.data.len() + 24
}

impl Root {
    /// Entries in the whole tree.
    pub fn count(&self) -> u64 {
        self.leaves.iter().map(|l| l.count).sum()
    }

    /// The index of the leaf that holds (or would hold) `key`, if any leaf exists.
    pub fn leaf_for(&self, key: &str) -> Option<usize> {
        if self.leaves.is_empty() {
            return None;
        }
        Some(self.leaves.partition_point(|l| l.first.as_str() <= key).saturating_sub(1))
    }

    /// Leaves that may hold keys in `from..` that start with `prefix`, in order.
    pub fn leaves_for_prefix(&self, prefix: &str, from: &str) -> std::ops::Range<usize> {
        let start = self.leaf_for(prefix.max(from)).unwrap_or(0);
        let end = if prefix.is_empty() {
            self.leaves.len()
        } else {
            // Past the last leaf whose first key is still <= every key with the prefix.
            self.leaves.partition_point(|l| l.first.as_str() < prefix || l.first.starts_with(prefix))
        };
        start..end.max(start)
    }
}

impl Leaf {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| &self.entries[i].1)
    }

    /// Applies one op; returns the value it replaced or removed.
    fn apply(&mut self, op: Op) -> Option<Value> {
        let at = self.entries.binary_search_by(|(k, _)| k.as_str().cmp(op.key()));
        match (op, at) {
            (Op::Put(_, v), Ok(i)) => Some(std::mem::replace(&mut self.entries[i].1, v)),
            (Op::Put(k, v), Err(i)) => {
                self.entries.insert(i, (k, v));
                None
            }
            (Op::Delete(_), Ok(i)) => Some(self.entries.remove(i).1),
            (Op::Delete(_), Err(_)) => None,
        }
    }
}

/// Cuts sorted entries into leaves of about [`LEAF_TARGET`] bytes.
pub fn build_leaves(entries: Vec<(String, Value)>) -> Vec<Leaf> {
    let mut leaves = Vec::new();
    let mut cur = Leaf::default();
    let mut size = 0;
    for (k, v) in entries {
        let s = entry_size(&k, &v);
        if size + s > LEAF_TARGET && !cur.entries.is_empty() {
            leaves.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += s;
        cur.entries.push((k, v));
    }
    if !cur.entries.is_empty() {
        leaves.push(cur);
    }
    leaves
}

/// Which leaves of `root` the ops touch (an empty root: none; the caller
/// then passes no leaves and everything goes into new ones).
pub fn touched(root: &Root, ops: &[Op]) -> Vec<usize> {
    let mut v: Vec<usize> = ops.iter().filter_map(|op| root.leaf_for(op.key())).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Applies `ops` in order to `root`, given the touched leaves (see
/// [`touched`]) loaded. Returns the new leaves and, per op, the value it
/// replaced or removed.
pub fn apply(root: &Root, mut loaded: BTreeMap<usize, Leaf>, ops: Vec<Op>) -> (Vec<Slot>, Vec<Option<Value>>) {
    let mut replaced = Vec::with_capacity(ops.len());
    let mut fresh = Leaf::default();
    for op in ops {
        let leaf = match root.leaf_for(op.key()) {
            Some(i) => loaded.entry(i).or_default(),
            None => &mut fresh,
        };
        replaced.push(leaf.apply(op));
    }
    let mut slots = Vec::with_capacity(root.leaves.len() + 1);
    for (i, r) in root.leaves.iter().enumerate() {
        match loaded.remove(&i) {
            None => slots.push(Slot::Keep(r.clone())),
            Some(leaf) => {
                let size: usize = leaf.entries.iter().map(|(k, v)| entry_size(k, v)).sum();
                if size > 2 * LEAF_TARGET {
                    slots.extend(build_leaves(leaf.entries).into_iter().map(Slot::New));
                } else if !leaf.entries.is_empty() {
                    slots.push(Slot::New(leaf));
                }
            }
        }
    }
    if !fresh.entries.is_empty() {
        slots.extend(build_leaves(fresh.entries).into_iter().map(Slot::New));
    }
    (slots, replaced)
}

/// Joins entry lists of diverged trees: every key of either, and for a key
/// in both, the value with the larger stamp.
pub fn merge(a: Vec<(String, Value)>, b: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let mut all: BTreeMap<String, Value> = a.into_iter().collect();
    for (k, v) in b {
        match all.get(&k) {
            Some(old) if old.stamp >= v.stamp => {}
            _ => {
                all.insert(k, v);
            }
        }
    }
    all.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(s: u64, len: usize) -> Value {
        Value { stamp: (s, 0), data: vec![7; len] }
    }

    fn ptr(n: u8) -> PagePtr {
        PagePtr { id: ShardId([n; 32]), len: 0, holders: Vec::new() }
    }

    /// Stores `slots` as if uploaded, with the leaves kept in `pages`.
    fn store(slots: Vec<Slot>, pages: &mut Vec<Leaf>) -> Root {
        let leaves = slots
            .into_iter()
            .map(|s| match s {
                Slot::Keep(r) => r,
                Slot::New(leaf) => {
                    pages.push(leaf.clone());
                    LeafRef {
                        first: leaf.entries[0].0.clone(),
                        page: ptr((pages.len() - 1) as u8),
                        count: leaf.entries.len() as u64,
                    }
                }
            })
            .collect();
        Root { leaves }
    }

    fn commit(root: &Root, pages: &mut Vec<Leaf>, ops: Vec<Op>) -> (Root, Vec<Option<Value>>) {
        let loaded = touched(root, &ops).into_iter().map(|i| (i, pages[root.leaves[i].page.id.0[0] as usize].clone()));
        let (slots, replaced) = apply(root, loaded.collect(), ops);
        (store(slots, pages), replaced)
    }

    fn all(root: &Root, pages: &[Leaf]) -> Vec<String> {
        root.leaves.iter().flat_map(|l| pages[l.page.id.0[0] as usize].entries.iter().map(|(k, _)| k.clone())).collect()
    }

    #[test]
    fn inserts_split_and_stay_sorted_and_deletes_empty_leaves() {
        let mut pages = Vec::new();
        let mut root = Root::default();
        // 3 batches of 100 keys of 1 KiB, interleaved, force splits.
        for batch in 0..3u64 {
            let ops = (0..100u64).map(|i| Op::Put(format!("k{:04}", i * 3 + batch), val(batch, 1000))).collect();
            root = commit(&root, &mut pages, ops).0;
        }
        let keys = all(&root, &pages);
        assert_eq!(keys.len(), 300);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(root.leaves.len() > 2, "leaves split: {}", root.leaves.len());
        assert_eq!(root.count(), 300);
        // Replacing returns the old value; deleting everything leaves no leaves.
        let (r2, replaced) = commit(&root, &mut pages, vec![Op::Put("k0000".into(), val(9, 1))]);
        assert_eq!(replaced, vec![Some(val(0, 1000))]);
        let ops = (0..300u64).map(|i| Op::Delete(format!("k{i:04}"))).collect();
        let (r3, removed) = commit(&r2, &mut pages, ops);
        assert!(removed.iter().all(Option::is_some));
        assert!(r3.leaves.is_empty());
    }

    #[test]
    fn prefix_ranges_cover_exactly_the_leaves_needed() {
        let mut pages = Vec::new();
        let ops = ["a/1", "a/2", "b/1", "b/2", "c/1"]
            .iter()
            .flat_map(|p| (0..60).map(move |i| Op::Put(format!("{p}/{i:03}"), val(1, 1000))))
            .collect();
        let root = commit(&Root::default(), &mut pages, ops).0;
        for prefix in ["", "a/", "b/1", "b/2/0", "c/", "d", "0"] {
            let range = root.leaves_for_prefix(prefix, "");
            let found: Vec<String> = root.leaves[range]
                .iter()
                .flat_map(|l| pages[l.page.id.0[0] as usize].entries.iter().map(|(k, _)| k.clone()))
                .filter(|k| k.starts_with(prefix))
                .collect();
            let expect: Vec<String> = all(&root, &pages).into_iter().filter(|k| k.starts_with(prefix)).collect();
            assert_eq!(found, expect, "prefix {prefix:?}");
        }
    }

    #[test]
    fn merge_keeps_every_key_and_the_newest_value() {
        let a = vec![("x".to_string(), val(1, 1)), ("y".to_string(), val(5, 1))];
        let b = vec![("x".to_string(), val(2, 2)), ("z".to_string(), val(1, 3))];
        let m = merge(a, b);
        assert_eq!(m, vec![("x".into(), val(2, 2)), ("y".into(), val(5, 1)), ("z".into(), val(1, 3))]);
    }
}
