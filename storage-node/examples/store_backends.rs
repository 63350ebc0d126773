//! Shard bytes in plain files or in RocksDB blob files? Measures both on
//! this machine, with the durability each needs (fsync per shard).
//!
//! `cargo run --release -p cairn-storage-node --example store_backends`

use std::fs;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use rocksdb::{DB, Options, WriteOptions};

const SHARDS: usize = 48;
const SHARD: usize = 4 << 20;
const RANGES: usize = 2000;
const RANGE: usize = 64 << 10;

fn mbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let data: Vec<Vec<u8>> = (0..SHARDS)
        .map(|i| {
            let mut v = vec![0u8; SHARD];
            blake3::Hasher::new().update(&(i as u64).to_le_bytes()).finalize_xof().fill(&mut v);
            v
        })
        .collect();
    let total = SHARDS * SHARD;
    let ranges: Vec<(usize, usize)> =
        (0..RANGES).map(|i| (i * 7 % SHARDS, (i * 7919 * 64) % (SHARD - RANGE))).collect();

    // Plain files: write temp, fsync, rename (what the node does).
    let files = dir.path().join("files");
    fs::create_dir_all(files.join("tmp"))?;
    let t = Instant::now();
    for (i, d) in data.iter().enumerate() {
        let tmp = files.join("tmp").join(i.to_string());
        let f = fs::File::create(&tmp)?;
        f.write_all_at(d, 0)?;
        f.sync_all()?;
        fs::rename(&tmp, files.join(i.to_string()))?;
    }
    let file_put = mbps(total, t.elapsed());
    let open: Vec<fs::File> =
        (0..SHARDS).map(|i| fs::File::open(files.join(i.to_string()))).collect::<Result<_, _>>()?;
    let t = Instant::now();
    let mut buf = vec![0u8; RANGE];
    for &(s, off) in &ranges {
        open[s].read_exact_at(&mut buf, off as u64)?;
    }
    let file_ranges = RANGES as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut whole = vec![0u8; SHARD];
    for f in &open {
        f.read_exact_at(&mut whole, 0)?;
    }
    let file_get = mbps(total, t.elapsed());

    // RocksDB with blob files: one synced put per shard.
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_enable_blob_files(true);
    opts.set_min_blob_size(4096);
    opts.set_blob_file_size(256 << 20);
    let db = DB::open(&opts, dir.path().join("db"))?;
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    let t = Instant::now();
    for (i, d) in data.iter().enumerate() {
        db.put_opt(i.to_le_bytes(), d, &wo)?;
    }
    let blob_put = mbps(total, t.elapsed());
    db.flush()?;
    let t = Instant::now();
    for &(s, off) in &ranges {
        let v = db.get_pinned(s.to_le_bytes())?.ok_or("missing")?;
        buf.copy_from_slice(&v[off..off + RANGE]);
    }
    let blob_ranges = RANGES as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..SHARDS {
        let v = db.get_pinned(i.to_le_bytes())?.ok_or("missing")?;
        whole.copy_from_slice(&v);
    }
    let blob_get = mbps(total, t.elapsed());

    println!("store_backends: {SHARDS} shards of {} MiB, {RANGES} reads of {} KiB", SHARD >> 20, RANGE >> 10);
    println!("{:<22}{:>12}{:>14}", "", "files", "rocksdb blobs");
    println!("{:<22}{:>12.1}{:>14.1}", "put, fsynced (MB/s)", file_put, blob_put);
    println!("{:<22}{:>12.1}{:>14.1}", "whole get (MB/s)", file_get, blob_get);
    println!("{:<22}{:>12.0}{:>14.0}", "64 KiB range (/s)", file_ranges, blob_ranges);
    println!("note: a blob put must hold the whole shard in memory; a file put streams it.");
    Ok(())
}
