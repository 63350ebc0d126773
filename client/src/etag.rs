//! S3 ETags: MD5 of the plaintext, computed beside the segment workers.
//!
//! MD5 cannot be split within one stream and runs at about 0.7 GB/s per
//! core, slower than the pipeline's other stages together on two cores. So
//! it does not run in line: [`Tee`] hands a copy of every chunk the
//! encoder reads to [`consume`], on a thread of its own, over a bounded
//! channel.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use md5::{Digest, Md5};

/// Chunks queued for the MD5 thread (each up to one read, usually 64 KiB
/// or one segment's block slot).
const QUEUE: usize = 64;

/// A reader that hands a copy of every chunk to an MD5 thread.
#[derive(Debug)]
pub struct Tee<R> {
    inner: R,
    to: SyncSender<Vec<u8>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            // The MD5 thread only goes away when the upload has failed.
            let _ = self.to.send(buf[..n].to_vec());
        }
        Ok(n)
    }
}

/// Wraps `reader`; run [`consume`] on the receiver elsewhere.
pub fn tee<R: Read>(reader: R) -> (Tee<R>, Receiver<Vec<u8>>) {
    let (to, rx) = sync_channel(QUEUE);
    (Tee { inner: reader, to }, rx)
}

/// Hashes what the tee sends until it is dropped; returns lower-case hex.
pub fn consume(rx: Receiver<Vec<u8>>) -> String {
    let mut h = Md5::new();
    while let Ok(chunk) = rx.recv() {
        h.update(&chunk);
    }
    hex(&h.finalize())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex MD5 of bytes held in memory.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tee_hashes_exactly_what_was_read() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut t, rx) = tee(&data[..]);
        let h = std::thread::spawn(move || consume(rx));
        let mut out = Vec::new();
        t.read_to_end(&mut out).expect("read");
        drop(t);
        assert_eq!(out, data);
        assert_eq!(h.join().expect("md5 thread"), md5_hex(&data));
        assert_eq!(md5_hex(b"hello"), "5d41402abc4b2a76b9719d911017c592");
    }
}
