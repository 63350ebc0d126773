//! Changes to objects that share or reuse stored data: copy, rename,
//! writes into the middle or past the end, truncation, multipart
//! composition, directories, symlinks and attribute updates. Each is an
//! index update; only new bytes are uploaded. Every read-modify-write
//! commits with the precondition that the entry it read is still current
//! ([`Expect::Stamp`]), and retries on a conflict, so a concurrent writer
//! is never overwritten by a stale copy.

use std::io::Read;

use md5::{Digest, Md5};

use crate::bucket::{Bucket, INLINE_MAX, ObjectInfo, check_key, hex, now_ms, still};
use crate::entry::{Body, Entry, Kind, MAX_EXTENTS, Stored, check_meta};
use crate::error::Error;
use crate::formats;
use crate::index::{Expect, Op};

/// Attempts of a read-modify-write before a conflict is returned.
const RMW_ATTEMPTS: usize = 8;

/// A change made through a writable cache (the mount's files): the bytes
/// past `keep` are dropped, the object is cut or extended with zeros to
/// `len`, then each write lands at its offset.
#[derive(Debug)]
pub struct Patch<R> {
    /// Bytes of the current object kept (the smallest size it was cut to).
    pub keep: u64,
    /// Size afterwards.
    pub len: u64,
    /// Bytes written, by offset (inside `0..len`).
    pub writes: Vec<(u64, R)>,
    /// POSIX attributes to record.
    pub posix: Option<crate::entry::Posix>,
    /// Modification time to record instead of now.
    pub modified_ms: Option<u64>,
}

/// What a copy does with the metadata (S3's `x-amz-metadata-directive`).
#[derive(Clone, Debug, Default)]
pub enum MetadataDirective {
    /// Keep the source's metadata.
    #[default]
    Copy,
    /// Replace content type, headers and user metadata.
    Replace {
        /// New content type.
        content_type: Option<String>,
        /// New headers.
        headers: Vec<(String, String)>,
        /// New user metadata.
        meta: Vec<(String, String)>,
    },
}

impl Bucket {
    /// Reads `key`, changes its entry with `change`, and commits it if the
    /// entry is still the one read; retries on conflict.
    pub async fn update(
        &self,
        key: &str,
        change: impl Fn(&mut Entry) -> Result<(), Error>,
    ) -> Result<ObjectInfo, Error> {
        let mut last = None;
        for _ in 0..RMW_ATTEMPTS {
            let snap = self.tree().snapshot(std::time::Duration::ZERO).await?;
            let (mut entry, value) = self.entry_at(&snap, key).await?;
            change(&mut entry)?;
            entry.validate_shape()?;
            match self.store(key, entry, still(&value)).await {
                Err(e) if matches!(e.root(), Error::Conflict { .. }) => last = Some(e),
                r => return r,
            }
        }
        Err(last.unwrap_or(Error::Stopped))
    }

    /// Copies `src` to `dst` in this bucket: an index update, no data
    /// moves. A copy onto itself (rclone does this to change metadata)
    /// keeps the data.
    pub async fn copy(&self, src: &str, dst: &str, directive: MetadataDirective) -> Result<ObjectInfo, Error> {
        check_key(dst)?;
        let snap = self.snapshot().await?;
        let (mut entry, _) = self.entry_at(&snap, src).await?;
        if let MetadataDirective::Replace { content_type, headers, meta } = directive {
            check_meta(&meta)?;
            entry.content_type = content_type;
            entry.headers = headers;
            entry.meta = meta;
        }
        entry.modified_ms = now_ms();
        self.store(dst, entry, Expect::Any).await
    }

    /// Renames `src` to `dst` atomically (replacing `dst`): an index
    /// update, no data moves. Fails with a conflict if `src` changed
    /// meanwhile, after retrying.
    pub async fn rename(&self, src: &str, dst: &str) -> Result<ObjectInfo, Error> {
        self.rename_with(src, dst, true).await
    }

    /// [`Bucket::rename`]; without `replace`, fails with
    /// [`Error::Conflict`] if `dst` exists (`RENAME_NOREPLACE`).
    pub async fn rename_with(&self, src: &str, dst: &str, replace: bool) -> Result<ObjectInfo, Error> {
        check_key(dst)?;
        if src == dst {
            return self.head(src).await;
        }
        let mut last = None;
        for _ in 0..RMW_ATTEMPTS {
            let snap = self.tree().snapshot(std::time::Duration::ZERO).await?;
            let (entry, value) = self.entry_at(&snap, src).await?;
            let info = crate::bucket::info_of(&entry, dst.to_string());
            let to = if replace { Expect::Any } else { Expect::Absent };
            let ops = vec![
                Op::put(dst, formats::encode_entry(&entry)).expecting(to),
                Op::delete(src).expecting(still(&value)),
            ];
            match self.commit(ops).await {
                Ok(_) => return Ok(info),
                Err(e) if replace && matches!(e.root(), Error::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Stopped))
    }

    /// Moves every key under the prefix `src` (a directory, ending in `/`,
    /// its own entry included) under `dst`, in one commit: another client
    /// sees all of the tree moved or none of it. Fails with a conflict if
    /// any of them changed meanwhile, after retrying. Returns the number
    /// of keys moved.
    pub async fn rename_tree(&self, src: &str, dst: &str) -> Result<usize, Error> {
        check_key(src)?;
        check_key(dst)?;
        if dst.starts_with(src) {
            return Err(Error::BadName { name: dst.into(), reason: "a directory cannot move inside itself" });
        }
        let mut last = None;
        for _ in 0..RMW_ATTEMPTS {
            let snap = self.tree().snapshot(std::time::Duration::ZERO).await?;
            let mut ops = Vec::new();
            let mut after = String::new();
            loop {
                let from = if after.is_empty() {
                    std::ops::Bound::Unbounded
                } else {
                    std::ops::Bound::Excluded(after.as_str())
                };
                let batch = self.tree().list(&snap, src, from, 1000).await?;
                let Some((end, _)) = batch.last() else { break };
                after = end.clone();
                for (k, v) in batch {
                    let Some(data) = v.live() else { continue };
                    let moved = format!("{dst}{}", &k[src.len()..]);
                    check_key(&moved)?;
                    ops.push(Op::put(moved, data.to_vec()));
                    ops.push(Op::delete(k).expecting(still(&v)));
                }
            }
            let moved = ops.len() / 2;
            if moved == 0 {
                return Ok(0);
            }
            match self.commit(ops).await {
                Ok(_) => return Ok(moved),
                Err(e) if matches!(e.root(), Error::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Stopped))
    }

    /// Removes `key` and records the explicit directory `dir` (ending in
    /// `/`) in the same commit, so a directory whose last file goes away
    /// stays (the mount's `unlink`).
    pub async fn delete_keeping(&self, key: &str, dir: &str) -> Result<(), Error> {
        check_key(key)?;
        check_key(dir)?;
        let mut entry = Entry::file(Body::Inline(Vec::new()), now_ms());
        entry.kind = Kind::Directory;
        let ops = vec![Op::delete(key), Op::put(dir, formats::encode_entry(&entry))];
        match self.commit(ops).await?.first().cloned().flatten() {
            Some(_) => Ok(()),
            None => Err(Error::NoSuchKey { bucket: self.name().into(), key: key.into() }),
        }
    }

    /// Applies a [`Patch`] to `key` (absent: a new file) in one commit:
    /// only the written ranges are uploaded, each as a data version of its
    /// own; the rest of the object keeps its extents.
    pub async fn patch<R: Read + Send + 'static>(&self, key: &str, patch: Patch<R>) -> Result<ObjectInfo, Error> {
        check_key(key)?;
        let Patch { keep, len, writes, posix, modified_ms } = patch;
        let mut fresh = Vec::new();
        for (at, reader) in writes {
            match self.upload(reader).await {
                Ok(up) => fresh.push((at, up.manifest, up.len)),
                Err(e) => {
                    for (_, m, _) in &fresh {
                        self.delete_manifest(m);
                    }
                    return Err(e);
                }
            }
        }
        let result = self
            .rewrite_with(
                key,
                true,
                |body| {
                    let Body::Stored(mut s) = body else { return body };
                    s.truncate(keep.min(s.size()));
                    s.truncate(len);
                    for (at, m, len) in &fresh {
                        s.write(*at, m.clone(), *len);
                    }
                    s.truncate(len);
                    Body::Stored(s)
                },
                |entry| {
                    if posix.is_some() {
                        entry.posix = posix;
                    }
                    if let Some(ms) = modified_ms {
                        entry.modified_ms = ms;
                    }
                },
            )
            .await;
        if result.is_err() {
            for (_, m, _) in &fresh {
                self.delete_manifest(m);
            }
        }
        result
    }

    /// Writes what `reader` yields into `key` at `offset` (creating the
    /// object if absent; a gap past the end reads as zeros). Only the new
    /// bytes are uploaded (and an old body small enough to live inside the
    /// index, once); past [`MAX_EXTENTS`] the object is rewritten as one
    /// data version.
    pub async fn write_at(
        &self,
        key: &str,
        offset: u64,
        reader: impl Read + Send + 'static,
    ) -> Result<ObjectInfo, Error> {
        check_key(key)?;
        let up = self.upload(reader).await?;
        let fresh = up.manifest.clone();
        let result = self
            .rewrite(key, true, |body| {
                let Body::Stored(mut s) = body else { return body };
                s.write(offset, up.manifest.clone(), up.len);
                Body::Stored(s)
            })
            .await;
        if result.is_err() {
            self.delete_manifest(&fresh);
        }
        result
    }

    /// Cuts `key` to `len` bytes, or extends it with zeros.
    pub async fn truncate(&self, key: &str, len: u64) -> Result<ObjectInfo, Error> {
        check_key(key)?;
        let small = len < INLINE_MAX as u64;
        self.rewrite(key, !small, |body| match body {
            Body::Inline(mut b) => {
                b.resize(len as usize, 0);
                Body::Inline(b)
            }
            Body::Stored(mut s) => {
                s.truncate(len);
                Body::Stored(s)
            }
        })
        .await
    }

    /// Applies `change` to the body of `key` (absent: an empty file),
    /// committing only if the entry is still the one read. With `stored`,
    /// an inline body is first stored as a data version, so the change
    /// sees extents.
    async fn rewrite(&self, key: &str, stored: bool, change: impl Fn(Body) -> Body) -> Result<ObjectInfo, Error> {
        self.rewrite_with(key, stored, change, |_| {}).await
    }

    /// [`Self::rewrite`], then `finish` on the entry before it is stored.
    async fn rewrite_with(
        &self,
        key: &str,
        stored: bool,
        change: impl Fn(Body) -> Body,
        finish: impl Fn(&mut Entry),
    ) -> Result<ObjectInfo, Error> {
        let mut last = None;
        for _ in 0..RMW_ATTEMPTS {
            let snap = self.tree().snapshot(std::time::Duration::ZERO).await?;
            let (mut entry, expect) = match self.entry_at(&snap, key).await {
                Ok((e, v)) => (e, still(&v)),
                Err(Error::NoSuchKey { .. }) => (Entry::file(Body::Inline(Vec::new()), now_ms()), Expect::Absent),
                Err(e) => return Err(e),
            };
            if !matches!(entry.kind, Kind::File) {
                return Err(Error::NotAFile { key: key.into() });
            }
            let mut uploaded = Vec::new();
            let body = std::mem::replace(&mut entry.body, Body::Inline(Vec::new()));
            let body = match body {
                Body::Inline(b) if stored && b.is_empty() => Body::Stored(Stored::default()),
                Body::Inline(b) if stored => {
                    let up = self.upload(std::io::Cursor::new(b)).await?;
                    uploaded.push(up.manifest.clone());
                    Body::Stored(up.stored())
                }
                b => b,
            };
            let old: Vec<_> = entry.versions().collect();
            entry.body = change(body);
            // Data versions that only the body before compaction used.
            let mut dropped = Vec::new();
            if let Body::Stored(s) = &entry.body
                && s.extents.len() > MAX_EXTENTS
            {
                let whole = self.compact(&entry.body, s.size()).await?;
                dropped = s.data.iter().filter(|m| !old.contains(&m.version)).cloned().collect();
                uploaded.extend(whole.data.iter().cloned());
                entry.body = Body::Stored(whole);
            }
            entry.size = match &entry.body {
                Body::Inline(b) => b.len() as u64,
                Body::Stored(s) => s.size(),
            };
            entry.modified_ms = now_ms();
            // The bytes changed: the single-upload MD5 no longer holds.
            entry.etag = None;
            entry.checksums.clear();
            finish(&mut entry);
            match self.store(key, entry, expect).await {
                Ok(info) => {
                    for m in &dropped {
                        self.delete_manifest(m);
                    }
                    return Ok(info);
                }
                Err(e) => {
                    for m in &uploaded {
                        self.delete_manifest(m);
                    }
                    if !matches!(e.root(), Error::Conflict { .. }) {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(Error::Stopped))
    }

    /// Rewrites a body as one data version (reads it all, uploads it once).
    async fn compact(&self, body: &Body, size: u64) -> Result<Stored, Error> {
        let mut bytes = Vec::with_capacity(size.min(1 << 30) as usize);
        self.read_body(body, 0..size, &mut bytes).await?;
        let up = self.upload(std::io::Cursor::new(bytes)).await?;
        Ok(up.stored())
    }

    /// Creates (or replaces) `key` as the concatenation of `parts` (keys
    /// of this bucket, e.g. multipart parts): no byte is uploaded again,
    /// except parts small enough to live inside the index, which are
    /// stored once now. The ETag is S3's `hex(MD5(part MD5s))-N`. The
    /// parts are removed in the same commit when `remove_parts` is set.
    pub async fn compose(
        &self,
        key: &str,
        parts: &[String],
        opts: crate::bucket::PutOptions,
        remove_parts: bool,
    ) -> Result<ObjectInfo, Error> {
        check_key(key)?;
        self.compose_with(key, parts, opts, remove_parts, Vec::new()).await
    }

    /// [`Bucket::compose`], committing `extra` ops in the same group.
    pub(crate) async fn compose_with(
        &self,
        key: &str,
        parts: &[String],
        opts: crate::bucket::PutOptions,
        remove_parts: bool,
        extra: Vec<Op>,
    ) -> Result<ObjectInfo, Error> {
        check_meta(&opts.meta)?;
        let snap = self.tree().snapshot(std::time::Duration::ZERO).await?;
        let mut stored = Stored::default();
        let mut md5s = Md5::new();
        let mut ops = Vec::new();
        let mut uploaded = Vec::new();
        for p in parts {
            let (entry, value) = self.entry_at(&snap, p).await?;
            let part_md5 = entry.etag.clone().unwrap_or_default();
            md5s.update(unhex(&part_md5).ok_or(Error::BadEntry { reason: format!("part {p} has no MD5") })?);
            match entry.body {
                Body::Stored(s) => stored.concat(&s),
                Body::Inline(b) if b.is_empty() => {}
                Body::Inline(b) => {
                    let up = self.upload(std::io::Cursor::new(b)).await?;
                    uploaded.push(up.manifest.clone());
                    stored.concat(&up.stored());
                }
            }
            if remove_parts {
                ops.push(Op::delete(p.as_str()).expecting(still(&value)));
            }
        }
        let mut entry = Entry::file(Body::Stored(stored), now_ms());
        entry.content_type = opts.content_type;
        entry.headers = opts.headers;
        entry.meta = opts.meta;
        entry.checksums = opts.checksums;
        entry.etag = Some(format!("{}-{}", hex(&md5s.finalize()), parts.len()));
        let info = crate::bucket::info_of(&entry, key.to_string());
        ops.insert(0, Op::put(key, formats::encode_entry(&entry)));
        ops.extend(extra);
        if let Err(e) = self.commit(ops).await {
            for m in &uploaded {
                self.delete_manifest(m);
            }
            return Err(e);
        }
        Ok(info)
    }

    /// Creates an explicit (possibly empty) directory `key` (ending in `/`).
    pub async fn mkdir(&self, key: &str) -> Result<ObjectInfo, Error> {
        check_key(key)?;
        let mut entry = Entry::file(Body::Inline(Vec::new()), now_ms());
        entry.kind = Kind::Directory;
        self.store(key, entry, Expect::Absent).await
    }

    /// Creates a symlink `key` pointing at `target`.
    pub async fn symlink(&self, key: &str, target: &str) -> Result<ObjectInfo, Error> {
        check_key(key)?;
        if target.is_empty() {
            return Err(Error::BadName { name: key.into(), reason: "a symlink needs a target" });
        }
        let mut entry = Entry::file(Body::Inline(Vec::new()), now_ms());
        entry.kind = Kind::Symlink(target.into());
        self.store(key, entry, Expect::Absent).await
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}
