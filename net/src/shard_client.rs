//! The requester side of `/cairn/shard/1`: one request per stream.

use std::time::Duration;

use cairn_proto::codec::{self, FRAME_HEADER_LEN};
use cairn_proto::head::HeadRecord;
use cairn_proto::shard::{ByteRange, MAX_MESSAGE_SIZE, NodeState, NodeStats, Renewal, Request, Response};
use cairn_proto::{RecordId, ShardId};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::handle::NetHandle;

/// Timeouts for shard requests.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Opening the stream (and dialling).
    pub open: Duration,
    /// A whole request, body included.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { open: Duration::from_secs(10), request: Duration::from_secs(120) }
    }
}

/// What a node did with an offered head record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadPut {
    /// It stored it (or held this very record).
    Stored,
    /// It holds this valid record, with the same sequence or a higher one,
    /// and kept it.
    Held(HeadRecord),
}

/// Talks the shard protocol to one peer.
#[derive(Clone, Debug)]
pub struct ShardClient {
    net: NetHandle,
    peer: PeerId,
    timeouts: Timeouts,
    /// Once cancelled, a request whose stream is not open yet gives up.
    abandon: Option<CancellationToken>,
}

/// Writes a framed request (and body). The stream is not half-closed:
/// lengths delimit everything, and a failed close would poison the reads
/// of the answer; callers close after reading the response.
pub async fn send_request(stream: &mut Stream, req: &Request, body: Option<&[u8]>) -> std::io::Result<()> {
    stream.write_all(&req.to_frame()).await?;
    if let Some(body) = body {
        for chunk in body.chunks(256 * 1024) {
            stream.write_all(chunk).await?;
        }
    }
    stream.flush().await
}

/// Reads one framed response, refusing frames over [`MAX_MESSAGE_SIZE`].
pub async fn read_response(stream: &mut Stream, peer: PeerId) -> Result<Response, Error> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    stream.read_exact(&mut header).await.map_err(|source| Error::Stream { peer, source })?;
    let len = codec::frame_len("shard response", header, MAX_MESSAGE_SIZE)
        .map_err(|source| Error::Malformed { peer, source: Box::new(source) })?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(|source| Error::Stream { peer, source })?;
    Response::from_body(&body).map_err(|source| Error::Malformed { peer, source: Box::new(source) })
}

impl ShardClient {
    /// A client for `peer` over `net`.
    pub fn new(net: NetHandle, peer: PeerId, timeouts: Timeouts) -> Self {
        Self { net, peer, timeouts, abandon: None }
    }

    /// Requests that have not opened their stream when `token` is
    /// cancelled give up with [`Error::Abandoned`]: no byte of theirs has
    /// reached the node, so nothing is left to clean up, and nobody waits
    /// for a dial to a node that is down. Requests already under way go on.
    pub fn abandon_unopened_on(mut self, token: CancellationToken) -> Self {
        self.abandon = Some(token);
        self
    }

    /// The peer this client talks to.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    async fn exchange(&self, req: Request, body: Option<&[u8]>, max_data: u64) -> Result<(Response, Vec<u8>), Error> {
        // libp2p-stream drops inbound streams that arrive while the node's
        // accept queue is full; the requester sees its stream stopped before
        // any answer. The node never saw such a request, so trying again is
        // safe (puts are content-addressed, the rest are reads or checked).
        let mut backoff = Duration::from_millis(20);
        for _ in 0..4 {
            match self.exchange_once(&req, body, max_data).await {
                Err(Error::Stream { .. }) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                other => return other,
            }
        }
        self.exchange_once(&req, body, max_data).await
    }

    async fn exchange_once(
        &self,
        req: &Request,
        body: Option<&[u8]>,
        max_data: u64,
    ) -> Result<(Response, Vec<u8>), Error> {
        let peer = self.peer;
        let work = async {
            let open = self.net.open_shard_stream(peer, self.timeouts.open);
            let mut stream = match &self.abandon {
                None => open.await?,
                Some(token) => tokio::select! {
                    biased;
                    opened = open => opened?,
                    () = token.cancelled() => return Err(Error::Abandoned { peer }),
                },
            };
            let sent = send_request(&mut stream, req, body).await;
            // The node may stop our sending side once it has what it needs: a
            // refused put is answered before its body is read, and a fast
            // answer can beat our half-close. A response, when there is one,
            // is the truth (a `Stored` means the node hashed the whole body).
            let resp = match (sent, read_response(&mut stream, peer).await) {
                (_, Ok(resp)) => resp,
                (Err(source), Err(_)) => return Err(Error::Stream { peer, source }),
                (Ok(()), Err(e)) => return Err(e),
            };
            let mut data = Vec::new();
            let len = resp.body_len();
            if len > 0 {
                if len > max_data {
                    return Err(Error::UnexpectedResponse {
                        peer,
                        asked: "get",
                        got: format!("{len} bytes, expected at most {max_data}"),
                    });
                }
                data = vec![0u8; len as usize];
                stream.read_exact(&mut data).await.map_err(|source| Error::Stream { peer, source })?;
            }
            let _ = stream.close().await;
            if let Response::Error(error) = resp {
                return Err(Error::Refused { peer, error });
            }
            Ok((resp, data))
        };
        tokio::time::timeout(self.timeouts.request, work).await.map_err(|_| Error::Timeout { peer })?
    }

    fn unexpected(&self, asked: &'static str, got: Response) -> Error {
        Error::UnexpectedResponse { peer: self.peer, asked, got: format!("{got:?}") }
    }

    /// Stores `bytes` as `shard`; `owner` is
    /// [`owner_of`](cairn_proto::shard::owner_of) the renew token of the
    /// delete token that may delete it later.
    pub async fn put(&self, shard: ShardId, bytes: &[u8], owner: [u8; 32], lease_secs: u64) -> Result<(), Error> {
        let req = Request::Put { shard, len: bytes.len() as u64, owner, lease_secs };
        match self.exchange(req, Some(bytes), 0).await?.0 {
            Response::Stored => Ok(()),
            other => Err(self.unexpected("put", other)),
        }
    }

    /// The whole shard (at most `max_len` bytes accepted).
    pub async fn get(&self, shard: ShardId, max_len: u64) -> Result<Vec<u8>, Error> {
        match self.exchange(Request::Get { shard, range: None }, None, max_len).await? {
            (Response::Data { .. }, data) => Ok(data),
            (other, _) => Err(self.unexpected("get", other)),
        }
    }

    /// `len` bytes of the shard from `offset`.
    pub async fn get_range(&self, shard: ShardId, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let req = Request::Get { shard, range: Some(ByteRange { offset, len }) };
        match self.exchange(req, None, len).await? {
            (Response::Data { len: got }, data) if got == len => Ok(data),
            (other, _) => Err(self.unexpected("get range", other)),
        }
    }

    /// Deletes the shard if `token` is the preimage given at put.
    pub async fn delete(&self, shard: ShardId, token: [u8; 32]) -> Result<(), Error> {
        match self.exchange(Request::Delete { shard, token }, None, 0).await?.0 {
            Response::Deleted => Ok(()),
            other => Err(self.unexpected("delete", other)),
        }
    }

    /// Extends the leases of up to
    /// [`MAX_RENEW_BATCH`](cairn_proto::shard::MAX_RENEW_BATCH) shards, each
    /// with its renew token; one outcome per shard, in order.
    pub async fn renew(&self, lease_secs: u64, shards: Vec<(ShardId, [u8; 32])>) -> Result<Vec<Renewal>, Error> {
        let asked = shards.len();
        match self.exchange(Request::Renew { lease_secs, shards }, None, 0).await?.0 {
            Response::Renewed(r) if r.len() == asked => Ok(r),
            other => Err(self.unexpected("renew", other)),
        }
    }

    /// A verified slice of `range` of the shard (unchecked: see
    /// [`cairn_proto::proof::verify`]), at most
    /// [`MAX_SLICE_LEN`](cairn_proto::proof::MAX_SLICE_LEN) bytes.
    pub async fn prove(&self, shard: ShardId, range: ByteRange) -> Result<Vec<u8>, Error> {
        let req = Request::Prove { shard, range };
        match self.exchange(req, None, cairn_proto::proof::MAX_SLICE_LEN).await? {
            (Response::Proof { .. }, slice) => Ok(slice),
            (other, _) => Err(self.unexpected("prove", other)),
        }
    }

    /// Capacity and usage.
    pub async fn stats(&self) -> Result<NodeStats, Error> {
        match self.exchange(Request::Stats, None, 0).await?.0 {
            Response::Stats(s) => Ok(s),
            other => Err(self.unexpected("stats", other)),
        }
    }

    /// Capacity, usage, and whether the node is leaving the network.
    pub async fn status(&self) -> Result<NodeState, Error> {
        match self.exchange(Request::Status, None, 0).await?.0 {
            Response::Status(s) => Ok(s),
            other => Err(self.unexpected("status", other)),
        }
    }

    /// The peer's profile, checked: signed by the peer's own key.
    pub async fn profile(&self) -> Result<cairn_proto::profile::NodeProfile, Error> {
        match self.exchange(Request::Profile, None, 0).await?.0 {
            Response::Profile(signed) => crate::profile::verify(&self.peer, &signed)
                .map_err(|reason| Error::BadProfile { peer: self.peer, reason }),
            other => Err(self.unexpected("profile", other)),
        }
    }

    /// What this client's peer id uses of the node, as the node counts it.
    pub async fn usage(&self) -> Result<cairn_proto::shard::PeerUse, Error> {
        match self.exchange(Request::Usage, None, 0).await?.0 {
            Response::Usage(u) => Ok(u),
            other => Err(self.unexpected("usage", other)),
        }
    }

    /// The head record the peer holds under `record` (checked: the id and
    /// signature must match).
    pub async fn get_head(&self, record: RecordId) -> Result<Option<HeadRecord>, Error> {
        match self.exchange(Request::GetHead { record }, None, 0).await?.0 {
            Response::Head(None) => Ok(None),
            Response::Head(Some(h)) => self.checked(record, h).map(Some),
            other => Err(self.unexpected("get head", other)),
        }
    }

    /// Offers a head record; the peer stores it only if it is newer than
    /// the one it holds, and otherwise answers with the one it holds.
    pub async fn put_head(&self, record: HeadRecord) -> Result<HeadPut, Error> {
        let id = record.record_id();
        match self.exchange(Request::PutHead { record }, None, 0).await?.0 {
            Response::HeadStored => Ok(HeadPut::Stored),
            Response::HeadHeld(h) => self.checked(id, h).map(HeadPut::Held),
            other => Err(self.unexpected("put head", other)),
        }
    }

    /// A record a peer sent, if it is valid under `id`.
    fn checked(&self, id: RecordId, h: HeadRecord) -> Result<HeadRecord, Error> {
        cairn_proto::head::accept(&id, None, &h).map_err(|reason| Error::BadRecord { peer: self.peer, reason })?;
        Ok(h)
    }
}
