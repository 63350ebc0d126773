//! The one error enum of `crypto`. Messages say what went wrong and how to
//! fix it; none of them carries key material.

use std::path::PathBuf;

/// A decryption or authentication failure. Opaque on purpose: it does not
/// say which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed: the data is damaged, was tampered with, or the key is wrong")]
pub struct DecryptError;

/// What can go wrong in `crypto`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the key file failed.
    #[error("cannot access key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `create` found a file already there and left it alone.
    #[error(
        "key file {path} already exists; refusing to overwrite it (move it away first if you really mean to replace your key)"
    )]
    KeyFileExists {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is readable by group or others.
    #[error("key file {path} has permissions {mode:o}, readable by others; run `chmod 600 {path}`")]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The key file is damaged or not a key file at all.
    #[error("key file {path} is damaged ({reason}); restore it from your backup or export")]
    CorruptKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The key file is sealed and no passphrase was given.
    #[error("key file {path} is protected by a passphrase; give it with CAIRN_PASSPHRASE or at the prompt")]
    PassphraseRequired {
        /// The key file.
        path: PathBuf,
    },
    /// The passphrase does not open the key file.
    #[error("wrong passphrase for key file {path}")]
    WrongPassphrase {
        /// The key file.
        path: PathBuf,
    },
    /// The key file was written by a newer Cairn.
    #[error("key file {path} has format version {version}, which this Cairn does not know; upgrade Cairn")]
    UnsupportedKeyFile {
        /// The key file.
        path: PathBuf,
        /// The version byte found.
        version: u8,
    },
    /// Argon2 parameters are out of the accepted range.
    #[error(
        "key file {path} asks for Argon2 parameters out of range (memory {m_cost} KiB, {t_cost} passes, {p_cost} lanes)"
    )]
    KdfParams {
        /// The key file.
        path: PathBuf,
        /// Memory in KiB.
        m_cost: u32,
        /// Passes.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
    },
    /// Decryption failed.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// A grant string or sealed grant is not well formed.
    #[error("not a valid Cairn grant: {0}")]
    BadGrant(&'static str),
}
