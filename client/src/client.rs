//! A client: a network peer holding an account's keys, its buckets and the
//! account's bucket list.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_crypto::{AccountKeys, RootSecret};
use cairn_net::store::MemoryBackend;
use cairn_net::{Multiaddr, NetConfig, Network, PeerId};
use cairn_proto::shard::NodeStats;
use futures::StreamExt;

use crate::bucket::{Bucket, BucketSettings, now_ms};
use crate::cache::Cache;
use crate::error::Error;
use crate::formats::{self, NodeMemo};
use crate::gc::Collector;
use crate::index::{Expect, Op, Value};
use crate::pages::Pages;
use crate::pipeline::Parallelism;
use crate::placement::{NodeReport, Nodes};
use crate::policy::Placement;
use crate::renew::{self, RenewReport};
use crate::repair::{self, RepairOptions, RepairReport};
use crate::tasks::Tasks;
use crate::transfer::{Hedging, Transfer};
use crate::tree::{Tree, TreeOptions};

/// How long `connect` waits for the first storage node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that ran this long without reaching a node notes it as down.
const UNREACHABLE_AFTER: Duration = Duration::from_millis(250);
/// How long a node that could not be reached at all is passed over.
const UNREACHABLE_PENALTY: Duration = Duration::from_secs(300);
/// How long shutdown waits for background work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How a client connects and stores.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Storage nodes to join through (each ending in `/p2p/<peer id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Where the local cache lives (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Settings of buckets this client creates.
    pub defaults: BucketSettings,
    /// Lease asked for new shards, in seconds.
    pub lease_secs: u64,
    /// CPU parallelism of encoding.
    pub parallelism: Parallelism,
    /// When spare shard transfers start.
    pub hedging: Hedging,
    /// How long data that no name uses any more waits before it is deleted
    /// from the nodes: a writer that copied it from an older view of the
    /// index has this long to commit (Garage waits 10 minutes too).
    pub gc_delay: Duration,
    /// A private network's key: the client reaches only nodes that have it.
    pub network_key: Option<cairn_net::NetworkKey>,
    /// The peer identity nodes see (`None`: a new one for this run). A
    /// stable one lets nodes count this device's usage and quotas.
    pub identity: Option<cairn_net::identity::Keypair>,
    /// The process makes a few calls and ends (a CLI command): index
    /// journals are folded only when they must be (see
    /// [`crate::tree::TreeOptions::one_shot`]).
    pub one_shot: bool,
    /// How old a cached view of a bucket's index may be when an object is
    /// read ([`crate::bucket::READ_FRESHNESS`] by default). A missing key
    /// is always looked up again at the newest head; zero reads every
    /// object at the newest head, as a new process would (`cairn agent`).
    pub read_freshness: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            bootstrap: Vec::new(),
            cache_dir: None,
            defaults: BucketSettings::default(),
            lease_secs: 365 * 24 * 3600,
            parallelism: Parallelism::for_uploads(),
            hedging: Hedging::default(),
            gc_delay: Duration::from_secs(600),
            network_key: None,
            identity: None,
            one_shot: false,
            read_freshness: crate::bucket::READ_FRESHNESS,
        }
    }
}

/// A bucket as listed in the account's bucket list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketInfo {
    /// Its name.
    pub name: String,
    /// Created, milliseconds since the epoch.
    pub created_ms: u64,
    /// How it stores objects.
    pub settings: BucketSettings,
    /// Its index head was published at creation (buckets made before that
    /// rule may have none yet), so a lookup that finds none is an error.
    pub head_published: bool,
    /// Where its shards may go.
    pub placement: Placement,
}

/// One storage node as `cairn status` shows it.
#[derive(Debug)]
pub struct NodeStatus {
    /// What the client knows of it.
    pub node: NodeReport,
    /// Its answer to a status request, or why there was none.
    pub stats: Result<NodeStats, cairn_net::Error>,
    /// Set while it is leaving the network: when its drain ends (Unix
    /// seconds).
    pub leaving_until: Option<u64>,
    /// Round trip of that request.
    pub rtt: Duration,
    /// The region and zone it declares, from its signed profile.
    pub region: Option<(String, String)>,
    /// What this client's identity uses of it, as it counts.
    pub usage: Option<cairn_proto::shard::PeerUse>,
}

/// Checks a bucket name: 3–63 characters of `a-z 0-9 . -`, starting and
/// ending with a letter or digit (S3's rules, so the gateway can serve it).
pub fn check_bucket_name(name: &str) -> Result<(), Error> {
    let bad = |reason| Err(Error::BadName { name: name.chars().take(80).collect(), reason });
    if !(3..=63).contains(&name.len()) {
        return bad("a bucket name has 3 to 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return bad("a bucket name uses only a-z, 0-9, '.' and '-'");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(name.as_bytes()[0]) || !edge(name.as_bytes()[name.len() - 1]) {
        return bad("a bucket name starts and ends with a letter or digit");
    }
    Ok(())
}

/// A connected client.
pub struct Client {
    network: Option<Network>,
    account: AccountKeys,
    transfer: Arc<Transfer>,
    cache: Option<Arc<Cache>>,
    list: Tree,
    buckets: Mutex<HashMap<String, Bucket>>,
    cfg: ClientConfig,
    tasks: Tasks,
    started: Instant,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("peer", &self.transfer.net().local_peer_id()).finish_non_exhaustive()
    }
}

impl Client {
    /// Joins the network through `cfg.bootstrap` (and nodes remembered in
    /// the cache) and waits until at least one storage node answers.
    pub async fn connect(root: &RootSecret, cfg: ClientConfig) -> Result<Self, Error> {
        // The cache opens (RocksDB replays its log) while the network
        // starts dialling the configured nodes.
        let began = Instant::now();
        let opening = cfg.cache_dir.clone().map(|dir| {
            tokio::task::spawn_blocking(move || {
                let r = Cache::open_free(&dir);
                tracing::debug!(took = ?began.elapsed(), "cache opened");
                r
            })
        });
        let start = |bootstrap| {
            let mut net = NetConfig { network_key: cfg.network_key, ..NetConfig::client(bootstrap) };
            if let Some(k) = &cfg.identity {
                net.keypair = k.clone();
            }
            Network::start(net, Arc::new(MemoryBackend::new(1024))).map_err(Error::from)
        };
        let started = if cfg.bootstrap.is_empty() { None } else { Some(start(cfg.bootstrap.clone())?) };
        let cache = match opening {
            Some(task) => match task.await.map(|r| r.map(|(c, _)| c)) {
                Ok(Ok(c)) => Some(Arc::new(c)),
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "going on without the local cache");
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        let remembered: Vec<(PeerId, Vec<Multiaddr>, Option<SystemTime>)> = cache
            .as_ref()
            .map(|c| c.nodes())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(p, m)| {
                let addrs = m.addrs.iter().filter_map(|s| s.parse().ok()).collect();
                let down = m.down_until_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
                Some((PeerId::from_bytes(&p).ok()?, addrs, down))
            })
            .collect();
        let network = match started {
            Some(n) => n,
            None => {
                let bootstrap: Vec<Multiaddr> =
                    remembered.iter().flat_map(|(_, a, _)| a.iter().take(1).cloned()).collect();
                if bootstrap.is_empty() {
                    return Err(Error::NoNodes);
                }
                start(bootstrap)?
            }
        };
        let net = network.handle.clone();
        // Nodes remembered from earlier runs can be dialled at once.
        let tasks = Tasks::new();
        let nodes = Arc::new(Nodes::new(net.clone(), tasks.clone()));
        let known = remembered.len();
        for (peer, addrs, down) in remembered {
            net.add_addresses(peer, addrs.clone()).await?;
            nodes.add_remembered(peer, addrs, down);
        }
        if tokio::time::timeout(CONNECT_TIMEOUT, net.wait_connected()).await.is_err() {
            network.shutdown().await;
            return Err(Error::NoNodes);
        }
        tracing::debug!(took = ?began.elapsed(), "connected");
        // Filling the routing table can wait on dead peers; nothing needs it done.
        let boot = net.clone();
        tasks.spawn_until_shutdown(async move {
            if let Err(e) = boot.bootstrap().await {
                tracing::debug!(error = %e, "bootstrap query");
            }
        });
        // Without remembered nodes, placement needs a lookup first; with
        // them, the view is refreshed from the DHT in the background.
        if known == 0 {
            nodes.discover(rand::random()).await?;
        }
        let transfer = Arc::new(Transfer::new(net.clone(), nodes, cfg.lease_secs, cfg.hedging));
        let account = root.account();
        let signer = account.bucket_list_signer();
        let key = account.bucket_list_key();
        let pages = Pages::new(key.clone(), signer.public_key(), Arc::clone(&transfer), cache.clone());
        let list_opts = TreeOptions { one_shot: cfg.one_shot, ..TreeOptions::default() };
        let list = Tree::new(signer, key, pages, list_opts, &tasks);
        Ok(Self {
            network: Some(network),
            account,
            transfer,
            cache,
            list,
            buckets: Mutex::new(HashMap::new()),
            cfg,
            tasks,
            started: Instant::now(),
        })
    }

    /// Remembers the nodes seen, leaves the network.
    pub async fn shutdown(mut self) {
        let began = Instant::now();
        self.tasks.shutdown(SHUTDOWN_GRACE).await;
        tracing::debug!(took = ?began.elapsed(), "background tasks ended");
        self.transfer.finish().await;
        tracing::debug!(took = ?began.elapsed(), "transfers ended");
        if let Some(c) = &self.cache {
            self.note_unreachable().await;
            for n in self.transfer.nodes().report_all() {
                let memo = NodeMemo {
                    addrs: n.addrs.iter().map(ToString::to_string).collect(),
                    down_until_ms: n
                        .down_until
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64),
                };
                c.put_node(&n.peer.to_bytes(), &memo);
            }
        }
        tracing::debug!(took = ?began.elapsed(), "nodes remembered");
        if let Some(n) = self.network.take() {
            n.shutdown().await;
        }
        tracing::debug!(took = ?began.elapsed(), "network stopped");
    }

    /// Nodes this client asked but never reached (no request answered, no
    /// connection open) in a life long enough for a handshake to complete many times
    /// over are passed over for [`UNREACHABLE_PENALTY`], and the cache
    /// remembers it: the next run does not wait on them first. (A request
    /// that was dropped because others answered first never reports the
    /// node that could not answer it.)
    async fn note_unreachable(&self) {
        if self.started.elapsed() < UNREACHABLE_AFTER {
            return;
        }
        let Ok(connected) = self.transfer.net().connected_peers().await else { return };
        let nodes = self.transfer.nodes();
        for n in nodes.report_all() {
            if n.asked && n.ok == 0 && !n.penalized && !connected.contains(&n.peer) {
                nodes.pass_over(n.peer, UNREACHABLE_PENALTY);
            }
        }
    }

    /// Waits until uploads left running by earlier puts (the slow tail)
    /// have finished and their extra shards are deleted.
    pub async fn settle(&self) {
        self.tasks.settle(SHUTDOWN_GRACE).await;
        self.transfer.finish().await;
    }

    /// Shard bytes this client has received from nodes.
    pub fn bytes_fetched(&self) -> u64 {
        self.transfer.fetched()
    }

    /// Settings of buckets created without explicit ones.
    pub fn bucket_defaults(&self) -> BucketSettings {
        self.cfg.defaults
    }

    /// The storage nodes known, each asked for its stats.
    pub async fn status(&self) -> Vec<NodeStatus> {
        let nodes = self.transfer.nodes();
        let _ = nodes.discover(rand::random()).await;
        stream_all(nodes.report_all(), |node| async move {
            let t = Instant::now();
            let status = self.transfer.client(node.peer).status().await;
            let rtt = t.elapsed();
            // What it answered is news for placement: a node that answers
            // is no longer passed over (it may be back from an outage).
            nodes.report(node.peer, status.is_ok());
            let leaving_until = status.as_ref().ok().and_then(|s| s.leaving_until);
            let (region, usage) = match status.is_ok() {
                true => {
                    let c = self.transfer.client(node.peer);
                    let (profile, usage) = tokio::join!(c.profile(), c.usage());
                    (profile.ok().map(|p| (p.region, p.zone)), usage.ok())
                }
                false => (None, None),
            };
            NodeStatus { node, stats: status.map(|s| s.stats), leaving_until, rtt, region, usage }
        })
        .await
    }

    /// Looks up the nodes closest to a random key in the DHT (learning
    /// them), and says how the lookup went.
    pub async fn lookup(&self) -> Result<cairn_net::LookupStats, Error> {
        self.transfer.nodes().discover_traced(rand::random()).await
    }

    /// What the client knows of each storage node (no requests).
    pub fn nodes(&self) -> Vec<NodeReport> {
        self.transfer.nodes().report_all()
    }

    /// All buckets, by name.
    pub async fn buckets(&self) -> Result<Vec<BucketInfo>, Error> {
        let snap = self.list.snapshot(Duration::ZERO).await?;
        let all = self.list.list(&snap, "", std::ops::Bound::Unbounded, usize::MAX).await?;
        all.into_iter().map(|(name, v)| decode_bucket(name, &v)).collect()
    }

    /// Creates a bucket with the default settings (or `settings`).
    pub async fn create_bucket(&self, name: &str, settings: Option<BucketSettings>) -> Result<BucketInfo, Error> {
        self.create_bucket_placed(name, settings, Placement::default()).await
    }

    /// Creates a bucket whose shards follow `placement`.
    pub async fn create_bucket_placed(
        &self,
        name: &str,
        settings: Option<BucketSettings>,
        placement: Placement,
    ) -> Result<BucketInfo, Error> {
        check_bucket_name(name)?;
        let settings = settings.unwrap_or(self.cfg.defaults);
        settings.layout()?;
        placement.validate(settings.k, settings.n)?;
        let snap = self.list.snapshot(Duration::ZERO).await?;
        if self.list.get(&snap, name).await?.is_some() {
            return Err(Error::BucketExists(name.into()));
        }
        let info = BucketInfo { name: name.into(), created_ms: now_ms(), settings, head_published: true, placement };
        // The bucket's head first: once the bucket is listed, a lookup of
        // its head that finds nothing is an error, never an empty bucket.
        let tree = self.open_tree(name, false);
        tree.commit(Vec::new()).await?;
        match self.list.commit(vec![Op::put(name, formats::encode_bucket(&info)).expecting(Expect::Absent)]).await {
            Err(e) if matches!(e.root(), Error::Conflict { .. }) => Err(Error::BucketExists(name.into())),
            r => r.map(|_| info),
        }
    }

    /// Changes where a bucket's shards may go. New uploads follow the new
    /// rules at once; `repair` moves the shards already stored that break
    /// them (outside the regions, or over a region's cap).
    pub async fn set_placement(&self, name: &str, placement: Placement) -> Result<BucketInfo, Error> {
        let snap = self.list.snapshot(Duration::ZERO).await?;
        let Some(value) = self.list.get(&snap, name).await? else { return Err(Error::NoSuchBucket(name.into())) };
        let mut info = decode_bucket(name.into(), &value)?;
        placement.validate(info.settings.k, info.settings.n)?;
        info.placement = placement;
        let op = Op::put(name, formats::encode_bucket(&info)).expecting(crate::tree::expect_current(Some(&value)));
        self.list.commit(vec![op]).await?;
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        Ok(info)
    }

    /// Removes an empty bucket.
    pub async fn delete_bucket(&self, name: &str) -> Result<(), Error> {
        let bucket = self.bucket(name).await?;
        if !bucket.list("", None, "", 1).await?.objects.is_empty() {
            return Err(Error::BucketNotEmpty(name.into()));
        }
        // Uploads in progress go with the bucket; then no name is left to
        // use the bucket's data: collect all of it now.
        bucket.expire_uploads(0).await?;
        while bucket.collect_garbage(true).await? > 0 {}
        match self.list.commit(vec![Op::delete(name)]).await?.pop().flatten() {
            Some(_) => {
                self.buckets.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
                Ok(())
            }
            None => Err(Error::NoSuchBucket(name.into())),
        }
    }

    /// Renews the leases of everything the account references (the bucket
    /// list's pages, and each bucket's pages and data; only `only` when
    /// given) and publishes their head records again; see
    /// [`crate::renew`]. Leases with more than half of the client's lease
    /// left are not renewed again. A bucket that cannot be walked is
    /// reported in the error after the others were.
    pub async fn renew(&self, only: Option<&[String]>) -> Result<RenewReport, Error> {
        let due = now_ms() / 1000 + self.transfer.lease_secs() / 2;
        let snap = self.list.snapshot(Duration::ZERO).await?;
        let no_refs = |_: &str, _: &Value| Ok(Vec::new());
        let mut report =
            renew::renew_tree(&self.list, &snap, self.cache.as_ref(), self.transfer.lease_secs(), due, &no_refs)
                .await?;
        report.heads += u64::from(self.list.republish().await?);
        for r in self.each_bucket(only, "renewal", |b| async move { b.renew(due).await }).await? {
            report.add(&r);
        }
        Ok(report)
    }

    /// Runs `walk` on every bucket (or only `only`), each after the one
    /// before, and returns its reports; a bucket that fails does not stop
    /// the others, and the last failure is returned after all ran.
    async fn each_bucket<R, F, Fut>(&self, only: Option<&[String]>, what: &str, walk: F) -> Result<Vec<R>, Error>
    where
        F: Fn(Bucket) -> Fut,
        Fut: std::future::Future<Output = Result<R, Error>>,
    {
        let names: Vec<String> = match only {
            Some(names) => names.to_vec(),
            None => self.buckets().await?.into_iter().map(|b| b.name).collect(),
        };
        let mut out = Vec::with_capacity(names.len());
        let mut failed = None;
        for name in names {
            match self.bucket(&name).await {
                Ok(b) => match walk(b).await {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        tracing::warn!(bucket = %name, error = %e, "{what} walk failed");
                        failed = Some(e);
                    }
                },
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Repairs every bucket (or only `only`): rebuilds the segments whose
    /// healthy shards fell below the threshold, stores again the index
    /// pages with copies on nodes that are down, and publishes head records
    /// again; see [`crate::repair`]. Buckets that fail are reported in the
    /// error after the others were repaired.
    pub async fn repair(&self, only: Option<&[String]>, opts: RepairOptions) -> Result<RepairReport, Error> {
        let snap = self.list.snapshot(Duration::ZERO).await?;
        let up = repair::probe(&self.transfer, repair::page_holders(&snap).collect()).await;
        let mut report = RepairReport {
            pages: repair::repair_pages(&self.list, &|n| up.get(n).is_some_and(|h| h.healthy())).await?,
            heads: u64::from(self.list.republish().await?),
            ..RepairReport::default()
        };
        for r in self.each_bucket(only, "repair", |b| async move { b.repair(opts).await }).await? {
            report.add(&r);
        }
        Ok(report)
    }

    /// Keeps the account's data alive in the background until the handle
    /// is dropped: a repair walk every `opts.repair_every` and a renewal
    /// walk every `opts.renew_every`, both at once at the start. The walks
    /// hold the client only while they run.
    pub fn maintain(self: &Arc<Self>, opts: Maintenance) -> MaintenanceLoop {
        let me = Arc::downgrade(self);
        MaintenanceLoop(AbortOnDrop(tokio::spawn(async move {
            let mut renew_at = tokio::time::Instant::now();
            let mut repair_at = renew_at;
            loop {
                tokio::time::sleep_until(renew_at.min(repair_at)).await;
                let Some(client) = me.upgrade() else { return };
                let now = tokio::time::Instant::now();
                if now >= repair_at {
                    match client.repair(None, opts.repair).await {
                        Ok(r) if r.damaged > 0 || r.pages > 0 => tracing::info!(?r, "repaired"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "repair walk failed; retrying later"),
                    }
                    repair_at = now + opts.repair_every;
                }
                if now >= renew_at {
                    match client.renew(None).await {
                        Ok(r) if r.complete() => tracing::info!(?r, "leases renewed"),
                        Ok(r) => tracing::warn!(?r, "leases renewed, some copies were not"),
                        Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying later"),
                    }
                    renew_at = now + opts.renew_every;
                }
            }
        })))
    }

    /// Opens a bucket (handles are shared, so their writes commit together).
    pub async fn bucket(&self, name: &str) -> Result<Bucket, Error> {
        check_bucket_name(name)?;
        if let Some(b) = self.buckets.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(b.clone());
        }
        // The bucket's own head is read while the list is: a bucket that
        // exists (the common case) then costs one round trip, not two.
        let ahead = self.open_tree(name, true);
        let reading = {
            let t = ahead.clone();
            AbortOnDrop(tokio::spawn(async move { t.snapshot(Duration::ZERO).await }))
        };
        let snap = self.list.snapshot(Duration::from_secs(2)).await?;
        let found = match self.list.get(&snap, name).await? {
            Some(v) => Some(v),
            // Another device may have just made it: look again at the
            // newest head before saying it does not exist.
            None => {
                let fresh = self.list.snapshot(Duration::ZERO).await?;
                self.list.get(&fresh, name).await?
            }
        };
        let info = match found {
            Some(v) => decode_bucket(name.into(), &v)?,
            None => return Err(Error::NoSuchBucket(name.into())),
        };
        let tree = if info.head_published {
            // Its outcome is the tree's to keep (or, on failure, to redo).
            let _ = reading.finish().await;
            ahead
        } else {
            self.open_tree(name, false)
        };
        let collector = Collector::new(self.cfg.gc_delay);
        let keys = self.account.bucket(name);
        let bucket = Bucket::new(
            name.into(),
            keys,
            info.settings,
            tree,
            Arc::clone(&self.transfer),
            self.cfg.parallelism,
            collector,
            self.tasks.clone(),
        )
        .with_placement(info.placement)
        .with_freshness(self.cfg.read_freshness);
        let mut open = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        Ok(open.entry(name.into()).or_insert(bucket).clone())
    }
}

impl Client {
    /// The index tree of a bucket; `head_published`: its head record was
    /// published at creation (a lookup that finds none is an error).
    fn open_tree(&self, name: &str, head_published: bool) -> Tree {
        let keys = self.account.bucket(name);
        let pages =
            Pages::new(keys.index.clone(), keys.signer.public_key(), Arc::clone(&self.transfer), self.cache.clone());
        let opts = TreeOptions {
            retire: Some(Arc::new(crate::gc::Retirer)),
            must_exist: head_published,
            one_shot: self.cfg.one_shot,
        };
        Tree::new(keys.signer.clone(), keys.index.clone(), pages, opts, &self.tasks)
    }
}

/// A task that is aborted unless it is awaited to its end.
#[derive(Debug)]
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

/// The background work of [`Client::maintain`]; dropping it stops it.
#[derive(Debug)]
pub struct MaintenanceLoop(#[allow(dead_code)] AbortOnDrop<()>);

/// How often [`Client::maintain`] walks the account.
#[derive(Clone, Copy, Debug)]
pub struct Maintenance {
    /// Between two renewal walks (a walk skips what was renewed lately).
    pub renew_every: Duration,
    /// Between two repair walks.
    pub repair_every: Duration,
    /// How repairs run (their bandwidth budget).
    pub repair: RepairOptions,
}

impl Default for Maintenance {
    /// Renew daily, repair hourly within 50 MB/s.
    fn default() -> Self {
        Self {
            renew_every: Duration::from_secs(24 * 3600),
            repair_every: Duration::from_secs(3600),
            repair: RepairOptions { budget: 50_000_000 },
        }
    }
}

impl<T> AbortOnDrop<T> {
    async fn finish(mut self) -> Option<T> {
        (&mut self.0).await.ok()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn decode_bucket(name: String, v: &Value) -> Result<BucketInfo, Error> {
    formats::decode_bucket(name, v.live().unwrap_or_default())
}

async fn stream_all<T, O, F: std::future::Future<Output = O>>(items: Vec<T>, f: impl Fn(T) -> F) -> Vec<O> {
    futures::stream::iter(items).map(f).buffered(16).collect().await
}
