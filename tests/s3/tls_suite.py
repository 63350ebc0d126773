"""boto3 over HTTPS (the gateway's TLS): boto3 sends its CRC32 in an
aws-chunked trailer there. Run with: ENDPOINT ACCESS_KEY SECRET CA_PEM."""
import hashlib
import os
import sys

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, access, secret, ca = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                  region_name="us-east-1", verify=ca,
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
s3.create_bucket(Bucket="tls")
data = os.urandom(300_000)
s3.put_object(Bucket="tls", Key="a", Body=data)
assert s3.get_object(Bucket="tls", Key="a")["Body"].read() == data
big = os.urandom(12 << 20)
path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"cairn-tls-{os.getpid()}")
with open(path, "wb") as f:
    f.write(big)
cfg = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
s3.upload_file(path, "tls", "big", Config=cfg)
os.remove(path)
got = s3.get_object(Bucket="tls", Key="big")["Body"].read()
assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
assert [o["Key"] for o in s3.list_objects_v2(Bucket="tls")["Contents"]] == ["a", "big"]
print("tls: all checks passed")
