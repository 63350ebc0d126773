//! A tree of sealed pages whose root is named by a signed head record in
//! the DHT: a bucket's index, or the account's bucket list.
//!
//! Writes go through one committer task per tree (group commit): every
//! group of ops queued while a commit is running goes into the next one,
//! so a burst of small writes costs a few DHT round trips, not one each.
//! A commit writes its entries into the journal that the head record
//! carries (see [`crate::journal`]): it costs one round trip, the publish.
//! A journal that outgrows the head record is stored as a run page that
//! the head names (one page store more). The journal, runs included, is
//! folded into new leaves and a new root in the background once it grows
//! past [`FOLD_AT`] or [`FOLD_RUNS`] runs, and before a commit that would need more than
//! [`formats::MAX_RUNS`] runs.
//! Each group applies atomically or not at all (its preconditions, see
//! [`Expect`]); the tree stamps every op from its hybrid logical clock.
//!
//! A commit is a compare-and-swap on the sequence number: it applies its
//! ops to the newest head it knows and publishes `sequence + 1` to a
//! majority of the record's closest nodes (see `heads`). Nodes refuse a
//! sequence they already hold, and answer with the record they hold, so of
//! two writers racing on one sequence at most one gets its majority; the
//! other builds again on the newest record the refusing nodes hold (when
//! so many refused that they meet every majority; else it reads the head
//! again) and re-applies its ops on top, unless what it reads
//! holds them already: a record that lost may have reached a few nodes,
//! and readers merge what those hold, so a retry looks for its groups by
//! the stamps it gave them and takes the earlier outcome for those it
//! finds (a delete would otherwise find nothing to delete, and a create
//! find its own object). The first attempt
//! builds on the head this client last read or published, without asking
//! the nodes again: if another writer was first, the refusals say so in
//! the same round trip. Head reads ask the same nodes and end at a
//! majority of answers, which always meets the majority that took the
//! newest acknowledged record. A reader that finds two records with the
//! newest sequence (a writer that lost a race, or a majority that could
//! not be reached) merges their trees key by key, the larger stamp
//! winning, tombstones included.
//!
//! A tree never goes back: the client keeps the highest (sequence, root)
//! it has seen in memory and in its cache, and a head lookup that finds
//! nothing, or something older, is an error ([`Error::HeadBehind`]) rather
//! than an empty or stale tree on which the next commit would build.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_crypto::{RecordSigner, SymmetricKey};
use cairn_net::PeerId;
use cairn_proto::RecordId;
use cairn_proto::head::HeadRecord;
use futures::{StreamExt, TryStreamExt, stream};
use tokio::sync::{mpsc, oneshot};

use crate::batch::{gather, writers};
use crate::error::{Error, PageFault};
use crate::formats::{self, HeadPayload, Mark, RecordPeers};
use crate::heads;
use crate::index::{
    self, Clock, Conflict, Expect, Leaf, LeafRef, Op, Page, PagePtr, Replaced, Root, Slot, Stamp, Value,
};
use crate::journal::{self, Entries, JournalEdit};
use crate::pages::Pages;
use crate::tasks::Tasks;

mod fold;

use fold::Folded;
pub use fold::{FOLD_AT, FOLD_RUNS};

/// Lookups of a head before finding an older one than seen is an error.
const BEHIND_ATTEMPTS: u32 = 3;
/// Groups waiting for the committer.
const QUEUE: usize = 1024;
/// Failed attempts (other than lost races) before a commit gives up.
const ATTEMPTS: u32 = 10;
/// Races lost to other writers before a commit gives up: each means that
/// another commit got through.
const RACES: u32 = 64;
/// How long a record's closest nodes are taken from the cache before they
/// are looked up again. A head read or publish that cannot reach a
/// majority of them looks them up again at once.
const PEERS_KEPT: Duration = Duration::from_secs(600);
/// Nodes that hold a head record: Kademlia's replication factor (k = 20).
const RECORD_PEERS: usize = 20;
/// Pages fetched at once.
const FETCH_PARALLEL: usize = 16;
/// Largest journal (see [`journal::size`]) stored as one run; a larger
/// one is folded into leaves, which split.
const MAX_RUN: usize = 4 << 20;

/// Records what a commit replaced, in the same commit: given a key and the
/// live value an op replaced or removed, an op to add (a bucket queues the
/// old entry's data for collection).
pub trait Retire: Send + Sync + std::fmt::Debug {
    /// The op that records `old` (replaced under `key` at `now_ms`), if any.
    fn retire(&self, key: &str, old: &Value, now_ms: u64) -> Option<Op>;
}

/// How a tree behaves beyond its keys.
#[derive(Clone, Debug, Default)]
pub struct TreeOptions {
    /// Called for every live value a commit replaces.
    pub retire: Option<Arc<dyn Retire>>,
    /// The head record is known to exist (a bucket's, published at
    /// creation): a lookup that finds none is an error.
    pub must_exist: bool,
    /// The process makes a few calls and ends (a CLI command): the journal
    /// is folded only when a commit must (it would not fit), not in the
    /// background, where every other call would wait for a fold to be
    /// named before it could stop.
    pub one_shot: bool,
}

/// A consistent view of the tree.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Sequence of the head record it came from (0: never written).
    pub seq: u64,
    /// The root page.
    pub root: Arc<Root>,
    /// Entries newer than the leaves': the head record's journal over its
    /// runs (see [`crate::journal`]).
    pub journal: Arc<Entries>,
    /// Live entries in the tree.
    pub count: u64,
    root_ptr: Option<PagePtr>,
    /// The run pages the head names, newest first.
    runs: Vec<PagePtr>,
    /// What the runs hold, merged: the part of `journal` not in the head.
    in_runs: Arc<Entries>,
    clock: u64,
    taken: Instant,
}

impl Snapshot {
    /// The root page, if the tree has one.
    pub fn root_ptr(&self) -> Option<&PagePtr> {
        self.root_ptr.as_ref()
    }

    /// The run pages the head names, newest first.
    pub fn runs(&self) -> &[PagePtr] {
        &self.runs
    }

    /// Every page of the tree: the root, the runs, then the leaves.
    pub fn pages(&self) -> impl Iterator<Item = &PagePtr> {
        self.root_ptr.iter().chain(&self.runs).chain(self.root.leaves.iter().map(|l| &l.page))
    }
}

type Reply = oneshot::Sender<Result<Replaced, Error>>;

/// A group of ops for the committer.
struct Work {
    ops: Vec<Op>,
    mode: Mode,
    /// With [`Mode::Fold`]: keys whose leaves the fold stores again.
    rewrite: Vec<String>,
    reply: Reply,
}

/// What a [`Work`] asks beyond its ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing.
    Plain,
    /// Fold the journal into the pages in the same commit.
    Fold,
    /// Publish a finished background fold, if one still waits (no ops).
    NameFold,
}

/// Per group, what an attempt offered to the nodes: the stamps its ops'
/// values got and what they replaced (`None`: it did not apply).
type Offered = Vec<Option<(Vec<(String, Stamp)>, Replaced)>>;

/// An attempt's edit of the journal.
struct Edited {
    journal: Entries,
    count: u64,
    results: Vec<Result<Replaced, Conflict>>,
    clock: u64,
    offered: Offered,
}

struct Inner {
    tasks: Tasks,
    signer: RecordSigner,
    key: SymmetricKey,
    pages: Pages,
    id: RecordId,
    opts: TreeOptions,
    writer: u64,
    clock: Mutex<u64>,
    latest: Mutex<Option<Snapshot>>,
    peers: Mutex<Option<(Instant, Vec<PeerId>)>>,
    /// A background fold is running.
    folding: AtomicBool,
    /// The last background fold's result, until a commit uses it.
    folded: Mutex<Option<Arc<Folded>>>,
    /// Woken when a background fold ends.
    fold_done: tokio::sync::Notify,
    /// The committer's queue, for a finished fold to ask to be published.
    queue: std::sync::OnceLock<mpsc::WeakSender<Work>>,
    /// Writers' works sent to the committer and not yet in a batch (a
    /// fold's naming is not counted: nobody waits for it).
    queued: AtomicUsize,
}

/// A tree handle; clones share the committer.
#[derive(Clone)]
pub struct Tree {
    inner: Arc<Inner>,
    commits: mpsc::Sender<Work>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("record", &self.inner.id).finish_non_exhaustive()
    }
}

impl Tree {
    /// A tree whose head is signed by `signer` and whose pages and head
    /// payload are sealed with `key`. Its committer task runs on `tasks`
    /// until the last handle is dropped or the client shuts down.
    pub fn new(signer: RecordSigner, key: SymmetricKey, pages: Pages, opts: TreeOptions, tasks: &Tasks) -> Self {
        let id = HeadRecord::record_id_for(&signer.public_key());
        let inner = Arc::new(Inner {
            tasks: tasks.clone(),
            signer,
            key,
            pages,
            id,
            opts,
            writer: rand::random(),
            clock: Mutex::new(0),
            latest: Mutex::new(None),
            peers: Mutex::new(None),
            folding: AtomicBool::new(false),
            folded: Mutex::new(None),
            fold_done: tokio::sync::Notify::new(),
            queue: std::sync::OnceLock::new(),
            queued: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let _ = inner.queue.set(tx.downgrade());
        tasks.spawn_until_shutdown(committer(Arc::clone(&inner), rx));
        Self { inner, commits: tx }
    }

    /// The head record's id.
    pub fn record_id(&self) -> RecordId {
        self.inner.id
    }

    /// The newest view, reusing one taken less than `max_age` ago.
    pub async fn snapshot(&self, max_age: Duration) -> Result<Snapshot, Error> {
        if let Some(s) = self.inner.lock_latest().clone()
            && s.taken.elapsed() <= max_age
        {
            return Ok(s);
        }
        // A lookup may reach only nodes that missed the newest record (a
        // commit needs a majority, not all): an older head is looked up
        // again before it is called a rollback.
        let mut wait = Duration::from_millis(50);
        for _ in 1..BEHIND_ATTEMPTS {
            match self.inner.load().await {
                Err(Error::HeadBehind { .. }) => {
                    tokio::time::sleep(wait).await;
                    wait *= 3;
                }
                r => return r,
            }
        }
        self.inner.load().await
    }

    /// Applies `ops` in one atomic step (possibly in one commit with other
    /// callers' ops); no ops publishes the current tree as the next
    /// sequence (a bucket's first head). Returns, per op, the live value it replaced or
    /// removed; [`Error::Conflict`] if a precondition failed (then nothing
    /// of `ops` applied).
    pub async fn commit(&self, ops: Vec<Op>) -> Result<Replaced, Error> {
        self.send(ops, Mode::Plain).await
    }

    /// Commits `ops` and writes the journal into new leaves and a new root
    /// in the same commit (page repair rewrites pages this way).
    pub async fn commit_folded(&self, ops: Vec<Op>) -> Result<Replaced, Error> {
        self.send(ops, Mode::Fold).await
    }

    /// Folds the journal into new leaves and a new root, and stores again
    /// the leaves that `keys` fall in, whatever they hold (page repair: a
    /// leaf short of copies, even one of tombstones only or one whose
    /// entries the journal shadows).
    pub async fn rewrite(&self, keys: Vec<String>) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.queue(Work { ops: Vec::new(), mode: Mode::Fold, rewrite: keys, reply }).await?;
        rx.await.map_err(|_| Error::Stopped)?.map(drop)
    }

    async fn send(&self, ops: Vec<Op>, mode: Mode) -> Result<Replaced, Error> {
        let (reply, rx) = oneshot::channel();
        self.queue(Work { ops, mode, rewrite: Vec::new(), reply }).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Hands a writer's work to the committer.
    async fn queue(&self, work: Work) -> Result<(), Error> {
        self.inner.queued.fetch_add(1, Ordering::SeqCst);
        self.commits.send(work).await.map_err(|_| {
            self.inner.queued.fetch_sub(1, Ordering::SeqCst);
            Error::Stopped
        })
    }

    /// The tree's pages.
    pub fn pages(&self) -> &Pages {
        &self.inner.pages
    }

    /// A leaf page of a snapshot.
    pub async fn leaf_page(&self, r: &LeafRef) -> Result<Leaf, Error> {
        self.inner.leaf(r).await
    }

    /// Publishes the newest head record again, on the nodes now closest to
    /// it: nodes do not hand records on to the nodes that join near them,
    /// so without this a record would fade as its first holders leave.
    /// Returns whether a majority holds it. A record whose variants
    /// diverged is left to the next commit, which merges them.
    pub async fn republish(&self) -> Result<bool, Error> {
        let records = self.inner.read_heads().await?;
        let public = self.inner.signer.public_key();
        let mine: Vec<&HeadRecord> = records.iter().filter(|r| r.public_key == public).collect();
        let Some(seq) = mine.iter().map(|r| r.sequence).max() else { return Ok(false) };
        let newest: Vec<&&HeadRecord> = mine.iter().filter(|r| r.sequence == seq).collect();
        if newest.iter().any(|r| **r != *newest[0]) {
            return Ok(false);
        }
        let peers = self.inner.record_peers(true).await?;
        match heads::publish(self.inner.pages.transfer(), &self.inner.tasks, &peers, newest[0]).await {
            Ok(()) => Ok(true),
            Err(Error::HeadRaced { .. } | Error::HeadUnreachable { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The nodes holding the pages of `snap`: for each page, its holders.
    pub fn page_holders(&self, snap: &Snapshot) -> Vec<Vec<PeerId>> {
        snap.pages().map(|p| p.holders.iter().filter_map(crate::transfer::peer_of).collect()).collect()
    }

    /// The live value under `key` in `snap`.
    pub async fn get(&self, snap: &Snapshot, key: &str) -> Result<Option<Value>, Error> {
        if let Some(v) = journal::lookup(&snap.journal, key) {
            return Ok(v.data.is_some().then(|| v.clone()));
        }
        let Some(i) = snap.root.leaf_for(key) else { return Ok(None) };
        Ok(self.inner.leaf(&snap.root.leaves[i]).await?.get(key).cloned())
    }

    /// Live entries of `snap` whose key starts with `prefix` and lies
    /// after `start`, in order, at most `limit`.
    pub async fn list(
        &self,
        snap: &Snapshot,
        prefix: &str,
        start: Bound<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, Error> {
        let from = match start {
            Bound::Included(s) | Bound::Excluded(s) => s,
            Bound::Unbounded => "",
        };
        let after = |k: &str| match start {
            Bound::Included(s) => k >= s,
            Bound::Excluded(s) => k > s,
            Bound::Unbounded => true,
        };
        let wanted = |k: &str| after(k) && k.starts_with(prefix);
        // The journal's entries in range, merged into each leaf's run in
        // turn; those past the last leaf's keys come at the end.
        let mut journal: &[(String, Value)] = &snap.journal;
        let first = journal.partition_point(|(k, _)| k.as_str() < prefix.max(from));
        journal = &journal[first..];
        let leaves = &snap.root.leaves[snap.root.leaves_for_prefix(prefix, from)];
        let loads: Vec<_> = leaves.iter().map(|l| self.inner.leaf(l)).collect();
        let mut pages = stream::iter(loads).buffered(FETCH_PARALLEL);
        let mut out = Vec::new();
        let take = |entries: Entries, out: &mut Vec<(String, Value)>| {
            for (k, v) in entries {
                if v.data.is_some() && wanted(&k) {
                    out.push((k, v));
                    if out.len() >= limit {
                        return true;
                    }
                }
            }
            false
        };
        let mut i = 0;
        while let Some(leaf) = pages.try_next().await? {
            // The journal's keys below the next leaf's first key belong here.
            let end = match leaves.get(i + 1) {
                Some(next) => journal.partition_point(|(k, _)| k.as_str() < next.first.as_str()),
                None => journal.len(),
            };
            i += 1;
            let (mine, rest) = journal.split_at(end);
            journal = rest;
            if take(journal::overlay(leaf.entries, mine), &mut out) {
                return Ok(out);
            }
        }
        take(journal.to_vec(), &mut out);
        Ok(out)
    }
}

impl Inner {
    fn lock_latest(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn payload_aad(&self) -> Vec<u8> {
        let mut aad = b"cairn 2026 head payload v1\0".to_vec();
        aad.extend_from_slice(&self.signer.public_key());
        aad
    }

    /// The highest sequence this client has seen of the tree (in memory,
    /// else in the cache, whose RocksDB runs on the blocking pool).
    async fn floor(&self) -> u64 {
        let mem = self.lock_latest().as_ref().map_or(0, |s| s.seq);
        let cached = match (mem, self.pages.cache()) {
            (0, Some(c)) => {
                let (c, id) = (Arc::clone(c), self.id);
                tokio::task::spawn_blocking(move || c.mark(&id)).await.ok().flatten().map_or(0, |m| m.seq)
            }
            _ => 0,
        };
        mem.max(cached).max(u64::from(self.opts.must_exist))
    }

    async fn remember(&self, snap: &Snapshot) {
        {
            let mut latest = self.lock_latest();
            if latest.as_ref().is_some_and(|l| l.seq > snap.seq) {
                return;
            }
            *latest = Some(snap.clone());
        }
        if let Some(c) = self.pages.cache() {
            let (c, id) = (Arc::clone(c), self.id);
            let mark = Mark { seq: snap.seq, root: snap.root_ptr.as_ref().map(|p| p.id) };
            let _ = tokio::task::spawn_blocking(move || c.put_mark(&id, &mark)).await;
        }
    }

    async fn leaf(&self, r: &LeafRef) -> Result<Leaf, Error> {
        self.leaf_at(&r.page).await
    }

    /// The leaf page at `ptr` (a leaf of the root, or a run).
    async fn leaf_at(&self, ptr: &PagePtr) -> Result<Leaf, Error> {
        match self.pages.get(ptr).await? {
            Page::Leaf(l) => Ok(l),
            Page::Root(_) => Err(Error::BadPage { id: ptr.id, fault: PageFault::WrongKind }),
        }
    }

    async fn root(&self, ptr: &Option<PagePtr>) -> Result<Root, Error> {
        let Some(ptr) = ptr else { return Ok(Root::default()) };
        match self.pages.get(ptr).await? {
            Page::Root(r) => Ok(r),
            Page::Leaf(_) => Err(Error::BadPage { id: ptr.id, fault: PageFault::WrongKind }),
        }
    }

    /// The head records a majority of the record's nodes hold. If too few
    /// answer, the nodes are looked up again once (they may have changed).
    async fn read_heads(&self) -> Result<Vec<HeadRecord>, Error> {
        let transfer = self.pages.transfer();
        let peers = self.record_peers(false).await?;
        match heads::read(transfer, &self.tasks, self.id, &peers).await {
            Err(Error::HeadUnreachable { .. }) => {
                let peers = self.record_peers(true).await?;
                heads::read(transfer, &self.tasks, self.id, &peers).await
            }
            r => r,
        }
    }

    /// Reads the newest head from the record's nodes; merges diverged variants.
    async fn load(&self) -> Result<Snapshot, Error> {
        let records = self.read_heads().await?;
        self.open_heads(records).await
    }

    /// The tree the newest of `records` name (merged if they diverged),
    /// remembered as the latest.
    async fn open_heads(&self, records: Vec<HeadRecord>) -> Result<Snapshot, Error> {
        let public = self.signer.public_key();
        let seq = records.iter().filter(|r| r.public_key == public).map(|r| r.sequence).max().unwrap_or(0);
        let seen = self.floor().await;
        if seq < seen {
            return Err(Error::HeadBehind { record: self.id, found: seq, seen });
        }
        let mut variants: Vec<HeadPayload> = Vec::new();
        for r in records.iter().filter(|r| r.public_key == public && r.sequence == seq) {
            match self.key.open(&self.payload_aad(), &r.payload) {
                Ok(p) => match formats::decode_head(&p) {
                    Ok(h) if !variants.contains(&h) => variants.push(h),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "head payload does not decode"),
                },
                Err(_) => tracing::warn!(seq, "head payload does not open"),
            }
        }
        if seq > 0 && variants.is_empty() {
            return Err(Error::HeadUnreadable { record: self.id, seq });
        }
        let (root_ptr, root, clock, journal, count, runs, in_runs) = match variants.len() {
            0 => (None, Root::default(), 0, Vec::new(), 0, Vec::new(), Vec::new()),
            1 => {
                let v = variants.remove(0);
                let (root, in_runs) = tokio::try_join!(self.root(&v.root), self.load_runs(&v.runs))?;
                let journal = journal::overlay(in_runs.clone(), &v.journal);
                (v.root, root, v.clock, journal, v.count, v.runs, in_runs)
            }
            n => {
                tracing::info!(seq, variants = n, "head records diverged; merging");
                let (ptr, root, clock) = self.merge(variants).await?;
                let count = root.count();
                (ptr, root, clock, Vec::new(), count, Vec::new(), Vec::new())
            }
        };
        let snap = Snapshot {
            seq,
            root: Arc::new(root),
            journal: Arc::new(journal),
            count,
            root_ptr,
            runs,
            in_runs: Arc::new(in_runs),
            clock,
            taken: Instant::now(),
        };
        self.remember(&snap).await;
        Ok(snap)
    }

    /// Joins diverged trees into one new root (stored, not yet published).
    async fn merge(&self, variants: Vec<HeadPayload>) -> Result<(Option<PagePtr>, Root, u64), Error> {
        let mut entries = Vec::new();
        let mut clock = 0;
        let mut loaded = 0;
        let mut last_error = None;
        for v in variants {
            let read = async { tokio::try_join!(self.all_entries(&v.root), self.load_runs(&v.runs)) };
            match read.await {
                Ok((e, in_runs)) => {
                    let e = journal::overlay(journal::overlay(e, &in_runs), &v.journal);
                    entries = index::merge(entries, e);
                    clock = clock.max(v.clock);
                    loaded += 1;
                }
                // A variant whose pages are gone lost its race and was
                // deleted; its writer was told and retries.
                Err(e) => {
                    tracing::warn!(error = %e, "a diverged head cannot be read; skipping it");
                    last_error = Some(e);
                }
            }
        }
        if loaded == 0 {
            return Err(last_error.unwrap_or(Error::HeadUnreadable { record: self.id, seq: 0 }));
        }
        let clock = clock.max(index::max_time(&entries));
        let slots = index::build_leaves(entries).into_iter().map(Slot::New).collect();
        let root = self.store_slots(slots).await?;
        let ptr = self.store_root(&root).await?;
        Ok((ptr, root, clock))
    }

    async fn all_entries(&self, ptr: &Option<PagePtr>) -> Result<Vec<(String, Value)>, Error> {
        let root = self.root(ptr).await?;
        let loads: Vec<_> = root.leaves.iter().map(|l| self.leaf(l)).collect();
        let leaves: Vec<Leaf> = stream::iter(loads).buffered(FETCH_PARALLEL).try_collect().await?;
        Ok(leaves.into_iter().flat_map(|l| l.entries).collect())
    }

    /// What the run pages `runs` (newest first) hold, merged.
    async fn load_runs(&self, runs: &[PagePtr]) -> Result<Entries, Error> {
        let loads: Vec<_> =
            runs.iter().map(|ptr| async move { Ok::<_, Error>(self.leaf_at(ptr).await?.entries) }).collect();
        let runs: Vec<Entries> = stream::iter(loads).buffered(FETCH_PARALLEL).try_collect().await?;
        Ok(journal::stack(runs))
    }

    async fn store_slots(&self, slots: Vec<Slot>) -> Result<Root, Error> {
        let stores: Vec<_> = slots
            .into_iter()
            .map(|s| async move {
                match s {
                    Slot::Keep(r) => Ok(r),
                    Slot::New(leaf) => {
                        let first = leaf.entries.first().map(|(k, _)| k.clone()).unwrap_or_default();
                        let count = leaf.live_count();
                        let page = self.pages.put(&Page::Leaf(leaf)).await?;
                        Ok::<_, Error>(LeafRef { first, page, count })
                    }
                }
            })
            .collect();
        let stored = stream::iter(stores).buffered(FETCH_PARALLEL).try_collect().await?;
        Ok(Root { leaves: stored })
    }

    async fn store_root(&self, root: &Root) -> Result<Option<PagePtr>, Error> {
        if root.leaves.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.pages.put(&Page::Root(root.clone())).await?))
    }

    /// The nodes closest to the record: looked up in the DHT and kept for
    /// a minute in memory and [`PEERS_KEPT`] in the cache (so a new
    /// process skips the lookup). `fresh` looks them up again.
    async fn record_peers(&self, fresh: bool) -> Result<Vec<PeerId>, Error> {
        if !fresh {
            if let Some((t, p)) = self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
                && t.elapsed() < Duration::from_secs(60)
            {
                return Ok(p);
            }
            if let Some(p) = self.cached_peers().await {
                *self.peers.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), p.clone()));
                return Ok(p);
            }
        }
        let found = self.pages.transfer().net().closest_peers(self.id.0.to_vec()).await?;
        let nodes = self.pages.transfer().nodes();
        let answered: std::collections::HashSet<PeerId> = found.iter().map(|(p, _)| *p).collect();
        nodes.add(found);
        // The lookup's answer joined with every node known, nearest first:
        // a lookup that ended early (a stalled peer) must not shrink the
        // set, or two clients could each reach a "majority" of different
        // sets and miss each other's records. Known nodes that are down
        // (they failed lately) are left out: they cannot answer, and as
        // nodes leave they would outnumber the living and no majority
        // could be had.
        let mut peers: Vec<PeerId> = nodes
            .report_all()
            .into_iter()
            .filter(|n| !n.penalized || answered.contains(&n.peer))
            .map(|n| n.peer)
            .collect();
        cairn_net::sort_by_distance(&self.id.0, &mut peers);
        peers.truncate(RECORD_PEERS);
        if peers.is_empty() {
            return Err(Error::NoNodes);
        }
        *self.peers.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), peers.clone()));
        if let Some(c) = self.pages.cache() {
            let (c, id) = (Arc::clone(c), self.id);
            let kept =
                RecordPeers { found_ms: crate::bucket::now_ms(), peers: peers.iter().map(|p| p.to_bytes()).collect() };
            let _ = tokio::task::spawn_blocking(move || c.put_record_peers(&id, &kept)).await;
        }
        Ok(peers)
    }

    /// The record's nodes as the cache has them, if looked up lately.
    async fn cached_peers(&self) -> Option<Vec<PeerId>> {
        let (c, id) = (Arc::clone(self.pages.cache()?), self.id);
        let kept = tokio::task::spawn_blocking(move || c.record_peers(&id)).await.ok()??;
        let age = crate::bucket::now_ms().saturating_sub(kept.found_ms);
        if age > PEERS_KEPT.as_millis() as u64 {
            return None;
        }
        let peers: Vec<PeerId> = kept.peers.iter().filter_map(|b| PeerId::from_bytes(b).ok()).collect();
        (!peers.is_empty()).then_some(peers)
    }

    async fn load_leaves(&self, root: &Root, keys: &[&str]) -> Result<BTreeMap<usize, Leaf>, Error> {
        // Futures are collected first: a `Map` closure inside a spawned
        // future trips the compiler's higher-ranked lifetime check.
        let loads: Vec<_> = index::touched(root, keys.iter().copied())
            .into_iter()
            .map(|i| async move { Ok::<_, Error>((i, self.leaf(&root.leaves[i]).await?)) })
            .collect();
        stream::iter(loads).buffered(FETCH_PARALLEL).try_collect().await
    }

    /// Applies the groups to `base`'s journal, with the ops that record
    /// what they replaced (see [`Retire`]); loads more leaves when those
    /// ops need them. A group that an earlier attempt offered (`offered`)
    /// and that `base` already holds is not applied again: its outcome is
    /// that attempt's.
    async fn edit(
        &self,
        base: &Snapshot,
        groups: &[Vec<Op>],
        offered: &[Offered],
        now_ms: u64,
    ) -> Result<Edited, Error> {
        let in_journal = |k: &str| journal::lookup(&base.journal, k).is_some();
        let mut keys: Vec<String> =
            groups.iter().flatten().map(|op| op.key.clone()).filter(|k| !in_journal(k)).collect();
        loop {
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let loaded = self.load_leaves(&base.root, &refs).await?;
            let mut edit = JournalEdit::new(&base.root, &loaded, &base.journal, base.count);
            // Before any group of this attempt changes the journal.
            let landed: Vec<Option<Replaced>> = (0..groups.len())
                .map(|g| {
                    offered.iter().find_map(|o| match &o[g] {
                        Some((written, replaced)) if edit.holds(written) => Some(replaced.clone()),
                        _ => None,
                    })
                })
                .collect();
            let own = *self.clock.lock().unwrap_or_else(|e| e.into_inner());
            let mut clock = Clock { last: own.max(base.clock), writer: self.writer };
            let mut results = Vec::with_capacity(groups.len());
            let mut offer = Vec::with_capacity(groups.len());
            let mut retired = Vec::new();
            for (ops, landed) in groups.iter().zip(landed) {
                if let Some(replaced) = landed {
                    results.push(Ok(replaced));
                    offer.push(None);
                    continue;
                }
                let r = edit.apply(ops.clone(), &mut clock, now_ms);
                if let (Ok(replaced), Some(hook)) = (&r, &self.opts.retire) {
                    for (op, old) in ops.iter().zip(replaced) {
                        if let Some(old) = old {
                            retired.extend(hook.retire(&op.key, old, now_ms));
                        }
                    }
                }
                offer.push(r.as_ref().ok().map(|replaced| {
                    let written = ops.iter().filter_map(|op| Some((op.key.clone(), edit.stamp(&op.key)?))).collect();
                    (written, replaced.clone())
                }));
                results.push(r);
            }
            let missing: Vec<String> =
                retired.iter().filter(|op| !edit.knows(&op.key)).map(|op| op.key.clone()).collect();
            if !missing.is_empty() {
                keys.extend(missing);
                continue;
            }
            if !retired.is_empty() {
                let r = edit.apply(retired, &mut clock, now_ms);
                debug_assert!(r.is_ok(), "retire ops carry no precondition");
            }
            let (journal, count) = edit.finish();
            return Ok(Edited { journal, count, results, clock: clock.last, offered: offer });
        }
    }

    /// One attempt: apply to the newest head known (the first attempt) or
    /// read, fold if asked or needed, publish with a majority. Returns each
    /// group's outcome and the pages no longer named.
    async fn try_commit(
        &self,
        groups: &[Vec<Op>],
        fold: Option<&[String]>,
        tried: Tried,
        offered: &mut Vec<Offered>,
        held: &mut Vec<HeadRecord>,
    ) -> Result<(Vec<Result<Replaced, Conflict>>, Vec<PagePtr>), Error> {
        let started = Instant::now();
        let known = if tried.attempts == 0 { self.lock_latest().clone() } else { None };
        let base = match known {
            Some(s) => s,
            // The refusals of the race just lost showed the newer head.
            None if !held.is_empty() => self.open_heads(std::mem::take(held)).await?,
            None => self.load().await?,
        };
        let based = started.elapsed();
        let now_ms = crate::bucket::now_ms();
        let Edited { journal, count, results, clock, offered: offer } =
            self.edit(&base, groups, offered, now_ms).await?;
        if results.iter().all(Result::is_err) {
            // Nothing to publish: every group's precondition failed.
            return Ok((results, Vec::new()));
        }
        let edited = started.elapsed();
        let mut garbage = Vec::new();
        let mut root = Arc::clone(&base.root);
        let mut runs = base.runs.clone();
        let mut in_runs = Arc::clone(&base.in_runs);
        let mut payload = HeadPayload {
            root: base.root_ptr.clone(),
            count,
            clock,
            journal: journal::beyond(&journal, &in_runs),
            runs: runs.clone(),
        };
        let mut journal = journal;
        // A journal that will not fit in the head or a new run waits for a
        // background fold under way (it holds most of it) rather than
        // folding it all again.
        if fold.is_none() && !formats::head_fits(&payload) && runs.len() >= formats::MAX_RUNS {
            let done = self.fold_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.folding.load(Ordering::Acquire) {
                done.await;
            }
        }
        let used = self.usable_fold(base.root_ptr.as_ref(), &journal);
        if let Some((f, left)) = &used {
            garbage = f.replaced.clone();
            garbage.append(&mut runs);
            root = Arc::clone(&f.root);
            in_runs = Arc::default();
            journal = left.clone();
            payload = HeadPayload { root: f.root_ptr.clone(), journal: left.clone(), runs: Vec::new(), ..payload };
        }
        let mut spilled = false;
        if fold.is_none()
            && !formats::head_fits(&payload)
            && runs.len() < formats::MAX_RUNS
            && journal::size(&payload.journal) <= MAX_RUN
        {
            // The head's journal becomes the newest run.
            let own = std::mem::take(&mut payload.journal);
            let run = self.pages.put(&Page::Leaf(Leaf { entries: own })).await?;
            runs.insert(0, run);
            payload.runs = runs.clone();
            spilled = true;
        }
        let folded_now = fold.is_some() || !formats::head_fits(&payload);
        if folded_now {
            let f = self.fold(&root, payload.root.as_ref(), &journal, fold.unwrap_or_default(), now_ms).await?;
            garbage.extend(f.replaced);
            // A run stored by this attempt is named by no head: the fold
            // holds what it held.
            if std::mem::take(&mut spilled) {
                self.pages.delete(&runs.remove(0));
            }
            garbage.append(&mut runs);
            root = f.root;
            in_runs = Arc::default();
            journal = Vec::new();
            payload = HeadPayload { root: f.root_ptr, journal: Vec::new(), runs: Vec::new(), ..payload };
        }
        let folded = started.elapsed();
        let sealed = self.key.seal(&self.payload_aad(), &formats::encode_head(&payload));
        let seq = base.seq + 1;
        let public_key = self.signer.public_key();
        let signature = self.signer.sign(&HeadRecord::signing_bytes(&public_key, seq, &sealed));
        let record = HeadRecord { public_key, sequence: seq, payload: sealed, signature };
        let peers = self.record_peers(tried.failed > 1).await?;
        // Pages of an attempt that lost are left to expire: a minority of
        // nodes may hold its record, and a reader merges what it names.
        if let Some((f, _)) = &used {
            f.offered.store(true, Ordering::Release);
        }
        // Groups that landed earlier are published again with the rest: a
        // minority held them, now a majority must.
        offered.push(offer);
        if let Err((e, newer)) = heads::offer(self.pages.transfer(), &self.tasks, &peers, &record).await {
            *held = newer;
            return Err(e);
        }
        if let Some((f, _)) = &used {
            self.fold_named(f);
        }
        tracing::debug!(
            seq,
            groups = groups.len(),
            journal = payload.journal.len(),
            runs = payload.runs.len(),
            spilled,
            folded_now,
            ?based,
            ?edited,
            ?folded,
            published = ?started.elapsed(),
            "committed"
        );
        {
            let mut c = self.clock.lock().unwrap_or_else(|e| e.into_inner());
            *c = (*c).max(clock);
        }
        // A spill leaves the whole journal in runs: the two share it.
        let journal = Arc::new(journal);
        if spilled {
            in_runs = Arc::clone(&journal);
        }
        let snap = Snapshot {
            seq,
            root,
            journal,
            count,
            root_ptr: payload.root,
            runs: payload.runs,
            in_runs,
            clock,
            taken: Instant::now(),
        };
        self.remember(&snap).await;
        Ok((results, garbage))
    }

    /// Commits `groups`; `fold`: fold the journal too, and store again the
    /// leaves its keys fall in.
    async fn commit(
        &self,
        groups: &[Vec<Op>],
        fold: Option<&[String]>,
    ) -> Result<Vec<Result<Replaced, Conflict>>, Error> {
        let mut last = None;
        let mut offered = Vec::new();
        let mut held = Vec::new();
        let mut tried = Tried::default();
        while tried.failed < ATTEMPTS && tried.races < RACES {
            match self.try_commit(groups, fold, tried, &mut offered, &mut held).await {
                Ok((results, garbage)) => {
                    for page in garbage {
                        self.pages.delete(&page);
                    }
                    return Ok(results);
                }
                // The tree went back or cannot be read: retrying would
                // build on it. Say so at once.
                Err(e @ (Error::HeadBehind { .. } | Error::HeadUnreadable { .. })) if tried.failed + 1 >= 3 => {
                    return Err(e);
                }
                // Another writer published first: go again at once on the
                // head its refusals showed (the first time, on a head this
                // client knew, that is expected). A pause would only make
                // that head old before the next try; racing again and
                // again, wait up to a millisecond at random, so that two
                // writers that keep splitting the nodes stop meeting.
                Err(e @ Error::HeadRaced { .. }) => {
                    tracing::debug!(races = tried.races, error = %e, "another writer published first; going again on its head");
                    tried.races += 1;
                    last = Some(e);
                    if tried.races > 2 {
                        tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % 1000)).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(failed = tried.failed, error = %e, "commit attempt failed; retrying");
                    let wait = 20u64 << tried.failed.min(6);
                    tried.failed += 1;
                    last = Some(e);
                    held.clear();
                    let jitter = u64::from(rand::random::<u8>());
                    tokio::time::sleep(Duration::from_millis(wait + jitter)).await;
                }
            }
            tried.attempts += 1;
        }
        Err(Error::CommitFailed { attempts: tried.attempts, last: Arc::new(last.unwrap_or(Error::Stopped)) })
    }
}

/// The attempts of one commit so far.
#[derive(Clone, Copy, Debug, Default)]
struct Tried {
    /// All of them.
    attempts: u32,
    /// Those that failed for another reason than a lost race.
    failed: u32,
    /// Those that another writer's publish beat.
    races: u32,
}

async fn committer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Work>) {
    let mut expect = 1;
    while let Some(first) = rx.recv().await {
        let mut batch = gather(&mut rx, first, expect, |w| w.ops.len()).await;
        // Writers, whom the next batch waits for (not a fold's naming).
        let committed = batch.iter().filter(|w| w.mode != Mode::NameFold).count();
        inner.queued.fetch_sub(committed, Ordering::SeqCst);
        let rewrite: Vec<String> = batch.iter_mut().flat_map(|w| std::mem::take(&mut w.rewrite)).collect();
        let fold = batch.iter().any(|w| w.mode == Mode::Fold).then_some(rewrite.as_slice());
        if batch.iter().all(|w| w.mode == Mode::NameFold)
            && inner.folded.lock().unwrap_or_else(|e| e.into_inner()).is_none()
        {
            // The fold was named by a commit in between.
            continue;
        }
        let (groups, replies): (Vec<Vec<Op>>, Vec<Reply>) = batch.into_iter().map(|w| (w.ops, w.reply)).unzip();
        let result = inner.commit(&groups, fold).await;
        // Before the replies, so that none of the answered is counted twice.
        expect = writers(committed, inner.queued.load(Ordering::SeqCst));
        match result {
            Ok(results) => {
                // Before the replies: a caller that shuts down once answered
                // finds the fold among the work it waits for.
                inner.fold_later();
                for (r, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(r.map_err(|c| Error::Conflict { key: c.key }));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(Error::Shared(Arc::clone(&e))));
                }
            }
        }
    }
}

/// A precondition on a key: its current value's stamp, or absent.
pub fn expect_current(value: Option<&Value>) -> Expect {
    value.map_or(Expect::Absent, |v| Expect::Stamp(v.stamp))
}
