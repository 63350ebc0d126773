//! Where an object command's input and output go: this process's own
//! terminal and files, or those of a caller on the far side of an agent
//! connection (`crate::agent`), which the agent reaches through frames.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::wire::Tell;

/// The progress bar a far caller draws: the agent's poller reads it.
pub type BarSlot = Arc<Mutex<Option<(ProgressBar, String)>>>;

/// A command's input and output.
pub struct Io {
    /// Relative local paths are taken from here (`None`: this process's).
    cwd: Option<PathBuf>,
    /// Text written with `out!`, sent at each [`Io::flush`].
    pub text: Vec<u8>,
    stdout: Box<dyn AsyncWrite + Send + Unpin>,
    far: Option<Far>,
}

/// The caller's side of an agent connection.
pub struct Far {
    /// Frames to the caller.
    pub tell: mpsc::Sender<Tell>,
    /// The caller's standard input, once asked for.
    pub stdin: Option<Box<dyn Read + Send>>,
    /// Whether the caller's standard error is a terminal (bars are drawn).
    pub tty: bool,
    /// The caller's file mode creation mask.
    pub umask: u32,
    /// The bar the caller draws.
    pub bar: BarSlot,
}

impl Io {
    /// This process's terminal and files.
    pub fn local() -> Self {
        Self { cwd: None, text: Vec::new(), stdout: Box::new(tokio::io::stdout()), far: None }
    }

    /// A far caller's, with paths relative to `cwd` and standard output
    /// written to `stdout`.
    pub fn far(cwd: PathBuf, stdout: Box<dyn AsyncWrite + Send + Unpin>, far: Far) -> Self {
        Self { cwd: Some(cwd), text: Vec::new(), stdout, far: Some(far) }
    }

    /// The mode a new file of the caller's gets, where this process's own
    /// umask would not give it (`None`: this process is the caller).
    pub fn new_file_mode(&self) -> Option<u32> {
        self.far.as_ref().map(|f| 0o666 & !f.umask)
    }

    /// `local` as the caller means it.
    pub fn path(&self, local: &Path) -> PathBuf {
        match &self.cwd {
            Some(cwd) if local.is_relative() => cwd.join(local),
            _ => local.to_path_buf(),
        }
    }

    /// Standard output, for bytes (text goes through `out!`).
    pub async fn stdout(&mut self) -> std::io::Result<&mut Box<dyn AsyncWrite + Send + Unpin>> {
        self.flush().await?;
        Ok(&mut self.stdout)
    }

    /// Writes the text so far to standard output.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.text.is_empty() {
            let text = std::mem::take(&mut self.text);
            self.stdout.write_all(&text).await?;
        }
        self.stdout.flush().await
    }

    /// A line for standard error.
    pub async fn note(&mut self, line: String) -> anyhow::Result<()> {
        match &self.far {
            None => eprintln!("{line}"),
            Some(f) => f.tell.send(Tell::Stderr(line)).await.map_err(|_| anyhow::anyhow!("the caller left"))?,
        }
        Ok(())
    }

    /// Standard input, as a blocking reader (for `Bucket::put`, which
    /// reads on a blocking thread).
    pub async fn stdin(&mut self) -> anyhow::Result<Box<dyn Read + Send>> {
        let Some(far) = &mut self.far else { return Ok(Box::new(std::io::stdin())) };
        let Some(input) = far.stdin.take() else { anyhow::bail!("standard input was read already") };
        far.tell.send(Tell::WantStdin).await.map_err(|_| anyhow::anyhow!("the caller left"))?;
        Ok(input)
    }

    /// A progress bar of `len` bytes (a spinner without), drawn where the
    /// caller's standard error is a terminal.
    pub fn bar(&self, len: Option<u64>, what: &str) -> ProgressBar {
        let Some(far) = &self.far else { return local_bar(len, what) };
        if !far.tty {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::hidden();
        if let Some(l) = len {
            pb.set_length(l);
        }
        *far.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some((pb.clone(), what.to_string()));
        pb
    }
}

fn local_bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(l) => ProgressBar::new(l).with_style(bar_style()),
        None => ProgressBar::new_spinner(),
    };
    pb.set_message(what.to_string());
    pb
}

/// The style of every transfer bar.
pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Chunks of a far caller's standard input, read on a blocking thread
/// (`Bucket::put` reads there). An error in the channel (the caller left
/// before its input ended) is an error of the read, never an early end:
/// a put must not store a truncated object.
pub struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    /// Reads what `rx` brings; its senders gone means the input ended.
    pub fn new(rx: mpsc::Receiver<std::io::Result<Vec<u8>>>) -> Self {
        Self { rx, chunk: Vec::new(), at: 0 }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => (self.chunk, self.at) = (chunk?, 0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// This process's file mode creation mask, read from `/proc/self/status`
/// (setting it to read it would race with other threads); 022 if that
/// cannot be read.
pub fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find_map(|l| l.strip_prefix("Umask:"))?;
            u32::from_str_radix(line.trim(), 8).ok()
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_that_leaves_is_an_error_not_an_end() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(b"abc".to_vec())).expect("room");
        tx.try_send(Ok(Vec::new())).expect("room");
        tx.try_send(Ok(b"de".to_vec())).expect("room");
        drop(tx);
        let mut all = Vec::new();
        ChannelReader::new(rx).read_to_end(&mut all).expect("read");
        assert_eq!(all, b"abcde");
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(b"abc".to_vec())).expect("room");
        tx.try_send(Err(std::io::ErrorKind::UnexpectedEof.into())).expect("room");
        let mut all = Vec::new();
        let err = ChannelReader::new(rx).read_to_end(&mut all).expect_err("cut short");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
