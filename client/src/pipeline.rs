//! Streaming encode and decode of whole objects with bounded memory.
//!
//! A producer thread reads (or fetches) segments, `threads` workers encode
//! (or decode) them, and the calling thread hands results to the sink in
//! order. At most `in_flight` segments exist at once, whatever the object
//! size: a token is taken before a segment is read and given back after
//! the sink has consumed it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
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
    /// `threads` workers, `2 × threads` in flight.
    pub fn threads(threads: usize) -> Self {
        let threads = threads.max(1);
        Self { threads, in_flight: threads * 2 }
    }
}

/// Runs `work` over the items of `produce` on `par.threads` threads and
/// gives the results to `sink` in input order, with at most `par.in_flight`
/// items alive. The first error stops everything and is returned.
pub fn ordered_map<I, O>(
    par: Parallelism,
    produce: impl FnMut() -> Result<Option<I>, Error> + Send,
    work: impl Fn(u64, I) -> Result<O, Error> + Sync,
    mut sink: impl FnMut(O) -> Result<(), Error>,
) -> Result<(), Error>
where
    I: Send,
    O: Send,
{
    let in_flight = par.in_flight.max(1);
    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = token_tx.send(());
    }
    let (job_tx, job_rx) = sync_channel::<(u64, I)>(par.threads.max(1));
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (out_tx, out_rx) = sync_channel::<(u64, Result<O, Error>)>(in_flight);

    thread::scope(|scope| {
        let producer = scope.spawn(move || produce_loop(produce, token_rx, job_tx));
        let work = &work;
        for _ in 0..par.threads.max(1) {
            let job_rx = Arc::clone(&job_rx);
            let out_tx: SyncSender<_> = out_tx.clone();
            scope.spawn(move || {
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((i, item)) = job else { return };
                    if out_tx.send((i, work(i, item))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(out_tx);
        let collected = collect_in_order(out_rx, &token_tx, &mut sink);
        // Dropping the token sender unblocks a producer waiting for a token.
        drop(token_tx);
        let produced = producer.join().map_err(|_| Error::WorkerPanicked)?;
        collected.and(produced)
    })
}

fn produce_loop<I>(
    mut produce: impl FnMut() -> Result<Option<I>, Error>,
    tokens: Receiver<()>,
    jobs: SyncSender<(u64, I)>,
) -> Result<(), Error> {
    let mut i = 0u64;
    loop {
        if tokens.recv().is_err() {
            return Ok(()); // the collector stopped; its error wins
        }
        match produce()? {
            None => return Ok(()),
            Some(item) => {
                if jobs.send((i, item)).is_err() {
                    return Ok(());
                }
                i += 1;
            }
        }
    }
}

fn collect_in_order<O>(
    results: Receiver<(u64, Result<O, Error>)>,
    tokens: &SyncSender<()>,
    sink: &mut impl FnMut(O) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut next = 0u64;
    let mut waiting = BTreeMap::new();
    for (i, r) in results {
        waiting.insert(i, r?);
        while let Some(o) = waiting.remove(&next) {
            sink(o)?;
            next += 1;
            let _ = tokens.try_send(());
        }
    }
    Ok(())
}

/// Reads up to one segment of plaintext straight into its block slots;
/// returns the segment's length and buffer, or `None` at end of input.
fn read_segment(reader: &mut impl BufRead, layout: &Layout) -> Result<Option<(u32, Vec<u8>)>, Error> {
    let full = layout.segment(layout.segment_size);
    // Plaintext slots are overwritten by the read, tags by sealing; the
    // padding after the ciphertext is zeroed below.
    let mut buf = pool::global().take(full.padded_len());
    let mut len = 0u32;
    'blocks: for b in 0..full.block_count() {
        let slot = segment::plaintext_slot(&full, b);
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
    // (block slots of a prefix are the same in both geometries) and zero
    // the padding after the last tag.
    buf.truncate(seg.padded_len());
    buf[seg.cipher_len() as usize..].fill(0);
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
