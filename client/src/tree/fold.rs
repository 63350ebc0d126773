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
            let folded = inner.fold(&snap.root, snap.root_ptr.as_ref(), &snap.journal, &[], now_ms).await;
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
