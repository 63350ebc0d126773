//! `cairn`: the command-line client.
//!
//! Argument parsing and printing only; the work lives in library crates.

mod agent;
mod bench_cli;
mod bench_durability;
mod bench_e2e;
mod bench_mount;
mod bench_node;
mod bench_placement;
mod bench_s3;
mod commands;
mod io;
mod wire;

use cairn_cli::{config, devnet, gateway, mount};

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use cairn_client::bench::PipelineBench;
use cairn_proto::layout::{DEFAULT_BLOCK_SIZE, DEFAULT_SEGMENT_SIZE, Layout};
use clap::{Parser, Subcommand};
use commands::Call;
use io::Io;

/// Cairn: a zero-knowledge, encrypted, erasure-coded, distributed object store.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about)]
struct Cli {
    /// Config file (default: $CAIRN_CONFIG, else ~/.config/cairn/config.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new key and a config. The key is the only way to your data:
    /// keep a copy of the key file somewhere safe.
    Init {
        /// Store the key unprotected (anyone who can read the file can read your data).
        #[arg(long)]
        no_passphrase: bool,
        /// A storage node to join through (repeat for several).
        #[arg(long)]
        bootstrap: Vec<String>,
        /// A private network's key file (`cairn-node keygen`): only nodes
        /// with the same key are reached.
        #[arg(long)]
        network_key: Option<PathBuf>,
    },
    /// Create a bucket.
    Mb {
        /// Its name: 3-63 characters of a-z, 0-9, '.', '-'.
        bucket: String,
        /// Shards needed to read (default from the config).
        #[arg(long)]
        k: Option<u16>,
        /// Shards stored (default from the config).
        #[arg(long)]
        n: Option<u16>,
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Change where a bucket's shards may go: new uploads follow at once,
    /// and `cairn repair` moves the shards stored outside the new rules.
    Placement {
        /// The bucket.
        bucket: String,
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Remove an empty bucket.
    Rb {
        /// Its name.
        bucket: String,
    },
    /// List your buckets.
    Buckets,
    /// Store a file (`-`: standard input) as BUCKET/KEY.
    Put {
        /// Local file or `-`.
        local: PathBuf,
        /// BUCKET/KEY.
        target: String,
        /// Content type to record.
        #[arg(long)]
        content_type: Option<String>,
        /// User metadata `NAME=VALUE` (repeat for several).
        #[arg(long = "meta", value_parser = commands::parse_meta)]
        meta: Vec<(String, String)>,
    },
    /// Fetch BUCKET/KEY into a file (`-`: standard output).
    Get {
        /// BUCKET/KEY.
        source: String,
        /// Local file or `-`.
        local: PathBuf,
        /// Only bytes START-END (inclusive, as HTTP ranges; `START-` to the end).
        #[arg(long, value_parser = commands::parse_range)]
        range: Option<(u64, Option<u64>)>,
    },
    /// Copy BUCKET/KEY to BUCKET/KEY: within a bucket no data moves.
    Cp {
        /// Source BUCKET/KEY.
        source: String,
        /// Target BUCKET/KEY.
        target: String,
    },
    /// Rename BUCKET/KEY to BUCKET/KEY: within a bucket no data moves.
    Mv {
        /// Source BUCKET/KEY.
        source: String,
        /// Target BUCKET/KEY.
        target: String,
    },
    /// List objects in BUCKET or under BUCKET/PREFIX.
    Ls {
        /// BUCKET or BUCKET/PREFIX.
        path: String,
        /// Everything below the prefix, not one level.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Remove BUCKET/KEY.
    Rm {
        /// BUCKET/KEY.
        path: String,
    },
    /// Show an object's size, segments, code and the health of each segment.
    Stat {
        /// BUCKET/KEY.
        path: String,
    },
    /// Show the storage nodes known and whether they answer.
    Status,
    /// The background process that runs object commands (put, get, ls,
    /// ...) for this config: started by the first, ended after
    /// `agent_idle` (default 5 min) without one.
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Renew the leases of everything your buckets use (or only BUCKETs),
    /// so that nodes keep it; the gateway and the mount do this daily by
    /// themselves. Prints what was renewed and what nodes no longer hold.
    Renew {
        /// Buckets to renew (default: all, and the bucket list).
        buckets: Vec<String>,
    },
    /// Rebuild the shards of segments whose holders are gone and store
    /// again index pages whose copies are (or only BUCKETs); the gateway and
    /// the mount do this hourly by themselves.
    Repair {
        /// Buckets to repair (default: all, and the bucket list).
        buckets: Vec<String>,
        /// Keep going: a walk every INTERVAL (e.g. `10m`, `1h`) until Ctrl-C.
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "1h")]
        watch: Option<String>,
        /// Most bytes per second repairs may move (fetched + stored), e.g. `50MB`; `0`: no limit.
        #[arg(long, default_value = "50MB")]
        budget: String,
    },
    /// Serve your buckets over S3 (aws cli, boto3, rclone, restic...)
    /// until Ctrl-C; `cairn gateway keys` manages its access keys.
    #[command(args_conflicts_with_subcommands = true)]
    Gateway {
        #[command(subcommand)]
        keys: Option<GatewayCommand>,
        /// Address to listen on (not loopback: needs TLS or --insecure-http).
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// TLS certificate chain (PEM).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve plain HTTP on a non-loopback address (signatures and data
        /// cross the network in the clear).
        #[arg(long)]
        insecure_http: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// Access keys file (default: gateway-keys.toml next to the config).
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
    /// Mount a bucket as a folder (until Ctrl-C, SIGTERM or
    /// `fusermount3 -u DIR`). Writes are uploaded when a file is closed or
    /// fsynced; a failed upload is an error to the program.
    Mount {
        /// The bucket.
        bucket: String,
        /// An existing empty directory.
        dir: PathBuf,
        /// Where written files wait for upload (default: mount-cache/BUCKET
        /// next to the config).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Most bytes waiting there; past it a write uploads its file first.
        #[arg(long, default_value = "10GiB", value_parser = parse_size)]
        cache_size: u64,
        /// Refuse every change.
        #[arg(long)]
        read_only: bool,
        /// Let other users use the mount (access checked by mode bits).
        #[arg(long)]
        allow_other: bool,
        /// Detach once mounted; the pid goes to --pid-file.
        #[arg(long)]
        daemon: bool,
        /// Pid file of --daemon (default: mount.pid in the cache directory).
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Run a local network of storage nodes on 127.0.0.1 until Ctrl-C.
    Devnet {
        /// Number of nodes.
        #[arg(long, default_value_t = 8)]
        nodes: usize,
        /// Directory for node data and the client config.
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        /// Capacity of each node.
        #[arg(long, default_value = "10GiB")]
        capacity: String,
        /// Address of the S3 gateway started with the nodes.
        #[arg(long, default_value = "127.0.0.1:9000")]
        s3: std::net::SocketAddr,
        /// Start no S3 gateway.
        #[arg(long)]
        no_s3: bool,
        /// Also mount the bucket `files` (made if absent) at this directory.
        #[arg(long)]
        mount: Option<PathBuf>,
        /// Give the nodes these regions, round-robin (comma-separated), e.g. eu,us,ap.
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
        /// A private network: a key in DIR/network.key that nodes and the
        /// client share; nothing without it can connect.
        #[arg(long)]
        private: bool,
    },
    /// Measure Cairn's speed on this machine.
    #[command(subcommand)]
    Bench(Bench),
}

/// Where a bucket's shards may go.
#[derive(Debug, clap::Args)]
struct PlacementArgs {
    /// Keep every shard inside these regions (comma-separated), as the
    /// nodes declare them.
    #[arg(long, value_delimiter = ',')]
    regions: Vec<String>,
    /// Place each segment over at least this many regions, no region
    /// holding more than n-k shards: losing one region loses nothing.
    #[arg(long, default_value_t = 0)]
    spread: u8,
    /// Allow two shards of a segment on one network (IP, /24, /48).
    #[arg(long)]
    no_diversity: bool,
}

impl PlacementArgs {
    fn rules(self) -> cairn_client::policy::Placement {
        cairn_client::policy::Placement { regions: self.regions, spread: self.spread, diversity: !self.no_diversity }
    }
}

#[derive(Debug, Subcommand)]
enum GatewayCommand {
    /// Manage the gateway's access keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum AgentAction {
    /// Whether an agent runs, since when, and how many commands it ran.
    Status,
    /// End the agent (and forget the key it holds) once its commands end.
    Stop,
    /// Serve (what a command that starts the agent runs).
    #[command(hide = true)]
    Serve,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an access key and print it with its secret.
    Add {
        /// A name for it.
        name: String,
        /// Only reads.
        #[arg(long)]
        read_only: bool,
        /// Only this bucket.
        #[arg(long)]
        bucket: Option<String>,
        /// Access keys file (default: gateway-keys.toml next to the config).
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
    /// List the access keys (without secrets).
    List {
        /// Access keys file (default: gateway-keys.toml next to the config).
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
    /// Revoke an access key; a running gateway refuses it at once.
    Revoke {
        /// Its name.
        name: String,
        /// Access keys file (default: gateway-keys.toml next to the config).
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Object put/get, small objects and listing on a local devnet of real
    /// nodes, next to the pipeline without network. Needs `cairn-node`
    /// next to `cairn`.
    E2e {
        /// Storage nodes.
        #[arg(long, default_value_t = 8)]
        nodes: usize,
        /// Keys in the listing test.
        #[arg(long, default_value_t = 10_000)]
        list_keys: usize,
        /// 4 KiB objects put and got.
        #[arg(long, default_value_t = 2_000)]
        small: usize,
        /// Shards needed to read (default: the default code's).
        #[arg(long)]
        k: Option<u16>,
        /// Shards stored (default: the default code's).
        #[arg(long)]
        n: Option<u16>,
        /// Start spare uploads and downloads with the others instead of
        /// when the others are late.
        #[arg(long)]
        eager: bool,
    },
    /// Encrypt + erasure-code + hash random data and back, against the
    /// primitives alone. Build with --release for meaningful figures.
    Pipeline {
        /// Bytes of random data, e.g. 256MiB.
        #[arg(long, default_value = "256MiB", value_parser = cairn_proto::units::parse_size)]
        size: u64,
        /// Data shards per segment.
        #[arg(long, default_value_t = 4)]
        k: u16,
        /// Total shards per segment.
        #[arg(long, default_value_t = 6)]
        n: u16,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Segment size, e.g. 16MiB.
        #[arg(long, default_value_t = u64::from(DEFAULT_SEGMENT_SIZE), value_parser = cairn_proto::units::parse_size)]
        segment: u64,
        /// Repetitions; the best run of each figure counts.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The S3 gateway (its own process, driven over HTTP) against `Bucket`
    /// driven directly, on a local devnet. Needs `cairn-node` next to
    /// `cairn`.
    S3 {
        /// Storage nodes.
        #[arg(long, default_value_t = 8)]
        nodes: usize,
        /// Repetitions of each large transfer; the best counts.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// 4 KiB objects per small-object figure.
        #[arg(long, default_value_t = 500)]
        small: usize,
        /// Also run 64 clients doing this many mixed operations each.
        #[arg(long)]
        load: Option<usize>,
    },
    /// A FUSE mount (in this process) against `Bucket` driven directly, on
    /// a local devnet: large sequential write and read, many 4 KiB files,
    /// `ls -lR`, and a local directory for reference. Needs /dev/fuse.
    Mount {
        /// Storage nodes.
        #[arg(long, default_value_t = 8)]
        nodes: usize,
        /// Size of the large file.
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        size: u64,
        /// Repetitions of each large transfer; the best counts.
        #[arg(long, default_value_t = 2)]
        runs: usize,
        /// 4 KiB files for the small-file figure.
        #[arg(long, default_value_t = 2000)]
        small: usize,
        /// Files for the `ls -lR` figure.
        #[arg(long, default_value_t = 10_000)]
        tree: usize,
        /// The mount's cache directory (default: beside the devnet's nodes,
        /// in a temporary directory).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// The annual chance of losing a segment under node churn with repair,
    /// as a closed form and a Monte Carlo run of the same model, for the
    /// default code and others; ends with `durability-nines: X`.
    Durability {
        /// Nodes in the network (sets the repair traffic per node).
        #[arg(long, default_value_t = 10_000)]
        nodes: u64,
        /// Share of nodes that leave per month.
        #[arg(long, default_value_t = 0.1)]
        churn: f64,
        /// Share of nodes that fail per year, on top of churn.
        #[arg(long, default_value_t = 0.02)]
        failures: f64,
        /// Time between two repair walks (`30m`, `1h`, `1d`).
        #[arg(long, default_value = "1h")]
        interval: String,
        /// Repair bandwidth budget per second.
        #[arg(long, default_value = "50MB", value_parser = parse_size)]
        budget: u64,
        /// Bytes of shards per node.
        #[arg(long, default_value = "1TB", value_parser = parse_size)]
        stored: u64,
        /// Monte Carlo episodes per code.
        #[arg(long, default_value_t = 200_000)]
        trials: u64,
    },
    /// How evenly free-space-weighted placement fills a network of nodes of
    /// mixed capacity (against placement by distance alone), and how many
    /// hops a DHT lookup takes; ends with `placement-max-mean: X`.
    Placement {
        /// Nodes simulated.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Average fill to stop at (0.7 = 70 %).
        #[arg(long, default_value_t = 0.7)]
        fill: f64,
        /// Shards per segment.
        #[arg(long, default_value_t = 8)]
        n: usize,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// What one `cairn` command costs, process start to exit, on a local
    /// devnet (put, get, ls, stat of a small object), against process start
    /// alone; then again with nodes killed. Needs `cairn-node` next to `cairn`.
    Cli {
        /// Storage nodes.
        #[arg(long, default_value_t = 8)]
        nodes: usize,
        /// Calls of each command; the median counts.
        #[arg(long, default_value_t = 21)]
        calls: usize,
        /// Nodes killed for the second half.
        #[arg(long, default_value_t = 3)]
        dead: usize,
    },
    /// Shard put/get throughput of one real cairn-node on loopback, against
    /// bare quinn streams. Needs `cairn-node` next to `cairn`.
    Node {
        /// Shards moved at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Bytes per shard, e.g. 4MiB.
        #[arg(long, default_value = "4MiB", value_parser = cairn_proto::units::parse_size)]
        shard_size: u64,
        /// Repetitions; the best run counts.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    cairn_proto::units::parse_size(s)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Connects, runs `f`, and leaves the network cleanly whatever `f` returned.
pub(crate) fn with_client<F>(config: Option<PathBuf>, f: F) -> anyhow::Result<()>
where
    F: for<'a> FnOnce(&'a cairn_client::Client) -> futures::future::BoxFuture<'a, anyhow::Result<()>>,
{
    let path = config::config_path(config);
    let rt = runtime()?;
    let result = rt.block_on(async {
        let client = commands::connect_as(&path, true).await?;
        let result = f(&client).await;
        let done = std::time::Instant::now();
        client.shutdown().await;
        tracing::debug!(took = ?done.elapsed(), "left the network");
        result
    });
    let done = std::time::Instant::now();
    drop(rt);
    tracing::debug!(took = ?done.elapsed(), "runtime stopped");
    result
}

fn init(
    config: Option<PathBuf>,
    no_passphrase: bool,
    bootstrap: Vec<String>,
    network_key: Option<PathBuf>,
) -> anyhow::Result<()> {
    let path = config::config_path(config);
    if path.exists() {
        anyhow::bail!("{} exists already; pass --config to write another", path.display());
    }
    if let Some(f) = &network_key {
        cairn_net::network_key::read(f)?;
    }
    let cfg = config::ConfigFile {
        key_file: "key".into(),
        cache_dir: "cache".into(),
        bootstrap,
        defaults: config::Defaults::default(),
        network_key_file: network_key.map(|f| f.canonicalize()).transpose()?,
        identity_file: None,
        agent_idle: None,
    };
    let key = cfg.key_path(&path);
    config::create_key(&key, no_passphrase, cairn_crypto::KdfParams::default())?;
    cfg.save(&path)?;
    println!("wrote {} and the key {}", path.display(), key.display());
    println!("Your key is the only way to your data: copy {} somewhere safe now.", key.display());
    Ok(())
}

fn keys_command(config: Option<PathBuf>, k: KeysCommand) -> anyhow::Result<()> {
    use cairn_s3_gateway::keys;
    let path = config::config_path(config);
    match k {
        KeysCommand::Add { name, read_only, bucket, keys_file } => {
            let file = gateway::keys_path(&path, keys_file);
            let key = keys::add(&file, &name, read_only, bucket)?;
            println!("access key: {}", key.access_key);
            println!("secret:     {}", key.secret);
            println!("(kept in {}; the secret is shown only here and in that file)", file.display());
        }
        KeysCommand::List { keys_file } => {
            for k in keys::load(&gateway::keys_path(&path, keys_file))? {
                let scope = k.bucket.as_deref().map_or("all buckets".to_string(), |b| format!("bucket {b}"));
                let mode = if k.read_only { "read-only" } else { "read-write" };
                println!("{:<20} {}  {mode}, {scope}", k.name, k.access_key);
            }
        }
        KeysCommand::Revoke { name, keys_file } => {
            keys::revoke(&gateway::keys_path(&path, keys_file), &name)?;
            println!("revoked {name}");
        }
    }
    Ok(())
}

async fn serve_gateway(config: &std::path::Path, opts: gateway::Serve) -> anyhow::Result<()> {
    let client = std::sync::Arc::new(commands::connect(config).await?);
    let bound = gateway::bind(std::sync::Arc::clone(&client), &opts).await?;
    if cairn_s3_gateway::keys::load(&opts.keys)?.is_empty() {
        eprintln!("note: no access keys yet; create one with `cairn gateway keys add NAME`");
    }
    println!("S3 gateway listening on {}://{}", bound.scheme, bound.addr);
    if let Some(m) = bound.metrics_addr() {
        println!("metrics on http://{m}/metrics");
    }
    let renewing = client.maintain(cairn_client::Maintenance::default());
    bound.run(gateway::stop_signal()).await;
    // Requests have finished: let the client's background work end.
    drop(renewing);
    match std::sync::Arc::try_unwrap(client) {
        Ok(c) => c.shutdown().await,
        Err(c) => c.settle().await,
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use futures::FutureExt;
    let config = cli.config;
    match cli.command {
        Command::Init { no_passphrase, bootstrap, network_key } => init(config, no_passphrase, bootstrap, network_key)?,
        Command::Mb { bucket, k, n, placement } => with_client(config, |c| {
            async move {
                let mut s = c.bucket_defaults();
                s.k = k.unwrap_or(s.k);
                s.n = n.unwrap_or(s.n);
                let placement = placement.rules();
                let text = commands::placement_text(&placement);
                c.create_bucket_placed(&bucket, Some(s), placement).await?;
                println!("created bucket {bucket} ({text})");
                Ok(())
            }
            .boxed()
        })?,
        Command::Placement { bucket, placement } => with_client(config, |c| {
            async move {
                let placement = placement.rules();
                let text = commands::placement_text(&placement);
                c.set_placement(&bucket, placement).await?;
                println!("bucket {bucket}: {text}; `cairn repair {bucket}` moves what is stored elsewhere");
                Ok(())
            }
            .boxed()
        })?,
        Command::Rb { bucket } => agent::call(config, Call::Rb { bucket })?,
        Command::Buckets => agent::call(config, Call::Buckets)?,
        Command::Put { local, target, content_type, meta } => {
            agent::call(config, Call::Put { local, target, content_type, meta })?
        }
        Command::Get { source, local, range } => agent::call(config, Call::Get { source, local, range })?,
        Command::Cp { source, target } => agent::call(config, Call::Cp { source, target, remove: false })?,
        Command::Mv { source, target } => agent::call(config, Call::Cp { source, target, remove: true })?,
        Command::Ls { path, recursive } => agent::call(config, Call::Ls { path, recursive })?,
        Command::Rm { path } => agent::call(config, Call::Rm { path })?,
        Command::Stat { path } => agent::call(config, Call::Stat { path })?,
        Command::Agent { action: AgentAction::Status } => agent::status(config)?,
        Command::Agent { action: AgentAction::Stop } => agent::stop(config)?,
        Command::Agent { action: AgentAction::Serve } => agent::serve(config)?,
        Command::Status => with_client(config, |c| {
            async move {
                let mut io = Io::local();
                let r = commands::status(c, &mut io).await;
                io.flush().await?;
                r
            }
            .boxed()
        })?,
        Command::Repair { buckets, watch, budget } => {
            let every = watch.as_deref().map(config::parse_interval).transpose()?;
            let budget = cairn_proto::units::parse_size(budget.trim_end_matches("/s")).map_err(anyhow::Error::msg)?;
            with_client(config, |c| {
                async move {
                    let mut io = Io::local();
                    let r = commands::repair(c, &mut io, &buckets, every, budget).await;
                    io.flush().await?;
                    r
                }
                .boxed()
            })?
        }
        Command::Renew { buckets } => with_client(config, |c| {
            async move {
                let mut io = Io::local();
                let r = commands::renew(c, &mut io, &buckets).await;
                io.flush().await?;
                r
            }
            .boxed()
        })?,
        Command::Devnet { nodes, dir, capacity, s3, no_s3, mount, regions, private } => {
            runtime()?.block_on(devnet::run(&dir, nodes, &capacity, regions, private, (!no_s3).then_some(s3), mount))?
        }
        Command::Mount { bucket, dir, cache_dir, cache_size, read_only, allow_other, daemon, pid_file } => {
            let path = config::config_path(config);
            let cache_dir = cache_dir.unwrap_or_else(|| mount::default_cache_dir(&path, &bucket));
            if daemon {
                let pid_file = pid_file.unwrap_or_else(|| cache_dir.join("mount.pid"));
                return mount::daemonize(&cache_dir, &pid_file);
            }
            let args = mount::MountArgs { bucket, dir, cache_dir, cache_size, read_only, allow_other };
            runtime()?.block_on(async {
                let client = std::sync::Arc::new(commands::connect(&path).await?);
                let renewing = client.maintain(cairn_client::Maintenance::default());
                let r = mount::serve(std::sync::Arc::clone(&client), &args, gateway::stop_signal()).await;
                drop(renewing);
                match std::sync::Arc::try_unwrap(client) {
                    Ok(c) => c.shutdown().await,
                    Err(c) => c.settle().await,
                }
                r
            })?
        }
        Command::Gateway { keys: Some(GatewayCommand::Keys(k)), .. } => keys_command(config, k)?,
        Command::Gateway { keys: None, listen, tls_cert, tls_key, insecure_http, metrics, keys_file } => {
            let path = config::config_path(config);
            let opts = gateway::Serve {
                listen,
                keys: gateway::keys_path(&path, keys_file),
                tls: tls_cert.zip(tls_key),
                insecure_http,
                metrics,
            };
            runtime()?.block_on(serve_gateway(&path, opts))?
        }
        Command::Bench(Bench::Pipeline { size, k, n, threads, segment, runs }) => {
            let segment_size =
                u32::try_from(segment).map_err(|_| anyhow::anyhow!("segment size {segment} is too large"))?;
            let layout = Layout { segment_size, block_size: DEFAULT_BLOCK_SIZE, k, n };
            layout.validate()?;
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            if cfg!(debug_assertions) {
                eprintln!("note: this is a debug build; build with --release for real figures");
            }
            let mut out = std::io::stdout().lock();
            PipelineBench { size, layout, threads, runs }.run(&mut out)?;
            out.flush()?;
        }
        Command::Bench(Bench::E2e { nodes, list_keys, small, k, n, eager }) => {
            let hedging = if eager { cairn_client::Hedging::Eager } else { cairn_client::Hedging::Adaptive };
            let d = cairn_client::BucketSettings::default();
            let code = (k.unwrap_or(d.k), n.unwrap_or(d.n));
            runtime()?.block_on(bench_e2e::E2eBench { nodes, list_keys, small, hedging, code }.run())?;
        }
        Command::Bench(Bench::S3 { nodes, runs, small, load }) => {
            runtime()?.block_on(bench_s3::S3Bench { nodes, runs, small, load }.run())?;
        }
        Command::Bench(Bench::Mount { nodes, size, runs, small, tree, cache_dir }) => {
            runtime()?.block_on(bench_mount::MountBench { nodes, size, runs, small, tree, cache_dir }.run())?;
        }
        Command::Bench(Bench::Placement { nodes, fill, n, seed }) => bench_placement::run(nodes, fill, n, seed),
        Command::Bench(Bench::Durability { nodes, churn, failures, interval, budget, stored, trials }) => {
            let d = cairn_client::BucketSettings::default();
            let layout = d.layout()?;
            let shard = f64::from(layout.segment(d.segment_size).shard_len());
            let model = bench_durability::Model {
                k: d.k,
                n: d.n,
                r: cairn_client::repair::threshold(d.k, d.n) as u16,
                churn,
                failures,
                interval: config::parse_interval(&interval)?,
                shard,
                budget: budget as f64,
                stored: stored as f64,
            };
            bench_durability::run(nodes, model, trials);
        }
        Command::Bench(Bench::Cli { nodes, calls, dead }) => {
            runtime()?.block_on(bench_cli::CliBench { nodes, calls, dead }.run())?;
        }
        Command::Bench(Bench::Node { concurrency, shard_size, runs }) => {
            let rt = runtime()?;
            let shard_size = usize::try_from(shard_size)?;
            rt.block_on(bench_node::NodeBench { concurrency, shard_size, runs }.run())?;
        }
    }
    Ok(())
}

/// glibc's malloc settings for long-running commands, read only at start.
const TUNABLES: &str = "glibc.malloc.mmap_threshold=1048576:glibc.malloc.arena_max=4";

/// Long-running commands (the gateway, the devnet) move multi-MiB buffers
/// all day. glibc raises its mmap threshold as such buffers are freed, so
/// later ones come from arenas that stay resident: a gateway under load
/// peaked at 510 MiB; with a fixed 1 MiB threshold and 4 arenas, 326 MiB
/// (docs/BENCHMARKS.md; mimalloc was measured too: 800 MiB). glibc reads
/// these settings only at start and setting them from Rust needs `unsafe`,
/// so such a command starts itself again (same pid) with them set.
fn tune_malloc(command: &Command) {
    use std::os::unix::process::CommandExt;
    let long = matches!(
        command,
        Command::Gateway { keys: None, .. }
            | Command::Devnet { .. }
            | Command::Mount { .. }
            | Command::Agent { action: AgentAction::Serve }
    );
    let set = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if !long || set.contains("glibc.malloc.mmap_threshold") || !cfg!(target_env = "gnu") {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let tunables = if set.is_empty() { TUNABLES.to_string() } else { format!("{set}:{TUNABLES}") };
    // Only returns if the exec failed; then run untuned.
    let _ = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env("GLIBC_TUNABLES", tunables).exec();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tune_malloc(&cli.command);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p=error,s3s=off,cairn_s3_gateway=info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing to say.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cairn: {e:#}");
            ExitCode::FAILURE
        }
    }
}
