//! Folding: the journal (runs included) written into new leaves and a
//! new root, in the background once it grows past [`FOLD_AT`] or
//! [`FOLD_RUNS`] runs, or in a commit that asks for it or would need more
//! than [`formats::MAX_RUNS`] runs. A background fold's pages wait in
//! `Inner::folded` until a commit names them (or finds them unusable and
//! deletes them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{Inner, Mode, Work};
use crate::error::Error;
use crate::formats;
use crate::index::{self, PagePtr, Root, Value};
use crate::journal::{self, Entries};

/// A journal this large (runs included, see [`journal::size`]), or one in
/// [`FOLD_RUNS`] runs or more, is folded into the leaves in the
/// background. A fold rewrites every leaf the journal's keys fall in, so
/// the larger the journal it takes, the less it rewrites per entry; the
/// tree keeps the journal in memory and copies it once per commit.
pub const FOLD_AT: usize = 2 << 20;
/// Runs past which the journal is folded in the background: half of what
/// a head names, so that commits go on adding runs while the fold runs.
pub const FOLD_RUNS: usize = formats::MAX_RUNS / 2;
/// A background fold rewrites a leaf when the journal holds at least
/// 1/`DENSE` of the leaf's size for it; the entries of sparser leaves stay
/// in the journal (stored again as one run) until they are, or until they
/// pass [`LEFT_MAX`]. A fold of scattered small writes would otherwise
/// rewrite a whole leaf (64 KiB, three copies) for each 4 KiB entry.
const DENSE: usize = 4;
/// Most journal bytes a background fold leaves behind: past it, the
/// sparse leaves with the most journal bytes for their size are
/// rewritten too.
pub const LEFT_MAX: usize = FOLD_AT / 4;

/// Which leaves a background fold rewrites, given each leaf's size and
/// the journal bytes that fall in it (see [`DENSE`] and [`LEFT_MAX`]).
fn dense_leaves(leaf_len: &[usize], journal_bytes: &[usize]) -> Vec<bool> {
    let mut fold: Vec<bool> =
        leaf_len.iter().zip(journal_bytes).map(|(&len, &b)| b > 0 && b.saturating_mul(DENSE) >= len).collect();
    let mut left: usize = journal_bytes.iter().zip(&fold).filter(|(_, f)| !**f).map(|(b, _)| b).sum();
    let mut sparse: Vec<usize> = (0..fold.len()).filter(|&i| !fold[i] && journal_bytes[i] > 0).collect();
    // Densest first: journal bytes per leaf byte, compared as products.
    sparse.sort_by(|&a, &b| {
        (journal_bytes[b] as u128 * leaf_len[a].max(1) as u128)
            .cmp(&(journal_bytes[a] as u128 * leaf_len[b].max(1) as u128))
            .then(a.cmp(&b))
    });
    for i in sparse {
        if left <= LEFT_MAX {
            break;
        }
        fold[i] = true;
        left -= journal_bytes[i];
    }
    fold
}

/// The entries of `journal` a background fold writes into the leaves of
/// `root`: all of them into an empty tree, else those of the leaves
/// [`dense_leaves`] picks.
fn to_fold(root: &Root, journal: &[(String, Value)]) -> Entries {
    if root.leaves.is_empty() {
        return journal.to_vec();
    }
    let leaf_of: Vec<usize> = journal.iter().map(|(k, _)| root.leaf_for(k).unwrap_or(0)).collect();
    let mut bytes = vec![0usize; root.leaves.len()];
    for (e, &i) in journal.iter().zip(&leaf_of) {
        bytes[i] += journal::size(std::slice::from_ref(e));
    }
    let lens: Vec<usize> = root.leaves.iter().map(|l| l.page.len as usize).collect();
    let fold = dense_leaves(&lens, &bytes);
    journal.iter().zip(&leaf_of).filter(|(_, i)| fold[**i]).map(|(e, _)| e.clone()).collect()
}

/// A journal folded into new pages, not yet named by a head record.
#[derive(Debug)]
pub(super) struct Folded {
    /// The root page it was built on.
    pub(super) base: Option<cairn_proto::ShardId>,
    /// The journal it holds.
    pub(super) covered: Entries,
    pub(super) root: Arc<Root>,
    pub(super) root_ptr: Option<PagePtr>,
    /// Pages it stored (its root and new leaves).
    pub(super) stored: Vec<PagePtr>,
    /// Pages of the base it replaces (the base's root and rewritten leaves).
    pub(super) replaced: Vec<PagePtr>,
    /// A publish that named it was sent: a minority of nodes may hold that
    /// record, so its pages are left to expire rather than deleted.
    pub(super) offered: AtomicBool,
}

impl Folded {
    /// A fold that writes nothing into the leaves of `root` (whose page is
    /// `root_ptr`): it stores no page and replaces none.
    fn nothing(root: &Arc<Root>, root_ptr: Option<&PagePtr>) -> Self {
        Self {
            base: root_ptr.map(|p| p.id),
            covered: Vec::new(),
            root: Arc::clone(root),
            root_ptr: root_ptr.cloned(),
            stored: Vec::new(),
            replaced: Vec::new(),
            offered: AtomicBool::new(false),
        }
    }
}

impl Inner {
    /// Writes `journal` into the leaves of `root` (whose page is
    /// `root_ptr`) and stores the new leaves and root.
    pub(super) async fn fold(
        &self,
        root: &Root,
        root_ptr: Option<&PagePtr>,
        journal: &[(String, Value)],
        rewrite: &[String],
        now_ms: u64,
    ) -> Result<Folded, Error> {
        let keys: Vec<&str> =
            journal.iter().map(|(k, _)| k.as_str()).chain(rewrite.iter().map(String::as_str)).collect();
        let loaded = self.load_leaves(root, &keys).await?;
        let mut replaced: Vec<PagePtr> = loaded.keys().map(|&i| root.leaves[i].page.clone()).collect();
        replaced.extend(root_ptr.cloned());
        let slots = journal::fold(root, loaded, journal, now_ms.saturating_sub(index::TOMBSTONE_TTL_MS));
        let new_root = self.store_slots(slots).await?;
        let new_ptr = self.store_root(&new_root).await?;
        let kept: std::collections::HashSet<_> = root.leaves.iter().map(|l| l.page.id).collect();
        let mut stored: Vec<PagePtr> =
            new_root.leaves.iter().filter(|l| !kept.contains(&l.page.id)).map(|l| l.page.clone()).collect();
        stored.extend(new_ptr.clone());
        Ok(Folded {
            base: root_ptr.map(|p| p.id),
            covered: journal.to_vec(),
            root: Arc::new(new_root),
            root_ptr: new_ptr,
            stored,
            replaced,
            offered: AtomicBool::new(false),
        })
    }

    /// Deletes the pages of a fold no head record names.
    pub(super) fn discard(&self, f: &Folded) {
        if f.offered.load(Ordering::Acquire) {
            return;
        }
        for page in &f.stored {
            self.pages.delete(page);
        }
    }

    /// The background fold's result, if it was built on `base`'s root and
    /// `base`'s journal holds what it covers, with the journal left once
    /// the fold is named. It stays kept until a publish names it (a commit
    /// that loses a race may use it again); one that cannot be used is
    /// deleted.
    pub(super) fn usable_fold(
        &self,
        base_root: Option<&PagePtr>,
        journal: &[(String, Value)],
    ) -> Option<(Arc<Folded>, Entries)> {
        let mut slot = self.folded.lock().unwrap_or_else(|e| e.into_inner());
        let f = Arc::clone(slot.as_ref()?);
        if f.base == base_root.map(|p| p.id)
            && let Some(left) = journal::uncovered(journal, &f.covered)
        {
            return Some((f, left));
        }
        *slot = None;
        drop(slot);
        self.discard(&f);
        None
    }

    /// A publish named `f`: it is no longer kept.
    pub(super) fn fold_named(&self, f: &Arc<Folded>) {
        let mut slot = self.folded.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, f)) {
            *slot = None;
        }
    }

    /// Starts folding the newest journal in the background if it grew past
    /// [`FOLD_AT`] or [`FOLD_RUNS`] and no fold is running.
    pub(super) fn fold_later(self: &Arc<Self>) {
        if self.opts.one_shot {
            return;
        }
        let Some(snap) = self.lock_latest().clone() else { return };
        if journal::size(&snap.journal) < FOLD_AT && snap.runs.len() < FOLD_RUNS {
            return;
        }
        if self.folding.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(self);
        // A task that ends by itself: shutdown waits for it, and so for
        // the commit that names the fold (a short-lived process, a CLI
        // call, would otherwise leave the fold's pages unnamed, to expire
        // with their lease).
        self.tasks.spawn(async move {
            let now_ms = crate::bucket::now_ms();
            let part = to_fold(&snap.root, &snap.journal);
            tracing::debug!(journal = snap.journal.len(), folded = part.len(), "background fold");
            let folded = if part.is_empty() {
                // Every leaf sparse: no leaf is rewritten, and the commit
                // that names this stores what is left as one run in place
                // of the many.
                Ok(Folded::nothing(&snap.root, snap.root_ptr.as_ref()))
            } else {
                inner.fold(&snap.root, snap.root_ptr.as_ref(), &part, &[], now_ms).await
            };
            let stored = match folded {
                Ok(f) => {
                    let old = inner.folded.lock().unwrap_or_else(|e| e.into_inner()).replace(Arc::new(f));
                    if let Some(old) = old {
                        inner.discard(&old);
                    }
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "folding the journal failed; the next commit tries again");
                    false
                }
            };
            inner.folding.store(false, Ordering::Release);
            inner.fold_done.notify_waiters();
            // Named by the next commit, or by one of its own if none comes
            // (a full queue has commits coming).
            let Some(tx) = inner.queue.get().and_then(mpsc::WeakSender::upgrade).filter(|_| stored) else {
                return;
            };
            let (reply, named) = oneshot::channel();
            if tx.try_send(Work { ops: Vec::new(), mode: Mode::NameFold, rewrite: Vec::new(), reply }).is_ok() {
                drop(tx);
                let _ = named.await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_background_fold_rewrites_leaves_the_journal_fills_and_leaves_scattered_entries_for_later() {
        let k = 1024;
        // A leaf of 64 KiB with 16 KiB for it is rewritten, one with 4 KiB
        // is not, an untouched one is not.
        assert_eq!(dense_leaves(&[64 * k, 64 * k, 64 * k], &[16 * k, 4 * k, 0]), [true, false, false]);
        // A small leaf takes a small share.
        assert_eq!(dense_leaves(&[4 * k], &[k]), [true]);
    }

    #[test]
    fn what_a_background_fold_leaves_behind_is_bounded_and_the_densest_leaves_go_first() {
        let k = 1024;
        // 300 leaves of 64 KiB, each with 4 KiB of scattered entries (1.2
        // MiB in all), and one with 12 KiB: the rest past LEFT_MAX is
        // folded, the 12 KiB leaf first.
        let mut lens = vec![64 * k; 301];
        let mut bytes = vec![4 * k; 301];
        bytes[150] = 12 * k;
        lens[7] = 128 * k;
        let fold = dense_leaves(&lens, &bytes);
        let left: usize = bytes.iter().zip(&fold).filter(|(_, f)| !**f).map(|(b, _)| b).sum();
        assert!(left <= LEFT_MAX && left + 4 * k > LEFT_MAX, "left {left}");
        assert!(fold[150], "the densest sparse leaf goes first");
        assert!(!fold[7], "the sparsest (largest) leaf stays last");
        // Nothing sparse to leave: nothing more is folded.
        assert_eq!(dense_leaves(&[64 * k; 3], &[k, 0, k]), [false, false, false]);
    }
}
