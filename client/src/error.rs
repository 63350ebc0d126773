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
    /// The network failed.
    #[error(transparent)]
    Net(Box<cairn_net::Error>),
    /// No storage node is known or reachable.
    #[error("no storage nodes are reachable: check the bootstrap addresses in the config and that the nodes run")]
    NoNodes,
    /// Too few nodes took a segment's shards.
    #[error("only {stored} of {needed} shards could be stored ({reason}); start more nodes or lower n")]
    Placement {
        /// Shards that had to be stored.
        needed: usize,
        /// Shards stored.
        stored: usize,
        /// The last failure.
        reason: String,
    },
    /// Fewer than `k` holders of a segment answered with good bytes.
    #[error("segment {segment} is unreadable: {usable} of the {needed} shards needed could be fetched ({reason})")]
    SegmentUnavailable {
        /// Segment index.
        segment: u64,
        /// Verified shards fetched.
        usable: usize,
        /// `k`.
        needed: usize,
        /// The last failure.
        reason: String,
    },
    /// No holder of an index page could serve it.
    #[error("index page {id} cannot be fetched: {reason}")]
    PageUnavailable {
        /// The page.
        id: ShardId,
        /// The last failure.
        reason: String,
    },
    /// An index page or head record is damaged or was sealed with another key.
    #[error("the bucket index is damaged or sealed with another key: {0}")]
    Index(String),
    /// An index update could not be published.
    #[error("the index update could not be published: {0}")]
    Commit(String),
    /// The bucket does not exist.
    #[error("bucket {0:?} does not exist (create it with `cairn mb {0}`)")]
    NoSuchBucket(String),
    /// The bucket exists already.
    #[error("bucket {0:?} exists already")]
    BucketExists(String),
    /// The bucket still holds objects.
    #[error("bucket {0:?} is not empty: remove its objects first")]
    BucketNotEmpty(String),
    /// No object under that key.
    #[error("no object {key:?} in bucket {bucket:?}")]
    NoSuchKey {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
    },
    /// A bucket name or key that is not allowed.
    #[error("invalid name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A self-check decoded different bytes than were encoded; a bug.
    #[error("decoded bytes differ from the encoded input")]
    RoundTripMismatch,
    /// A worker thread panicked; a bug.
    #[error("a pipeline worker thread panicked")]
    WorkerPanicked,
}

impl From<cairn_net::Error> for Error {
    fn from(e: cairn_net::Error) -> Self {
        Self::Net(Box::new(e))
    }
}

fn bad_list(bad: &[u16]) -> String {
    if bad.is_empty() { String::new() } else { format!(" (shards {bad:?} were corrupt)") }
}
