//! The one error enum of `client`.

use cairn_proto::ShardId;

/// What can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fewer than `k` usable shards of a segment.
    #[error("segment {segment} cannot be read: {usable} usable shards, {needed} needed{}", bad_list(.bad))]
    NotEnoughShards {
        /// Segment index.
        segment: u64,
        /// Shards that were present and verified.
        usable: usize,
        /// `k`.
        needed: usize,
        /// Indexes of shards rejected because they did not hash to their id.
        bad: Vec<u16>,
    },
    /// A shard's bytes do not hash to its id.
    #[error("shard {index} ({id}) of segment {segment} does not match its id")]
    CorruptShard {
        /// Segment index.
        segment: u64,
        /// Shard index within the segment.
        index: u16,
        /// The id it should hash to.
        id: ShardId,
    },
    /// A shard has the wrong length for its segment.
    #[error("shard {index} of segment {segment} is {len} bytes, expected {expected}")]
    ShardLength {
        /// Segment index.
        segment: u64,
        /// Shard index.
        index: u16,
        /// Its length.
        len: usize,
        /// The layout's shard length.
        expected: usize,
    },
    /// Shards verified but the segment did not decrypt: the manifest or key
    /// is wrong.
    #[error("segment {segment} does not decrypt: wrong key or damaged manifest")]
    Decrypt {
        /// Segment index.
        segment: u64,
    },
    /// A range beyond the end of the object.
    #[error("range {start}..{end} is outside an object of {size} bytes")]
    BadRange {
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
        /// Object size.
        size: u64,
    },
    /// The erasure code rejected its parameters or input.
    #[error("erasure coding failed: {0}")]
    Erasure(#[from] reed_solomon_simd::Error),
    /// Invalid layout or manifest.
    #[error(transparent)]
    Proto(#[from] cairn_proto::Error),
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A fetch of shards for a segment failed.
    #[error("fetching segment {segment} failed: {reason}")]
    Fetch {
        /// Segment index.
        segment: u64,
        /// Why.
        reason: String,
    },
    /// A self-check decoded different bytes than were encoded; a bug.
    #[error("decoded bytes differ from the encoded input")]
    RoundTripMismatch,
    /// A worker thread panicked; a bug.
    #[error("a pipeline worker thread panicked")]
    WorkerPanicked,
}

fn bad_list(bad: &[u16]) -> String {
    if bad.is_empty() { String::new() } else { format!(" (shards {bad:?} were corrupt)") }
}
