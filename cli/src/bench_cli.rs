//! `cairn bench cli`: what one `cairn` command costs a script, process
//! start to exit, on a scratch devnet: `put`, `get`, `ls` and `stat` of a
//! small object, each run as its own process with the devnet's config
//! (and cache), next to the baseline of the same binary doing no network
//! work (`cairn --version`) in the same run. Then `--dead` nodes are
//! killed, and the same calls are timed again: the first call that meets
//! them, and the median of the calls after it. All of it twice: each call
//! joining the network itself (`CAIRN_AGENT=off`), then through `cairn
//! agent` (the default). Last, with the nodes still dead, a new device's
//! first call (its own config and an empty cache). Ends with
//! `cli-p50-ms: X` (through the agent) and `cli-p50-ms-own-process: Y`,
//! the slowest median with every node up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_cli::devnet::start_scratch;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct CliBench {
    /// Storage nodes.
    pub nodes: usize,
    /// Calls of each command; the median counts.
    pub calls: usize,
    /// Nodes killed for the second half.
    pub dead: usize,
}

/// One `cairn` command line, run against the scratch devnet.
struct Cli {
    exe: PathBuf,
    config: PathBuf,
    /// Whether object commands go through `cairn agent`.
    agent: bool,
}

impl Cli {
    /// Runs `args`; the time from spawn to exit. A failure is an error
    /// (with what the command printed).
    fn time(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let out = Command::new(&self.exe)
            .args(args)
            .env("CAIRN_CONFIG", &self.config)
            .env("RUST_LOG", "error")
            .env("CAIRN_AGENT", if self.agent { "on" } else { "off" })
            .output()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!("`cairn {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(took)
    }

    /// The median of `calls` runs of `args`, and the first run's time.
    fn median(&self, args: &[&str], calls: usize) -> anyhow::Result<(Duration, Duration)> {
        let mut times = (0..calls.max(1)).map(|_| self.time(args)).collect::<anyhow::Result<Vec<_>>>()?;
        let first = times[0];
        times.sort();
        Ok((times[times.len() / 2], first))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl CliBench {
    /// Runs the benchmark and prints its figures.
    pub async fn run(self) -> anyhow::Result<()> {
        if self.dead * 2 >= self.nodes {
            bail!("--dead {} of {} nodes leaves no majority", self.dead, self.nodes);
        }
        let dir = tempfile::tempdir()?;
        let (mut nodes, config) = start_scratch(dir.path(), self.nodes).await?;
        let mut cli = Cli { exe: std::env::current_exe()?, config, agent: false };
        let small = dir.path().join("small");
        std::fs::write(&small, vec![7u8; 4096])?;
        let back = dir.path().join("back");
        let (small, back) = (path(&small)?, path(&back)?);
        println!("devnet: {} nodes on 127.0.0.1; each call is its own process; median of {}", self.nodes, self.calls);
        cli.time(&["mb", "bench"])?;
        cli.time(&["put", small, "bench/seed"])?;
        let calls: [(&str, Vec<&str>); 4] = [
            ("put 4 KiB", vec!["put", small, "bench/obj"]),
            ("get 4 KiB", vec!["get", "bench/seed", back]),
            ("ls", vec!["ls", "bench"]),
            ("stat", vec!["stat", "bench/seed"]),
        ];
        let (start, _) = cli.median(&["--version"], self.calls)?;
        println!("{:<12} {:>8.1} ms  (process start, no network: the baseline)", "--version", ms(start));
        let mut worst = [Duration::ZERO; 2];
        for (agent, how) in [(false, "each call joins the network itself"), (true, "through `cairn agent`")] {
            cli.agent = agent;
            println!("{how}:");
            if agent {
                // Started by the first call; not counted.
                cli.time(&["ls", "bench"])?;
            }
            for (name, args) in &calls {
                let (p50, _) = cli.median(args, self.calls)?;
                worst[usize::from(agent)] = worst[usize::from(agent)].max(p50);
                println!(
                    "  {name:<12} {:>8.1} ms  ({:.1} ms over the baseline)",
                    ms(p50),
                    ms(p50.saturating_sub(start))
                );
            }
        }
        // The agent holds the cache; calls of their own would use a spare,
        // which never saw the nodes. Each mode meets the dead nodes with
        // the cache as the calls above left it.
        cli.time(&["agent", "stop"])?;
        for n in nodes.iter_mut().take(self.dead) {
            n.kill();
        }
        println!(
            "killed {} of {} nodes (SIGKILL); the first call meets them, the others find them remembered",
            self.dead, self.nodes
        );
        for (agent, how) in
            [(false, "each call joins the network itself"), (true, "through `cairn agent` (its first call starts it)")]
        {
            cli.agent = agent;
            println!("{how}:");
            for (name, args) in &calls {
                let (p50, first) = cli.median(args, self.calls)?;
                println!("  {name:<12} {:>8.1} ms  first call {:.1} ms", ms(p50), ms(first));
            }
        }
        cli.time(&["agent", "stop"])?;
        // A new device: a config of its own that names every node to join
        // through (the dead ones too) and an empty cache, so its first
        // call knows no node and must look the network up.
        let bootstrap: Vec<String> = nodes.iter().filter_map(|n| n.addrs().into_iter().next()).collect();
        let mut firsts = Vec::new();
        for device in 0..3 {
            let fresh = Cli {
                exe: cli.exe.clone(),
                config: dir.path().join(format!("device{device}/config.toml")),
                agent: false,
            };
            let mut init = vec!["init", "--no-passphrase"];
            for a in &bootstrap {
                init.extend(["--bootstrap", a.as_str()]);
            }
            fresh.time(&init)?;
            firsts.push(fresh.time(&["mb", "fresh"])?);
        }
        firsts.sort();
        println!(
            "a new device's first call (`mb`, empty cache, joining through all {} nodes): median {:.1} ms of 3",
            self.nodes,
            ms(firsts[1])
        );
        for n in &mut nodes {
            n.kill();
        }
        println!("cli-p50-ms-own-process: {:.1}", ms(worst[0]));
        println!("cli-p50-ms: {:.1}", ms(worst[1]));
        Ok(())
    }
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("temp path is not UTF-8")
}
