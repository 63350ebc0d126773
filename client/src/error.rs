//! The one error enum of `client`.

use std::sync::Arc;

use cairn_proto::{RecordId, ShardId};

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
    /// A bucket's placement rules are not valid.
    #[error("bad placement rules: {reason}")]
    BadPlacement {
        /// What is wrong.
        reason: String,
    },
    /// The nodes known cannot satisfy a bucket's placement rules.
    #[error("the bucket's placement needs {need}; the nodes known are in {found}")]
    PolicyUnmet {
        /// What the rules need.
        need: String,
        /// The regions of the nodes known, with counts.
        found: String,
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
    /// An index page does not open with the tree's key, does not decode,
    /// or is not the kind of page its pointer says.
    #[error("index page {id} is damaged or sealed with another key: {fault}")]
    BadPage {
        /// The page.
        id: ShardId,
        /// What is wrong with it.
        fault: PageFault,
    },
    /// A head lookup found nothing, or an older head than this client has
    /// seen: nodes are unreachable or serve a stale record. Nothing is
    /// read or written on such a view.
    #[error(
        "the index head found (sequence {found}) is older than one this client has seen ({seen}): \
         nodes are unreachable or serve a stale record; try again"
    )]
    HeadBehind {
        /// The tree's head record.
        record: RecordId,
        /// Sequence found (0: none).
        found: u64,
        /// Highest sequence seen before.
        seen: u64,
    },
    /// Too few of the nodes that hold a tree's head record answered.
    #[error("only {answered} of the {needed} nodes needed for head record {record} answered: {last}")]
    HeadUnreachable {
        /// The tree's head record.
        record: RecordId,
        /// Nodes that answered.
        answered: usize,
        /// Answers needed (a majority of the record's nodes).
        needed: usize,
        /// The last failure.
        last: Box<Error>,
    },
    /// A commit lost its compare-and-swap: nodes hold a head record of the
    /// sequence it offered or a higher one (another writer was first). The
    /// committer reads the new head and applies its ops again.
    #[error("another writer published head record {record} first (sequence {held})")]
    HeadRaced {
        /// The tree's head record.
        record: RecordId,
        /// Highest sequence the refusing nodes hold.
        held: u64,
    },
    /// A node that failed lately was not asked (others could answer).
    #[error("node {peer} failed lately and was passed over")]
    PassedOver {
        /// The node.
        peer: cairn_net::PeerId,
    },
    /// A node answered a head request with an answer of another kind.
    #[error("a node answered {got} to a head {asked}")]
    BadHeadAnswer {
        /// What was asked.
        asked: &'static str,
        /// What came back.
        got: &'static str,
    },
    /// Head records were found, but none opens and decodes.
    #[error("no version of head record {record} (sequence {seq}) can be read: sealed with another key or damaged")]
    HeadUnreadable {
        /// The tree's head record.
        record: RecordId,
        /// Its sequence.
        seq: u64,
    },
    /// A precondition of a write did not hold: the key changed meanwhile.
    #[error("{key:?} changed while this write was prepared; nothing was written")]
    Conflict {
        /// The key.
        key: String,
    },
    /// An index update could not be published after retrying.
    #[error("the index update could not be published after {attempts} attempts: {last}")]
    CommitFailed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Arc<Error>,
    },
    /// One failure shared by every caller of a group commit.
    #[error(transparent)]
    Shared(Arc<Error>),
    /// A task of the client has stopped (the client is shutting down).
    #[error("the client is shutting down")]
    Stopped,
    /// An object entry contradicts itself.
    #[error("an index entry is damaged: {reason}")]
    BadEntry {
        /// What contradicts what.
        reason: String,
    },
    /// User metadata larger than S3 allows.
    #[error("user metadata of {size} bytes is larger than the {max} bytes allowed")]
    MetadataTooLarge {
        /// Its size (keys and values).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The name is a directory or a symlink where a file was expected.
    #[error("{key:?} is not a file")]
    NotAFile {
        /// The key.
        key: String,
    },
    /// No multipart upload with that id for that key.
    #[error("no upload {upload:?} of {key:?} is in progress (completed, aborted or expired)")]
    NoSuchUpload {
        /// Object key.
        key: String,
        /// Upload id.
        upload: String,
    },
    /// A part named on completion was not uploaded, or has another ETag.
    #[error("part {part} was not uploaded, or its ETag differs")]
    InvalidPart {
        /// Part number.
        part: u32,
    },
    /// Parts named on completion are not in ascending order.
    #[error("parts must be listed in ascending order; part {part} is out of order")]
    InvalidPartOrder {
        /// The first part out of order.
        part: u32,
    },
    /// A part other than the last is smaller than S3's 5 MiB minimum.
    #[error("part {part} is {size} bytes; every part but the last must be at least 5 MiB")]
    EntityTooSmall {
        /// Part number.
        part: u32,
        /// Its size.
        size: u64,
    },
    /// A part number outside 1..=10000.
    #[error("part number {0} is outside 1..=10000")]
    BadPartNumber(u32),
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

/// What is wrong with an index page.
#[derive(Debug, thiserror::Error)]
pub enum PageFault {
    /// It does not open with the tree's key.
    #[error("it does not open")]
    DoesNotOpen,
    /// It opens but does not decode.
    #[error(transparent)]
    Malformed(#[from] cairn_proto::Error),
    /// A leaf where a root was expected, or the other way round.
    #[error("it is the wrong kind of page")]
    WrongKind,
}

impl Error {
    /// The underlying error, through the wrappers of group commits.
    pub fn root(&self) -> &Error {
        match self {
            Error::Shared(e) => e.root(),
            Error::CommitFailed { last, .. } => last.root(),
            e => e,
        }
    }
}

impl From<cairn_net::Error> for Error {
    fn from(e: cairn_net::Error) -> Self {
        Self::Net(Box::new(e))
    }
}

fn bad_list(bad: &[u16]) -> String {
    if bad.is_empty() { String::new() } else { format!(" (shards {bad:?} were corrupt)") }
}
