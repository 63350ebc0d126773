//! Real `cairn-node` processes on loopback, and a client built on `net`.
//! Every node is killed when its handle drops, so a failing test leaves
//! nothing running; data dirs are temp dirs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_net::{Multiaddr, NetConfig, Network, ShardClient, Timeouts};

/// Deadline for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One `cairn-node` child process.
pub struct NodeProc {
    pub dir: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn-node")
}

impl NodeProc {
    /// Inits and starts a node in a fresh temp dir.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, |c| c)
    }

    /// Like [`Self::start`], editing config.toml before the first run.
    pub fn start_with(args: &[&str], edit: impl FnOnce(String) -> String) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("node");
        Self::init(&dir, args);
        let cfg = dir.join("config.toml");
        let text = std::fs::read_to_string(&cfg).expect("config");
        std::fs::write(&cfg, edit(text)).expect("config");
        let mut n = Self { dir, child: None, _tmp: Some(tmp) };
        n.run();
        n
    }

    /// Inits and starts a node with its data in `dir` (which the caller
    /// cleans up).
    pub fn start_in(dir: PathBuf, args: &[&str]) -> Self {
        Self::init(&dir, args);
        let mut n = Self { dir, child: None, _tmp: None };
        n.run();
        n
    }

    /// `cairn-node init` with loopback listeners on ephemeral ports.
    pub fn init(dir: &Path, args: &[&str]) {
        let out = Command::new(bin())
            .args(["init", "--data-dir"])
            .arg(dir)
            .args([
                "--listen",
                "/ip4/127.0.0.1/udp/0/quic-v1",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--admin",
                "127.0.0.1:0",
            ])
            .args(args)
            .output()
            .expect("run cairn-node init");
        assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts (or restarts) the process and waits for its addresses.
    pub fn run(&mut self) {
        self.run_detached();
        let start = Instant::now();
        while self.addrs().is_empty() {
            assert!(start.elapsed() < DEADLINE, "node did not start; log:\n{}", self.log());
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("node exited with {status}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts (or restarts) the process without waiting for it.
    pub fn run_detached(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("node.addrs"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log")).expect("log");
        let child = Command::new(bin())
            .args(["run", "--data-dir"])
            .arg(&self.dir)
            .env("RUST_LOG", "info,libp2p_kad=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cairn-node");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// The node's addresses (with `/p2p/`), once it listens.
    pub fn addrs(&self) -> Vec<Multiaddr> {
        std::fs::read_to_string(self.dir.join("node.addrs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// The QUIC address.
    pub fn quic(&self) -> Multiaddr {
        self.addrs().into_iter().find(|a| a.to_string().contains("quic")).expect("quic address")
    }

    pub fn peer_id(&self) -> cairn_net::PeerId {
        let a = self.quic();
        a.iter()
            .find_map(|p| match p {
                cairn_net::libp2p_protocol::P2p(id) => Some(id),
                _ => None,
            })
            .expect("peer id")
    }

    pub fn admin(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.addr")).expect("admin addr")
    }

    /// SIGTERM, then waits for a clean exit; returns how long it took.
    pub fn stop(&mut self) -> Duration {
        let child = self.child.as_mut().expect("running");
        let t = Instant::now();
        let ok = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
        assert!(ok.success());
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "node exited with {status}; log:\n{}", self.log());
                break;
            }
            assert!(t.elapsed() < DEADLINE, "node did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = None;
        t.elapsed()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `within` for the process to end by itself; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Runs `cairn-node ARGS… --data-dir DIR`: (success, output).
    pub fn command(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin()).args(args).arg("--data-dir").arg(&self.dir).output().expect("cairn-node");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// `cairn-node check`: (success, output).
    pub fn check(&self) -> (bool, String) {
        let out = Command::new(bin()).args(["check", "--data-dir"]).arg(&self.dir).output().expect("check");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A client network joined through `bootstrap`.
pub fn client(bootstrap: Vec<Multiaddr>) -> Network {
    let backend = std::sync::Arc::new(cairn_net::store::MemoryBackend::new(1024));
    Network::start(NetConfig::client(bootstrap), backend).expect("client network")
}

/// A shard client for the node.
pub fn shard_client(net: &Network, node: &NodeProc) -> ShardClient {
    ShardClient::new(net.handle.clone(), node.peer_id(), Timeouts { open: Duration::from_secs(10), request: DEADLINE })
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut v);
    v
}

/// A delete token and the owner hash a put gives for it.
pub fn token(seed: u8) -> ([u8; 32], [u8; 32]) {
    let t = [seed; 32];
    (t, cairn_proto::shard::owner_of(&cairn_proto::shard::renew_token_of(&t)))
}

/// The admin listener's `/metrics` text, over a plain TCP socket (no HTTP
/// client dependency needed).
pub async fn metrics(admin: &str) -> String {
    admin_page(admin, "/metrics").await
}

/// An admin page (`/`, `/metrics`, `/health`), status line and headers included.
pub async fn admin_page(admin: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("admin");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
