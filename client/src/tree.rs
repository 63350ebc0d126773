//! A tree of sealed pages whose root is named by a signed head record in
//! the DHT: a bucket's index, or the account's bucket list.
//!
//! Writes go through one committer task per tree (group commit): every op
//! queued while a commit is running goes into the next one, so a burst of
//! small writes costs a few DHT round trips, not one each.
//!
//! A commit is a compare-and-swap on the sequence number: it reads the
//! newest head, applies its ops, and publishes `sequence + 1` to a majority
//! of the record's closest nodes. Nodes refuse a sequence they already
//! hold, so of two writers racing on one sequence at most one gets its
//! majority; the other reads again and re-applies its ops on top (last
//! writer wins per key). A reader that finds two records with the newest
//! sequence (a writer that lost a race, or a majority that could not be
//! reached) merges their trees key by key, so nothing acknowledged is lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_crypto::{RecordSigner, SymmetricKey};
use cairn_net::{NetHandle, PeerId};
use cairn_proto::RecordId;
use cairn_proto::codec;
use cairn_proto::head::HeadRecord;
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::index::{self, Leaf, LeafRef, Op, Page, PagePtr, Root, Slot, Value};
use crate::pages::Pages;

/// Ops waiting for the committer.
const QUEUE: usize = 1024;
/// Most ops in one commit.
const MAX_BATCH: usize = 4096;
/// Attempts before a commit gives up.
const ATTEMPTS: u32 = 10;
/// Pages fetched at once.
const FETCH_PARALLEL: usize = 16;
/// Version marker of the head payload.
const PAYLOAD_V1: u8 = 1;

/// What a head record points at (sealed inside it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HeadPayload {
    root: Option<PagePtr>,
    count: u64,
}

/// A consistent view of the tree.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Sequence of the head record it came from (0: never written).
    pub seq: u64,
    /// The root page.
    pub root: Arc<Root>,
    root_ptr: Option<PagePtr>,
    taken: Instant,
}

type Reply = oneshot::Sender<Result<Vec<Option<Value>>, String>>;

struct Inner {
    net: NetHandle,
    signer: RecordSigner,
    key: SymmetricKey,
    pages: Pages,
    id: RecordId,
    latest: Mutex<Option<Snapshot>>,
    peers: Mutex<Option<(Instant, Vec<PeerId>)>>,
}

/// A tree handle; clones share the committer.
#[derive(Clone)]
pub struct Tree {
    inner: Arc<Inner>,
    commits: mpsc::Sender<(Vec<Op>, Reply)>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("record", &self.inner.id).finish_non_exhaustive()
    }
}

impl Tree {
    /// A tree whose head is signed by `signer` and whose pages and head
    /// payload are sealed with `key`. Starts its committer task.
    pub fn new(net: NetHandle, signer: RecordSigner, key: SymmetricKey, pages: Pages) -> Self {
        let id = HeadRecord::record_id_for(&signer.public_key());
        let inner = Arc::new(Inner { net, signer, key, pages, id, latest: Mutex::new(None), peers: Mutex::new(None) });
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(committer(Arc::clone(&inner), rx));
        Self { inner, commits: tx }
    }

    /// The newest view, reusing one taken less than `max_age` ago.
    pub async fn snapshot(&self, max_age: Duration) -> Result<Snapshot, Error> {
        if let Some(s) = self.inner.lock_latest().clone()
            && s.taken.elapsed() <= max_age
        {
            return Ok(s);
        }
        self.inner.load().await
    }

    /// Applies `ops` in one atomic step (possibly together with other
    /// callers' ops). Returns, per op, the value it replaced or removed.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<Vec<Option<Value>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.commits.send((ops, tx)).await.map_err(|_| Error::Commit("the committer stopped".into()))?;
        rx.await.map_err(|_| Error::Commit("the committer stopped".into()))?.map_err(Error::Commit)
    }

    /// The nodes holding the pages of `snap`: for each page, its holders.
    pub fn page_holders(&self, snap: &Snapshot) -> Vec<Vec<PeerId>> {
        snap.root_ptr
            .iter()
            .chain(snap.root.leaves.iter().map(|l| &l.page))
            .map(|p| p.holders.iter().filter_map(crate::transfer::peer_of).collect())
            .collect()
    }

    /// The value under `key` in `snap`.
    pub async fn get(&self, snap: &Snapshot, key: &str) -> Result<Option<Value>, Error> {
        let Some(i) = snap.root.leaf_for(key) else { return Ok(None) };
        Ok(self.inner.leaf(&snap.root.leaves[i]).await?.get(key).cloned())
    }

    /// Entries of `snap` whose key starts with `prefix` and is greater than
    /// `after`, in order, at most `limit`.
    pub async fn list(
        &self,
        snap: &Snapshot,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, Error> {
        let leaves = &snap.root.leaves[snap.root.leaves_for_prefix(prefix, after)];
        let loads: Vec<_> = leaves.iter().map(|l| self.inner.leaf(l)).collect();
        let mut pages = stream::iter(loads).buffered(FETCH_PARALLEL);
        let mut out = Vec::new();
        while let Some(leaf) = pages.try_next().await? {
            for (k, v) in leaf.entries {
                if k.as_str() > after && k.starts_with(prefix) {
                    out.push((k, v));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
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

    async fn leaf(&self, r: &LeafRef) -> Result<Leaf, Error> {
        match self.pages.get(&r.page).await? {
            Page::Leaf(l) => Ok(l),
            Page::Root(_) => Err(Error::Index(format!("page {} is a root where a leaf was expected", r.page.id))),
        }
    }

    async fn root(&self, ptr: &Option<PagePtr>) -> Result<Root, Error> {
        let Some(ptr) = ptr else { return Ok(Root::default()) };
        match self.pages.get(ptr).await? {
            Page::Root(r) => Ok(r),
            Page::Leaf(_) => Err(Error::Index(format!("page {} is a leaf where a root was expected", ptr.id))),
        }
    }

    /// Reads the newest head from the DHT; merges diverged variants.
    async fn load(&self) -> Result<Snapshot, Error> {
        let records = match self.net.get_record(self.id).await {
            Ok(r) => r,
            Err(cairn_net::Error::RecordNotFound) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let public = self.signer.public_key();
        let seq = records.iter().filter(|r| r.public_key == public).map(|r| r.sequence).max().unwrap_or(0);
        let mut variants: Vec<HeadPayload> = Vec::new();
        for r in records.iter().filter(|r| r.public_key == public && r.sequence == seq) {
            match self.key.open(&self.payload_aad(), &r.payload) {
                Ok(p) => match codec::from_versioned::<HeadPayload>("head payload", PAYLOAD_V1, &p, 4096) {
                    Ok(h) if !variants.contains(&h) => variants.push(h),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "head payload does not decode"),
                },
                Err(_) => tracing::warn!(seq, "head payload does not open"),
            }
        }
        let (root_ptr, root) = match variants.len() {
            0 => (None, Root::default()),
            1 => {
                let ptr = variants.pop().and_then(|v| v.root);
                let root = self.root(&ptr).await?;
                (ptr, root)
            }
            n => {
                tracing::info!(seq, variants = n, "head records diverged; merging");
                self.merge(variants).await?
            }
        };
        let snap = Snapshot { seq, root: Arc::new(root), root_ptr, taken: Instant::now() };
        *self.lock_latest() = Some(snap.clone());
        Ok(snap)
    }

    /// Joins diverged trees into one new root (stored, not yet published).
    async fn merge(&self, variants: Vec<HeadPayload>) -> Result<(Option<PagePtr>, Root), Error> {
        let mut entries = Vec::new();
        let mut loaded = 0;
        for v in variants {
            match self.all_entries(&v.root).await {
                Ok(e) => {
                    entries = index::merge(entries, e);
                    loaded += 1;
                }
                // A variant whose pages are gone lost its race and was
                // deleted; its writer was told and retries.
                Err(e) => tracing::warn!(error = %e, "a diverged head cannot be read; skipping it"),
            }
        }
        if loaded == 0 {
            return Err(Error::Index("no version of the head record can be read".into()));
        }
        let slots = index::build_leaves(entries).into_iter().map(Slot::New).collect();
        let root = self.store_slots(slots).await?;
        let ptr = self.store_root(&root).await?;
        Ok((ptr, root))
    }

    async fn all_entries(&self, ptr: &Option<PagePtr>) -> Result<Vec<(String, Value)>, Error> {
        let root = self.root(ptr).await?;
        let loads: Vec<_> = root.leaves.iter().map(|l| self.leaf(l)).collect();
        let leaves: Vec<Leaf> = stream::iter(loads).buffered(FETCH_PARALLEL).try_collect().await?;
        Ok(leaves.into_iter().flat_map(|l| l.entries).collect())
    }

    async fn store_slots(&self, slots: Vec<Slot>) -> Result<Root, Error> {
        let stores: Vec<_> = slots
            .into_iter()
            .map(|s| async move {
                match s {
                    Slot::Keep(r) => Ok(r),
                    Slot::New(leaf) => {
                        let first = leaf.entries.first().map(|(k, _)| k.clone()).unwrap_or_default();
                        let count = leaf.entries.len() as u64;
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

    /// The nodes closest to the record (kept for a minute).
    async fn record_peers(&self, fresh: bool) -> Result<Vec<PeerId>, Error> {
        if !fresh
            && let Some((t, p)) = self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
            && t.elapsed() < Duration::from_secs(60)
        {
            return Ok(p);
        }
        let peers: Vec<PeerId> =
            self.net.closest_peers(self.id.0.to_vec()).await?.into_iter().map(|(p, _)| p).collect();
        if peers.is_empty() {
            return Err(Error::NoNodes);
        }
        *self.peers.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), peers.clone()));
        Ok(peers)
    }

    /// One attempt: read, apply, store pages, publish with a majority.
    async fn try_commit(
        &self,
        ops: Vec<Op>,
        attempt: u32,
    ) -> Result<(Snapshot, Vec<Option<Value>>, Vec<PagePtr>), Error> {
        let base = self.load().await?;
        let touched = index::touched(&base.root, &ops);
        let root = &base.root;
        // Futures are collected first: a `Map` closure inside a spawned
        // future trips the compiler's higher-ranked lifetime check.
        let loads: Vec<_> =
            touched.iter().map(|&i| async move { Ok::<_, Error>((i, self.leaf(&root.leaves[i]).await?)) }).collect();
        let loaded: BTreeMap<usize, Leaf> = stream::iter(loads).buffered(FETCH_PARALLEL).try_collect().await?;
        let replaced_pages: Vec<PagePtr> = touched.iter().map(|&i| base.root.leaves[i].page.clone()).collect();
        let (slots, replaced) = index::apply(&base.root, loaded, ops);
        let root = self.store_slots(slots).await?;
        let root_ptr = self.store_root(&root).await?;
        let payload = HeadPayload { root: root_ptr.clone(), count: root.count() };
        let sealed = self.key.seal(&self.payload_aad(), &codec::to_versioned(PAYLOAD_V1, &payload));
        let seq = base.seq + 1;
        let public_key = self.signer.public_key();
        let signature = self.signer.sign(&HeadRecord::signing_bytes(&public_key, seq, &sealed));
        let record = HeadRecord { public_key, sequence: seq, payload: sealed, signature };
        let peers = self.record_peers(attempt > 0).await?;
        let quorum = peers.len() / 2 + 1;
        self.net.put_record_to(record, peers, quorum).await?;
        let mut garbage = replaced_pages;
        garbage.extend(base.root_ptr.clone());
        let snap = Snapshot { seq, root: Arc::new(root), root_ptr, taken: Instant::now() };
        *self.lock_latest() = Some(snap.clone());
        Ok((snap, replaced, garbage))
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<Vec<Option<Value>>, Error> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            match self.try_commit(ops.clone(), attempt).await {
                Ok((_, replaced, garbage)) => {
                    for page in garbage {
                        self.pages.delete(&page);
                    }
                    return Ok(replaced);
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "commit attempt failed; retrying");
                    last = Some(e);
                    let jitter = u64::from(rand::random::<u8>());
                    let wait = 20u64 << attempt.min(6);
                    tokio::time::sleep(Duration::from_millis(wait + jitter)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Commit("no attempt ran".into())))
    }
}

async fn committer(inner: Arc<Inner>, mut rx: mpsc::Receiver<(Vec<Op>, Reply)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut size = batch[0].0.len();
        while size < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => {
                    size += more.0.len();
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        let ops: Vec<Op> = batch.iter().flat_map(|(ops, _)| ops.iter().cloned()).collect();
        match inner.commit(ops).await {
            Ok(mut replaced) => {
                for (ops, reply) in batch {
                    let rest = replaced.split_off(ops.len().min(replaced.len()));
                    let _ = reply.send(Ok(std::mem::replace(&mut replaced, rest)));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(msg.clone()));
                }
            }
        }
    }
}
