//! `cairn`: the command-line client.
//!
//! Argument parsing and printing only; the work lives in library crates.

mod bench_node;

use std::io::Write;
use std::process::ExitCode;

use cairn_client::bench::PipelineBench;
use cairn_proto::layout::{DEFAULT_BLOCK_SIZE, DEFAULT_SEGMENT_SIZE, Layout};
use clap::{Parser, Subcommand};

/// Cairn: a zero-knowledge, encrypted, erasure-coded, distributed object store.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure Cairn's speed on this machine.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Debug, Subcommand)]
enum Bench {
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
        Command::Bench(Bench::Node { concurrency, shard_size, runs }) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let shard_size = usize::try_from(shard_size)?;
            rt.block_on(bench_node::NodeBench { concurrency, shard_size, runs }.run())?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e:#}");
            ExitCode::FAILURE
        }
    }
}
