//! What an index entry says about a name: the kind (file, directory,
//! symlink), the S3 and POSIX metadata, and where the bytes are: inside the
//! entry, or as a list of extents over stored data versions.
//!
//! An object is the concatenation of its extents; each extent is a byte
//! range of one stored data version (its own key, layout and segments) or
//! a hole of zeros. Writes never touch stored data: overwriting a range
//! uploads only the new bytes as a new version and lays an extent over the
//! old ones ([`Stored::write`]), an append adds an extent, truncation trims
//! them, and completing a multipart upload concatenates the parts' extents
//! ([`Stored::concat`]). Copies and renames share the data versions.
//!
//! Past [`MAX_EXTENTS`] extents a write rewrites the whole object as one
//! version (the caller's job; see `Bucket::write_at`), so reads never
//! chase thousands of slices — JuiceFS's slices have the same rule.

use cairn_proto::ObjectVersionId;
use cairn_proto::manifest::ObjectManifest;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Most extents an object keeps; a write past this merges them into one.
pub const MAX_EXTENTS: usize = 64;
/// Largest user metadata (keys and values), as in S3.
pub const MAX_META: usize = 2048;

/// What a name is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A regular file (an S3 object).
    File,
    /// An explicit directory (kept even when empty).
    Directory,
    /// A symbolic link to the target.
    Symlink(String),
}

/// POSIX ownership and mode bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posix {
    /// `st_mode` permission and type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Checksum algorithms S3 clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    /// CRC-32 (IEEE).
    Crc32,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// CRC-64/NVME.
    Crc64Nvme,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

/// A checksum a client sent with the object, kept to return when asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// Which algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The raw digest.
    pub value: Vec<u8>,
}

/// A byte range of a data version, or zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Index into [`Stored::data`]; `None` is a hole of zeros.
    pub data: Option<u32>,
    /// Where the range starts in that version's plaintext.
    pub skip: u64,
    /// Its length.
    pub len: u64,
}

/// The bytes of a stored object: data versions and the extents over them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The data versions the extents use (each used at least once).
    pub data: Vec<ObjectManifest>,
    /// The object's bytes, in order.
    pub extents: Vec<Extent>,
}

/// Where a name's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Inside the entry (small objects, directories, symlinks).
    Inline(Vec<u8>),
    /// In stored data versions.
    Stored(Stored),
}

/// A name's index entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// File, directory or symlink.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Last modified, milliseconds since the epoch.
    pub modified_ms: u64,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// Other stored HTTP headers (`Cache-Control`, `Content-Disposition`,
    /// `Content-Encoding`, `Content-Language`, `Expires`), lower-case names.
    pub headers: Vec<(String, String)>,
    /// User metadata (`x-amz-meta-*` without the prefix).
    pub meta: Vec<(String, String)>,
    /// The S3 ETag without quotes: hex MD5 of the bytes for a single
    /// upload, `hex(MD5(part MD5s))-N` for a multipart one.
    pub etag: Option<String>,
    /// Checksums the writer sent.
    pub checksums: Vec<Checksum>,
    /// POSIX attributes, once set through the mount.
    pub posix: Option<Posix>,
    /// The bytes.
    pub body: Body,
}

impl Entry {
    /// A file entry for `body` with everything else empty.
    pub fn file(body: Body, modified_ms: u64) -> Self {
        let size = match &body {
            Body::Inline(b) => b.len() as u64,
            Body::Stored(s) => s.size(),
        };
        Self {
            kind: Kind::File,
            size,
            modified_ms,
            content_type: None,
            headers: Vec::new(),
            meta: Vec::new(),
            etag: None,
            checksums: Vec::new(),
            posix: None,
            body,
        }
    }

    /// Checks that the parts agree: the size is the body's, every extent
    /// lies inside its data version, every version is used and valid.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_shape()?;
        if let Body::Stored(s) = &self.body {
            for m in &s.data {
                m.validate()?;
            }
        }
        Ok(())
    }

    /// [`Self::validate`] without checking each data version's manifest.
    pub fn validate_shape(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::BadEntry { reason });
        let body_size = match &self.body {
            Body::Inline(b) => b.len() as u64,
            Body::Stored(s) => {
                let mut used = vec![false; s.data.len()];
                for (i, e) in s.extents.iter().enumerate() {
                    if e.len == 0 {
                        return bad(format!("extent {i} is empty"));
                    }
                    let Some(d) = e.data else { continue };
                    let Some(m) = s.data.get(d as usize) else {
                        return bad(format!("extent {i} names data {d} of {}", s.data.len()));
                    };
                    if e.skip.checked_add(e.len).is_none_or(|end| end > m.size) {
                        return bad(format!("extent {i} ends past its data ({} bytes)", m.size));
                    }
                    used[d as usize] = true;
                }
                if let Some(i) = used.iter().position(|u| !u) {
                    return bad(format!("data {i} is used by no extent"));
                }
                s.size()
            }
        };
        if body_size != self.size {
            return bad(format!("size {} but the body holds {body_size} bytes", self.size));
        }
        Ok(())
    }

    /// The data versions this entry uses.
    pub fn versions(&self) -> impl Iterator<Item = ObjectVersionId> + '_ {
        let data = match &self.body {
            Body::Stored(s) => s.data.as_slice(),
            Body::Inline(_) => &[],
        };
        data.iter().map(|m| m.version)
    }
}

/// Checks user metadata against S3's limit.
pub fn check_meta(meta: &[(String, String)]) -> Result<(), Error> {
    let size: usize = meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_META {
        return Err(Error::MetadataTooLarge { size, max: MAX_META });
    }
    Ok(())
}

/// A piece of a read: `len` bytes at `skip` of data version `data`, or zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The data version (`None`: zeros).
    pub data: Option<u32>,
    /// Offset in its plaintext.
    pub skip: u64,
    /// Bytes.
    pub len: u64,
}

impl Stored {
    /// The first `len` bytes of a data version (a data version is longer
    /// than its bytes when its last segment is padded: [`crate::padding`]).
    pub fn whole(m: ObjectManifest, len: u64) -> Self {
        if len == 0 {
            return Self::default();
        }
        Self { data: vec![m], extents: vec![Extent { data: Some(0), skip: 0, len }] }
    }

    /// Bytes in the object.
    pub fn size(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }

    /// The pieces that make up bytes `range` of the object, in order.
    pub fn plan(&self, range: std::ops::Range<u64>) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut at = 0u64;
        for e in &self.extents {
            let (lo, hi) = (at, at + e.len);
            at = hi;
            let (from, to) = (range.start.max(lo), range.end.min(hi));
            if from < to {
                out.push(Piece { data: e.data, skip: e.skip + (from - lo), len: to - from });
            }
            if hi >= range.end {
                break;
            }
        }
        out
    }

    /// Keeps the first `len` bytes, or adds a hole up to `len`.
    pub fn truncate(&mut self, len: u64) {
        let size = self.size();
        if len >= size {
            if len > size {
                self.push(Extent { data: None, skip: 0, len: len - size });
            }
            return;
        }
        let mut keep = Vec::new();
        let mut at = 0;
        for e in &self.extents {
            if at >= len {
                break;
            }
            keep.push(Extent { len: e.len.min(len - at), ..*e });
            at += e.len;
        }
        self.extents = keep;
        self.prune();
    }

    /// Lays the first `len` bytes of `m` over the object at offset `at` (a
    /// hole fills any gap past the end).
    pub fn write(&mut self, at: u64, m: ObjectManifest, len: u64) {
        if len == 0 {
            return;
        }
        let size = self.size();
        let tail = self.clone();
        self.truncate(at);
        self.data.push(m);
        let new = (self.data.len() - 1) as u32;
        self.push(Extent { data: Some(new), skip: 0, len });
        let end = at + len;
        if end < size {
            for p in tail.plan(end..size) {
                let data = p.data.map(|d| self.adopt(&tail.data[d as usize]));
                self.push(Extent { data, skip: p.skip, len: p.len });
            }
        }
        self.prune();
    }

    /// `self` followed by `other` (multipart completion, append of a whole
    /// object).
    pub fn concat(&mut self, other: &Stored) {
        for e in &other.extents {
            let data = e.data.map(|d| self.adopt(&other.data[d as usize]));
            self.push(Extent { data, ..*e });
        }
        self.prune();
    }

    /// The index of `m` in `self.data`, adding it if absent.
    fn adopt(&mut self, m: &ObjectManifest) -> u32 {
        match self.data.iter().position(|d| d.version == m.version) {
            Some(i) => i as u32,
            None => {
                self.data.push(m.clone());
                (self.data.len() - 1) as u32
            }
        }
    }

    /// Appends an extent, joining it to the last when they are contiguous.
    fn push(&mut self, e: Extent) {
        if e.len == 0 {
            return;
        }
        if let Some(last) = self.extents.last_mut()
            && last.data == e.data
            && (e.data.is_none() || last.skip + last.len == e.skip)
        {
            last.len += e.len;
            return;
        }
        self.extents.push(e);
    }

    /// Drops data versions no extent uses (and renumbers).
    fn prune(&mut self) {
        let mut used = vec![false; self.data.len()];
        for e in &self.extents {
            if let Some(d) = e.data {
                used[d as usize] = true;
            }
        }
        let mut map = vec![None; self.data.len()];
        let mut kept = Vec::new();
        for (i, m) in std::mem::take(&mut self.data).into_iter().enumerate() {
            if used[i] {
                map[i] = Some(kept.len() as u32);
                kept.push(m);
            }
        }
        self.data = kept;
        for e in &mut self.extents {
            e.data = e.data.and_then(|d| map[d as usize]);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use cairn_proto::layout::Layout;
    use proptest::prelude::*;

    use super::*;

    /// A manifest of `size` bytes without segments (enough for extent logic;
    /// `validate` is not called on it).
    pub(crate) fn fake(tag: u8, size: u64) -> ObjectManifest {
        ObjectManifest {
            version: ObjectVersionId([tag; 16]),
            size,
            layout: Layout::with_code(2, 3).expect("layout"),
            data_key: [tag; 32],
            segments: Vec::new(),
        }
    }

    /// The bytes of data version `tag`: a pattern that tells versions and offsets apart.
    fn bytes_of(tag: u8, skip: u64, len: u64) -> Vec<u8> {
        (skip..skip + len).map(|i| tag.wrapping_mul(31).wrapping_add((i % 251) as u8)).collect()
    }

    fn render(s: &Stored, size: u64) -> Vec<u8> {
        s.plan(0..size)
            .into_iter()
            .flat_map(|p| match p.data {
                Some(d) => bytes_of(s.data[d as usize].version.0[0], p.skip, p.len),
                None => vec![0; p.len as usize],
            })
            .collect()
    }

    #[derive(Clone, Debug)]
    enum Edit {
        Write(u64, u64),
        Truncate(u64),
        Append(u64),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (0..3000u64, 1..1500u64).prop_map(|(a, l)| Edit::Write(a, l)),
            (0..3000u64).prop_map(Edit::Truncate),
            (1..800u64).prop_map(Edit::Append),
        ]
    }

    proptest! {
        /// Random overwrites, appends and truncations agree with the same
        /// edits on a plain byte vector, and every range reads right.
        #[test]
        fn extents_match_a_local_file(edits in proptest::collection::vec(edit(), 1..30), lo in 0..4000u64, hi in 0..4000u64) {
            let mut s = Stored::default();
            let mut file: Vec<u8> = Vec::new();
            for (i, e) in edits.into_iter().enumerate() {
                let tag = i as u8 + 1;
                match e {
                    Edit::Write(at, len) => {
                        s.write(at, fake(tag, len), len);
                        if file.len() < (at + len) as usize {
                            file.resize((at + len) as usize, 0);
                        }
                        file[at as usize..(at + len) as usize].copy_from_slice(&bytes_of(tag, 0, len));
                    }
                    Edit::Truncate(len) => {
                        s.truncate(len);
                        file.resize(len as usize, 0);
                    }
                    Edit::Append(len) => {
                        let at = file.len() as u64;
                        s.write(at, fake(tag, len), len);
                        file.extend(bytes_of(tag, 0, len));
                    }
                }
                prop_assert_eq!(s.size(), file.len() as u64);
                let entry = Entry::file(Body::Stored(s.clone()), 0);
                // Every data version is used, every extent lies inside it.
                prop_assert!(entry.validate_shape().is_ok(), "{:?}", entry.validate_shape());
                prop_assert!(s.extents.iter().all(|e| e.data.is_none_or(|d| (d as usize) < s.data.len())));
            }
            prop_assert_eq!(render(&s, s.size()), file.clone());
            let (lo, hi) = (lo.min(hi).min(file.len() as u64), hi.max(lo).min(file.len() as u64));
            let part: Vec<u8> = s.plan(lo..hi).into_iter().flat_map(|p| match p.data {
                Some(d) => bytes_of(s.data[d as usize].version.0[0], p.skip, p.len),
                None => vec![0; p.len as usize],
            }).collect();
            prop_assert_eq!(part, file[lo as usize..hi as usize].to_vec());
        }
    }

    #[test]
    fn concat_shares_versions_and_joins_neighbours() {
        let mut a = Stored::whole(fake(1, 100), 100);
        let b = Stored::whole(fake(2, 50), 50);
        a.concat(&b);
        a.concat(&Stored::whole(fake(1, 100), 100));
        assert_eq!(a.size(), 250);
        assert_eq!(a.data.len(), 2, "version 1 is listed once");
        assert_eq!(a.extents.len(), 3);
        let mut c = Stored::whole(fake(3, 10), 10);
        c.truncate(30);
        c.truncate(40);
        assert_eq!(
            c.extents,
            vec![Extent { data: Some(0), skip: 0, len: 10 }, Extent { data: None, skip: 0, len: 30 }]
        );
    }

    #[test]
    fn entries_that_contradict_themselves_are_refused() {
        let good = Entry::file(Body::Stored(Stored::whole(fake(1, 0), 0)), 0);
        assert!(good.validate().is_ok());
        let mut e = Entry::file(Body::Inline(vec![1, 2, 3]), 0);
        e.size = 4;
        assert!(matches!(e.validate(), Err(Error::BadEntry { .. })));
        let mut s = Stored::whole(fake(1, 10), 10);
        s.extents[0].len = 11;
        let e = Entry { size: 11, ..Entry::file(Body::Stored(s), 0) };
        assert!(matches!(e.validate_shape(), Err(Error::BadEntry { .. })));
        assert!(check_meta(&[("k".into(), "v".repeat(MAX_META))]).is_err());
    }
}
