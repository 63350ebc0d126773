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
    /// A request took too long.
    #[error("request to {peer} timed out")]
    Timeout {
        /// The peer.
        peer: PeerId,
    },
    /// A DHT record could not be stored on enough peers.
    #[error("storing the record failed: {0}")]
    PutRecord(String),
    /// No valid record under this id was found.
    #[error("no record found")]
    RecordNotFound,
    /// A DHT query failed.
    #[error("DHT query failed: {0}")]
    Query(String),
}
