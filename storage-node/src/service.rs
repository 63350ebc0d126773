//! Serving `/cairn/shard/1` streams: admission, bounded decoding, streaming
//! bodies to and from the shard store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_net::store::{BackendError, Heads, Offer};
use cairn_proto::codec::{self, FRAME_HEADER_LEN};
use cairn_proto::head::{HeadRecord, RecordRefused};
use cairn_proto::profile::NodeProfile;
use cairn_proto::shard::{ByteRange, MAX_MESSAGE_SIZE, NodeState, Request, Response, ShardError};
use cairn_proto::{ShardId, shard};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::leaving::Leaving;
use crate::limits::{Limiter, RecordQuota, Refusal};
use crate::metrics::Metrics;
use crate::shard_file::{ChunkBuf, ShardWriter};
use crate::store::{Body, NewBody, ShardStore};
use crate::usage::Book;

/// Bytes per disk write while a put streams in; two buffers per stream.
const PUT_CHUNK: usize = 512 * 1024;
/// A put's writer and the buffer it just wrote.
type Written = (ShardWriter, ChunkBuf);
/// Bytes per disk read when serving a get; two are in flight per stream,
/// so 256 streams hold at most 256 MiB.
const GET_CHUNK: usize = 512 * 1024;

/// Everything a stream handler needs.
#[derive(Debug)]
pub struct Service {
    /// The store.
    pub store: Arc<ShardStore>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Per-peer admission.
    pub limiter: Arc<Limiter>,
    /// Streams all peers may have open at once.
    pub streams: Arc<Semaphore>,
    /// How long a peer may stay silent mid-request.
    pub idle: Duration,
    /// How long any request may take, before its body's time.
    pub deadline: Duration,
    /// The slowest body transfer the deadline allows for, in bytes/s.
    pub min_rate: u64,
    /// Write shard bodies with direct I/O where possible.
    pub direct_io: bool,
    /// The head records this node holds (shared with Kademlia's store).
    pub heads: Arc<Heads>,
    /// Longest lease granted by a put or a renew.
    pub max_lease_secs: u64,
    /// New head records per peer and hour.
    pub record_quota: Arc<RecordQuota>,
    /// Whether the node is leaving (then it accepts no new shards).
    pub leaving: Arc<Leaving>,
    /// The node's identity, which signs its profile.
    pub identity: cairn_net::identity::Keypair,
    /// The region and zone the operator declared.
    pub region: (String, String),
    /// What each peer uses.
    pub usage: Arc<Book>,
}

/// What a put asks to store.
#[derive(Debug)]
struct Upload {
    shard: ShardId,
    len: u64,
    owner: [u8; 32],
    lease_secs: u64,
}

/// Body bytes one request moved, for the usage ledger.
#[derive(Debug, Default)]
struct Moved {
    received: u64,
    sent: u64,
}

/// Accepts streams until `cancel`, then waits up to `grace` for the ones in
/// flight and aborts the rest.
pub async fn run(
    service: Arc<Service>,
    mut incoming: cairn_net::IncomingStreams,
    cancel: CancellationToken,
    grace: Duration,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            next = incoming.next() => match next {
                None => break,
                Some((peer, stream)) => {
                    let service = Arc::clone(&service);
                    tasks.spawn(async move { service.serve(peer, stream).await });
                }
            },
        }
    }
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = tasks.len(), "aborting streams still open at shutdown");
        tasks.shutdown().await;
    }
}

/// Maps any failure of our own side to [`ShardError::Internal`].
fn internal<E>(_: E) -> Option<ShardError> {
    Some(ShardError::Internal)
}

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Stores an offered head record, or says which record the node holds
/// instead (see [`Heads::offer`]).
fn offer_head(heads: &Heads, record: &HeadRecord) -> Result<Response, Option<ShardError>> {
    let id = record.record_id();
    match heads.offer(&id, record) {
        Ok(()) => Ok(Response::HeadStored),
        Err(Offer::Refused(RecordRefused::Stale { .. })) => match heads.get(&id) {
            Some(held) => Ok(Response::HeadHeld(held)),
            None => Err(Some(ShardError::Internal)),
        },
        Err(Offer::Refused(r)) => Err(Some(ShardError::HeadRefused(r))),
        Err(Offer::Malformed(_)) => Err(Some(ShardError::Malformed)),
        Err(Offer::Backend(BackendError::Full { max })) => Err(Some(ShardError::RecordsFull { max: max as u64 })),
        Err(Offer::Backend(e)) => {
            tracing::error!(error = %e, "cannot store a head record");
            Err(Some(ShardError::Internal))
        }
    }
}

/// Removes a temp file unless the put committed it.
struct TempGuard(Option<std::path::PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Service {
    async fn serve(&self, peer: PeerId, mut stream: Stream) {
        let Ok(_slot) = Arc::clone(&self.streams).try_acquire_owned() else {
            self.refuse(&mut stream, ShardError::RateLimited { retry_after_ms: 100 }).await;
            return;
        };
        let _admitted = match self.limiter.admit(peer, Instant::now()) {
            Ok(a) => a,
            Err(Refusal::TooManyStreams) => {
                return self.refuse(&mut stream, ShardError::RateLimited { retry_after_ms: 50 }).await;
            }
            Err(Refusal::TooFast { retry_after_ms }) => {
                return self.refuse(&mut stream, ShardError::RateLimited { retry_after_ms }).await;
            }
        };
        self.metrics.active_streams.fetch_add(1, Ordering::Relaxed);
        let mut moved = Moved::default();
        let result = self.handle(peer, &mut stream, &mut moved).await;
        self.metrics.active_streams.fetch_sub(1, Ordering::Relaxed);
        self.usage.lock().record(&peer.to_bytes(), moved.received, moved.sent);
        match result {
            Ok(()) => {
                // Finish both directions: wait for the requester's end of
                // stream so that dropping ours does not stop its sending side
                // while it is still closing (bounded in bytes and time).
                let _ = stream.close().await;
                let mut rest = [0u8; 1024];
                let drain = async {
                    let mut left = 16 * rest.len();
                    while left > 0 {
                        match stream.read(&mut rest).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => left = left.saturating_sub(n),
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                return;
            }
            Err(Some(e)) => self.refuse(&mut stream, e).await,
            Err(None) => tracing::debug!(%peer, "stream dropped"),
        }
        let _ = stream.close().await;
    }

    async fn refuse(&self, stream: &mut Stream, e: ShardError) {
        self.metrics.error(&e);
        let _ = self.timed(stream.write_all(&Response::Error(e).to_frame())).await;
        let _ = stream.close().await;
    }

    /// Runs `f` under the idle timeout.
    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> Result<T, Option<ShardError>> {
        match tokio::time::timeout(self.idle, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) | Err(_) => Err(None),
        }
    }

    async fn respond(&self, stream: &mut Stream, r: Response) -> Result<(), Option<ShardError>> {
        self.timed(stream.write_all(&r.to_frame())).await
    }

    /// Serves one request. `Err(Some(e))` is answered to the peer;
    /// `Err(None)` means the stream is unusable.
    async fn handle(&self, peer: PeerId, stream: &mut Stream, moved: &mut Moved) -> Result<(), Option<ShardError>> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.timed(stream.read_exact(&mut header)).await?;
        let len = codec::frame_len("request", header, MAX_MESSAGE_SIZE).map_err(|_| Some(ShardError::Malformed))?;
        let mut body = vec![0u8; len];
        self.timed(stream.read_exact(&mut body)).await?;
        let req = Request::from_body(&body).map_err(|_| Some(ShardError::Malformed))?;
        // A whole request has a deadline: the base, plus its body at the
        // slowest rate allowed. A peer that trickles bytes (each within
        // the idle timeout) is cut off at it.
        let body = match &req {
            Request::Put { len, .. } => *len,
            Request::Get { range: Some(r), .. } => r.len,
            Request::Get { range: None, .. } => self.store.max_shard(),
            _ => 0,
        };
        let deadline = self.deadline + Duration::from_secs(body / self.min_rate.max(1));
        match tokio::time::timeout(deadline, self.dispatch(peer, stream, req, moved)).await {
            Ok(r) => r,
            Err(_) => {
                self.metrics.deadlines.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, ?deadline, "request past its deadline");
                Err(None)
            }
        }
    }

    /// Serves a decoded request.
    async fn dispatch(
        &self,
        peer: PeerId,
        stream: &mut Stream,
        req: Request,
        moved: &mut Moved,
    ) -> Result<(), Option<ShardError>> {
        match req {
            Request::Put { shard, len, owner, lease_secs } => {
                if self.leaving.until().is_some() {
                    return Err(Some(ShardError::Leaving));
                }
                self.charge(peer, len)?;
                self.put(peer, stream, Upload { shard, len, owner, lease_secs }, moved).await?;
                self.respond(stream, Response::Stored).await
            }
            Request::Get { shard, range } => self.get(peer, stream, shard, range, moved).await,
            Request::Delete { shard, token } => {
                let store = Arc::clone(&self.store);
                tokio::task::spawn_blocking(move || store.delete(&shard, &token))
                    .await
                    .map_err(|_| Some(ShardError::Internal))?
                    .map_err(Some)?;
                self.metrics.deletes.fetch_add(1, Ordering::Relaxed);
                self.respond(stream, Response::Deleted).await
            }
            // Retired: its answer could not be checked by the auditor.
            Request::Audit { .. } => Err(Some(ShardError::Malformed)),
            Request::Prove { shard, range } => {
                let store = Arc::clone(&self.store);
                let slice = tokio::task::spawn_blocking(move || store.prove(&shard, range))
                    .await
                    .map_err(internal)?
                    .map_err(Some)?;
                self.respond(stream, Response::Proof { len: slice.len() as u64 }).await?;
                self.timed(stream.write_all(&slice)).await?;
                moved.sent += slice.len() as u64;
                self.metrics.proofs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Request::Stats => self.respond(stream, Response::Stats(self.store.stats())).await,
            Request::Status => {
                let state = NodeState { stats: self.store.stats(), leaving_until: self.leaving.until() };
                self.respond(stream, Response::Status(state)).await
            }
            Request::Profile => {
                let stats = self.store.stats();
                let profile = NodeProfile {
                    region: self.region.0.clone(),
                    zone: self.region.1.clone(),
                    capacity: stats.capacity,
                    used: stats.used,
                    leaving_until: self.leaving.until(),
                    issued: now_secs(),
                };
                self.respond(stream, Response::Profile(cairn_net::profile::sign(&self.identity, profile))).await
            }
            Request::Usage => {
                let id = peer.to_bytes();
                let mut u = self.usage.lock().of(&id);
                // Stored bytes as of now, not of the last tick.
                u.stored = self.store.peer_usage(&id);
                self.respond(stream, Response::Usage(u)).await
            }
            Request::GetHead { record } => {
                let heads = Arc::clone(&self.heads);
                let held = tokio::task::spawn_blocking(move || heads.get(&record)).await.map_err(internal)?;
                self.metrics.head_gets.fetch_add(1, Ordering::Relaxed);
                self.respond(stream, Response::Head(held)).await
            }
            Request::Renew { lease_secs, shards } => {
                let store = Arc::clone(&self.store);
                let until = now_secs().saturating_add(lease_secs.min(self.max_lease_secs));
                let n = shards.len() as u64;
                let renewed = tokio::task::spawn_blocking(move || store.renew(&shards, until))
                    .await
                    .map_err(internal)?
                    .map_err(|e| {
                        tracing::error!(error = %e, "renew failed");
                        Some(ShardError::Internal)
                    })?;
                self.metrics.renewals.fetch_add(n, Ordering::Relaxed);
                self.respond(stream, Response::Renewed(renewed)).await
            }
            Request::PutHead { record } => {
                let (heads, quota) = (Arc::clone(&self.heads), Arc::clone(&self.record_quota));
                let answer = tokio::task::spawn_blocking(move || {
                    // A record the node does not hold counts against the
                    // sender's quota of new records. (Whether it holds one
                    // is a point read: decoding it and checking its
                    // signature, twice per publish, is left to the offer.)
                    if !heads.holds(&record.record_id()) {
                        quota
                            .take(peer, Instant::now())
                            .map_err(|retry_after_ms| Some(ShardError::RateLimited { retry_after_ms }))?;
                    }
                    offer_head(&heads, &record)
                })
                .await
                .map_err(internal)?;
                self.metrics.head_puts.fetch_add(1, Ordering::Relaxed);
                self.respond(stream, answer?).await
            }
        }
    }

    /// Opens a stored shard's bytes and checks the range asked for.
    async fn open_range(
        &self,
        shard: ShardId,
        range: Option<ByteRange>,
    ) -> Result<(Body, ByteRange), Option<ShardError>> {
        let store = Arc::clone(&self.store);
        let (meta, body) = tokio::task::spawn_blocking(move || store.open_shard(&shard))
            .await
            .map_err(|_| Some(ShardError::Internal))?
            .map_err(|_| Some(ShardError::Internal))?
            .ok_or(Some(ShardError::NotFound(shard)))?;
        let range = range.unwrap_or(ByteRange { offset: 0, len: meta.len });
        if !range.within(meta.len) {
            return Err(Some(ShardError::BadRange { offset: range.offset, len: range.len, total: meta.len }));
        }
        Ok((body, range))
    }

    /// Charges a body of `bytes` to the peer's byte rate.
    fn charge(&self, peer: PeerId, bytes: u64) -> Result<(), Option<ShardError>> {
        self.limiter
            .charge(peer, bytes, Instant::now())
            .map_err(|retry_after_ms| Some(ShardError::RateLimited { retry_after_ms }))
    }

    async fn get(
        &self,
        peer: PeerId,
        stream: &mut Stream,
        shard: ShardId,
        range: Option<ByteRange>,
        moved: &mut Moved,
    ) -> Result<(), Option<ShardError>> {
        let (body, range) = self.open_range(shard, range).await?;
        self.charge(peer, range.len)?;
        self.respond(stream, Response::Data { len: range.len }).await?;
        let file = match body {
            Body::File(f) => Arc::new(f),
            Body::Small(bytes) => {
                // `open_range` checked the range against the length.
                let (from, to) = (range.offset as usize, (range.offset + range.len) as usize);
                let slice = bytes.get(from..to).ok_or(None)?;
                self.timed(stream.write_all(slice)).await?;
                self.metrics.bytes_out.fetch_add(range.len, Ordering::Relaxed);
                moved.sent += range.len;
                self.metrics.gets.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        // One `pread` per chunk on the blocking pool, the next one started
        // before the current chunk is sent: the disk and the network
        // overlap. The two buffers take turns.
        let read = |offset: u64, len: usize, mut buf: Vec<u8>| {
            let file = Arc::clone(&file);
            tokio::task::spawn_blocking(move || {
                buf.resize(len, 0);
                std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, offset).map(|()| buf)
            })
        };
        let end = range.offset + range.len;
        let chunk = |at: u64| (end - at).min(GET_CHUNK as u64) as usize;
        let mut next = (range.offset < end).then(|| read(range.offset, chunk(range.offset), Vec::new()));
        let mut spare = Vec::new();
        let mut at = range.offset;
        while let Some(pending) = next.take() {
            // The header is sent: a failure now can only drop the stream.
            let buf = pending.await.map_err(|_| None)?.map_err(|_| None)?;
            at += buf.len() as u64;
            if at < end {
                next = Some(read(at, chunk(at), std::mem::take(&mut spare)));
            }
            self.timed(stream.write_all(&buf)).await?;
            self.metrics.bytes_out.fetch_add(buf.len() as u64, Ordering::Relaxed);
            moved.sent += buf.len() as u64;
            spare = buf;
        }
        self.metrics.gets.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// What to answer when writing a shard body failed: a full disk is
    /// `NoSpace` (the peer places the shard elsewhere; what the node
    /// holds is untouched), anything else `Internal`. Both are logged.
    fn write_failed(&self, e: &std::io::Error, len: u64) -> Option<ShardError> {
        if e.kind() == std::io::ErrorKind::StorageFull {
            let available = self.store.disk_room();
            tracing::warn!(
                needed = len,
                available,
                "the disk is full: refusing new shards (free space on the disk, or lower `capacity`)"
            );
            Some(ShardError::NoSpace { needed: len, available: available.min(len.saturating_sub(1)) })
        } else {
            tracing::error!(error = %e, "cannot write a shard");
            Some(ShardError::Internal)
        }
    }

    /// What to answer when recording a received shard failed: a full disk
    /// (its file, or the database's log for a small shard) is `NoSpace`,
    /// as in [`Self::write_failed`]; anything else `Internal`, logged.
    fn commit_failed(&self, e: &crate::Error, len: u64) -> Option<ShardError> {
        let full = match e {
            crate::Error::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            crate::Error::Db(d) => d.kind() == rocksdb::ErrorKind::IOError && d.as_ref().contains("No space left"),
            _ => false,
        };
        if full {
            return self.write_failed(&std::io::ErrorKind::StorageFull.into(), len);
        }
        tracing::error!(error = %e, "cannot commit a shard");
        Some(ShardError::Internal)
    }

    /// Receives, hashes and stores a shard body; leaves nothing behind on failure.
    async fn put(
        &self,
        peer: PeerId,
        stream: &mut Stream,
        upload: Upload,
        moved: &mut Moved,
    ) -> Result<(), Option<ShardError>> {
        if upload.len > shard::MAX_SHARD_SIZE.min(self.store.max_shard()) {
            return Err(Some(ShardError::TooLarge { len: upload.len, max: self.store.max_shard() }));
        }
        if self.store.keeps_small(upload.len) {
            return self.put_small(peer, stream, upload, moved).await;
        }
        let Upload { shard, len, owner, lease_secs } = upload;
        let reservation = {
            let store = Arc::clone(&self.store);
            let peer = peer.to_bytes();
            tokio::task::spawn_blocking(move || store.reserve(&shard, len, &peer))
                .await
                .map_err(|_| Some(ShardError::Internal))?
                .map_err(Some)?
        };
        let temp = self.store.temp_path();
        let guard = TempGuard(Some(temp.clone()));
        let direct = self.direct_io;
        let path = temp.clone();
        let writer = tokio::task::spawn_blocking(move || ShardWriter::create(&path, direct))
            .await
            .map_err(internal)?
            .map_err(|e| self.write_failed(&e, len))?;
        // Two buffers: one fills from the network while the blocking pool
        // hashes and writes the other.
        let mut idle = Some(writer);
        let mut writing: Option<tokio::task::JoinHandle<std::io::Result<Written>>> = None;
        let mut spare = None;
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(PUT_CHUNK);
            let mut buf = spare.take().unwrap_or_else(|| ChunkBuf::new(PUT_CHUNK.min(len as usize)));
            self.read_body(stream, buf.fill(n), moved).await?;
            left -= n as u64;
            if let Some(w) = writing.take() {
                let (writer, old) = w.await.map_err(internal)?.map_err(|e| self.write_failed(&e, len))?;
                idle = Some(writer);
                spare = Some(old);
            }
            let mut writer = idle.take().ok_or(Some(ShardError::Internal))?;
            writing = Some(tokio::task::spawn_blocking(move || {
                writer.write(&buf)?;
                Ok((writer, buf))
            }));
        }
        if let Some(w) = writing.take() {
            let (writer, _) = w.await.map_err(internal)?.map_err(|e| self.write_failed(&e, len))?;
            idle = Some(writer);
        }
        let writer = idle.ok_or(Some(ShardError::Internal))?;
        if writer.hash() != shard.0 {
            return Err(Some(ShardError::HashMismatch(shard)));
        }
        tokio::task::spawn_blocking(move || writer.sync())
            .await
            .map_err(internal)?
            .map_err(|e| self.write_failed(&e, len))?;
        let expires_at = now_secs().saturating_add(lease_secs.min(self.max_lease_secs));
        let store = Arc::clone(&self.store);
        let mut guard = guard;
        let path = guard.0.take();
        tokio::task::spawn_blocking(move || {
            let path = path.unwrap_or_default();
            let r = store.commit(&shard, NewBody::File(&path), len, owner, expires_at, reservation);
            if r.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            r
        })
        .await
        .map_err(|_| Some(ShardError::Internal))?
        .map_err(|e| self.commit_failed(&e, len))?;
        self.metrics.puts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Fills `buf` from a shard body, under the idle timeout.
    async fn read_body(
        &self,
        stream: &mut Stream,
        buf: &mut [u8],
        moved: &mut Moved,
    ) -> Result<(), Option<ShardError>> {
        let mut filled = 0;
        while filled < buf.len() {
            let got = self.timed(stream.read(&mut buf[filled..])).await?;
            if got == 0 {
                return Err(None); // the peer hung up mid-body
            }
            filled += got;
            self.metrics.bytes_in.fetch_add(got as u64, Ordering::Relaxed);
            moved.received += got as u64;
        }
        Ok(())
    }

    /// Receives a small shard whole, then in one blocking call reserves
    /// its space, checks its hash and stores it in the metadata's synced
    /// batch ([`crate::store`]: no file). A refusal for space comes after
    /// the body (at most `small_shard_size`), not before it.
    async fn put_small(
        &self,
        peer: PeerId,
        stream: &mut Stream,
        upload: Upload,
        moved: &mut Moved,
    ) -> Result<(), Option<ShardError>> {
        let Upload { shard, len, owner, lease_secs } = upload;
        let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| Some(ShardError::Internal))?];
        self.read_body(stream, &mut bytes, moved).await?;
        let expires_at = now_secs().saturating_add(lease_secs.min(self.max_lease_secs));
        let store = Arc::clone(&self.store);
        let peer = peer.to_bytes();
        tokio::task::spawn_blocking(move || {
            let reservation = match store.reserve(&shard, len, &peer) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            if !shard.matches(&bytes) {
                return Ok(Err(ShardError::HashMismatch(shard)));
            }
            store.commit(&shard, NewBody::Small(&bytes), len, owner, expires_at, reservation).map(Ok)
        })
        .await
        .map_err(|_| Some(ShardError::Internal))?
        .map_err(|e| self.commit_failed(&e, len))?
        .map_err(Some)?;
        self.metrics.puts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
