//! The gateway's state and what every operation shares.

use std::sync::Arc;

use cairn_client::{Bucket, Client};
use s3s::auth::Credentials;
use s3s::dto::Timestamp;
use s3s::{S3Result, s3_error};

use crate::convert::{self, s3_error};
use crate::keys::Keys;

/// Memory the gateway lets transfers in progress hold, MiB. A transfer
/// waits for its share before it starts (its socket is not read
/// meanwhile), so many clients at once slow down rather than push the
/// process past this.
pub const MEMORY_BUDGET_MIB: u32 = 96;
/// Objects below this live inside the index and need no budget.
const SMALL: u64 = 32 * 1024;

/// S3's largest single PUT (5 GiB).
pub const MAX_PUT: u64 = 5 << 30;
/// Uploads left unfinished this long are aborted and their data collected.
pub const UPLOAD_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// The S3 service over one account's client.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub(crate) client: Arc<Client>,
    pub(crate) keys: Arc<Keys>,
    budget: Arc<tokio::sync::Semaphore>,
}

/// What a transfer holds in memory at most, in MiB, as measured per
/// object size (a segment is at most 16 MiB; an upload holds two in the
/// encoder and two being stored, a download two, each with its shards).
pub(crate) fn transfer_mib(len: u64, upload: bool) -> u32 {
    if len < SMALL {
        return 0;
    }
    let seg = len.min(16 << 20);
    let bytes = if upload { seg * 6 } else { seg * 4 };
    (bytes.div_ceil(1 << 20) as u32).clamp(1, MEMORY_BUDGET_MIB)
}

impl Gateway {
    /// Serves `client`'s buckets to holders of `keys`.
    pub fn new(client: Arc<Client>, keys: Arc<Keys>) -> Self {
        Self { client, keys, budget: Arc::new(tokio::sync::Semaphore::new(MEMORY_BUDGET_MIB as usize)) }
    }

    /// Waits for `mib` of the memory budget; held until the guard drops.
    pub(crate) async fn reserve(&self, mib: u32) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if mib == 0 {
            return None;
        }
        Arc::clone(&self.budget).acquire_many_owned(mib).await.ok()
    }

    /// Opens `name` for `creds` (`write`: to change it).
    pub(crate) async fn bucket(&self, creds: Option<&Credentials>, name: &str, write: bool) -> S3Result<Bucket> {
        self.keys.check(creds, Some(name), write)?;
        self.client.bucket(name).await.map_err(s3_error)
    }

    /// Aborts the account's uploads older than [`UPLOAD_TTL_MS`] (and
    /// parts whose upload is gone). Returns the uploads aborted.
    pub async fn expire_uploads(&self) -> usize {
        let mut aborted = 0;
        let buckets = match self.client.buckets().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "expiring uploads: cannot list buckets");
                return 0;
            }
        };
        for info in buckets {
            let r = async { self.client.bucket(&info.name).await?.expire_uploads(UPLOAD_TTL_MS).await };
            match r.await {
                Ok(n) => aborted += n,
                Err(e) => tracing::warn!(bucket = info.name, error = %e, "expiring uploads"),
            }
        }
        aborted
    }
}

/// The conditions of a read (`If-*` or `x-amz-copy-source-if-*`).
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    pub if_match: Option<s3s::dto::ETagCondition>,
    pub if_none_match: Option<s3s::dto::ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

/// The conditions of an input: `conditions!(input)` for `If-*`,
/// `conditions!(copy input)` for `x-amz-copy-source-if-*`.
macro_rules! conditions {
    (copy $i:expr) => {
        $crate::gateway::Conditions {
            if_match: $i.copy_source_if_match,
            if_none_match: $i.copy_source_if_none_match,
            if_modified_since: $i.copy_source_if_modified_since,
            if_unmodified_since: $i.copy_source_if_unmodified_since,
        }
    };
    ($i:expr) => {
        $crate::gateway::Conditions {
            if_match: $i.if_match,
            if_none_match: $i.if_none_match,
            if_modified_since: $i.if_modified_since,
            if_unmodified_since: $i.if_unmodified_since,
        }
    };
}
pub(crate) use conditions;

impl Conditions {
    /// Checks the conditions against the object (RFC 9110 §13.2.2 order).
    /// `read`: a failed If-None-Match or If-Modified-Since is 304 (GET,
    /// HEAD) rather than 412 (copies).
    pub(crate) fn check(&self, info: &cairn_client::ObjectInfo, read: bool) -> S3Result<()> {
        let etag = convert::etag(info);
        let modified = convert::millis(&convert::timestamp(info.modified_ms));
        let matches = |c: &s3s::dto::ETagCondition| match c {
            s3s::dto::ETagCondition::Any => true,
            s3s::dto::ETagCondition::ETag(e) => e.value() == etag.value(),
        };
        if let Some(c) = &self.if_match {
            if !matches(c) {
                return Err(s3_error!(PreconditionFailed, "If-Match does not hold"));
            }
        } else if let Some(t) = &self.if_unmodified_since
            && modified > convert::millis(t)
        {
            return Err(s3_error!(PreconditionFailed, "modified since the If-Unmodified-Since date"));
        }
        let not_modified = || if read { s3_error!(NotModified) } else { s3_error!(PreconditionFailed) };
        if let Some(c) = &self.if_none_match {
            if matches(c) {
                return Err(not_modified());
            }
        } else if let Some(t) = &self.if_modified_since
            && modified <= convert::millis(t)
        {
            return Err(not_modified());
        }
        Ok(())
    }
}

/// The delimiter S3 sent: empty means none (rclone sends `delimiter=`);
/// only one-character delimiters are supported.
pub(crate) fn delimiter(d: Option<&str>) -> S3Result<Option<char>> {
    match d {
        None | Some("") => Ok(None),
        Some(s) => {
            let mut c = s.chars();
            match (c.next(), c.next()) {
                (Some(ch), None) => Ok(Some(ch)),
                _ => Err(s3_error!(NotImplemented, "only one-character delimiters are supported")),
            }
        }
    }
}

/// Percent-encodes a key for `encoding-type=url` (as S3 does: all but
/// unreserved characters and `/`).
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(etag: &str, ms: u64) -> cairn_client::ObjectInfo {
        cairn_client::ObjectInfo {
            key: "k".into(),
            size: 1,
            modified_ms: ms,
            content_type: None,
            headers: Vec::new(),
            meta: Vec::new(),
            etag: Some(etag.into()),
            checksums: Vec::new(),
            kind: cairn_client::Kind::File,
            posix: None,
            segments: 0,
            extents: 0,
            layout: None,
        }
    }

    #[test]
    fn conditions_follow_rfc_9110() {
        let e = |s: &str| Some(s3s::dto::ETagCondition::ETag(s3s::dto::ETag::Strong(s.into())));
        let o = info("abc", 10_000);
        let c = Conditions { if_match: e("abc"), ..Default::default() };
        assert!(c.check(&o, true).is_ok());
        let c = Conditions { if_match: e("x"), ..Default::default() };
        assert_eq!(c.check(&o, true).expect_err("412").code(), &s3s::S3ErrorCode::PreconditionFailed);
        let c = Conditions { if_none_match: e("abc"), ..Default::default() };
        assert_eq!(c.check(&o, true).expect_err("304").code(), &s3s::S3ErrorCode::NotModified);
        assert_eq!(c.check(&o, false).expect_err("412").code(), &s3s::S3ErrorCode::PreconditionFailed);
        let c = Conditions { if_modified_since: Some(convert::timestamp(10_000)), ..Default::default() };
        assert!(c.check(&o, true).is_err());
        let c = Conditions { if_modified_since: Some(convert::timestamp(9_000)), ..Default::default() };
        assert!(c.check(&o, true).is_ok());
        // If-Match wins over If-Unmodified-Since.
        let c = Conditions {
            if_match: e("abc"),
            if_unmodified_since: Some(convert::timestamp(1_000)),
            ..Default::default()
        };
        assert!(c.check(&o, true).is_ok());
    }

    #[test]
    fn transfers_reserve_by_segment_and_never_more_than_the_budget() {
        assert_eq!(transfer_mib(4096, true), 0);
        assert_eq!(transfer_mib(4 << 20, true), 24);
        assert_eq!(transfer_mib(4 << 20, false), 16);
        assert_eq!(transfer_mib(5 << 30, true), 96);
        assert!(transfer_mib(u64::MAX, true) <= MEMORY_BUDGET_MIB);
    }

    #[test]
    fn an_empty_delimiter_is_none_and_keys_encode_like_s3() {
        assert_eq!(delimiter(Some("")).expect("ok"), None);
        assert_eq!(delimiter(Some("/")).expect("ok"), Some('/'));
        assert!(delimiter(Some("ab")).is_err());
        assert_eq!(url_encode("a b/ü+&"), "a%20b/%C3%BC%2B%26");
    }
}
