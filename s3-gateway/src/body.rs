//! Request and response bodies.
//!
//! A PUT's body streams from the socket into the client's encoder through
//! a blocking reader ([`Checked`]) that counts the bytes and hashes them
//! for Content-MD5 and `x-amz-checksum-*`; at the end it compares, and a
//! mismatch fails the read, so the put stores nothing. A GET's body is
//! written by the client into a bounded pipe whose other end is the
//! response: a slow reader slows the download, and a failure mid-way ends
//! the response with an error rather than a short body that looks whole.

use std::io::Read;

use bytes::Bytes;
use cairn_client::{Bucket, ChecksumAlgorithm, Opened};
use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::TrailingHeaders;
use s3s::crypto::{Checksum as _, Crc32, Crc32c, Crc64Nvme, Sha1, Sha256};
use s3s::dto::StreamingBlob;
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tokio_util::io::ReaderStream;

/// Bytes a GET keeps between the decoder and the socket.
const PIPE: usize = 1 << 20;

/// Why reading a request body failed (carried inside `std::io::Error`).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// A digest the client sent does not match the bytes.
    #[error("the {0} sent does not match the body")]
    BadDigest(&'static str),
    /// The body is larger than allowed.
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    /// The connection ended or failed before the body was complete.
    #[error("the body ended early: {0}")]
    Incomplete(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The [`BodyError`] inside an I/O error, if any.
pub fn body_error(e: &std::io::Error) -> Option<&BodyError> {
    e.get_ref()?.downcast_ref::<BodyError>()
}

/// A running checksum of one algorithm.
enum Hasher {
    Crc32(Crc32),
    Crc32c(Crc32c),
    Crc64Nvme(Crc64Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    fn new(a: ChecksumAlgorithm) -> Self {
        match a {
            ChecksumAlgorithm::Crc32 => Self::Crc32(Crc32::new()),
            ChecksumAlgorithm::Crc32c => Self::Crc32c(Crc32c::new()),
            ChecksumAlgorithm::Crc64Nvme => Self::Crc64Nvme(Crc64Nvme::new()),
            ChecksumAlgorithm::Sha1 => Self::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(b),
            Self::Crc32c(h) => h.update(b),
            Self::Crc64Nvme(h) => h.update(b),
            Self::Sha1(h) => h.update(b),
            Self::Sha256(h) => h.update(b),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Crc32(h) => h.finalize().as_ref().to_vec(),
            Self::Crc32c(h) => h.finalize().as_ref().to_vec(),
            Self::Crc64Nvme(h) => h.finalize().as_ref().to_vec(),
            Self::Sha1(h) => h.finalize().as_ref().to_vec(),
            Self::Sha256(h) => h.finalize().as_ref().to_vec(),
        }
    }
}

/// The S3 header name of a checksum.
pub fn header_name(a: ChecksumAlgorithm) -> &'static str {
    match a {
        ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
        ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
        ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
        ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
        ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
    }
}

/// Every algorithm, for parsing.
pub const ALGORITHMS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Sha256,
];

/// What a body must match.
#[derive(Debug, Default)]
pub struct Expect {
    /// Content-MD5, decoded.
    pub md5: Option<[u8; 16]>,
    /// Checksums sent as headers, decoded.
    pub sums: Vec<(ChecksumAlgorithm, Vec<u8>)>,
    /// Checksums announced for the trailer (`x-amz-trailer`).
    pub trailed: Vec<ChecksumAlgorithm>,
    /// Where the trailer arrives.
    pub trailers: Option<TrailingHeaders>,
    /// Largest body accepted.
    pub max: u64,
}

/// A request body as a blocking reader that verifies what it read.
pub struct Checked<R> {
    inner: R,
    md5: Option<(Md5, [u8; 16])>,
    sums: Vec<(ChecksumAlgorithm, Hasher, Option<Vec<u8>>)>,
    trailers: Option<TrailingHeaders>,
    len: u64,
    max: u64,
    done: bool,
}

impl<R> std::fmt::Debug for Checked<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked").field("len", &self.len).finish_non_exhaustive()
    }
}

impl<R: Read> Checked<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, expect: Expect) -> Self {
        let mut sums: Vec<_> = expect.sums.into_iter().map(|(a, v)| (a, Hasher::new(a), Some(v))).collect();
        for a in expect.trailed {
            if !sums.iter().any(|(b, _, _)| *b == a) {
                sums.push((a, Hasher::new(a), None));
            }
        }
        Self {
            inner,
            md5: expect.md5.map(|m| (Md5::new(), m)),
            sums,
            trailers: expect.trailers,
            len: 0,
            max: expect.max,
            done: false,
        }
    }

    fn finish(&mut self) -> Result<(), BodyError> {
        if let Some((h, want)) = self.md5.take()
            && h.finalize().as_slice() != want
        {
            return Err(BodyError::BadDigest("Content-MD5"));
        }
        let trailer = self.trailers.as_ref().and_then(|t| t.take());
        for (a, h, want) in std::mem::take(&mut self.sums) {
            let want = match want {
                Some(w) => Some(w),
                None => trailer
                    .as_ref()
                    .and_then(|t| t.get(header_name(a)))
                    .and_then(|v| v.to_str().ok())
                    .and_then(decode_b64),
            };
            // A checksum announced but never sent is refused too.
            if want.as_deref() != Some(h.finish().as_slice()) {
                return Err(BodyError::BadDigest(header_name(a)));
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if !self.done {
                self.done = true;
                self.finish().map_err(std::io::Error::other)?;
            }
            return Ok(0);
        }
        self.len += n as u64;
        if self.len > self.max {
            return Err(std::io::Error::other(BodyError::TooLarge(self.max)));
        }
        if let Some((h, _)) = &mut self.md5 {
            h.update(&buf[..n]);
        }
        for (_, h, _) in &mut self.sums {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Decodes standard base64.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()
}

/// Encodes standard base64.
pub fn encode_b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Bytes handed from the socket to the encoder at a time.
const CHUNK: usize = 1 << 20;
/// Chunks buffered between them.
const CHUNKS: usize = 4;

/// A request body as a blocking reader (to be read off the runtime). A
/// task gathers the body's frames into 1 MiB chunks and hands them over a
/// bounded channel: one hand-over per MiB rather than per frame, and the
/// socket is read only as fast as the encoder takes.
pub fn reader(body: StreamingBlob, expect: Expect) -> Checked<ChunkReader> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHUNKS);
    tokio::spawn(async move {
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.next().await {
            match frame {
                Ok(b) if buf.is_empty() && b.len() >= CHUNK => {
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
                Ok(b) => {
                    buf.extend_from_slice(&b);
                    if buf.len() >= CHUNK && tx.send(Ok(buf.split().freeze())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(BodyError::Incomplete(e)))).await;
                    return;
                }
            }
        }
        if !buf.is_empty() {
            let _ = tx.send(Ok(buf.freeze())).await;
        }
    });
    Checked::new(ChunkReader { rx, cur: Bytes::new() }, expect)
}

/// The blocking end of [`reader`].
#[derive(Debug)]
pub struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

/// Reads `range` of an opened object into a bounded pipe on a task of its
/// own (holding `budget` until it ends); the task's result says whether
/// what went into the pipe is whole.
fn spawn_read(
    bucket: Bucket,
    object: Opened,
    range: std::ops::Range<u64>,
    budget: Option<tokio::sync::OwnedSemaphorePermit>,
) -> (DuplexStream, JoinHandle<Result<(), cairn_client::Error>>) {
    let (mut w, r) = tokio::io::duplex(PIPE);
    let task = tokio::spawn(async move {
        let _budget = budget;
        // A reader that went away ends the write with an error: fine.
        bucket.read(&object, range, &mut w).await
    });
    (r, task)
}

/// Streams `range` of an opened object as a response body.
/// `budget` (the memory share the download holds) is released when it ends.
pub fn download(
    bucket: Bucket,
    object: Opened,
    range: std::ops::Range<u64>,
    budget: Option<tokio::sync::OwnedSemaphorePermit>,
) -> StreamingBlob {
    let (r, task) = spawn_read(bucket, object, range, budget);
    let tail = futures::stream::once(async move {
        match task.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "download failed mid-way");
                Some(Err(std::io::Error::other(e)))
            }
            Err(e) => Some(Err(std::io::Error::other(e))),
        }
    })
    .filter_map(futures::future::ready);
    StreamingBlob::wrap(ReaderStream::with_capacity(r, 256 * 1024).chain(tail))
}

/// Reads `range` of an opened object as a blocking reader (the source of a
/// copy between buckets); a failed or short download fails the read, never
/// a silent short body.
pub fn pipe(bucket: Bucket, object: Opened, range: std::ops::Range<u64>) -> impl Read + Send + 'static {
    let want = range.end - range.start;
    let (r, task) = spawn_read(bucket, object, range, None);
    let handle = tokio::runtime::Handle::current();
    Piped { inner: tokio_util::io::SyncIoBridge::new(r), task: Some(task), handle, got: 0, want }
}

struct Piped {
    inner: tokio_util::io::SyncIoBridge<DuplexStream>,
    task: Option<JoinHandle<Result<(), cairn_client::Error>>>,
    handle: tokio::runtime::Handle,
    got: u64,
    want: u64,
}

impl Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.got += n as u64;
        if n == 0
            && !buf.is_empty()
            && let Some(task) = self.task.take()
        {
            match self.handle.block_on(task) {
                Ok(Ok(())) if self.got == self.want => {}
                Ok(Ok(())) => return Err(std::io::Error::other("the source ended early")),
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: impl Read) -> std::io::Result<Vec<u8>> {
        let mut r = r;
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn a_body_that_matches_its_digests_reads_and_one_that_does_not_fails_at_the_end() {
        let data = b"hello world".to_vec();
        let md5: [u8; 16] = Md5::digest(&data).into();
        let crc = Crc32::checksum(&data).as_ref().to_vec();
        let ok = Expect {
            md5: Some(md5),
            sums: vec![(ChecksumAlgorithm::Crc32, crc.clone())],
            max: 100,
            ..Default::default()
        };
        assert_eq!(read_all(Checked::new(&data[..], ok)).expect("read"), data);
        let bad = Expect { sums: vec![(ChecksumAlgorithm::Crc32, vec![0, 0, 0, 0])], max: 100, ..Default::default() };
        let e = read_all(Checked::new(&data[..], bad)).expect_err("mismatch");
        assert!(matches!(body_error(&e), Some(BodyError::BadDigest("x-amz-checksum-crc32"))));
        let big = Expect { max: 5, ..Default::default() };
        let e = read_all(Checked::new(&data[..], big)).expect_err("too large");
        assert!(matches!(body_error(&e), Some(BodyError::TooLarge(5))));
        // Announced for the trailer, never sent.
        let trailed = Expect { trailed: vec![ChecksumAlgorithm::Crc32c], max: 100, ..Default::default() };
        assert!(read_all(Checked::new(&data[..], trailed)).is_err());
    }
}
