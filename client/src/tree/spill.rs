//! Runs stored beside the publish that carries their entries.
//!
//! A commit whose head record carries [`SPILL_AT`] of journal or more
//! stores that journal as a run page while it publishes the head. The head
//! holds those entries itself, so no head ever names a page that may not
//! have been stored; the next commit names the run and carries only what
//! came after it. A commit of up to [`SPILL_AT`] thus costs one round
//! trip, the publish, with a page store beside it, where storing the run
//! first and publishing after took two whenever the head filled up.
//!
//! A larger commit (a group commit of 16 small files, ~67 KiB) still stores
//! its run first. Heads of 128 KiB that carried such commits were tried
//! and measured slower: publishing ~100 KiB to the 8 nodes of a devnet
//! took 21.6 ms (p50) where a run stored on 3 nodes and a small head took
//! 8.9 + 7.7 ms (docs/BENCHMARKS.md, session 17). One round trip for those
//! needs the run stored by the record's nodes in the same request.
//!
//! This module keeps the state: at most one spill running, at most one
//! stored and waiting to be named, and the rule for when a commit may name
//! it ([`Spills::usable`]). The tree does the I/O.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn_proto::ShardId;

use crate::index::{PagePtr, Value};
use crate::journal::{self, Entries};

/// Journal (see [`journal::size`]) a head carries before a commit stores
/// it as a run beside its publish. Heads stay small for readers (every
/// head read fetches one from a majority of the record's nodes), and a
/// commit of up to a head record's size less this still fits beside it.
pub const SPILL_AT: usize = 16 * 1024;

/// A run stored beside a publish and not yet named by a head record.
#[derive(Debug)]
pub struct Spill {
    /// The root and runs (newest first) of the head it was stored
    /// beside: it stacks on those only.
    base: (Option<ShardId>, Vec<ShardId>),
    /// The entries it holds.
    pub covered: Entries,
    /// Its page.
    pub page: PagePtr,
    /// A publish that named it was sent: a minority of nodes may hold
    /// that record, so it is left to expire rather than deleted.
    offered: AtomicBool,
}

impl Spill {
    /// A run holding `covered`, stored as `page` beside a head with `root` and `runs`.
    pub fn new(root: Option<&PagePtr>, runs: &[PagePtr], covered: Entries, page: PagePtr) -> Self {
        Self { base: base_of(root, runs), covered, page, offered: AtomicBool::new(false) }
    }
}

fn base_of(root: Option<&PagePtr>, runs: &[PagePtr]) -> (Option<ShardId>, Vec<ShardId>) {
    (root.map(|p| p.id), runs.iter().map(|p| p.id).collect())
}

/// A tree's spills.
#[derive(Debug, Default)]
pub struct Spills {
    /// One is being stored.
    running: AtomicBool,
    /// Woken when one ends.
    done: tokio::sync::Notify,
    /// The last one stored, until a commit names it.
    waiting: Mutex<Option<Arc<Spill>>>,
}

impl Spills {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Spill>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the right to store one; false if one is being stored.
    pub fn start(&self) -> bool {
        !self.running.swap(true, Ordering::AcqRel)
    }

    /// The spill claimed by [`Self::start`] ended, stored as `spill` (or
    /// not at all). Returns the page of one it replaced that no publish
    /// named, to delete.
    pub fn finish(&self, spill: Option<Spill>) -> Option<PagePtr> {
        let old = match spill {
            Some(s) => self.lock().replace(Arc::new(s)),
            None => None,
        };
        self.running.store(false, Ordering::Release);
        self.done.notify_waiters();
        old.and_then(|o| unnamed(&o))
    }

    /// Returns once no spill is being stored.
    pub async fn settled(&self) {
        let done = self.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if self.running.load(Ordering::Acquire) {
            done.await;
        }
    }

    /// Whether a stored spill waits to be named.
    pub fn is_waiting(&self) -> bool {
        self.lock().is_some()
    }

    /// The waiting spill, if a head with `root`, `runs` and `journal` may
    /// name it as its newest run: it was stored over that root and those
    /// runs, the head names fewer than `max_runs`, and the journal holds
    /// every entry it covers (as they are or newer). A commit that loses
    /// its race may use it again. One that cannot be used is dropped, and
    /// its page is returned to delete (unless a publish named it).
    pub fn usable(
        &self,
        root: Option<&PagePtr>,
        runs: &[PagePtr],
        journal: &[(String, Value)],
        max_runs: usize,
    ) -> (Option<Arc<Spill>>, Option<PagePtr>) {
        let mut slot = self.lock();
        let Some(s) = slot.as_ref().map(Arc::clone) else { return (None, None) };
        if s.base == base_of(root, runs) && runs.len() < max_runs && journal::holds(journal, &s.covered) {
            return (Some(s), None);
        }
        *slot = None;
        (None, unnamed(&s))
    }

    /// A publish naming `s` is being sent.
    pub fn offered(&self, s: &Spill) {
        s.offered.store(true, Ordering::Release);
    }

    /// A publish named `s`: it no longer waits.
    pub fn named(&self, s: &Arc<Spill>) {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(|w| Arc::ptr_eq(w, s)) {
            *slot = None;
        }
    }
}

/// The page of a spill no publish named.
fn unnamed(s: &Spill) -> Option<PagePtr> {
    (!s.offered.load(Ordering::Acquire)).then(|| s.page.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Stamp;

    fn ptr(b: u8) -> PagePtr {
        PagePtr { id: ShardId([b; 32]), len: 1, holders: Vec::new() }
    }

    fn entry(k: &str, t: u64) -> (String, Value) {
        (k.into(), Value { stamp: Stamp { time: t, writer: 0 }, data: Some(vec![1].into()) })
    }

    fn stored(spills: &Spills, root: Option<&PagePtr>, runs: &[PagePtr], covered: Entries, page: u8) {
        assert!(spills.start());
        assert!(!spills.start(), "one spill at a time");
        assert_eq!(spills.finish(Some(Spill::new(root, runs, covered, ptr(page)))), None);
    }

    #[test]
    fn a_spill_is_named_over_the_head_it_was_stored_beside() {
        let spills = Spills::default();
        let (root, runs) = (ptr(1), vec![ptr(2)]);
        stored(&spills, Some(&root), &runs, vec![entry("a", 1), entry("b", 2)], 9);
        // The journal moved on (b rewritten, c added): the run still sits under it.
        let journal = vec![entry("a", 1), entry("b", 5), entry("c", 6)];
        let (s, gone) = spills.usable(Some(&root), &runs, &journal, 32);
        assert_eq!((s.as_ref().map(|s| s.page.id), gone), (Some(ptr(9).id), None));
        // A commit that lost its race finds it again; once named it is gone.
        let s = s.expect("usable");
        assert!(spills.usable(Some(&root), &runs, &journal, 32).0.is_some());
        spills.named(&s);
        assert!(!spills.is_waiting());
    }

    #[test]
    fn a_spill_over_another_head_is_deleted_unless_a_publish_named_it() {
        let (root, runs) = (ptr(1), vec![ptr(2)]);
        let covered = vec![entry("a", 3)];
        let journal = vec![entry("a", 3)];
        let cases: [(Option<&PagePtr>, &[PagePtr], Entries, usize); 5] = [
            (None, &runs, journal.clone(), 32),            // a fold named a new root
            (Some(&root), &[], journal.clone(), 32),       // other runs
            (Some(&root), &runs, journal.clone(), 1),      // no room for a run
            (Some(&root), &runs, Vec::new(), 32),          // the journal lost a key
            (Some(&root), &runs, vec![entry("a", 2)], 32), // an older value
        ];
        for (i, (r, rs, j, max)) in cases.into_iter().enumerate() {
            let spills = Spills::default();
            stored(&spills, Some(&root), &runs, covered.clone(), 9);
            let (s, gone) = spills.usable(r, rs, &j, max);
            assert!(s.is_none() && gone == Some(ptr(9)), "case {i}");
            assert!(!spills.is_waiting(), "case {i}");
        }
        // Offered to the nodes: a minority may hold a head naming it.
        let spills = Spills::default();
        stored(&spills, Some(&root), &runs, covered, 9);
        let s = spills.usable(Some(&root), &runs, &journal, 32).0.expect("usable");
        spills.offered(&s);
        let (s, gone) = spills.usable(None, &runs, &journal, 32);
        assert!(s.is_none() && gone.is_none());
    }

    #[test]
    fn a_newer_spill_replaces_a_waiting_one() {
        let spills = Spills::default();
        stored(&spills, None, &[], vec![entry("a", 1)], 7);
        assert!(spills.start());
        assert_eq!(spills.finish(Some(Spill::new(None, &[], vec![entry("a", 2)], ptr(8)))), Some(ptr(7)));
        assert!(spills.start());
        assert_eq!(spills.finish(None), None, "a failed store leaves the waiting one");
        assert_eq!(spills.usable(None, &[], &[entry("a", 2)], 32).0.map(|s| s.page.id), Some(ptr(8).id));
    }

    #[tokio::test]
    async fn settled_waits_for_a_running_spill() {
        let spills = Arc::new(Spills::default());
        spills.settled().await;
        assert!(spills.start());
        let waiter = tokio::spawn({
            let s = Arc::clone(&spills);
            async move { s.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        spills.finish(None);
        waiter.await.expect("settled");
    }
}
