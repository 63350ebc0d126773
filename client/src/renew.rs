//! Lease renewal: keeping alive on the nodes what an account references.
//!
//! Every shard and index page is stored with a lease (the client asks for
//! `lease_secs`, 365 days by default; each node caps it at its
//! `max_lease_secs`), and a node collects what nobody renews. So a walk
//! renews, for each tree (the bucket list, each bucket), the copies of its
//! root page, every shard the entries of its journal (in the head record)
//! reference, and the copies of each leaf page together with every shard
//! its entries reference. What nothing references (an abandoned upload,
//! the pages of a commit that lost its race, data whose delete never
//! reached a node) is never renewed, and goes when its lease ends.
//!
//! The walk is incremental. Pages are immutable and named by their hash,
//! so once every lease a leaf page covers (itself and its entries' shards)
//! was renewed until `t`, the cache remembers `t` under the page's id, and
//! walks skip the leaf until `t` is near; a changed leaf is a new page.
//! A walk costs requests in proportion to what changed or falls due, not
//! to the size of the account: for a million objects in 2 000 leaves, a
//! daily walk renews about 1/180 of them (a 365-day lease is renewed when
//! half of it is left).
//!
//! Copies are renewed in batches of up to 56 per node and request
//! ([`batches`], a pure function); outcomes are folded per leaf by
//! [`Tally`]. A copy whose node answers `NotFound`, or does not answer, is
//! reported: it is what repair has to rebuild.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_net::PeerId;
use cairn_proto::shard::{MAX_RENEW_BATCH, Renewal};
use cairn_proto::{NodeId, ShardId};
use futures::StreamExt;

use crate::cache::Cache;
use crate::error::Error;
use crate::index::{LeafRef, PagePtr, Value};
use crate::transfer::{Transfer, peer_of, renew_token};
use crate::tree::{Snapshot, Tree};

/// Renew requests in flight at once.
const PARALLEL: usize = 16;
/// Leaves whose copies are renewed together (their batches are shared).
const LEAVES_PER_ROUND: usize = 8;

/// One stored copy to renew: a shard (or page) at one node, with the key
/// its tokens derive from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// The shard or page.
    pub id: ShardId,
    /// The node holding this copy.
    pub holder: NodeId,
    /// The owner key its tokens derive from.
    pub key: [u8; 32],
}

/// What became of one copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered.
    Answered(Renewal),
    /// The node could not be asked, or did not answer.
    Unreachable,
}

/// What a walk did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenewReport {
    /// Trees walked (the bucket list and buckets).
    pub trees: u64,
    /// Leaf pages whose leases were renewed.
    pub leaves: u64,
    /// Leaf pages skipped: all their leases run long enough.
    pub skipped: u64,
    /// Copies renewed.
    pub renewed: u64,
    /// Copies their node no longer holds (lost or collected).
    pub missing: u64,
    /// Copies their node refused to renew (a token that is not the owner's).
    pub refused: u64,
    /// Copies at nodes that did not answer.
    pub unreachable: u64,
    /// Renew requests sent.
    pub requests: u64,
    /// The earliest lease end granted in this walk (Unix seconds).
    pub earliest: Option<u64>,
    /// Head records published again.
    pub heads: u64,
}

impl RenewReport {
    /// Adds another walk's figures.
    pub fn add(&mut self, o: &RenewReport) {
        self.trees += o.trees;
        self.leaves += o.leaves;
        self.skipped += o.skipped;
        self.renewed += o.renewed;
        self.missing += o.missing;
        self.refused += o.refused;
        self.unreachable += o.unreachable;
        self.requests += o.requests;
        self.heads += o.heads;
        self.earliest = match (self.earliest, o.earliest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Whether every copy asked about was renewed.
    pub fn complete(&self) -> bool {
        self.missing == 0 && self.refused == 0 && self.unreachable == 0
    }
}

/// Groups copies by holder into requests of at most [`MAX_RENEW_BATCH`]:
/// each batch is a holder and indexes into `copies`. Holders come in order
/// of first appearance, so the plan is deterministic.
pub fn batches(copies: &[Copy]) -> Vec<(NodeId, Vec<usize>)> {
    let mut by_holder: Vec<(NodeId, Vec<usize>)> = Vec::new();
    let mut at: HashMap<&NodeId, usize> = HashMap::new();
    for (i, c) in copies.iter().enumerate() {
        let slot = *at.entry(&c.holder).or_insert_with(|| {
            by_holder.push((c.holder.clone(), Vec::new()));
            by_holder.len() - 1
        });
        by_holder[slot].1.push(i);
    }
    by_holder
        .into_iter()
        .flat_map(|(holder, idx)| idx.chunks(MAX_RENEW_BATCH).map(|c| (holder.clone(), c.to_vec())).collect::<Vec<_>>())
        .collect()
}

/// Folds outcomes per group of copies (a leaf page and what it
/// references): the earliest lease end when every copy was renewed.
#[derive(Debug, Default)]
pub struct Tally {
    groups: Vec<Group>,
    report: RenewReport,
}

#[derive(Debug, Default, Clone, Copy)]
struct Group {
    until: Option<u64>,
    failed: bool,
}

impl Tally {
    /// A tally of `groups` groups.
    pub fn new(groups: usize) -> Self {
        Self { groups: vec![Group::default(); groups], report: RenewReport::default() }
    }

    /// Records the outcome of a copy of group `g`.
    pub fn record(&mut self, g: usize, outcome: Outcome) {
        let group = &mut self.groups[g];
        match outcome {
            Outcome::Answered(Renewal::Until(t)) => {
                self.report.renewed += 1;
                group.until = Some(group.until.map_or(t, |u| u.min(t)));
                self.report.earliest = Some(self.report.earliest.map_or(t, |u| u.min(t)));
            }
            Outcome::Answered(Renewal::NotFound) => {
                self.report.missing += 1;
                group.failed = true;
            }
            Outcome::Answered(Renewal::BadToken) => {
                self.report.refused += 1;
                group.failed = true;
            }
            Outcome::Unreachable => {
                self.report.unreachable += 1;
                group.failed = true;
            }
        }
    }

    /// The lease end every copy of group `g` now has, if all were renewed.
    pub fn renewed_until(&self, g: usize) -> Option<u64> {
        let group = self.groups[g];
        if group.failed { None } else { group.until }
    }

    /// The figures so far.
    pub fn into_report(self) -> RenewReport {
        self.report
    }
}

/// Renews `copies` (each tagged with its group) for `lease_secs`, folding
/// the outcomes into `tally`.
async fn renew_copies(transfer: &Transfer, lease_secs: u64, copies: &[(usize, Copy)], tally: &mut Tally) {
    let plain: Vec<Copy> = copies.iter().map(|(_, c)| c.clone()).collect();
    let plan = batches(&plain);
    tally.report.requests += plan.len() as u64;
    let mut answers = futures::stream::iter(plan.into_iter().map(|(holder, idx)| {
        let shards: Vec<(ShardId, [u8; 32])> =
            idx.iter().map(|&i| (plain[i].id, renew_token(&plain[i].key, &plain[i].id, &holder))).collect();
        let peer: Option<PeerId> = peer_of(&holder);
        async move {
            let got = match peer {
                Some(p) => transfer.client(p).renew(lease_secs, shards).await,
                None => return (idx, None, None),
            };
            (idx, peer, Some(got))
        }
    }))
    .buffer_unordered(PARALLEL);
    while let Some((idx, peer, got)) = answers.next().await {
        match got {
            Some(Ok(outcomes)) => {
                if let Some(p) = peer {
                    transfer.nodes().report(p, true);
                }
                for (i, r) in idx.into_iter().zip(outcomes) {
                    tally.record(copies[i].0, Outcome::Answered(r));
                }
            }
            other => {
                if let (Some(p), Some(Err(e))) = (peer, &other) {
                    tracing::debug!(peer = %p, error = %e, "renew failed");
                    transfer.nodes().report(p, false);
                }
                for i in idx {
                    tally.record(copies[i].0, Outcome::Unreachable);
                }
            }
        }
    }
}

/// Copies of a page, with the tree's page key.
fn page_copies(ptr: &PagePtr, key: &[u8; 32]) -> impl Iterator<Item = Copy> {
    let (id, key) = (ptr.id, *key);
    ptr.holders.iter().map(move |h| Copy { id, holder: h.clone(), key })
}

/// What a tree's entries reference beyond its pages: for a bucket, the
/// shards of each entry's data.
pub(crate) type References = dyn Fn(&str, &Value) -> Result<Vec<Copy>, Error> + Send + Sync;

/// Renews the pages of `tree` as of `snap`, and what `refs` says each
/// entry references. Leaves whose leases run past `due` (Unix seconds), as
/// remembered in `cache`, are skipped.
pub(crate) async fn renew_tree(
    tree: &Tree,
    snap: &Snapshot,
    cache: Option<&Arc<Cache>>,
    lease_secs: u64,
    due: u64,
    refs: &References,
) -> Result<RenewReport, Error> {
    let transfer = tree.pages().transfer();
    let key = *tree.pages().token_key();
    let mut report = RenewReport { trees: 1, ..RenewReport::default() };
    // The root page and the runs, every walk (a few pages: cheap).
    let copies: Vec<(usize, Copy)> =
        snap.root_ptr().into_iter().chain(snap.runs()).flat_map(|p| page_copies(p, &key)).map(|c| (0, c)).collect();
    if !copies.is_empty() {
        let mut tally = Tally::new(1);
        renew_copies(transfer, lease_secs, &copies, &mut tally).await;
        report.add(&tally.into_report());
    }
    // What the journal's entries reference (the runs' included), every
    // walk (it is small).
    let mut copies: Vec<(usize, Copy)> = Vec::new();
    for (k, v) in snap.journal.iter().filter(|(_, v)| v.data.is_some()) {
        copies.extend(refs(k, v)?.into_iter().map(|c| (0, c)));
    }
    if !copies.is_empty() {
        let mut tally = Tally::new(1);
        renew_copies(transfer, lease_secs, &copies, &mut tally).await;
        report.add(&tally.into_report());
    }
    for round in snap.root.leaves.chunks(LEAVES_PER_ROUND) {
        let mut due_leaves: Vec<&LeafRef> = Vec::new();
        for leaf in round {
            match remembered(cache, &leaf.page.id).await {
                Some(until) if until > due => report.skipped += 1,
                _ => due_leaves.push(leaf),
            }
        }
        if due_leaves.is_empty() {
            continue;
        }
        let mut copies: Vec<(usize, Copy)> = Vec::new();
        for (g, leaf) in due_leaves.iter().enumerate() {
            copies.extend(page_copies(&leaf.page, &key).map(|c| (g, c)));
            for (k, v) in tree.leaf_page(leaf).await?.live() {
                copies.extend(refs(k, v)?.into_iter().map(|c| (g, c)));
            }
        }
        let mut tally = Tally::new(due_leaves.len());
        renew_copies(transfer, lease_secs, &copies, &mut tally).await;
        for (g, leaf) in due_leaves.iter().enumerate() {
            if let Some(until) = tally.renewed_until(g) {
                remember(cache, leaf.page.id, until).await;
            }
        }
        report.leaves += due_leaves.len() as u64;
        report.add(&tally.into_report());
    }
    Ok(report)
}

/// When the leases a leaf page covers end, as remembered.
async fn remembered(cache: Option<&Arc<Cache>>, id: &ShardId) -> Option<u64> {
    let (c, id) = (Arc::clone(cache?), *id);
    tokio::task::spawn_blocking(move || c.renewed_until(&id)).await.ok().flatten()
}

async fn remember(cache: Option<&Arc<Cache>>, id: ShardId, until: u64) {
    if let Some(c) = cache {
        let c = Arc::clone(c);
        let _ = tokio::task::spawn_blocking(move || c.put_renewed_until(&id, until)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> NodeId {
        NodeId::from_bytes(vec![i; 8]).expect("id")
    }

    fn copy(shard: u8, holder: u8) -> Copy {
        Copy { id: ShardId([shard; 32]), holder: node(holder), key: [0; 32] }
    }

    #[test]
    fn batches_group_by_holder_and_split_at_the_request_limit() {
        let mut copies: Vec<Copy> = (0..130).map(|i| copy(i as u8, 1)).collect();
        copies.push(copy(200, 2));
        copies.insert(3, copy(201, 2));
        let plan = batches(&copies);
        let sizes: Vec<(u8, usize)> = plan.iter().map(|(h, idx)| (h.as_bytes()[0], idx.len())).collect();
        assert_eq!(sizes, vec![(1, 56), (1, 56), (1, 18), (2, 2)]);
        // Every copy exactly once, each batch at one holder.
        let mut seen: Vec<usize> = plan.iter().flat_map(|(_, idx)| idx.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..copies.len()).collect::<Vec<_>>());
        for (h, idx) in &plan {
            assert!(idx.iter().all(|&i| copies[i].holder == *h));
        }
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn a_group_counts_as_renewed_only_when_every_copy_was() {
        let mut t = Tally::new(3);
        t.record(0, Outcome::Answered(Renewal::Until(500)));
        t.record(0, Outcome::Answered(Renewal::Until(400)));
        t.record(1, Outcome::Answered(Renewal::Until(450)));
        t.record(1, Outcome::Answered(Renewal::NotFound));
        t.record(2, Outcome::Unreachable);
        t.record(2, Outcome::Answered(Renewal::BadToken));
        assert_eq!(t.renewed_until(0), Some(400));
        assert_eq!(t.renewed_until(1), None);
        assert_eq!(t.renewed_until(2), None);
        let r = t.into_report();
        assert_eq!((r.renewed, r.missing, r.refused, r.unreachable), (3, 1, 1, 1));
        assert_eq!(r.earliest, Some(400));
        assert!(!r.complete());
    }

    #[test]
    fn reports_add_up() {
        let mut a = RenewReport { renewed: 2, earliest: Some(9), ..Default::default() };
        a.add(&RenewReport { renewed: 3, earliest: Some(7), skipped: 1, ..Default::default() });
        a.add(&RenewReport::default());
        assert_eq!((a.renewed, a.skipped, a.earliest), (5, 1, Some(7)));
        assert!(a.complete());
    }
}
