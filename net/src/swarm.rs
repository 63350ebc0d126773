//! The libp2p Swarm and the one task that owns it.
//!
//! After rust-libp2p's `examples/file-sharing`: the [`EventLoop`] owns the
//! Swarm; a cloneable [`crate::NetHandle`] sends it [`Command`]s over a
//! bounded channel, each with a `oneshot` for the reply. Local commands are
//! served before new swarm events (`biased` select), as the libp2p coding
//! guidelines ask.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::head::HeadRecord;
use futures::StreamExt;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::core::Transport as _;
use libp2p::kad::{self, GetClosestPeersOk, GetRecordOk, Mode, PeerRecord, PutRecordOk, QueryId, QueryResult, Quorum};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, noise, ping, tcp, yamux};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::ip_limits::{self, IpLimit};
use crate::store::{HeadStore, Heads};

/// A private network's pre-shared key (libp2p pnet, the IPFS `swarm.key` format).
pub use libp2p::pnet::PreSharedKey as NetworkKey;

/// Kademlia protocol name: a Cairn-only DHT, not the public IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cairn/kad/1");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/cairn/id/1";
/// Commands waiting for the event loop.
const COMMAND_QUEUE: usize = 64;
/// Lookups end a grace after they have what they can get (see
/// `EventLoop::finish_slow_queries`): live peers answer within round trips,
/// and a dead or hung one would hold the query for the substream timeout.
/// The grace is twice the time the first answer took, within these bounds.
const GRACE_MIN: Duration = Duration::from_millis(100);
/// See [`GRACE_MIN`].
const GRACE_MAX: Duration = Duration::from_millis(1000);
/// Answers a lookup needs before silence may end it.
const MIN_ANSWERS: u32 = 3;

/// How a lookup is going.
#[derive(Clone, Copy, Debug)]
struct QueryClock {
    started: std::time::Instant,
    first_answer: Option<std::time::Instant>,
    first_record: Option<std::time::Instant>,
    answers: u32,
    last_answer: std::time::Instant,
}

impl QueryClock {
    fn new(now: std::time::Instant) -> Self {
        Self { started: now, first_answer: None, first_record: None, answers: 0, last_answer: now }
    }

    /// Notes the lookup's count of answers so far.
    fn answered(&mut self, answers: u32, now: std::time::Instant) {
        if answers > self.answers {
            self.answers = answers;
            self.last_answer = now;
            self.first_answer.get_or_insert(now);
        }
    }

    /// Twice the time the first answer (or record) took, bounded.
    fn grace(&self) -> Duration {
        let first = match (self.first_answer, self.first_record) {
            (Some(a), Some(r)) => a.min(r),
            (a, r) => a.or(r).unwrap_or(self.started),
        };
        (first.saturating_duration_since(self.started) * 2).clamp(GRACE_MIN, GRACE_MAX)
    }

    /// Enough peers answered, and none for a grace since.
    fn stalled(&self, now: std::time::Instant) -> bool {
        self.answers >= MIN_ANSWERS && now > self.last_answer + self.grace()
    }
}
/// A closest-peers lookup returns what it has after this long.
const CLOSEST_SOFT_DEADLINE: Duration = Duration::from_secs(3);
/// How often running queries are checked against those deadlines.
const QUERY_TICK: Duration = Duration::from_millis(20);

/// The behaviours of a Cairn peer.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    limits: connection_limits::Behaviour,
    ip_limits: ip_limits::Behaviour,
    kad: kad::Behaviour<HeadStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// Where a peer stands in the DHT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Storage nodes: answer DHT queries and store records.
    Server,
    /// Clients: query only.
    Client,
}

/// How to start the network.
#[derive(Debug)]
pub struct NetConfig {
    /// The peer's identity.
    pub keypair: libp2p::identity::Keypair,
    /// Addresses to listen on (`/ip4/127.0.0.1/udp/0/quic-v1`, `/ip4/…/tcp/0`).
    pub listen: Vec<Multiaddr>,
    /// Peers to join through; each must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Server (node) or client.
    pub role: Role,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Inbound connections allowed per IP address (`None`: no limit).
    pub ip_limit: Option<IpLimit>,
    /// A private network's key (libp2p pnet): only peers with the same key
    /// can connect, over TCP (pnet cannot protect QUIC, so a private
    /// network has none: QUIC addresses are refused).
    pub network_key: Option<NetworkKey>,
}

impl NetConfig {
    /// A client with a fresh identity that joins through `bootstrap`.
    pub fn client(bootstrap: Vec<Multiaddr>) -> Self {
        Self {
            keypair: libp2p::identity::Keypair::generate_ed25519(),
            listen: Vec::new(),
            bootstrap,
            role: Role::Client,
            idle_timeout: Duration::from_secs(60),
            ip_limit: None,
            network_key: None,
        }
    }
}

/// Where the closest peers to a key are sent.
type PeersReply = oneshot::Sender<Result<(Vec<(PeerId, Vec<Multiaddr>)>, LookupStats), Error>>;

/// What callers ask of the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    ListenAddrs { reply: oneshot::Sender<Vec<Multiaddr>> },
    ConnectedPeers { reply: oneshot::Sender<Vec<PeerId>> },
    WaitConnected { reply: oneshot::Sender<()> },
    AddAddresses { peer: PeerId, addrs: Vec<Multiaddr> },
    Dial { addr: Multiaddr, reply: oneshot::Sender<Result<(), Error>> },
    Bootstrap { reply: oneshot::Sender<Result<(), Error>> },
    ClosestPeers { key: Vec<u8>, reply: PeersReply },
    PutRecord { record: HeadRecord, reply: oneshot::Sender<Result<(), Error>> },
    PutRecordTo { record: HeadRecord, peers: Vec<PeerId>, quorum: usize, reply: oneshot::Sender<Result<(), Error>> },
    GetRecord { record: cairn_proto::RecordId, reply: oneshot::Sender<Result<Vec<HeadRecord>, Error>> },
    Shutdown,
}

/// Replies waiting for a Kademlia query to finish.
enum Pending {
    Bootstrap(oneshot::Sender<Result<(), Error>>),
    Closest(PeersReply),
    Put(oneshot::Sender<Result<(), Error>>),
    Get(oneshot::Sender<Result<Vec<HeadRecord>, Error>>, Vec<HeadRecord>),
}

/// Owns the Swarm; run it with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    pending: HashMap<QueryId, Pending>,
    /// How each pending lookup is going, for ending it early.
    clocks: HashMap<QueryId, QueryClock>,
    listen_addrs: Vec<Multiaddr>,
    addr_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    /// Callers waiting for a first connection.
    connect_waiters: Vec<oneshot::Sender<()>>,
    /// Listeners that have reported at least one address.
    listeners_up: HashSet<libp2p::core::transport::ListenerId>,
    expected_listeners: usize,
    /// Where head records offered by peers through Kademlia go.
    heads: Arc<Heads>,
    /// Offers being checked and stored on the blocking pool (a synced
    /// write must not stall the event loop).
    offers: tokio::task::JoinSet<()>,
}

/// How one closest-peer lookup went (libp2p's query statistics: it keeps
/// α = 3 requests in flight and ends when the closest peers it has heard
/// of have all answered).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Requests sent.
    pub requests: u32,
    /// Requests answered.
    pub answered: u32,
    /// Requests that failed or timed out.
    pub failed: u32,
    /// Peers it returned.
    pub found: usize,
    /// How long it took.
    pub took: Duration,
}

/// Head records from Kademlia checked and stored at once; beyond, offers
/// are dropped (their senders publish again).
const MAX_OFFERS: usize = 64;

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").field("peer", self.swarm.local_peer_id()).finish_non_exhaustive()
    }
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Builds the Swarm, starts listening and dialling the bootstrap peers.
pub(crate) fn build(
    cfg: NetConfig,
    heads: Arc<Heads>,
) -> Result<(EventLoop, mpsc::Sender<Command>, libp2p_stream::Control, PeerId), Error> {
    let local = cfg.keypair.public().to_peer_id();
    let ip_limit = cfg.ip_limit;
    let idle = cfg.idle_timeout;
    if cfg.network_key.is_some()
        && let Some(quic) =
            cfg.listen.iter().chain(&cfg.bootstrap).find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)))
    {
        return Err(Error::NotPrivate { addr: quic.to_string() });
    }
    let builder = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair).with_tokio();
    let transport = |e: &dyn std::fmt::Display| Error::Transport(e.to_string());
    let mut swarm = match cfg.network_key {
        None => builder
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .map_err(|e| transport(&e))?
            .with_quic()
            .with_behaviour(|key| behaviour(key, &heads, ip_limit))
            .map_err(|e| transport(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        Some(psk) => builder
            .with_other_transport(|key| {
                let noise = noise::Config::new(key)?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .and_then(move |socket, _| libp2p::pnet::PnetConfig::new(psk).handshake(socket))
                        .upgrade(libp2p::core::upgrade::Version::V1)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default()),
                )
            })
            .map_err(|e| transport(&e))?
            .with_behaviour(|key| behaviour(key, &heads, ip_limit))
            .map_err(|e| transport(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    swarm.behaviour_mut().kad.set_mode(Some(match cfg.role {
        Role::Server => Mode::Server,
        Role::Client => Mode::Client,
    }));
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| Error::BadAddress { addr: addr.to_string(), reason: e.to_string() })?;
    }
    for addr in &cfg.bootstrap {
        let peer = peer_of(addr).ok_or_else(|| Error::BadAddress {
            addr: addr.to_string(),
            reason: "no /p2p/<peer id> at the end".into(),
        })?;
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let control = swarm.behaviour().stream.new_control();
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let ev = EventLoop {
        swarm,
        commands: rx,
        pending: HashMap::new(),
        clocks: HashMap::new(),
        listen_addrs: Vec::new(),
        addr_waiters: Vec::new(),
        connect_waiters: Vec::new(),
        listeners_up: HashSet::new(),
        expected_listeners: cfg.listen.len(),
        heads,
        offers: tokio::task::JoinSet::new(),
    };
    Ok((ev, tx, control, local))
}

impl EventLoop {
    /// Runs until a `Shutdown` command or until every handle is dropped.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(QUERY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.on_command(cmd),
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(_) = self.offers.join_next(), if !self.offers.is_empty() => {}
                // Only while lookups run: an idle node is not woken.
                _ = tick.tick(), if !self.pending.is_empty() => self.finish_slow_queries(),
            }
        }
        // Offers under way are short (a signature check, a RocksDB write).
        while self.offers.join_next().await.is_some() {}
        tracing::debug!("network event loop stopped");
    }

    /// Checks and stores a head record a peer sent through Kademlia, on
    /// the blocking pool.
    fn on_offer(&mut self, source: PeerId, record: kad::Record) {
        if self.offers.len() >= MAX_OFFERS {
            tracing::debug!(%source, "too many head records being stored; dropped one");
            return;
        }
        let heads = Arc::clone(&self.heads);
        self.offers.spawn_blocking(move || {
            if let Err(reason) = heads.offer_bytes(&record.key, &record.value) {
                tracing::debug!(%source, %reason, "refused a head record");
            }
        });
    }

    /// Ends lookups that have what they can get: a record lookup a grace
    /// after its first record; any lookup that has heard from
    /// [`MIN_ANSWERS`] peers and then a grace long without another answer
    /// (the peers it still waits for are dead or hung, and would hold it
    /// for the substream timeout); a closest-peer lookup at
    /// [`CLOSEST_SOFT_DEADLINE`]. The grace is twice the time the first
    /// answer took, within [`GRACE_MIN`]..[`GRACE_MAX`]. They then report
    /// what they found.
    fn finish_slow_queries(&mut self) {
        let now = std::time::Instant::now();
        for id in self.pending.keys().copied().collect::<Vec<_>>() {
            let kad = &mut self.swarm.behaviour_mut().kad;
            let answers = kad.query(&id).map_or(0, |q| q.stats().num_successes());
            let clock = self.clocks.entry(id).or_insert_with(|| QueryClock::new(now));
            clock.answered(answers, now);
            let stalled = clock.stalled(now);
            let done = match self.pending.get(&id) {
                Some(Pending::Get(_, found)) if !found.is_empty() => {
                    clock.first_record.is_some_and(|t| now > t + clock.grace())
                }
                Some(Pending::Get(..)) => stalled,
                Some(Pending::Closest(_)) => stalled || now > clock.started + CLOSEST_SOFT_DEADLINE,
                _ => false,
            };
            if done && let Some(mut q) = kad.query_mut(&id) {
                q.finish();
            }
        }
        self.clocks.retain(|id, _| self.pending.contains_key(id));
    }

    fn on_command(&mut self, cmd: Command) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match cmd {
            Command::ListenAddrs { reply } => {
                if self.listeners_up.len() >= self.expected_listeners {
                    let _ = reply.send(self.listen_addrs.clone());
                } else {
                    self.addr_waiters.push(reply);
                }
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::WaitConnected { reply } => {
                if self.swarm.connected_peers().next().is_some() {
                    let _ = reply.send(());
                } else {
                    self.connect_waiters.push(reply);
                }
            }
            Command::AddAddresses { peer, addrs } => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for addr in addrs {
                    kad.add_address(&peer, addr);
                }
            }
            Command::Dial { addr, reply } => {
                if let Some(peer) = peer_of(&addr) {
                    kad.add_address(&peer, addr.clone());
                }
                let r = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| Error::BadAddress { addr: addr.to_string(), reason: e.to_string() });
                let _ = reply.send(r);
            }
            Command::Bootstrap { reply } => match kad.bootstrap() {
                Ok(q) => {
                    self.pending.insert(q, Pending::Bootstrap(reply));
                }
                Err(kad::NoKnownPeers()) => {
                    let _ = reply.send(Err(Error::NoKnownPeers));
                }
            },
            Command::ClosestPeers { key, reply } => {
                let q = kad.get_closest_peers(key);
                self.pending.insert(q, Pending::Closest(reply));
                self.clocks.insert(q, QueryClock::new(std::time::Instant::now()));
            }
            Command::PutRecord { record, reply } => {
                let key = kad::RecordKey::new(&record.record_id().0);
                let rec = kad::Record::new(key, record.to_bytes());
                match kad.put_record(rec, Quorum::One) {
                    Ok(q) => {
                        self.pending.insert(q, Pending::Put(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::RecordStore(e)));
                    }
                }
            }
            Command::PutRecordTo { record, peers, quorum, reply } => {
                let key = kad::RecordKey::new(&record.record_id().0);
                let rec = kad::Record::new(key, record.to_bytes());
                let quorum = std::num::NonZeroUsize::new(quorum).map_or(Quorum::One, Quorum::N);
                let q = kad.put_record_to(rec, peers.into_iter(), quorum);
                self.pending.insert(q, Pending::Put(reply));
            }
            Command::GetRecord { record, reply } => {
                let q = kad.get_record(kad::RecordKey::new(&record.0));
                self.pending.insert(q, Pending::Get(reply, Vec::new()));
                self.clocks.insert(q, QueryClock::new(std::time::Instant::now()));
            }
            Command::Shutdown => {}
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { listener_id, address } => {
                tracing::info!(%address, "listening");
                self.listen_addrs.push(address);
                self.listeners_up.insert(listener_id);
                if self.listeners_up.len() >= self.expected_listeners {
                    for w in self.addr_waiters.drain(..) {
                        let _ = w.send(self.listen_addrs.clone());
                    }
                }
            }
            SwarmEvent::ConnectionEstablished { .. } => {
                for w in self.connect_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            // Learn the listen addresses of peers that speak our DHT.
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            })) => {
                self.on_query(id, result, step.last, &stats);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest {
                request: kad::InboundRequest::PutRecord { source, record: Some(record), .. },
            })) => self.on_offer(source, record),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "connection failed");
            }
            _ => {}
        }
    }

    fn on_query(&mut self, id: QueryId, result: QueryResult, last: bool, stats: &kad::QueryStats) {
        match result {
            QueryResult::Bootstrap(r) => {
                if !last && r.is_ok() {
                    return;
                }
                if let Some(Pending::Bootstrap(reply)) = self.pending.remove(&id) {
                    let _ = reply.send(r.map(|_| ()).map_err(|_| Error::BootstrapTimeout));
                }
            }
            QueryResult::GetClosestPeers(r) => {
                if let Some(Pending::Closest(reply)) = self.pending.remove(&id) {
                    let peers = match r {
                        Ok(GetClosestPeersOk { peers, .. }) => Ok(peers),
                        // A timed-out query still returns what it found.
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => Ok(peers),
                    };
                    let _ = reply.send(peers.map(|p| {
                        let stats = LookupStats {
                            requests: stats.num_requests(),
                            answered: stats.num_successes(),
                            failed: stats.num_failures(),
                            found: p.len(),
                            took: stats.duration().unwrap_or_default(),
                        };
                        (p.into_iter().map(|i| (i.peer_id, i.addrs)).collect(), stats)
                    }));
                }
            }
            QueryResult::PutRecord(r) => {
                if let Some(Pending::Put(reply)) = self.pending.remove(&id) {
                    let _ = reply.send(match r {
                        Ok(PutRecordOk { .. }) => Ok(()),
                        Err(kad::PutRecordError::QuorumFailed { success, quorum, .. }) => Err(Error::PutRecordQuorum {
                            stored: success.len(),
                            quorum: quorum.get(),
                            timed_out: false,
                        }),
                        Err(kad::PutRecordError::Timeout { success, quorum, .. }) => {
                            Err(Error::PutRecordQuorum { stored: success.len(), quorum: quorum.get(), timed_out: true })
                        }
                    });
                }
            }
            QueryResult::GetRecord(r) => {
                let done = match r {
                    Ok(GetRecordOk::FoundRecord(PeerRecord { record, .. })) => {
                        if let Some(Pending::Get(_, found)) = self.pending.get_mut(&id)
                            && let Ok(h) = HeadRecord::from_bytes(&record.value)
                            && h.verify().is_ok()
                            && crate::store::record_id(&record.key) == Some(h.record_id())
                        {
                            found.push(h);
                            let now = std::time::Instant::now();
                            let clock = self.clocks.entry(id).or_insert_with(|| QueryClock::new(now));
                            clock.first_record.get_or_insert(now);
                        }
                        last
                    }
                    Ok(GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => true,
                    Err(_) => true,
                };
                if done && let Some(Pending::Get(reply, found)) = self.pending.remove(&id) {
                    let _ = reply.send(if found.is_empty() { Err(Error::RecordNotFound) } else { Ok(found) });
                }
            }
            _ => {}
        }
    }
}

/// Kademlia requests one lookup keeps in flight (kad's default: 3).
const LOOKUP_PARALLELISM: std::num::NonZeroUsize = std::num::NonZeroUsize::new(8).expect("not zero");

/// Connections one peer id may have with this peer at once.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 64;

/// The behaviours every peer runs.
fn behaviour(key: &libp2p::identity::Keypair, heads: &Arc<Heads>, ip_limit: Option<IpLimit>) -> Behaviour {
    let peer = key.public().to_peer_id();
    let mut kcfg = kad::Config::new(KAD_PROTOCOL);
    // Inbound records come to the event loop as events and are
    // checked and stored on the blocking pool (`on_offer`), so a
    // synced write never stalls the swarm. Kademlia acknowledges
    // them before that: a refusal is not seen by the sender (clients
    // publish heads with the shard protocol's `PutHead`, which
    // answers).
    kcfg.set_record_filtering(kad::StoreInserts::FilterBoth);
    // Owners republish their heads; nodes keep records until replaced.
    kcfg.set_record_ttl(None);
    kcfg.set_replication_interval(None);
    kcfg.set_publication_interval(None);
    kcfg.set_query_timeout(Duration::from_secs(30));
    // Kademlia's α: requests a lookup keeps in flight. With kad's 3, a
    // lookup whose 3 nearest known peers are dead waits at capacity until
    // their dials fail (QUIC's 5 s handshake timeout): a new device's first
    // call on a network with 3 of 8 nodes down took 3.8–5.4 s. With more
    // in flight, live peers answer meanwhile and the lookup ends a grace
    // after enough of them have (`finish_slow_queries`).
    kcfg.set_parallelism(LOOKUP_PARALLELISM);
    // Head records are at most ~33 KiB (`MAX_HEAD_RECORD_SIZE`), more
    // than kad's default packet limit (16 KiB); an answer also carries
    // up to 20 peers' addresses.
    kcfg.set_max_packet_size(2 * cairn_proto::head::MAX_HEAD_RECORD_SIZE + 16 * 1024);
    // A node that refuses a record closes the substream without an
    // answer, and the sender only gives up at this timeout (kad's
    // default: 10 s).
    kcfg.set_substreams_timeout(Duration::from_secs(5));
    let store = HeadStore::new(peer, Arc::clone(heads));
    // Bounds what peers can open; streams per connection are bounded
    // by QUIC (100) and yamux (256), requests by the node's limiter. A
    // peer id is a device, whose processes (CLI calls, a gateway, a
    // mount) each connect: as many as one IP address may (the per-IP
    // limit's default), since a new peer id costs nothing anyway.
    let limits = ConnectionLimits::default()
        .with_max_pending_incoming(Some(256))
        .with_max_established_incoming(Some(4096))
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
    Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        ip_limits: ip_limits::Behaviour::new(ip_limit),
        kad: kad::Behaviour::with_config(peer, store, kcfg),
        identify: identify::Behaviour::new(identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())),
        ping: ping::Behaviour::default(),
        stream: libp2p_stream::Behaviour::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_stalls_only_after_enough_answers_and_a_grace_of_silence() {
        let t0 = std::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = QueryClock::new(t0);
        assert!(!c.stalled(ms(5_000)), "no answers: keep waiting (the substream timeout ends it)");
        c.answered(2, ms(10));
        assert!(!c.stalled(ms(5_000)), "two answers are not enough");
        c.answered(3, ms(300));
        // First answer after 10 ms: the grace is at its floor.
        assert_eq!(c.grace(), GRACE_MIN);
        assert!(!c.stalled(ms(300) + GRACE_MIN));
        assert!(c.stalled(ms(301) + GRACE_MIN));
        // A new answer restarts the silence.
        c.answered(4, ms(600));
        assert!(!c.stalled(ms(700)));
        // Slow first answers stretch the grace, up to its ceiling.
        let mut slow = QueryClock::new(t0);
        slow.answered(3, ms(400));
        assert_eq!(slow.grace(), Duration::from_millis(800));
        let mut slower = QueryClock::new(t0);
        slower.first_record = Some(ms(2_000));
        assert_eq!(slower.grace(), GRACE_MAX);
    }
}
