"""Bad input to Cairn's S3 gateway: each request gets its 4xx, the gateway
keeps serving, and nothing partial is stored.

Run by tests/tests/s3.rs with: ENDPOINT ACCESS_KEY SECRET (prepare|attack).
`prepare` makes the bucket; the test measures what the nodes hold; `attack`
sends the bad requests; the test checks the nodes hold no more.
"""
import base64
import socket
import sys
import time
import urllib.parse
import zlib

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

endpoint, access, secret, mode = sys.argv[1:5]
host, port = urllib.parse.urlparse(endpoint).hostname, urllib.parse.urlparse(endpoint).port
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                  region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
B = "bad-input"


def signed(method, path, body=b"", headers=None, payload="UNSIGNED-PAYLOAD"):
    """Headers of a SigV4-signed request (the body is not signed)."""
    h = {"x-amz-content-sha256": payload, **(headers or {})}
    req = AWSRequest(method=method, url=endpoint + path, data=body, headers=h)
    SigV4Auth(Credentials(access, secret), "s3", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def raw(method, path, headers, body=b"", close_after=None):
    """Sends a request by hand; returns the status line (None if the
    connection closed without an answer)."""
    s = socket.create_connection((host, port), timeout=30)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    if close_after is not None:
        s.shutdown(socket.SHUT_WR)
    try:
        data = s.recv(65536)
    except (ConnectionResetError, socket.timeout):
        data = b""
    s.close()
    return data.split(b"\r\n", 1)[0].decode() if data else None


def status(line):
    return int(line.split()[1]) if line else None


def chunked(key, data, crc_b64):
    """An aws-chunked PUT whose CRC32 comes in the trailer."""
    body = b"%x\r\n" % len(data) + data + b"\r\n0\r\n" + b"x-amz-checksum-crc32:" + crc_b64.encode() + b"\r\n\r\n"
    hs = signed("PUT", f"/{B}/{key}", b"", {
        "Content-Encoding": "aws-chunked",
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(len(body)),
    }, payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    return raw("PUT", f"/{B}/{key}", hs, body)


if mode == "prepare":
    # Everything that stores something happens here, before the test
    # measures what the nodes hold; `attack` must store nothing.
    s3.create_bucket(Bucket=B)
    s3.put_object(Bucket=B, Key="keep", Body=b"kept")
    data = b"z" * 70_000
    good = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    line = chunked("trailed", data, good)
    assert status(line) == 200, line
    assert s3.get_object(Bucket=B, Key="trailed")["Body"].read() == data
    sys.exit(0)


def alive():
    assert s3.get_object(Bucket=B, Key="keep")["Body"].read() == b"kept", "the gateway stopped serving"


def absent(key):
    try:
        s3.head_object(Bucket=B, Key=key)
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        return
    raise AssertionError(f"{key} was stored")


print("bad input: unsigned, wrong signature", flush=True)
assert status(raw("GET", f"/{B}/keep", {})) == 403
h = signed("GET", f"/{B}/keep")
h["Authorization"] = h["Authorization"][:-4] + "0000"
assert status(raw("GET", f"/{B}/keep", h)) == 403
alive()

print("bad input: malformed XML", flush=True)
for path, body in [(f"/{B}?delete", b"<Delete><Object><Key>x</Key></Obj"),
                   (f"/{B}/k?uploadId=00000000000000000000000000000000", b"<CompleteMultipartUpload><Part>")]:
    hs = signed("POST", path, body, {"Content-Type": "application/xml", "Content-Length": str(len(body))})
    line = raw("POST", path, hs, body)
    assert status(line) == 400, (path, line)
alive()

print("bad input: oversized headers", flush=True)
line = raw("GET", f"/{B}/keep", {"X-Junk": "a" * 200_000})
assert status(line) in (None, 400, 431), line
alive()

print("bad input: a body shorter than its Content-Length, then a hang-up", flush=True)
hs = signed("PUT", f"/{B}/short", b"", {"Content-Length": str(10 << 20)})
line = raw("PUT", f"/{B}/short", hs, b"x" * (3 << 20), close_after=True)
assert line is None or status(line) >= 400, line
time.sleep(1)
absent("short")
alive()

print("bad input: an aws-chunked body with a wrong trailing CRC32", flush=True)
line = chunked("trailed-bad", b"z" * 70_000, "AAAAAA==")
assert status(line) == 400, line
absent("trailed-bad")
alive()

print("bad input: a wrong checksum, a ranged GET past the end", flush=True)
for kw in [{"ChecksumSHA256": "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="}, {"ContentMD5": "1B2M2Y8AsgTpgAmY7PhCfg=="}]:
    try:
        s3.put_object(Bucket=B, Key="digest", Body=b"y" * 100_000, **kw)
        raise AssertionError("a wrong digest was accepted")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "BadDigest", e.response
absent("digest")
try:
    s3.get_object(Bucket=B, Key="keep", Range="bytes=100-200")
    raise AssertionError("a range past the end was served")
except ClientError as e:
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 416
alive()
print("bad input: all refused")
