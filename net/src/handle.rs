//! The cloneable handle to a running network.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::RecordId;
use cairn_proto::head::HeadRecord;
use cairn_proto::shard::SHARD_PROTOCOL;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::store::{Heads, RecordBackend};
use crate::swarm::{self, Command, NetConfig};

/// The shard protocol as a libp2p protocol name.
pub const SHARD: StreamProtocol = StreamProtocol::new(SHARD_PROTOCOL);

/// A running network: the handle plus the event-loop task that owns the
/// Swarm. Dropping it does not stop the task; call [`Network::shutdown`].
#[derive(Debug)]
pub struct Network {
    /// Talk to the network through this.
    pub handle: NetHandle,
    /// The head records this peer holds (a node serves `GetHead` and
    /// `PutHead` from them).
    pub heads: Arc<Heads>,
    task: JoinHandle<()>,
}

impl Network {
    /// Starts the Swarm on the current tokio runtime. `records` holds the
    /// DHT records this peer stores.
    pub fn start(cfg: NetConfig, records: Arc<dyn RecordBackend>) -> Result<Self, Error> {
        let heads = Heads::new(records);
        let (ev, commands, control, peer) = swarm::build(cfg, Arc::clone(&heads))?;
        let task = tokio::spawn(ev.run());
        Ok(Self { handle: NetHandle { commands, control, peer }, heads, task })
    }

    /// Stops the event loop (open connections are closed) and waits for it.
    pub async fn shutdown(self) {
        let _ = self.handle.commands.send(Command::Shutdown).await;
        let _ = self.task.await;
    }
}

/// Cloneable access to the network task.
#[derive(Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    peer: PeerId,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle").field("peer", &self.peer).finish()
    }
}

impl NetHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// This peer's id.
    pub fn local_peer_id(&self) -> PeerId {
        self.peer
    }

    /// The addresses this peer listens on, once every listener is up.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }

    /// Peers with an open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.ask(|reply| Command::ConnectedPeers { reply }).await
    }

    /// Waits until a connection to some peer is open.
    pub async fn wait_connected(&self) -> Result<(), Error> {
        self.ask(|reply| Command::WaitConnected { reply }).await
    }

    /// Tells the DHT where `peer` can be reached (known from an earlier
    /// run), so that requests to it can dial it.
    pub async fn add_addresses(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), Error> {
        self.commands.send(Command::AddAddresses { peer, addrs }).await.map_err(|_| Error::Stopped)
    }

    /// Dials an address (`…/p2p/<peer id>` adds it to the routing table).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// Fills the routing table by looking up this peer's own id.
    pub async fn bootstrap(&self) -> Result<(), Error> {
        self.ask(|reply| Command::Bootstrap { reply }).await?
    }

    /// The peers closest to `key` in the DHT, with their addresses.
    pub async fn closest_peers(&self, key: Vec<u8>) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, Error> {
        Ok(self.lookup(key).await?.0)
    }

    /// [`Self::closest_peers`], and how the lookup went.
    pub async fn lookup(&self, key: Vec<u8>) -> Result<(Vec<(PeerId, Vec<Multiaddr>)>, crate::LookupStats), Error> {
        self.ask(|reply| Command::ClosestPeers { key, reply }).await?
    }

    /// Stores a signed head record on the peers closest to its id.
    pub async fn put_record(&self, record: HeadRecord) -> Result<(), Error> {
        self.ask(|reply| Command::PutRecord { record, reply }).await?
    }

    /// Stores a head record on exactly `peers`, without keeping it locally,
    /// and succeeds once `quorum` of them (at least one) accepted it. A
    /// writer that asks for a majority of a record's closest peers gets
    /// compare-and-swap: of two records with one sequence number, at most
    /// one can win a majority.
    pub async fn put_record_to(&self, record: HeadRecord, peers: Vec<PeerId>, quorum: usize) -> Result<(), Error> {
        self.ask(|reply| Command::PutRecordTo { record, peers, quorum, reply }).await?
    }

    /// Every valid head record found under `id` (callers pick the highest
    /// sequence).
    pub async fn get_record(&self, id: RecordId) -> Result<Vec<HeadRecord>, Error> {
        self.ask(|reply| Command::GetRecord { record: id, reply }).await?
    }

    /// Opens a shard-protocol stream to `peer`, dialling it if needed.
    pub async fn open_shard_stream(&self, peer: PeerId, timeout: Duration) -> Result<Stream, Error> {
        let mut control = self.control.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        // A connection that died since it was last used (the peer's link
        // went down and came back) fails the first open: the second dials
        // anew.
        for attempt in 0..2 {
            match tokio::time::timeout_at(deadline, control.open_stream(peer, SHARD)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(libp2p_stream::OpenStreamError::Io(e))) if attempt == 0 => {
                    tracing::debug!(%peer, error = %e, "stream open failed on a stale connection; dialling again");
                }
                Ok(Err(e)) => return Err(Error::OpenStream { peer, reason: e.to_string() }),
                Err(_) => return Err(Error::Timeout { peer }),
            }
        }
        Err(Error::Timeout { peer })
    }

    /// Inbound shard-protocol streams (for nodes). Only one caller may accept.
    pub fn accept_shard_streams(&self) -> Result<libp2p_stream::IncomingStreams, Error> {
        self.control.clone().accept(SHARD).map_err(|e| Error::Transport(e.to_string()))
    }
}
