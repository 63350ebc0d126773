//! Object operations: PUT, GET, HEAD, DELETE, DeleteObjects, CopyObject.
use cairn_client::{Bucket, ChecksumAlgorithm, ObjectInfo, Opened, PutOptions};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::body::{self, ALGORITHMS, Expect};
use crate::convert::{self, s3_error};
use crate::gateway::{Gateway, MAX_PUT, conditions};

/// The stored headers S3 lets a writer set.
pub(crate) struct Headers {
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
}

impl Headers {
    pub(crate) fn pairs(self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut add = |k: &str, x: Option<String>| {
            if let Some(x) = x {
                v.push((k.to_string(), x));
            }
        };
        add("cache-control", self.cache_control);
        add("content-disposition", self.content_disposition);
        add("content-encoding", self.content_encoding);
        add("content-language", self.content_language);
        add("expires", self.expires.as_ref().and_then(convert::http_date));
        v
    }
}

/// The five `x-amz-checksum-*` fields of an input, in [`ALGORITHMS`] order.
macro_rules! sums {
    ($i:expr) => {
        [
            $i.checksum_crc32.as_deref(),
            $i.checksum_crc32c.as_deref(),
            $i.checksum_crc64nvme.as_deref(),
            $i.checksum_sha1.as_deref(),
            $i.checksum_sha256.as_deref(),
        ]
    };
}
pub(crate) use sums;

/// The bucket and key of a copy source (version "null" or none).
pub(crate) fn copy_source(cs: &CopySource) -> S3Result<(String, String)> {
    match cs {
        CopySource::Bucket { bucket, key, version_id } => {
            check_version(version_id.as_deref())?;
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(s3_error!(NotImplemented, "access points and outposts")),
    }
}

/// What a body must match, from the request's headers.
pub(crate) fn expect<T>(req: &S3Request<T>, md5: Option<&str>, sums: [Option<&str>; 5], max: u64) -> S3Result<Expect> {
    let md5 = match md5 {
        None => None,
        Some(m) => Some(
            body::decode_b64(m)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5"))?,
        ),
    };
    let mut given = Vec::new();
    for (a, v) in ALGORITHMS.iter().zip(sums) {
        if let Some(v) = v {
            let raw = body::decode_b64(v).ok_or_else(|| s3_error!(InvalidArgument, "a checksum is not base64"))?;
            given.push((*a, raw));
        }
    }
    let trailed = req
        .headers
        .get_all("x-amz-trailer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| ALGORITHMS.iter().find(|a| body::header_name(**a).eq_ignore_ascii_case(name.trim())))
        .copied()
        .collect();
    Ok(Expect { md5, sums: given, trailed, trailers: req.trailing_headers.clone(), max })
}

fn checksums(e: &Expect) -> Vec<cairn_client::Checksum> {
    e.sums.iter().map(|(a, v)| cairn_client::Checksum { algorithm: *a, value: v.clone() }).collect()
}

/// An empty body, for requests without one.
fn no_body() -> StreamingBlob {
    StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
}

/// Checksums to return, as S3's fields (base64).
pub(crate) fn checksum_fields(info: &ObjectInfo) -> [Option<String>; 5] {
    let get =
        |a: ChecksumAlgorithm| info.checksums.iter().find(|c| c.algorithm == a).map(|c| body::encode_b64(&c.value));
    [
        get(ChecksumAlgorithm::Crc32),
        get(ChecksumAlgorithm::Crc32c),
        get(ChecksumAlgorithm::Crc64Nvme),
        get(ChecksumAlgorithm::Sha1),
        get(ChecksumAlgorithm::Sha256),
    ]
}

impl Gateway {
    pub(crate) async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, true).await?;
        let i = &req.input;
        if i.content_length.is_some_and(|n| n as u64 > MAX_PUT) {
            return Err(s3_error!(EntityTooLarge, "a single PUT is at most 5 GiB; use a multipart upload"));
        }
        if i.if_match.is_some() {
            return Err(s3_error!(NotImplemented, "If-Match on PUT is not supported"));
        }
        let sums = sums!(i);
        let expect = expect(&req, i.content_md5.as_deref(), sums, MAX_PUT)?;
        let req_headers = req.headers;
        let input = req.input;
        let opts = PutOptions {
            content_type: input.content_type.map(|c| c.to_string()),
            headers: Headers {
                cache_control: input.cache_control,
                content_disposition: input.content_disposition,
                content_encoding: input.content_encoding,
                content_language: input.content_language,
                expires: input.expires,
            }
            .pairs(),
            meta: convert::meta_pairs(input.metadata),
            checksums: checksums(&expect),
            if_absent: matches!(input.if_none_match, Some(ETagCondition::Any)),
            ..PutOptions::default()
        };
        let _budget =
            self.reserve(crate::gateway::transfer_mib(declared_len(&req_headers, input.content_length), true)).await;
        let reader = body::reader(input.body.unwrap_or_else(no_body), expect);
        let info = bucket.put(&input.key, reader, opts).await.map_err(s3_error)?;
        let [crc32, crc32c, crc64, sha1, sha256] = checksum_fields(&info);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(convert::etag(&info)),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            ..Default::default()
        }))
    }

    pub(crate) async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, false).await?;
        let i = req.input;
        check_version(i.version_id.as_deref())?;
        let object = bucket.open(&i.key).await.map_err(s3_error)?;
        let info = object.info.clone();
        conditions!(i).check(&info, true)?;
        let size = info.size;
        let (range, content_range) = match (i.range, i.part_number) {
            (Some(_), Some(_)) => return Err(s3_error!(InvalidRequest, "Range and partNumber together")),
            (Some(r), None) => {
                let r = r.check(size).map_err(|_| s3_error!(InvalidRange, "the range is outside the object"))?;
                let cr = format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1));
                (r, Some(cr))
            }
            (None, Some(n)) => {
                let r = part_range(&object, n)?;
                let cr = format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1));
                (r, Some(cr))
            }
            (None, None) => (0..size, None),
        };
        let len = range.end - range.start;
        let budget = self.reserve(crate::gateway::transfer_mib(len, false)).await;
        let mut out = object_headers(&info, i.checksum_mode.is_some() && content_range.is_none());
        if let Some(t) = i.response_content_type {
            out.content_type = Some(t);
        }
        out.cache_control = i.response_cache_control.or(out.cache_control);
        out.content_disposition = i.response_content_disposition.or(out.content_disposition);
        out.content_encoding = i.response_content_encoding.or(out.content_encoding);
        out.content_language = i.response_content_language.or(out.content_language);
        let body = if len == 0 { no_body() } else { body::download(bucket, object, range, budget) };
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            content_type: out.content_type,
            cache_control: out.cache_control,
            content_disposition: out.content_disposition,
            content_encoding: out.content_encoding,
            content_language: out.content_language,
            expires: out.expires,
            e_tag: out.e_tag,
            last_modified: out.last_modified,
            metadata: out.metadata,
            checksum_crc32: out.checksum_crc32,
            checksum_crc32c: out.checksum_crc32c,
            checksum_crc64nvme: out.checksum_crc64nvme,
            checksum_sha1: out.checksum_sha1,
            checksum_sha256: out.checksum_sha256,
            parts_count: out.parts_count,
            ..Default::default()
        }))
    }

    pub(crate) async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, false).await?;
        let i = req.input;
        check_version(i.version_id.as_deref())?;
        let info = bucket.head(&i.key).await.map_err(s3_error)?;
        conditions!(i).check(&info, true)?;
        let (content_length, content_range) = match (i.range, i.part_number) {
            (Some(r), _) => {
                let r = r.check(info.size).map_err(|_| s3_error!(InvalidRange, "the range is outside the object"))?;
                (r.end - r.start, Some(format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), info.size)))
            }
            (None, Some(n)) => {
                let r = part_range(&bucket.open(&i.key).await.map_err(s3_error)?, n)?;
                (r.end - r.start, Some(format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), info.size)))
            }
            (None, None) => (info.size, None),
        };
        let mut out = object_headers(&info, i.checksum_mode.is_some());
        out.content_length = Some(content_length as i64);
        out.content_range = content_range;
        Ok(S3Response::new(out))
    }

    pub(crate) async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, true).await?;
        check_version(req.input.version_id.as_deref())?;
        delete_quietly(&bucket, &req.input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(crate) async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, true).await?;
        let delete = req.input.delete;
        if delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per DeleteObjects"));
        }
        let quiet = delete.quiet.unwrap_or(false);
        let results = futures::future::join_all(delete.objects.into_iter().map(|o| {
            let bucket = &bucket;
            async move {
                let r = match check_version(o.version_id.as_deref()) {
                    Ok(()) => delete_quietly(bucket, &o.key).await,
                    Err(e) => Err(e),
                };
                (o, r)
            }
        }))
        .await;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (o, r) in results {
            match r {
                Ok(()) if !quiet => {
                    deleted.push(DeletedObject { key: Some(o.key), version_id: o.version_id, ..Default::default() })
                }
                Ok(()) => {}
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(o.key),
                    message: e.message().map(str::to_string),
                    version_id: o.version_id,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    pub(crate) async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let creds = req.credentials.as_ref();
        let (src_bucket, src_key) = copy_source(&req.input.copy_source)?;
        let src = self.bucket(creds, &src_bucket, false).await?;
        let dst = self.bucket(creds, &req.input.bucket, true).await?;
        let i = req.input;
        let object = src.open(&src_key).await.map_err(s3_error)?;
        conditions!(copy i).check(&object.info, false)?;
        let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == s3s::dto::MetadataDirective::REPLACE);
        let same = src_bucket == i.bucket && src_key == i.key;
        if same && !replace {
            return Err(s3_error!(InvalidRequest, "copying an object to itself needs a metadata directive of REPLACE"));
        }
        let headers = Headers {
            cache_control: i.cache_control,
            content_disposition: i.content_disposition,
            content_encoding: i.content_encoding,
            content_language: i.content_language,
            expires: i.expires,
        };
        let directive = if replace {
            cairn_client::MetadataDirective::Replace {
                content_type: i.content_type.map(|c| c.to_string()),
                headers: headers.pairs(),
                meta: convert::meta_pairs(i.metadata),
            }
        } else {
            cairn_client::MetadataDirective::Copy
        };
        let info = if src_bucket == i.bucket {
            dst.copy(&src_key, &i.key, directive).await.map_err(s3_error)?
        } else {
            // Another bucket has other keys: the bytes are read and stored again.
            let src_info = object.info.clone();
            let opts = match directive {
                cairn_client::MetadataDirective::Copy => PutOptions {
                    content_type: src_info.content_type.clone(),
                    headers: src_info.headers.clone(),
                    meta: src_info.meta.clone(),
                    checksums: src_info.checksums.clone(),
                    posix: src_info.posix,
                    ..PutOptions::default()
                },
                cairn_client::MetadataDirective::Replace { content_type, headers, meta } => {
                    PutOptions { content_type, headers, meta, ..PutOptions::default() }
                }
            };
            let _budget = self.reserve(crate::gateway::transfer_mib(src_info.size, true)).await;
            let reader = body::pipe(src, object, 0..src_info.size);
            dst.put(&i.key, reader, opts).await.map_err(s3_error)?
        };
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(convert::etag(&info)),
                last_modified: Some(convert::timestamp(info.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

/// The body length a request declares (aws-chunked: the decoded length);
/// unknown counts as a full segment.
pub(crate) fn declared_len(h: &http::HeaderMap, content_length: Option<i64>) -> u64 {
    let decoded = h.get("x-amz-decoded-content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    decoded.or(content_length.and_then(|n| u64::try_from(n).ok())).unwrap_or(16 << 20)
}

/// Deletes `key`; a key that is not there is not an error (S3's 204).
async fn delete_quietly(bucket: &Bucket, key: &str) -> S3Result<()> {
    match bucket.delete(key).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.root(), cairn_client::Error::NoSuchKey { .. }) => Ok(()),
        Err(e) => Err(s3_error(e)),
    }
}

/// Buckets are unversioned: the only version id is "null".
pub(crate) fn check_version(v: Option<&str>) -> S3Result<()> {
    match v {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(InvalidArgument, "this bucket is not versioned; the only version id is \"null\"")),
    }
}

/// The bytes of part `n` (1-based): a multipart object's extents are its
/// parts; any other object is one part.
fn part_range(object: &Opened, n: i32) -> S3Result<std::ops::Range<u64>> {
    let parts: Option<usize> =
        object.info.etag.as_deref().and_then(|e| e.rsplit_once('-')).and_then(|(_, p)| p.parse().ok());
    let extents = object.extents();
    let ranges = match parts {
        None => std::iter::once(0..object.info.size).collect(),
        Some(p) if p == extents.len() => extents,
        // An empty part left no extent: boundaries are unknown.
        Some(_) => return Err(s3_error!(NotImplemented, "this object's part boundaries are not known")),
    };
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| ranges.get(i).cloned())
        .ok_or_else(|| s3_error!(InvalidArgument, "the object has no such part"))
}

/// Everything a GET or HEAD says about an object besides its body.
fn object_headers(info: &ObjectInfo, checksums: bool) -> HeadObjectOutput {
    let [crc32, crc32c, crc64, sha1, sha256] = if checksums { checksum_fields(info) } else { Default::default() };
    HeadObjectOutput {
        content_length: Some(info.size as i64),
        // S3's type for objects stored without one.
        content_type: info.content_type.as_deref().unwrap_or("binary/octet-stream").parse().ok(),
        cache_control: convert::header(info, "cache-control"),
        content_disposition: convert::header(info, "content-disposition"),
        content_encoding: convert::header(info, "content-encoding"),
        content_language: convert::header(info, "content-language"),
        expires: convert::header(info, "expires").as_deref().and_then(convert::parse_http_date),
        e_tag: Some(convert::etag(info)),
        last_modified: Some(convert::timestamp(info.modified_ms)),
        metadata: convert::metadata(info),
        accept_ranges: Some("bytes".into()),
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_crc64nvme: crc64,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        parts_count: info.etag.as_deref().and_then(|e| e.rsplit_once('-')).and_then(|(_, n)| n.parse().ok()),
        ..Default::default()
    }
}
