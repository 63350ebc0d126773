//! Multipart uploads, kept in the bucket's encrypted index so they survive
//! a restart of whoever started them and every device of the account sees
//! them.
//!
//! - An upload in progress is an entry under `\0u/<key>\0<id>`: an empty
//!   file whose content type, headers and metadata are the object's to be.
//!   The key order is S3's order of ListMultipartUploads (key, then id).
//! - Part `n` is an ordinary entry under `\0p/<id>/<n, 5 digits>`, stored
//!   as any put is, with its MD5 as ETag. Being an entry, its data counts
//!   as used for the collector.
//! - Completing composes the listed parts into the object and removes the
//!   upload and every part in the same commit: no byte moves
//!   ([`Bucket::compose`]). Aborting removes them; their data is collected.
//! - [`Bucket::expire_uploads`] aborts uploads older than a limit, and
//!   removes parts whose upload is gone (a part that raced a completion).

use std::io::Read;
use std::ops::Bound;

use crate::bucket::{Bucket, ObjectInfo, PutOptions, check_key, now_ms, still};
use crate::entry::{Body, Entry, check_meta};
use crate::error::Error;
use crate::formats;
use crate::index::{Expect, Op, Value};
use crate::tree::Snapshot;

/// Uploads in progress.
const UPLOADS: &str = "\0u/";
/// Parts of uploads.
const PARTS: &str = "\0p/";
/// Largest part number (S3's).
pub const MAX_PART: u32 = 10_000;
/// Smallest part but the last (S3's 5 MiB).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Entries read per listing step.
const BATCH: usize = 1000;

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The object's key.
    pub key: String,
    /// The upload id.
    pub id: String,
    /// When it was started, milliseconds since the epoch.
    pub initiated_ms: u64,
    /// Content type, headers and metadata the object will get.
    pub info: ObjectInfo,
}

/// An uploaded part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Its number, 1..=10000.
    pub number: u32,
    /// Its size.
    pub size: u64,
    /// Hex MD5 of its bytes.
    pub etag: String,
    /// When it was uploaded.
    pub modified_ms: u64,
}

fn upload_key(key: &str, id: &str) -> String {
    format!("{UPLOADS}{key}\0{id}")
}

fn parts_prefix(id: &str) -> String {
    format!("{PARTS}{id}/")
}

fn part_key(id: &str, number: u32) -> String {
    format!("{PARTS}{id}/{number:05}")
}

/// Splits an upload record's key into object key and id.
fn split_upload_key(k: &str) -> Option<(&str, &str)> {
    k.strip_prefix(UPLOADS)?.rsplit_once('\0')
}

fn check_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn part_of(k: &str, v: &Value) -> Result<Option<Part>, Error> {
    let Some(n) = k.rsplit_once('/').and_then(|(_, n)| n.parse::<u32>().ok()) else { return Ok(None) };
    let e = formats::decode_entry(v.live().unwrap_or_default())?;
    Ok(Some(Part { number: n, size: e.size, etag: e.etag.unwrap_or_default(), modified_ms: e.modified_ms }))
}

impl Bucket {
    /// Starts a multipart upload of `key`; returns its id.
    pub async fn create_upload(&self, key: &str, opts: PutOptions) -> Result<String, Error> {
        check_key(key)?;
        check_meta(&opts.meta)?;
        let id = crate::bucket::hex(&rand::random::<[u8; 16]>());
        let mut entry = Entry::file(Body::Inline(Vec::new()), now_ms());
        entry.content_type = opts.content_type;
        entry.headers = opts.headers;
        entry.meta = opts.meta;
        entry.checksums = opts.checksums;
        self.store(&upload_key(key, &id), entry, Expect::Absent).await?;
        Ok(id)
    }

    /// The newest view, for multipart's read-modify-writes.
    async fn fresh(&self) -> Result<Snapshot, Error> {
        self.tree().snapshot(std::time::Duration::ZERO).await
    }

    /// The upload record in `snap`, or `NoSuchUpload`.
    async fn upload_entry(&self, snap: &Snapshot, key: &str, id: &str) -> Result<(Entry, Value), Error> {
        let missing = || Error::NoSuchUpload { key: key.into(), upload: id.into() };
        if !check_id(id) {
            return Err(missing());
        }
        match self.entry_at(snap, &upload_key(key, id)).await {
            Err(Error::NoSuchKey { .. }) => Err(missing()),
            r => r,
        }
    }

    /// Describes an upload in progress.
    pub async fn upload_info(&self, key: &str, id: &str) -> Result<Upload, Error> {
        check_key(key)?;
        let (e, _) = self.upload_entry(&self.fresh().await?, key, id).await?;
        Ok(Upload {
            key: key.into(),
            id: id.into(),
            initiated_ms: e.modified_ms,
            info: crate::bucket::info_of(&e, key.into()),
        })
    }

    /// Stores part `number` of an upload (replacing an earlier one).
    pub async fn upload_part(
        &self,
        key: &str,
        id: &str,
        number: u32,
        reader: impl Read + Send + 'static,
    ) -> Result<Part, Error> {
        check_key(key)?;
        if !(1..=MAX_PART).contains(&number) {
            return Err(Error::BadPartNumber(number));
        }
        self.upload_entry(&self.fresh().await?, key, id).await?;
        let info = self.put_at(&part_key(id, number), reader, PutOptions::default()).await?;
        Ok(Part { number, size: info.size, etag: info.etag.unwrap_or_default(), modified_ms: info.modified_ms })
    }

    /// Parts of an upload numbered above `after`, at most `limit`, and
    /// whether more follow.
    pub async fn list_parts(&self, key: &str, id: &str, after: u32, limit: usize) -> Result<(Vec<Part>, bool), Error> {
        check_key(key)?;
        let snap = self.fresh().await?;
        self.upload_entry(&snap, key, id).await?;
        let start = part_key(id, after);
        let from = if after == 0 { Bound::Unbounded } else { Bound::Excluded(start.as_str()) };
        let listed = self.tree().list(&snap, &parts_prefix(id), from, limit.saturating_add(1)).await?;
        let mut parts = Vec::new();
        for (k, v) in &listed {
            parts.extend(part_of(k, v)?);
        }
        let more = parts.len() > limit;
        parts.truncate(limit);
        Ok((parts, more))
    }

    /// Completes an upload: the object becomes the listed parts, in order,
    /// with no byte uploaded again; the upload and all its parts go.
    pub async fn complete_upload(&self, key: &str, id: &str, parts: &[(u32, String)]) -> Result<ObjectInfo, Error> {
        check_key(key)?;
        let snap = self.fresh().await?;
        let (record, record_value) = self.upload_entry(&snap, key, id).await?;
        let listed = self.tree().list(&snap, &parts_prefix(id), Bound::Unbounded, MAX_PART as usize + 1).await?;
        let mut have = std::collections::BTreeMap::new();
        for (k, v) in &listed {
            if let Some(p) = part_of(k, v)? {
                have.insert(p.number, (k.clone(), v.clone(), p));
            }
        }
        // Order first, then each part, then sizes (as S3 reports them).
        let mut prev = 0;
        for (number, _) in parts {
            if *number <= prev {
                return Err(Error::InvalidPartOrder { part: *number });
            }
            prev = *number;
        }
        let mut keys = Vec::with_capacity(parts.len());
        for (number, etag) in parts {
            let Some((k, _, p)) = have.get(number) else { return Err(Error::InvalidPart { part: *number }) };
            if p.etag != etag.trim_matches('"') {
                return Err(Error::InvalidPart { part: *number });
            }
            keys.push(k.clone());
        }
        for (number, _) in &parts[..parts.len().saturating_sub(1)] {
            let size = have.get(number).map_or(0, |(_, _, p)| p.size);
            if size < MIN_PART_SIZE {
                return Err(Error::EntityTooSmall { part: *number, size });
            }
        }
        if parts.is_empty() {
            return Err(Error::InvalidPart { part: 0 });
        }
        // Parts uploaded but not listed go too; the record must still be
        // there (no concurrent completion or abort).
        let mut extra: Vec<Op> = have
            .iter()
            .filter(|(n, _)| !parts.iter().any(|(m, _)| m == *n))
            .map(|(_, (k, v, _))| Op::delete(k.as_str()).expecting(still(v)))
            .collect();
        extra.push(Op::delete(upload_key(key, id)).expecting(still(&record_value)));
        let opts = PutOptions {
            content_type: record.content_type,
            headers: record.headers,
            meta: record.meta,
            ..PutOptions::default()
        };
        match self.compose_with(key, &keys, opts, true, extra).await {
            Err(e) if matches!(e.root(), Error::Conflict { .. }) => {
                // Another completion or an abort won; say which.
                self.upload_entry(&self.fresh().await?, key, id).await?;
                Err(e)
            }
            r => r,
        }
    }

    /// Aborts an upload: it and its parts are removed, and their data is
    /// collected.
    pub async fn abort_upload(&self, key: &str, id: &str) -> Result<(), Error> {
        check_key(key)?;
        let snap = self.fresh().await?;
        let (_, record_value) = self.upload_entry(&snap, key, id).await?;
        self.remove_upload(&snap, &upload_key(key, id), Some(record_value), id).await
    }

    /// Removes the parts of upload `id` listed in `snap` and its record
    /// (if given), each only if unchanged since.
    async fn remove_upload(&self, snap: &Snapshot, record: &str, value: Option<Value>, id: &str) -> Result<(), Error> {
        let listed = self.tree().list(snap, &parts_prefix(id), Bound::Unbounded, MAX_PART as usize + 1).await?;
        let mut ops: Vec<Op> = listed.iter().map(|(k, v)| Op::delete(k.as_str()).expecting(still(v))).collect();
        if let Some(v) = value {
            ops.push(Op::delete(record).expecting(still(&v)));
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.commit(ops).await?;
        Ok(())
    }

    /// Uploads in progress whose key starts with `prefix`, after
    /// (`key_marker`, `id_marker`) in S3's order, at most `limit`, and
    /// whether more follow.
    pub async fn list_uploads(
        &self,
        prefix: &str,
        key_marker: &str,
        id_marker: &str,
        limit: usize,
    ) -> Result<(Vec<Upload>, bool), Error> {
        let snap = self.fresh().await?;
        // Without an id marker, every upload of the marker key is skipped
        // ('~' sorts after every hex digit).
        let after = format!("{UPLOADS}{key_marker}\0{}", if id_marker.is_empty() { "~" } else { id_marker });
        let from = if key_marker.is_empty() { Bound::Unbounded } else { Bound::Excluded(after.as_str()) };
        let listed = self.tree().list(&snap, &format!("{UPLOADS}{prefix}"), from, limit.saturating_add(1)).await?;
        let mut out = Vec::new();
        for (k, v) in &listed {
            let Some((key, id)) = split_upload_key(k) else { continue };
            let e = formats::decode_entry(v.live().unwrap_or_default())?;
            out.push(Upload {
                key: key.into(),
                id: id.into(),
                initiated_ms: e.modified_ms,
                info: crate::bucket::info_of(&e, key.into()),
            });
        }
        let more = out.len() > limit;
        out.truncate(limit);
        Ok((out, more))
    }

    /// Aborts uploads started more than `max_age_ms` ago, and removes
    /// parts whose upload is gone. Returns the uploads aborted.
    pub async fn expire_uploads(&self, max_age_ms: u64) -> Result<usize, Error> {
        let horizon = now_ms().saturating_sub(max_age_ms);
        let snap = self.fresh().await?;
        let mut recorded = std::collections::HashSet::new();
        let mut expired = Vec::new();
        let mut start = String::new();
        loop {
            let from = if start.is_empty() { Bound::Unbounded } else { Bound::Excluded(start.as_str()) };
            let batch = self.tree().list(&snap, UPLOADS, from, BATCH).await?;
            let Some((last, _)) = batch.last() else { break };
            start = last.clone();
            let short = batch.len() < BATCH;
            for (k, v) in batch {
                let Some((_, id)) = split_upload_key(&k) else { continue };
                let id = id.to_string();
                let e = formats::decode_entry(v.live().unwrap_or_default())?;
                // Every upload with a record; the expired ones' parts go
                // with them below.
                recorded.insert(id.clone());
                if e.modified_ms < horizon {
                    expired.push((k, v, id));
                }
            }
            if short {
                break;
            }
        }
        let count = expired.len();
        for (k, v, id) in expired {
            self.remove_upload(&snap, &k, Some(v), &id).await?;
        }
        // Parts of uploads that have no record (in this view).
        let parts = self.tree().list(&snap, PARTS, Bound::Unbounded, BATCH).await?;
        let orphans: std::collections::BTreeSet<String> = parts
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(PARTS)?.split_once('/').map(|(id, _)| id.to_string()))
            .filter(|id| !recorded.contains(id))
            .collect();
        for id in orphans {
            self.remove_upload(&snap, "", None, &id).await?;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_keys_sort_by_key_then_id_and_split_back() {
        let a = upload_key("a", "0f");
        let ab = upload_key("a/b", "00");
        let b = upload_key("b", "00");
        assert!(a < ab && ab < b);
        assert_eq!(split_upload_key(&a), Some(("a", "0f")));
        assert!(part_key("x", 2) < part_key("x", 10));
        assert!(check_id(&"0a".repeat(16)));
        assert!(!check_id("../x") && !check_id(&"0A".repeat(16)));
    }
}
