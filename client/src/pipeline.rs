//! Streaming encode and decode of whole objects with bounded memory.
//!
//! The calling thread reads (or fetches) segments, the process-wide CPU
//! pool encodes (or decodes) them, and the calling thread hands results to
//! the sink in order. At most `in_flight` segments exist at once, whatever
//! the object size: a segment counts from before it is read until the sink
//! has consumed it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::sync_channel;
use std::thread;

use bytes::Bytes;
use cairn_crypto::ObjectCipher;
use cairn_proto::ShardId;
use cairn_proto::layout::Layout;

use crate::error::Error;
use crate::pool;
use crate::segment::{self, EncodedSegment, SegmentPos};

/// How much parallelism a pipeline uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parallelism {
    /// Worker threads for CPU work.
    pub threads: usize,
    /// Segments alive at once (reading, working, waiting for the sink).
    pub in_flight: usize,
}

impl Default for Parallelism {
    /// One worker per core, two segments per worker in flight: enough that
    /// workers never wait for the reader, few enough that memory stays at
    /// about `2 × cores × 1.5 × segment size`.
    fn default() -> Self {
        let threads = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self { threads, in_flight: threads * 2 }
    }
}

impl Parallelism {
    /// One worker per core, and one segment in flight per two workers: a
    /// networked put also holds the segment waiting to upload and those
    /// uploading, so it keeps few in the encoder (memory of a put of any
    /// size: 3 encoded segments, see `Bucket::upload`). Encoding one
    /// segment at a time still outruns the network (a 1 GiB put: 6.7–7.2
    /// s either way; docs/BENCHMARKS.md has the peak RSS).
    pub fn for_uploads() -> Self {
        let threads = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self { threads, in_flight: threads.div_ceil(2) }
    }

    /// `threads` workers, `2 × threads` in flight.
    pub fn threads(threads: usize) -> Self {
        let threads = threads.max(1);
        Self { threads, in_flight: threads * 2 }
    }
}

/// Runs `work` over the items of `produce` on the process-wide CPU pool
/// (rayon's global pool, one thread per core, shared by every put and get
/// of every client in the process) and gives the results to `sink` in
/// input order, with at most `par.in_flight` items alive. The calling
/// thread produces and sinks. The first error stops everything and is
/// returned. A `par.threads` other than the pool's size runs on a pool of
/// that size made for the call (benchmarks of scaling).
pub fn ordered_map<I, O>(
    par: Parallelism,
    produce: impl FnMut() -> Result<Option<I>, Error>,
    work: impl Fn(u64, I) -> Result<O, Error> + Sync,
    sink: impl FnMut(O) -> Result<(), Error>,
) -> Result<(), Error>
where
    I: Send,
    O: Send,
{
    let in_flight = par.in_flight.max(1);
    let work = &work;
    if par.threads.max(1) == rayon::current_num_threads() {
        rayon::in_place_scope(|scope| run_ordered(scope, in_flight, produce, work, sink))
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(par.threads.max(1))
            .build()
            .map_err(|_| Error::WorkerPanicked)?;
        pool.in_place_scope(|scope| run_ordered(scope, in_flight, produce, work, sink))
    }
}

fn run_ordered<'s, I, O, W>(
    scope: &rayon::Scope<'s>,
    in_flight: usize,
    mut produce: impl FnMut() -> Result<Option<I>, Error>,
    work: &'s W,
    mut sink: impl FnMut(O) -> Result<(), Error>,
) -> Result<(), Error>
where
    I: Send + 's,
    O: Send + 's,
    W: Fn(u64, I) -> Result<O, Error> + Sync,
{
    // Every job sends exactly one result, and at most `in_flight` are
    // unsunk, so a worker never blocks on this channel.
    let (tx, rx) = sync_channel::<(u64, Result<O, Error>)>(in_flight);
    let (mut spawned, mut received, mut next) = (0u64, 0u64, 0u64);
    let mut waiting = BTreeMap::new();
    let mut result = Ok(());
    let mut ended = false;
    loop {
        while result.is_ok() && !ended && spawned - next < in_flight as u64 {
            match produce() {
                Ok(Some(item)) => {
                    let tx = tx.clone();
                    let i = spawned;
                    scope.spawn(move |_| {
                        let _ = tx.send((i, work(i, item)));
                    });
                    spawned += 1;
                }
                Ok(None) => ended = true,
                Err(e) => result = Err(e),
            }
        }
        if received == spawned {
            return result;
        }
        let Ok((i, r)) = rx.recv() else { return result.and(Err(Error::WorkerPanicked)) };
        received += 1;
        if result.is_err() {
            continue; // draining: the jobs borrow from this frame
        }
        waiting.insert(i, r);
        while let Some(r) = waiting.remove(&next) {
            next += 1;
            if let Err(e) = r.and_then(&mut sink) {
                result = Err(e);
                waiting.clear();
                break;
            }
        }
    }
}

/// Reads up to one segment of plaintext straight into its block slots;
/// returns the segment's length and buffer, or `None` at end of input.
fn read_segment(reader: &mut impl BufRead, layout: &Layout) -> Result<Option<(u32, Vec<u8>)>, Error> {
    let full = layout.segment(layout.segment_size);
    // Plaintext slots are overwritten by the read, tags by sealing; the
    // padding after the ciphertext is zeroed below. The buffer grows block
    // by block, so a short last (or only) segment touches only its pages.
    let mut buf = pool::global().take_growable(full.padded_len());
    let mut len = 0u32;
    'blocks: for b in 0..full.block_count() {
        let slot = segment::plaintext_slot(&full, b);
        if buf.len() < slot.end {
            buf.resize(slot.end, 0);
        }
        let mut got = 0;
        while got < slot.len() {
            let n = reader.read(&mut buf[slot.start + got..slot.end])?;
            if n == 0 {
                len += got as u32;
                break 'blocks;
            }
            got += n;
        }
        len += got as u32;
    }
    if len == 0 {
        pool::global().give(buf);
        return Ok(None);
    }
    let seg = layout.segment(len);
    // A short segment has fewer blocks and shorter shards: trim the buffer
    // (block slots of a prefix are the same in both geometries); the bytes
    // after the last tag are filled by the encoder.
    buf.resize(seg.padded_len(), 0);
    Ok(Some((len, buf)))
}

/// What [`encode_object`] learned about the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeSummary {
    /// Plaintext bytes read.
    pub size: u64,
    /// Segments produced.
    pub segments: u64,
}

/// Encodes everything `reader` yields into segments handed to `sink` in
/// order. Memory stays bounded by `par.in_flight` segments.
pub fn encode_object<R: Read + Send>(
    reader: R,
    cipher: &ObjectCipher,
    layout: Layout,
    par: Parallelism,
    mut sink: impl FnMut(EncodedSegment) -> Result<(), Error>,
) -> Result<EncodeSummary, Error> {
    layout.validate()?;
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut summary = EncodeSummary { size: 0, segments: 0 };
    let mut pending = read_segment(&mut reader, &layout)?;
    let produce = || -> Result<Option<(u32, Vec<u8>, bool)>, Error> {
        let Some((len, buf)) = pending.take() else { return Ok(None) };
        // The segment is the last one if the input ends right after it.
        pending = if len == layout.segment_size { read_segment(&mut reader, &layout)? } else { None };
        Ok(Some((len, buf, pending.is_none())))
    };
    let work = |i: u64, (len, buf, last): (u32, Vec<u8>, bool)| {
        segment::encode(cipher, layout.segment(len), SegmentPos { index: i, last }, buf)
    };
    ordered_map(par, produce, work, |seg| {
        summary.size += u64::from(seg.layout.plain_len);
        summary.segments += 1;
        sink(seg)
    })?;
    Ok(summary)
}

/// Decodes an object of `size` bytes, fetching each segment's shards with
/// `fetch(i)` (`None` = missing) and writing the plaintext to `out` in
/// order. Returns the indexes of bad shards found, per segment.
pub fn decode_object(
    cipher: &ObjectCipher,
    layout: Layout,
    size: u64,
    segment_ids: &[Vec<ShardId>],
    fetch: impl Fn(u64) -> Result<Vec<Option<Bytes>>, Error> + Sync,
    par: Parallelism,
    out: &mut impl Write,
) -> Result<Vec<(u64, Vec<u16>)>, Error> {
    layout.validate()?;
    let count = layout.segment_count(size);
    let mut next = 0u64;
    let produce = || -> Result<Option<u64>, Error> {
        let i = next;
        next += 1;
        Ok((i < count).then_some(i))
    };
    let work = |_: u64, i: u64| {
        let shards = fetch(i)?;
        let ids = segment_ids.get(i as usize).map(Vec::as_slice).unwrap_or(&[]);
        let seg_layout = layout.segment(layout.segment_len(size, i));
        let decoded = segment::decode(cipher, seg_layout, SegmentPos { index: i, last: i + 1 == count }, &shards, ids)?;
        Ok((i, decoded))
    };
    let mut bad = Vec::new();
    ordered_map(par, produce, work, |(i, d)| {
        if !d.bad_shards.is_empty() {
            bad.push((i, d.bad_shards));
        }
        out.write_all(&d.plaintext)?;
        pool::global().give(d.plaintext);
        Ok(())
    })?;
    Ok(bad)
}
