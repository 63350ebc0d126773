//! Moving shards between the client and storage nodes.
//!
//! Uploads start `want` shards at once, each on its own node, and keep the
//! first `want` that are stored; the shards beyond `want` (the bucket's
//! `extra`) are hedges against a slow tail. A failed upload moves to the
//! next candidate node. Downloads ask for the data shards first, verify each
//! shard against its id as it arrives, and ask other holders when one fails
//! or lies.
//!
//! When the spare requests start is a [`Hedging`] choice: `Eager` starts
//! them with the others (the first `want` win; the rest are cancelled),
//! `Adaptive` (the default) starts them only when the first requests show
//! the others are late: at twice the time the first one took, at least
//! [`HEDGE_MIN`](crate::schedule::HEDGE_MIN), or [`HEDGE`](crate::schedule::HEDGE) if none has finished. Eager costs `extra/n`
//! more upload traffic and one more shard per segment read on every
//! transfer, healthy or not (docs/BENCHMARKS.md).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use cairn_net::{NetHandle, PeerId, ShardClient, Timeouts};
use cairn_proto::shard::{owner_of, renew_token_of};
use cairn_proto::{NodeId, ShardId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::placement::Nodes;
use crate::policy::{self, Candidate, Placement};
use crate::schedule::{Fetch, GetSchedule, Got, Holder, Outcome, PutSchedule, Step, busy_asked, read_order};

/// Spare candidate nodes asked for beyond one per shard, for retries.
const SPARE_NODES: usize = 4;
/// The fewest nearest nodes free space chooses among.
const POOL_MIN: usize = 20;
/// How long an upload waits for the profiles it lacks (free space): they
/// weigh the choice, but a put does not wait long for them.
const PROFILE_WAIT: Duration = Duration::from_millis(500);
/// How long an upload under region rules waits for profiles (it cannot
/// place without them).
const PROFILE_WAIT_REGIONS: Duration = Duration::from_secs(5);

/// The placement rules of one upload.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// The bucket's rules.
    pub placement: &'a Placement,
    /// Shards that read the segment.
    pub k: u16,
    /// Shards kept.
    pub n: u16,
    /// Holders that keep other shards of the segment (a repair).
    pub existing: &'a [PeerId],
}

/// When spare uploads and downloads start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hedging {
    /// With the others.
    Eager,
    /// When the others are late (see the module docs).
    #[default]
    Adaptive,
}

/// How long [`Transfer::finish`] lets requests not yet started open their
/// streams before it gives them up (they are dialling a node that is down).
const OPEN_GRACE: Duration = Duration::from_millis(300);
/// How long [`Transfer::finish`] waits for tail uploads to be cleaned up.
const TAIL_WAIT: Duration = Duration::from_secs(30);

/// Shard transfers over the network.
#[derive(Debug)]
pub struct Transfer {
    net: NetHandle,
    nodes: Arc<Nodes>,
    timeouts: Timeouts,
    lease_secs: u64,
    hedging: Hedging,
    tails: TaskTracker,
    /// Cancelled by [`Self::finish`]: requests not yet started then give up.
    abandon: std::sync::Mutex<CancellationToken>,
    /// Shard bytes received from nodes (whole shards and ranges).
    fetched: Arc<std::sync::atomic::AtomicU64>,
}

/// A shard to upload.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Its id (BLAKE3 of `bytes`).
    pub id: ShardId,
    /// Its bytes.
    pub bytes: Bytes,
    /// The key its tokens derive from ([`delete_token`]): an object's data
    /// key, a tree's page key.
    pub key: [u8; 32],
}

/// The token that deletes shard `id` from `holder`: derived from the
/// owner's `key` and bound to the holder, so that a node cannot replay
/// the token it was given at another holder.
pub fn delete_token(key: &[u8; 32], id: &ShardId, holder: &NodeId) -> [u8; 32] {
    cairn_crypto::delete_token(key, &id.0, holder.as_bytes())
}

/// The token that renews shard `id` at `holder` (and cannot delete it).
pub fn renew_token(key: &[u8; 32], id: &ShardId, holder: &NodeId) -> [u8; 32] {
    renew_token_of(&delete_token(key, id, holder))
}

/// A shard to fetch: its id, expected length and believed holder.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// Its id.
    pub id: ShardId,
    /// Its length.
    pub len: u64,
    /// Where it was stored.
    pub holder: Option<NodeId>,
}

/// The peer id in a stored [`NodeId`].
pub fn peer_of(node: &NodeId) -> Option<PeerId> {
    PeerId::from_bytes(node.as_bytes()).ok()
}

/// The [`NodeId`] stored for a peer.
pub fn node_of(peer: &PeerId) -> NodeId {
    // A PeerId is at most 42 bytes; NodeId allows 64.
    NodeId::from_bytes(peer.to_bytes()).unwrap_or_else(|_| NodeId::from_bytes(Vec::new()).expect("empty id"))
}

impl Transfer {
    /// Transfers over `net`, placing on `nodes`; shards are leased for `lease_secs`.
    pub fn new(net: NetHandle, nodes: Arc<Nodes>, lease_secs: u64, hedging: Hedging) -> Self {
        let timeouts = Timeouts { open: Duration::from_secs(5), request: Duration::from_secs(60) };
        Self {
            net,
            nodes,
            timeouts,
            lease_secs,
            hedging,
            tails: TaskTracker::new(),
            abandon: Default::default(),
            fetched: Default::default(),
        }
    }

    /// Waits (a bounded time) for uploads left running after their put
    /// returned, so that their shards are deleted before the process ends.
    /// Uploads and deletes that have not reached their node yet (a dial to
    /// a node that is down) are given up rather than waited for.
    pub async fn finish(&self) {
        let abandon = std::mem::take(&mut *self.abandon.lock().unwrap_or_else(|e| e.into_inner()));
        self.tails.close();
        // Requests to reachable nodes open their streams within the grace.
        if tokio::time::timeout(OPEN_GRACE, self.tails.wait()).await.is_err() {
            abandon.cancel();
        }
        if tokio::time::timeout(TAIL_WAIT, self.tails.wait()).await.is_err() {
            tracing::warn!("tail uploads still running at shutdown; their shards expire with their lease");
        }
        self.tails.reopen();
    }

    /// How long uploads ask nodes to keep their shards, in seconds.
    pub fn lease_secs(&self) -> u64 {
        self.lease_secs
    }

    /// Counts shard bytes received.
    pub fn count_fetched(&self, bytes: usize) {
        self.fetched.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Shard bytes received from nodes so far.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The node view.
    pub fn nodes(&self) -> &Arc<Nodes> {
        &self.nodes
    }

    /// The network handle.
    pub fn net(&self) -> &NetHandle {
        &self.net
    }

    /// A shard client for `peer`.
    pub fn client(&self, peer: PeerId) -> ShardClient {
        self.nodes.asking(&peer);
        ShardClient::new(self.net.clone(), peer, self.timeouts)
    }

    /// The token whose cancellation gives up requests not yet started.
    fn abandon_token(&self) -> CancellationToken {
        self.abandon.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uploads `shards`, each to a different node near `key`, and returns
    /// once `want` are stored: the holder of each shard, `None` for those
    /// not stored (failed everywhere, never started, or still running).
    ///
    /// Uploads that are late (see [`Hedging`]) get company: a shard not
    /// started yet, or, when none is left, the late shard again on another
    /// node; whichever copy is stored first is the one recorded. Uploads
    /// still running at the end are no longer waited for: a background task
    /// deletes each one that completes, as it deletes surplus copies, so
    /// that only recorded shards take space. (Dropping them instead would
    /// race: a node may commit a body it has fully received after the
    /// client gave up, and after its delete.)
    pub async fn put_shards(
        &self,
        key: [u8; 32],
        shards: &[Outgoing],
        want: usize,
    ) -> Result<Vec<Option<NodeId>>, Error> {
        let n = u16::try_from(want).unwrap_or(u16::MAX);
        self.put_shards_placed(key, shards, want, Rules { placement: &Placement::default(), k: 1, n, existing: &[] })
            .await
    }

    /// [`Self::put_shards`] under a bucket's placement rules, on nodes
    /// other than `rules.existing` (the holders that keep the other shards
    /// of a segment being repaired, which count against the rules' caps).
    pub async fn put_shards_placed(
        &self,
        key: [u8; 32],
        shards: &[Outgoing],
        want: usize,
        rules: Rules<'_>,
    ) -> Result<Vec<Option<NodeId>>, Error> {
        let avoid = rules.existing;
        let shard_len = shards.first().map_or(0, |s| s.bytes.len() as u64);
        // All known nodes when regions decide; else the nearest few times
        // what is needed, among which free space decides.
        let pool = if rules.placement.needs_regions() {
            usize::MAX
        } else {
            (3 * (shards.len() + SPARE_NODES) + avoid.len()).max(POOL_MIN)
        };
        // Half near the key, half near its second key: one neighbourhood
        // cannot even out how densely node ids fall (`policy::second_key`).
        let mut pool = self.nodes.candidates(key, pool.div_ceil(2), want + avoid.len()).await?;
        if pool.len() < self.nodes.len() {
            let second = self.nodes.candidates(policy::second_key(&key), pool.len(), 0).await?;
            for c in second {
                if !pool.iter().any(|p| p.peer == c.peer) {
                    pool.push(c);
                }
            }
        }
        // Nodes that failed lately are not asked (they would hold the put up).
        let peers: Vec<PeerId> =
            pool.iter().filter(|c| !c.penalized).map(|c| c.peer).chain(avoid.iter().copied()).collect();
        let wait = if rules.placement.needs_regions() { PROFILE_WAIT_REGIONS } else { PROFILE_WAIT };
        self.nodes.fetch_profiles(&peers, wait).await;
        for c in &mut pool {
            *c = self.nodes.candidate(&c.peer);
        }
        let existing: Vec<Candidate> = avoid.iter().map(|p| self.nodes.candidate(p)).collect();
        let plan = policy::plan(rules.placement, rules.k, rules.n, &pool, &existing, &key, shard_len)?;
        let mut candidates: VecDeque<PeerId> = plan.order.into_iter().collect();
        // Once these run out (many known nodes are down), more are asked
        // for once, beyond the first.
        let first_asked: Vec<PeerId> = candidates.iter().copied().collect();
        let mut refilled = rules.placement.needs_regions();
        // Healthy nodes this client is connected to go first (a stable
        // sort, so the placement order holds among them): a node still
        // being dialled while others answer is often down, and its upload
        // would only be hedged after HEDGE_MIN.
        if let Ok(connected) = self.net.connected_peers().await
            && !connected.is_empty()
        {
            candidates.make_contiguous().sort_by_key(|p| (self.nodes.penalized(p), !connected.contains(p)));
        }
        let mut running = FuturesUnordered::new();
        let lease = self.lease_secs;
        // Cancelled once `want` are stored: uploads still dialling give up.
        let enough = self.abandon_token().child_token();
        let start = |i: usize, peer: PeerId| {
            let client = self.client(peer).abandon_unopened_on(enough.clone());
            let s = shards[i].clone();
            let owner = owner_of(&renew_token(&s.key, &s.id, &node_of(&peer)));
            async move { (i, peer, client.put(s.id, &s.bytes, owner, lease).await) }
        };
        // The schedule decides what starts when (`crate::schedule`); this
        // loop uploads, waits and tells it what happened.
        let (mut plan, mut steps) =
            PutSchedule::limited(shards.len(), want, self.hedging, candidates, plan.limits, Instant::now());
        let mut last_error = None;
        loop {
            for step in steps.drain(..) {
                match step {
                    Step::Start(i, peer) => running.push(start(i, peer)),
                    Step::Surplus(i, peer) => {
                        // A second copy of a stored shard: not recorded, so not kept.
                        let (id, node) = (shards[i].id, node_of(&peer));
                        self.delete_shards(vec![(id, node.clone(), delete_token(&shards[i].key, &id, &node))]);
                    }
                }
            }
            if plan.done() {
                break;
            }
            if plan.needs_candidates() && !refilled {
                // The candidates ran out (many known nodes are down): more
                // are asked for once, beyond the first.
                refilled = true;
                let more = self.nodes.candidates(key, 2 * (first_asked.len() + avoid.len()), want).await?;
                plan.add_candidates(
                    more.into_iter().map(|c| c.peer).filter(|p| !first_asked.contains(p) && !avoid.contains(p)),
                );
            }
            let due = plan.hedge_due();
            steps = tokio::select! {
                next = running.next() => match next {
                    // Everything started has ended; unstarted spares are the last resort.
                    None => match plan.on_idle() {
                        Some(step) => vec![step],
                        // Only busy nodes are left: wait until they may be asked again.
                        None => match plan.hedge_due() {
                            Some(at) => {
                                tokio::time::sleep_until(at).await;
                                plan.on_hedge(Instant::now())
                            }
                            None => break,
                        },
                    },
                    Some((i, peer, result)) => {
                        let outcome = match result {
                            Ok(()) => {
                                self.nodes.report(peer, true);
                                self.nodes.placed(&peer, shards[i].bytes.len() as u64);
                                Outcome::Stored
                            }
                            Err(e) if let Some(wait) = busy_asked(&e) => {
                                // Busy, not down: it is asked again after the wait.
                                last_error = Some(e.to_string());
                                Outcome::Busy(wait)
                            }
                            Err(e @ cairn_net::Error::Abandoned { .. }) => {
                                // The put was told to finish (shutdown): not the node's fault.
                                last_error = Some(e.to_string());
                                Outcome::Abandoned
                            }
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "shard upload failed");
                                self.nodes.report(peer, false);
                                last_error = Some(e.to_string());
                                Outcome::Failed
                            }
                        };
                        plan.on_done(i, peer, outcome, Instant::now())
                    }
                },
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    plan.on_hedge(Instant::now())
                }
            };
        }
        let holders: Vec<Option<NodeId>> = plan.holders().iter().map(|h| h.as_ref().map(node_of)).collect();
        if plan.done() {
            enough.cancel();
            if !running.is_empty() {
                let (net, timeouts) = (self.net.clone(), self.timeouts);
                let abandon = self.abandon_token();
                let meta: Vec<(ShardId, [u8; 32])> = shards.iter().map(|s| (s.id, s.key)).collect();
                self.tails.spawn(async move {
                    while let Some((j, p, r)) = running.next().await {
                        if r.is_ok() {
                            let (id, key) = meta[j];
                            let token = delete_token(&key, &id, &node_of(&p));
                            let client = ShardClient::new(net.clone(), p, timeouts);
                            let _ = client.abandon_unopened_on(abandon.clone()).delete(id, token).await;
                        }
                    }
                });
            }
            return Ok(holders);
        }
        // A put that fails leaves nothing behind: the shards it did store
        // are deleted (and would otherwise take space until their lease ends).
        let stored_shards: Vec<_> = shards
            .iter()
            .zip(&holders)
            .filter_map(|(s, h)| {
                let node = h.clone()?;
                Some((s.id, node.clone(), delete_token(&s.key, &s.id, &node)))
            })
            .collect();
        self.delete_shards(stored_shards);
        let reason = last_error.unwrap_or_else(|| "too few nodes".into());
        Err(Error::Placement { needed: want, stored: plan.stored(), reason })
    }

    /// Fetches `k` verified shards of a segment, data shards (the first `k`)
    /// first, a spare when they are late (see [`Hedging`]), others when one
    /// fails. Returns all `n` slots
    /// (`None` = not fetched) and the indexes of shards that did not match
    /// their id.
    pub async fn get_shards(
        &self,
        segment: u64,
        shards: &[Wanted],
        k: usize,
    ) -> Result<(Vec<Option<Bytes>>, Vec<u16>), Error> {
        let mut out: Vec<Option<Bytes>> = vec![None; shards.len()];
        let mut bad = Vec::new();
        // Data shards first (no decoding needed), slow holders and those
        // that failed lately last (`schedule::read_order`).
        let holders: Vec<Holder> = shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let peer = peer_of(s.holder.as_ref()?)?;
                Some(Holder { shard: i, peer, penalized: self.nodes.penalized(&peer), time: self.nodes.time(&peer) })
            })
            .collect();
        let order = read_order(&holders);
        let began = Instant::now();
        let mut running = FuturesUnordered::new();
        let start = |i: usize, peer: PeerId| {
            let client = self.client(peer);
            let (id, len) = (shards[i].id, shards[i].len);
            let fetched = Arc::clone(&self.fetched);
            let nodes = Arc::clone(&self.nodes);
            async move {
                let began = Instant::now();
                let got = client.get(id, len).await;
                if let Ok(b) = &got {
                    fetched.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    nodes.timed(&peer, began.elapsed(), len);
                }
                (i, peer, got)
            }
        };
        // The schedule decides what is asked when (`crate::schedule`); this
        // loop fetches, verifies, waits and tells it what happened.
        let (mut plan, mut steps) = GetSchedule::new(k, order, self.hedging, Instant::now());
        let mut last_error = String::from("no holders recorded");
        loop {
            for Fetch::Start(i, peer) in steps.drain(..) {
                running.push(start(i, peer));
            }
            if plan.done() {
                let len = shards.first().map_or(0, |s| s.len);
                self.judge_stragglers(running, plan.into_pending(), (began, len));
                return Ok((out, bad));
            }
            if running.is_empty() && !plan.resting() {
                break;
            }
            let due = plan.hedge_due();
            steps = tokio::select! {
                Some((i, peer, result)) = running.next(), if !running.is_empty() => {
                    let got = match result {
                        Ok(bytes) if bytes.len() as u64 == shards[i].len && shards[i].id.matches(&bytes) => {
                            self.nodes.report(peer, true);
                            out[i] = Some(Bytes::from(bytes));
                            Got::Good
                        }
                        Ok(_) => {
                            tracing::warn!(%peer, segment, shard = i, "node served a shard that does not match its id");
                            self.nodes.report(peer, false);
                            bad.push(i as u16);
                            last_error = format!("shard {i} from {peer} was corrupt");
                            Got::Corrupt
                        }
                        Err(e) if let Some(wait) = busy_asked(&e) => {
                            // Busy, not down: asked again after its rest if needed.
                            last_error = e.to_string();
                            Got::Busy(wait)
                        }
                        Err(e) => {
                            self.nodes.report(peer, false);
                            last_error = e.to_string();
                            Got::Failed
                        }
                    };
                    plan.on_done(peer, got, Instant::now())
                },
                () = tokio::time::sleep_until(due) => plan.on_hedge(Instant::now()),
            };
        }
        Err(Error::SegmentUnavailable { segment, usable: plan.good(), needed: k, reason: last_error })
    }

    /// Requests a download no longer needs (`pending` names their nodes):
    /// they get [`OPEN_GRACE`] more on the tail tracker, and the nodes still
    /// owing an answer then are passed over for a while (and so remembered
    /// as down across runs): a node that cannot answer in that time is down
    /// or overloaded. Their results are not used.
    fn judge_stragglers<F, T>(
        &self,
        mut running: FuturesUnordered<F>,
        mut pending: Vec<PeerId>,
        (began, len): (Instant, u64),
    ) where
        F: std::future::Future<Output = (usize, PeerId, Result<T, cairn_net::Error>)> + Send + 'static,
        T: Send + 'static,
    {
        if running.is_empty() {
            return;
        }
        let nodes = Arc::clone(&self.nodes);
        self.tails.spawn(async move {
            let deadline = Instant::now() + OPEN_GRACE;
            while let Ok(Some((_, peer, r))) = tokio::time::timeout_at(deadline, running.next()).await {
                nodes.report(peer, r.is_ok());
                if let Some(at) = pending.iter().position(|p| *p == peer) {
                    pending.swap_remove(at);
                }
            }
            drop(running);
            for peer in pending {
                // Still running this long: at least this slow.
                nodes.timed(&peer, began.elapsed(), len);
                nodes.report(peer, false);
            }
        });
    }

    /// Deletes shards in the background (best effort): the caller does not
    /// wait for holders that are slow or hung; [`Self::finish`] does.
    pub fn delete_shards(&self, shards: Vec<(ShardId, NodeId, [u8; 32])>) {
        if shards.is_empty() {
            return;
        }
        let (net, timeouts, abandon) = (self.net.clone(), self.timeouts, self.abandon_token());
        self.tails.spawn(async move {
            let mut running: FuturesUnordered<_> = shards
                .into_iter()
                .filter_map(|(id, node, token)| {
                    let client =
                        ShardClient::new(net.clone(), peer_of(&node)?, timeouts).abandon_unopened_on(abandon.clone());
                    Some(async move { client.delete(id, token).await })
                })
                .collect();
            while let Some(r) = running.next().await {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "shard delete failed");
                }
            }
        });
    }
}
