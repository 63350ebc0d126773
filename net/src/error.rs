//! The one error enum of `net`.

use libp2p::PeerId;

/// What can go wrong on the network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event loop has stopped (shutdown, or it failed).
    #[error("the network task has stopped")]
    Stopped,
    /// A listen or bootstrap address is not usable.
    #[error("bad address {addr}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Building the transport failed.
    #[error("cannot start the network: {0}")]
    Transport(String),
    /// Opening a stream to a peer failed.
    #[error("cannot open a stream to {peer}: {reason}")]
    OpenStream {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// A stream failed mid-request.
    #[error("stream to {peer} failed: {source}")]
    Stream {
        /// The peer.
        peer: PeerId,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The peer sent bytes that do not decode.
    #[error("peer {peer} sent a malformed message: {source}")]
    Malformed {
        /// The peer.
        peer: PeerId,
        /// What was wrong.
        source: Box<cairn_proto::Error>,
    },
    /// The peer answered with a typed shard-protocol error.
    #[error("peer {peer} refused: {error}")]
    Refused {
        /// The peer.
        peer: PeerId,
        /// Its answer.
        error: cairn_proto::shard::ShardError,
    },
    /// The peer answered with a response that does not fit the request.
    #[error("peer {peer} answered {got} to a {asked} request")]
    UnexpectedResponse {
        /// The peer.
        peer: PeerId,
        /// Request kind.
        asked: &'static str,
        /// Response received.
        got: String,
    },
    /// The peer sent a head record that is not valid under the id asked.
    #[error("peer {peer} sent an invalid head record: {reason}")]
    BadRecord {
        /// The peer.
        peer: PeerId,
        /// What is wrong with it.
        reason: cairn_proto::head::RecordRefused,
    },
    /// An identity key file cannot be read, written, or is readable by others.
    #[error("identity key {path}: {reason}")]
    IdentityFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A private network's key file cannot be read or written.
    #[error("network key {path}: {reason}")]
    NetworkKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An address that a private network cannot use (QUIC: pnet protects
    /// TCP only).
    #[error("{addr}: a private network runs over TCP only; use a /tcp/ address")]
    NotPrivate {
        /// The address.
        addr: String,
    },
    /// The peer sent a profile that is not its own, or not valid.
    #[error("peer {peer} sent an invalid profile: {reason}")]
    BadProfile {
        /// The peer.
        peer: PeerId,
        /// What is wrong with it.
        reason: crate::profile::ProfileRefused,
    },
    /// The request gave up before its stream opened (its caller no
    /// longer needed it).
    #[error("request to {peer} abandoned before it started")]
    Abandoned {
        /// The peer.
        peer: PeerId,
    },
    /// A request took too long.
    #[error("request to {peer} timed out")]
    Timeout {
        /// The peer.
        peer: PeerId,
    },
    /// A DHT record was stored on fewer peers than the quorum asked.
    #[error("the record was stored on {stored} peers, {quorum} needed{}", if *.timed_out { " (timed out)" } else { "" })]
    PutRecordQuorum {
        /// Peers that took it.
        stored: usize,
        /// Peers needed.
        quorum: usize,
        /// The query ran out of time (rather than out of peers).
        timed_out: bool,
    },
    /// The local record store refused the record (too large, full).
    #[error("the local record store refused the record: {0}")]
    RecordStore(#[from] libp2p::kad::store::Error),
    /// No valid record under this id was found.
    #[error("no record found")]
    RecordNotFound,
    /// A DHT query needs known peers and there are none.
    #[error("no peers are known: check the bootstrap addresses")]
    NoKnownPeers,
    /// A bootstrap query ran out of time.
    #[error("the bootstrap query timed out")]
    BootstrapTimeout,
}
