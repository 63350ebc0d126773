//! `cairn-node`: the storage node daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cairn_storage_node::{Node, NodeConfig, ShardStore};
use clap::{Parser, Subcommand};

/// Stores encrypted shards for the Cairn network. It never sees keys, names
/// or plaintext.
#[derive(Debug, Parser)]
#[command(name = "cairn-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data dir with a commented config.toml and an identity key.
    Init(InitArgs),
    /// Run the node until SIGINT or SIGTERM.
    Run {
        /// The config file.
        #[arg(long, conflicts_with = "data_dir")]
        config: Option<PathBuf>,
        /// A data dir made by `init` (uses its config.toml).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Leave the network gracefully: the node (running, or at its next
    /// start) accepts no new shards, tells clients it is leaving so that
    /// their repairs move its shards elsewhere, keeps serving reads, and
    /// stops by itself once it holds nothing or the drain period ends.
    Exit {
        /// The node's data dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// Longest the node keeps serving while its shards move: 7d, 12h...
        #[arg(long, default_value = "7d")]
        drain: String,
        /// Take an exit request back (the node accepts shards again).
        #[arg(long)]
        cancel: bool,
    },
    /// Verify every stored shard against its id (the node must be stopped).
    Check {
        /// The data dir.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Write a new private network key to FILE (mode 0600). Give the same
    /// file to every node (`init --network-key`) and client (`cairn init
    /// --network-key`) of the network.
    Keygen {
        /// Where to write it (never replaced).
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Where the node keeps everything.
    #[arg(long)]
    data_dir: PathBuf,
    /// Peer-to-peer listen address (repeat for several). Default: QUIC and TCP on port 4001.
    #[arg(long)]
    listen: Vec<String>,
    /// Most bytes of shard data to keep, e.g. 500GiB.
    #[arg(long)]
    capacity: Option<String>,
    /// A peer to join through, ending in /p2p/<peer id> (repeat for several).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Admin HTTP address (health, metrics, dashboard).
    #[arg(long)]
    admin: Option<String>,
    /// Largest shard accepted, e.g. 64MiB.
    #[arg(long)]
    max_shard_size: Option<String>,
    /// The region this node is in, e.g. eu-west (clients place by it).
    #[arg(long)]
    region: Option<String>,
    /// The zone within the region (a site or a rack).
    #[arg(long)]
    zone: Option<String>,
    /// A private network's key file (`keygen`): only peers with the same key
    /// connect, over TCP (the default listen address is then TCP only).
    #[arg(long)]
    network_key: Option<PathBuf>,
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let InitArgs { data_dir, listen, capacity, bootstrap, admin, max_shard_size: max_shard, region, zone, network_key } =
        args;
    let path = data_dir.join("config.toml");
    anyhow::ensure!(!path.exists(), "{} already exists; this data dir is initialised", path.display());
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let mut cfg = NodeConfig::new(data_dir.clone());
    if !listen.is_empty() {
        cfg.listen = listen;
    }
    cfg.bootstrap = bootstrap;
    if let Some(c) = capacity {
        cfg.capacity = c;
    }
    if let Some(a) = admin {
        cfg.admin_listen = a;
    }
    if let Some(m) = max_shard {
        cfg.max_shard_size = m;
    }
    cfg.region = region.unwrap_or_default();
    cfg.zone = zone.unwrap_or_default();
    if let Some(f) = network_key {
        cairn_net::network_key::read(&f)?;
        cfg.network_key_file = f.canonicalize()?.display().to_string();
        cfg.listen.retain(|a| !a.contains("/quic"));
    }
    std::fs::write(&path, cfg.to_commented_toml())?;
    // Re-read to validate what was written, with the loader's messages.
    NodeConfig::load(&path)?;
    let key = cairn_storage_node::identity::load_or_create(&data_dir)?;
    println!("initialised {}", data_dir.display());
    println!("peer id: {}", key.public().to_peer_id());
    println!("start it with: cairn-node run --data-dir {}", data_dir.display());
    Ok(())
}

async fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(&config)?;
    let node = Node::start(cfg).await?;
    println!("cairn-node {} running; admin on http://{}", node.peer_id(), node.admin);
    for a in &node.addrs {
        println!("  listening on {a}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = node.left() => println!("drained: this node has left the network"),
    }
    tracing::info!("shutting down");
    node.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn exit(data_dir: PathBuf, drain: &str, cancel: bool) -> anyhow::Result<()> {
    use cairn_storage_node::leaving;
    anyhow::ensure!(
        data_dir.join("config.toml").exists(),
        "{} is not a node's data dir (no config.toml)",
        data_dir.display()
    );
    if cancel {
        if leaving::cancel(&data_dir)? {
            println!("exit taken back: the node accepts new shards again (within a few seconds if it runs)");
        } else {
            println!("this node was not leaving");
        }
        return Ok(());
    }
    let period = leaving::parse_period(drain).map_err(anyhow::Error::msg)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let until = now.saturating_add(period.as_secs());
    leaving::request(&data_dir, until)?;
    println!("the node is leaving the network (within a few seconds if it runs, else at its next start):");
    println!("  it accepts no new shards, and keeps serving the ones it holds while clients' repairs move them;");
    println!("  it stops by itself once it holds none, or in {drain} at the latest. Progress is on its dashboard.");
    println!("take it back with: cairn-node exit --cancel --data-dir {}", data_dir.display());
    Ok(())
}

fn check(data_dir: PathBuf) -> anyhow::Result<bool> {
    let cfg = NodeConfig::load(&data_dir.join("config.toml"))?;
    let capacity = cfg.capacity_bytes().map_err(anyhow::Error::msg)?;
    let (store, recovery) = ShardStore::open(&data_dir, capacity, cfg.max_shard_bytes().map_err(anyhow::Error::msg)?)?;
    let report = store.check()?;
    let stats = store.stats();
    println!("recovered: {recovery:?}");
    println!(
        "shards: {} good, {} bad; {} bytes stored, accounted {}",
        report.good,
        report.bad.len(),
        report.bytes,
        stats.used
    );
    for id in &report.bad {
        println!("bad shard {}", id.to_hex());
    }
    Ok(report.bad.is_empty() && report.bytes == stats.used)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,libp2p=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init(args),
        Command::Run { config, data_dir } => {
            let config = match (config, data_dir) {
                (Some(c), _) => c,
                (None, Some(d)) => d.join("config.toml"),
                (None, None) => {
                    eprintln!("cairn-node: give --config FILE or --data-dir DIR");
                    return ExitCode::from(2);
                }
            };
            match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt.block_on(run(config)),
                Err(e) => Err(e.into()),
            }
        }
        Command::Exit { data_dir, drain, cancel } => exit(data_dir, &drain, cancel),
        Command::Keygen { file } => cairn_net::network_key::write(&file, &cairn_net::network_key::generate())
            .map(|()| println!("wrote a new network key to {}", file.display()))
            .map_err(Into::into),
        Command::Check { data_dir } => match check(data_dir) {
            Ok(true) => Ok(()),
            Ok(false) => Err(anyhow::anyhow!("the store has bad shards or a byte count that drifted")),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
