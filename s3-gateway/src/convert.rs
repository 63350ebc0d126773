//! Between Cairn's types and S3's: errors, timestamps, ETags, headers.

use cairn_client::{Error as ClientError, ObjectInfo};
use s3s::dto::{ETag, Timestamp};
use s3s::{S3Error, S3ErrorCode};

use crate::body::{BodyError, body_error};

/// Seconds a client is asked to wait when too few nodes answer.
const RETRY_AFTER_SECS: &str = "2";

/// The S3 error for a client error.
pub fn s3_error(e: ClientError) -> S3Error {
    let root = e.root();
    let msg = root.to_string();
    let code = match root {
        ClientError::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
        ClientError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        ClientError::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        ClientError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        ClientError::BadName { reason, .. } if reason.starts_with("a bucket") => S3ErrorCode::InvalidBucketName,
        ClientError::BadName { reason, .. } if reason.contains("1024") => S3ErrorCode::KeyTooLongError,
        ClientError::BadName { .. } => S3ErrorCode::InvalidArgument,
        ClientError::BadRange { .. } => S3ErrorCode::InvalidRange,
        ClientError::Conflict { .. } => S3ErrorCode::PreconditionFailed,
        ClientError::NoSuchUpload { .. } => S3ErrorCode::NoSuchUpload,
        ClientError::InvalidPart { .. } => S3ErrorCode::InvalidPart,
        ClientError::InvalidPartOrder { .. } => S3ErrorCode::InvalidPartOrder,
        ClientError::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
        ClientError::BadPartNumber(_) | ClientError::BadPlacement { .. } => S3ErrorCode::InvalidArgument,
        ClientError::MetadataTooLarge { .. } => S3ErrorCode::MetadataTooLarge,
        ClientError::NotAFile { .. } => S3ErrorCode::InvalidRequest,
        ClientError::Io(io) => match body_error(io) {
            Some(BodyError::BadDigest(_)) => S3ErrorCode::BadDigest,
            Some(BodyError::TooLarge(_)) => S3ErrorCode::EntityTooLarge,
            Some(BodyError::Incomplete(_)) => S3ErrorCode::IncompleteBody,
            None => return internal(root),
        },
        ClientError::NoNodes
        | ClientError::Net(_)
        | ClientError::Placement { .. }
        | ClientError::PolicyUnmet { .. }
        | ClientError::NotEnoughShards { .. }
        | ClientError::SegmentUnavailable { .. }
        | ClientError::PageUnavailable { .. }
        | ClientError::HeadBehind { .. }
        | ClientError::HeadUnreachable { .. }
        | ClientError::HeadRaced { .. }
        | ClientError::PassedOver { .. }
        | ClientError::Stopped => return unavailable(msg),
        _ => return internal(root),
    };
    S3Error::with_message(code, msg)
}

/// 503 with Retry-After: too few nodes answered; trying again may work.
pub fn unavailable(msg: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::ServiceUnavailable, msg);
    let mut h = http::HeaderMap::new();
    h.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static(RETRY_AFTER_SECS));
    e.set_headers(h);
    e
}

fn internal(e: &ClientError) -> S3Error {
    tracing::error!(error = %e, "internal error");
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}

/// Milliseconds since the epoch as an S3 timestamp.
pub fn timestamp(ms: u64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // S3 dates have whole seconds; If-Modified-Since compares at that grain.
    Timestamp::from(t.replace_nanosecond(0).unwrap_or(t))
}

/// An S3 timestamp as milliseconds since the epoch.
pub fn millis(t: &Timestamp) -> u64 {
    let t: time::OffsetDateTime = t.clone().into();
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The object's ETag (S3 clients expect one on every object).
pub fn etag(info: &ObjectInfo) -> ETag {
    ETag::Strong(info.etag.clone().unwrap_or_else(|| format!("{:032x}", info.modified_ms)))
}

/// A stored header of the object.
pub fn header(info: &ObjectInfo, name: &str) -> Option<String> {
    info.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// User metadata as S3's map.
pub fn metadata(info: &ObjectInfo) -> Option<s3s::dto::Metadata> {
    if info.meta.is_empty() {
        return None;
    }
    Some(info.meta.iter().cloned().collect())
}

/// S3's metadata map as sorted pairs.
pub fn meta_pairs(m: Option<s3s::dto::Metadata>) -> Vec<(String, String)> {
    let mut v: Vec<_> = m.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    v.sort();
    v
}

/// Formats an `Expires` timestamp as an HTTP date for storage.
pub fn http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(s3s::dto::TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// Parses a stored HTTP date.
pub fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(s3s::dto::TimestampFormat::HttpDate, s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_their_s3_codes() {
        let code = |e| s3_error(e).code().clone();
        assert_eq!(code(ClientError::NoSuchBucket("b".into())), S3ErrorCode::NoSuchBucket);
        assert_eq!(code(ClientError::BucketNotEmpty("b".into())), S3ErrorCode::BucketNotEmpty);
        assert_eq!(code(ClientError::BadRange { start: 5, end: 9, size: 3 }), S3ErrorCode::InvalidRange);
        assert_eq!(code(ClientError::InvalidPartOrder { part: 2 }), S3ErrorCode::InvalidPartOrder);
        let shared = ClientError::Shared(std::sync::Arc::new(ClientError::NoNodes));
        let e = s3_error(shared);
        assert_eq!(e.code(), &S3ErrorCode::ServiceUnavailable);
        assert!(e.headers().is_some_and(|h| h.contains_key(http::header::RETRY_AFTER)));
        // A commit that lost every race, or a head its nodes cannot serve: try again.
        let record = cairn_proto::RecordId([1; 32]);
        let raced = ClientError::CommitFailed {
            attempts: 10,
            last: std::sync::Arc::new(ClientError::HeadRaced { record, held: 9 }),
        };
        assert_eq!(code(raced), S3ErrorCode::ServiceUnavailable);
        let dark =
            ClientError::HeadUnreachable { record, answered: 2, needed: 5, last: Box::new(ClientError::NoNodes) };
        assert_eq!(code(dark), S3ErrorCode::ServiceUnavailable);
        let digest = std::io::Error::other(BodyError::BadDigest("Content-MD5"));
        assert_eq!(code(ClientError::Io(digest)), S3ErrorCode::BadDigest);
        assert_eq!(code(ClientError::Io(std::io::Error::other("disk"))), S3ErrorCode::InternalError);
    }

    #[test]
    fn timestamps_round_trip_at_second_grain() {
        assert_eq!(millis(&timestamp(1_700_000_000_123)), 1_700_000_000_000);
        let d = http_date(&timestamp(1_700_000_000_000)).expect("date");
        assert_eq!(millis(&parse_http_date(&d).expect("parse")), 1_700_000_000_000);
    }
}
