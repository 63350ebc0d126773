//! `cairn devnet`: a local network of `cairn-node` processes on 127.0.0.1
//! and a client config to use it, until Ctrl-C.
//!
//! Ports are chosen on the first run and kept in each node's config, so a
//! devnet restarted on the same directory comes back with its data and the
//! same addresses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_crypto::KdfParams;

use crate::config::{ConfigFile, Defaults, create_key};

/// How long a node may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The bucket `cairn devnet --mount` mounts.
pub const MOUNT_BUCKET: &str = "files";
/// How long a node gets to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `cairn-node` next to this executable.
pub fn node_binary() -> anyhow::Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("cairn-node");
    if !bin.exists() {
        bail!("{} not found; build it with `cargo build --release -p cairn-storage-node`", bin.display());
    }
    Ok(bin)
}

/// A running node process; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    /// Its data directory.
    pub dir: PathBuf,
    child: Child,
}

impl NodeProcess {
    /// The node's peer addresses (each ending in `/p2p/<id>`).
    pub fn addrs(&self) -> Vec<String> {
        read_addrs(&self.dir)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The admin listener, `ip:port`.
    pub fn admin(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.addr")).unwrap_or_default().trim().to_string()
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` (a name such as `STOP` or `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, wait, then SIGKILL.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        self.signal("TERM");
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if self.exited().is_some() {
                let _ = std::fs::remove_file(self.dir.join("pid"));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("pid"));
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The addresses in a node's `node.addrs`, QUIC first (clients dial the first).
fn read_addrs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(dir.join("node.addrs"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    v.sort_by_key(|a| !a.contains("/quic-v1/"));
    v
}

/// A port that is free now and outside the kernel's ephemeral range, so
/// that no outgoing connection or `:0` bind takes it while a node that
/// keeps it across restarts is down. Falls back to a kernel-chosen port
/// when the ephemeral range leaves no room below it.
fn free_port(udp: bool) -> anyhow::Result<u16> {
    use rand::Rng;
    let bind = |port: u16| -> std::io::Result<u16> {
        Ok(if udp {
            std::net::UdpSocket::bind(("127.0.0.1", port))?.local_addr()?.port()
        } else {
            std::net::TcpListener::bind(("127.0.0.1", port))?.local_addr()?.port()
        })
    };
    let low = ephemeral_low();
    if low > 12_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            if let Ok(p) = bind(rng.gen_range(10_000..low)) {
                return Ok(p);
            }
        }
    }
    Ok(bind(0)?)
}

/// The first port of the kernel's ephemeral range (Linux's default 32768
/// where it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The last lines of a node's log, for an error that says why it stopped.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Writes a node's config in `dir` (loopback listeners on free ports),
/// unless it has one: a node keeps its ports across restarts.
pub fn init_node(bin: &Path, dir: &Path, bootstrap: Option<&str>, capacity: &str) -> anyhow::Result<()> {
    init_node_in(bin, dir, bootstrap, &Setup { capacity, ..Setup::default() })
}

/// What a new devnet node is given beyond its ports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Setup<'a> {
    /// Its capacity (`4GiB`).
    pub capacity: &'a str,
    /// Its region.
    pub region: Option<&'a str>,
    /// A private network's key file (then it listens on TCP only).
    pub network_key: Option<&'a Path>,
    /// The address it listens on, peer-to-peer and admin (default 127.0.0.1).
    pub listen_ip: Option<&'a str>,
}

/// [`init_node`] with a [`Setup`].
pub fn init_node_in(bin: &Path, dir: &Path, bootstrap: Option<&str>, setup: &Setup<'_>) -> anyhow::Result<()> {
    if dir.join("config.toml").exists() {
        return Ok(());
    }
    let ip = setup.listen_ip.unwrap_or("127.0.0.1");
    let quic = format!("/ip4/{ip}/udp/{}/quic-v1", free_port(true)?);
    let tcp = format!("/ip4/{ip}/tcp/{}", free_port(false)?);
    let admin = format!("{ip}:0");
    let mut cmd = Command::new(bin);
    cmd.args(["init", "--data-dir"]).arg(dir);
    if setup.network_key.is_none() {
        cmd.args(["--listen", &quic]);
    }
    cmd.args(["--listen", &tcp, "--admin", &admin, "--capacity", setup.capacity]);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    if let Some(r) = setup.region {
        cmd.args(["--region", r]);
    }
    if let Some(k) = setup.network_key {
        cmd.arg("--network-key").arg(k);
    }
    let out = cmd.output().context("cannot run cairn-node init")?;
    if !out.status.success() {
        bail!("cairn-node init failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Starts the node in `dir`, initializing it first if it has no config.
pub fn start_node(bin: &Path, dir: &Path, bootstrap: Option<&str>, capacity: &str) -> anyhow::Result<NodeProcess> {
    start_node_via(bin, dir, bootstrap, capacity, &[])
}

/// [`start_node`] run through the command prefix `via` (`ip netns exec
/// NAME`: a node in a network namespace), which must exec the node so
/// that its pid is the node's.
pub fn start_node_via(
    bin: &Path,
    dir: &Path,
    bootstrap: Option<&str>,
    capacity: &str,
    via: &[String],
) -> anyhow::Result<NodeProcess> {
    init_node(bin, dir, bootstrap, capacity)?;
    let _ = std::fs::remove_file(dir.join("node.addrs"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("node.log"))?;
    let mut cmd = match via.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .args(["run", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,libp2p_kad=error".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start cairn-node")?;
    std::fs::write(dir.join("pid"), format!("{}\n", child.id()))?;
    let mut node = NodeProcess { dir: dir.to_path_buf(), child };
    let start = Instant::now();
    while node.addrs().is_empty() {
        if let Some(status) = node.exited() {
            bail!(
                "cairn-node in {} exited ({status}); the end of {}/node.log:\n{}",
                dir.display(),
                dir.display(),
                log_tail(dir)
            );
        }
        if start.elapsed() > START_TIMEOUT {
            bail!("cairn-node in {} did not start within 30 s; see its node.log", dir.display());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(node)
}

/// Starts `count` nodes under `dir/nodes/<i>`, node 0 first and the others
/// bootstrapping from it.
pub fn start_nodes(dir: &Path, count: usize, capacity: &str) -> anyhow::Result<Vec<NodeProcess>> {
    start_nodes_in(dir, count, capacity, &[], None)
}

/// [`start_nodes`], giving new nodes the `regions` round-robin, and a
/// private network's key.
pub fn start_nodes_in(
    dir: &Path,
    count: usize,
    capacity: &str,
    regions: &[String],
    network_key: Option<&Path>,
) -> anyhow::Result<Vec<NodeProcess>> {
    if count == 0 {
        bail!("a devnet needs at least one node");
    }
    let bin = node_binary()?;
    let setup = |i: usize| Setup {
        capacity,
        region: (!regions.is_empty()).then(|| regions[i % regions.len()].as_str()),
        network_key,
        listen_ip: None,
    };
    let d0 = dir.join("nodes").join("0");
    init_node_in(&bin, &d0, None, &setup(0))?;
    let first = start_node(&bin, &d0, None, capacity)?;
    let boot = first.addrs().into_iter().next().context("node 0 reported no address")?;
    let mut nodes = vec![first];
    for i in 1..count {
        let d = dir.join("nodes").join(i.to_string());
        init_node_in(&bin, &d, Some(&boot), &setup(i))?;
        nodes.push(start_node(&bin, &d, Some(&boot), capacity)?);
    }
    Ok(nodes)
}

/// Writes `dir/client.toml` and a key without a passphrase, unless they exist.
pub fn write_client_config(dir: &Path, nodes: &[NodeProcess], kdf: KdfParams) -> anyhow::Result<PathBuf> {
    write_client_config_in(dir, nodes, kdf, None)
}

/// [`write_client_config`] for a private network.
pub fn write_client_config_in(
    dir: &Path,
    nodes: &[NodeProcess],
    kdf: KdfParams,
    network_key: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("client.toml");
    let bootstrap: Vec<String> = nodes.iter().filter_map(|n| n.addrs().into_iter().next()).collect();
    let cfg = match ConfigFile::load(&path) {
        Ok(mut c) => {
            c.bootstrap = bootstrap;
            c
        }
        Err(_) => ConfigFile {
            key_file: "client.key".into(),
            cache_dir: "client-cache".into(),
            bootstrap,
            defaults: Defaults::default(),
            network_key_file: network_key.map(Path::to_path_buf),
            identity_file: None,
            agent_idle: None,
        },
    };
    let key = cfg.key_path(&path);
    if !key.exists() {
        create_key(&key, true, kdf)?;
    }
    cfg.save(&path)?;
    Ok(path)
}

/// A throwaway network for a benchmark: `count` nodes with room to spare
/// under `dir`, and a client config for them (with a fast key derivation:
/// the key dies with the directory).
pub async fn start_scratch(dir: &Path, count: usize) -> anyhow::Result<(Vec<NodeProcess>, PathBuf)> {
    let d = dir.to_path_buf();
    let nodes = tokio::task::spawn_blocking(move || start_nodes(&d, count, "64GiB")).await??;
    let config = write_client_config(dir, &nodes, KdfParams { m_cost: 8, t_cost: 1, p_cost: 1 })?;
    Ok((nodes, config))
}

/// `cairn devnet`: runs until Ctrl-C or SIGTERM.
pub async fn run(
    dir: &Path,
    count: usize,
    capacity: &str,
    regions: Vec<String>,
    private: bool,
    s3: Option<std::net::SocketAddr>,
    mount: Option<PathBuf>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let existing = std::fs::read_to_string(dir.join("nodes/0/config.toml")).ok();
    if let Some(cfg) = &existing {
        let was_private = !cfg.contains("network_key_file = \"\"");
        if was_private != private {
            bail!(
                "{} holds a {} devnet; run {} --private, or use another --dir",
                dir.display(),
                if was_private { "private" } else { "public" },
                if was_private { "with" } else { "without" }
            );
        }
        if !regions.is_empty() {
            eprintln!("note: the nodes in {} keep the regions they were made with", dir.display());
        }
    }
    let key = private.then(|| dir.join("network.key"));
    if let Some(k) = &key
        && !k.exists()
    {
        cairn_net::network_key::write(k, &cairn_net::network_key::generate())?;
    }
    let (d, c, r, k) = (dir.clone(), capacity.to_string(), regions.clone(), key.clone());
    let mut nodes = tokio::task::spawn_blocking(move || start_nodes_in(&d, count, &c, &r, k.as_deref())).await??;
    let config = write_client_config_in(&dir, &nodes, KdfParams::default(), key.as_deref())?;
    println!("Cairn devnet: {count} storage nodes on 127.0.0.1, data in {}/nodes", dir.display());
    if let Some(k) = &key {
        println!("  a private network: only peers with the key {} can connect (over TCP)", k.display());
    }
    for (i, n) in nodes.iter().enumerate() {
        let region =
            if regions.is_empty() { String::new() } else { format!("  region {}", regions[i % regions.len()]) };
        println!(
            "  node {i}: {}  (dashboard http://{}){region}",
            n.addrs().first().map_or("", String::as_str),
            n.admin()
        );
    }
    println!();
    println!("Use it from another terminal:");
    println!("  export CAIRN_CONFIG={}", config.display());
    println!("  cairn mb photos");
    if regions.len() >= 2 {
        println!("  cairn mb eu-photos --regions {}        # every shard inside one region", regions[0]);
        println!("  cairn mb spread --spread {}   # survives the loss of any one region", regions.len().min(3));
    }
    println!("  cairn put ./some-file photos/some-file");
    println!("  cairn ls photos");
    println!("  cairn get photos/some-file ./copy");
    println!("  cairn status");
    println!();
    // One client serves the gateway and the mount (a client's cache is
    // one process's).
    let client = if s3.is_some() || mount.is_some() {
        let file = ConfigFile::load(&config)?;
        let root = crate::config::open_key(&file.key_path(&config))?;
        Some(std::sync::Arc::new(cairn_client::Client::connect(&root, file.client_config(&config)?).await?))
    } else {
        None
    };
    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let stopped = |tx: &tokio::sync::watch::Sender<bool>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut served = Vec::new();
    if let (Some(addr), Some(client)) = (s3, &client) {
        let bound = start_gateway(&config, std::sync::Arc::clone(client), addr).await?;
        served.push(tokio::spawn(bound.run(stopped(&stop_tx))));
    }
    if let (Some(at), Some(client)) = (mount, &client) {
        if let Err(cairn_client::Error::NoSuchBucket(_)) = client.bucket(MOUNT_BUCKET).await {
            client.create_bucket(MOUNT_BUCKET, None).await?;
        }
        std::fs::create_dir_all(&at)?;
        let args = crate::mount::MountArgs {
            bucket: MOUNT_BUCKET.into(),
            dir: at.clone(),
            cache_dir: crate::mount::default_cache_dir(&config, MOUNT_BUCKET),
            cache_size: 10 << 30,
            read_only: false,
            allow_other: false,
        };
        let (c, stop) = (std::sync::Arc::clone(client), stopped(&stop_tx));
        served.push(tokio::spawn(async move {
            if let Err(e) = crate::mount::serve(c, &args, stop).await {
                eprintln!("mount: {e:#}");
            }
        }));
        println!("  bucket {MOUNT_BUCKET} is mounted at {} (also `cairn ls {MOUNT_BUCKET}`)", at.display());
        println!();
    }
    println!("Ctrl-C stops the nodes; run the same command again to resume with the same data.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for (i, n) in nodes.iter_mut().enumerate() {
                    if let Some(status) = n.exited() {
                        eprintln!("node {i} exited ({status}); see {}/node.log", n.dir.display());
                    }
                }
                nodes.retain_mut(|n| n.exited().is_none());
                if nodes.is_empty() {
                    bail!("every node has exited");
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    for task in served {
        let _ = task.await;
    }
    if let Some(c) = client.and_then(|c| std::sync::Arc::try_unwrap(c).ok()) {
        c.shutdown().await;
    }
    println!("stopping {} nodes", nodes.len());
    tokio::task::spawn_blocking(move || {
        for n in &mut nodes {
            n.stop();
        }
    })
    .await?;
    Ok(())
}

/// Starts the devnet's S3 gateway (on `addr`, or any free port if that is
/// taken) with a key, and prints how to use it.
async fn start_gateway(
    config: &Path,
    client: std::sync::Arc<cairn_client::Client>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<crate::gateway::Bound> {
    let keys = crate::gateway::keys_path(config, None);
    let key = crate::gateway::ensure_key(&keys, "devnet")?;
    let mut opts = crate::gateway::Serve { listen: addr, keys, tls: None, insecure_http: false, metrics: None };
    let bound = match crate::gateway::bind(std::sync::Arc::clone(&client), &opts).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("note: S3 gateway cannot use {addr} ({e:#}); taking a free port");
            opts.listen = std::net::SocketAddr::new(addr.ip(), 0);
            crate::gateway::bind(std::sync::Arc::clone(&client), &opts).await?
        }
    };
    let endpoint = format!("http://{}", bound.addr);
    println!();
    println!("S3 gateway: {endpoint}");
    println!("  access key: {}", key.access_key);
    println!("  secret:     {}", key.secret);
    println!(
        "  export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION=us-east-1",
        key.access_key, key.secret
    );
    println!("  aws --endpoint-url {endpoint} s3 ls");
    println!();
    Ok(bound)
}
