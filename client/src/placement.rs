//! Which storage nodes get which shards.
//!
//! Candidates come from the DHT (the peers closest to a placement key) and
//! from a local list of nodes seen lately. Nodes that failed a request are
//! set aside for a while and tried only when nothing else is left. Among
//! healthy nodes, a segment's candidates are ranked by XOR distance between
//! BLAKE3(peer id) and the placement key, so different segments spread
//! over different nodes; a bucket's rules and the nodes' free space then
//! order them ([`crate::policy`]). Each node's signed profile (region,
//! capacity, usage) is asked for when it is missing or older than
//! [`PROFILE_TTL`], and the bytes placed since are counted against its
//! free space.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_net::{Multiaddr, NetHandle, PeerId, ShardClient, Timeouts};
use cairn_proto::profile::NodeProfile;
use futures::StreamExt;

use crate::error::Error;
use crate::policy::{Candidate, net_group};
use crate::tasks::Tasks;

/// How long a node that failed is passed over.
const PENALTY: Duration = Duration::from_secs(30);
/// The longest a remembered failure passes a node over (a wrong clock
/// cannot pass it over for longer).
const MAX_REMEMBERED_PENALTY: Duration = Duration::from_secs(300);
/// How often the list of known nodes is refreshed from the DHT: a node
/// that joins gets new shards from a running client this soon.
const REFRESH: Duration = Duration::from_secs(10);
/// How long a node's profile is used before it is asked for again.
pub const PROFILE_TTL: Duration = Duration::from_secs(60);
/// The longest a profile request runs (the callers' waits are shorter).
const PROFILE_REQUEST_MAX: Duration = Duration::from_secs(10);
/// Profile requests in flight at once.
const PROFILE_FETCHES: usize = 32;
/// Weight of a new observation in a node's time estimate.
const TIME_WEIGHT: f64 = 0.3;

#[derive(Clone, Debug)]
struct NodeInfo {
    addrs: Vec<Multiaddr>,
    hash: [u8; 32],
    down_until: Option<Instant>,
    ok: u64,
    failed: u64,
    /// A request was sent to it in this run.
    asked: bool,
    /// Its signed profile, when it sent one.
    profile: Option<NodeProfile>,
    /// When its profile was last asked for.
    profiled: Option<Instant>,
    /// A request for its profile is in flight.
    fetching: bool,
    /// Bytes placed on it since its profile came.
    placed: u64,
    /// How long its shard downloads take, per [`crate::schedule::read_cost`],
    /// as a moving average (`None`: never timed).
    time: Option<f64>,
}

/// What the client knows about one storage node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    /// The node.
    pub peer: PeerId,
    /// Its addresses.
    pub addrs: Vec<Multiaddr>,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Passed over for now after a failure.
    pub penalized: bool,
    /// Until when it is passed over.
    pub down_until: Option<std::time::SystemTime>,
    /// A request was sent to it in this run.
    pub asked: bool,
    /// Its profile, when it sent one.
    pub profile: Option<NodeProfile>,
    /// How long its downloads take (see [`Nodes::time`]).
    pub time: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    known: HashMap<PeerId, NodeInfo>,
    refreshed: Option<Instant>,
}

/// The client's view of the storage nodes.
#[derive(Debug)]
pub struct Nodes {
    net: NetHandle,
    /// Where background lookups run (stopped at the client's shutdown).
    tasks: Tasks,
    state: Mutex<State>,
    /// Woken when profile requests end.
    profiled: tokio::sync::Notify,
}

fn distance(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn candidate(st: &State, peer: &PeerId, now: Instant) -> Option<Candidate> {
    let n = st.known.get(peer)?;
    Some(Candidate {
        peer: *peer,
        region: n.profile.as_ref().map(|p| p.region.clone()).filter(|r| !r.is_empty()),
        net: net_group(&n.addrs),
        space: n.profile.as_ref().map(|p| (p.free().saturating_sub(n.placed), p.capacity)),
        penalized: n.down_until.is_some_and(|t| t > now),
    })
}

impl Nodes {
    /// An empty view over `net`.
    pub fn new(net: NetHandle, tasks: Tasks) -> Self {
        Self { net, tasks, state: Mutex::new(State::default()), profiled: tokio::sync::Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds nodes (from the DHT or the cache).
    pub fn add(&self, peers: impl IntoIterator<Item = (PeerId, Vec<Multiaddr>)>) {
        let mut st = self.lock();
        for (peer, addrs) in peers {
            if peer == self.net.local_peer_id() {
                continue;
            }
            let e = st.known.entry(peer).or_insert_with(|| NodeInfo {
                addrs: Vec::new(),
                hash: *blake3::hash(&peer.to_bytes()).as_bytes(),
                down_until: None,
                ok: 0,
                failed: 0,
                asked: false,
                profile: None,
                profiled: None,
                fetching: false,
                placed: 0,
                time: None,
            });
            for a in addrs {
                if !e.addrs.contains(&a) {
                    e.addrs.push(a);
                }
            }
        }
    }

    /// Notes that a request is being sent to `peer`.
    pub fn asking(&self, peer: &PeerId) {
        if let Some(n) = self.lock().known.get_mut(peer) {
            n.asked = true;
        }
    }

    /// Passes over `peer` for `how_long` (it could not be reached).
    pub fn pass_over(&self, peer: PeerId, how_long: Duration) {
        if let Some(n) = self.lock().known.get_mut(&peer) {
            n.down_until = Some(Instant::now() + how_long);
        }
    }

    /// Adds a node remembered from an earlier run, passed over until
    /// `down_until` if it had failed then.
    pub fn add_remembered(&self, peer: PeerId, addrs: Vec<Multiaddr>, down_until: Option<std::time::SystemTime>) {
        self.add([(peer, addrs)]);
        let left = down_until.and_then(|t| t.duration_since(std::time::SystemTime::now()).ok());
        if let Some(left) = left
            && let Some(n) = self.lock().known.get_mut(&peer)
        {
            n.down_until = Some(Instant::now() + left.min(MAX_REMEMBERED_PENALTY));
        }
    }

    /// Asks the DHT for the nodes closest to `key` and remembers them.
    pub async fn discover(&self, key: [u8; 32]) -> Result<usize, Error> {
        Ok(self.discover_traced(key).await?.found)
    }

    /// [`Self::discover`], saying how the lookup went.
    pub async fn discover_traced(&self, key: [u8; 32]) -> Result<cairn_net::LookupStats, Error> {
        let (found, stats) = self.net.lookup(key.to_vec()).await?;
        self.add(found);
        Ok(stats)
    }

    /// Refreshes from the DHT if the list is old or shorter than `want`.
    /// Asks the network for nodes again: first waiting, when fewer than
    /// `needed` healthy nodes are known; in the background, when what is
    /// known is older than [`REFRESH`]. (A lookup that meets a hung node
    /// takes seconds; a put should not wait for it when it has enough.)
    async fn refresh_if_needed(self: &Arc<Self>, key: [u8; 32], needed: usize) -> Result<(), Error> {
        let (stale, healthy) = {
            let mut st = self.lock();
            let now = Instant::now();
            let healthy = st.known.values().filter(|n| n.down_until.is_none_or(|t| t <= now)).count();
            let stale = st.refreshed.is_none_or(|t| t.elapsed() > REFRESH);
            if stale && healthy >= needed {
                // One background lookup per period.
                st.refreshed = Some(now);
            }
            (stale, healthy)
        };
        if healthy < needed {
            self.discover(key).await?;
            self.lock().refreshed = Some(Instant::now());
        } else if stale {
            let me = Arc::clone(self);
            self.tasks.spawn_until_shutdown(async move {
                if let Err(e) = me.discover(key).await {
                    tracing::debug!(error = %e, "background node lookup failed");
                }
                me.fetch_profiles(&me.peers(), Duration::from_secs(5)).await;
            });
        }
        Ok(())
    }

    /// Up to `count` distinct nodes for `key`: healthy ones nearest first,
    /// then penalized ones as a last resort. The network is asked first
    /// when fewer than `needed` healthy nodes are known.
    pub async fn candidates(
        self: &Arc<Self>,
        key: [u8; 32],
        count: usize,
        needed: usize,
    ) -> Result<Vec<Candidate>, Error> {
        self.refresh_if_needed(key, needed).await?;
        let st = self.lock();
        let now = Instant::now();
        let mut all: Vec<(bool, [u8; 32], PeerId)> = st
            .known
            .iter()
            .map(|(p, n)| (n.down_until.is_some_and(|t| t > now), distance(&n.hash, &key), *p))
            .collect();
        all.sort_unstable();
        if all.is_empty() {
            return Err(Error::NoNodes);
        }
        Ok(all.into_iter().take(count).filter_map(|(_, _, p)| candidate(&st, &p, now)).collect())
    }

    /// What placement knows of `peer`.
    pub fn candidate(&self, peer: &PeerId) -> Candidate {
        candidate(&self.lock(), peer, Instant::now()).unwrap_or_else(|| Candidate::bare(*peer))
    }

    /// Asks the nodes in `peers` whose profile is missing or older than
    /// [`PROFILE_TTL`] for it, waiting at most `wait`; a node already being
    /// asked by another caller and without a profile yet is waited for too
    /// (within `wait`).
    pub async fn fetch_profiles(&self, peers: &[PeerId], wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        let (stale, pending): (Vec<PeerId>, Vec<PeerId>) = {
            let mut st = self.lock();
            let now = Instant::now();
            let (mut stale, mut pending) = (Vec::new(), Vec::new());
            for p in peers {
                let Some(n) = st.known.get_mut(p) else { continue };
                if n.profiled.is_none_or(|t| now.duration_since(t) > PROFILE_TTL) {
                    n.profiled = Some(now);
                    n.fetching = true;
                    stale.push(*p);
                } else if n.fetching && n.profile.is_none() {
                    pending.push(*p);
                }
            }
            (stale, pending)
        };
        if !stale.is_empty() {
            let timeouts = Timeouts { open: wait, request: wait };
            let fetched: Vec<(PeerId, Option<NodeProfile>)> = futures::stream::iter(stale)
                .map(|peer| {
                    let client = ShardClient::new(self.net.clone(), peer, timeouts);
                    async move { (peer, client.profile().await.ok()) }
                })
                .buffer_unordered(PROFILE_FETCHES)
                .collect()
                .await;
            {
                let mut st = self.lock();
                for (peer, profile) in fetched {
                    if let Some(n) = st.known.get_mut(&peer) {
                        n.fetching = false;
                        if let Some(p) = profile {
                            n.profile = Some(p);
                            n.placed = 0;
                        }
                    }
                }
            }
            self.profiled.notify_waiters();
        }
        loop {
            let woken = self.profiled.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let waiting = {
                let st = self.lock();
                // (A request whose caller went away leaves `fetching` set:
                // it is waited for only as long as a request can take.)
                let live = |t: Option<Instant>| t.is_some_and(|t| t.elapsed() < PROFILE_REQUEST_MAX);
                pending
                    .iter()
                    .any(|p| st.known.get(p).is_some_and(|n| n.fetching && n.profile.is_none() && live(n.profiled)))
            };
            if !waiting || tokio::time::timeout_at(deadline, woken).await.is_err() {
                return;
            }
        }
    }

    /// Keeps a profile `peer` sent.
    pub fn set_profile(&self, peer: &PeerId, profile: NodeProfile) {
        self.add([(*peer, Vec::new())]);
        if let Some(n) = self.lock().known.get_mut(peer) {
            n.profile = Some(profile);
            n.profiled = Some(Instant::now());
            n.placed = 0;
        }
    }

    /// Notes that a download of `bytes` from `peer` took `took` (a request
    /// still running counts with the time it has taken so far).
    pub fn timed(&self, peer: &PeerId, took: Duration, bytes: u64) {
        if let Some(n) = self.lock().known.get_mut(peer) {
            let x = crate::schedule::read_cost(took, bytes).as_secs_f64();
            n.time = Some(n.time.map_or(x, |t| t + TIME_WEIGHT * (x - t)));
        }
    }

    /// How long `peer`'s downloads take, per MiB-ish ([`crate::schedule::read_cost`]).
    pub fn time(&self, peer: &PeerId) -> Option<Duration> {
        self.lock().known.get(peer).and_then(|n| n.time).map(Duration::from_secs_f64)
    }

    /// Counts `bytes` stored on `peer` against its free space.
    pub fn placed(&self, peer: &PeerId, bytes: u64) {
        if let Some(n) = self.lock().known.get_mut(peer) {
            n.placed = n.placed.saturating_add(bytes);
        }
    }

    /// Whether `peer` failed lately and is being passed over.
    pub fn penalized(&self, peer: &PeerId) -> bool {
        let now = Instant::now();
        self.lock().known.get(peer).is_some_and(|n| n.down_until.is_some_and(|t| t > now))
    }

    /// Records the outcome of a request to `peer`.
    pub fn report(&self, peer: PeerId, ok: bool) {
        let mut st = self.lock();
        if let Some(n) = st.known.get_mut(&peer) {
            if ok {
                n.ok += 1;
                n.down_until = None;
            } else {
                n.failed += 1;
                n.down_until = Some(Instant::now() + PENALTY);
            }
        }
    }

    /// How many nodes are known.
    pub fn len(&self) -> usize {
        self.lock().known.len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.lock().known.is_empty()
    }

    /// Every node known.
    pub fn peers(&self) -> Vec<PeerId> {
        self.lock().known.keys().copied().collect()
    }

    /// Everything known, for `cairn status` and the cache.
    pub fn report_all(&self) -> Vec<NodeReport> {
        let st = self.lock();
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        let mut v: Vec<NodeReport> = st
            .known
            .iter()
            .map(|(p, n)| {
                let left = n.down_until.and_then(|t| t.checked_duration_since(now)).filter(|d| !d.is_zero());
                NodeReport {
                    peer: *p,
                    addrs: n.addrs.clone(),
                    ok: n.ok,
                    failed: n.failed,
                    penalized: left.is_some(),
                    down_until: left.map(|d| wall + d),
                    asked: n.asked,
                    profile: n.profile.clone(),
                    time: n.time.map(Duration::from_secs_f64),
                }
            })
            .collect();
        v.sort_by_key(|r| r.peer.to_string());
        v
    }
}
