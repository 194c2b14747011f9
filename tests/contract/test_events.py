"""The event feed and webhooks end to end: a scripted session's every state change, once, in order, with
AWS's EventBridge shape; signed webhook deliveries with retries; delivery after a kill -9 and a restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from contract.helpers import active_datastore, wait_for
from contract.imaging import run_import, wait_active
from dicom_factory import make_ct_series
from openhi.testing.server import free_port

SECRET = "s3cr3t-for-tests"
READ_ONLY = "COPYING_WITH_READ_ONLY_ACCESS"
ARN = "arn:aws:medical-imaging:us-east-1:123456789012:datastore/"


class Receiver:
    """A webhook receiver on loopback: answers 503 to the first ``fail_first`` POSTs (or to every POST
    while ``failing``), 200 to the others; keeps every request it got."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.failing = False
        self.requests: list[dict[str, Any]] = []  # {"headers", "body", "answered"}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    fail = receiver.failing or len(receiver.requests) < receiver.fail_first
                    status = 503 if fail else 200
                    receiver.requests.append({"headers": dict(self.headers), "body": body, "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", HOOK_PORT), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def delivered(self) -> list[dict[str, Any]]:
        """The events answered 200, by first delivery (duplicates of an at-least-once retry dropped)."""
        seen: dict[int, dict[str, Any]] = {}
        with self.lock:
            for r in self.requests:
                if r["status"] == 200:
                    event = json.loads(r["body"])
                    seen.setdefault(event["seq"], event)
        return [seen[k] for k in sorted(seen)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _webhooks_file(url: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="openhi-hooks-")) / "webhooks.json"
    hook = {"url": url, "secret": SECRET, "retry_base_seconds": 0.2, "timeout_seconds": 1}
    path.write_text(json.dumps([hook]))
    return path


# the deployments' processes read the webhooks file at start (openhi_env): the receiver's port is fixed now
HOOK_PORT = free_port()
HOOKS = pytest.mark.openhi_env(OPENHI_WEBHOOKS=str(_webhooks_file(f"http://127.0.0.1:{HOOK_PORT}/hook")))


@pytest.fixture()
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    """The webhook receiver of :data:`HOOKS`: it fails the first two deliveries (the kill test makes it
    fail every delivery until the crash)."""
    receiver = Receiver(fail_first=2)
    receiver.failing = "kill" in request.node.name
    try:
        yield receiver
    finally:
        receiver.close()


def feed(server: Any, query: str = "", signed: bool = True) -> httpx.Response:
    url = f"{server.endpoint}/openhi/events{query}"
    headers: dict[str, str] = {}
    if signed:
        request = AWSRequest(
            method="GET", url=url, headers={"X-Amz-Content-SHA256": hashlib.sha256(b"").hexdigest()}
        )
        SigV4Auth(Credentials("any", "any"), "medical-imaging", "us-east-1").add_auth(request)
        headers = dict(request.headers.items())
    return httpx.get(url, headers=headers, timeout=30)


def all_events(server: Any) -> list[dict[str, Any]]:
    resp = feed(server, "?after=0&limit=1000")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"events", "next"}
    events: list[dict[str, Any]] = body["events"]
    assert body["next"] == (events[-1]["seq"] if events else 0)
    return events


def check_signature(request: dict[str, Any]) -> None:
    headers = {k.lower(): v for k, v in request["headers"].items()}
    timestamp = headers["x-openhi-timestamp"]
    assert abs(time.time() - int(timestamp)) < 300
    expected = hmac.new(
        SECRET.encode(), timestamp.encode() + b"." + request["body"], hashlib.sha256
    ).hexdigest()
    assert headers["x-openhi-signature"] == f"sha256={expected}"
    event = json.loads(request["body"])
    assert headers["x-openhi-event-seq"] == str(event["seq"])
    assert headers["x-openhi-event-type"] == event["detail-type"]
    assert headers["content-type"] == "application/json"


@HOOKS
def test_scripted_session_feed_and_signed_webhook(openhi_fresh: Any, receiver: Receiver) -> None:
    server = openhi_fresh
    client = server.client()
    ds = active_datastore(client, name="events-test")
    imported = run_import(
        client, server, ds, {f"{i}.dcm": d for i, d in enumerate(make_ct_series(2, rows=8, cols=8, seed=3))}
    )
    assert imported["job"]["jobStatus"] == "COMPLETED"
    job_id = imported["job"]["jobId"]
    set_id = client.search_image_sets(datastoreId=ds)["imageSetsMetadataSummaries"][0]["imageSetId"]
    updates = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "EVENTS"}}}
    update = {"DICOMUpdates": {"updatableAttributes": json.dumps(updates).encode()}}
    client.update_image_set_metadata(
        datastoreId=ds, imageSetId=set_id, latestVersionId="1", updateImageSetMetadataUpdates=update
    )
    wait_active(client, ds, set_id)
    with pytest.raises(client.exceptions.ConflictException):  # a stale version: nothing changes, no event
        client.update_image_set_metadata(
            datastoreId=ds, imageSetId=set_id, latestVersionId="1", updateImageSetMetadataUpdates=update
        )
    copy = client.copy_image_set(
        datastoreId=ds,
        sourceImageSetId=set_id,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "2"}},
    )
    copy_id = copy["destinationImageSetProperties"]["imageSetId"]
    wait_active(client, ds, copy_id)
    wait_active(client, ds, set_id)
    client.delete_image_set(datastoreId=ds, imageSetId=copy_id)
    wait_for(
        lambda: client.get_image_set(datastoreId=ds, imageSetId=copy_id)["imageSetState"],
        lambda s: s == "DELETED",
    )

    events = all_events(server)
    ds_arn, set_arn, copy_arn = ARN + ds, f"{ARN}{ds}/imageset/{set_id}", f"{ARN}{ds}/imageset/{copy_id}"

    def image_set(i: str, state: str, status: str, **more: Any) -> dict[str, Any]:
        return {"imagingVersion": "1.0", "datastoreId": ds, "imageSetId": i, "imageSetState": state,
                "imageSetWorkflowStatus": status, **more}  # fmt: skip

    def job(status: str) -> dict[str, Any]:
        return {"imagingVersion": "1.0", "datastoreId": ds, "jobName": imported["job"]["jobName"], "jobId": job_id,
                "jobStatus": status, "inputS3Uri": imported["job"]["inputS3Uri"],
                "outputS3Uri": imported["job"]["outputS3Uri"]}  # fmt: skip

    def store(status: str) -> dict[str, Any]:
        return {
            "imagingVersion": "1.0",
            "datastoreId": ds,
            "datastoreName": "events-test",
            "datastoreStatus": status,
        }

    expected = [
        ("Data Store Creating", ds_arn, store("CREATING")),
        ("Data Store Created", ds_arn, store("ACTIVE")),
        ("Import Job Submitted", ds_arn, job("SUBMITTED")),
        ("Import Job In Progress", ds_arn, job("IN_PROGRESS")),
        ("Image Set Created", set_arn, image_set(set_id, "ACTIVE", "CREATED", isPrimary=True)),
        ("Import Job Completed", ds_arn, job("COMPLETED")),
        ("Image Set Updating", set_arn, image_set(set_id, "LOCKED", "UPDATING")),
        ("Image Set Updated", set_arn, image_set(set_id, "ACTIVE", "UPDATED")),
        ("Image Set Copying", copy_arn, image_set(copy_id, "LOCKED", "COPYING")),
        (
            "Image Set Copying With Read Only Access",
            set_arn,
            image_set(set_id, "LOCKED", READ_ONLY),
        ),
        ("Image Set Copied", copy_arn, image_set(copy_id, "ACTIVE", "COPIED")),
        ("Image Set Deleting", copy_arn, image_set(copy_id, "LOCKED", "DELETING")),
        ("Image Set Deleted", copy_arn, image_set(copy_id, "DELETED", "DELETED")),
    ]
    assert [(e["detail-type"], e["resources"], e["detail"]) for e in events] == [
        (t, [arn], detail) for t, arn, detail in expected
    ]
    assert [e["seq"] for e in events] == list(range(1, len(expected) + 1))
    for e in events:
        assert set(e) == {"seq", "time", "source", "detail-type", "resources", "detail"}
        assert e["source"] == "aws.medical-imaging"
        assert time.strptime(e["time"], "%Y-%m-%dT%H:%M:%SZ")
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)

    # paging: after/limit walk the same feed; next is where the following page starts
    pages, after = [], 0
    while True:
        body = feed(server, f"?after={after}&limit=4").json()
        if not body["events"]:
            assert body["next"] == after
            break
        pages.append([e["seq"] for e in body["events"]])
        after = body["next"]
    assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13]]

    # the webhook: every event, in order, signed; the first two POSTs failed and were retried
    delivered = wait_for(receiver.delivered, lambda d: len(d) == len(expected), timeout=60, step=0.1)
    assert [d["seq"] for d in delivered] == [e["seq"] for e in events]
    for d, e in zip(delivered, events, strict=True):
        assert (d["detail-type"], d["resources"], d["detail"], d["time"]) == (
            e["detail-type"], e["resources"], e["detail"], e["time"]
        )  # fmt: skip
        assert (d["source"], d["version"], d["account"], d["region"]) == (
            "aws.medical-imaging", "0", "123456789012", "us-east-1"
        )  # fmt: skip
    with receiver.lock:
        requests = list(receiver.requests)
    assert [r["status"] for r in requests[:3]] == [503, 503, 200]
    first = [json.loads(r["body"])["seq"] for r in requests[:3]]
    assert first == [1, 1, 1]  # the same event until it is acknowledged
    attempts = [
        {k.lower(): v for k, v in r["headers"].items()}["x-openhi-delivery-attempt"] for r in requests[:3]
    ]
    assert attempts == ["1", "2", "3"]
    for r in requests:
        check_signature(r)


@HOOKS
def test_a_webhook_gets_the_event_after_a_kill_and_a_restart(openhi_fresh: Any, receiver: Receiver) -> None:
    server = openhi_fresh
    ds = server.client().create_datastore(datastoreName="crash")["datastoreId"]
    wait_for(lambda: len(receiver.requests), lambda n: n >= 1, timeout=30)
    server.kill()  # kill -9: the event is committed, its delivery never acknowledged
    assert receiver.delivered() == []
    receiver.failing = False
    server.restart()
    delivered = wait_for(receiver.delivered, lambda d: len(d) >= 2, timeout=90, step=0.2)
    assert [(d["seq"], d["detail-type"], d["detail"]["datastoreId"]) for d in delivered[:2]] == [
        (1, "Data Store Creating", ds),
        (2, "Data Store Created", ds),
    ]
    for r in receiver.requests:
        check_signature(r)


def test_the_feed_needs_a_signature_and_checks_its_parameters(openhi_server: Any) -> None:
    unsigned = feed(openhi_server, "?after=0", signed=False)
    assert unsigned.status_code in (400, 401, 403), unsigned.text
    assert "events" not in unsigned.json()
    for query in ("?after=-1", "?after=x", "?limit=0", "?limit=1001"):
        bad = feed(openhi_server, query)
        assert bad.status_code == 400, (query, bad.text)
        assert bad.headers["x-amzn-ErrorType"].startswith("ValidationException")
    ok = feed(openhi_server, "?after=0&limit=1")
    assert ok.status_code == 200 and len(ok.json()["events"]) <= 1


@pytest.mark.openhi_env(OPENHI_EVENT_RETENTION_SECONDS="2")
def test_events_older_than_the_retention_leave_the_feed(openhi_fresh: Any) -> None:
    client = openhi_fresh.client()
    old = active_datastore(client, "retention-old")  # Data Store Creating, Data Store Created
    time.sleep(2.5)
    new = active_datastore(client, "retention-new")
    events = wait_for(
        lambda: all_events(openhi_fresh),
        lambda evs: bool(evs) and all(e["detail"]["datastoreId"] == new for e in evs),
        timeout=30,
        step=0.5,
    )
    # numbering goes on after the removed events; the new datastore's Creating may have aged out as well
    # by now, its Created (the feed's last event) stays
    assert [e["seq"] for e in events] in ([3, 4], [4])
    assert events[-1]["detail-type"] == "Data Store Created"
    assert all(e["detail"]["datastoreId"] != old for e in events)
    assert feed(openhi_fresh, "?after=0&limit=1").json()["next"] in (3, 4)
