//! Moving shards between the client and storage nodes.
//!
//! Uploads start every shard at once, each on its own node, keep the first
//! `want` that are stored and cancel the rest (the slow tail); a failed
//! upload moves to the next candidate node. Downloads ask for the data
//! shards first plus one spare, verify each shard against its id as it
//! arrives, and ask other holders when one fails or lies.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_net::{NetHandle, PeerId, ShardClient, Timeouts};
use cairn_proto::{NodeId, ShardId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::placement::Nodes;

/// Spare candidate nodes asked for beyond one per shard, for retries.
const SPARE_NODES: usize = 4;
/// How long a shard fetch may go unanswered before another holder is asked too.
const HEDGE: Duration = Duration::from_secs(2);
/// How long [`Transfer::finish`] waits for tail uploads to be cleaned up.
const TAIL_WAIT: Duration = Duration::from_secs(30);

/// Shard transfers over the network.
#[derive(Debug)]
pub struct Transfer {
    net: NetHandle,
    nodes: Arc<Nodes>,
    timeouts: Timeouts,
    lease_secs: u64,
    tails: TaskTracker,
}

/// A shard to upload.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Its id (BLAKE3 of `bytes`).
    pub id: ShardId,
    /// Its bytes.
    pub bytes: Bytes,
    /// The token that may delete it (nodes get only its BLAKE3 hash).
    pub token: [u8; 32],
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
    pub fn new(net: NetHandle, nodes: Arc<Nodes>, lease_secs: u64) -> Self {
        let timeouts = Timeouts { open: Duration::from_secs(5), request: Duration::from_secs(60) };
        Self { net, nodes, timeouts, lease_secs, tails: TaskTracker::new() }
    }

    /// Waits (a bounded time) for uploads left running after their put
    /// returned, so that their shards are deleted before the process ends.
    pub async fn finish(&self) {
        self.tails.close();
        if tokio::time::timeout(TAIL_WAIT, self.tails.wait()).await.is_err() {
            tracing::warn!("tail uploads still running at shutdown; their shards expire with their lease");
        }
        self.tails.reopen();
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
        ShardClient::new(self.net.clone(), peer, self.timeouts)
    }

    /// Uploads `shards`, each to a different node near `key`, and returns
    /// once `want` are stored: the holder of each shard, `None` for those
    /// not stored (failed everywhere, or still running). Uploads still
    /// running then are no longer waited for: a background task deletes
    /// each one that completes, so that only recorded shards take space.
    /// (Dropping them instead would race: a node may commit a body it has
    /// fully received after the client gave up, and after its delete.)
    pub async fn put_shards(
        &self,
        key: [u8; 32],
        shards: &[Outgoing],
        want: usize,
    ) -> Result<Vec<Option<NodeId>>, Error> {
        let mut candidates = self.nodes.candidates(key, shards.len() + SPARE_NODES).await?.into_iter();
        let mut holders: Vec<Option<NodeId>> = vec![None; shards.len()];
        let mut running = FuturesUnordered::new();
        let lease = self.lease_secs;
        let start = |i: usize, peer: PeerId| {
            let client = self.client(peer);
            let s = shards[i].clone();
            let hash = *blake3::hash(&s.token).as_bytes();
            async move { (i, peer, client.put(s.id, &s.bytes, hash, lease).await) }
        };
        for i in 0..shards.len() {
            match candidates.next() {
                Some(peer) => running.push(start(i, peer)),
                None => break,
            }
        }
        let mut stored = 0;
        let mut last_error = None;
        while let Some((i, peer, result)) = running.next().await {
            match result {
                Ok(()) => {
                    self.nodes.report(peer, true);
                    holders[i] = Some(node_of(&peer));
                    stored += 1;
                    if stored >= want {
                        if !running.is_empty() {
                            let (net, timeouts) = (self.net.clone(), self.timeouts);
                            let meta: Vec<(ShardId, [u8; 32])> = shards.iter().map(|s| (s.id, s.token)).collect();
                            self.tails.spawn(async move {
                                while let Some((j, p, r)) = running.next().await {
                                    if r.is_ok() {
                                        let (id, token) = meta[j];
                                        let _ = ShardClient::new(net.clone(), p, timeouts).delete(id, token).await;
                                    }
                                }
                            });
                        }
                        return Ok(holders);
                    }
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "shard upload failed");
                    self.nodes.report(peer, false);
                    last_error = Some(e.to_string());
                    if let Some(next) = candidates.next() {
                        running.push(start(i, next));
                    }
                }
            }
        }
        Err(Error::Placement { needed: want, stored, reason: last_error.unwrap_or_else(|| "too few nodes".into()) })
    }

    /// Fetches `k` verified shards of a segment, data shards (the first `k`)
    /// first plus one spare, others when one fails. Returns all `n` slots
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
        // Data shards first (no decoding needed), holders that failed lately last.
        let mut ranked: Vec<(bool, usize, PeerId)> = shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let peer = peer_of(s.holder.as_ref()?)?;
                Some((self.nodes.penalized(&peer), i, peer))
            })
            .collect();
        ranked.sort_by_key(|&(penalized, i, _)| (penalized, i));
        let mut order = ranked.into_iter().map(|(_, i, p)| (i, p));
        let mut running = FuturesUnordered::new();
        let start = |i: usize, peer: PeerId| {
            let client = self.client(peer);
            let w = &shards[i];
            async move { (i, peer, client.get(w.id, w.len).await) }
        };
        for (i, peer) in order.by_ref().take(k + 1) {
            running.push(start(i, peer));
        }
        let mut good = 0;
        let mut last_error = String::from("no holders recorded");
        loop {
            // A holder that does not answer in HEDGE gets company: one more
            // request goes out, so a dead node costs seconds, not a timeout.
            let next = match tokio::time::timeout(HEDGE, running.next()).await {
                Ok(Some(done)) => done,
                Ok(None) => break,
                Err(_) => {
                    if let Some((j, p)) = order.next() {
                        running.push(start(j, p));
                    }
                    continue;
                }
            };
            let (i, peer, result) = next;
            match result {
                Ok(bytes) if bytes.len() as u64 == shards[i].len && shards[i].id.matches(&bytes) => {
                    self.nodes.report(peer, true);
                    out[i] = Some(Bytes::from(bytes));
                    good += 1;
                    if good == k {
                        return Ok((out, bad));
                    }
                    continue;
                }
                Ok(_) => {
                    tracing::warn!(%peer, segment, shard = i, "node served a shard that does not match its id");
                    self.nodes.report(peer, false);
                    bad.push(i as u16);
                    last_error = format!("shard {i} from {peer} was corrupt");
                }
                Err(e) => {
                    self.nodes.report(peer, false);
                    last_error = e.to_string();
                }
            }
            if let Some((j, next)) = order.next() {
                running.push(start(j, next));
            }
        }
        Err(Error::SegmentUnavailable { segment, usable: good, needed: k, reason: last_error })
    }

    /// Deletes shards (best effort; returns how many were deleted).
    pub async fn delete_shards(&self, shards: Vec<(ShardId, NodeId, [u8; 32])>) -> usize {
        let mut running: FuturesUnordered<_> = shards
            .into_iter()
            .filter_map(|(id, node, token)| {
                let client = self.client(peer_of(&node)?);
                Some(async move { client.delete(id, token).await })
            })
            .collect();
        let mut n = 0;
        while let Some(r) = running.next().await {
            match r {
                Ok(()) => n += 1,
                Err(e) => tracing::debug!(error = %e, "shard delete failed"),
            }
        }
        n
    }
}
