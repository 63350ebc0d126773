//! What a `cairn` command and `cairn agent` say to each other over the
//! agent's Unix socket: frames of a little-endian `u32` length and a
//! postcard message ([`Ask`] to the agent, [`Tell`] back).
//!
//! Both ends are the same binary: an agent refuses a caller whose
//! [`Stamp`] (the binary, the config and the key file) differs from its
//! own, so the format never meets another version of itself.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::commands::Call;

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = (1 << 20) + 4096;
/// Largest chunk of standard input or output in one frame.
pub const CHUNK: usize = 256 * 1024;

/// What a caller and an agent must share: the same binary, config and
/// key file, each as (length, modification time in ns).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The config file, made absolute.
    pub config: PathBuf,
    /// The binary, the config and the key file.
    pub files: Vec<(u64, i128)>,
}

/// A caller's frame.
#[derive(Debug, Serialize, Deserialize)]
pub enum Ask {
    /// Run `call` (the first frame of a command's connection).
    Run {
        /// The caller's view of the files.
        stamp: Stamp,
        /// The caller's working directory.
        cwd: PathBuf,
        /// Whether the caller's standard error is a terminal.
        tty: bool,
        /// The caller's file mode creation mask: a file the agent makes
        /// for it gets the mode the caller's own process would give it.
        umask: u32,
        /// The command.
        call: Call,
    },
    /// Bytes of the caller's standard input (after [`Tell::WantStdin`]).
    Stdin(#[serde(with = "cairn_proto::codec::bytes")] Vec<u8>),
    /// The caller's standard input ended.
    StdinEnd,
    /// How the agent is doing.
    Status,
    /// End the agent once its running commands end.
    Stop,
}

/// An agent's frame.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tell {
    /// Bytes for the caller's standard output.
    Stdout(#[serde(with = "cairn_proto::codec::bytes")] Vec<u8>),
    /// A line for the caller's standard error.
    Stderr(String),
    /// The command reads standard input: send it.
    WantStdin,
    /// A transfer's progress.
    Progress {
        /// What moves.
        what: String,
        /// Bytes so far.
        pos: u64,
        /// Bytes in all, if known.
        len: Option<u64>,
    },
    /// The transfer ended.
    ProgressEnd,
    /// The command ended; `error`: why it failed.
    Exit {
        /// The error, as the command would print it.
        error: Option<String>,
    },
    /// Not run here (another binary, config or key): run it yourself.
    Refused {
        /// Why.
        reason: String,
    },
    /// Answer to [`Ask::Status`].
    Status {
        /// The agent's process id.
        pid: u32,
        /// Seconds since it started.
        up_secs: u64,
        /// Commands it ran.
        served: u64,
        /// Seconds without a command after which it ends.
        idle_secs: u64,
        /// Its config file.
        config: PathBuf,
    },
    /// Answer to [`Ask::Stop`].
    Stopping,
}

/// Errors of a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or ended mid-frame.
    #[error("agent connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame longer than [`MAX_FRAME`].
    #[error("agent frame of {0} bytes is too long")]
    TooLong(usize),
    /// A frame that does not decode.
    #[error("agent frame does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    // The body is written after room for its length, which is filled in.
    let mut out = postcard::to_extend(msg, vec![0u8; 4])?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
}

fn length(head: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_FRAME { Err(FrameError::TooLong(len)) } else { Ok(len) }
}

/// Writes one frame (blocking).
pub fn write<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    Ok(())
}

/// Reads one frame (blocking); `None` at a clean end between frames.
pub fn read<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<Option<T>, FrameError> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; length(head)?];
    r.read_exact(&mut body)?;
    Ok(Some(postcard::from_bytes(&body)?))
}

/// Writes one frame.
pub async fn send<T: Serialize>(w: &mut (impl AsyncWrite + Unpin), msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?).await?;
    Ok(())
}

/// Reads one frame; `None` at a clean end between frames.
pub async fn recv<T: for<'de> Deserialize<'de>>(r: &mut (impl AsyncRead + Unpin)) -> Result<Option<T>, FrameError> {
    let mut head = [0u8; 4];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; length(head)?];
    r.read_exact(&mut body).await?;
    Ok(Some(postcard::from_bytes(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_pinned() {
        // A length, then postcard: variant index, then the fields.
        assert_eq!(encode(&Tell::Stdout(b"hi".to_vec())).expect("encode"), [4, 0, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(encode(&Tell::Exit { error: None }).expect("encode"), [2, 0, 0, 0, 5, 0]);
        assert_eq!(encode(&Ask::Stop).expect("encode"), [1, 0, 0, 0, 4]);
        let run = Ask::Run {
            stamp: Stamp { config: "/c".into(), files: vec![(1, -1)] },
            cwd: "/w".into(),
            tty: true,
            umask: 0o027,
            call: Call::Rm { path: "b/k".into() },
        };
        let bytes = encode(&run).expect("encode");
        let mut r = &bytes[..];
        let back: Ask = read(&mut r).expect("read").expect("a frame");
        assert!(matches!(back, Ask::Run { call: Call::Rm { path }, tty: true, umask: 0o027, .. } if path == "b/k"));
        // A clean end between frames is not an error.
        assert!(read::<Ask>(&mut r).expect("end").is_none());
    }

    #[test]
    fn bad_frames_are_errors() {
        // Too long a length, before any body is read or allocated.
        let mut r = &[0xff, 0xff, 0xff, 0xff][..];
        assert!(matches!(read::<Tell>(&mut r), Err(FrameError::TooLong(_))));
        // Cut short inside a frame.
        let mut r = &[5, 0, 0, 0, 0][..];
        assert!(matches!(read::<Tell>(&mut r), Err(FrameError::Io(_))));
        // A body that is no message.
        let mut r = &[1, 0, 0, 0, 200][..];
        assert!(matches!(read::<Tell>(&mut r), Err(FrameError::Decode(_))));
        // Arbitrary bytes never panic.
        for seed in 0..2000u32 {
            let bytes: Vec<u8> =
                (0..(seed % 40)).map(|i| (seed.wrapping_mul(2_654_435_761) >> (i % 24)) as u8).collect();
            let mut r = &bytes[..];
            while let Ok(Some(_)) = read::<Ask>(&mut r) {}
        }
    }
}
