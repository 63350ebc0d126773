//! A `cairn gateway` process for a [`TestCluster`](crate::TestCluster):
//! a client config and an access key of its own, listening on an
//! ephemeral loopback port; killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{TestCluster, binary, cairn_setup};

/// A running gateway.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key id.
    pub key: String,
    /// Its secret.
    pub secret: String,
    /// The client config it serves.
    pub config: PathBuf,
    /// `http://ADDR/metrics`, if started with `--metrics`.
    pub metrics: Option<String>,
}

impl GatewayProcess {
    /// Makes a config (new key) in `cluster`'s dir under `name`, an access
    /// key, and starts the gateway.
    pub fn start(cluster: &TestCluster, name: &str) -> Self {
        Self::start_with(cluster, name, &[])
    }

    /// As [`GatewayProcess::start`], with more arguments for `cairn gateway`.
    pub fn start_with(cluster: &TestCluster, name: &str, extra: &[&str]) -> Self {
        let config = cluster.dir().join(name).join("config.toml");
        let mut init = vec!["init", "--no-passphrase"];
        let boot = cluster.bootstrap();
        for b in &boot {
            init.extend(["--bootstrap", b.as_str()]);
        }
        cairn_setup(&config, &init);
        let added = cairn_setup(&config, &["gateway", "keys", "add", "test"]);
        let field = |label: &str| {
            added
                .lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {label} in {added}"))
        };
        let (key, secret) = (field("access key:"), field("secret:"));
        let (child, endpoint, metrics) = spawn(&config, extra);
        Self { child, endpoint, key, secret, config, metrics }
    }

    /// A second gateway process of the same account (same config and keys).
    pub fn another(&self) -> Self {
        let (child, endpoint, metrics) = spawn(&self.config, &[]);
        Self {
            child,
            endpoint,
            key: self.key.clone(),
            secret: self.secret.clone(),
            config: self.config.clone(),
            metrics,
        }
    }
}

/// Starts `cairn gateway` on an ephemeral port; returns it, its endpoint
/// and its metrics address (if `--metrics` was given).
fn spawn(config: &Path, extra: &[&str]) -> (Child, String, Option<String>) {
    let mut child = Command::new(binary("cairn"))
        .arg("--config")
        .arg(config)
        .args(["gateway", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn,s3s=off")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the gateway");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut metrics = None;
    let endpoint = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(url) = l.strip_prefix("S3 gateway listening on ") {
                    break url.trim().to_string();
                }
            }
            _ => {
                let _ = child.kill();
                panic!("the gateway exited before listening");
            }
        }
    };
    if extra.contains(&"--metrics")
        && let Some(Ok(l)) = lines.next()
    {
        metrics = l.strip_prefix("metrics on ").map(|m| m.trim().to_string());
    }
    // Keep reading its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, endpoint, metrics)
}

impl GatewayProcess {
    /// Fetches the gateway's Prometheus metrics (started with `--metrics`).
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let url = self.metrics.as_deref().expect("started with --metrics");
        let addr = url.trim_start_matches("http://").trim_end_matches("/metrics");
        let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("metrics");
        out
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv with boto3 and the aws cli (`scripts/setup.sh` makes it).
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("CAIRN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cairn/venv"));
    assert!(
        dir.join("bin/python").exists() && dir.join("bin/aws").exists(),
        "no Python venv with boto3 and the aws cli at {}: run scripts/setup.sh (or set CAIRN_VENV)",
        dir.display()
    );
    dir
}
