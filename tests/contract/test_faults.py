"""Contract tests: fault injection through ``/openhi/faults`` and ``openhi_server.inject(...)`` — boto3
sees injected errors exactly as real ones, a dropped connection as a connection error, and nothing
changes on the server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from contract.test_updates import Lab
from openhi.testing import RunningServer

ONCE = Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1})
RETRYING = Config(inject_host_prefix=False, retries={"mode": "standard", "max_attempts": 10})
UNKNOWN = "0" * 32


@pytest.fixture()
def server(openhi_server: Any) -> Iterator[Any]:
    """The session's server, with no fault rules before and after the test."""
    openhi_server.faults().clear()
    yield openhi_server
    openhi_server.faults().clear()


def _wire(exc: ClientError) -> tuple[int, str, list[str], str | None]:
    meta = exc.response["ResponseMetadata"]
    headers = meta["HTTPHeaders"]
    names = sorted(k for k in headers if k not in ("date",))
    return meta["HTTPStatusCode"], headers["x-amzn-errortype"], names, headers.get("content-type")


def test_an_injected_error_is_parsed_by_boto3_exactly_as_a_real_one(server: Any) -> None:
    client = server.client(config=ONCE)
    with pytest.raises(client.exceptions.ResourceNotFoundException) as real:
        client.get_datastore(datastoreId=UNKNOWN)
    ds = client.list_datastores()["datastoreSummaries"]
    existing = ds[0]["datastoreId"] if ds else client.create_datastore(datastoreName="faults")["datastoreId"]
    rule = server.inject("GetDatastore", error="ResourceNotFoundException", message="Datastore not found")
    with rule, pytest.raises(client.exceptions.ResourceNotFoundException) as injected:
        client.get_datastore(datastoreId=existing)
    assert _wire(injected.value) == _wire(real.value)
    assert injected.value.response["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Datastore not found",
    }
    assert set(injected.value.response) == set(real.value.response)


def test_every_third_call_is_throttled_and_standard_retries_hide_it(server: Any) -> None:
    client = server.client(config=ONCE)
    with server.inject("ListDatastores", error="ThrottlingException", every=3) as rule:
        outcomes = []
        for _ in range(6):
            try:
                client.list_datastores()
                outcomes.append("ok")
            except client.exceptions.ThrottlingException as exc:
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 429
                outcomes.append("throttled")
        assert outcomes == ["ok", "ok", "throttled"] * 2
        assert rule.stats() == {"calls": 6, "fired": 2}
        retrying = server.client(config=RETRYING)
        answers = [retrying.list_datastores() for _ in range(3)]
        assert sum(a["ResponseMetadata"]["RetryAttempts"] for a in answers) == 1


def test_a_write_that_gets_an_injected_error_changes_nothing(server: Any) -> None:
    lab = Lab(server, "faults")
    set_id = lab.import_series(1, seed=77, patient="FAULT-1")
    conflict = server.inject("DeleteImageSet", error="ConflictException")
    with conflict, pytest.raises(lab.client.exceptions.ConflictException):
        lab.client.delete_image_set(datastoreId=lab.ds, imageSetId=set_id)
    after = lab.get(set_id)
    assert (after["imageSetState"], after["versionId"]) == ("ACTIVE", "1")
    assert [v["versionId"] for v in lab.versions(set_id)] == ["1"]


def test_a_dropped_connection_is_a_connection_error(server: Any) -> None:
    client = server.client(config=ONCE)
    with server.inject("ListDatastores", drop=True), pytest.raises(ConnectionClosedError):
        client.list_datastores()
    url = f"{server.endpoint}/datastore"
    with server.inject("ListDatastores", drop=True, times=1), pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url, headers=_signed("GET", url), timeout=10)
    assert "datastoreSummaries" in client.list_datastores()  # the rule rests: answered again


def test_a_delay_holds_the_answer(server: Any) -> None:
    client = server.client(config=ONCE)
    with server.inject("ListDatastores", delay=1.0, times=1):
        started = time.monotonic()
        assert "datastoreSummaries" in client.list_datastores()
        assert time.monotonic() - started >= 1.0


def test_dicomweb_routes_can_be_faulted_too(server: Any) -> None:
    path = f"{server.endpoint}/datastore/{UNKNOWN}/studies"
    with server.inject("SearchDICOMStudies", error="ThrottlingException"), httpx.Client() as http:
        response = http.get(path)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-amzn-errortype"] == "ThrottlingException"
    assert response.json() == {"message": "Rate exceeded"}


def test_the_rules_route_checks_rules_and_needs_a_signature(server: Any) -> None:
    url = f"{server.endpoint}/openhi/faults"
    assert httpx.get(url).status_code == 403  # openhi's own routes are always signed
    bad = json.dumps([{"operation": "CreateDatastore", "error": "BadRequestException"}]).encode()
    response = httpx.put(url, content=bad, headers=_signed("PUT", url, bad))
    assert response.status_code == 400
    assert response.json()["code"] == "ValidationException"
    assert "does not declare 'BadRequestException'" in response.json()["message"]
    good = json.dumps(
        {"seed": 3, "rules": [{"operation": "Get*", "delay": 0.01, "probability": 0.5}]}
    ).encode()
    # one keep-alive connection reaches one API process: rules are kept per process (docs/clients.md)
    with httpx.Client() as http:
        response = http.put(url, content=good, headers=_signed("PUT", url, good))
        assert response.status_code == 200 and response.json()["seed"] == 3
        listed = http.get(url, headers=_signed("GET", url)).json()
        assert listed["rules"] == [
            {"operation": "Get*", "delay": 0.01, "probability": 0.5, "calls": 0, "fired": 0}
        ]
        cleared = http.delete(url, headers=_signed("DELETE", url)).json()
        assert cleared["rules"] == []


@pytest.mark.embedded_only("starts a server of its own")
def test_rules_given_at_start_up(tmp_path: Path) -> None:
    rules = tmp_path / "faults.json"
    rules.write_text(json.dumps([{"operation": "CreateDatastore", "error": "ServiceQuotaExceededException"}]))
    with RunningServer(tmp_path / "data", extra_args=["--faults", str(rules)]) as started:
        client = started.client(config=ONCE)
        with pytest.raises(client.exceptions.ServiceQuotaExceededException) as info:
            client.create_datastore(datastoreName="never")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
        assert client.list_datastores()["datastoreSummaries"] == []  # nothing was created
        started.faults().clear()
        assert client.create_datastore(datastoreName="now")["datastoreStatus"] == "CREATING"


def _signed(method: str, url: str, body: bytes = b"") -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(Credentials("test", "test"), "medical-imaging", "us-east-1").add_auth(request)
    return dict(request.headers.items())
