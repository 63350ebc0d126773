//! Writing a shard body into its temp file: with direct I/O where the file
//! system allows it (the bytes go from our buffer to the disk, not through a
//! copy in the page cache), buffered otherwise, hashing as it goes.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::OFlags;

/// The alignment direct I/O needs of buffers, offsets and lengths.
pub const ALIGN: usize = 4096;

/// A buffer for one chunk whose bytes start at an [`ALIGN`] boundary.
#[derive(Debug)]
pub struct ChunkBuf {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl ChunkBuf {
    /// A buffer for chunks of up to `cap` bytes.
    pub fn new(cap: usize) -> Self {
        let v = vec![0u8; cap + ALIGN];
        let off = v.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { v, off, len: 0 }
    }

    /// Sets the chunk's length (at most the capacity) and returns its bytes.
    pub fn fill(&mut self, len: usize) -> &mut [u8] {
        self.len = len.min(self.v.len() - self.off);
        &mut self.v[self.off..self.off + self.len]
    }

    /// The chunk's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.v[self.off..self.off + self.len]
    }

    fn aligned(&self) -> bool {
        (self.bytes().as_ptr() as usize).is_multiple_of(ALIGN) && self.len.is_multiple_of(ALIGN)
    }
}

/// A shard file being written.
#[derive(Debug)]
pub struct ShardWriter {
    file: File,
    direct: bool,
    at: u64,
    hasher: blake3::Hasher,
}

impl ShardWriter {
    /// Creates `path` (which must not exist). Blocking.
    pub fn create(path: &Path, direct: bool) -> io::Result<Self> {
        let open = |flags: OFlags| {
            std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(flags.bits() as i32).open(path)
        };
        let (file, direct) = match direct.then(|| open(OFlags::DIRECT)) {
            Some(Ok(f)) => (f, true),
            Some(Err(_)) => {
                // A file system without direct I/O (tmpfs): buffered.
                let _ = std::fs::remove_file(path);
                (open(OFlags::empty())?, false)
            }
            None => (open(OFlags::empty())?, false),
        };
        Ok(Self { file, direct, at: 0, hasher: blake3::Hasher::new() })
    }

    /// Hashes and appends a chunk. Blocking.
    pub fn write(&mut self, chunk: &ChunkBuf) -> io::Result<()> {
        let bytes = chunk.bytes();
        self.hasher.update(bytes);
        if self.direct && !chunk.aligned() {
            // The last, short chunk.
            self.buffered()?;
        }
        match self.file.write_all_at(bytes, self.at) {
            Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                // Stricter alignment than ours: buffered from here on.
                self.buffered()?;
                self.file.write_all_at(bytes, self.at)?;
            }
            r => r?,
        }
        self.at += bytes.len() as u64;
        Ok(())
    }

    fn buffered(&mut self) -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&self.file)?;
        rustix::fs::fcntl_setfl(&self.file, flags - OFlags::DIRECT)?;
        self.direct = false;
        Ok(())
    }

    /// BLAKE3 of the bytes written so far.
    pub fn hash(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }

    /// Makes the bytes durable. Blocking.
    pub fn sync(self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_aligned_and_short_chunks_in_both_modes() {
        let dir = tempfile::tempdir().expect("tmp");
        let data: Vec<u8> = (0..3 * 8192 + 100).map(|i| (i * 7 % 251) as u8).collect();
        for direct in [true, false] {
            let path = dir.path().join(format!("f{direct}"));
            let mut w = ShardWriter::create(&path, direct).expect("create");
            let mut buf = ChunkBuf::new(8192);
            for chunk in data.chunks(8192) {
                buf.fill(chunk.len()).copy_from_slice(chunk);
                w.write(&buf).expect("write");
            }
            assert_eq!(w.hash(), *blake3::hash(&data).as_bytes());
            w.sync().expect("sync");
            assert_eq!(std::fs::read(&path).expect("read"), data);
        }
    }
}
