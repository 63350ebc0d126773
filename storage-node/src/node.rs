//! A running node: store, network, stream service, admin listener and
//! lease collector, each a task with a known shutdown order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_net::store::RecordBackend;
use cairn_net::{Multiaddr, NetConfig, Network, Role};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::NodeConfig;
use crate::error::Error;
use crate::leaving::{self, Leaving};
use crate::limits::{Limiter, RecordQuota};
use crate::metrics::Metrics;
use crate::service::{self, Service};
use crate::store::ShardStore;
use crate::usage::{self, Book, Ledger};

/// File in the data dir listing the node's peer addresses, one per line,
/// each ending in `/p2p/<peer id>` (for `cairn devnet` and tests).
pub const ADDRS_FILE: &str = "node.addrs";
/// File in the data dir holding the admin listener's `ip:port`.
pub const ADMIN_FILE: &str = "admin.addr";
/// How long in-flight streams get at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A started node.
#[derive(Debug)]
pub struct Node {
    net: Network,
    store: Arc<ShardStore>,
    cancel: CancellationToken,
    /// Cancelled when a leaving node has drained.
    drained: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Peer addresses, with `/p2p/<peer id>`.
    pub addrs: Vec<Multiaddr>,
    /// The admin listener's address.
    pub admin: std::net::SocketAddr,
}

fn parse_addrs(list: &[String], cfg_path: &Path) -> Result<Vec<Multiaddr>, Error> {
    list.iter()
        .map(|a| a.parse().map_err(|e| Error::Config { path: cfg_path.into(), reason: format!("`{a}`: {e}") }))
        .collect()
}

/// Writes `contents` to `dir/name` atomically.
fn write_atomic(dir: &Path, name: &str, contents: &str) -> Result<(), Error> {
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).map_err(Error::io(&tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(Error::io(path))
}

impl Node {
    /// Opens the store, starts the network and all tasks.
    pub async fn start(cfg: NodeConfig) -> Result<Self, Error> {
        let cfg_path = cfg.data_dir.join("config.toml");
        let bad = |reason: String| Error::Config { path: cfg_path.clone(), reason };
        let capacity = cfg.capacity_bytes().map_err(bad)?;
        let max_shard = cfg.max_shard_bytes().map_err(bad)?;
        let data_dir = cfg.data_dir.clone();
        let (store, recovery) =
            tokio::task::spawn_blocking(move || ShardStore::open(&data_dir, capacity, max_shard)).await??;
        if recovery != Default::default() {
            tracing::warn!(?recovery, "cleaned up after an interrupted run");
        }
        store.set_max_records(cfg.limits.max_records);
        store.set_small_shard_size(cfg.small_shard_bytes().map_err(bad)?);
        store.set_peer_quota(cfg.limits.max_mib_per_peer.saturating_mul(1 << 20));
        let store = Arc::new(store);
        let keypair = crate::identity::load_or_create(&cfg.data_dir)?;
        let net = Network::start(
            NetConfig {
                keypair: keypair.clone(),
                listen: parse_addrs(&cfg.listen, &cfg_path)?,
                bootstrap: parse_addrs(&cfg.bootstrap, &cfg_path)?,
                role: Role::Server,
                idle_timeout: Duration::from_secs(120),
                network_key: match cfg.network_key_file.as_str() {
                    "" => None,
                    f => Some(cairn_net::network_key::read(&cfg.data_dir.join(f))?),
                },
                ip_limit: (cfg.limits.max_connections_per_ip > 0).then_some(cairn_net::IpLimit {
                    max_per_ip: cfg.limits.max_connections_per_ip,
                    exempt_loopback: !cfg.limits.limit_loopback,
                }),
            },
            Arc::clone(&store) as Arc<dyn RecordBackend>,
        )?;
        let peer = net.handle.local_peer_id();
        let listen = tokio::time::timeout(Duration::from_secs(10), net.handle.listen_addrs())
            .await
            .map_err(|_| cairn_net::Error::Transport("listeners did not come up within 10 s".into()))??;
        let addrs: Vec<Multiaddr> = listen.into_iter().map(|a| a.with_p2p(peer).unwrap_or_else(|a| a)).collect();
        let addr_text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        write_atomic(&cfg.data_dir, ADDRS_FILE, &addr_text)?;
        tracing::info!(%peer, addrs = %addr_text.trim().replace('\n', " "), "node started");

        let cancel = CancellationToken::new();
        let drained = CancellationToken::new();
        let leaving = Arc::new(Leaving::default());
        leaving.update(leaving::read(&cfg.data_dir)?, store.stats().shards);
        if let Some(until) = leaving.until() {
            tracing::warn!(until, "this node is leaving the network: no new shards are accepted");
        }
        let metrics = Arc::new(Metrics::default());
        let book = Arc::new(Book::new(load_ledger(&store).await?));
        let mut tasks = Vec::new();
        let svc = Arc::new(Service {
            store: Arc::clone(&store),
            metrics: Arc::clone(&metrics),
            limiter: Limiter::new(cfg.limits),
            streams: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_streams)),
            idle: Duration::from_secs(cfg.limits.idle_timeout_secs.max(1)),
            deadline: Duration::from_secs(cfg.limits.request_deadline_secs.max(1)),
            min_rate: cfg.limits.min_kib_per_second.max(1) * 1024,
            direct_io: cfg.direct_io,
            heads: Arc::clone(&net.heads),
            max_lease_secs: cfg.leases.max_lease_secs,
            record_quota: RecordQuota::new(cfg.limits.new_records_per_peer_per_hour),
            leaving: Arc::clone(&leaving),
            identity: keypair,
            region: (cfg.region.clone(), cfg.zone.clone()),
            usage: Arc::clone(&book),
        });
        let incoming = net.handle.accept_shard_streams()?;
        tasks.push(tokio::spawn(service::run(svc, incoming, cancel.clone(), SHUTDOWN_GRACE)));

        let admin_addr: std::net::SocketAddr =
            cfg.admin_listen.parse().map_err(|_| bad(format!("admin_listen `{}`", cfg.admin_listen)))?;
        let listener = tokio::net::TcpListener::bind(admin_addr).await.map_err(Error::io(&cfg.admin_listen))?;
        let admin = listener.local_addr().map_err(Error::io(&cfg.admin_listen))?;
        write_atomic(&cfg.data_dir, ADMIN_FILE, &admin.to_string())?;
        let state = Arc::new(AdminState {
            store: Arc::clone(&store),
            metrics: Arc::clone(&metrics),
            net: net.handle.clone(),
            started: Instant::now(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            leaving: Arc::clone(&leaving),
            usage: Arc::clone(&book),
            region: (cfg.region.clone(), cfg.zone.clone()),
        });
        let c = cancel.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = admin::serve(listener, state, c).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        }));
        tasks.push(tokio::spawn(account_usage(Arc::clone(&store), book, cancel.clone())));
        let every = Duration::from_secs(cfg.leases.collect_interval_secs.max(1));
        let ttl = cfg.leases.max_lease_secs;
        tasks.push(tokio::spawn(collect_leases(Arc::clone(&store), metrics, every, ttl, cancel.clone())));
        if !cfg.bootstrap.is_empty() {
            tasks.push(tokio::spawn(keep_bootstrapped(net.handle.clone(), cancel.clone())));
        }
        let watch = watch_leaving(cfg.data_dir.clone(), Arc::clone(&store), leaving, drained.clone(), cancel.clone());
        tasks.push(tokio::spawn(watch));
        Ok(Self { net, store, cancel, drained, tasks, addrs, admin })
    }

    /// Resolves when the node has left the network: `cairn-node exit` was
    /// asked and it holds nothing any more, or its drain period ended.
    pub async fn left(&self) {
        self.drained.cancelled().await;
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> cairn_net::PeerId {
        self.net.handle.local_peer_id()
    }

    /// Stops in order: stop accepting and finish (or cancel) streams, stop
    /// the admin listener and collector, close the network, flush RocksDB.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.net.shutdown().await;
        let store = self.store;
        // Every commit was a synced WAL write: a flush that fails (a full
        // disk) loses nothing, RocksDB replays the WAL at the next start.
        if let Err(e) = tokio::task::spawn_blocking(move || store.flush()).await? {
            tracing::warn!(error = %e, "cannot flush the database at shutdown; its log is replayed at the next start");
        }
        Ok(())
    }
}

/// The usage ledger saved last; a fresh one if none was, or if it cannot
/// be read (accounting restarts; the node's data is not at stake).
async fn load_ledger(store: &Arc<ShardStore>) -> Result<Ledger, Error> {
    let s = Arc::clone(store);
    let saved = tokio::task::spawn_blocking(move || s.load_usage()).await??;
    Ok(match saved.map(|b| Ledger::from_bytes(&b)) {
        None => Ledger::default(),
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the usage ledger cannot be read; counting from zero");
            Ledger::default()
        }
    })
}

/// Every [`usage::TICK`] (and once more at shutdown): integrates what each
/// peer stores over time, adds a history slot, saves the ledger.
async fn account_usage(store: Arc<ShardStore>, book: Arc<Book>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(usage::TICK);
    loop {
        let stopping = tokio::select! {
            () = cancel.cancelled() => true,
            _ = tick.tick() => false,
        };
        let (s, b) = (Arc::clone(&store), Arc::clone(&book));
        let saved = tokio::task::spawn_blocking(move || {
            let now = crate::service::now_secs();
            let stored = s.stored_by_peer();
            let bytes = {
                let mut ledger = b.lock();
                ledger.tick(now, &stored, s.stats().used);
                ledger.to_bytes()
            };
            s.save_usage(&bytes)
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot save the usage ledger"),
            Err(e) => tracing::error!(error = %e, "the usage tick failed"),
        }
        if stopping {
            return;
        }
    }
}

/// Collects expired shards, and head records not offered again within
/// `record_ttl` seconds (the longest lease: whatever such a record names
/// has expired too), every `every`.
async fn collect_leases(
    store: Arc<ShardStore>,
    metrics: Arc<Metrics>,
    every: Duration,
    record_ttl: u64,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = crate::service::now_secs();
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || s.collect_expired(now)).await {
            Ok(Ok(n)) if n > 0 => {
                metrics.expired.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(shards = n, "collected expired shards");
            }
            Ok(Err(e)) => tracing::error!(error = %e, "lease collection failed"),
            _ => {}
        }
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || s.expire_records(now.saturating_sub(record_ttl))).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(records = n, "dropped head records nobody published again"),
            Ok(Err(e)) => tracing::error!(error = %e, "record expiry failed"),
            _ => {}
        }
    }
}

/// Follows `cairn-node exit` requests (the file in the data dir) and
/// cancels `drained` once a leaving node may stop.
async fn watch_leaving(
    data_dir: PathBuf,
    store: Arc<ShardStore>,
    leaving: Arc<Leaving>,
    drained: CancellationToken,
    cancel: CancellationToken,
) {
    loop {
        let shards = store.stats().shards;
        match leaving::read(&data_dir) {
            Ok(requested) => {
                if leaving.update(requested, shards) {
                    match requested {
                        Some(until) => tracing::warn!(until, shards, "leaving the network: no new shards accepted"),
                        None => tracing::warn!("exit taken back: accepting shards again"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the exit request"),
        }
        let now = crate::service::now_secs();
        if let Some(until) = leaving.until()
            && leaving::drained(until, now, shards)
        {
            tracing::warn!(shards_left = shards, "drained: leaving the network now");
            drained.cancel();
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(leaving::WATCH_EVERY) => {}
        }
    }
}

/// Bootstraps soon after start, then every few minutes, so the routing
/// table stays full as nodes come and go.
async fn keep_bootstrapped(net: cairn_net::NetHandle, cancel: CancellationToken) {
    let mut delay = Duration::from_millis(500);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        match net.bootstrap().await {
            Ok(()) => delay = Duration::from_secs(300),
            Err(e) => {
                tracing::debug!(error = %e, "bootstrap failed; retrying");
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
