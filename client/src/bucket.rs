//! Objects in a bucket: put, get, list, delete and stat over the network.
//!
//! An object under [`INLINE_MAX`] bytes lives inside its index entry. A
//! larger one is encrypted and erasure-coded segment by segment on worker
//! threads while earlier segments upload, so memory stays at a few
//! segments whatever the object's size.

use std::collections::HashSet;
use std::io::Read;
use std::ops::{Bound, Range};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_crypto::{BucketKeys, DataKey, ObjectCipher};
use cairn_net::PeerId;
use cairn_proto::layout::Layout;
use cairn_proto::manifest::{ObjectManifest, SegmentManifest, ShardPlacement};
use cairn_proto::{ObjectVersionId, SegmentId};
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::entry::{Body, Checksum, Entry, Kind, Posix, Stored, check_meta};
use crate::error::Error;
use crate::etag;
use crate::formats;
use crate::gc::{self, Collector, GARBAGE_PREFIX};
use crate::index::{Expect, Op, Value};
use crate::listing::{Lister, Step};
use crate::padding::PadReader;
use crate::pipeline::{Parallelism, encode_object};
use crate::policy::Placement;
use crate::renew::{self, Copy, RenewReport};
use crate::segment::{self, EncodedSegment, SegmentPos};
use crate::tasks::Tasks;
use crate::transfer::{Outgoing, Rules, Transfer, Wanted, delete_token};
use crate::tree::{Snapshot, Tree, expect_current};

/// Objects smaller than this are stored inside the index.
pub const INLINE_MAX: usize = 32 * 1024;
/// Largest object key, as in S3.
pub const MAX_KEY_LEN: usize = 1024;
/// Segments uploading (or downloading) at once.
const SEGMENTS_IN_FLIGHT: usize = 2;
/// How old a cached index view may be for reads, unless the client says
/// otherwise ([`crate::ClientConfig::read_freshness`]).
pub const READ_FRESHNESS: Duration = Duration::from_millis(500);
/// Entries read per batch when listing or sweeping.
const LIST_BATCH: usize = 1000;

/// How a bucket stores its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSettings {
    /// Shards needed to read a segment.
    pub k: u16,
    /// Shards that must be stored for a put to succeed.
    pub n: u16,
    /// Shards uploaded beyond `n`; the slowest are cancelled.
    pub extra: u16,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
}

/// The default code, 4-of-8 (2× expansion), was picked with `cairn bench
/// durability`: with repair below `k + 4` (at once, for 4-of-8) it keeps
/// a segment with 12.6 nines a year at 10 % monthly churn, where 4-of-6
/// reaches 6.1 (docs/BENCHMARKS.md).
impl Default for BucketSettings {
    fn default() -> Self {
        Self { k: 4, n: 8, extra: 2, segment_size: cairn_proto::layout::DEFAULT_SEGMENT_SIZE }
    }
}

impl BucketSettings {
    /// The layout of new objects: `n + extra` shards are encoded.
    pub fn layout(&self) -> Result<Layout, Error> {
        let l = Layout {
            segment_size: self.segment_size,
            block_size: cairn_proto::layout::DEFAULT_BLOCK_SIZE,
            k: self.k,
            n: self.n.saturating_add(self.extra),
        };
        l.validate()?;
        if self.n < self.k {
            return Err(Error::Proto(cairn_proto::Error::Inconsistent {
                what: "bucket settings",
                reason: format!("n={} is below k={}", self.n, self.k),
            }));
        }
        Ok(l)
    }
}

pub(crate) fn info_of(e: &Entry, key: String) -> ObjectInfo {
    let (segments, layout, extents) = match &e.body {
        Body::Inline(_) => (0, None, 0),
        Body::Stored(s) => {
            (s.data.iter().map(|m| m.segments.len()).sum(), s.data.first().map(|m| m.layout), s.extents.len())
        }
    };
    ObjectInfo {
        key,
        size: e.size,
        modified_ms: e.modified_ms,
        content_type: e.content_type.clone(),
        headers: e.headers.clone(),
        meta: e.meta.clone(),
        etag: e.etag.clone(),
        checksums: e.checksums.clone(),
        kind: e.kind.clone(),
        posix: e.posix,
        segments,
        extents,
        layout,
    }
}

/// What is known about an object without fetching it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last written, milliseconds since the epoch.
    pub modified_ms: u64,
    /// Content type, if given.
    pub content_type: Option<String>,
    /// Other stored HTTP headers.
    pub headers: Vec<(String, String)>,
    /// User metadata.
    pub meta: Vec<(String, String)>,
    /// The S3 ETag, without quotes.
    pub etag: Option<String>,
    /// Checksums the writer sent.
    pub checksums: Vec<Checksum>,
    /// File, directory or symlink.
    pub kind: Kind,
    /// POSIX attributes, if set.
    pub posix: Option<Posix>,
    /// Segments over all data versions (0: stored inside the index).
    pub segments: usize,
    /// Extents (0: stored inside the index).
    pub extents: usize,
    /// Erasure layout of the first data version (None: inside the index).
    pub layout: Option<Layout>,
}

/// An object looked up for reading ([`Bucket::open`]).
#[derive(Clone, Debug)]
pub struct Opened {
    /// What is known about it.
    pub info: ObjectInfo,
    body: Body,
}

impl Opened {
    /// The byte ranges of the object's extents, in order (one for an object
    /// stored inside the index). A completed multipart upload has one
    /// extent per non-empty part.
    pub fn extents(&self) -> Vec<Range<u64>> {
        match &self.body {
            Body::Inline(b) => std::iter::once(0..b.len() as u64).collect(),
            Body::Stored(s) => {
                let mut at = 0;
                s.extents
                    .iter()
                    .map(|e| {
                        at += e.len;
                        at - e.len..at
                    })
                    .collect()
            }
        }
    }
}

/// Options of a put.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// Content type to record.
    pub content_type: Option<String>,
    /// Other HTTP headers to record (lower-case names).
    pub headers: Vec<(String, String)>,
    /// User metadata to record.
    pub meta: Vec<(String, String)>,
    /// Checksums the writer sent (kept, returned when asked).
    pub checksums: Vec<Checksum>,
    /// Write only if the key holds no object (`If-None-Match: *`).
    pub if_absent: bool,
    /// POSIX attributes to record (the mount).
    pub posix: Option<Posix>,
    /// Modification time to record instead of now, ms since the epoch.
    pub modified_ms: Option<u64>,
}

/// Health of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHealth {
    /// Segment index.
    pub index: u64,
    /// Shards whose holder proved it holds them (a verified slice of a
    /// random range: [`crate::audit`]).
    pub healthy: usize,
    /// Shards recorded as stored.
    pub stored: usize,
    /// Shards needed.
    pub k: usize,
    /// The region of each shard's holder, in shard order (`None`: no
    /// holder, or none declared).
    pub regions: Vec<Option<String>>,
    /// Shards on a network (IP, /24, /48) that holds another shard of the
    /// segment: the network was too small for the diversity rule.
    pub crowded: usize,
}

/// One page of a listing.
pub type Listing = crate::listing::Page<ObjectInfo>;

/// Checks an object key: non-empty, at most [`MAX_KEY_LEN`] bytes, no NUL.
pub fn check_key(key: &str) -> Result<(), Error> {
    let bad = |reason| Err(Error::BadName { name: key.chars().take(80).collect(), reason });
    if key.is_empty() {
        return bad("an object key cannot be empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("an object key is at most 1024 bytes");
    }
    if key.contains('\0') {
        return bad("an object key cannot contain NUL");
    }
    Ok(())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A bucket opened by a client.
#[derive(Clone, Debug)]
pub struct Bucket {
    name: String,
    keys: BucketKeys,
    settings: BucketSettings,
    placement: Arc<Placement>,
    tree: Tree,
    transfer: Arc<Transfer>,
    par: Parallelism,
    collector: Arc<Collector>,
    tasks: Tasks,
    /// How old a cached index view may be for reads.
    freshness: Duration,
}

/// What a stored upload produced.
pub(crate) struct Uploaded {
    /// The data version (its last segment padded: [`crate::padding`]).
    pub(crate) manifest: ObjectManifest,
    /// The bytes uploaded, without the padding.
    pub(crate) len: u64,
    /// Hex MD5 of the plaintext.
    pub(crate) md5: String,
}

impl Uploaded {
    /// The object these bytes make on their own.
    pub(crate) fn stored(&self) -> Stored {
        Stored::whole(self.manifest.clone(), self.len)
    }
}

impl Bucket {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        keys: BucketKeys,
        settings: BucketSettings,
        tree: Tree,
        transfer: Arc<Transfer>,
        par: Parallelism,
        collector: Arc<Collector>,
        tasks: Tasks,
    ) -> Self {
        let placement = Default::default();
        let freshness = READ_FRESHNESS;
        Self { name, keys, settings, placement, tree, transfer, par, collector, tasks, freshness }
    }

    /// The bucket with reads on index views at most `freshness` old.
    pub(crate) fn with_freshness(mut self, freshness: Duration) -> Self {
        self.freshness = freshness;
        self
    }

    /// The bucket with placement rules.
    pub(crate) fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = Arc::new(placement);
        self
    }

    /// Where its shards may go.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The placement rules of a segment upload (`existing`: holders kept).
    pub(crate) fn rules<'a>(&'a self, existing: &'a [PeerId]) -> Rules<'a> {
        Rules { placement: &self.placement, k: self.settings.k, n: self.settings.n, existing }
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How new objects are stored.
    pub fn settings(&self) -> BucketSettings {
        self.settings
    }

    /// The index tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    pub(crate) fn transfer(&self) -> &Transfer {
        &self.transfer
    }

    pub(crate) async fn snapshot(&self) -> Result<Snapshot, Error> {
        self.tree.snapshot(self.freshness).await
    }

    /// The entry under `key` and its value (for preconditions).
    pub(crate) async fn entry_at(&self, snap: &Snapshot, key: &str) -> Result<(Entry, Value), Error> {
        if !key.starts_with(crate::gc::INTERNAL) {
            check_key(key)?;
        }
        match self.tree.get(snap, key).await? {
            Some(v) => Ok((formats::decode_entry(v.live().unwrap_or_default())?, v)),
            None => Err(Error::NoSuchKey { bucket: self.name.clone(), key: key.into() }),
        }
    }

    /// The entry under `key`. A key missing from a cached view is looked
    /// up again at the newest head, so an object another client has just
    /// written is found (a changed object may still read as its version of
    /// up to the bucket's freshness ago, `READ_FRESHNESS` by default).
    async fn entry(&self, key: &str) -> Result<Entry, Error> {
        let snap = self.snapshot().await?;
        match self.entry_at(&snap, key).await {
            Err(Error::NoSuchKey { .. }) => {
                let fresh = self.tree.snapshot(Duration::ZERO).await?;
                Ok(self.entry_at(&fresh, key).await?.0)
            }
            r => Ok(r?.0),
        }
    }

    /// Commits `ops` (one atomic group) and, when they retired data,
    /// starts a sweep for data no name uses any more.
    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<Vec<Option<Value>>, Error> {
        let replaced = self.tree.commit(ops).await?;
        // Only entries with stored data queue anything for collection.
        let retired = replaced.iter().flatten().any(|v| {
            v.live().and_then(|d| formats::decode_entry(d).ok()).is_some_and(|e| matches!(e.body, Body::Stored(_)))
        });
        if retired {
            self.sweep_soon();
        }
        Ok(replaced)
    }

    /// Stores everything `reader` yields under `key`, replacing what was there.
    pub async fn put(
        &self,
        key: &str,
        reader: impl Read + Send + 'static,
        opts: PutOptions,
    ) -> Result<ObjectInfo, Error> {
        check_key(key)?;
        self.put_at(key, reader, opts).await
    }

    /// [`Bucket::put`] under any key, internal ones included.
    pub(crate) async fn put_at(
        &self,
        key: &str,
        reader: impl Read + Send + 'static,
        opts: PutOptions,
    ) -> Result<ObjectInfo, Error> {
        check_meta(&opts.meta)?;
        let (head, reader) = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let mut head = Vec::with_capacity(INLINE_MAX);
            (&mut reader).take(INLINE_MAX as u64).read_to_end(&mut head).map(|_| (head, reader))
        })
        .await
        .map_err(|_| Error::WorkerPanicked)??;
        let started = std::time::Instant::now();
        let (body, md5, fresh) = if head.len() < INLINE_MAX {
            let md5 = etag::md5_hex(&head);
            (Body::Inline(head), md5, None)
        } else {
            let up = self.upload(std::io::Cursor::new(head).chain(reader)).await?;
            (Body::Stored(up.stored()), up.md5, Some(up.manifest))
        };
        let mut entry = Entry::file(body, opts.modified_ms.unwrap_or_else(now_ms));
        entry.content_type = opts.content_type;
        entry.headers = opts.headers;
        entry.meta = opts.meta;
        entry.checksums = opts.checksums;
        entry.posix = opts.posix;
        entry.etag = Some(md5);
        let expect = if opts.if_absent { Expect::Absent } else { Expect::Any };
        let uploaded = started.elapsed();
        let stored = self.store(key, entry, expect).await;
        tracing::debug!(key, ?uploaded, committed = ?started.elapsed() - uploaded, "put");
        if let (Err(_), Some(m)) = (&stored, &fresh) {
            // Not in the index: nothing points at the shards.
            self.delete_manifest(m);
        }
        stored
    }

    /// Commits `entry` under `key` if `expect` holds.
    pub(crate) async fn store(&self, key: &str, entry: Entry, expect: Expect) -> Result<ObjectInfo, Error> {
        let info = info_of(&entry, key.to_string());
        self.commit(vec![Op::put(key, formats::encode_entry(&entry)).expecting(expect)]).await?;
        Ok(info)
    }

    /// Encodes and uploads an object; returns its manifest and MD5. MD5
    /// runs beside the segment workers, on the bytes as they are read.
    pub(crate) async fn upload(&self, reader: impl Read + Send + 'static) -> Result<Uploaded, Error> {
        let layout = self.settings.layout()?;
        let data_key = DataKey::generate();
        let version = ObjectVersionId(rand::random());
        let cipher = ObjectCipher::new(&data_key, version.0);
        // A segment takes a permit before it leaves the encoder and gives
        // it back when its upload ends: with the one being encoded, at
        // most SEGMENTS_IN_FLIGHT + 1 encoded segments exist at once.
        let permits = Arc::new(tokio::sync::Semaphore::new(SEGMENTS_IN_FLIGHT));
        let (tx, rx) = mpsc::channel::<(EncodedSegment, tokio::sync::OwnedSemaphorePermit)>(SEGMENTS_IN_FLIGHT);
        let runtime = tokio::runtime::Handle::current();
        let par = self.par;
        let (tee, md5_rx) = etag::tee(reader);
        let hasher = tokio::task::spawn_blocking(move || etag::consume(md5_rx));
        // The MD5 sees the bytes; the encoder, the bytes and their padding.
        let padded = PadReader::new(tee, layout.segment_size);
        let len = padded.counter();
        let encoder = tokio::task::spawn_blocking(move || {
            encode_object(padded, &cipher, layout, par, |seg| {
                let permit = runtime.block_on(Arc::clone(&permits).acquire_owned()).map_err(|_| Error::Stopped)?;
                tx.blocking_send((seg, permit)).map_err(|_| Error::Stopped)
            })
        });
        // After a failure no new segment starts, but the ones in flight
        // run to their end: what they stored is then known, and deleted
        // with the rest (a dropped upload would leave its shards behind
        // until their lease ends).
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = Arc::clone(&stop);
        let segments = stream::unfold(rx, move |mut rx| {
            let halt = Arc::clone(&halt);
            async move {
                if halt.load(Ordering::SeqCst) {
                    return None;
                }
                rx.recv().await.map(|s| (s, rx))
            }
        });
        let mut uploads = Box::pin(
            segments
                .map(|(seg, permit)| {
                    let upload = self.upload_segment(&data_key, version, seg);
                    async move {
                        let r = upload.await;
                        drop(permit);
                        r
                    }
                })
                .buffered(SEGMENTS_IN_FLIGHT),
        );
        let mut stored = Vec::new();
        let mut failed = None;
        while let Some(r) = uploads.next().await {
            match r {
                Ok(s) => stored.push(s),
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    failed.get_or_insert(e);
                }
            }
        }
        drop(uploads);
        // If an upload failed, the receiver is gone and the encoder stops.
        let summary = encoder.await.map_err(|_| Error::WorkerPanicked)?;
        let md5 = hasher.await.map_err(|_| Error::WorkerPanicked)?;
        let manifest = ObjectManifest { version, size: 0, layout, data_key: *data_key.as_bytes(), segments: stored };
        let error = match (failed, summary) {
            (None, Ok(sum)) => {
                let m = ObjectManifest { size: sum.size, ..manifest };
                m.validate()?;
                let len = len.load(Ordering::Relaxed);
                return Ok(Uploaded { manifest: m, len, md5 });
            }
            (Some(e), _) | (None, Err(e)) => e,
        };
        self.delete_manifest(&manifest);
        Err(error)
    }

    fn segment_id(&self, version: ObjectVersionId, index: u64) -> SegmentId {
        let mut m = [0u8; 24];
        m[..16].copy_from_slice(&version.0);
        m[16..].copy_from_slice(&index.to_le_bytes());
        SegmentId(self.keys.name_hash(&m))
    }

    async fn upload_segment(
        &self,
        data_key: &DataKey,
        version: ObjectVersionId,
        seg: EncodedSegment,
    ) -> Result<SegmentManifest, Error> {
        let id = self.segment_id(version, seg.pos.index);
        let outgoing: Vec<Outgoing> = seg
            .ids
            .iter()
            .zip(&seg.shards)
            .map(|(sid, bytes)| Outgoing { id: *sid, bytes: bytes.clone(), key: *data_key.as_bytes() })
            .collect();
        let holders = self
            .transfer
            .put_shards_placed(id.placement_key(), &outgoing, usize::from(self.settings.n), self.rules(&[]))
            .await?;
        Ok(SegmentManifest {
            id,
            plain_len: seg.layout.plain_len,
            shard_len: seg.layout.shard_len(),
            shards: seg.ids.iter().zip(holders).map(|(id, holder)| ShardPlacement { id: *id, holder }).collect(),
        })
    }

    /// Looks `key` up once, for reads that must all see the same version
    /// (an HTTP response whose headers are sent before its body).
    pub async fn open(&self, key: &str) -> Result<Opened, Error> {
        let entry = self.entry(key).await?;
        Ok(Opened { info: info_of(&entry, key.to_string()), body: entry.body })
    }

    /// Writes `range` of an opened object to `out`.
    pub async fn read(
        &self,
        object: &Opened,
        range: Range<u64>,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(), Error> {
        let size = object.info.size;
        if range.start > range.end || range.end > size {
            return Err(Error::BadRange { start: range.start, end: range.end, size });
        }
        self.read_body(&object.body, range, out).await?;
        out.flush().await?;
        Ok(())
    }

    /// Writes the object (or `range` of it) to `out`.
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<ObjectInfo, Error> {
        let entry = self.entry(key).await?;
        let range = range.unwrap_or(0..entry.size);
        if range.start > range.end || range.end > entry.size {
            return Err(Error::BadRange { start: range.start, end: range.end, size: entry.size });
        }
        self.read_body(&entry.body, range, out).await?;
        out.flush().await?;
        Ok(info_of(&entry, key.to_string()))
    }

    /// Writes bytes `range` of `body` to `out`.
    pub(crate) async fn read_body(
        &self,
        body: &Body,
        range: Range<u64>,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(), Error> {
        match body {
            Body::Inline(b) => out.write_all(&b[range.start as usize..range.end as usize]).await?,
            Body::Stored(s) => {
                for piece in s.plan(range) {
                    match piece.data {
                        Some(d) => {
                            let m = &s.data[d as usize];
                            self.download(m, piece.skip..piece.skip + piece.len, out).await?;
                        }
                        None => {
                            let zeros = vec![0u8; piece.len.min(1 << 20) as usize];
                            let mut left = piece.len;
                            while left > 0 {
                                let n = left.min(zeros.len() as u64) as usize;
                                out.write_all(&zeros[..n]).await?;
                                left -= n as u64;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn download(
        &self,
        m: &ObjectManifest,
        range: Range<u64>,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(), Error> {
        if range.is_empty() {
            return Ok(());
        }
        let seg_size = u64::from(m.layout.segment_size);
        let first = range.start / seg_size;
        let last = (range.end - 1) / seg_size;
        let count = m.segments.len() as u64;
        // Whole segments are fetched whole; a segment the range covers in
        // part is read block by block (see `ranged`).
        let fetches: Vec<_> = (first..=last)
            .map(|i| {
                let base = i * seg_size;
                let len = u64::from(m.segments[i as usize].plain_len);
                let from = range.start.saturating_sub(base);
                let to = (range.end - base).min(len);
                async move {
                    if from == 0 && to == len {
                        let (_, plain) = self.fetch_segment(m, i, count).await?;
                        Ok::<_, Error>((plain, true))
                    } else {
                        Ok((self.fetch_segment_range(m, i, from as u32..to as u32).await?, false))
                    }
                }
            })
            .collect();
        let mut segments = stream::iter(fetches).buffered(SEGMENTS_IN_FLIGHT);
        while let Some((plain, pooled)) = segments.try_next().await? {
            out.write_all(&plain).await?;
            if pooled {
                crate::pool::global().give(plain);
            }
        }
        Ok(())
    }

    pub(crate) async fn fetch_segment(&self, m: &ObjectManifest, i: u64, count: u64) -> Result<(u64, Vec<u8>), Error> {
        let seg = &m.segments[i as usize];
        let wanted: Vec<Wanted> = seg
            .shards
            .iter()
            .map(|s| Wanted { id: s.id, len: u64::from(seg.shard_len), holder: s.holder.clone() })
            .collect();
        let k = usize::from(m.layout.k);
        let (shards, bad) = self.transfer.get_shards(i, &wanted, k).await?;
        if !bad.is_empty() {
            tracing::warn!(segment = i, ?bad, "corrupt shards skipped");
        }
        let ids: Vec<_> = seg.shards.iter().map(|s| s.id).collect();
        let layout = m.layout.segment(seg.plain_len);
        let cipher = ObjectCipher::new(&DataKey::from_bytes(m.data_key), m.version.0);
        let pos = SegmentPos { index: i, last: i + 1 == count };
        let decoded = tokio::task::spawn_blocking(move || segment::decode(&cipher, layout, pos, &shards, &ids))
            .await
            .map_err(|_| Error::WorkerPanicked)??;
        Ok((i, decoded.plaintext))
    }

    /// The node recorded for each shard of each segment of `key`'s data
    /// versions, in order (empty for an object stored inside the index).
    pub async fn holders(&self, key: &str) -> Result<Vec<Vec<Option<cairn_net::PeerId>>>, Error> {
        let entry = self.entry(key).await?;
        let Body::Stored(s) = &entry.body else { return Ok(Vec::new()) };
        Ok(s.data
            .iter()
            .flat_map(|m| &m.segments)
            .map(|s| s.shards.iter().map(|p| p.holder.as_ref().and_then(crate::transfer::peer_of)).collect())
            .collect())
    }

    /// What is known about `key`.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, Error> {
        Ok(info_of(&self.entry(key).await?, key.to_string()))
    }

    /// The object's segments (over all its data versions) and how many of
    /// their shards' holders prove they hold them (audits that verify).
    pub async fn stat(&self, key: &str) -> Result<(ObjectInfo, Vec<SegmentHealth>), Error> {
        let entry = self.entry(key).await?;
        let info = info_of(&entry, key.to_string());
        let Body::Stored(s) = &entry.body else { return Ok((info, Vec::new())) };
        let holders: HashSet<cairn_net::PeerId> = s
            .data
            .iter()
            .flat_map(|m| &m.segments)
            .flat_map(|seg| &seg.shards)
            .filter_map(|p| crate::transfer::peer_of(p.holder.as_ref()?))
            .collect();
        let nodes = self.transfer.nodes();
        nodes.fetch_profiles(&holders.into_iter().collect::<Vec<_>>(), Duration::from_secs(5)).await;
        // Futures are collected first: a `Map` closure inside a spawned
        // future trips the compiler's higher-ranked lifetime check.
        let checks: Vec<_> = s
            .data
            .iter()
            .flat_map(|m| m.segments.iter().map(move |seg| (m, seg)))
            .enumerate()
            .map(|(i, (m, seg))| async move {
                let checks = seg.shards.iter().filter_map(|s| {
                    let peer = crate::transfer::peer_of(s.holder.as_ref()?)?;
                    let sample = crate::audit::Sample { id: s.id, len: u64::from(seg.shard_len) };
                    Some(async move {
                        crate::audit::audit(&self.transfer, peer, sample).await == crate::audit::Verdict::Verified
                    })
                });
                let results = futures::future::join_all(checks).await;
                let placed: Vec<Option<crate::policy::Candidate>> = seg
                    .shards
                    .iter()
                    .map(|s| crate::transfer::peer_of(s.holder.as_ref()?).map(|p| nodes.candidate(&p)))
                    .collect();
                let nets: Vec<_> = placed.iter().flatten().filter_map(|c| c.net).collect();
                SegmentHealth {
                    index: i as u64,
                    healthy: results.iter().filter(|ok| **ok).count(),
                    stored: results.len(),
                    k: usize::from(m.layout.k),
                    regions: placed.iter().map(|c| c.as_ref().and_then(|c| c.region.clone())).collect(),
                    crowded: nets.iter().filter(|n| nets.iter().filter(|m| m == n).count() > 1).count(),
                }
            })
            .collect();
        let health = stream::iter(checks).buffered(8).collect().await;
        Ok((info, health))
    }

    /// Objects (and, with a delimiter, common prefixes) under `prefix`,
    /// after `after`, at most `limit` of both together.
    pub async fn list(
        &self,
        prefix: &str,
        delimiter: Option<char>,
        after: &str,
        limit: usize,
    ) -> Result<Listing, Error> {
        let snap = self.snapshot().await?;
        let mut lister = Lister::new(prefix, delimiter, after, limit);
        loop {
            let batch = self.tree.list(&snap, prefix, lister.start(), LIST_BATCH).await?;
            let step = lister.feed(batch, LIST_BATCH, |key, value: Value| {
                Ok::<_, Error>(info_of(&formats::decode_entry(value.live().unwrap_or_default())?, key))
            })?;
            if step == Step::Done {
                return Ok(lister.finish());
            }
        }
    }

    /// Removes `key`; its data is deleted once no other name uses it.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        check_key(key)?;
        match self.commit(vec![Op::delete(key)]).await?.pop().flatten() {
            Some(_) => Ok(()),
            None => Err(Error::NoSuchKey { bucket: self.name.clone(), key: key.into() }),
        }
    }

    /// Starts a sweep in the background, or asks the running one to go
    /// again; when queued data is not due yet, another sweep is set for
    /// when it is.
    fn sweep_soon(&self) {
        let c = &self.collector;
        c.requested.store(true, Ordering::SeqCst);
        if self.tasks.is_shutting_down() || c.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        self.tasks.spawn(async move {
            loop {
                me.collector.requested.store(false, Ordering::SeqCst);
                match me.sweep(false).await {
                    Ok((_, Some(due_ms))) => me.sweep_at(due_ms),
                    Ok((_, None)) => {}
                    Err(e) => tracing::debug!(error = %e, "garbage sweep"),
                }
                me.collector.running.store(false, Ordering::SeqCst);
                if !me.collector.requested.load(Ordering::SeqCst) || me.collector.running.swap(true, Ordering::SeqCst) {
                    break;
                }
            }
        });
    }

    /// Sweeps again once `due_ms` has passed (unless the client stops).
    fn sweep_at(&self, due_ms: u64) {
        if self.collector.timer.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        self.tasks.spawn_until_shutdown(async move {
            let wait = due_ms.saturating_sub(now_ms()) + 1000;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            me.collector.timer.store(false, Ordering::SeqCst);
            me.sweep_soon();
        });
    }

    /// Deletes from the nodes the data that no name uses any more and that
    /// was retired at least the collector's delay ago (`all`: any time ago,
    /// for a bucket being removed). Returns the data versions deleted.
    pub async fn collect_garbage(&self, all: bool) -> Result<usize, Error> {
        Ok(self.sweep(all).await?.0)
    }

    /// A sweep: the versions deleted, and when the next queued entry is due.
    async fn sweep(&self, all: bool) -> Result<(usize, Option<u64>), Error> {
        let snap = self.tree.snapshot(Duration::ZERO).await?;
        let delay = self.collector.delay.as_millis() as u64;
        let horizon = now_ms().saturating_sub(delay);
        let queued = self.tree.list(&snap, GARBAGE_PREFIX, Bound::Unbounded, LIST_BATCH).await?;
        if queued.len() == LIST_BATCH {
            // More are queued than one sweep reads: go again after this one.
            self.collector.requested.store(true, Ordering::SeqCst);
        }
        let (due, later): (Vec<_>, Vec<_>) =
            queued.into_iter().partition(|(k, _)| all || gc::garbage_time(k).is_some_and(|t| t <= horizon));
        let next_due = later.iter().filter_map(|(k, _)| gc::garbage_time(k)).min().map(|t| t + delay);
        let due: Vec<(String, formats::Garbage)> =
            due.into_iter().filter_map(|(k, v)| Some((k, formats::decode_garbage(v.live()?).ok()?))).collect();
        if due.is_empty() {
            return Ok((0, next_due));
        }
        let used = self.used_versions(&snap).await?;
        let sweep = gc::plan(due, &used);
        for m in &sweep.delete {
            self.delete_manifest(m);
        }
        self.tree.commit(sweep.drop.into_iter().map(Op::delete).collect()).await?;
        Ok((sweep.delete.len(), next_due))
    }

    /// Every data version a live entry of `snap` uses.
    async fn used_versions(&self, snap: &Snapshot) -> Result<HashSet<ObjectVersionId>, Error> {
        let mut used = HashSet::new();
        let mut start = String::new();
        loop {
            let from = if start.is_empty() { Bound::Unbounded } else { Bound::Excluded(start.as_str()) };
            let batch = self.tree.list(snap, "", from, LIST_BATCH).await?;
            let Some((last, _)) = batch.last() else { return Ok(used) };
            start = last.clone();
            let short = batch.len() < LIST_BATCH;
            for (k, v) in batch {
                if k.starts_with(GARBAGE_PREFIX) {
                    continue;
                }
                // An entry that does not decode keeps what it may use: a
                // sweep must never delete on a guess.
                let entry = formats::decode_entry(v.live().unwrap_or_default())?;
                used.extend(entry.versions());
            }
            if short {
                return Ok(used);
            }
        }
    }

    /// Renews the leases of this bucket's index pages and of the data its
    /// entries use, skipping leaves whose leases all run past `due` (Unix
    /// seconds), and publishes its head record again (see [`crate::renew`]).
    pub async fn renew(&self, due: u64) -> Result<RenewReport, Error> {
        let snap = self.tree.snapshot(Duration::ZERO).await?;
        let refs = |key: &str, v: &Value| -> Result<Vec<Copy>, Error> {
            // Retired data is left to the collector (or to its lease).
            let (false, Some(data)) = (key.starts_with(GARBAGE_PREFIX), v.live()) else { return Ok(Vec::new()) };
            let entry = formats::decode_entry(data)?;
            let Body::Stored(stored) = &entry.body else { return Ok(Vec::new()) };
            Ok(stored
                .data
                .iter()
                .flat_map(|m| {
                    m.segments
                        .iter()
                        .flat_map(|s| &s.shards)
                        .filter_map(|s| Some(Copy { id: s.id, holder: s.holder.clone()?, key: m.data_key }))
                })
                .collect())
        };
        let cache = self.tree.pages().cache();
        let mut report = renew::renew_tree(&self.tree, &snap, cache, self.transfer.lease_secs(), due, &refs).await?;
        report.heads += u64::from(self.tree.republish().await?);
        Ok(report)
    }

    pub(crate) fn delete_manifest(&self, m: &ObjectManifest) {
        let shards: Vec<_> = m
            .segments
            .iter()
            .flat_map(|s| s.shards.iter())
            .filter_map(|s| {
                let holder = s.holder.clone()?;
                Some((s.id, holder.clone(), delete_token(&m.data_key, &s.id, &holder)))
            })
            .collect();
        self.transfer.delete_shards(shards);
    }
}

pub(crate) use crate::etag::hex;

/// The precondition that `value` is still current.
pub(crate) fn still(value: &Value) -> Expect {
    expect_current(Some(value))
}

/// Reads a whole object into memory (for small objects and tests).
pub async fn get_bytes(bucket: &Bucket, key: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    bucket.get(key, None, &mut out).await?;
    Ok(out)
}

/// Stores bytes held in memory.
pub async fn put_bytes(bucket: &Bucket, key: &str, bytes: impl Into<Bytes>) -> Result<ObjectInfo, Error> {
    let bytes: Bytes = bytes.into();
    bucket.put(key, std::io::Cursor::new(bytes), PutOptions::default()).await
}
