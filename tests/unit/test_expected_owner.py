"""inputOwnerAccountId: S3 reads of the input carry a signed x-amz-expected-bucket-owner; a 403 fails the job."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from openhi.core import import_run
from openhi.core.import_files import FileJob
from openhi.core.records import ImportJob
from openhi.core.settings import Settings
from openhi.ports.objects import ObjectInfo
from openhi.storage.buckets_fs import FsObjectStore
from openhi.storage.buckets_s3 import S3ObjectStore

OWNER = "111122223333"


class _Capture(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []
    status = 200

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.status == 200 and "list-type=2" in self.path:
            body = (
                b'<?xml version="1.0"?><ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>'
            )
        elif self.status == 200:
            body = b"DATA"
        else:
            body = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[tuple[type[_Capture], str]]:
    handler = type("Handler", (_Capture,), {"seen": [], "status": 200})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_owner_view_sends_and_signs_the_header(capture: tuple[type[_Capture], str]) -> None:
    handler, url = capture
    store = S3ObjectStore(url, access_key_id="AKID", secret_access_key="SECRET")
    view = store.expecting_owner(OWNER)
    assert store.get("bucket", "in/a.dcm") == b"DATA"
    assert view.get("bucket", "in/a.dcm") == b"DATA"
    assert list(view.list("bucket", "in/")) == []
    plain, owned, listing = handler.seen
    assert "x-amz-expected-bucket-owner" not in plain
    assert owned["x-amz-expected-bucket-owner"] == OWNER
    signed = owned["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "x-amz-expected-bucket-owner" in signed  # S3 refuses unsigned x-amz-* headers
    # obstore would send the header unsigned on LIST (S3 would refuse the listing): it is left out there
    assert "x-amz-expected-bucket-owner" not in listing
    assert store.expecting_owner(OWNER) is not store


def test_a_403_is_a_permission_error(capture: tuple[type[_Capture], str]) -> None:
    handler, url = capture
    handler.status = 403
    view = S3ObjectStore(url, access_key_id="AKID", secret_access_key="SECRET").expecting_owner(OWNER)
    with pytest.raises(PermissionError, match="S3 refused listing"):
        list(view.list("bucket", "in/"))
    with pytest.raises(PermissionError, match="S3 refused reading"):
        view.get("bucket", "in/a.dcm")


def test_embedded_buckets_have_no_owner(tmp_path: Path) -> None:
    store = FsObjectStore(tmp_path)
    assert store.expecting_owner(OWNER) is store


class _Recording(FsObjectStore):
    def __init__(self, root: Path, owner: str | None = None, denied: bool = False) -> None:
        super().__init__(root)
        self.owner, self.denied = owner, denied
        self.reads: list[str] = []

    def expecting_owner(self, account_id: str) -> _Recording:
        return _Recording(self.root, account_id, self.denied)

    def list(self, bucket: str, prefix: str) -> Any:
        if self.denied and self.owner:
            raise PermissionError("S3 refused listing (403)")
        return super().list(bucket, prefix)

    def get(self, bucket: str, key: str) -> bytes:
        self.reads.append(key)
        return super().get(bucket, key)


def _job(owner: str | None, config: dict[str, Any] | None = None) -> ImportJob:
    return ImportJob(
        "job", "ds", "name", "IN_PROGRESS", "role", "s3://in-bucket/in/", "s3://out/x/", 0.0,
        input_owner_account_id=owner, import_configuration=config,
    )  # fmt: skip


def _env(objects: FsObjectStore) -> Any:
    index = SimpleNamespace(get_datastore=lambda _id: None)
    return SimpleNamespace(settings=Settings(), objects=objects, index=index, pixel_pool=None, blobs=None)


def test_the_job_reads_its_input_through_the_owner_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = _Recording(tmp_path)
    objects.put("in-bucket", "in/a.dcm", b"not dicom")
    objects.put("in-bucket", "in/meta.json", json.dumps({"00100010": {"vr": "PN"}}).encode())
    config = {
        "dicomJsonMetadataImportConfiguration": {
            "dicomMetadataMappings": [{"studyInstanceUID": "1.2", "metadataFilePath": "meta.json"}]
        }
    }
    run = import_run.ImportRun(_env(objects), _job(OWNER, config), "worker")
    works: list[FileJob] = []

    def process(self: Any, infos: Any, work: FileJob) -> Iterator[Any]:
        works.append(work)
        return iter([])

    monkeypatch.setattr(import_run.ImportRun, "_process", process)
    monkeypatch.setattr(import_run.ImportRun, "_commit", lambda self: None)
    assert run._run() is None
    [work] = works
    assert isinstance(work.objects, _Recording) and work.objects.owner == OWNER
    assert work.objects.reads == ["in/meta.json"]  # the metadata file, through the view
    assert objects.reads == []
    assert run.outcome.scanned == 1  # the metadata file is not DICOM input


def test_a_refused_listing_fails_the_job_with_a_modeled_message(tmp_path: Path) -> None:
    objects = _Recording(tmp_path, denied=True)
    objects.put("in-bucket", "in/a.dcm", b"x")
    message = import_run.ImportRun(_env(objects), _job(OWNER), "worker")._run()
    assert (
        message
        == f"Access to input bucket in-bucket (expected owner {OWNER}) was denied: S3 refused listing (403)"
    )


def test_a_refused_file_is_an_access_denied_entry(tmp_path: Path) -> None:
    run = import_run.ImportRun(_env(_Recording(tmp_path)), _job(OWNER), "worker")
    run._record(ObjectInfo("in/a.dcm", 10), PermissionError("S3 refused reading (403)"), set(), {})
    [entry] = run.outcome.failures
    assert entry == {
        "inputFile": "in/a.dcm",
        "exception": {
            "exceptionType": "AccessDeniedException",
            "message": "Reading the file was refused: S3 refused reading (403)",
        },
    }
