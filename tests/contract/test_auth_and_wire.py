"""Contract tests: SigV4 enforcement, local mode, raw-HTTP bad input, unknown routes and the AWS CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from openhi.testing import RunningServer


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    creds = tmp_path_factory.mktemp("creds") / "creds.json"
    creds.write_text(json.dumps({"AKIDOPENHI": "s3cr3t-value"}))
    server = RunningServer(
        tmp_path_factory.mktemp("secured") / "data", extra_args=["--credentials", str(creds)]
    )
    server.start()
    yield server
    server.stop()


def test_sigv4_accepts_the_right_secret(secured: RunningServer) -> None:
    client = secured.client(aws_access_key_id="AKIDOPENHI", aws_secret_access_key="s3cr3t-value")
    ds_id = client.create_datastore(datastoreName="signed")["datastoreId"]
    arn = client.get_datastore(datastoreId=ds_id)["datastoreProperties"]["datastoreArn"]
    client.tag_resource(resourceArn=arn, tags={"k": "v"})  # %2F-encoded ARN in the signed path
    client.untag_resource(resourceArn=arn, tagKeys=["k", "other/key:x"])
    assert client.list_tags_for_resource(resourceArn=arn)["tags"] == {}


@pytest.mark.parametrize(
    ("key", "secret", "fragment"),
    [
        ("AKIDOPENHI", "wrong-secret", "signature"),
        ("AKIDUNKNOWN", "s3cr3t-value", "unknown access key"),
    ],
)
def test_sigv4_rejects_bad_credentials(secured: RunningServer, key: str, secret: str, fragment: str) -> None:
    client = secured.client(aws_access_key_id=key, aws_secret_access_key=secret)
    with pytest.raises(ClientError) as exc:
        client.list_datastores()
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert fragment in exc.value.response["Error"]["Message"]


def test_unsigned_request_is_denied(secured: RunningServer) -> None:
    resp = httpx.get(f"{secured.endpoint}/datastore")
    assert resp.status_code == 403
    assert resp.headers["x-amzn-errortype"] == "AccessDeniedException"
    assert resp.headers["x-amzn-requestid"]


def test_clock_skew_is_denied(secured: RunningServer) -> None:
    import datetime
    from unittest import mock

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=f"{secured.endpoint}/datastore")
    skewed = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=16)
    # botocore reads the signing time from get_current_datetime(); sign as a client whose clock is 16 min slow
    with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
        SigV4Auth(Credentials("AKIDOPENHI", "s3cr3t-value"), "medical-imaging", "us-east-1").add_auth(request)
    resp = httpx.get(request.url, headers=dict(request.headers.items()))
    assert resp.status_code == 403
    assert "15 minutes" in resp.json()["message"] or "expired" in resp.json()["message"].lower()


def test_non_loopback_without_credentials_refuses_to_start(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "openhi",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "credentials" in proc.stderr and "127.0.0.1" in proc.stderr


def _signed(
    server: RunningServer, method: str, path: str, body: bytes = b"", query: str = ""
) -> httpx.Response:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{server.endpoint}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("any", "any"), "medical-imaging", "us-east-1").add_auth(request)
    return httpx.request(method, url, content=body, headers=dict(request.headers.items()))


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "status", "code", "fragment"),
    [
        ("POST", "/datastore", b"{not json", "", 400, "ValidationException", "JSON"),
        ("POST", "/datastore", b"[1, 2]", "", 400, "ValidationException", "object"),
        ("POST", "/datastore", b'{"clientToken": 5}', "", 400, "ValidationException", "clientToken"),
        ("POST", "/datastore", b'{"clientToken": "t", "bogus": 1}', "", 400, "ValidationException", "bogus"),
        ("GET", "/datastore", b"", "maxResults=abc", 400, "ValidationException", "maxResults"),
        ("GET", "/datastore", b"", "maxResults=500", 400, "ValidationException", "maxResults"),
        ("GET", "/datastore", b"", "color=blue", 400, "ValidationException", "color"),
        ("GET", "/datastore/UPPER", b"", "", 400, "ValidationException", "datastoreId"),
        ("GET", "/no/such/route", b"", "", 404, "UnknownOperationException", "/no/such/route"),
        (
            "POST",
            "/datastore",
            b'{"clientToken": "' + b"x" * 2_000_000 + b'"}',
            "",
            400,
            "ValidationException",
            "limit",
        ),
    ],
)
def test_bad_requests_get_modeled_4xx(
    openhi_server: RunningServer,
    method: str,
    path: str,
    body: bytes,
    query: str,
    status: int,
    code: str,
    fragment: str,
) -> None:
    resp = _signed(openhi_server, method, path, body, query)
    assert resp.status_code == status, resp.text
    assert resp.headers["x-amzn-errortype"] == code
    assert fragment.lower() in resp.json()["message"].lower()


def test_runtime_host_prefix_is_ignored(openhi_server: RunningServer) -> None:
    resp = _signed(openhi_server, "GET", "/datastore")
    assert resp.status_code == 200
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="GET", url=f"{openhi_server.endpoint}/datastore", headers={"Host": "runtime-localhost"}
    )
    SigV4Auth(Credentials("any", "any"), "medical-imaging", "us-east-1").add_auth(request)
    resp = httpx.get(f"{openhi_server.endpoint}/datastore", headers=dict(request.headers.items()))
    assert resp.status_code == 200 and "datastoreSummaries" in resp.json()


def test_aws_cli_talks_to_openhi(openhi_server: RunningServer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_MEDICAL_IMAGING": openhi_server.endpoint,
        "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        "AWS_ACCESS_KEY_ID": "cli",
        "AWS_SECRET_ACCESS_KEY": "cli",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    aws = [sys.executable, "-m", "awscli", "medical-imaging"]
    created = subprocess.run(
        [*aws, "create-datastore", "--datastore-name", "cli-made"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    ds_id = json.loads(created.stdout)["datastoreId"]
    listed = subprocess.run([*aws, "list-datastores"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert ds_id in [d["datastoreId"] for d in json.loads(listed.stdout)["datastoreSummaries"]]
    missing = subprocess.run(
        [*aws, "get-datastore", "--datastore-id", "0" * 32],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr


@pytest.mark.parametrize(
    "body",
    [
        b'{"imageFrameId": "\\ud800"}',  # a lone surrogate: the validation message must still serialize
        b'{"imageFrameId": "' + "\u20ac".encode() + b'\\udcff"}',
        b"[" * 5000 + b"]" * 5000,  # nested far beyond any parser's recursion limit
    ],
)
def test_errors_are_always_modeled_json(openhi_server: RunningServer, body: bytes) -> None:
    client = openhi_server.client()
    ds = client.list_datastores()["datastoreSummaries"]
    ds_id = ds[0]["datastoreId"] if ds else client.create_datastore(datastoreName="wire")["datastoreId"]
    resp = _signed(openhi_server, "POST", f"/datastore/{ds_id}/imageSet/{'0' * 32}/getImageFrame", body)
    assert resp.headers["x-amzn-errortype"].endswith("Exception"), resp.text
    assert resp.headers["x-amzn-requestid"]
    assert resp.headers["content-type"] == "application/json"
    assert isinstance(resp.json()["message"], str)
    if b"imageFrameId" in body:
        assert resp.status_code == 400 and resp.headers["x-amzn-errortype"] == "ValidationException"


def test_unsigned_payload_cannot_swap_the_body(secured: RunningServer) -> None:
    """A request signed with UNSIGNED-PAYLOAD (or with the hash of another body) is refused."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{secured.endpoint}/datastore"
    for declared in ("UNSIGNED-PAYLOAD", None):
        headers = {"Content-Type": "application/json"}
        if declared:
            headers["X-Amz-Content-SHA256"] = declared
        request = AWSRequest(method="POST", url=url, data=b'{"datastoreName": "signed"}', headers=headers)
        SigV4Auth(Credentials("AKIDOPENHI", "s3cr3t-value"), "medical-imaging", "us-east-1").add_auth(request)
        swapped = b'{"datastoreName": "swapped"}'
        resp = httpx.post(url, content=swapped, headers=dict(request.headers.items()))
        assert resp.status_code == 403 and resp.headers["x-amzn-errortype"] == "AccessDeniedException"
    client = secured.client(aws_access_key_id="AKIDOPENHI", aws_secret_access_key="s3cr3t-value")
    names = [d.get("datastoreName") for d in client.list_datastores()["datastoreSummaries"]]
    assert "swapped" not in names
