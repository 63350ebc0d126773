//! Listing: buckets, ListObjects v1 and v2, ListObjectVersions.

use cairn_client::Listing;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::convert::{self, s3_error};
use crate::gateway::{Gateway, delimiter, url_encode};

/// Most keys one listing returns (S3's).
const MAX_KEYS: i32 = 1000;

/// One page of a bucket listing, and how to name keys in the answer.
struct Page {
    listing: Listing,
    url: bool,
}

impl Page {
    fn name(&self, s: &str) -> String {
        if self.url { url_encode(s) } else { s.to_string() }
    }

    fn objects(&self) -> Vec<Object> {
        self.listing
            .objects
            .iter()
            .map(|o| Object {
                key: Some(self.name(&o.key)),
                size: Some(o.size as i64),
                e_tag: Some(convert::etag(o)),
                last_modified: Some(convert::timestamp(o.modified_ms)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Default::default()
            })
            .collect()
    }

    fn prefixes(&self) -> Option<Vec<CommonPrefix>> {
        if self.listing.prefixes.is_empty() {
            return None;
        }
        Some(self.listing.prefixes.iter().map(|p| CommonPrefix { prefix: Some(self.name(p)) }).collect())
    }

    fn truncated(&self) -> bool {
        self.listing.next_after.is_some()
    }
}

fn token(key: &str) -> String {
    crate::body::encode_b64(key.as_bytes())
}

fn untoken(t: &str) -> S3Result<String> {
    crate::body::decode_b64(t)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not one this gateway gave"))
}

/// What a listing asks for.
struct Query<'a> {
    bucket: &'a str,
    prefix: Option<&'a str>,
    delimiter: Option<&'a str>,
    after: &'a str,
    max: Option<i32>,
    encoding: Option<&'a EncodingType>,
}

impl Gateway {
    async fn page(&self, creds: Option<&s3s::auth::Credentials>, q: Query<'_>) -> S3Result<Page> {
        let b = self.bucket(creds, q.bucket, false).await?;
        let d = delimiter(q.delimiter)?;
        let url = match q.encoding.map(|e| e.as_str()) {
            None => false,
            Some(e) if e == EncodingType::URL => true,
            Some(_) => return Err(s3_error!(InvalidArgument, "encoding-type must be url")),
        };
        let max = q.max.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS) as usize;
        let listing = if max == 0 {
            Listing::default()
        } else {
            b.list(q.prefix.unwrap_or(""), d, q.after, max).await.map_err(s3_error)?
        };
        Ok(Page { listing, url })
    }

    pub(crate) async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let key = self.keys.check(req.credentials.as_ref(), None, false)?;
        let all = self.client.buckets().await.map_err(s3_error)?;
        let buckets = all
            .into_iter()
            .filter(|b| key.bucket.as_ref().is_none_or(|only| *only == b.name))
            .filter(|b| req.input.prefix.as_ref().is_none_or(|p| b.name.starts_with(p.as_str())))
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(convert::timestamp(b.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(crate::s3::owner()),
            ..Default::default()
        }))
    }

    pub(crate) async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = &req.input;
        let after = match (&i.continuation_token, &i.start_after) {
            (Some(t), _) => untoken(t)?,
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        };
        let page = self
            .page(
                req.credentials.as_ref(),
                Query {
                    bucket: &i.bucket,
                    prefix: i.prefix.as_deref(),
                    delimiter: i.delimiter.as_deref(),
                    after: &after,
                    max: i.max_keys,
                    encoding: i.encoding_type.as_ref(),
                },
            )
            .await?;
        let contents = page.objects();
        let common_prefixes = page.prefixes();
        let count = contents.len() + common_prefixes.as_ref().map_or(0, Vec::len);
        let i = req.input;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(i.prefix.map(|p| page.name(&p)).unwrap_or_default()),
            delimiter: i.delimiter.filter(|d| !d.is_empty()),
            max_keys: Some(i.max_keys.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS)),
            key_count: Some(count as i32),
            continuation_token: i.continuation_token,
            next_continuation_token: page.listing.next_after.as_deref().map(token),
            is_truncated: Some(page.truncated()),
            start_after: i.start_after,
            encoding_type: i.encoding_type,
            contents: Some(contents),
            common_prefixes,
            ..Default::default()
        }))
    }

    pub(crate) async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = &req.input;
        let page = self
            .page(
                req.credentials.as_ref(),
                Query {
                    bucket: &i.bucket,
                    prefix: i.prefix.as_deref(),
                    delimiter: i.delimiter.as_deref(),
                    after: i.marker.as_deref().unwrap_or(""),
                    max: i.max_keys,
                    encoding: i.encoding_type.as_ref(),
                },
            )
            .await?;
        let i = req.input;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(i.prefix.map(|p| page.name(&p)).unwrap_or_default()),
            delimiter: i.delimiter.filter(|d| !d.is_empty()),
            marker: Some(i.marker.unwrap_or_default()),
            max_keys: Some(i.max_keys.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS)),
            is_truncated: Some(page.truncated()),
            next_marker: page.listing.next_after.as_deref().map(|k| page.name(k)),
            encoding_type: i.encoding_type,
            contents: Some(page.objects()),
            common_prefixes: page.prefixes(),
            ..Default::default()
        }))
    }

    /// Unversioned buckets: every object is its one version, "null".
    pub(crate) async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let i = &req.input;
        let page = self
            .page(
                req.credentials.as_ref(),
                Query {
                    bucket: &i.bucket,
                    prefix: i.prefix.as_deref(),
                    delimiter: i.delimiter.as_deref(),
                    after: i.key_marker.as_deref().unwrap_or(""),
                    max: i.max_keys,
                    encoding: i.encoding_type.as_ref(),
                },
            )
            .await?;
        let versions = page
            .listing
            .objects
            .iter()
            .map(|o| ObjectVersion {
                key: Some(page.name(&o.key)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                size: Some(o.size as i64),
                e_tag: Some(convert::etag(o)),
                last_modified: Some(convert::timestamp(o.modified_ms)),
                storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let next = page.listing.next_after.as_deref().map(|k| page.name(k));
        let i = req.input;
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: Some(i.prefix.map(|p| page.name(&p)).unwrap_or_default()),
            delimiter: i.delimiter.filter(|d| !d.is_empty()),
            key_marker: Some(i.key_marker.unwrap_or_default()),
            version_id_marker: i.version_id_marker,
            max_keys: Some(i.max_keys.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS)),
            is_truncated: Some(page.truncated()),
            next_version_id_marker: next.as_ref().map(|_| "null".to_string()),
            next_key_marker: next,
            encoding_type: i.encoding_type,
            versions: Some(versions),
            common_prefixes: page.prefixes(),
            ..Default::default()
        }))
    }
}
