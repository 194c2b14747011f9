"""The response check of the test clients (openhi.testing.model_check): each rule caught, real responses pass."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from openhi.testing import RunningServer, model_check
from openhi.testing.model_check import ResponseViolation, check_response, java_pattern

pytest_plugins = ["pytester"]

MODEL = botocore.session.get_session().get_service_model("medical-imaging")
DS = "0123456789abcdef0123456789abcdef"
SET = "fedcba9876543210fedcba9876543210"
JSON = {"Content-Type": "application/json"}


def check(op: str, document: Any, status: int = 200, headers: dict[str, str] | None = None) -> list[str]:
    body = json.dumps(document).encode()
    return [str(v) for v in check_response(MODEL.operation_model(op), status, headers or JSON, body)]


def image_set(**extra: Any) -> dict[str, Any]:
    return {"datastoreId": DS, "imageSetId": SET, "versionId": "1", "imageSetState": "ACTIVE", **extra}


def test_a_valid_response_has_no_violation() -> None:
    assert check("GetImageSet", image_set(createdAt=1700000000.5, message="Copy failed: see `dest`")) == []
    assert check("CreateDatastore", {"datastoreId": DS, "datastoreStatus": "CREATING"}) == []


def test_a_message_outside_the_pattern_is_named_with_operation_member_value_and_rule() -> None:
    found = check("GetImageSet", image_set(message="already exists; SOP Instance UIDs must be unique"))
    assert found == [
        "GetImageSet: $.message = 'already exists; SOP Instance UIDs must be unique' violates "
        "pattern: Message matches '[\\\\w -:`]+' in full"
    ]


def test_patterns_are_java_regexes_matched_in_full() -> None:
    message = java_pattern(r"[\w -:`]+")
    assert message.fullmatch("INVALID_REQUEST: a, b (c) 1.2.3")
    assert not message.fullmatch("naïve")  # Java's \w is ASCII
    assert not message.fullmatch("a;b")
    next_token = java_pattern(r"\p{ASCII}{0,8192}")
    assert next_token.fullmatch("opaque+/=token\x7f")
    assert not next_token.fullmatch("é")
    s3_uri = java_pattern(r"s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?")
    assert s3_uri.fullmatch("s3://bucket/any key")
    assert not s3_uri.fullmatch("s3://bucket/a\u2028b")  # Java's . stops at every line terminator
    assert not java_pattern(r"[0-9a-z]{32}").fullmatch(DS + "0")  # full match, not a prefix
    with pytest.raises(ValueError, match="Greek"):
        java_pattern(r"\p{Greek}+")


def test_a_missing_required_member_is_caught() -> None:
    found = check("CreateDatastore", {"datastoreId": DS})
    assert found == [
        "CreateDatastore: $.datastoreStatus = None violates required: "
        "CreateDatastoreResponse.datastoreStatus is missing"
    ]


def test_enum_length_range_and_list_size_are_caught() -> None:
    found = check("CreateDatastore", {"datastoreId": DS[:31], "datastoreStatus": "SLEEPING"})
    assert any("$.datastoreStatus = 'SLEEPING' violates enum: DatastoreStatus" in f for f in found)
    assert any("$.datastoreId" in f and "pattern: DatastoreId" in f for f in found)
    props = {
        "datastoreId": DS,
        "datastoreName": "n" * 257,
        "datastoreStatus": "ACTIVE",
    }
    found = check("GetDatastore", {"datastoreProperties": props})
    assert found == [
        "GetDatastore: $.datastoreProperties.datastoreName = '"
        + "n" * 119  # values are shown as repr, cut at 120 characters
        + "… violates max: DatastoreName length <= 256 (is 257)"
    ]
    summary = {
        "imageSetId": SET,
        "version": 1,
        "DICOMTags": {"DICOMSeriesNumber": 2**31, "DICOMStudyInstanceUID": "1.2.x"},
    }
    found = check("SearchImageSets", {"imageSetsMetadataSummaries": [summary]})
    assert any("DICOMSeriesNumber = 2147483648 violates max: DICOMSeriesNumber value" in f for f in found)
    assert any("DICOMStudyInstanceUID = '1.2.x' violates pattern" in f for f in found)


def test_unknown_members_nulls_types_and_timestamps_are_caught() -> None:
    found = check("GetImageSet", image_set(extra=1, createdAt="2024-01-01T00:00:00Z", message=None))
    assert any("$.extra = 1 violates unknown member" in f for f in found)
    assert any(
        "$.createdAt = '2024-01-01T00:00:00Z' violates type: Date is epoch seconds" in f for f in found
    )
    assert any("$.message = None violates null" in f for f in found)
    found = check("ListTagsForResource", {"tags": {"k": 5}})
    assert found == ["ListTagsForResource: $.tags['k'] = 5 violates type: TagValue is a string"]


def test_errors_are_checked_against_their_exception_shape_and_status() -> None:
    headers = {**JSON, "x-amzn-ErrorType": "ResourceNotFoundException"}
    assert check("GetDatastore", {"message": "no such datastore"}, 404, headers) == []
    found = check("GetDatastore", {"detail": "x"}, 400, headers)
    assert "GetDatastore: <status> = 400 violates HTTP status of ResourceNotFoundException is 404" in found
    assert any("$.detail = 'x' violates unknown member" in f for f in found)
    assert any("$.message = None violates required" in f for f in found)


def test_a_wrong_success_status_and_a_non_json_body_are_caught() -> None:
    op = MODEL.operation_model("ListDatastores")
    found = [str(v) for v in check_response(op, 202, JSON, b"<html>")]
    assert found[0] == "ListDatastores: <status> = 202 violates HTTP status of ListDatastores is 200"
    assert "body is JSON" in found[1]


class _Canned(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def canned() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "medical-imaging",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        config=Config(inject_host_prefix=False, retries={"max_attempts": 1}),
    )


def test_a_hooked_client_call_fails_with_the_violation(canned: str) -> None:
    _Canned.body = json.dumps({"datastoreProperties": {"datastoreId": DS, "datastoreStatus": "ON"}}).encode()
    plain = _client(canned)
    assert plain.get_datastore(datastoreId=DS)["datastoreProperties"]["datastoreStatus"] == "ON"
    hooked = model_check.validate_responses(_client(canned))
    with pytest.raises(ResponseViolation) as exc:
        hooked.get_datastore(datastoreId=DS)
    text = str(exc.value)
    assert "GetDatastore: $.datastoreProperties.datastoreStatus = 'ON' violates enum" in text
    assert "GetDatastore: $.datastoreProperties.datastoreName = None violates required" in text
    # recorded too, so a test that swallows the exception still fails (the plugin takes them per test)
    assert [v.rule.split(":")[0] for v in model_check.take_recorded()] == ["enum", "required"]


def test_real_responses_of_a_running_server_pass(tmp_path: Path) -> None:
    with RunningServer(tmp_path / "data") as server:
        client = server.client(validate_responses=True)
        ds_id = client.create_datastore(datastoreName="model-check", tags={"team": "a"})["datastoreId"]
        props = client.get_datastore(datastoreId=ds_id)["datastoreProperties"]
        assert props["datastoreName"] == "model-check"
        assert [d["datastoreId"] for d in client.list_datastores()["datastoreSummaries"]] == [ds_id]
        assert client.list_tags_for_resource(resourceArn=props["datastoreArn"])["tags"] == {"team": "a"}
        assert client.list_dicom_import_jobs(datastoreId=ds_id)["jobSummaries"] == []
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.get_image_set(datastoreId=ds_id, imageSetId=SET)


def test_the_pytest_switch_fails_a_test_that_swallowed_a_violation(
    pytester: pytest.Pytester, canned: str
) -> None:
    _Canned.body = b'{"datastoreSummaries": [{"datastoreId": "x"}]}'
    pytester.makepyfile(
        f"""
        import pytest
        from openhi.testing import RunningServer

        def test_swallowed(tmp_path):
            server = RunningServer(tmp_path)
            server.port = int({canned!r}.rsplit(":", 1)[1])
            try:
                server.client().list_datastores()
            except Exception:
                pass
        """
    )
    off = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "openhi_validate_responses=false")
    off.assert_outcomes(passed=1)
    on = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--openhi-validate-responses")
    on.assert_outcomes(failed=1)
    on.stdout.fnmatch_lines(
        ["*ListDatastores: $.datastoreSummaries[[]0[]].datastoreId = 'x' violates pattern*"]
    )
