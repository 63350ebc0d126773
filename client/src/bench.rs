//! `cairn bench pipeline`: the data pipeline against its own primitives.
//!
//! Each primitive runs alone on `threads` threads over the same amount of
//! data the pipeline handles: XChaCha20-Poly1305 sealing 64 KiB blocks,
//! BLAKE3 over whole shards, and Reed-Solomon encoding in the pipeline's
//! column slices. Their per-byte times, summed, give the best an unfused
//! pipeline could do (the *limit*); the ratio of the real encode and decode
//! rates to that limit says how much the pipeline loses to copies, cache
//! misses and coordination.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_crypto::{BlockPosition, DataKey, ObjectCipher};
use cairn_proto::ShardId;
use cairn_proto::layout::Layout;
use reed_solomon_simd::ReedSolomonEncoder;

use crate::error::Error;
use crate::pipeline::{Parallelism, decode_object, encode_object};
use crate::segment::column_width;

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct PipelineBench {
    /// Bytes of random plaintext.
    pub size: u64,
    /// Erasure and segment parameters.
    pub layout: Layout,
    /// Worker threads.
    pub threads: usize,
    /// Repetitions; the best run of each measurement counts.
    pub runs: usize,
}

/// The figures, in MB/s (10^6 bytes per second of plaintext unless noted).
#[derive(Clone, Copy, Debug)]
pub struct PipelineReport {
    /// XChaCha20-Poly1305 sealing.
    pub seal: f64,
    /// BLAKE3 hashing (bytes hashed per second).
    pub blake3: f64,
    /// Reed-Solomon encoding (data bytes per second).
    pub rs_encode: f64,
    /// MD5 on one thread (it cannot be split within a stream).
    pub md5: f64,
    /// 1 / sum of per-plaintext-byte stage times.
    pub limit: f64,
    /// The limit with MD5 beside the workers: its core time added, and no
    /// more than one core's MD5 rate.
    pub limit_md5: f64,
    /// Full encode pipeline with MD5 beside it, as a put runs.
    pub encode_md5: f64,
    /// Full encode pipeline.
    pub encode: f64,
    /// Full decode pipeline, all data shards present.
    pub decode: f64,
    /// Decode with `min(m, k)` data shards missing.
    pub decode_degraded: f64,
    /// min(encode, decode) / limit.
    pub ratio: f64,
}

fn mbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64().max(1e-9) / 1e6
}

/// Runs `f` on `threads` threads at once and returns the wall time.
fn timed_parallel(threads: usize, f: impl Fn() + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(&f);
        }
    });
    start.elapsed()
}

fn best(runs: usize, mut f: impl FnMut() -> Result<Duration, Error>) -> Result<Duration, Error> {
    let mut best = Duration::MAX;
    for _ in 0..runs.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

/// Deterministic pseudo-random bytes (BLAKE3 XOF).
fn random_data(size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    blake3::Hasher::new().update(b"cairn bench").finalize_xof().fill(&mut v);
    v
}

impl PipelineBench {
    /// Runs the benchmark, printing each figure to `out` as it is measured.
    pub fn run(&self, out: &mut impl Write) -> Result<PipelineReport, Error> {
        self.layout.validate()?;
        let l = self.layout;
        let t = self.threads.max(1);
        let seg = l.segment(l.segment_size);
        let s = seg.shard_len() as usize;
        let k = usize::from(l.k);
        let m = usize::from(l.parity());
        writeln!(
            out,
            "cairn bench pipeline: {} MiB of random data, k={} n={}, {} threads, segment {} KiB, block {} KiB, best of {}",
            self.size >> 20,
            l.k,
            l.n,
            t,
            l.segment_size >> 10,
            l.block_size >> 10,
            self.runs
        )?;
        let data = random_data(self.size);
        // Each primitive alone processes the same volume the pipeline does,
        // split over the threads, on segment-sized buffers.
        let segments_per_thread = (self.size.div_ceil(u64::from(l.segment_size)) as usize).div_ceil(t).max(1);
        let volume = (segments_per_thread * t) as u64 * u64::from(l.segment_size);
        let cipher = ObjectCipher::new(&DataKey::generate(), [7; 16]);

        let seal_t = best(self.runs, || {
            Ok(timed_parallel(t, || {
                let mut buf = vec![1u8; l.segment_size as usize];
                for i in 0..segments_per_thread {
                    for (b, block) in buf.chunks_mut(l.block_size as usize).enumerate() {
                        let pos = BlockPosition {
                            segment: i as u64,
                            block: b as u32,
                            last_in_segment: false,
                            last_segment: false,
                        };
                        std::hint::black_box(cipher.seal_block(pos, block));
                    }
                }
            }))
        })?;
        let seal = mbps(volume, seal_t);
        writeln!(out, "primitive  xchacha20poly1305 seal  {seal:>9.1} MB/s")?;

        let hash_volume = (segments_per_thread * t * (k + m) * s) as u64;
        let hash_t = best(self.runs, || {
            Ok(timed_parallel(t, || {
                let buf = vec![2u8; s];
                for _ in 0..segments_per_thread * (k + m) {
                    std::hint::black_box(blake3::hash(&buf));
                }
            }))
        })?;
        let hash = mbps(hash_volume, hash_t);
        writeln!(out, "primitive  blake3                  {hash:>9.1} MB/s")?;

        let rs_t = best(self.runs, || {
            Ok(timed_parallel(t, || {
                let data = vec![3u8; k * s];
                let mut parity = vec![0u8; m * s];
                let column = column_width(l.n);
                let Ok(mut rs) = ReedSolomonEncoder::new(k, m, column.min(s)) else { return };
                for _ in 0..segments_per_thread {
                    let mut col = 0;
                    while col < s {
                        let w = column.min(s - col);
                        let _ = rs.reset(k, m, w);
                        for i in 0..k {
                            let _ = rs.add_original_shard(&data[i * s + col..i * s + col + w]);
                        }
                        if let Ok(res) = rs.encode() {
                            for (j, r) in res.recovery_iter().enumerate() {
                                parity[j * s + col..j * s + col + w].copy_from_slice(r);
                            }
                        }
                        col += w;
                    }
                }
                std::hint::black_box(&parity);
            }))
        })?;
        let rs_encode = mbps((segments_per_thread * t * k * s) as u64, rs_t);
        writeln!(out, "primitive  rs encode {}+{}           {rs_encode:>9.1} MB/s", l.k, l.parity())?;

        // Per plaintext byte: seal it once, hash n/k of a ciphertext byte, RS-encode one.
        let expansion = (k * s) as f64 / f64::from(l.segment_size);
        let per_byte = 1.0 / seal + expansion * (k + m) as f64 / k as f64 / hash + expansion / rs_encode;
        let limit = 1.0 / per_byte;
        writeln!(out, "limit      1 / sum of stage times  {limit:>9.1} MB/s")?;
        let md5_t = best(self.runs, || {
            let start = Instant::now();
            std::hint::black_box(crate::etag::md5_hex(&data));
            Ok(start.elapsed())
        })?;
        let md5 = mbps(self.size, md5_t);
        writeln!(out, "primitive  md5 (one thread)        {md5:>9.1} MB/s")?;
        // Core-seconds per byte: the stages used `t` cores, MD5 one.
        let limit_md5 = (t as f64 / (t as f64 * per_byte + 1.0 / md5)).min(md5);
        writeln!(out, "limit      with md5 beside         {limit_md5:>9.1} MB/s")?;

        let par = Parallelism::threads(t);
        // Timed as an upload streams: each segment's shards are dropped once
        // the sink has them (their buffers go back to the pool).
        let enc_t = best(self.runs, || {
            let start = Instant::now();
            encode_object(&data[..], &cipher, l, par, |seg| {
                std::hint::black_box(&seg.shards);
                Ok(())
            })?;
            Ok(start.elapsed())
        })?;
        // Keep one encoding for the decode runs.
        let mut stored: Vec<Vec<Option<Bytes>>> = Vec::new();
        let mut ids: Vec<Vec<ShardId>> = Vec::new();
        encode_object(&data[..], &cipher, l, par, |seg| {
            stored.push(seg.shards.into_iter().map(Some).collect());
            ids.push(seg.ids);
            Ok(())
        })?;
        let encode = mbps(self.size, enc_t);
        writeln!(out, "encode     full pipeline           {encode:>9.1} MB/s")?;
        let enc_md5_t = best(self.runs, || {
            let start = Instant::now();
            let (reader, rx) = crate::etag::tee(&data[..]);
            std::thread::scope(|s| {
                let hasher = s.spawn(move || crate::etag::consume(rx));
                let r = encode_object(reader, &cipher, l, par, |seg| {
                    std::hint::black_box(&seg.shards);
                    Ok(())
                });
                std::hint::black_box(hasher.join().map_err(|_| Error::WorkerPanicked)?);
                r
            })?;
            Ok(start.elapsed())
        })?;
        let encode_md5 = mbps(self.size, enc_md5_t);
        writeln!(out, "encode     with md5 beside         {encode_md5:>9.1} MB/s")?;

        let decode_with = |shards: &Vec<Vec<Option<Bytes>>>| {
            best(self.runs, || {
                let start = Instant::now();
                decode_object(
                    &cipher,
                    l,
                    self.size,
                    &ids,
                    |i| Ok(shards[i as usize].clone()),
                    par,
                    &mut std::io::sink(),
                )?;
                Ok(start.elapsed())
            })
        };
        let decode = mbps(self.size, decode_with(&stored)?);
        writeln!(out, "decode     all data shards         {decode:>9.1} MB/s")?;
        let lost = m.min(k);
        let degraded: Vec<Vec<Option<Bytes>>> = stored
            .iter()
            .map(|seg| seg.iter().enumerate().map(|(i, s)| if i < lost { None } else { s.clone() }).collect())
            .collect();
        let decode_degraded = mbps(self.size, decode_with(&degraded)?);
        writeln!(out, "decode     {lost} data shards missing  {decode_degraded:>9.1} MB/s")?;

        // Check the pipeline gave back what it was given (untimed).
        let mut back = Vec::with_capacity(data.len());
        decode_object(&cipher, l, self.size, &ids, |i| Ok(degraded[i as usize].clone()), par, &mut back)?;
        if back != data {
            return Err(Error::RoundTripMismatch);
        }
        let ratio = encode.min(decode) / limit;
        writeln!(out, "md5-ratio: {:.2} (encode with md5 / its limit)", encode_md5 / limit_md5)?;
        writeln!(out, "pipeline-ratio: {ratio:.2}")?;
        Ok(PipelineReport {
            seal,
            blake3: hash,
            rs_encode,
            md5,
            limit,
            limit_md5,
            encode,
            encode_md5,
            decode,
            decode_degraded,
            ratio,
        })
    }
}
