//! The one error enum of `s3-gateway` (setting up and serving; failures of
//! single requests are S3 errors, see [`crate::convert`]).

use std::path::PathBuf;

/// What can go wrong running the gateway or managing its keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The keys file cannot be read or written.
    #[error("keys file {path}: {source}")]
    KeysFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The keys file does not parse.
    #[error("keys file {path} is not valid: {source}")]
    KeysFormat {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A key with that name exists.
    #[error("an access key named {0:?} exists already")]
    KeyExists(String),
    /// No key with that name.
    #[error("no access key named {0:?}")]
    NoSuchKey(String),
    /// A key name that is not allowed.
    #[error("invalid key name {0:?}: use 1-64 letters, digits, '-', '_' or '.'")]
    BadKeyName(String),
    /// Listening on a non-loopback address without TLS or consent.
    #[error(
        "{0} is not a loopback address: serve it with --tls-cert/--tls-key, or pass --insecure-http \
         to send signatures and data in the clear"
    )]
    Insecure(std::net::SocketAddr),
    /// The TLS certificate or key cannot be used.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Binding or accepting failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
