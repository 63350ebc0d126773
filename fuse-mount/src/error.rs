//! The mount's errors, and what each client error means to a program
//! (its errno).

use std::path::PathBuf;

use cairn_client::Error as ClientError;
use fuser::Errno;

/// Why a mount could not be made or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cache directory cannot be used.
    #[error("cache directory {path}: {source}")]
    Cache {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel refused the mount.
    #[error("cannot mount at {path}: {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Files whose changes could not be uploaded before the mount ended;
    /// their local copies are kept.
    #[error("{} file(s) were not uploaded; their local copies are kept in {}", .files.len(), .kept.display())]
    NotUploaded {
        /// Paths inside the bucket.
        files: Vec<String>,
        /// Where the copies are.
        kept: PathBuf,
    },
}

/// The errno a program sees for a client error.
pub fn errno(e: &ClientError) -> Errno {
    match e.root() {
        ClientError::NoSuchKey { .. } | ClientError::NoSuchBucket(_) => Errno::ENOENT,
        ClientError::NotAFile { .. } => Errno::EISDIR,
        ClientError::BadName { .. } => Errno::EINVAL,
        ClientError::MetadataTooLarge { .. } => Errno::E2BIG,
        ClientError::BucketNotEmpty(_) => Errno::ENOTEMPTY,
        ClientError::BadRange { .. } => Errno::EINVAL,
        ClientError::Conflict { .. } => Errno::EEXIST,
        ClientError::Io(io) => io.raw_os_error().map_or(Errno::EIO, Errno::from_i32),
        // Too few nodes, a lost head record, corrupt data: the operation
        // did not happen; the program gets an I/O error.
        _ => Errno::EIO,
    }
}
