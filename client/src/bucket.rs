//! Objects in a bucket: put, get, list, delete and stat over the network.
//!
//! An object under [`INLINE_MAX`] bytes lives inside its index entry. A
//! larger one is encrypted and erasure-coded segment by segment on worker
//! threads while earlier segments upload, so memory stays at a few
//! segments whatever the object's size.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_crypto::{BucketKeys, DataKey, ObjectCipher, delete_token};
use cairn_proto::codec;
use cairn_proto::layout::Layout;
use cairn_proto::manifest::{ObjectManifest, SegmentManifest, ShardPlacement};
use cairn_proto::{ObjectVersionId, SegmentId};
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::index::{Op, Value};
use crate::pipeline::{Parallelism, encode_object};
use crate::segment::{self, EncodedSegment, SegmentPos};
use crate::transfer::{Outgoing, Transfer, Wanted};
use crate::tree::{Snapshot, Tree};

/// Objects smaller than this are stored inside the index.
pub const INLINE_MAX: usize = 32 * 1024;
/// Largest object key, as in S3.
pub const MAX_KEY_LEN: usize = 1024;
/// Segments uploading (or downloading) at once.
const SEGMENTS_IN_FLIGHT: usize = 2;
/// How old a cached index view may be for reads.
const READ_FRESHNESS: Duration = Duration::from_millis(500);
/// Version marker of an object entry.
const ENTRY_V1: u8 = 1;
/// Largest entry decoded.
const MAX_ENTRY: usize = 64 * 1024 * 1024;

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

impl Default for BucketSettings {
    fn default() -> Self {
        Self { k: 4, n: 6, extra: 2, segment_size: cairn_proto::layout::DEFAULT_SEGMENT_SIZE }
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

/// Where an object's bytes are.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Body {
    Inline(Vec<u8>),
    Stored(ObjectManifest),
}

/// An object's index entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    size: u64,
    modified_ms: u64,
    content_type: Option<String>,
    meta: Vec<(String, String)>,
    body: Body,
}

impl Entry {
    fn decode(v: &Value) -> Result<Self, Error> {
        codec::from_versioned("object entry", ENTRY_V1, &v.data, MAX_ENTRY).map_err(|e| Error::Index(e.to_string()))
    }

    fn info(&self, key: String) -> ObjectInfo {
        let (segments, layout) = match &self.body {
            Body::Inline(_) => (0, None),
            Body::Stored(m) => (m.segments.len(), Some(m.layout)),
        };
        ObjectInfo {
            key,
            size: self.size,
            modified_ms: self.modified_ms,
            content_type: self.content_type.clone(),
            meta: self.meta.clone(),
            segments,
            layout,
        }
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
    /// User metadata.
    pub meta: Vec<(String, String)>,
    /// Segments (0: stored inside the index).
    pub segments: usize,
    /// Erasure layout (None: stored inside the index).
    pub layout: Option<Layout>,
}

/// Options of a put.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// Content type to record.
    pub content_type: Option<String>,
    /// User metadata to record.
    pub meta: Vec<(String, String)>,
}

/// Health of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHealth {
    /// Segment index.
    pub index: u64,
    /// Shards whose holder answered an audit.
    pub healthy: usize,
    /// Shards recorded as stored.
    pub stored: usize,
    /// Shards needed.
    pub k: usize,
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Objects.
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes up to the delimiter ("directories").
    pub prefixes: Vec<String>,
    /// Listing stopped at the limit; continue after this key.
    pub next_after: Option<String>,
}

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
    tree: Tree,
    transfer: Arc<Transfer>,
    par: Parallelism,
}

impl Bucket {
    pub(crate) fn new(
        name: String,
        keys: BucketKeys,
        settings: BucketSettings,
        tree: Tree,
        transfer: Arc<Transfer>,
        par: Parallelism,
    ) -> Self {
        Self { name, keys, settings, tree, transfer, par }
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

    async fn snapshot(&self) -> Result<Snapshot, Error> {
        self.tree.snapshot(READ_FRESHNESS).await
    }

    async fn entry(&self, key: &str) -> Result<Entry, Error> {
        check_key(key)?;
        let snap = self.snapshot().await?;
        match self.tree.get(&snap, key).await? {
            Some(v) => Entry::decode(&v),
            None => Err(Error::NoSuchKey { bucket: self.name.clone(), key: key.into() }),
        }
    }

    /// Stores everything `reader` yields under `key`, replacing what was there.
    pub async fn put(
        &self,
        key: &str,
        reader: impl Read + Send + 'static,
        opts: PutOptions,
    ) -> Result<ObjectInfo, Error> {
        check_key(key)?;
        let (head, reader) = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let mut head = Vec::with_capacity(INLINE_MAX);
            (&mut reader).take(INLINE_MAX as u64).read_to_end(&mut head).map(|_| (head, reader))
        })
        .await
        .map_err(|_| Error::WorkerPanicked)??;
        let body = if head.len() < INLINE_MAX {
            Body::Inline(head)
        } else {
            Body::Stored(self.upload(std::io::Cursor::new(head).chain(reader)).await?)
        };
        let size = match &body {
            Body::Inline(b) => b.len() as u64,
            Body::Stored(m) => m.size,
        };
        let entry = Entry { size, modified_ms: now_ms(), content_type: opts.content_type, meta: opts.meta, body };
        let info = entry.info(key.to_string());
        let value = Value { stamp: (entry.modified_ms, rand::random()), data: codec::to_versioned(ENTRY_V1, &entry) };
        let replaced = self.tree.commit(vec![Op::Put(key.to_string(), value)]).await;
        match replaced {
            Ok(mut r) => {
                if let Some(Some(old)) = r.pop() {
                    self.delete_body(&old);
                }
                Ok(info)
            }
            Err(e) => {
                // Not in the index: nothing points at the shards.
                if let Body::Stored(m) = &entry.body {
                    self.delete_manifest(m);
                }
                Err(e)
            }
        }
    }

    /// Encodes and uploads an object; returns its manifest.
    async fn upload(&self, reader: impl Read + Send + 'static) -> Result<ObjectManifest, Error> {
        let layout = self.settings.layout()?;
        let data_key = DataKey::generate();
        let version = ObjectVersionId(rand::random());
        let cipher = ObjectCipher::new(&data_key, version.0);
        let (tx, rx) = mpsc::channel::<EncodedSegment>(1);
        let par = self.par;
        let encoder = tokio::task::spawn_blocking(move || {
            encode_object(reader, &cipher, layout, par, |seg| {
                tx.blocking_send(seg).map_err(|_| Error::Commit("the upload stopped".into()))
            })
        });
        let segments = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|s| (s, rx)) });
        // Keep the segments stored before a failure, so they can be deleted.
        let mut uploads =
            Box::pin(segments.map(|seg| self.upload_segment(&data_key, version, seg)).buffered(SEGMENTS_IN_FLIGHT));
        let mut stored = Vec::new();
        let mut failed = None;
        while let Some(r) = uploads.next().await {
            match r {
                Ok(s) => stored.push(s),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(uploads);
        // If an upload failed, the receiver is gone and the encoder stops.
        let summary = encoder.await.map_err(|_| Error::WorkerPanicked)?;
        let manifest = ObjectManifest { version, size: 0, layout, data_key: *data_key.as_bytes(), segments: stored };
        let error = match (failed, summary) {
            (None, Ok(sum)) => {
                let m = ObjectManifest { size: sum.size, ..manifest };
                m.validate()?;
                return Ok(m);
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
            .map(|(sid, bytes)| Outgoing {
                id: *sid,
                bytes: bytes.clone(),
                token: delete_token(data_key.as_bytes(), &sid.0),
            })
            .collect();
        let holders = self.transfer.put_shards(id.placement_key(), &outgoing, usize::from(self.settings.n)).await?;
        Ok(SegmentManifest {
            id,
            plain_len: seg.layout.plain_len,
            shard_len: seg.layout.shard_len(),
            shards: seg.ids.iter().zip(holders).map(|(id, holder)| ShardPlacement { id: *id, holder }).collect(),
        })
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
        match &entry.body {
            Body::Inline(b) => out.write_all(&b[range.start as usize..range.end as usize]).await?,
            Body::Stored(m) => self.download(m, range, out).await?,
        }
        out.flush().await?;
        Ok(entry.info(key.to_string()))
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
        let fetches: Vec<_> = (first..=last).map(|i| self.fetch_segment(m, i, count)).collect();
        let mut segments = stream::iter(fetches).buffered(SEGMENTS_IN_FLIGHT);
        while let Some((i, plain)) = segments.try_next().await? {
            let base = i * seg_size;
            let from = range.start.saturating_sub(base) as usize;
            let to = ((range.end - base) as usize).min(plain.len());
            out.write_all(&plain[from..to]).await?;
            crate::pool::global().give(plain);
        }
        Ok(())
    }

    async fn fetch_segment(&self, m: &ObjectManifest, i: u64, count: u64) -> Result<(u64, Vec<u8>), Error> {
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

    /// The node recorded for each shard of each segment of `key` (empty
    /// for an object stored inside the index).
    pub async fn holders(&self, key: &str) -> Result<Vec<Vec<Option<cairn_net::PeerId>>>, Error> {
        let entry = self.entry(key).await?;
        let Body::Stored(m) = &entry.body else { return Ok(Vec::new()) };
        Ok(m.segments
            .iter()
            .map(|s| s.shards.iter().map(|p| p.holder.as_ref().and_then(crate::transfer::peer_of)).collect())
            .collect())
    }

    /// What is known about `key`.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, Error> {
        Ok(self.entry(key).await?.info(key.to_string()))
    }

    /// The object's segments and how many of their shards' holders answer.
    pub async fn stat(&self, key: &str) -> Result<(ObjectInfo, Vec<SegmentHealth>), Error> {
        let entry = self.entry(key).await?;
        let Body::Stored(m) = &entry.body else { return Ok((entry.info(key.to_string()), Vec::new())) };
        // Futures are collected first: a `Map` closure inside a spawned
        // future trips the compiler's higher-ranked lifetime check.
        let checks: Vec<_> = m
            .segments
            .iter()
            .enumerate()
            .map(|(i, seg)| async move {
                let checks = seg.shards.iter().filter_map(|s| {
                    let peer = crate::transfer::peer_of(s.holder.as_ref()?)?;
                    let client = self.transfer.client(peer);
                    let len = u64::from(seg.shard_len).min(64);
                    Some(async move { client.audit(s.id, rand::random(), 0, len).await.is_ok() })
                });
                let results = futures::future::join_all(checks).await;
                SegmentHealth {
                    index: i as u64,
                    healthy: results.iter().filter(|ok| **ok).count(),
                    stored: results.len(),
                    k: usize::from(m.layout.k),
                }
            })
            .collect();
        let health = stream::iter(checks).buffered(8).collect().await;
        Ok((entry.info(key.to_string()), health))
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
        let mut listing = Listing::default();
        let mut after = after.to_string();
        let limit = limit.max(1);
        loop {
            let batch = self.tree.list(&snap, prefix, &after, 1000).await?;
            let Some((last, _)) = batch.last() else { return Ok(listing) };
            let last = last.clone();
            for (key, value) in batch {
                if listing.objects.len() + listing.prefixes.len() >= limit {
                    listing.next_after =
                        listing.objects.last().map(|o| o.key.clone()).max(listing.prefixes.last().cloned());
                    return Ok(listing);
                }
                let rest = &key[prefix.len()..];
                if let Some(d) = delimiter
                    && let Some(at) = rest.find(d)
                {
                    let p = key[..prefix.len() + at + d.len_utf8()].to_string();
                    if listing.prefixes.last() != Some(&p) {
                        listing.prefixes.push(p);
                    }
                    continue;
                }
                listing.objects.push(Entry::decode(&value)?.info(key));
            }
            after = last;
        }
    }

    /// Removes `key` and deletes its shards.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        check_key(key)?;
        let mut replaced = self.tree.commit(vec![Op::Delete(key.to_string())]).await?;
        match replaced.pop().flatten() {
            Some(old) => {
                self.delete_body(&old);
                Ok(())
            }
            None => Err(Error::NoSuchKey { bucket: self.name.clone(), key: key.into() }),
        }
    }

    /// Deletes the segments of a replaced or removed entry (in the background).
    fn delete_body(&self, old: &Value) {
        if let Ok(Entry { body: Body::Stored(m), .. }) = Entry::decode(old) {
            self.delete_manifest(&m);
        }
    }

    fn delete_manifest(&self, m: &ObjectManifest) {
        let shards: Vec<_> = m
            .segments
            .iter()
            .flat_map(|s| s.shards.iter())
            .filter_map(|s| Some((s.id, s.holder.clone()?, delete_token(&m.data_key, &s.id.0))))
            .collect();
        self.transfer.delete_shards(shards);
    }
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
