"""Contract tests: the /openhi/upload routes ``openhi import`` stages files with, through a real server."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def send(server: Any, method: str, path: str, body: bytes = b"", sha: str | None = "body") -> httpx.Response:
    url = f"{server.endpoint}{path}"
    headers = {}
    if sha is not None:
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest() if sha == "body" else sha
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(Credentials("any", "any"), "medical-imaging", "us-east-1").add_auth(request)
    return httpx.request(method, url, content=body, headers=dict(request.headers.items()), timeout=60)


def test_put_get_and_delete_through_the_object_store(openhi_server: Any) -> None:
    bucket, stage = "upload-tests", f"stage-{uuid.uuid4().hex[:8]}"
    data = bytes(range(256)) * 8192  # 2 MiB: beyond the 1 MiB limit of API bodies
    put = send(openhi_server, "PUT", f"/openhi/upload/{bucket}/{stage}/input/a%20b.dcm", data)
    assert put.status_code == 200, put.text
    assert put.json() == {"uri": f"s3://{bucket}/{stage}/input/a b.dcm", "size": len(data)}
    assert openhi_server.read_object(bucket, f"{stage}/input/a b.dcm") == data
    send(openhi_server, "PUT", f"/openhi/upload/{bucket}/{stage}/output/r.json", b"{}")
    got = send(openhi_server, "GET", f"/openhi/upload/{bucket}/{stage}/output/r.json", sha=None)
    assert got.status_code == 200 and got.content == b"{}"
    missing = send(openhi_server, "GET", f"/openhi/upload/{bucket}/{stage}/nothing", sha=None)
    assert missing.status_code == 404 and missing.headers["x-amzn-errortype"] == "ResourceNotFoundException"
    removed = send(openhi_server, "DELETE", f"/openhi/upload/{bucket}/{stage}/", sha=None)
    assert removed.status_code == 200 and removed.json() == {"deleted": 2}
    assert openhi_server.read_object(bucket, f"{stage}/input/a b.dcm") is None
    again = send(openhi_server, "DELETE", f"/openhi/upload/{bucket}/{stage}/", sha=None)
    assert again.json() == {"deleted": 0}


@pytest.mark.parametrize(
    "path",
    [
        "/openhi/upload/Bad_Bucket/k",
        "/openhi/upload/ok-bucket/a/%2E%2E/%2E%2E/etc/passwd",  # a literal ".." is resolved by clients
        "/openhi/upload/ok-bucket/a//b",
        "/openhi/upload/ok-bucket/%2Fabsolute",
        "/openhi/upload/ok-bucket/dir/",
        "/openhi/upload/ok-bucket/a%00b",
    ],
)
def test_unsafe_buckets_and_keys_are_refused(openhi_server: Any, path: str) -> None:
    resp = send(openhi_server, "PUT", path, b"x")
    assert resp.status_code == 400, resp.text
    assert resp.headers["x-amzn-errortype"] == "ValidationException"


def test_the_body_must_be_the_one_whose_hash_was_signed(openhi_server: Any) -> None:
    path = f"/openhi/upload/upload-tests/{uuid.uuid4().hex}"
    wrong = send(openhi_server, "PUT", path, b"data", sha=hashlib.sha256(b"other").hexdigest())
    assert wrong.status_code == 403 and wrong.headers["x-amzn-errortype"] == "AccessDeniedException"
    for declared in (None, "UNSIGNED-PAYLOAD"):
        resp = send(openhi_server, "PUT", path, b"data", sha=declared)
        assert resp.status_code == 403 and "x-amz-content-sha256" in resp.json()["message"]
    assert openhi_server.read_object("upload-tests", path.rsplit("/", 1)[1]) is None
