//! The one error enum of `proto`.

/// What can go wrong turning bytes into Cairn values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A length prefix or a whole input is larger than the limit for its kind,
    /// refused before anything was allocated for it.
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// Which kind of value.
        what: &'static str,
        /// Its claimed or actual length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The bytes are not a valid encoding of the expected value.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which kind of value.
        what: &'static str,
        /// What was wrong, for logs.
        reason: String,
    },
    /// A value starts with a version marker this build does not know.
    #[error("unknown {what} format version {version}")]
    UnknownVersion {
        /// Which kind of value.
        what: &'static str,
        /// The marker found.
        version: u8,
    },
    /// A node id is empty or longer than [`crate::ids::MAX_NODE_ID_LEN`].
    #[error("node id of {len} bytes is not valid")]
    InvalidNodeId {
        /// Its length.
        len: usize,
    },
    /// Decoded fields contradict each other (a manifest whose shard count is
    /// not n, a segment longer than the segment size...).
    #[error("inconsistent {what}: {reason}")]
    Inconsistent {
        /// Which kind of value.
        what: &'static str,
        /// What contradicts what.
        reason: String,
    },
    /// A head record's signature does not verify under its public key.
    #[error("head record signature does not verify")]
    BadSignature,
    /// A head record was refused by the record acceptance rule.
    #[error("head record refused: {0}")]
    RecordRefused(#[from] crate::head::RecordRefused),
}
