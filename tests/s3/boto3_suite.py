"""Cairn's S3 gateway against boto3, as an S3 program uses it.

Run by tests/tests/s3.rs with: ENDPOINT ACCESS_KEY SECRET. Every check
asserts; the first failure ends the run with a traceback and exit code 1.
"""
import concurrent.futures
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, access, secret = sys.argv[1:4]


def client(key=access, sec=secret, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=sec,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}, **cfg),
    )


s3 = client()


def code_of(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{fn.__name__} succeeded; an error was expected")


def step(name):
    print(f"boto3: {name}", flush=True)


B = "boto"
step("buckets")
s3.create_bucket(Bucket=B)
assert code_of(s3.create_bucket, Bucket=B)[0] == "BucketAlreadyOwnedByYou"
assert code_of(s3.create_bucket, Bucket="Bad_Name")[0] == "InvalidBucketName"
assert B in [b["Name"] for b in s3.list_buckets()["Buckets"]]
s3.head_bucket(Bucket=B)
assert code_of(s3.head_bucket, Bucket="nope-nope")[1] == 404
assert code_of(s3.list_objects_v2, Bucket="nope-nope")[0] == "NoSuchBucket"
s3.get_bucket_location(Bucket=B)

step("put, get, metadata, headers")
body = os.urandom(300_000)
r = s3.put_object(
    Bucket=B, Key="a/b.bin", Body=body, ContentType="application/x-test",
    Metadata={"colour": "blue", "Mixed-Case": "x"}, CacheControl="no-cache",
    ContentDisposition="attachment", ChecksumAlgorithm="CRC32",
)
assert r["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), r["ETag"]
g = s3.get_object(Bucket=B, Key="a/b.bin")
assert g["Body"].read() == body
assert g["ContentType"] == "application/x-test"
assert g["Metadata"] == {"colour": "blue", "mixed-case": "x"}, g["Metadata"]
assert g["CacheControl"] == "no-cache" and g["ContentDisposition"] == "attachment"
h = s3.head_object(Bucket=B, Key="a/b.bin")
assert h["ContentLength"] == len(body) and h["ETag"] == r["ETag"]
assert code_of(s3.head_object, Bucket=B, Key="missing")[1] == 404
assert code_of(s3.get_object, Bucket=B, Key="missing")[0] == "NoSuchKey"
s3.put_object(Bucket=B, Key="empty", Body=b"")
assert s3.get_object(Bucket=B, Key="empty")["Body"].read() == b""
small = b"hello world"
s3.put_object(Bucket=B, Key="small", Body=small, ContentMD5=__import__("base64").b64encode(hashlib.md5(small).digest()).decode())

step("ranges")
assert s3.get_object(Bucket=B, Key="a/b.bin", Range="bytes=10-19")["Body"].read() == body[10:20]
assert s3.get_object(Bucket=B, Key="a/b.bin", Range="bytes=-5")["Body"].read() == body[-5:]
assert s3.get_object(Bucket=B, Key="a/b.bin", Range="bytes=299990-")["Body"].read() == body[299990:]
ranged = s3.get_object(Bucket=B, Key="a/b.bin", Range="bytes=0-0")
assert ranged["ContentRange"] == "bytes 0-0/300000" and ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
assert code_of(s3.get_object, Bucket=B, Key="a/b.bin", Range="bytes=300000-")[0] == "InvalidRange"

step("conditional requests")
etag = r["ETag"]
assert s3.get_object(Bucket=B, Key="a/b.bin", IfMatch=etag)["ContentLength"] == len(body)
assert code_of(s3.get_object, Bucket=B, Key="a/b.bin", IfMatch='"0000"')[0] == "PreconditionFailed"
assert code_of(s3.get_object, Bucket=B, Key="a/b.bin", IfNoneMatch=etag)[1] == 304
future = h["LastModified"].replace(year=h["LastModified"].year + 1)
past = h["LastModified"].replace(year=h["LastModified"].year - 1)
assert code_of(s3.get_object, Bucket=B, Key="a/b.bin", IfModifiedSince=future)[1] == 304
assert s3.get_object(Bucket=B, Key="a/b.bin", IfModifiedSince=past)["ContentLength"] == len(body)
assert code_of(s3.get_object, Bucket=B, Key="a/b.bin", IfUnmodifiedSince=past)[0] == "PreconditionFailed"
assert code_of(s3.put_object, Bucket=B, Key="a/b.bin", Body=b"x", IfNoneMatch="*")[0] == "PreconditionFailed"
s3.put_object(Bucket=B, Key="fresh", Body=b"x", IfNoneMatch="*")

step("bad digests store nothing")
assert code_of(s3.put_object, Bucket=B, Key="bad", Body=b"abc", ChecksumCRC32="AAAAAA==")[0] == "BadDigest"
assert code_of(s3.put_object, Bucket=B, Key="bad", Body=b"abc", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")[0] == "BadDigest"
assert code_of(s3.head_object, Bucket=B, Key="bad")[1] == 404

step("copy")
c = s3.copy_object(Bucket=B, Key="copy.bin", CopySource={"Bucket": B, "Key": "a/b.bin"})
assert c["CopyObjectResult"]["ETag"] == etag
assert s3.get_object(Bucket=B, Key="copy.bin")["Metadata"]["colour"] == "blue"
s3.copy_object(Bucket=B, Key="copy.bin", CopySource={"Bucket": B, "Key": "copy.bin"},
               MetadataDirective="REPLACE", Metadata={"colour": "red"}, ContentType="text/plain")
g = s3.get_object(Bucket=B, Key="copy.bin")
assert g["Metadata"] == {"colour": "red"} and g["ContentType"] == "text/plain" and g["Body"].read() == body
assert code_of(s3.copy_object, Bucket=B, Key="c2", CopySource={"Bucket": B, "Key": "a/b.bin"},
               CopySourceIfMatch='"0000"')[0] == "PreconditionFailed"
s3.create_bucket(Bucket="boto-other")
s3.copy_object(Bucket="boto-other", Key="x", CopySource={"Bucket": B, "Key": "a/b.bin"})
assert s3.get_object(Bucket="boto-other", Key="x")["Body"].read() == body

step("multipart: 20 MiB upload_file, download, part errors")
data = os.urandom(20 << 20)
path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"cairn-boto-{os.getpid()}")
with open(path, "wb") as f:
    f.write(data)
cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
s3.upload_file(path, B, "big/20m", Config=cfg)
h = s3.head_object(Bucket=B, Key="big/20m")
assert h["ETag"].endswith('-3"') and h["ContentLength"] == len(data), h
part2 = s3.get_object(Bucket=B, Key="big/20m", PartNumber=2)
assert part2["ContentLength"] == 8 << 20 and part2["PartsCount"] == 3, part2
assert part2["Body"].read() == data[8 << 20:16 << 20]
assert s3.head_object(Bucket=B, Key="big/20m", PartNumber=3)["ContentLength"] == 4 << 20
assert code_of(s3.get_object, Bucket=B, Key="big/20m", PartNumber=4)[1] == 400
s3.download_file(B, "big/20m", path + ".back", Config=cfg)
with open(path + ".back", "rb") as f:
    assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
os.remove(path)
os.remove(path + ".back")
u = s3.create_multipart_upload(Bucket=B, Key="mp", Metadata={"m": "1"})["UploadId"]
p1 = s3.upload_part(Bucket=B, Key="mp", UploadId=u, PartNumber=1, Body=b"a" * 100)
p2 = s3.upload_part(Bucket=B, Key="mp", UploadId=u, PartNumber=2, Body=b"b" * 100)
ups = s3.list_multipart_uploads(Bucket=B)["Uploads"]
assert [(x["Key"], x["UploadId"]) for x in ups] == [("mp", u)], ups
parts = s3.list_parts(Bucket=B, Key="mp", UploadId=u)["Parts"]
assert [p["PartNumber"] for p in parts] == [1, 2]
done = lambda ps: s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=u, MultipartUpload={"Parts": ps})
P1 = {"PartNumber": 1, "ETag": p1["ETag"]}
P2 = {"PartNumber": 2, "ETag": p2["ETag"]}
assert code_of(done, [P1, P2])[0] == "EntityTooSmall"
assert code_of(done, [P2, P1])[0] == "InvalidPartOrder"
assert code_of(done, [{"PartNumber": 3, "ETag": p1["ETag"]}])[0] == "InvalidPart"
r = done([P2])
assert s3.get_object(Bucket=B, Key="mp")["Body"].read() == b"b" * 100
assert s3.get_object(Bucket=B, Key="mp")["Metadata"] == {"m": "1"}
assert code_of(s3.list_parts, Bucket=B, Key="mp", UploadId=u)[0] == "NoSuchUpload"
u2 = s3.create_multipart_upload(Bucket=B, Key="mp2")["UploadId"]
s3.upload_part_copy(Bucket=B, Key="mp2", UploadId=u2, PartNumber=1,
                    CopySource={"Bucket": B, "Key": "a/b.bin"}, CopySourceRange="bytes=0-99")
s3.abort_multipart_upload(Bucket=B, Key="mp2", UploadId=u2)
assert code_of(s3.abort_multipart_upload, Bucket=B, Key="mp2", UploadId=u2)[0] == "NoSuchUpload"
assert s3.list_multipart_uploads(Bucket=B).get("Uploads", []) == []

step("presigned URLs")
url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "small"}, ExpiresIn=60)
assert urllib.request.urlopen(url).read() == small
put_url = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "presigned"}, ExpiresIn=60)
urllib.request.urlopen(urllib.request.Request(put_url, data=b"via url", method="PUT")).read()
assert s3.get_object(Bucket=B, Key="presigned")["Body"].read() == b"via url"


def http_status(u):
    try:
        urllib.request.urlopen(u)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


assert http_status(url.replace("Key", "Kex").replace("small", "smalk")) == 403, "a tampered URL is refused"
expiring = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "small"}, ExpiresIn=1)
time.sleep(2.5)
assert http_status(expiring) == 403, "an expired URL is refused"
too_long = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "small"}, ExpiresIn=8 * 86400)
assert http_status(too_long) in (400, 403), "a URL valid for more than 7 days is refused"

step("auth")
assert code_of(client(sec="wrong" * 8).list_buckets)[0] == "SignatureDoesNotMatch"
assert code_of(client(key="CKNOSUCHKEY").list_buckets)[0] == "InvalidAccessKeyId"
assert http_status(f"{endpoint}/{B}/small") == 403, "an unsigned request is refused"

step("listing: 2,500 keys, delimiter, pagination, versions")
L = "boto-list"
s3.create_bucket(Bucket=L)
keys = [f"d{i % 5}/k{i:05d}" for i in range(2400)] + [f"top{i:03d}" for i in range(100)]
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda k: s3.put_object(Bucket=L, Key=k, Body=k.encode()), keys))
seen = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=L, PaginationConfig={"PageSize": 333}):
    seen += [o["Key"] for o in page.get("Contents", [])]
assert seen == sorted(keys), (len(seen), len(keys))
top, prefixes = [], []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=L, Delimiter="/", PaginationConfig={"PageSize": 30}):
    top += [o["Key"] for o in page.get("Contents", [])]
    prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
assert prefixes == [f"d{i}/" for i in range(5)] and top == [f"top{i:03d}" for i in range(100)], (prefixes, len(top))
v1 = []
for page in s3.get_paginator("list_objects").paginate(Bucket=L, Prefix="d3/", PaginationConfig={"PageSize": 100}):
    v1 += [o["Key"] for o in page.get("Contents", [])]
assert v1 == sorted(k for k in keys if k.startswith("d3/"))
enc = s3.list_objects_v2(Bucket=L, Prefix="top00", EncodingType="url")
assert [o["Key"] for o in enc["Contents"]][:1] == ["top000"]
vers = s3.list_object_versions(Bucket=L, Prefix="d1/", MaxKeys=100)
assert all(v["VersionId"] == "null" for v in vers["Versions"]) and vers["IsTruncated"]

step("emptying a bucket the way tools do: versions + DeleteObjects")
deleted = 0
for page in s3.get_paginator("list_object_versions").paginate(Bucket=L, PaginationConfig={"PageSize": 500}):
    objs = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", [])]
    if objs:
        out = s3.delete_objects(Bucket=L, Delete={"Objects": objs, "Quiet": True})
        assert not out.get("Errors"), out["Errors"]
        deleted += len(objs)
assert deleted == len(keys), deleted
assert s3.list_objects_v2(Bucket=L)["KeyCount"] == 0
s3.delete_bucket(Bucket=L)

step("delete, rb")
assert code_of(s3.delete_bucket, Bucket=B)[0] == "BucketNotEmpty"
s3.delete_object(Bucket=B, Key="missing")  # S3 answers 204 for a missing key
for o in s3.list_objects_v2(Bucket=B)["Contents"]:
    s3.delete_object(Bucket=B, Key=o["Key"])
s3.delete_bucket(Bucket=B)
s3.delete_object(Bucket="boto-other", Key="x")
s3.delete_bucket(Bucket="boto-other")
assert B not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
print("boto3: all checks passed")
