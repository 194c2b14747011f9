"""The client side of the openhi commands: endpoint rules, credentials, signed uploads and job reports.

A small stub HTTP server stands in for the upload routes (``PUT/GET/DELETE /openhi/upload/{bucket}/{key}``)
and checks every request's SigV4 signature with openhi's own verifier and a known secret.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.cli_client import (
    DEFAULT_ENDPOINT,
    LOCAL_KEY,
    CommandError,
    Connection,
    resolve_endpoint,
)
from openhi.cli_import import Reports, Stage, collect, read_reports, report
from openhi.core.errors import AccessDeniedError

SECRET = {"AKIDCLITEST": "cli-test-secret"}


class _Stub(BaseHTTPRequestHandler):
    objects: dict[str, bytes]
    verifier = SigV4Verifier(SECRET)
    seen: list[tuple[str, str]]

    def _verified(self, body: bytes) -> bool:
        raw_path, _, query = self.path.partition("?")
        headers = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        try:
            self.verifier.verify(self.command, raw_path, query.encode(), headers, body)
        except AccessDeniedError as exc:
            self._send(403, json.dumps({"message": exc.message}).encode())
            return False
        self.seen.append((self.command, self.path))
        return True

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _key(self) -> str:
        return self.path.partition("?")[0].removeprefix("/openhi/upload/")

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self._verified(body):
            self.objects[self._key()] = body
            self._send(200, json.dumps({"uri": f"s3://{self._key()}", "size": len(body)}).encode())

    def do_GET(self) -> None:
        if not self._verified(b""):
            return
        if self.path.startswith("/openhi/datastore/"):
            self._send(200, json.dumps({"changes": [], "query": self.path.partition("?")[2]}).encode())
        elif self._key() in self.objects:
            self._send(200, self.objects[self._key()])
        else:
            self._send(404, b'{"message": "no such object"}')

    def do_DELETE(self) -> None:
        if self._verified(b""):
            gone = [k for k in self.objects if k.startswith(self._key())]
            for k in gone:
                del self.objects[k]
            self._send(200, json.dumps({"deleted": len(gone)}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def stub() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type("Handler", (_Stub,), {"objects": {}, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _conn(endpoint: str, secret: str = "cli-test-secret") -> Connection:
    return Connection(endpoint, "eu-west-1", "AKIDCLITEST", secret)


def test_endpoint_flag_then_variable_then_default() -> None:
    env = {"AWS_ENDPOINT_URL_MEDICAL_IMAGING": "http://10.0.0.5:9000/"}
    assert resolve_endpoint("https://hi.example:8443", env) == "https://hi.example:8443"
    assert resolve_endpoint(None, env) == "http://10.0.0.5:9000"
    assert resolve_endpoint(None, {}) == DEFAULT_ENDPOINT == "http://127.0.0.1:8080"
    with pytest.raises(CommandError, match="AWS_ENDPOINT_URL_MEDICAL_IMAGING must be an http"):
        resolve_endpoint(None, {"AWS_ENDPOINT_URL_MEDICAL_IMAGING": "127.0.0.1:8080"})
    with pytest.raises(CommandError, match="--endpoint must be") as err:
        resolve_endpoint("ftp://host", env)
    assert err.value.status == 2


def test_credentials_from_the_aws_environment_else_a_local_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    local = Connection.open("http://x")
    assert (local.access_key, local.secret_key, local.region) == (*LOCAL_KEY, "us-east-1")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")
    configured = Connection.open("http://x")
    assert (configured.access_key, configured.secret_key, configured.region) == (
        "AKIDENV",
        "env-secret",
        "ap-southeast-2",
    )

    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(CommandError, match="no-such-profile"):
        Connection.open("http://x")


def test_signed_streamed_upload_get_and_delete(stub: tuple[str, type[_Stub]], tmp_path: Path) -> None:
    endpoint, handler = stub
    big = tmp_path / "big.dcm"
    data = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: hashed and sent in chunks
    big.write_bytes(data)
    conn = _conn(endpoint)
    put = conn.request("PUT", "/openhi/upload/bkt/st/input/000001-big.dcm", file=big)
    assert put.status == 200 and put.json() == {"uri": "s3://bkt/st/input/000001-big.dcm", "size": len(data)}
    assert handler.objects["bkt/st/input/000001-big.dcm"] == data
    got = conn.request("GET", "/openhi/upload/bkt/st/input/000001-big.dcm")
    assert got.status == 200 and got.body == data
    gone = conn.request("DELETE", "/openhi/upload/bkt/st/")
    assert gone.status == 200 and gone.json() == {"deleted": 1} and handler.objects == {}
    diff = conn.request("GET", "/openhi/datastore/d1/imageSet/s1/diff", query="from=1&to=2")
    assert diff.status == 200 and diff.json()["query"] == "from=1&to=2"
    # a wrong secret is refused by the verifier, so the signatures above were really checked
    refused = _conn(endpoint, "wrong").request("GET", "/openhi/upload/bkt/x")
    assert refused.status == 403 and "signature" in refused.error_message()


def test_unreachable_endpoint_is_a_command_error() -> None:
    with pytest.raises(CommandError, match=r"cannot reach http://127\.0\.0\.1:1") as err:
        _conn("http://127.0.0.1:1").request("GET", "/openhi/upload/b/k")
    assert err.value.status == 2


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(CommandError, match="no files to import"):
        collect([str(tmp_path / "empty")])
    with pytest.raises(CommandError, match="neither a file nor a folder"):
        collect([str(tmp_path / "missing")])


def _ndjson(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _staged(conn: Connection, tmp_path: Path, names: list[str]) -> Stage:
    stage = Stage(conn, "bkt", "import-abc")
    for i, name in enumerate(names, 1):
        stage.names[f"{i:06d}-{name}"] = tmp_path / name
    return stage


def test_report_prints_failures_warnings_and_true_counts(
    stub: tuple[str, type[_Stub]], tmp_path: Path
) -> None:
    endpoint, handler = stub
    out = "bkt/import-abc/output/ds-DicomImport-j1/"
    key = "import-abc/input/"
    warning = {"type": "TRANSCODING_EXCEPTION", "message": "Stored in original encoding: no decoder"}
    handler.objects.update(
        {
            out + "job-output-manifest.json": json.dumps(
                {
                    "jobSummary": {
                        "numberOfScannedFiles": 3,
                        "imageSetsSummary": [
                            {
                                "imageSetId": "s1",
                                "imageSetVersion": 1,
                                "isPrimary": True,
                                "numberOfMatchedSOPInstances": 2,
                            }
                        ],
                    }
                }
            ).encode(),
            out + "SUCCESS/success.ndjson": _ndjson(
                [{"inputFile": f"{key}000001-a.dcm"}, {"inputFile": f"{key}000002-b.dcm"}]
            ),
            out + "FAILURE/failure.ndjson": _ndjson(
                [
                    {
                        "inputFile": f"{key}000003-junk.bin",
                        "exception": {"exceptionType": "INVALID_DICOM", "message": "not a DICOM file"},
                    }
                ]
            ),
            out + "WARNING/warning.ndjson": _ndjson(
                [{"inputFile": f"{key}000002-b.dcm", "importResponse": {"warnings": [warning]}}]
            ),
        }
    )
    conn = _conn(endpoint)
    stage = _staged(conn, tmp_path, ["a.dcm", "b.dcm", "junk.bin"])
    props = {"jobId": "j1", "jobStatus": "COMPLETED", "outputS3Uri": f"s3://{out}"}
    reports = read_reports(conn, props["outputS3Uri"])
    printed = io.StringIO()
    with redirect_stdout(printed):
        status = report(props, reports, stage, 3)
    text = printed.getvalue()
    assert status == 1
    assert f"FAILED  {tmp_path / 'junk.bin'}: INVALID_DICOM: not a DICOM file" in text
    assert f"WARNING {tmp_path / 'b.dcm'}: TRANSCODING_EXCEPTION: Stored in original encoding" in text
    for label, value in [
        ("files imported", 2),
        ("files failed", 1),
        ("files with warnings", 1),
        ("instances imported", 2),
        ("image sets", 1),
    ]:
        assert f"{label:<22}{value:>8}" in text

    # the same job with every file imported: exit status 0
    handler.objects[out + "FAILURE/failure.ndjson"] = b""
    handler.objects[out + "SUCCESS/success.ndjson"] += _ndjson([{"inputFile": f"{key}000003-junk.bin"}])
    with redirect_stdout(io.StringIO()):
        assert report(props, read_reports(conn, props["outputS3Uri"]), stage, 3) == 0


def test_a_file_without_any_result_is_reported_missing(stub: tuple[str, type[_Stub]], tmp_path: Path) -> None:
    conn = _conn(stub[0])
    stage = _staged(conn, tmp_path, ["a.dcm", "b.dcm"])
    reports = Reports({"numberOfScannedFiles": 2, "imageSetsSummary": []}, [{"inputFile": "x/000001-a.dcm"}])
    printed = io.StringIO()
    with redirect_stdout(printed):
        status = report(
            {"jobId": "j", "jobStatus": "COMPLETED", "outputS3Uri": "s3://b/o/"}, reports, stage, 2
        )
    assert status == 1
    assert f"MISSING {tmp_path / 'b.dcm'}: the job reported no result" in printed.getvalue()


def test_unreadable_reports_degrade_to_the_job_summary(stub: tuple[str, type[_Stub]], tmp_path: Path) -> None:
    conn = _conn(stub[0])
    reports = read_reports(conn, "s3://bkt/nothing/here/")
    assert reports.manifest is None and reports.problem is not None
    props = {"jobId": "j9", "jobStatus": "COMPLETED", "outputS3Uri": "s3://bkt/nothing/here/"}
    printed = io.StringIO()
    with redirect_stdout(printed), pytest.raises(CommandError, match="per-file results unknown") as err:
        report(props, reports, _staged(conn, tmp_path, ["a.dcm"]), 1)
    assert err.value.status == 1 and "job j9 COMPLETED" in printed.getvalue()


def test_remove_deletes_only_what_was_staged(stub: tuple[str, type[_Stub]], tmp_path: Path) -> None:
    endpoint, handler = stub
    conn = _conn(endpoint)
    handler.objects["bkt/other/keep.dcm"] = b"x"
    files = []
    for name in ("a b.dcm", "c.dcm"):
        (tmp_path / name).write_bytes(name.encode())
        files.append(tmp_path / name)
    stage = Stage(conn, "bkt")
    assert stage.remove() is None and handler.seen == []  # nothing staged: nothing sent
    stage.upload(files)
    assert sorted(handler.objects) == sorted(
        [
            "bkt/other/keep.dcm",
            f"bkt/{stage.stage_id}/input/000001-a_b.dcm",
            f"bkt/{stage.stage_id}/input/000002-c.dcm",
        ]
    )
    assert stage.remove() is None
    assert list(handler.objects) == ["bkt/other/keep.dcm"]
