"""Two gateways of one account: an upload begun through one is seen,
continued and completed through the other (uploads live in the index);
a read-only key and a bucket-scoped key are held to their scope.
Run with: ENDPOINT_A ENDPOINT_B ACCESS_KEY SECRET RO_KEY RO_SECRET."""
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

a_url, b_url, key, secret, ro_key, ro_secret = sys.argv[1:7]


def client(url, k=key, s=secret):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=k, aws_secret_access_key=s,
                        region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


a, b = client(a_url), client(b_url)
a.create_bucket(Bucket="shared")
u = a.create_multipart_upload(Bucket="shared", Key="obj", ContentType="text/x-two")["UploadId"]
p1 = a.upload_part(Bucket="shared", Key="obj", UploadId=u, PartNumber=1, Body=b"1" * (5 << 20))
assert [x["UploadId"] for x in b.list_multipart_uploads(Bucket="shared")["Uploads"]] == [u]
p2 = b.upload_part(Bucket="shared", Key="obj", UploadId=u, PartNumber=2, Body=b"2" * 10)
assert [p["PartNumber"] for p in b.list_parts(Bucket="shared", Key="obj", UploadId=u)["Parts"]] == [1, 2]
b.complete_multipart_upload(Bucket="shared", Key="obj", UploadId=u, MultipartUpload={"Parts": [
    {"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
got = a.get_object(Bucket="shared", Key="obj")
assert got["ContentType"] == "text/x-two" and got["ContentLength"] == (5 << 20) + 10
assert got["ETag"].endswith('-2"')
print("two gateways: an upload crossed gateways")

ro = client(a_url, ro_key, ro_secret)
assert ro.get_object(Bucket="shared", Key="obj")["ContentLength"] == (5 << 20) + 10
for call in [lambda: ro.put_object(Bucket="shared", Key="x", Body=b"x"),
             lambda: ro.delete_object(Bucket="shared", Key="obj"),
             lambda: ro.create_bucket(Bucket="another")]:
    try:
        call()
        raise AssertionError("a read-only key wrote")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDenied", e.response
a.create_bucket(Bucket="private")
try:
    ro.list_objects_v2(Bucket="private")
    raise AssertionError("a key limited to one bucket read another")
except ClientError as e:
    assert e.response["Error"]["Code"] == "AccessDenied", e.response
assert [x["Name"] for x in ro.list_buckets()["Buckets"]] == ["shared"]
print("two gateways: scoped keys held")
