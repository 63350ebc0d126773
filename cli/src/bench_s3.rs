//! `cairn bench s3`: a devnet, a `cairn gateway` process and an S3 client
//! (requests signed with rusty-s3, sent with hyper) in one run, against
//! `Bucket` driven directly with the same payloads. Prints PUT/GET MB/s,
//! 4 KiB PUT/GET ops/s at 1 and 16 clients, the gateway's peak RSS, and
//! `s3-ratio: R` (HTTP path / direct path, the smaller of PUT and GET).
//! With `--load`, 64 clients run mixed operations and every acknowledged
//! PUT is read back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use cairn_cli::devnet::start_scratch;
use cairn_client::{Bucket, PutOptions};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::{Rng, RngCore, SeedableRng};
use rusty_s3::actions::{DeleteObject, GetObject, PutObject};
use rusty_s3::{Credentials, S3Action, UrlStyle};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct S3Bench {
    /// Storage nodes.
    pub nodes: usize,
    /// Repetitions of each large transfer; the best counts.
    pub runs: usize,
    /// 4 KiB objects per small-object figure.
    pub small: usize,
    /// Also run 64 clients x `ops` mixed operations.
    pub load: Option<usize>,
}

const MIB: usize = 1 << 20;
const SIGN_FOR: Duration = Duration::from_secs(3600);

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// A gateway process, stopped on drop.
struct GatewayChild(Child);

impl Drop for GatewayChild {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

impl GatewayChild {
    /// Peak resident memory, bytes.
    fn peak_rss(&self) -> u64 {
        self.status("VmHWM:")
    }

    /// Resident memory now, bytes.
    fn rss(&self) -> u64 {
        self.status("VmRSS:")
    }

    fn status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

/// An S3 client of the benchmark.
#[derive(Clone)]
struct S3 {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    bucket: Arc<rusty_s3::Bucket>,
    creds: Arc<Credentials>,
}

impl S3 {
    async fn send(&self, method: hyper::Method, url: url::Url, body: Bytes) -> anyhow::Result<(u16, u64, Bytes)> {
        let req = hyper::Request::builder().method(method).uri(url.as_str()).body(Full::new(body))?;
        let resp = self.http.request(req).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut n = 0u64;
        let mut head = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame?.into_data() {
                n += d.len() as u64;
                if head.len() < 4096 {
                    head.extend_from_slice(&d[..d.len().min(4096 - head.len())]);
                }
            }
        }
        Ok((status, n, Bytes::from(head)))
    }

    async fn put(&self, key: &str, body: Bytes) -> anyhow::Result<()> {
        let url = PutObject::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        let (status, _, head) = self.send(hyper::Method::PUT, url, body).await?;
        if status != 200 {
            bail!("PUT {key}: {status} {}", String::from_utf8_lossy(&head));
        }
        Ok(())
    }

    /// Fetches `key`, returning its bytes (`keep`) or only their count.
    async fn get(&self, key: &str, keep: bool) -> anyhow::Result<(u64, Vec<u8>)> {
        let url = GetObject::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        let req = hyper::Request::builder().uri(url.as_str()).body(Full::new(Bytes::new()))?;
        let resp = self.http.request(req).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let (mut n, mut all) = (0u64, Vec::new());
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame?.into_data() {
                n += d.len() as u64;
                if keep || status != 200 {
                    all.extend_from_slice(&d);
                }
            }
        }
        if status != 200 {
            bail!("GET {key}: {status} {}", String::from_utf8_lossy(&all));
        }
        Ok((n, all))
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let url = DeleteObject::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        let (status, _, head) = self.send(hyper::Method::DELETE, url, Bytes::new()).await?;
        if status != 204 && status != 200 {
            bail!("DELETE {key}: {status} {}", String::from_utf8_lossy(&head));
        }
        Ok(())
    }
}

fn random(len: usize, rng: &mut impl RngCore) -> Bytes {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    Bytes::from(v)
}

/// Best (shortest) of `runs` timings of `f`.
async fn best<F, Fut>(runs: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut best = Duration::MAX;
    for i in 0..runs.max(1) {
        let t = Instant::now();
        f(i).await?;
        best = best.min(t.elapsed());
    }
    Ok(best)
}

/// 4 KiB operations per second at `conc` clients: (put, get).
async fn small_ops(s3: &S3, direct: &Bucket, count: usize, conc: usize, http: bool) -> anyhow::Result<(f64, f64)> {
    let data = random(4096, &mut rand::thread_rng());
    let keys: Vec<String> = (0..count).map(|i| format!("small-{conc}-{http}/{i}")).collect();
    let t = Instant::now();
    let puts = futures::stream::iter(keys.iter().map(|k| {
        let d = data.clone();
        async move {
            if http {
                s3.put(k, d).await
            } else {
                direct.put(k, std::io::Cursor::new(d), PutOptions::default()).await.map(|_| ()).map_err(Into::into)
            }
        }
    }))
    .buffer_unordered(conc)
    .collect::<Vec<_>>()
    .await;
    let put = t.elapsed();
    puts.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let t = Instant::now();
    let gets = futures::stream::iter(keys.iter().map(|k| async move {
        if http {
            s3.get(k, false).await.map(|(n, _)| n)
        } else {
            let mut sink = tokio::io::sink();
            direct.get(k, None, &mut sink).await.map(|i| i.size).map_err(Into::into)
        }
    }))
    .buffer_unordered(conc)
    .collect::<Vec<_>>()
    .await;
    let get = t.elapsed();
    for n in gets {
        if n? != 4096 {
            bail!("a 4 KiB GET returned another size");
        }
    }
    Ok((count as f64 / put.as_secs_f64(), count as f64 / get.as_secs_f64()))
}

impl S3Bench {
    /// Runs the benchmark and prints its figures.
    pub async fn run(self) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (nodes, config) = start_scratch(dir.path(), self.nodes).await?;
        let keys_file = cairn_cli::gateway::keys_path(&config, None);
        let key = cairn_s3_gateway::keys::add(&keys_file, "bench", false, None)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(&config)
            .args(["gateway", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,s3s=off")
            .stdout(Stdio::piped())
            .spawn()
            .context("start cairn gateway")?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let gw = GatewayChild(child);
        let mut lines = BufReader::new(stdout).lines();
        let endpoint = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(u) = l.strip_prefix("S3 gateway listening on ") {
                        break u.trim().to_string();
                    }
                }
                _ => bail!("the gateway exited before listening"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let client = crate::commands::connect(&config).await?;
        client.create_bucket("bench", None).await?;
        let direct = client.bucket("bench").await?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let s3 = S3 {
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            bucket: Arc::new(rusty_s3::Bucket::new(endpoint.parse()?, UrlStyle::Path, "bench", "us-east-1")?),
            creds: Arc::new(Credentials::new(key.access_key.clone(), key.secret.clone())),
        };
        let s = client.bucket_defaults();
        println!(
            "devnet: {} nodes on 127.0.0.1, code {}-of-{} (+{} extra); gateway {endpoint} (its own process)",
            self.nodes, s.k, s.n, s.extra
        );
        if cfg!(debug_assertions) {
            println!("note: this is a debug build; build with --release for real figures");
        }
        // A first small request: says what is wrong before any figure.
        s3.put("hello", Bytes::from_static(b"hello")).await.context("a first small PUT through the gateway")?;
        let mut ratios = Vec::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for size in [64 * MIB, 256 * MIB] {
            let data = random(size, &mut rng);
            let key = format!("big/{size}");
            let d = &data;
            let s3_put = best(self.runs, |_| async { s3.put(&key, d.clone()).await }).await?;
            let s3_get = best(self.runs, |_| async {
                let (n, _) = s3.get(&key, false).await?;
                if n != size as u64 {
                    bail!("GET returned {n} bytes of {size}");
                }
                Ok(())
            })
            .await?;
            let dkey = format!("direct/{size}");
            let dk = &dkey;
            let put = best(self.runs, |_| async {
                direct.put(dk, std::io::Cursor::new(d.clone()), PutOptions::default()).await?;
                Ok(())
            })
            .await?;
            let get = best(self.runs, |_| async {
                direct.get(dk, None, &mut tokio::io::sink()).await?;
                Ok(())
            })
            .await?;
            let (sp, sg, dp, dg) = (mbps(size, s3_put), mbps(size, s3_get), mbps(size, put), mbps(size, get));
            println!("{:>4} MiB  PUT  s3 {sp:7.1} MB/s  direct {dp:7.1} MB/s  ratio {:.2}", size / MIB, sp / dp);
            println!("{:>4} MiB  GET  s3 {sg:7.1} MB/s  direct {dg:7.1} MB/s  ratio {:.2}", size / MIB, sg / dg);
            ratios.push(sp / dp);
            ratios.push(sg / dg);
            s3.delete(&key).await?;
            direct.delete(&dkey).await?;
            println!("gateway RSS after {} MiB: {} MiB (peak {} MiB)", size / MIB, gw.rss() >> 20, gw.peak_rss() >> 20);
        }
        for conc in [1, 16] {
            let (sp, sg) = small_ops(&s3, &direct, self.small, conc, true).await?;
            let (dp, dg) = small_ops(&s3, &direct, self.small, conc, false).await?;
            println!(
                "4 KiB x{conc:<2} PUT  s3 {sp:7.0} ops/s  direct {dp:7.0} ops/s;  GET  s3 {sg:7.0} ops/s  direct {dg:7.0} ops/s"
            );
        }
        println!("gateway RSS after small objects: {} MiB (peak {} MiB)", gw.rss() >> 20, gw.peak_rss() >> 20);
        if let Some(ops) = self.load {
            load(&s3, ops).await?;
        }
        println!("gateway peak RSS: {} MiB", gw.peak_rss() >> 20);
        let ratio = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        println!("s3-ratio: {ratio:.2}");
        client.shutdown().await;
        drop(gw);
        drop(nodes);
        Ok(())
    }
}

/// 64 clients x `ops` mixed operations on 4 KiB-4 MiB objects; each
/// client checks every object it wrote reads back byte-exact.
async fn load(s3: &S3, ops: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    // A 1 GiB PUT (and its read-back) alongside the 64 clients.
    let big = async {
        let data = random(1 << 30, &mut rand::rngs::StdRng::seed_from_u64(99));
        s3.put("load/1GiB", data).await?;
        let (n, _) = s3.get("load/1GiB", false).await?;
        if n != 1 << 30 {
            bail!("the 1 GiB object read back {n} bytes");
        }
        s3.delete("load/1GiB").await
    };
    let clients = futures::future::join_all((0..64u64).map(|c| {
        let s3 = s3.clone();
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c);
            // Key -> seed and length of the bytes last acknowledged.
            let mut model: std::collections::BTreeMap<String, (u64, usize)> = Default::default();
            let mut errors = 0usize;
            for i in 0..ops {
                let key = format!("load/{c}/{}", rng.gen_range(0..8));
                let r: anyhow::Result<()> = match rng.gen_range(0..10) {
                    0..=3 => {
                        let len =
                            if rng.gen_bool(0.8) { rng.gen_range(4096..65536) } else { rng.gen_range(MIB..4 * MIB) };
                        let seed = (c << 32) | i as u64;
                        let data = random(len, &mut rand::rngs::StdRng::seed_from_u64(seed));
                        s3.put(&key, data).await.map(|()| {
                            model.insert(key, (seed, len));
                        })
                    }
                    4..=8 => match model.get(&key) {
                        Some(&(seed, len)) => match s3.get(&key, true).await {
                            Ok((_, got)) if got == random(len, &mut rand::rngs::StdRng::seed_from_u64(seed)) => Ok(()),
                            Ok(_) => Err(anyhow::anyhow!("{key}: read back differs")),
                            Err(e) => Err(e),
                        },
                        None => Ok(()),
                    },
                    _ => s3.delete(&key).await.map(|()| {
                        model.remove(&key);
                    }),
                };
                if let Err(e) = r {
                    errors += 1;
                    eprintln!("load: {e:#}");
                }
            }
            errors
        }
    }));
    let (big, results) = tokio::join!(big, clients);
    big.context("the 1 GiB PUT under load")?;
    let errors: usize = results.iter().sum();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "load: 64 clients x {ops} mixed ops and a 1 GiB PUT + GET in {secs:.1} s ({:.0} ops/s), {errors} errors",
        (64 * ops) as f64 / secs
    );
    if errors > 0 {
        bail!("{errors} operations failed under load");
    }
    Ok(())
}
