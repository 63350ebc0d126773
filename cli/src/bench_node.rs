//! `cairn bench node`: one real `cairn-node` on loopback, 16 concurrent
//! 4 MiB shard puts and gets, next to the same bytes over bare quinn
//! streams in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_cli::devnet::{NodeProcess, node_binary, start_node_via};
use cairn_net::{Multiaddr, NetConfig, Network, ShardClient, Timeouts};
use cairn_proto::ShardId;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct NodeBench {
    /// Shards moved at once.
    pub concurrency: usize,
    /// Bytes per shard.
    pub shard_size: usize,
    /// Repetitions; the best run counts.
    pub runs: usize,
}

/// A node in `dir` (as the devnet starts one), and its QUIC address.
fn start_node(dir: &Path) -> anyhow::Result<(NodeProcess, Multiaddr)> {
    let node = start_node_via(&node_binary()?, dir, None, "64GiB", &[])?;
    let addr = node.addrs().into_iter().next().context("the node reported no address")?;
    Ok((node, addr.parse()?))
}

/// Peak resident memory of a process, from /proc (KiB).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn data(n: usize, len: usize, seed: u64) -> Vec<Arc<Vec<u8>>> {
    (0..n)
        .map(|i| {
            let mut v = vec![0u8; len];
            blake3::Hasher::new()
                .update(&seed.to_le_bytes())
                .update(&(i as u64).to_le_bytes())
                .finalize_xof()
                .fill(&mut v);
            Arc::new(v)
        })
        .collect()
}

fn mbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64().max(1e-9) / 1e6
}

impl NodeBench {
    /// Runs everything and prints the figures; returns the ratio.
    pub async fn run(&self) -> anyhow::Result<f64> {
        let total = self.concurrency * self.shard_size;
        println!(
            "cairn bench node: {} concurrent shards of {} KiB ({} MiB per round), best of {}",
            self.concurrency,
            self.shard_size >> 10,
            total >> 20,
            self.runs
        );
        let (quinn_up, quinn_down) = quinn_baseline(self).await?;
        println!("baseline   bare quinn upload      {quinn_up:>9.1} MB/s");
        println!("baseline   bare quinn download    {quinn_down:>9.1} MB/s");

        let tmp = tempfile::tempdir()?;
        let (node, addr) = start_node(&tmp.path().join("node"))?;
        let net =
            Network::start(NetConfig::client(vec![addr.clone()]), Arc::new(cairn_net::store::MemoryBackend::new(16)))?;
        let peer = addr
            .iter()
            .find_map(|p| if let cairn_net::libp2p_protocol::P2p(id) = p { Some(id) } else { None })
            .context("node address has no peer id")?;
        let client = ShardClient::new(net.handle.clone(), peer, Timeouts::default());
        client.stats().await.context("node does not answer")?;

        let mut best_put = Duration::MAX;
        let mut last = Vec::new();
        for run in 0..self.runs.max(1) {
            let shards = data(self.concurrency, self.shard_size, run as u64);
            let t = Instant::now();
            let puts = shards.iter().map(|s| {
                let (c, s) = (client.clone(), Arc::clone(s));
                tokio::spawn(async move { c.put(ShardId::of(&s), &s, [0; 32], 3600).await })
            });
            for r in futures::future::join_all(puts).await {
                r??;
            }
            best_put = best_put.min(t.elapsed());
            last = shards;
        }
        let put = mbps(total, best_put);
        println!("node       shard put              {put:>9.1} MB/s");

        let mut best_get = Duration::MAX;
        for _ in 0..self.runs.max(1) {
            let t = Instant::now();
            let gets = last.iter().map(|s| {
                let (c, s) = (client.clone(), Arc::clone(s));
                tokio::spawn(async move { c.get(ShardId::of(&s), s.len() as u64).await.map(|got| got == *s) })
            });
            for r in futures::future::join_all(gets).await {
                if !r?? {
                    bail!("a shard came back different");
                }
            }
            best_get = best_get.min(t.elapsed());
        }
        let get = mbps(total, best_get);
        println!("node       shard get              {get:>9.1} MB/s");
        let rss = peak_rss_kib(node.pid()).unwrap_or(0);
        println!("node       peak RSS               {:>9.1} MiB", rss as f64 / 1024.0);
        net.shutdown().await;
        drop(node);
        let ratio = put.min(get) / quinn_up;
        println!("node-ratio: {ratio:.2}");
        Ok(ratio)
    }
}

/// Upload and download MB/s of the same bytes over bare quinn streams.
async fn quinn_baseline(b: &NodeBench) -> anyhow::Result<(f64, f64)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server_cfg = quinn::ServerConfig::with_single_cert(vec![cert_der.clone()], key)?;
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse()?)?;
    let server_addr = server.local_addr()?;
    let len = b.shard_size;
    // Server: for each bi stream, read a u8 command: 0 = receive len bytes, 1 = send len bytes.
    let srv = tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let mut cmd = [0u8; 1];
                        if recv.read_exact(&mut cmd).await.is_err() {
                            return;
                        }
                        if cmd[0] == 0 {
                            let _ = recv.read_to_end(len + 1).await;
                            let _ = send.write_all(b"k").await;
                        } else {
                            let buf = vec![7u8; len];
                            let _ = send.write_all(&buf).await;
                        }
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der)?;
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(quinn::ClientConfig::with_root_certificates(Arc::new(roots))?);
    let conn = client.connect(server_addr, "localhost")?.await?;
    let shards = data(b.concurrency, len, 99);
    let total = b.concurrency * len;
    let (mut up, mut down) = (Duration::MAX, Duration::MAX);
    for _ in 0..b.runs.max(1) {
        let t = Instant::now();
        let tasks = shards.iter().map(|s| {
            let (conn, s) = (conn.clone(), Arc::clone(s));
            tokio::spawn(async move {
                let (mut send, mut recv) = conn.open_bi().await?;
                send.write_all(&[0]).await?;
                send.write_all(&s).await?;
                send.finish()?;
                recv.read_to_end(16).await?;
                anyhow::Ok(())
            })
        });
        for r in futures::future::join_all(tasks).await {
            r??;
        }
        up = up.min(t.elapsed());
        let t = Instant::now();
        let tasks = (0..b.concurrency).map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let (mut send, mut recv) = conn.open_bi().await?;
                send.write_all(&[1]).await?;
                send.finish()?;
                let got = recv.read_to_end(len).await?;
                anyhow::ensure!(got.len() == len, "short read");
                anyhow::Ok(())
            })
        });
        for r in futures::future::join_all(tasks).await {
            r??;
        }
        down = down.min(t.elapsed());
    }
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    srv.abort();
    Ok((mbps(total, up), mbps(total, down)))
}
