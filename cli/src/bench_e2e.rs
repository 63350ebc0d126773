//! `cairn bench e2e`: a devnet of real `cairn-node` processes on loopback
//! and an in-process client. Measures object put/get throughput, small
//! puts and gets per second (sequential keys, then random keys in three
//! rounds into one prefix), and listing a large bucket, next to the
//! client's own encode/decode pipeline (no network) in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_cli::config::Defaults;
use cairn_cli::devnet::start_nodes;
use cairn_client::bucket::put_bytes;
use cairn_client::{Bucket, BucketSettings, Client, ClientConfig, Hedging, Parallelism, PutOptions};
use cairn_crypto::{DataKey, ObjectCipher, RootSecret};
use cairn_proto::layout::Layout;
use futures::StreamExt;
use rand::RngCore;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct E2eBench {
    /// Storage nodes.
    pub nodes: usize,
    /// Keys in the listing test.
    pub list_keys: usize,
    /// Small objects put and got.
    pub small: usize,
    /// When spare shard transfers start.
    pub hedging: Hedging,
    /// The code of the bench bucket: (k, n).
    pub code: (u16, u16),
}

const MIB: usize = 1 << 20;

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

async fn put_get(bucket: &Bucket, size: usize) -> anyhow::Result<(f64, f64)> {
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    let data = bytes::Bytes::from(data);
    let key = format!("bench/{size}");
    let t = Instant::now();
    bucket.put(&key, std::io::Cursor::new(data.clone()), PutOptions::default()).await?;
    let put = t.elapsed();
    let mut sink = tokio::io::sink();
    let t = Instant::now();
    bucket.get(&key, None, &mut sink).await?;
    let get = t.elapsed();
    bucket.delete(&key).await?;
    Ok((mbps(size, put), mbps(size, get)))
}

/// Encode and decode of the same bytes without a network: the client's ceiling.
fn pipeline_baseline(size: usize, layout: Layout) -> anyhow::Result<(f64, f64)> {
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    let cipher = ObjectCipher::new(&DataKey::generate(), [1; 16]);
    let par = Parallelism::default();
    let mut segs = Vec::new();
    let t = Instant::now();
    cairn_client::encode_object(&data[..], &cipher, layout, par, |s| {
        segs.push((s.shards.into_iter().map(Some).collect::<Vec<_>>(), s.ids));
        Ok(())
    })?;
    let enc = t.elapsed();
    let ids: Vec<_> = segs.iter().map(|(_, ids)| ids.clone()).collect();
    let t = Instant::now();
    let mut out = std::io::sink();
    cairn_client::decode_object(&cipher, layout, size as u64, &ids, |i| Ok(segs[i as usize].0.clone()), par, &mut out)?;
    let dec = t.elapsed();
    Ok((mbps(size, enc), mbps(size, dec)))
}

/// Pseudo-random bytes without holding them: `len` bytes from a seed.
struct Noise {
    left: u64,
    state: u64,
}

impl std::io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            // xorshift64*: fast, and not compressible by anything we run.
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl E2eBench {
    /// Sequential puts, one at a time: what `cp -r`, rsync or git pay per file.
    async fn latency(&self, bucket: &Bucket) -> anyhow::Result<()> {
        for (size, count) in [(4096usize, 200usize), (MIB, 50)] {
            let data = bytes::Bytes::from(vec![9u8; size]);
            let mut times = Vec::with_capacity(count);
            for i in 0..count {
                let t = Instant::now();
                put_bytes(bucket, &format!("seq/{size}/{i}"), data.clone()).await?;
                times.push(t.elapsed());
            }
            times.sort_unstable();
            println!(
                "sequential {:>4} KiB puts ({count}): p50 {:.1} ms  p99 {:.1} ms",
                size / 1024,
                percentile(&times, 0.5),
                percentile(&times, 0.99)
            );
        }
        Ok(())
    }

    /// 4 KiB objects under random keys (as restic and other
    /// content-addressed writers name them), in three rounds into the same
    /// prefix: each round's writes fall all over the keys the earlier ones
    /// left, so each fold of the index finds few of them per leaf.
    async fn scattered(&self, bucket: &Arc<Bucket>, payload: &bytes::Bytes) {
        let mut rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            futures::stream::iter(0..self.small)
                .map(|_| {
                    let (b, p) = (Arc::clone(bucket), payload.clone());
                    async move { put_bytes(&b, &format!("scatter/{:016x}", rand::random::<u64>()), p).await }
                })
                .buffer_unordered(256)
                .for_each(|r| async move {
                    if let Err(e) = r {
                        eprintln!("scattered put failed: {e}");
                    }
                })
                .await;
            rates.push(format!("{:.0}", self.small as f64 / t.elapsed().as_secs_f64()));
        }
        println!(
            "4 KiB objects under random keys, 3 rounds of {} into one prefix: {} puts/s",
            self.small,
            rates.join(", ")
        );
    }

    /// A 1 GiB object: a 1 MiB range read against a 1 MiB object, and a
    /// multipart-style composition of 128 parts of 8 MiB.
    async fn big_object(&self, client: &Client, bucket: &Bucket) -> anyhow::Result<()> {
        const GIB: u64 = 1 << 30;
        bucket.put("big/1g", Noise { left: GIB, state: 7 }, PutOptions::default()).await?;
        bucket.put("big/1m", Noise { left: MIB as u64, state: 9 }, PutOptions::default()).await?;
        // Best of 5 each: one read of 1 MiB is a few milliseconds, and noisy.
        let mut sink = tokio::io::sink();
        let (mut small, mut ranged, mut moved) = (Duration::MAX, Duration::MAX, 0);
        for i in 0..5u64 {
            let t = Instant::now();
            bucket.get("big/1m", None, &mut sink).await?;
            small = small.min(t.elapsed());
            let before = client.bytes_fetched();
            let at = (100 + 150 * i) * MIB as u64 + 12_345;
            let t = Instant::now();
            bucket.get("big/1g", Some(at..at + MIB as u64), &mut sink).await?;
            ranged = ranged.min(t.elapsed());
            moved = moved.max(client.bytes_fetched() - before);
        }
        println!(
            "1 MiB range of a 1 GiB object: {:.1} ms, at most {:.2} MiB from the nodes; a 1 MiB object: {:.1} ms (range-ratio {:.2}, best of 5)",
            ranged.as_secs_f64() * 1000.0,
            moved as f64 / MIB as f64,
            small.as_secs_f64() * 1000.0,
            ranged.as_secs_f64() / small.as_secs_f64()
        );
        let parts: Vec<String> = (0..128).map(|i| format!("parts/{i:03}")).collect();
        for (i, p) in parts.iter().enumerate() {
            bucket.put(p, Noise { left: 8 * MIB as u64, state: i as u64 + 11 }, PutOptions::default()).await?;
        }
        let t = Instant::now();
        let whole = bucket.compose("big/composed", &parts, PutOptions::default(), true).await?;
        println!(
            "compose 128 parts of 8 MiB into {} MiB: {:.1} ms (index only)",
            whole.size / MIB as u64,
            t.elapsed().as_secs_f64() * 1000.0
        );
        for k in ["big/1g", "big/1m", "big/composed"] {
            bucket.delete(k).await?;
        }
        Ok(())
    }

    /// Runs everything and prints a line per figure.
    pub async fn run(&self) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (d, n) = (dir.path().to_path_buf(), self.nodes);
        let nodes = tokio::task::spawn_blocking(move || start_nodes(&d, n, "64GiB")).await??;
        let bootstrap = nodes
            .iter()
            .filter_map(|n| n.addrs().into_iter().next())
            .map(|a| a.parse())
            .collect::<Result<Vec<_>, _>>()?;
        let d = Defaults::default();
        let (k, n) = self.code;
        let settings = BucketSettings { k, n, extra: d.extra, ..BucketSettings::default() };
        let cfg = ClientConfig {
            bootstrap,
            cache_dir: Some(dir.path().join("cache")),
            defaults: settings,
            hedging: self.hedging,
            ..ClientConfig::default()
        };
        let root = RootSecret::generate();
        let client = Client::connect(&root, cfg.clone()).await.context("connect")?;
        client.create_bucket("bench", None).await?;
        let bucket = client.bucket("bench").await?;
        println!(
            "devnet: {} nodes on 127.0.0.1, code {}-of-{} (+{} extra), spares {:?}, one client",
            self.nodes, settings.k, settings.n, settings.extra, self.hedging
        );
        if cfg!(debug_assertions) {
            println!("note: this is a debug build; build with --release for real figures");
        }
        let (enc, dec) = pipeline_baseline(256 * MIB, settings.layout()?)?;
        println!("baseline (no network) 256 MiB: encode {enc:.0} MB/s, decode {dec:.0} MB/s");
        let mut last = (0.0, 0.0);
        for size in [MIB, 64 * MIB, 256 * MIB] {
            let (p, g) = put_get(&bucket, size).await?;
            println!("object {:>4} MiB: put {p:7.1} MB/s  get {g:7.1} MB/s", size / MIB);
            last = (p, g);
        }
        println!("e2e-ratio: put/encode {:.2}  get/decode {:.2}", last.0 / enc, last.1 / dec);
        self.latency(&bucket).await?;
        self.big_object(&client, &bucket).await?;
        // Small objects: many writers at once, committed in groups.
        let payload = bytes::Bytes::from(vec![7u8; 4096]);
        let t = Instant::now();
        let bucket = Arc::new(bucket);
        futures::stream::iter(0..self.small)
            .map(|i| {
                let (b, p) = (Arc::clone(&bucket), payload.clone());
                async move { put_bytes(&b, &format!("small/{i:06}"), p).await }
            })
            .buffer_unordered(256)
            .for_each(|r| async move {
                if let Err(e) = r {
                    eprintln!("small put failed: {e}");
                }
            })
            .await;
        let puts = self.small as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        futures::stream::iter(0..self.small)
            .map(|i| {
                let b = Arc::clone(&bucket);
                async move {
                    let mut out = Vec::new();
                    b.get(&format!("small/{i:06}"), None, &mut out).await.map(|_| out.len())
                }
            })
            .buffer_unordered(64)
            .for_each(|r| async move {
                if let Err(e) = r {
                    eprintln!("small get failed: {e}");
                }
            })
            .await;
        let gets = self.small as f64 / t.elapsed().as_secs_f64();
        println!("4 KiB objects ({}): {puts:.0} puts/s  {gets:.0} gets/s", self.small);
        self.scattered(&bucket, &payload).await;
        // Listing: fill a bucket, then list it from a fresh client with no cache.
        client.create_bucket("listing", None).await?;
        let lb = Arc::new(client.bucket("listing").await?);
        let t = Instant::now();
        futures::stream::iter(0..self.list_keys)
            .map(|i| {
                let b = Arc::clone(&lb);
                async move { put_bytes(&b, &format!("dir{}/key-{i:06}", i % 10), vec![1u8; 100]).await }
            })
            .buffer_unordered(512)
            .for_each(|r| async move {
                if let Err(e) = r {
                    eprintln!("listing put failed: {e}");
                }
            })
            .await;
        let fill = t.elapsed();
        let fresh = Client::connect(&root, ClientConfig { cache_dir: None, ..cfg }).await?;
        let fb = fresh.bucket("listing").await?;
        let t = Instant::now();
        let listed = fb.list("", None, "", usize::MAX).await?.objects.len();
        let cold = t.elapsed();
        let t = Instant::now();
        let again = lb.list("", None, "", usize::MAX).await?.objects.len();
        let warm = t.elapsed();
        println!(
            "list {listed} keys: {:.0} ms from a fresh client, {:.0} ms with a warm cache ({again} keys; filled in {:.1} s)",
            cold.as_secs_f64() * 1000.0,
            warm.as_secs_f64() * 1000.0,
            fill.as_secs_f64()
        );
        fresh.shutdown().await;
        client.shutdown().await;
        drop(nodes);
        Ok(())
    }
}
