//! Repair: rebuilding the shards of segments whose holders are gone.
//!
//! A walk over a bucket reads every entry (index pages come from the local
//! cache when they are there), asks each distinct holder once whether it
//! is up (Storj's checker works from node liveness the same way, not from
//! a request per piece) and audits a few random shards of each
//! ([`crate::audit`]): a holder that fails an audit counts as down, so its
//! shards are rebuilt elsewhere. It finds the segments with fewer healthy
//! shards than [`threshold`]: `k + 4` (at most `n`). Those are repaired, the least
//! healthy first: `k` shards are fetched and verified, the lost ones are
//! rebuilt from them (Reed-Solomon over ciphertext: the repairer needs no
//! plaintext, only the data key the delete tokens derive from), each is
//! checked against its id, placed on a node that holds no other shard of
//! its segment, and the entry is committed with its new holders as a
//! compare-and-swap on the entry. If the entry changed meanwhile (a write,
//! or another repairer that was first), the commit is refused, the shards
//! just placed are deleted, and the next walk looks again: two repairers
//! at once lose no update and keep no double placement.
//!
//! A bandwidth [`Budget`] spaces repairs so that a large failure does not
//! become a repair storm. [`assess`], [`rebuild`] and [`Budget`] are plain
//! functions and state, tested without a network.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use cairn_net::PeerId;
use cairn_proto::layout::SegmentLayout;
use cairn_proto::manifest::ObjectManifest;
use cairn_proto::{NodeId, ShardId};
use futures::StreamExt;
use reed_solomon_simd::ReedSolomonEncoder;
use tokio::time::Instant;

use crate::audit::{Sample, Sampler, Standing, audit_node};
use crate::bucket::{Bucket, still};
use crate::entry::Body;
use crate::error::Error;
use crate::formats;
use crate::gc::GARBAGE_PREFIX;
use crate::index::{Op, PagePtr, Value};
use crate::pages::REPLICAS;
use crate::segment::{choose_verified, rebuild_columns};
use crate::transfer::{Outgoing, Transfer, Wanted, delete_token, peer_of};
use crate::tree::{Snapshot, Tree};

/// Entries read per listing step.
const LIST_BATCH: usize = 1000;
/// Liveness probes in flight at once.
const PROBES: usize = 32;
/// How long placement passes over a node a repair walk found down.
const DOWN_FOR: Duration = Duration::from_secs(600);
/// How long placement passes over a node that is leaving the network.
const LEAVING_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long placement passes over a node that failed an audit.
const FAILED_FOR: Duration = Duration::from_secs(24 * 3600);
/// Shards audited per holder per walk.
pub const AUDITS_PER_HOLDER: usize = 2;

/// A segment is repaired when fewer of its shards than this are healthy:
/// `k + 4`, at most `n` (the default 4-of-8 repairs at its first loss).
/// The durability model (`cairn bench durability`) is why: a segment is
/// lost only if `threshold - k + 1` holders go within one repair walk,
/// and with four that is about 1e-13 a year at 10 % monthly churn, where
/// two (`k + 2`) give about 1e-7.
pub fn threshold(k: u16, n: u16) -> usize {
    usize::from(k.saturating_add(4).min(n))
}

/// A segment that needs repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Which of the entry's data versions.
    pub manifest: usize,
    /// Which segment of it.
    pub segment: usize,
    /// Shards whose holder is up.
    pub healthy: usize,
    /// Shards to rebuild (holder down, or never stored), as many as bring
    /// the segment back to its target.
    pub lost: Vec<usize>,
}

/// The segments of `data` below [`threshold`] of `target`, given which
/// holders are up, and which shards to rebuild: enough to have `target`
/// healthy shards again (the bucket's `n`, at most the shards the layout
/// has: `n` and the `extra` spare slots), data shards first (they are
/// read without decoding).
pub fn assess(data: &[ObjectManifest], up: impl Fn(&NodeId) -> bool, target: u16) -> Vec<Damage> {
    let mut out = Vec::new();
    for (mi, m) in data.iter().enumerate() {
        let goal = target.clamp(m.layout.k, m.layout.n);
        let limit = threshold(m.layout.k, goal);
        let goal = usize::from(goal);
        for (si, seg) in m.segments.iter().enumerate() {
            let mut lost: Vec<usize> = seg
                .shards
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.holder.as_ref().is_some_and(&up))
                .map(|(i, _)| i)
                .collect();
            let healthy = seg.shards.len() - lost.len();
            if healthy < limit && !lost.is_empty() {
                lost.truncate(goal.saturating_sub(healthy));
                out.push(Damage { manifest: mi, segment: si, healthy, lost });
            }
        }
    }
    out
}

/// Rebuilds the shards `lost` of a segment from any `k` of `shards`
/// (`None`: not fetched). Every shard used is verified against `ids`
/// first, and every shard rebuilt is checked against its id before it is
/// returned. Blocking (Reed-Solomon over whole shards).
pub fn rebuild(
    layout: &SegmentLayout,
    segment: u64,
    shards: &[Option<Bytes>],
    ids: &[ShardId],
    lost: &[usize],
) -> Result<Vec<(usize, Bytes)>, Error> {
    let k = usize::from(layout.k);
    let m = usize::from(layout.n - layout.k);
    let s = layout.shard_len() as usize;
    let pos = crate::segment::SegmentPos { index: segment, last: false };
    let (chosen, _bad) = choose_verified(layout, pos, shards, ids)?;
    let get = |i: usize| shards.get(i).and_then(|x| x.as_deref()).unwrap_or(&[]);
    let restored = rebuild_columns(layout, &chosen, 0..s, get)?;
    let data: Vec<&[u8]> = (0..k)
        .map(|i| match restored.iter().find(|(j, _)| *j == i) {
            Some((_, v)) => v.as_slice(),
            None => get(i),
        })
        .collect();
    let mut parity: Vec<Vec<u8>> = Vec::new();
    if lost.iter().any(|&i| i >= k) && m > 0 {
        let mut rs = ReedSolomonEncoder::new(k, m, s)?;
        for d in &data {
            rs.add_original_shard(d)?;
        }
        parity = rs.encode()?.recovery_iter().map(<[u8]>::to_vec).collect();
    }
    let mut out = Vec::with_capacity(lost.len());
    for &i in lost {
        let bytes = if i < k { data[i].to_vec() } else { parity.get(i - k).cloned().unwrap_or_default() };
        let id = ids.get(i).copied().unwrap_or(ShardId([0; 32]));
        if !id.matches(&bytes) {
            return Err(Error::CorruptShard { segment, index: i as u16, id });
        }
        out.push((i, Bytes::from(bytes)));
    }
    Ok(out)
}

/// A bandwidth budget: repairs of `bytes` are spaced so that the average
/// stays at `rate` bytes per second.
#[derive(Debug, Clone)]
pub struct Budget {
    rate: u64,
    free_at: Option<Instant>,
}

impl Budget {
    /// A budget of `rate` bytes per second (0: none).
    pub fn new(rate: u64) -> Self {
        Self { rate, free_at: None }
    }

    /// Charges `bytes` moved at `now`; returns how long to wait before the
    /// next repair starts.
    pub fn charge(&mut self, bytes: u64, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let from = self.free_at.map_or(now, |t| t.max(now));
        let next = from + Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        self.free_at = Some(next);
        next.saturating_duration_since(now)
    }
}

/// How a repair walk runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct RepairOptions {
    /// Bytes per second that repairs may move (fetched + stored); 0: no limit.
    pub budget: u64,
}

/// What a repair walk found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Entries read.
    pub objects: u64,
    /// Distinct nodes holding shards, and how many of them were down.
    pub holders: u64,
    /// Of those, down.
    pub down: u64,
    /// Segments below the threshold.
    pub damaged: u64,
    /// Segments repaired and committed.
    pub repaired: u64,
    /// Shards rebuilt and placed.
    pub shards: u64,
    /// Segments that could not be repaired (too few shards left, or no
    /// node to place on); they are tried again by the next walk.
    pub failed: u64,
    /// Repairs dropped because the entry changed meanwhile.
    pub conflicts: u64,
    /// Bytes fetched and stored by repairs.
    pub bytes: u64,
    /// Index pages stored again (copies on nodes that are down).
    pub pages: u64,
    /// Head records published again.
    pub heads: u64,
    /// Audits sent (proofs asked of holders).
    pub audits: u64,
    /// Holders that failed an audit (wrong or missing bytes, or silent
    /// through the retries), counted as down.
    pub audit_failures: u64,
    /// Holders leaving the network (graceful exit), whose shards are moved.
    pub leaving: u64,
    /// Holders outside the bucket's regions, whose shards are moved.
    pub misplaced: u64,
}

impl RepairReport {
    /// Adds another walk's figures.
    pub fn add(&mut self, o: &RepairReport) {
        self.objects += o.objects;
        self.holders += o.holders;
        self.down += o.down;
        self.damaged += o.damaged;
        self.repaired += o.repaired;
        self.shards += o.shards;
        self.failed += o.failed;
        self.conflicts += o.conflicts;
        self.bytes += o.bytes;
        self.pages += o.pages;
        self.heads += o.heads;
        self.audits += o.audits;
        self.audit_failures += o.audit_failures;
        self.leaving += o.leaving;
        self.misplaced += o.misplaced;
    }
}

/// What a walk found of a holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// It answers, and passed its audits.
    Up,
    /// It answers but is leaving the network (`cairn-node exit`): its
    /// shards are read, moved elsewhere, and its copies deleted.
    Leaving,
    /// It answers but is outside the bucket's regions: its shards are
    /// moved as a leaving node's are.
    Misplaced,
    /// It does not answer, or failed an audit.
    Down,
}

impl Health {
    /// Its shards count towards a segment's health.
    pub fn healthy(self) -> bool {
        self == Self::Up
    }

    /// Its shards can be read (to rebuild or move others).
    pub fn readable(self) -> bool {
        self != Self::Down
    }
}

/// What a walk found of each holder (unknown ones are down).
pub(crate) type Holders = HashMap<NodeId, Health>;

fn health(holders: &Holders, n: &NodeId) -> Health {
    holders.get(n).copied().unwrap_or(Health::Down)
}

/// The shards of `data` beyond `cap` in one region, per segment (holders
/// whose health `is` counts, in regions `region_of` gives): they are
/// moved, so that losing a region loses no more than `n - k` shards.
/// Shards in regions unknown are not counted.
pub fn crowded(
    data: &[ObjectManifest],
    is: impl Fn(&NodeId) -> bool,
    region_of: impl Fn(&NodeId) -> Option<String>,
    cap: usize,
) -> Vec<Damage> {
    let mut out = Vec::new();
    for (mi, m) in data.iter().enumerate() {
        for (si, seg) in m.segments.iter().enumerate() {
            let mut per: HashMap<String, usize> = HashMap::new();
            let mut lost = Vec::new();
            let mut healthy = 0;
            for (i, s) in seg.shards.iter().enumerate() {
                let Some(h) = s.holder.as_ref().filter(|h| is(h)) else { continue };
                healthy += 1;
                if let Some(r) = region_of(h) {
                    let c = per.entry(r).or_default();
                    *c += 1;
                    if *c > cap {
                        lost.push(i);
                    }
                }
            }
            if !lost.is_empty() {
                out.push(Damage { manifest: mi, segment: si, healthy, lost });
            }
        }
    }
    out
}

/// `a` with the shards of `b` added: a segment in both is rebuilt once.
pub fn merge(mut a: Vec<Damage>, b: Vec<Damage>) -> Vec<Damage> {
    for d in b {
        match a.iter_mut().find(|x| x.manifest == d.manifest && x.segment == d.segment) {
            Some(x) => {
                x.healthy = x.healthy.min(d.healthy);
                for i in d.lost {
                    if !x.lost.contains(&i) {
                        x.lost.push(i);
                    }
                }
            }
            None => a.push(d),
        }
    }
    a
}

/// Asks each node once for its profile: whether it is up, whether it is
/// leaving, and its region. Nodes that are down or leaving are passed over
/// by placement for a while, and the network is asked for nodes (those
/// that joined since are where repairs go).
/// A node's profile (kept by the node view for placement), or, from a
/// node too old to send one, its status: when it leaves, if it does.
async fn profile_or_status(transfer: &Transfer, peer: PeerId) -> Result<Option<u64>, cairn_net::Error> {
    let client = transfer.client(peer);
    match client.profile().await {
        Ok(p) => {
            let leaving = p.leaving_until;
            transfer.nodes().set_profile(&peer, p);
            Ok(leaving)
        }
        Err(cairn_net::Error::Refused { error: cairn_proto::shard::ShardError::Malformed, .. }) => {
            client.status().await.map(|s| s.leaving_until)
        }
        Err(e) => Err(e),
    }
}

pub(crate) async fn probe(transfer: &Transfer, nodes: HashSet<NodeId>) -> Holders {
    if let Err(e) = transfer.nodes().discover(rand::random()).await {
        tracing::debug!(error = %e, "node lookup before repair failed");
    }
    futures::stream::iter(nodes)
        .map(|node| async move {
            let health = match peer_of(&node) {
                Some(p) => match profile_or_status(transfer, p).await {
                    Ok(leaving) if leaving.is_some() => {
                        transfer.nodes().pass_over(p, LEAVING_FOR);
                        Health::Leaving
                    }
                    Ok(_) => {
                        transfer.nodes().report(p, true);
                        Health::Up
                    }
                    Err(_) => {
                        // Repairs are about to place shards: not there.
                        transfer.nodes().pass_over(p, DOWN_FOR);
                        Health::Down
                    }
                },
                None => Health::Down,
            };
            (node, health)
        })
        .buffer_unordered(PROBES)
        .collect()
        .await
}

/// Audits the samples of each holder that is up; a holder that fails is
/// marked down in `up` and passed over by placement for a day. Returns
/// the audits sent and the holders failed.
pub(crate) async fn audit_holders(
    transfer: &Transfer,
    samples: HashMap<NodeId, Vec<Sample>>,
    up: &mut Holders,
) -> (u64, u64) {
    let audits: Vec<_> = samples
        .into_iter()
        .filter(|(node, _)| health(up, node).readable())
        .filter_map(|(node, samples)| Some((node.clone(), peer_of(&node)?, samples)))
        .map(|(node, peer, samples)| async move {
            let (standing, sent) = audit_node(transfer, peer, &samples).await;
            if standing == Standing::Failed {
                transfer.nodes().pass_over(peer, FAILED_FOR);
            }
            (node, standing, sent)
        })
        .collect();
    let results: Vec<(NodeId, Standing, u64)> = futures::stream::iter(audits).buffer_unordered(PROBES).collect().await;
    let mut failed = 0;
    let mut sent = 0;
    for (node, standing, n) in results {
        sent += n;
        if standing == Standing::Failed {
            failed += 1;
            up.insert(node, Health::Down);
        }
    }
    (sent, failed)
}

/// The nodes holding the pages of `snap`.
pub(crate) fn page_holders(snap: &Snapshot) -> impl Iterator<Item = NodeId> + '_ {
    snap.pages().flat_map(|p| p.holders.iter().cloned())
}

/// Stores again the pages of `tree` that have fewer than [`REPLICAS`]
/// copies on nodes that are up, in one commit that folds the journal into
/// new pages and stores those leaves again (see [`Tree::rewrite`]), which
/// stores a new root. Returns the pages stored again. A tree that changed
/// meanwhile is no obstacle: the commit rewrites the leaves the same keys
/// fall in on the newest head, whatever the leaves hold (tombstones only,
/// or entries the journal shadows).
pub(crate) async fn repair_pages(tree: &Tree, up: &impl Fn(&NodeId) -> bool) -> Result<u64, Error> {
    let snap = tree.snapshot(Duration::ZERO).await?;
    let short = |p: &PagePtr| p.holders.iter().filter(|h| up(h)).count() < REPLICAS;
    // A leaf is stored again by a fold that loads it (by its first key),
    // whatever it holds; a short root or run by the fold itself (a new
    // root, and the runs written into the leaves).
    let leaves: Vec<String> = snap.root.leaves.iter().filter(|l| short(&l.page)).map(|l| l.first.clone()).collect();
    let root = snap.root_ptr().is_some_and(short) || snap.runs().iter().any(short);
    if leaves.is_empty() && !root {
        return Ok(0);
    }
    let n = leaves.len() as u64 + 1;
    tree.rewrite(leaves).await?;
    Ok(n)
}

/// A report shared by a walk's batches.
fn lock(m: &std::sync::Mutex<RepairReport>) -> std::sync::MutexGuard<'_, RepairReport> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An entry with segments to repair.
struct Patient {
    key: String,
    value: Value,
    damage: Vec<Damage>,
}

impl Bucket {
    /// Finds the segments of this bucket whose healthy shards fell below
    /// [`threshold`] and rebuilds them on other nodes (see the module docs).
    pub async fn repair(&self, opts: RepairOptions) -> Result<RepairReport, Error> {
        let snap = self.snapshot().await?;
        let mut report = RepairReport::default();
        // Two passes over the entries, a batch at a time (the second from
        // the page cache), so memory stays bounded for any bucket: the
        // holders they name, then the damage, repaired batch by batch, the
        // least healthy of each batch first.
        let mut holders: HashSet<NodeId> = page_holders(&snap).collect();
        let mut sampler = Sampler::new(AUDITS_PER_HOLDER);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
        for page in snap.pages() {
            for h in &page.holders {
                sampler.offer(h, Sample { id: page.id, len: u64::from(page.len) }, &mut rng);
            }
        }
        self.each_entry_batch(&snap, |batch| {
            for (_, _, entry) in batch {
                let Body::Stored(s) = &entry.body else { continue };
                for seg in s.data.iter().flat_map(|m| &m.segments) {
                    for p in &seg.shards {
                        if let Some(h) = &p.holder {
                            holders.insert(h.clone());
                            sampler.offer(h, Sample { id: p.id, len: u64::from(seg.shard_len) }, &mut rng);
                        }
                    }
                }
            }
            std::future::ready(Ok(()))
        })
        .await?;
        let mut up = probe(self.transfer(), holders).await;
        (report.audits, report.audit_failures) = audit_holders(self.transfer(), sampler.into_samples(), &mut up).await;
        // Holders outside the bucket's regions give their shards up.
        let region_of = |n: &NodeId| peer_of(n).and_then(|p| self.transfer().nodes().candidate(&p).region);
        for (node, h) in up.iter_mut() {
            if *h == Health::Up && !self.placement().allows(region_of(node).as_deref()) {
                *h = Health::Misplaced;
            }
        }
        report.holders = up.len() as u64;
        report.down = up.values().filter(|h| **h == Health::Down).count() as u64;
        report.leaving = up.values().filter(|h| **h == Health::Leaving).count() as u64;
        report.misplaced = up.values().filter(|h| **h == Health::Misplaced).count() as u64;
        let is_up = |n: &NodeId| health(&up, n).healthy();
        let cap = self.placement().region_cap(self.settings().k, self.settings().n);
        let up = &up;
        // Shared by the batches' futures (a `Mutex`, so the walk stays `Send`).
        let budget = std::sync::Mutex::new(Budget::new(opts.budget));
        let report = std::sync::Mutex::new(report);
        self.each_entry_batch(&snap, |batch| {
            let mut patients: Vec<Patient> = Vec::new();
            for (key, value, entry) in batch {
                lock(&report).objects += 1;
                let Body::Stored(s) = &entry.body else { continue };
                let mut damage = assess(&s.data, is_up, self.settings().n);
                if let Some(cap) = cap {
                    damage = merge(damage, crowded(&s.data, is_up, region_of, cap));
                }
                if !damage.is_empty() {
                    patients.push(Patient { key, value, damage });
                }
            }
            // The segments nearest to loss first (Storj orders its queue the same way).
            patients.sort_by_key(|p| p.damage.iter().map(|d| d.healthy).min().unwrap_or(usize::MAX));
            let (report, budget) = (&report, &budget);
            async move {
                for p in patients {
                    let (moved, outcome) = self.repair_entry(&p, up).await;
                    {
                        let mut r = lock(report);
                        r.damaged += p.damage.len() as u64;
                        match outcome {
                            Ok(shards) => {
                                r.repaired += p.damage.len() as u64;
                                r.shards += shards;
                            }
                            Err(e) if matches!(e.root(), Error::Conflict { .. }) => r.conflicts += 1,
                            Err(e) => {
                                tracing::warn!(key = %p.key, error = %e, "repair failed");
                                r.failed += p.damage.len() as u64;
                            }
                        }
                        r.bytes += moved;
                    }
                    let wait = budget.lock().unwrap_or_else(|e| e.into_inner()).charge(moved, Instant::now());
                    tokio::time::sleep(wait).await;
                }
                Ok(())
            }
        })
        .await?;
        let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
        // Index pages with copies on nodes that are down are stored again
        // after the entries (whose commits store some of them anyway).
        report.pages = repair_pages(self.tree(), &is_up).await?;
        report.heads += u64::from(self.tree().republish().await?);
        Ok(report)
    }

    /// Calls `f` with each batch of the live entries of `snap` (queued
    /// garbage left out), decoded, in key order.
    async fn each_entry_batch<F, Fut>(&self, snap: &Snapshot, mut f: F) -> Result<(), Error>
    where
        F: FnMut(Vec<(String, Value, crate::entry::Entry)>) -> Fut,
        Fut: std::future::Future<Output = Result<(), Error>>,
    {
        let mut start = String::new();
        loop {
            let from = if start.is_empty() { Bound::Unbounded } else { Bound::Excluded(start.as_str()) };
            let batch = self.tree().list(snap, "", from, LIST_BATCH).await?;
            let short = batch.len() < LIST_BATCH;
            if let Some((last, _)) = batch.last() {
                start = last.clone();
            }
            let mut decoded = Vec::with_capacity(batch.len());
            for (key, value) in batch.into_iter().filter(|(k, _)| !k.starts_with(GARBAGE_PREFIX)) {
                let entry = formats::decode_entry(value.live().unwrap_or_default())?;
                decoded.push((key, value, entry));
            }
            f(decoded).await?;
            if short {
                return Ok(());
            }
        }
    }

    /// Repairs every damaged segment of one entry and commits it; returns
    /// the bytes moved and the shards placed. Shards placed for a repair
    /// that does not commit are deleted.
    async fn repair_entry(&self, p: &Patient, up: &Holders) -> (u64, Result<u64, Error>) {
        let mut placed: Vec<(ShardId, NodeId, [u8; 32])> = Vec::new();
        // Copies on leaving nodes that the repair replaces: deleted once
        // the entry names their new holders.
        let mut retired: Vec<(ShardId, NodeId, [u8; 32])> = Vec::new();
        let mut moved = 0u64;
        let result = async {
            let mut entry = formats::decode_entry(p.value.live().unwrap_or_default())?;
            let Body::Stored(stored) = &mut entry.body else { return Ok(0) };
            for d in &p.damage {
                let m = &mut stored.data[d.manifest];
                let seg = &mut m.segments[d.segment];
                let layout = m.layout.segment(seg.plain_len);
                let wanted: Vec<Wanted> = seg
                    .shards
                    .iter()
                    .map(|s| Wanted {
                        id: s.id,
                        len: u64::from(seg.shard_len),
                        holder: s.holder.clone().filter(|h| health(up, h).readable()),
                    })
                    .collect();
                let (got, bad) = self.transfer().get_shards(d.segment as u64, &wanted, usize::from(layout.k)).await?;
                moved += got.iter().flatten().map(|b| b.len() as u64).sum::<u64>();
                let mut lost = d.lost.clone();
                for b in bad.iter().map(|&b| usize::from(b)) {
                    if !lost.contains(&b) {
                        lost.push(b);
                    }
                }
                let ids: Vec<ShardId> = seg.shards.iter().map(|s| s.id).collect();
                let (index, lost_c) = (d.segment as u64, lost.clone());
                let rebuilt = tokio::task::spawn_blocking(move || rebuild(&layout, index, &got, &ids, &lost_c))
                    .await
                    .map_err(|_| Error::WorkerPanicked)??;
                // Each rebuilt shard matched its recorded id (see `rebuild`).
                let outgoing: Vec<Outgoing> = rebuilt
                    .iter()
                    .map(|(i, bytes)| Outgoing { id: seg.shards[*i].id, bytes: bytes.clone(), key: m.data_key })
                    .collect();
                let avoid: Vec<PeerId> = seg
                    .shards
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !lost.contains(i))
                    .filter_map(|(_, s)| peer_of(s.holder.as_ref()?))
                    .collect();
                let holders = self
                    .transfer()
                    .put_shards_placed(seg.id.placement_key(), &outgoing, outgoing.len(), self.rules(&avoid))
                    .await?;
                for (((i, bytes), holder), out) in rebuilt.iter().zip(holders).zip(&outgoing) {
                    let Some(holder) = holder else { continue };
                    moved += bytes.len() as u64;
                    placed.push((out.id, holder.clone(), delete_token(&m.data_key, &out.id, &holder)));
                    // A copy still readable (a leaving or misplaced holder,
                    // a region over its cap, bad bytes) is deleted once the
                    // entry names the new holder.
                    if let Some(old) = seg.shards[*i].holder.take().filter(|h| health(up, h).readable()) {
                        retired.push((out.id, old.clone(), delete_token(&m.data_key, &out.id, &old)));
                    }
                    seg.shards[*i].holder = Some(holder);
                }
            }
            let n = placed.len() as u64;
            self.commit(vec![Op::put(&p.key, formats::encode_entry(&entry)).expecting(still(&p.value))]).await?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            self.transfer().delete_shards(std::mem::take(&mut placed));
        } else {
            self.transfer().delete_shards(retired);
        }
        (moved, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::layout::Layout;
    use cairn_proto::manifest::{SegmentManifest, ShardPlacement};
    use cairn_proto::{ObjectVersionId, SegmentId};

    fn node(i: u8) -> NodeId {
        NodeId::from_bytes(vec![i; 4]).expect("id")
    }

    fn manifest(k: u16, n: u16, holders: &[&[Option<u8>]]) -> ObjectManifest {
        ObjectManifest {
            version: ObjectVersionId([1; 16]),
            size: 100,
            layout: Layout { k, n, ..Layout::default() },
            data_key: [0; 32],
            segments: holders
                .iter()
                .enumerate()
                .map(|(i, hs)| SegmentManifest {
                    id: SegmentId([i as u8; 32]),
                    plain_len: 100,
                    shard_len: 64,
                    shards: hs.iter().map(|h| ShardPlacement { id: ShardId([0; 32]), holder: h.map(node) }).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn shards_over_a_regions_cap_are_moved_and_merged_with_damage() {
        // Nodes 1-3 in eu, 4 in us, 5-6 in ap; 9 is down.
        let region = |n: &NodeId| match n.as_bytes()[0] {
            1..=3 => Some("eu".to_string()),
            4 => Some("us".to_string()),
            5 | 6 => Some("ap".to_string()),
            _ => None,
        };
        let up = |n: &NodeId| n.as_bytes()[0] != 9;
        let m = manifest(2, 4, &[&[Some(1), Some(2), Some(3), Some(4)], &[Some(1), Some(4), Some(5), Some(6)]]);
        // At most 2 per region: the third eu shard of segment 0 moves.
        let d = crowded(std::slice::from_ref(&m), up, region, 2);
        assert_eq!(d, vec![Damage { manifest: 0, segment: 0, healthy: 4, lost: vec![2] }]);
        assert!(crowded(std::slice::from_ref(&m), up, region, 3).is_empty());
        // A down holder does not count; merged with damage, a segment is listed once.
        let m = manifest(2, 4, &[&[Some(1), Some(2), Some(3), Some(9)]]);
        let d = merge(assess(std::slice::from_ref(&m), up, 4), crowded(std::slice::from_ref(&m), up, region, 2));
        assert_eq!(d, vec![Damage { manifest: 0, segment: 0, healthy: 3, lost: vec![3, 2] }]);
    }

    #[test]
    fn segments_below_k_plus_four_are_damaged_least_healthy_reported_with_what_to_rebuild() {
        let all = [Some(1), Some(2), Some(3), Some(4), Some(5), Some(6)];
        let one_gone = [Some(1), Some(9), Some(3), Some(4), Some(5), Some(6)];
        let never_stored = [Some(1), Some(2), None, Some(4), Some(5), Some(6)];
        let m = manifest(4, 6, &[&all, &one_gone, &never_stored]);
        let up = |n: &NodeId| n.as_bytes()[0] != 9;
        let d = assess(std::slice::from_ref(&m), up, 6);
        assert_eq!(
            d,
            vec![
                Damage { manifest: 0, segment: 1, healthy: 5, lost: vec![1] },
                Damage { manifest: 0, segment: 2, healthy: 5, lost: vec![2] },
            ]
        );
        // A wide code repairs lazily: 10-of-30 waits until 13 are left,
        // then rebuilds up to its target, data shards first.
        let wide: Vec<Option<u8>> = (0..30).map(|i| Some(if i < 16 { 9 } else { i })).collect();
        assert!(assess(&[manifest(10, 30, &[&wide])], up, 20).is_empty());
        let worse: Vec<Option<u8>> = (0..30).map(|i| Some(if i < 17 { 9 } else { i })).collect();
        let d = assess(&[manifest(10, 30, &[&worse])], up, 20);
        assert_eq!((d[0].healthy, d[0].lost.clone()), (13, (0..7).collect::<Vec<_>>()));
        // Slots for spare uploads that were never stored (n = 6 of 8):
        // one more loss rebuilds back to n, not to all 8.
        let spares = [Some(1), Some(2), None, Some(4), Some(9), Some(6), None, Some(8)];
        let d = assess(&[manifest(4, 8, &[&spares])], up, 6);
        assert_eq!((d[0].healthy, d[0].lost.clone()), (5, vec![2]));
        assert_eq!(threshold(4, 6), 6);
        assert_eq!(threshold(4, 8), 8);
        assert_eq!(threshold(8, 16), 12);
        assert_eq!(threshold(1, 1), 1);
    }

    #[test]
    fn lost_data_and_parity_shards_are_rebuilt_byte_exact_and_checked() {
        let layout = Layout { k: 4, n: 6, ..Layout::default() };
        let size = 300_000u32;
        let seg = layout.segment(size);
        let cipher = cairn_crypto::ObjectCipher::new(&cairn_crypto::DataKey::generate(), [3; 16]);
        let plain: Vec<u8> = (0..size as usize).map(|i| (i * 7) as u8).collect();
        let pos = crate::segment::SegmentPos { index: 0, last: true };
        let enc =
            crate::segment::encode(&cipher, seg, pos, crate::segment::place_plaintext(&seg, &plain)).expect("encode");
        // Data shard 1 and parity shard 5 are lost.
        let mut have: Vec<Option<Bytes>> = enc.shards.iter().cloned().map(Some).collect();
        have[1] = None;
        have[5] = None;
        let out = rebuild(&seg, 0, &have, &enc.ids, &[1, 5]).expect("rebuild");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], (1, enc.shards[1].clone()));
        assert_eq!(out[1], (5, enc.shards[5].clone()));
        // A corrupt shard among the survivors is skipped, not used.
        let mut bad = have.clone();
        bad[0] = Some(Bytes::from(vec![0u8; enc.shards[0].len()]));
        bad[4] = Some(enc.shards[4].clone());
        assert!(matches!(rebuild(&seg, 0, &bad, &enc.ids, &[1, 5]), Err(Error::NotEnoughShards { .. })));
        // A wrong id for a lost shard is caught before anything is placed.
        let mut ids = enc.ids.clone();
        ids[5] = ShardId([7; 32]);
        assert!(matches!(rebuild(&seg, 0, &have, &ids, &[5]), Err(Error::CorruptShard { index: 5, .. })));
    }

    #[test]
    fn the_budget_spaces_repairs_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(1_000_000);
        assert_eq!(b.charge(500_000, t0), Duration::from_millis(500));
        // Charged before the first is paid for: queued behind it.
        assert_eq!(b.charge(1_000_000, t0), Duration::from_millis(1500));
        // Long after: nothing owed from before.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.charge(250_000, later), Duration::from_millis(250));
        assert_eq!(Budget::new(0).charge(u64::MAX, t0), Duration::ZERO);
    }
}
