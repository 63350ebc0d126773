//! `cairn bench mount`: a devnet and a FUSE mount of one of its buckets in
//! this process, against `Bucket` driven directly with the same bytes in
//! the same run: sequential write and read of a large file, 4 KiB files
//! created by 16 writers at once (a directory each, then random names in
//! one directory, three rounds), `ls -lR` of 10,000 files, and the same
//! on a local directory for reference. Ends with `mount-ratio: R` (mount /
//! direct, the smaller of write and read).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_cli::devnet::start_scratch;
use cairn_client::{Bucket, PutOptions};
use futures::StreamExt;
use rand::{RngCore, SeedableRng};

/// What to measure.
#[derive(Debug, Clone)]
pub struct MountBench {
    /// Storage nodes.
    pub nodes: usize,
    /// Bytes of the large file.
    pub size: u64,
    /// Repetitions of each large transfer; the best counts.
    pub runs: usize,
    /// 4 KiB files for the small-file figure.
    pub small: usize,
    /// Files for the `ls -lR` figure.
    pub tree: usize,
    /// The mount's cache directory (default: beside the devnet's nodes).
    pub cache_dir: Option<PathBuf>,
}

const MIB: usize = 1 << 20;

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// `size` bytes of a repeating 16 MiB random pattern (encryption makes the
/// repeat invisible to the nodes; generating is not what is measured).
struct Pattern {
    block: Arc<Vec<u8>>,
    left: u64,
    at: usize,
}

impl Pattern {
    fn new(size: u64) -> Self {
        let mut block = vec![0u8; 16 * MIB];
        rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut block);
        Self { block: Arc::new(block), left: size, at: 0 }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize).min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at = (self.at + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes `size` bytes to `path` in 1 MiB writes, then closes it (which,
/// in the mount, uploads and commits); with `sync`, fsyncs first.
fn write_file(path: &Path, size: u64, sync: bool) -> std::io::Result<Duration> {
    let mut src = Pattern::new(size);
    let mut buf = vec![0u8; MIB];
    let t = Instant::now();
    let mut f = std::fs::File::create(path)?;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n])?;
    }
    if sync {
        f.sync_all()?;
    }
    drop(f);
    Ok(t.elapsed())
}

fn read_file(path: &Path) -> std::io::Result<(u64, Duration)> {
    let mut buf = vec![0u8; MIB];
    let t = Instant::now();
    let mut f = std::fs::File::open(path)?;
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((total, t.elapsed()));
        }
        total += n as u64;
    }
}

/// How the small-file writers name their files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Names {
    /// `w<writer>/f<i>`: a directory per writer.
    PerWriter,
    /// 16 random hex digits, all in `root` (as content-addressed writers
    /// name theirs): each write falls anywhere in the directory.
    Random,
}

/// Files per second: 16 writers create `count` 4 KiB files under `root`.
fn small_files(root: &Path, count: usize, names: Names) -> anyhow::Result<f64> {
    let per = count.div_ceil(16);
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|w| {
                s.spawn(move || -> std::io::Result<()> {
                    let dir = match names {
                        Names::PerWriter => root.join(format!("w{w}")),
                        Names::Random => root.to_path_buf(),
                    };
                    std::fs::create_dir_all(&dir)?;
                    for i in 0..per {
                        let name = match names {
                            Names::PerWriter => format!("f{i}"),
                            Names::Random => format!("{:016x}", rand::random::<u64>()),
                        };
                        std::fs::write(dir.join(name), [w as u8; 4096])?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok((per * 16) as f64 / t.elapsed().as_secs_f64())
}

/// Seconds of `ls -lR dir`, and the lines it printed.
fn ls_lr(dir: &Path) -> anyhow::Result<(Duration, usize)> {
    let t = Instant::now();
    let out = std::process::Command::new("ls").arg("-lR").arg(dir).output()?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!("ls -lR {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok((took, out.stdout.split(|b| *b == b'\n').count()))
}

impl MountBench {
    /// Runs the benchmark and prints its figures.
    pub async fn run(self) -> anyhow::Result<()> {
        if !Path::new("/dev/fuse").exists() {
            bail!("/dev/fuse is missing: this machine cannot mount FUSE file systems");
        }
        let dir = tempfile::tempdir()?;
        let (nodes, config) = start_scratch(dir.path(), self.nodes).await?;
        let client = Arc::new(crate::commands::connect(&config).await?);
        client.create_bucket("bench", None).await?;
        let direct = client.bucket("bench").await?;
        let s = client.bucket_defaults();
        println!(
            "devnet: {} nodes on 127.0.0.1, code {}-of-{} (+{} extra); the mount is in this process",
            self.nodes, s.k, s.n, s.extra
        );
        if cfg!(debug_assertions) {
            println!("note: this is a debug build; build with --release for real figures");
        }
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt)?;
        let opts = cairn_fuse_mount::Options {
            cache_dir: self.cache_dir.clone().unwrap_or_else(|| dir.path().join("cache")),
            cache_size: 10 << 30,
            read_only: false,
            allow_other: false,
            ttl: Duration::from_secs(1),
        };
        let rt = tokio::runtime::Handle::current();
        let (c, b, m) = (Arc::clone(&client), direct.clone(), mnt.clone());
        let mounted = tokio::task::spawn_blocking(move || cairn_fuse_mount::mount(rt, c, b, &m, &opts)).await??;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(mounted.run(async {
            let _ = stop_rx.await;
        }));
        let result = self.measure(&direct, &mnt, dir.path()).await;
        let _ = stop_tx.send(());
        serving.await?.context("unmount")?;
        drop(nodes);
        result
    }

    async fn measure(&self, direct: &Bucket, mnt: &Path, tmp: &Path) -> anyhow::Result<()> {
        let size = self.size;
        let mib = size / MIB as u64;
        // Large sequential write and read, best of `runs`.
        let (mut dw, mut mw, mut dr, mut mr) = (0f64, 0f64, 0f64, 0f64);
        direct.put("read-src", Pattern::new(size), PutOptions::default()).await?;
        for _ in 0..self.runs.max(1) {
            let t = Instant::now();
            direct.put("direct-write", Pattern::new(size), PutOptions::default()).await?;
            dw = dw.max(mbps(size, t.elapsed()));
            let path = mnt.join("mount-write");
            let took = tokio::task::spawn_blocking(move || write_file(&path, size, false)).await??;
            mw = mw.max(mbps(size, took));
            let t = Instant::now();
            direct.get("read-src", None, &mut tokio::io::sink()).await?;
            dr = dr.max(mbps(size, t.elapsed()));
            // A new name each time: nothing of it is in the kernel's cache.
            let name = format!("copy-{}", rand::random::<u32>());
            direct.copy("read-src", &name, cairn_client::MetadataDirective::Copy).await?;
            // Written by another client as far as the mount knows: it shows
            // once the mount's cached listing (1 s) has expired.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let path = mnt.join(&name);
            let (got, took) = tokio::task::spawn_blocking(move || read_file(&path)).await??;
            if got != size {
                bail!("read {got} bytes of {size} through the mount");
            }
            mr = mr.max(mbps(size, took));
        }
        println!("{mib} MiB sequential write: mount {mw:.0} MB/s, direct {dw:.0} MB/s (ratio {:.2})", mw / dw);
        println!("{mib} MiB sequential read:  mount {mr:.0} MB/s, direct {dr:.0} MB/s (ratio {:.2})", mr / dr);
        // Many small files at once.
        let small = self.small;
        let m = mnt.join("small");
        let files = tokio::task::spawn_blocking(move || small_files(&m, small, Names::PerWriter)).await??;
        let t = Instant::now();
        let puts = futures::stream::iter(0..small)
            .map(|i| {
                let b = direct.clone();
                // As the mount's writers: 16 directories.
                let key = format!("small-direct/w{}/f{i}", i % 16);
                async move { cairn_client::bucket::put_bytes(&b, &key, vec![1u8; 4096]).await }
            })
            .buffer_unordered(16);
        for r in puts.collect::<Vec<_>>().await {
            r?;
        }
        let direct_files = small as f64 / t.elapsed().as_secs_f64();
        println!(
            "4 KiB files created and written by 16 writers: mount {files:.0} files/s, direct {direct_files:.0} puts/s (ratio {:.2})",
            files / direct_files
        );
        // Random names in one directory, three rounds: each round's files
        // fall all over the names the earlier rounds left.
        let mut rates = Vec::new();
        for _ in 0..3 {
            let m = mnt.join("scatter");
            let rate = tokio::task::spawn_blocking(move || small_files(&m, small, Names::Random)).await??;
            rates.push(format!("{rate:.0}"));
        }
        println!(
            "4 KiB files under random names in one directory, 16 writers, 3 rounds of {small}: mount {} files/s",
            rates.join(", ")
        );
        // `ls -lR` of a tree written directly (100 files per directory).
        let t = Instant::now();
        let puts = futures::stream::iter(0..self.tree)
            .map(|i| {
                let b = direct.clone();
                async move {
                    cairn_client::bucket::put_bytes(&b, &format!("tree/d{:03}/f{i:05}", i / 100), vec![7u8; 100]).await
                }
            })
            .buffer_unordered(64);
        for r in puts.collect::<Vec<_>>().await {
            r?;
        }
        println!("({} files for ls -lR stored directly in {:.1} s)", self.tree, t.elapsed().as_secs_f64());
        let tree = mnt.join("tree");
        let (cold, lines) = tokio::task::spawn_blocking(move || ls_lr(&tree)).await??;
        println!("ls -lR of {} files in the mount: {:.3} s ({lines} lines)", self.tree, cold.as_secs_f64());
        // The same on a local directory, for reference.
        let local = tmp.join("local");
        std::fs::create_dir_all(&local)?;
        let l = local.clone();
        let (lw, lr, lf, lls) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let w = write_file(&l.join("big"), size, true)?;
            let (_, r) = read_file(&l.join("big"))?;
            std::fs::remove_file(l.join("big"))?;
            let f = small_files(&l.join("small"), small, Names::PerWriter)?;
            for i in 0..10_000 {
                let d = l.join(format!("tree/d{:03}", i / 100));
                if i % 100 == 0 {
                    std::fs::create_dir_all(&d)?;
                }
                std::fs::write(d.join(format!("f{i:05}")), [7u8; 100])?;
            }
            let (ls, _) = ls_lr(&l.join("tree"))?;
            Ok((mbps(size, w), mbps(size, r), f, ls))
        })
        .await??;
        println!(
            "local directory (reference): write+fsync {lw:.0} MB/s, read {lr:.0} MB/s (page cache), {lf:.0} files/s, ls -lR of 10000 files {:.3} s",
            lls.as_secs_f64()
        );
        let ratio = (mw / dw).min(mr / dr);
        println!("mount-ratio: {ratio:.2}");
        Ok(())
    }
}
