//! The one error enum of `storage-node`.

use std::path::PathBuf;

/// What can go wrong running a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// RocksDB failed.
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
    /// Stored metadata does not decode.
    #[error("damaged metadata in the database: {0}")]
    Corrupt(#[from] cairn_proto::Error),
    /// The configuration is invalid.
    #[error("bad configuration {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The network failed.
    #[error(transparent)]
    Net(Box<cairn_net::Error>),
    /// A blocking task panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<cairn_net::Error> for Error {
    fn from(e: cairn_net::Error) -> Self {
        Self::Net(Box::new(e))
    }
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
