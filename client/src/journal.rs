//! A tree's journal, without any I/O: the entries written since the tree's
//! leaves were last rewritten.
//!
//! A commit adds its entries to the journal and publishes the head: one
//! round trip to the record's nodes, where a commit that rewrote its
//! leaves and root first took three. The newest entries ride inside the
//! head record; when they outgrow it, the commit stores them as one page,
//! a *run*, and the head names the run instead (level 0 of a log-structured
//! merge tree: one page store and the publish, two round trips). A tree
//! thus reads as its head's entries over its runs, newest first, over its
//! leaves ([`lookup`], [`overlay`], [`stack`]); the tree keeps that view
//! as one sorted list in memory, and [`beyond`] gives the part of it that
//! the runs do not hold, which the head carries.
//!
//! Once the journal (runs included) grows past a size, the committer folds
//! it into the leaves in the background ([`fold`]: new leaves and a new
//! root, stored but not named); the next commit names the new root, drops
//! the runs, and keeps only the entries the fold did not cover
//! ([`uncovered`]). A commit that would need more runs than a head names
//! folds first.

use std::collections::BTreeMap;

use crate::index::{self, Clock, Conflict, Edit, Leaf, Op, Replaced, Root, Slot, Stamp, Value};

/// Journal entries: sorted by key, keys unique, tombstones included.
pub type Entries = Vec<(String, Value)>;

/// The value under `key` in `journal`, if it has one (`Some(None)`: a
/// tombstone there).
pub fn lookup<'a>(journal: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    journal.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| &journal[i].1)
}

/// A group of ops applied to a journal over a root whose leaves for the
/// ops' keys are loaded. The journal it starts from is read where it is
/// (a commit's journal may hold megabytes of small objects); only the
/// values written here are kept apart, and [`JournalEdit::finish`] merges
/// the two, sharing the values' bytes.
#[derive(Debug)]
pub struct JournalEdit<'a> {
    root: &'a Root,
    loaded: &'a BTreeMap<usize, Leaf>,
    /// The journal edited (sorted, keys unique).
    base: &'a [(String, Value)],
    /// What this edit wrote.
    written: BTreeMap<String, Value>,
    count: u64,
}

impl<'a> JournalEdit<'a> {
    /// An edit of `journal` (over `root`, with `count` live entries in all).
    pub fn new(root: &'a Root, loaded: &'a BTreeMap<usize, Leaf>, journal: &'a [(String, Value)], count: u64) -> Self {
        debug_assert!(journal.windows(2).all(|w| w[0].0 < w[1].0), "a journal is sorted");
        Self { root, loaded, base: journal, written: BTreeMap::new(), count }
    }

    /// Whether the value now under `key` is known: in the journal, or in a
    /// loaded leaf (or the root has no leaves).
    pub fn knows(&self, key: &str) -> bool {
        self.written.contains_key(key)
            || lookup(self.base, key).is_some()
            || self.root.leaf_for(key).is_none_or(|i| self.loaded.contains_key(&i))
    }

    /// The value now under `key`, tombstone or not.
    fn current(&self, key: &str) -> Option<&Value> {
        if let Some(v) = self.written.get(key).or_else(|| lookup(self.base, key)) {
            return Some(v);
        }
        let i = self.root.leaf_for(key)?;
        self.loaded.get(&i)?.get_any(key)
    }

    /// The stamp of the value now under `key`, tombstone or not.
    pub fn stamp(&self, key: &str) -> Option<Stamp> {
        self.current(key).map(|v| v.stamp)
    }

    /// Whether a group that an earlier attempt offered to the nodes is
    /// already in this tree: one of its ops' values is there with the
    /// stamp that attempt gave it. (A record that lost its race may still
    /// have reached a few nodes, and a reader merges what they hold; a
    /// retry must not apply the group twice, or a delete would find
    /// nothing to delete and a create its own object.)
    pub fn holds(&self, written: &[(String, Stamp)]) -> bool {
        written.iter().any(|(k, s)| self.stamp(k) == Some(*s))
    }

    /// Applies a group of ops atomically, as [`Edit::apply`] does.
    pub fn apply(&mut self, ops: Vec<Op>, clock: &mut Clock, now_ms: u64) -> Result<Replaced, Conflict> {
        index::check(&ops, |k| self.current(k).filter(|v| v.data.is_some()).map(|v| v.stamp))?;
        Ok(ops
            .into_iter()
            .map(|op| {
                let old = self.current(&op.key).filter(|v| v.data.is_some()).cloned();
                let data = op.change.into_data();
                // Saturating: a count read from a head is not trusted to add up.
                self.count = (self.count + u64::from(data.is_some())).saturating_sub(u64::from(old.is_some()));
                self.written.insert(op.key, Value { stamp: clock.tick(now_ms), data: data.map(bytes::Bytes::from) });
                old
            })
            .collect())
    }

    /// The new journal and the live entries of the whole tree.
    pub fn finish(self) -> (Entries, u64) {
        let written: Entries = self.written.into_iter().collect();
        (overlay(self.base.to_vec(), &written), self.count)
    }
}

/// The leaves of `root` with `journal` written into them (the leaves the
/// journal's keys fall in are in `loaded`); tombstones written before
/// `horizon_ms` are dropped from the leaves rewritten.
pub fn fold(root: &Root, loaded: BTreeMap<usize, Leaf>, journal: &[(String, Value)], horizon_ms: u64) -> Vec<Slot> {
    let mut edit = Edit::new(root, loaded);
    for (k, v) in journal {
        edit.install(k.clone(), v.clone());
    }
    edit.finish(horizon_ms)
}

/// What is left of `journal` once the pages hold `covered` (a journal the
/// tree had earlier, over the same root): the entries written or rewritten
/// since. `None` if the fold does not fit: `journal` lacks one of its
/// keys, or holds an older value for one (the tree went another way).
pub fn uncovered(journal: &[(String, Value)], covered: &[(String, Value)]) -> Option<Entries> {
    for (k, v) in covered {
        match lookup(journal, k) {
            Some(now) if now.stamp >= v.stamp => {}
            _ => return None,
        }
    }
    Some(journal.iter().filter(|(k, v)| lookup(covered, k) != Some(v)).cloned().collect())
}

/// The entries of `journal` that `runs` (what the runs hold, merged) does
/// not hold as they are: those the head record carries.
pub fn beyond(journal: &[(String, Value)], runs: &[(String, Value)]) -> Entries {
    journal.iter().filter(|(k, v)| lookup(runs, k) != Some(v)).cloned().collect()
}

/// Runs (each sorted, keys unique), newest first, merged into one: a key
/// in several takes the newest run's value.
pub fn stack(runs: Vec<Entries>) -> Entries {
    runs.into_iter().rev().fold(Vec::new(), |older, newer| overlay(older, &newer))
}

/// About what `entries` take encoded (within a few bytes per entry): what
/// decides when a journal is folded.
pub fn size(entries: &[(String, Value)]) -> usize {
    entries.iter().map(|(k, v)| k.len() + v.data.as_ref().map_or(0, bytes::Bytes::len) + 24).sum()
}

/// Joins a sorted run of leaf entries with the journal's entries in the
/// same key range: a key in both takes the journal's value. Tombstones are
/// kept (the caller filters).
pub fn overlay(leaf: Vec<(String, Value)>, journal: &[(String, Value)]) -> Entries {
    let mut out = Vec::with_capacity(leaf.len() + journal.len());
    let mut j = journal.iter().peekable();
    for (k, v) in leaf {
        while let Some((jk, _)) = j.peek() {
            if jk.as_str() >= k.as_str() {
                break;
            }
            out.push(j.next().cloned().expect("peeked"));
        }
        match j.peek() {
            Some((jk, jv)) if *jk == k => {
                out.push((k, jv.clone()));
                j.next();
            }
            _ => out.push((k, v)),
        }
    }
    out.extend(j.cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Expect, Stamp};
    use proptest::prelude::*;

    fn val(t: u64, d: Option<u8>) -> Value {
        Value { stamp: Stamp { time: t, writer: 0 }, data: d.map(|b| vec![b].into()) }
    }

    #[test]
    fn an_edit_knows_a_group_by_the_stamps_it_was_given() {
        let leaf = Leaf { entries: vec![("a".into(), val(1, Some(1)))] };
        let page = crate::index::PagePtr { id: cairn_proto::ShardId([1; 32]), len: 1, holders: Vec::new() };
        let root = Root { leaves: vec![crate::index::LeafRef { first: "a".into(), page, count: 1 }] };
        let loaded = BTreeMap::from([(0, leaf)]);
        let ours = Stamp { time: 7, writer: 3 };
        // The group's delete of `a` landed: its tombstone has our stamp.
        let journal = vec![("a".into(), Value { stamp: ours, data: None })];
        let edit = JournalEdit::new(&root, &loaded, &journal, 0);
        assert!(edit.holds(&[("a".into(), ours)]));
        assert!(edit.holds(&[("z".into(), ours), ("a".into(), ours)]), "one op is enough: a record is whole");
        // Another writer's value, or the leaf's, is not ours.
        assert!(!edit.holds(&[("a".into(), Stamp { time: 7, writer: 4 })]));
        let edit = JournalEdit::new(&root, &loaded, &[], 1);
        assert!(!edit.holds(&[("a".into(), ours)]));
        assert!(!edit.holds(&[]));
    }

    #[test]
    fn an_edit_sees_the_journal_before_the_leaves() {
        let leaf = Leaf { entries: vec![("a".into(), val(1, Some(1))), ("b".into(), val(1, Some(2)))] };
        let page = crate::index::PagePtr { id: cairn_proto::ShardId([1; 32]), len: 1, holders: Vec::new() };
        let root = Root { leaves: vec![crate::index::LeafRef { first: "a".into(), page, count: 2 }] };
        let loaded = BTreeMap::from([(0, leaf)]);
        let journal = vec![("b".into(), val(5, None))];
        let mut edit = JournalEdit::new(&root, &loaded, &journal, 1);
        let mut clock = Clock { last: 5, writer: 9 };
        // `b` is deleted in the journal: Absent holds, and it replaced nothing.
        let r = edit.apply(vec![Op::put("b", vec![7]).expecting(Expect::Absent)], &mut clock, 0).expect("absent");
        assert_eq!(r, vec![None]);
        // `a` lives in the leaf: a stamp precondition on it holds.
        let r = edit.apply(vec![Op::delete("a").expecting(Expect::Stamp(val(1, None).stamp))], &mut clock, 0);
        assert_eq!(r.expect("stamp").len(), 1);
        assert!(edit.apply(vec![Op::delete("a").expecting(Expect::Stamp(val(1, None).stamp))], &mut clock, 0).is_err());
        let (journal, count) = edit.finish();
        assert_eq!(count, 1);
        assert_eq!(
            journal.iter().map(|(k, v)| (k.as_str(), v.data.as_deref())).collect::<Vec<_>>(),
            vec![("a", None), ("b", Some(&[7u8][..]))]
        );
    }

    #[test]
    fn runs_stack_newest_first_and_the_head_carries_the_rest() {
        let old = vec![("a".into(), val(1, Some(1))), ("b".into(), val(2, Some(2)))];
        let new = vec![("b".into(), val(3, None)), ("c".into(), val(4, Some(3)))];
        let runs = stack(vec![new, old]);
        assert_eq!(
            runs,
            vec![("a".into(), val(1, Some(1))), ("b".into(), val(3, None)), ("c".into(), val(4, Some(3)))]
        );
        // The tree's view: the head's entries over the runs.
        let view = overlay(runs.clone(), &[("a".into(), val(5, Some(9))), ("d".into(), val(6, Some(4)))]);
        assert_eq!(beyond(&view, &runs), vec![("a".into(), val(5, Some(9))), ("d".into(), val(6, Some(4)))]);
        assert_eq!(beyond(&runs, &runs), Vec::new());
        assert_eq!(stack(Vec::new()), Vec::new());
    }

    #[test]
    fn a_fold_leaves_what_was_written_after_it() {
        let covered = vec![("a".into(), val(1, Some(1))), ("b".into(), val(2, Some(2)))];
        let journal = vec![("a".into(), val(1, Some(1))), ("b".into(), val(3, None)), ("c".into(), val(4, Some(3)))];
        let left = uncovered(&journal, &covered).expect("fits");
        assert_eq!(left, vec![("b".into(), val(3, None)), ("c".into(), val(4, Some(3)))]);
        // A journal without one of the fold's keys, or with an older value
        // for it, went another way.
        assert_eq!(uncovered(&journal[1..], &covered), None);
        assert_eq!(uncovered(&[("a".into(), val(0, Some(1))), ("b".into(), val(3, None))], &covered), None);
    }

    fn model() -> impl Strategy<Value = (BTreeMap<String, Value>, BTreeMap<String, Value>)> {
        let entries = || prop::collection::btree_map("[a-e]{1,2}", (0u64..20, prop::option::of(0u8..4)), 0..12);
        (entries(), entries()).prop_map(|(l, j)| {
            let v = |(t, d): (u64, Option<u8>)| val(t, d);
            let leaf = l.into_iter().map(|(k, x)| (k, v(x))).collect();
            let journal = j.into_iter().map(|(k, (t, d))| (k, val(t + 100, d))).collect();
            (leaf, journal)
        })
    }

    /// A tree in memory kept as a journal over leaves, its head's part
    /// spilled into runs and folded now and then.
    #[derive(Default)]
    struct Journaled {
        pages: Vec<Leaf>,
        root: Root,
        /// The head's journal over the runs, as a tree keeps it.
        journal: Entries,
        /// Newest first.
        runs: Vec<Entries>,
        count: u64,
        clock: u64,
    }

    impl Journaled {
        fn loaded(&self, keys: &[&str]) -> BTreeMap<usize, Leaf> {
            crate::index::touched(&self.root, keys.iter().copied())
                .into_iter()
                .map(|i| (i, self.pages[self.root.leaves[i].page.id.0[0] as usize].clone()))
                .collect()
        }

        fn commit(&mut self, ops: Vec<Op>, now_ms: u64) -> Result<Replaced, Conflict> {
            let keys: Vec<String> = ops.iter().map(|o| o.key.clone()).collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let loaded = self.loaded(&refs);
            let mut edit = JournalEdit::new(&self.root, &loaded, &self.journal, self.count);
            let mut clock = Clock { last: self.clock, writer: 1 };
            let r = edit.apply(ops, &mut clock, now_ms);
            (self.journal, self.count) = edit.finish();
            self.clock = clock.last;
            r
        }

        fn fold(&mut self) {
            let keys: Vec<&str> = self.journal.iter().map(|(k, _)| k.as_str()).collect();
            let loaded = self.loaded(&keys);
            let slots = fold(&self.root, loaded, &self.journal, 0);
            let mut leaves = Vec::new();
            for s in slots {
                leaves.push(match s {
                    Slot::Keep(r) => r,
                    Slot::New(leaf) => {
                        self.pages.push(leaf.clone());
                        let id = cairn_proto::ShardId([(self.pages.len() - 1) as u8; 32]);
                        let page = crate::index::PagePtr { id, len: 0, holders: Vec::new() };
                        crate::index::LeafRef { first: leaf.entries[0].0.clone(), page, count: leaf.live_count() }
                    }
                });
            }
            self.root = Root { leaves };
            self.journal.clear();
            self.runs.clear();
        }

        /// The head's part of the journal becomes the newest run.
        fn spill(&mut self) {
            let own = beyond(&self.journal, &stack(self.runs.clone()));
            if !own.is_empty() {
                self.runs.insert(0, own);
            }
        }

        /// The journal as a reader rebuilds it from the runs and the head.
        fn reopened(&self) -> Entries {
            let in_runs = stack(self.runs.clone());
            let head = beyond(&self.journal, &in_runs);
            overlay(in_runs, &head)
        }

        fn live(&self) -> BTreeMap<String, Vec<u8>> {
            let leaves: Entries =
                self.root.leaves.iter().flat_map(|l| self.pages[l.page.id.0[0] as usize].entries.clone()).collect();
            overlay(leaves, &self.journal).into_iter().filter_map(|(k, v)| Some((k, v.data?.to_vec()))).collect()
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        Put(u8, u8),
        Delete(u8),
        PutIfAbsent(u8, u8),
        Fold,
        Spill,
        Reopen,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..40u8, any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
            2 => (0..40u8).prop_map(Step::Delete),
            1 => (0..40u8, any::<u8>()).prop_map(|(k, v)| Step::PutIfAbsent(k, v)),
            1 => Just(Step::Fold),
            1 => Just(Step::Spill),
            1 => Just(Step::Reopen),
        ]
    }

    proptest! {
        /// A tree written through its journal, spilled into runs, read
        /// again from its runs and head, and folded at random points
        /// answers every op as a plain map does (what each op replaced,
        /// which preconditions fail) and ends with the same live entries
        /// and count.
        #[test]
        fn a_journaled_tree_behaves_as_a_map(steps in prop::collection::vec(step(), 1..120)) {
            let mut tree = Journaled::default();
            let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            // Values of 2 KiB: a fold splits the leaves after a few dozen.
            let value = |v: u8| vec![v; 2048];
            for (now, s) in steps.into_iter().enumerate() {
                let key = |k: u8| format!("k{k:02}");
                match s {
                    Step::Fold => tree.fold(),
                    Step::Spill => tree.spill(),
                    Step::Reopen => {
                        let reopened = tree.reopened();
                        prop_assert_eq!(&reopened, &tree.journal);
                        tree.journal = reopened;
                    }
                    Step::Put(k, v) => {
                        let r = tree.commit(vec![Op::put(key(k), value(v))], now as u64).expect("no precondition");
                        prop_assert_eq!(r[0].as_ref().and_then(|v| v.data.as_deref().map(<[u8]>::to_vec)), model.insert(key(k), value(v)));
                    }
                    Step::Delete(k) => {
                        let r = tree.commit(vec![Op::delete(key(k))], now as u64).expect("no precondition");
                        prop_assert_eq!(r[0].as_ref().and_then(|v| v.data.as_deref().map(<[u8]>::to_vec)), model.remove(&key(k)));
                    }
                    Step::PutIfAbsent(k, v) => {
                        let r = tree.commit(vec![Op::put(key(k), value(v)).expecting(Expect::Absent)], now as u64);
                        prop_assert_eq!(r.is_ok(), !model.contains_key(&key(k)));
                        model.entry(key(k)).or_insert_with(|| value(v));
                    }
                }
            }
            prop_assert_eq!(tree.count, model.len() as u64);
            prop_assert_eq!(tree.live(), model);
            tree.fold();
            prop_assert_eq!(tree.root.count(), tree.count);
        }

        /// Overlaying the journal and folding it into the leaves read the
        /// same: every key of either, the journal's value where both have one.
        #[test]
        fn overlay_and_fold_agree_with_a_map((leaf, journal) in model()) {
            let mut want = leaf.clone();
            want.extend(journal.clone());
            let want: Entries = want.into_iter().collect();
            let leaf_v: Entries = leaf.into_iter().collect();
            let journal_v: Entries = journal.into_iter().collect();
            prop_assert_eq!(overlay(leaf_v.clone(), &journal_v), want.clone());
            let root = if leaf_v.is_empty() {
                Root::default()
            } else {
                let page = crate::index::PagePtr { id: cairn_proto::ShardId([1; 32]), len: 1, holders: Vec::new() };
                Root { leaves: vec![crate::index::LeafRef { first: leaf_v[0].0.clone(), page, count: 0 }] }
            };
            let loaded = if leaf_v.is_empty() { BTreeMap::new() } else { BTreeMap::from([(0, Leaf { entries: leaf_v })]) };
            let folded: Entries = fold(&root, loaded, &journal_v, 0)
                .into_iter()
                .flat_map(|s| match s {
                    Slot::New(l) => l.entries,
                    Slot::Keep(_) => Vec::new(),
                })
                .collect();
            prop_assert_eq!(folded, want);
        }
    }
}
