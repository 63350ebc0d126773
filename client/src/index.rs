//! The shape of a bucket index, without any I/O: a root page that lists
//! leaf pages in key order, and leaf pages of sorted `key → value` entries.
//!
//! Writers apply groups of [`Op`]s to the leaves they touch ([`apply`]),
//! which yields [`Slot`]s: leaves kept as they were and new leaves to be
//! sealed and stored. Every value carries a [`Stamp`] from a hybrid logical
//! clock ([`Clock`]) and the writer's id; a delete leaves a tombstone (a
//! value without data). Two roots that diverged are joined by [`merge`]:
//! the larger stamp wins per key, tombstones included, so a delete survives
//! a merge with a tree that still holds the key. Tombstones older than
//! [`TOMBSTONE_TTL_MS`] are dropped from the leaves a commit rewrites:
//! only trees published at the same sequence are ever merged, and those
//! come from commits racing within seconds.
//!
//! An op may carry a precondition ([`Expect`]); a group whose precondition
//! fails is not applied, and its caller is told ([`Conflict`]) while the
//! other groups of the commit go ahead.
//!
//! Two levels hold about 4 000 leaves in a 1 MiB root, i.e. some hundreds
//! of thousands of keys; deeper trees are future work (see ARCHITECTURE.md).

use std::collections::BTreeMap;

use cairn_proto::{NodeId, ShardId};
use serde::{Deserialize, Serialize};

/// A leaf is split when its entries grow past twice this many bytes.
pub const LEAF_TARGET: usize = 64 * 1024;
/// How long a tombstone is kept (by the clock of the commits that rewrite
/// its leaf): far longer than two racing commits can be apart.
pub const TOMBSTONE_TTL_MS: u64 = 3600 * 1000;

/// When a value was written, on a hybrid logical clock: `time` is
/// milliseconds since the epoch shifted left by 16 bits plus a counter, and
/// is larger than every stamp the writer had seen; `writer` breaks ties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Hybrid logical time (`ms << 16 | counter`).
    pub time: u64,
    /// The writer (random per tree handle).
    pub writer: u64,
}

impl Stamp {
    /// The wall-clock part, milliseconds since the epoch.
    pub fn millis(&self) -> u64 {
        self.time >> 16
    }
}

/// A hybrid logical clock: never goes back, and moves past every stamp it
/// is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// The last time issued or seen.
    pub last: u64,
    /// This writer's id.
    pub writer: u64,
}

impl Clock {
    /// A new stamp after everything seen, at least the wall clock `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Stamp {
        self.last = (now_ms << 16).max(self.last.saturating_add(1));
        Stamp { time: self.last, writer: self.writer }
    }

    /// Moves the clock past `time` (a stamp read from the tree).
    pub fn observe(&mut self, time: u64) {
        self.last = self.last.max(time);
    }
}

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

/// A value and the stamp that orders concurrent writes of its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// When and by whom it was written.
    pub stamp: Stamp,
    /// The encoded entry (an object entry, a bucket description); `None`
    /// is a tombstone: the key was deleted.
    /// Shared, not copied, when a journal is edited or merged.
    #[serde(with = "cairn_proto::codec::opt_bytes")]
    pub data: Option<bytes::Bytes>,
}

impl Value {
    /// The data, unless this is a tombstone.
    pub fn live(&self) -> Option<&[u8]> {
        self.data.as_deref()
    }
}

/// What an op does to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace.
    Put(Vec<u8>),
    /// Remove (leaves a tombstone).
    Delete,
}

/// A precondition on the value an op replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// None.
    Any,
    /// The key holds no live value.
    Absent,
    /// The key holds the live value written with this stamp.
    Stamp(Stamp),
}

/// One change to the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The key it changes.
    pub key: String,
    /// What it does.
    pub change: Change,
    /// What must hold for it (and the rest of its group) to apply.
    pub expect: Expect,
}

impl Op {
    /// Insert or replace `key`.
    pub fn put(key: impl Into<String>, data: Vec<u8>) -> Self {
        Self { key: key.into(), change: Change::Put(data), expect: Expect::Any }
    }

    /// Delete `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        Self { key: key.into(), change: Change::Delete, expect: Expect::Any }
    }

    /// The same op with a precondition.
    pub fn expecting(self, expect: Expect) -> Self {
        Self { expect, ..self }
    }

    /// The key the op changes.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Change {
    /// The value's data: `None` for a delete (a tombstone).
    pub fn into_data(self) -> Option<Vec<u8>> {
        match self {
            Change::Put(d) => Some(d),
            Change::Delete => None,
        }
    }
}

/// Checks every precondition of a group against `current`, the stamp of
/// each key's live value (none: absent).
pub fn check(ops: &[Op], mut current: impl FnMut(&str) -> Option<Stamp>) -> Result<(), Conflict> {
    for op in ops {
        let cur = current(&op.key);
        let ok = match op.expect {
            Expect::Any => true,
            Expect::Absent => cur.is_none(),
            Expect::Stamp(s) => cur == Some(s),
        };
        if !ok {
            return Err(Conflict { key: op.key.clone() });
        }
    }
    Ok(())
}

/// A group of ops was not applied: the precondition on `key` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The key whose precondition failed.
    pub key: String,
}

/// Per op of a group: the live value it replaced or removed.
pub type Replaced = Vec<Option<Value>>;

/// A leaf page: entries sorted by key, keys unique (tombstones included).
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
    /// Live entries in it (tombstones not counted).
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
    key.len() + v.data.as_ref().map_or(0, bytes::Bytes::len) + 32
}

impl Root {
    /// Live entries in the whole tree.
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

    /// Leaves that may hold keys at or after `from` that start with
    /// `prefix`, in order.
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
    /// The live value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.get_any(key).filter(|v| v.data.is_some())
    }

    /// The value under `key`, tombstone or not.
    pub fn get_any(&self, key: &str) -> Option<&Value> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| &self.entries[i].1)
    }

    /// Live entries.
    pub fn live(&self) -> impl Iterator<Item = &(String, Value)> {
        self.entries.iter().filter(|(_, v)| v.data.is_some())
    }

    /// Live entries (tombstones not counted).
    pub fn live_count(&self) -> u64 {
        self.live().count() as u64
    }

    /// Sets `key` to `value`; returns the live value it replaced.
    fn set(&mut self, key: String, value: Value) -> Option<Value> {
        match self.entries.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)).filter(|v| v.data.is_some()),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Drops tombstones written before `horizon_ms`.
    fn collect_tombstones(&mut self, horizon_ms: u64) {
        self.entries.retain(|(_, v)| v.data.is_some() || v.stamp.millis() >= horizon_ms);
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
pub fn touched<'a>(root: &Root, keys: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    let mut v: Vec<usize> = keys.into_iter().filter_map(|k| root.leaf_for(k)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The leaves being rewritten by one commit: those loaded from the old
/// root, and a fresh one for keys when the root is empty.
#[derive(Debug)]
pub struct Edit<'a> {
    root: &'a Root,
    loaded: BTreeMap<usize, Leaf>,
    fresh: Leaf,
}

impl<'a> Edit<'a> {
    /// An edit of `root` with its touched leaves loaded (see [`touched`]).
    pub fn new(root: &'a Root, loaded: BTreeMap<usize, Leaf>) -> Self {
        Self { root, loaded, fresh: Leaf::default() }
    }

    fn leaf(&mut self, key: &str) -> &mut Leaf {
        match self.root.leaf_for(key) {
            Some(i) => self.loaded.entry(i).or_default(),
            None => &mut self.fresh,
        }
    }

    /// Whether the leaf that holds `key` is loaded (a missing one must be
    /// loaded before ops on `key` are applied).
    pub fn has_leaf_for(&self, key: &str) -> bool {
        self.root.leaf_for(key).is_none_or(|i| self.loaded.contains_key(&i))
    }

    /// The value under `key` as edited so far, tombstone or not.
    pub fn get_any(&mut self, key: &str) -> Option<Value> {
        self.leaf(key).get_any(key).cloned()
    }

    /// Sets `key` to a value already stamped (a journal entry being folded
    /// into the leaves).
    pub fn install(&mut self, key: String, value: Value) {
        self.leaf(&key).set(key, value);
    }

    /// Applies a group of ops atomically: all of them if every precondition
    /// holds, else none. Each op gets the next stamp of `clock`.
    pub fn apply(&mut self, ops: Vec<Op>, clock: &mut Clock, now_ms: u64) -> Result<Replaced, Conflict> {
        check(&ops, |k| self.leaf(k).get(k).map(|v| v.stamp))?;
        Ok(ops
            .into_iter()
            .map(|op| {
                let stamp = clock.tick(now_ms);
                let data = op.change.into_data();
                self.leaf(&op.key).set(op.key, Value { stamp, data: data.map(bytes::Bytes::from) })
            })
            .collect())
    }

    /// The new root's leaves; tombstones written before `horizon_ms` are
    /// dropped from the leaves rewritten.
    pub fn finish(self, horizon_ms: u64) -> Vec<Slot> {
        let Self { root, mut loaded, fresh } = self;
        let mut slots = Vec::with_capacity(root.leaves.len() + 1);
        let push = |mut leaf: Leaf, slots: &mut Vec<Slot>| {
            leaf.collect_tombstones(horizon_ms);
            let size: usize = leaf.entries.iter().map(|(k, v)| entry_size(k, v)).sum();
            if size > 2 * LEAF_TARGET {
                slots.extend(build_leaves(leaf.entries).into_iter().map(Slot::New));
            } else if !leaf.entries.is_empty() {
                slots.push(Slot::New(leaf));
            }
        };
        for (i, r) in root.leaves.iter().enumerate() {
            match loaded.remove(&i) {
                None => slots.push(Slot::Keep(r.clone())),
                Some(leaf) => push(leaf, &mut slots),
            }
        }
        push(fresh, &mut slots);
        slots
    }
}

/// Applies one group of ops to `root` (a convenience for tests and
/// single-op callers): the new leaves and what the ops replaced.
pub fn apply(
    root: &Root,
    loaded: BTreeMap<usize, Leaf>,
    ops: Vec<Op>,
    clock: &mut Clock,
    now_ms: u64,
) -> (Vec<Slot>, Result<Replaced, Conflict>) {
    let mut edit = Edit::new(root, loaded);
    let r = edit.apply(ops, clock, now_ms);
    (edit.finish(now_ms.saturating_sub(TOMBSTONE_TTL_MS)), r)
}

/// Joins entry lists of diverged trees: every key of either, and for a key
/// in both, the value with the larger stamp (a tombstone wins over an older
/// value).
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

/// The largest stamp time in `entries` (the clock a merged tree starts from).
pub fn max_time<'a>(entries: impl IntoIterator<Item = &'a (String, Value)>) -> u64 {
    entries.into_iter().map(|(_, v)| v.stamp.time).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ptr(n: u8) -> PagePtr {
        PagePtr { id: ShardId([n; 32]), len: 0, holders: Vec::new() }
    }

    /// A tree in memory: leaves kept in `pages`, pointed at by index.
    #[derive(Default)]
    struct Mem {
        pages: Vec<Leaf>,
        root: Root,
        clock: u64,
    }

    impl Mem {
        fn store(&mut self, slots: Vec<Slot>) -> Root {
            let leaves = slots
                .into_iter()
                .map(|s| match s {
                    Slot::Keep(r) => r,
                    Slot::New(leaf) => {
                        self.pages.push(leaf.clone());
                        LeafRef {
                            first: leaf.entries[0].0.clone(),
                            page: ptr((self.pages.len() - 1) as u8),
                            count: leaf.live_count(),
                        }
                    }
                })
                .collect();
            Root { leaves }
        }

        fn leaf(&self, r: &LeafRef) -> Leaf {
            self.pages[r.page.id.0[0] as usize].clone()
        }

        fn commit(&mut self, ops: Vec<Op>, writer: u64, now_ms: u64) -> Result<Replaced, Conflict> {
            let keys: Vec<String> = ops.iter().map(|o| o.key.clone()).collect();
            let loaded = touched(&self.root, keys.iter().map(String::as_str))
                .into_iter()
                .map(|i| (i, self.leaf(&self.root.leaves[i])))
                .collect();
            let mut clock = Clock { last: self.clock, writer };
            let root = self.root.clone();
            let (slots, r) = apply(&root, loaded, ops, &mut clock, now_ms);
            self.root = self.store(slots);
            self.clock = clock.last;
            r
        }

        fn entries(&self) -> Vec<(String, Value)> {
            self.root.leaves.iter().flat_map(|l| self.leaf(l).entries).collect()
        }

        fn live_keys(&self) -> Vec<String> {
            self.entries().into_iter().filter(|(_, v)| v.data.is_some()).map(|(k, _)| k).collect()
        }
    }

    /// Keys of 1 KiB values are not pages: the test pages hold few entries
    /// only when values are large.
    fn big(n: u8) -> Vec<u8> {
        vec![n; 1000]
    }

    #[test]
    fn inserts_split_and_stay_sorted_and_deletes_leave_tombstones_until_their_ttl() {
        let mut m = Mem::default();
        // 3 batches of 100 keys of 1 KiB, interleaved, force splits.
        for batch in 0..3u64 {
            let ops = (0..100u64).map(|i| Op::put(format!("k{:04}", i * 3 + batch), big(batch as u8))).collect();
            m.commit(ops, 1, 1000).expect("no preconditions");
        }
        let keys = m.live_keys();
        assert_eq!(keys.len(), 300);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(m.root.leaves.len() > 2, "leaves split: {}", m.root.leaves.len());
        assert_eq!(m.root.count(), 300);
        // Replacing returns the old value.
        let replaced = m.commit(vec![Op::put("k0000", vec![9])], 1, 1000).expect("applies");
        assert_eq!(replaced[0].as_ref().and_then(Value::live), Some(&big(0)[..]));
        // Deleting everything leaves 300 tombstones and no live entry ...
        let ops = (0..300u64).map(|i| Op::delete(format!("k{i:04}"))).collect();
        let removed = m.commit(ops, 1, 2000).expect("applies");
        assert!(removed.iter().all(Option::is_some));
        assert_eq!(m.root.count(), 0);
        assert_eq!(m.entries().len(), 300);
        // ... until a commit past their TTL rewrites their leaves.
        let ops = (0..300u64).map(|i| Op::delete(format!("k{i:04}"))).collect();
        let later = 2000 + TOMBSTONE_TTL_MS + 1;
        let removed = m.commit(ops, 1, later).expect("applies");
        assert!(removed.iter().all(Option::is_none), "deleting a deleted key replaces nothing");
        // The new tombstones are fresh; the old ones are gone with their leaves rewritten.
        assert!(m.entries().iter().all(|(_, v)| v.stamp.millis() == later));
    }

    #[test]
    fn a_failed_precondition_applies_nothing_of_its_group() {
        let mut m = Mem::default();
        m.commit(vec![Op::put("a", vec![1])], 1, 10).expect("applies");
        let stamp = m.entries()[0].1.stamp;
        let conflict = m
            .commit(
                vec![Op::put("b", vec![2]), Op::delete("a").expecting(Expect::Stamp(Stamp { time: 1, writer: 1 }))],
                1,
                20,
            )
            .expect_err("stale stamp");
        assert_eq!(conflict.key, "a");
        assert_eq!(m.live_keys(), vec!["a".to_string()]);
        // With the right stamp it applies; Absent holds for a deleted key.
        m.commit(vec![Op::put("b", vec![2]), Op::delete("a").expecting(Expect::Stamp(stamp))], 1, 30).expect("applies");
        assert_eq!(m.live_keys(), vec!["b".to_string()]);
        m.commit(vec![Op::put("a", vec![3]).expecting(Expect::Absent)], 1, 40).expect("a is absent");
        assert!(m.commit(vec![Op::put("a", vec![4]).expecting(Expect::Absent)], 1, 50).is_err());
    }

    #[test]
    fn the_clock_never_goes_back_and_passes_what_it_saw() {
        let mut c = Clock { last: 0, writer: 7 };
        let a = c.tick(100);
        let b = c.tick(50);
        assert!(b > a, "a wall clock that went back does not move stamps back");
        c.observe(1000 << 16);
        assert!(c.tick(100).time > 1000 << 16);
    }

    #[test]
    fn prefix_ranges_cover_exactly_the_leaves_needed() {
        let mut m = Mem::default();
        let ops = ["a/1", "a/2", "b/1", "b/2", "c/1"]
            .iter()
            .flat_map(|p| (0..60).map(move |i| Op::put(format!("{p}/{i:03}"), big(1))))
            .collect();
        m.commit(ops, 1, 1).expect("applies");
        for prefix in ["", "a/", "b/1", "b/2/0", "c/", "d", "0"] {
            let range = m.root.leaves_for_prefix(prefix, "");
            let found: Vec<String> = m.root.leaves[range]
                .iter()
                .flat_map(|l| m.leaf(l).entries.into_iter().map(|(k, _)| k))
                .filter(|k| k.starts_with(prefix))
                .collect();
            let expect: Vec<String> = m.live_keys().into_iter().filter(|k| k.starts_with(prefix)).collect();
            assert_eq!(found, expect, "prefix {prefix:?}");
        }
    }

    #[test]
    fn merge_keeps_every_key_the_newest_value_and_deletes() {
        let v = |t: u64, d: Option<u8>| Value { stamp: Stamp { time: t, writer: 0 }, data: d.map(|d| vec![d].into()) };
        let a = vec![("x".to_string(), v(1, Some(1))), ("y".to_string(), v(5, Some(1))), ("w".into(), v(9, None))];
        let b = vec![("x".to_string(), v(2, Some(2))), ("z".to_string(), v(1, Some(3))), ("w".into(), v(3, Some(4)))];
        let m = merge(a, b);
        assert_eq!(
            m,
            vec![
                ("w".into(), v(9, None)),
                ("x".into(), v(2, Some(2))),
                ("y".into(), v(5, Some(1))),
                ("z".into(), v(1, Some(3)))
            ]
        );
    }

    #[derive(Clone, Debug)]
    enum Action {
        Put(u8, u8),
        Delete(u8),
        Copy(u8, u8),
        Rename(u8, u8),
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            (0..8u8, any::<u8>()).prop_map(|(k, v)| Action::Put(k, v)),
            (0..8u8).prop_map(Action::Delete),
            (0..8u8, 0..8u8).prop_map(|(a, b)| Action::Copy(a, b)),
            (0..8u8, 0..8u8).prop_map(|(a, b)| Action::Rename(a, b)),
        ]
    }

    /// A writer turns an action into ops against what it sees (`view`),
    /// with the preconditions a careful client uses for copy and rename.
    fn ops_for(a: &Action, view: &BTreeMap<String, Value>) -> Option<Vec<Op>> {
        let key = |k: u8| format!("k{k}");
        let live = |k: u8| view.get(&key(k)).filter(|v| v.data.is_some());
        Some(match *a {
            Action::Put(k, v) => vec![Op::put(key(k), vec![v])],
            Action::Delete(k) => vec![Op::delete(key(k))],
            Action::Copy(s, d) => {
                let src = live(s)?;
                let _ = s;
                vec![Op::put(key(d), src.data.clone()?.to_vec())]
            }
            Action::Rename(s, d) if s != d => {
                let src = live(s)?;
                vec![
                    Op::put(key(d), src.data.clone()?.to_vec()),
                    Op::delete(key(s)).expecting(Expect::Stamp(src.stamp)),
                ]
            }
            Action::Rename(..) => return None,
        })
    }

    proptest! {
        /// Writers race on one tree. Each round, every writer reads the
        /// published tree and commits one action; the first publishes, and
        /// each later one either lost its compare-and-swap (it re-reads and
        /// re-applies) or published the same sequence (a reader merges the
        /// variants). Whatever happens, the result equals a sequential
        /// model that applies every acknowledged group in stamp order, and
        /// a group that a writer saw committed is ordered before its own.
        #[test]
        fn racing_writers_lose_no_acknowledged_write(
            rounds in proptest::collection::vec((proptest::collection::vec(action(), 1..4), proptest::collection::vec(any::<bool>(), 3)), 1..25),
        ) {
            let mut published: BTreeMap<String, Value> = BTreeMap::new();
            let mut clock_of = [0u64; 3];
            let mut acked: Vec<(Stamp, String, Option<Vec<u8>>)> = Vec::new();
            let mut now = 1_000u64;
            for (actions, diverge) in rounds {
                now += 3;
                let base = published.clone();
                let mut variants = Vec::new();
                for (w, a) in actions.iter().enumerate() {
                    // A writer that lost re-reads what the others published.
                    let view = if diverge[w] { base.clone() } else { variants.last().cloned().unwrap_or_else(|| base.clone()) };
                    let Some(ops) = ops_for(a, &view) else { continue };
                    let root = Root::default();
                    let mut edit = Edit::new(&root, BTreeMap::new());
                    for (k, v) in view.clone() {
                        edit.fresh.set(k, v);
                    }
                    let mut clock = Clock { last: clock_of[w].max(view.values().map(|v| v.stamp.time).max().unwrap_or(0)), writer: w as u64 + 1 };
                    let seen = view.values().map(|v| v.stamp.time).max().unwrap_or(0);
                    if edit.apply(ops.clone(), &mut clock, now).is_ok() {
                        clock_of[w] = clock.last;
                        for op in &ops {
                            let v = edit.get_any(&op.key).expect("just written");
                            // Causality: what the writer saw is older than what it wrote.
                            prop_assert!(v.stamp.time > seen);
                            acked.push((v.stamp, op.key.clone(), v.data.map(|d| d.to_vec())));
                        }
                        variants.push(edit.fresh.entries.into_iter().collect::<BTreeMap<_, _>>());
                    }
                }
                // Merge every variant published this round.
                let mut merged: Vec<(String, Value)> = base.into_iter().collect();
                for v in variants {
                    merged = merge(merged, v.into_iter().collect());
                }
                published = merged.into_iter().collect();
            }
            // The sequential model: every acknowledged write in stamp
            // order, the last one per key standing.
            let mut model: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
            acked.sort_by_key(|(s, _, _)| *s);
            for (_, key, data) in acked {
                model.insert(key, data);
            }
            let got: BTreeMap<String, Option<Vec<u8>>> = published.into_iter().map(|(k, v)| (k, v.data.map(|d| d.to_vec()))).collect();
            prop_assert_eq!(got, model);
        }
    }
}
