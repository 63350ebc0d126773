//! # cairn-tests
//!
//! End-to-end tests of Cairn and the workspace's invariants. [`TestCluster`]
//! runs N real `cairn-node` processes on loopback, each in its own temp
//! dir, with helpers to kill (SIGKILL), restart and corrupt them; every
//! node is killed when the cluster drops, so a failing test leaves nothing
//! running. No other crate may depend on this one.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod gateway;
pub mod mount;
pub mod netns;
pub mod regions;

use cairn_cli::devnet::{NodeProcess, Setup, init_node_in, start_node_via};
use cairn_client::{BucketSettings, Client, ClientConfig};
use cairn_crypto::RootSecret;

/// Deadline for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A setup command (`init`, `mb`, `gateway keys add`) with `config`, joining
/// the network itself (no agent left behind); its standard output.
pub fn cairn_setup(config: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(binary("cairn"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("CAIRN_AGENT", "off")
        .output()
        .expect("run cairn");
    assert!(out.status.success(), "cairn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A built binary of this workspace (`cairn`, `cairn-node`), found next to
/// the test executable's `deps/` directory.
///
/// `cargo test` builds a package's binaries only for that package's own
/// integration tests, so `scripts/test.sh` builds them first. A binary left
/// by an older build would test code other than the code under test, so
/// one older than any source file it was built from is refused: cargo's
/// dep-info file beside it (`<name>.d`) lists those files.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    let rebuild = "build the binaries first: `cargo build --workspace --bins` (scripts/test.sh does)";
    assert!(bin.exists(), "{} not built: {rebuild}", bin.display());
    if let Some(stale) = stale_source(&bin) {
        panic!("{} is older than {}, which it is built from: {rebuild}", bin.display(), stale.display());
    }
    bin
}

/// A source file listed in `bin`'s dep-info that changed after `bin` was
/// built, if any. No dep-info (a binary not built by cargo): nothing to check.
pub fn stale_source(bin: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok()?;
    let info = std::fs::read_to_string(bin.with_extension("d")).ok()?;
    dep_info_sources(&info)
        .into_iter()
        .find(|src| std::fs::metadata(src).and_then(|m| m.modified()).is_ok_and(|changed| changed > built))
}

/// The prerequisites of a Makefile-style dep-info line `target: a b\ c`
/// (a backslash escapes a space in a path).
pub fn dep_info_sources(info: &str) -> Vec<PathBuf> {
    let Some(line) = info.lines().next() else { return Vec::new() };
    let Some((_, deps)) = line.split_once(": ") else { return Vec::new() };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ' ' => {
                if !cur.is_empty() {
                    out.push(PathBuf::from(std::mem::take(&mut cur)));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(PathBuf::from(cur));
    }
    out
}

/// N storage nodes on 127.0.0.1. Ports are fixed at init, so restarted
/// nodes keep their addresses.
pub struct TestCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Option<NodeProcess>>,
    bootstrap: String,
    /// The command prefix that runs each node (its network namespace).
    via: Vec<Vec<String>>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster").field("dir", &self.dir.path()).field("nodes", &self.nodes.len()).finish()
    }
}

impl TestCluster {
    /// Starts `n` nodes; node 0 first, the others bootstrapping from it.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, |c| c)
    }

    /// Like [`Self::start`], with each node's config.toml passed through
    /// `edit` before its first run.
    pub fn start_with(n: usize, edit: impl Fn(String) -> String) -> Self {
        Self::start_each(n, |_, text| edit(text))
    }

    /// Like [`Self::start_with`], `edit` told which node's config it edits.
    pub fn start_each(n: usize, edit: impl Fn(usize, String) -> String) -> Self {
        Self::start_private(n, None, edit)
    }

    /// Like [`Self::start_each`], in a private network when `network_key`
    /// (a key file) is given: the nodes listen on TCP only.
    pub fn start_private(n: usize, network_key: Option<&Path>, edit: impl Fn(usize, String) -> String) -> Self {
        Self::start_all(n, network_key, &[], edit)
    }

    /// Like [`Self::start_each`], node `i` in network namespace
    /// `sites[i % sites.len()]`, listening on its address.
    pub fn start_in(n: usize, sites: &[&netns::Site], edit: impl Fn(usize, String) -> String) -> Self {
        Self::start_all(n, None, sites, edit)
    }

    fn start_all(
        n: usize,
        network_key: Option<&Path>,
        sites: &[&netns::Site],
        edit: impl Fn(usize, String) -> String,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = binary("cairn-node");
        let site = |i: usize| (!sites.is_empty()).then(|| sites[i % sites.len()]);
        let via: Vec<Vec<String>> = (0..n).map(|i| site(i).map(|s| s.exec()).unwrap_or_default()).collect();
        let start = |i: usize, d: &Path, boot: Option<&str>| {
            let listen_ip = site(i).map(|s| s.ip.as_str());
            init_node_in(&bin, d, boot, &Setup { capacity: "4GiB", network_key, listen_ip, ..Setup::default() })
                .expect("init node");
            let cfg = d.join("config.toml");
            let text = std::fs::read_to_string(&cfg).expect("config");
            std::fs::write(&cfg, edit(i, text)).expect("config");
            start_node_via(&bin, d, boot, "4GiB", &via[i]).expect("start node")
        };
        let first = start(0, &dir.path().join("nodes/0"), None);
        let bootstrap = first.addrs().into_iter().next().expect("node 0 address");
        let mut nodes = vec![Some(first)];
        for i in 1..n {
            nodes.push(Some(start(i, &dir.path().join(format!("nodes/{i}")), Some(&bootstrap))));
        }
        Self { dir, nodes, bootstrap, via }
    }

    /// A config edit that keeps every shard in a file of its own (none in
    /// the node's database), for tests that read or alter shard files.
    pub fn shards_in_files(config: String) -> String {
        let small = "small_shard_size = \"128KiB\"";
        assert!(config.contains(small), "the node config names small_shard_size");
        config.replace(small, "small_shard_size = \"0\"")
    }

    /// A config edit that puts node `i` in `regions[i % len]`.
    pub fn in_region(regions: &[&str], i: usize, config: String) -> String {
        config.replace("region = \"\"", &format!("region = \"{}\"", regions[i % regions.len()]))
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s data dir.
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("nodes/{i}"))
    }

    /// The temp dir holding everything (clients may keep caches here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `i`'s peer id, from its address file.
    pub fn peer_id(&self, i: usize) -> String {
        let addrs = std::fs::read_to_string(self.node_dir(i).join("node.addrs")).unwrap_or_default();
        addrs.lines().next().and_then(|l| l.rsplit('/').next()).unwrap_or_default().to_string()
    }

    /// The index of the node with this peer id.
    pub fn index_of(&self, peer: &str) -> Option<usize> {
        (0..self.len()).find(|&i| self.peer_id(i) == peer)
    }

    /// Bootstrap addresses: every node's first (QUIC, else TCP) address,
    /// so that a client can join while some nodes are down.
    pub fn bootstrap(&self) -> Vec<String> {
        (0..self.len())
            .filter_map(|i| {
                let addrs = std::fs::read_to_string(self.node_dir(i).join("node.addrs")).ok()?;
                let mut v: Vec<&str> = addrs.lines().filter(|l| !l.trim().is_empty()).collect();
                v.sort_by_key(|a| !a.contains("/quic-v1/"));
                v.first().map(|a| a.to_string())
            })
            .collect()
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            n.kill();
        }
    }

    /// Starts a fresh, empty node that joins through a running one, as an
    /// operator who joins the network does; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let boot = (0..i)
            .filter(|&j| self.nodes[j].is_some())
            .find_map(|j| {
                let addrs = std::fs::read_to_string(self.node_dir(j).join("node.addrs")).ok()?;
                addrs.lines().find(|l| l.contains("/quic-v1/")).map(str::to_string)
            })
            .expect("a running node to join through");
        let n = start_node_via(&binary("cairn-node"), &self.node_dir(i), Some(&boot), "4GiB", &[]).expect("add node");
        self.nodes.push(Some(n));
        self.via.push(Vec::new());
        i
    }

    /// Starts node `i` again (after [`Self::kill`] or [`Self::stop`]).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let boot = (i != 0).then(|| self.bootstrap.clone());
        let n = start_node_via(&binary("cairn-node"), &self.node_dir(i), boot.as_deref(), "4GiB", &self.via[i])
            .expect("restart");
        self.nodes[i] = Some(n);
    }

    /// Freezes node `i` (SIGSTOP): its sockets stay open and nothing
    /// answers, as with a hung or overloaded machine.
    pub fn freeze(&self, i: usize) {
        if let Some(n) = &self.nodes[i] {
            n.signal("STOP");
        }
    }

    /// Lets a frozen node run again (SIGCONT).
    pub fn thaw(&self, i: usize) {
        if let Some(n) = &self.nodes[i] {
            n.signal("CONT");
        }
    }

    /// Stops node `i` with SIGTERM.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            n.stop();
        }
    }

    /// `cairn-node exit --drain DRAIN` on node `i` (graceful exit).
    pub fn exit(&self, i: usize, drain: &str) {
        let out = std::process::Command::new(binary("cairn-node"))
            .args(["exit", "--drain", drain, "--data-dir"])
            .arg(self.node_dir(i))
            .output()
            .expect("cairn-node exit");
        assert!(out.status.success(), "exit failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Node `i`'s exit status, once its process has ended by itself.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let status = self.nodes[i].as_mut()?.exited()?;
        self.nodes[i] = None;
        Some(status)
    }

    /// A client config for this cluster, with its cache in `cache`.
    pub fn client_config(&self, cache: Option<PathBuf>) -> ClientConfig {
        ClientConfig {
            bootstrap: self.bootstrap().iter().map(|a| a.parse().expect("address")).collect(),
            cache_dir: cache,
            // Test clusters have 4 to 8 nodes and lose some: buckets made
            // by in-process clients use 4-of-6 unless a test asks for more
            // (the default 4-of-8 needs 8 nodes up; `e2e.rs` tests it, and
            // every `cairn` process a test starts uses it).
            defaults: BucketSettings { k: 4, n: 6, ..BucketSettings::default() },
            // Tests check that removed data leaves the nodes at once; no
            // other writer races them.
            gc_delay: Duration::ZERO,
            ..ClientConfig::default()
        }
    }

    /// A connected client for `root` with a fresh cache.
    pub async fn client(&self, root: &RootSecret) -> Client {
        let cache = self.dir.path().join(format!("client-cache-{:08x}", rand::random::<u32>()));
        Client::connect(root, self.client_config(Some(cache))).await.expect("client connects")
    }

    /// Every file under every node's data dir.
    pub fn node_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack: Vec<PathBuf> = (0..self.len()).map(|i| self.node_dir(i)).collect();
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() { stack.push(p) } else { out.push(p) }
            }
        }
        out
    }

    /// The path of shard `id` (hex) on node `i`.
    pub fn shard_path(&self, i: usize, id_hex: &str) -> PathBuf {
        self.node_dir(i).join("shards").join(&id_hex[..2]).join(id_hex)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn dep_info_paths_keep_escaped_spaces() {
        let info = "/t/debug/cairn: /src/a.rs /src/my\\ dir/b.rs\n\n/src/a.rs:\n";
        assert_eq!(dep_info_sources(info), vec![PathBuf::from("/src/a.rs"), PathBuf::from("/src/my dir/b.rs")]);
        assert!(dep_info_sources("").is_empty());
    }

    #[test]
    fn a_binary_older_than_a_source_is_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (bin, src) = (dir.path().join("cairn"), dir.path().join("lib.rs"));
        let set = |p: &Path, t: SystemTime| {
            let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(p).expect("open");
            f.set_modified(t).expect("set mtime");
        };
        let now = SystemTime::now();
        set(&src, now - Duration::from_secs(60));
        set(&bin, now);
        std::fs::write(bin.with_extension("d"), format!("{}: {}\n", bin.display(), src.display())).expect("dep-info");
        assert_eq!(stale_source(&bin), None);
        set(&src, now + Duration::from_secs(60));
        assert_eq!(stale_source(&bin), Some(src));
    }
}
