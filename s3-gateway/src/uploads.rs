//! Multipart uploads: create, upload a part (or copy one), complete,
//! abort, list parts and uploads. The state lives in the bucket's index
//! (`cairn_client::multipart`), so any gateway of the account sees it.

use cairn_client::PutOptions;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::body::{self, pipe};
use crate::convert::{self, s3_error};
use crate::gateway::{Gateway, conditions, url_encode};
use crate::objects::{Headers, copy_source, expect, sums};

/// S3's largest part.
const MAX_PART_SIZE: u64 = 5 << 30;

impl Gateway {
    pub(crate) async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, true).await?;
        let i = req.input;
        let opts = PutOptions {
            content_type: i.content_type.map(|c| c.to_string()),
            headers: Headers {
                cache_control: i.cache_control,
                content_disposition: i.content_disposition,
                content_encoding: i.content_encoding,
                content_language: i.content_language,
                expires: i.expires,
            }
            .pairs(),
            meta: convert::meta_pairs(i.metadata),
            ..PutOptions::default()
        };
        let id = bucket.create_upload(&i.key, opts).await.map_err(s3_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    pub(crate) async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, true).await?;
        let i = &req.input;
        if i.content_length.is_some_and(|n| n as u64 > MAX_PART_SIZE) {
            return Err(s3_error!(EntityTooLarge, "a part is at most 5 GiB"));
        }
        let sums = sums!(i);
        let expect = expect(&req, i.content_md5.as_deref(), sums, MAX_PART_SIZE)?;
        let number = part_number(i.part_number)?;
        let declared = crate::objects::declared_len(&req.headers, i.content_length);
        let i = req.input;
        let _budget = self.reserve(crate::gateway::transfer_mib(declared, true)).await;
        let empty = || StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>());
        let reader = body::reader(i.body.unwrap_or_else(empty), expect);
        let part = bucket.upload_part(&i.key, &i.upload_id, number, reader).await.map_err(s3_error)?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(ETag::Strong(part.etag)), ..Default::default() }))
    }

    pub(crate) async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let creds = req.credentials.as_ref();
        let (src_bucket, src_key) = copy_source(&req.input.copy_source)?;
        let src = self.bucket(creds, &src_bucket, false).await?;
        let dst = self.bucket(creds, &req.input.bucket, true).await?;
        let i = req.input;
        let number = part_number(i.part_number)?;
        let object = src.open(&src_key).await.map_err(s3_error)?;
        conditions!(copy i).check(&object.info, false)?;
        let size = object.info.size;
        let range = match i.copy_source_range.as_deref() {
            None => 0..size,
            Some(r) => parse_copy_range(r, size)?,
        };
        if range.end - range.start > MAX_PART_SIZE {
            return Err(s3_error!(EntityTooLarge, "a part is at most 5 GiB"));
        }
        let _budget = self.reserve(crate::gateway::transfer_mib(range.end - range.start, true)).await;
        let reader = pipe(src, object, range);
        let part = dst.upload_part(&i.key, &i.upload_id, number, reader).await.map_err(s3_error)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(part.etag)),
                last_modified: Some(convert::timestamp(part.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    pub(crate) async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, true).await?;
        let i = req.input;
        let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        let mut parts = Vec::with_capacity(listed.len());
        for p in listed {
            let n = p.part_number.ok_or_else(|| s3_error!(MalformedXML, "a part without a PartNumber"))?;
            let etag = p.e_tag.ok_or_else(|| s3_error!(MalformedXML, "a part without an ETag"))?;
            parts.push((part_number(n)?, etag.value().to_string()));
        }
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "a completion lists at least one part"));
        }
        let info = bucket.complete_upload(&i.key, &i.upload_id, &parts).await.map_err(s3_error)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(convert::etag(&info)),
            location: Some(format!("/{}/{}", i.bucket, url_encode(&i.key))),
            ..Default::default()
        }))
    }

    pub(crate) async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, true).await?;
        let i = req.input;
        bucket.abort_upload(&i.key, &i.upload_id).await.map_err(s3_error)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(crate) async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, false).await?;
        let i = req.input;
        let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = u32::try_from(i.part_number_marker.unwrap_or(0))
            .map_err(|_| s3_error!(InvalidArgument, "part-number-marker is not negative"))?;
        let (parts, more) = bucket.list_parts(&i.key, &i.upload_id, after, max).await.map_err(s3_error)?;
        let next = parts.last().map(|p| p.number as i32);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(more),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| Part {
                        part_number: Some(p.number as i32),
                        size: Some(p.size as i64),
                        e_tag: Some(ETag::Strong(p.etag)),
                        last_modified: Some(convert::timestamp(p.modified_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    pub(crate) async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let bucket = self.bucket(req.credentials.as_ref(), &req.input.bucket, false).await?;
        let i = req.input;
        if crate::gateway::delimiter(i.delimiter.as_deref())?.is_some() {
            return Err(s3_error!(NotImplemented, "ListMultipartUploads with a delimiter is not supported"));
        }
        let max = i.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
        let (uploads, more) = bucket
            .list_uploads(
                i.prefix.as_deref().unwrap_or(""),
                i.key_marker.as_deref().unwrap_or(""),
                i.upload_id_marker.as_deref().unwrap_or(""),
                max,
            )
            .await
            .map_err(s3_error)?;
        let last = uploads.last().map(|u| (u.key.clone(), u.id.clone()));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            key_marker: i.key_marker,
            upload_id_marker: i.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(more),
            next_key_marker: last.as_ref().map(|(k, _)| k.clone()),
            next_upload_id_marker: last.map(|(_, id)| id),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.id),
                        initiated: Some(convert::timestamp(u.initiated_ms)),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=cairn_client::multipart::MAX_PART).contains(n))
        .ok_or_else(|| s3_error!(InvalidArgument, "a part number is 1 to 10000"))
}

/// Parses `x-amz-copy-source-range: bytes=first-last` (inclusive).
fn parse_copy_range(r: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let bad = || s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=first-last");
    let (a, b) = r.strip_prefix("bytes=").and_then(|s| s.split_once('-')).ok_or_else(bad)?;
    let first: u64 = a.parse().map_err(|_| bad())?;
    let last: u64 = b.parse().map_err(|_| bad())?;
    if first > last || last >= size {
        return Err(s3_error!(InvalidRange, "the copy range is outside the source object"));
    }
    Ok(first..last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges_are_inclusive_and_checked() {
        assert_eq!(parse_copy_range("bytes=0-9", 10).expect("ok"), 0..10);
        assert!(parse_copy_range("bytes=5-10", 10).is_err());
        assert!(parse_copy_range("bytes=5-4", 10).is_err());
        assert!(parse_copy_range("0-4", 10).is_err());
        assert!(part_number(0).is_err() && part_number(10_001).is_err() && part_number(1).is_ok());
    }
}
