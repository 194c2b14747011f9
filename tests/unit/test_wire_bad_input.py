"""Malformed or invalid requests are rejected with a ValidationError that names the offending member."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.model import ServiceModel
from wire_requests import ROUTER
from wire_requests import rejected as _rejects
from wire_requests import wire_request as _request

from openhi.awsapi.router import RouteNotFound, Router
from openhi.awsapi.service import load_service_model
from openhi.awsapi.validate import compiled_pattern

DS = "a" * 32
IS = "b" * 32
ARN = f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{DS}/imageset/{IS}"
ENCODED_ARN = ARN.replace(":", "%3A").replace("/", "%2F")


def test_malformed_json_body() -> None:
    message = _rejects("POST", "/datastore", body=b'{"clientToken": "abc",')
    assert "not valid JSON" in message


def test_body_that_is_a_json_array() -> None:
    message = _rejects("POST", "/datastore", body=b'[{"clientToken": "abc"}]')
    assert "request body" in message and "JSON object" in message


def test_payload_that_is_a_json_array() -> None:
    path = f"/datastore/{DS}/imageSet/{IS}/getImageFrame"
    message = _rejects("POST", path, body=b'["x"]')
    assert "imageFrameInformation" in message and "object" in message


@pytest.mark.parametrize(
    ("body", "member", "expected"),
    [
        ({"clientToken": 5}, "clientToken", "string"),
        ({"clientToken": "t", "tags": ["a"]}, "tags", "object"),
        ({"clientToken": "t", "tags": {"k": 1}}, "tags.k", "string"),
        ({"clientToken": "t", "datastoreName": True}, "datastoreName", "string"),
    ],
)
def test_wrong_json_types(body: dict[str, Any], member: str, expected: str) -> None:
    message = _rejects("POST", "/datastore", body=json.dumps(body).encode())
    assert f"parameter {member}:" in message
    assert f"expected {expected}" in message


def test_wrong_nested_types_name_the_path() -> None:
    path = f"/datastore/{DS}/searchImageSets"
    body = {"filters": [{"values": [{"createdAt": [1]}], "operator": "EQUAL"}]}
    message = _rejects("POST", path, body=json.dumps(body).encode())
    assert "searchCriteria.filters[0].values[0].createdAt" in message

    body2: dict[str, Any] = {"filters": {"values": []}}
    message = _rejects("POST", path, body=json.dumps(body2).encode())
    assert "searchCriteria.filters" in message and "expected array" in message


def test_non_integer_query_value() -> None:
    message = _rejects("GET", "/datastore", query=b"maxResults=ten")
    assert "maxResults" in message and "integer" in message


@pytest.mark.parametrize(
    ("value", "bound"), [(0, "greater than or equal to 1"), (51, "less than or equal to 50")]
)
def test_max_results_out_of_range(value: int, bound: str) -> None:
    message = _rejects("GET", "/datastore", query=f"maxResults={value}".encode())
    assert message == (
        f"1 validation error detected: Value '{value}' at 'maxResults' failed to satisfy constraint: "
        f"Member must have value {bound}"
    )


def test_bad_datastore_id_pattern() -> None:
    message = _rejects("GET", "/datastore/NOT-AN-ID")
    assert "at 'datastoreId'" in message and "regular expression pattern: [0-9a-z]{32}" in message


def test_enum_violation_in_query() -> None:
    message = _rejects("GET", "/datastore", query=b"datastoreStatus=SLEEPING")
    assert "at 'datastoreStatus'" in message and "enum value set" in message


def test_unknown_query_member() -> None:
    message = _rejects("GET", "/datastore", query=b"maxResults=5&colour=blue")
    assert "colour" in message


def test_unknown_body_member() -> None:
    message = _rejects("POST", "/datastore", body=b'{"clientToken": "t", "datastoreColour": "blue"}')
    assert "datastoreColour" in message


def test_uri_member_in_body_is_unknown() -> None:
    path = f"/startDICOMImportJob/datastore/{DS}"
    message = _rejects("POST", path, body=json.dumps({"datastoreId": DS}).encode())
    assert "datastoreId" in message


def test_union_with_two_members() -> None:
    path = f"/datastore/{DS}/imageSet/{IS}/updateImageSetMetadata"
    body = {"DICOMUpdates": {"updatableAttributes": "e30="}, "revertToVersionId": "1"}
    message = _rejects("POST", path, query=b"latestVersion=2", body=json.dumps(body).encode())
    assert "updateImageSetMetadataUpdates" in message
    assert "exactly one" in message and "DICOMUpdates" in message and "revertToVersionId" in message


def test_union_with_no_member() -> None:
    path = f"/datastore/{DS}/imageSet/{IS}/updateImageSetMetadata"
    message = _rejects("POST", path, query=b"latestVersion=2", body=b"{}")
    assert "updateImageSetMetadataUpdates" in message and "exactly one" in message


def test_missing_required_members() -> None:
    message = _rejects("POST", f"/startDICOMImportJob/datastore/{DS}", body=b'{"clientToken": "t"}')
    assert message.startswith("3 validation errors detected:")
    for member in ("dataAccessRoleArn", "inputS3Uri", "outputS3Uri"):
        assert f"Value null at '{member}' failed to satisfy constraint: Member must not be null" in message


def test_missing_required_query_member_and_payload() -> None:
    path = f"/datastore/{DS}/imageSet/{IS}/updateImageSetMetadata"
    message = _rejects("POST", path)
    assert "'latestVersionId'" in message and "'updateImageSetMetadataUpdates'" in message


def test_missing_required_nested_member() -> None:
    path = f"/datastore/{DS}/imageSet/{IS}/copyImageSet"
    message = _rejects("POST", path, body=b'{"sourceImageSet": {}}')
    assert "copyImageSetInformation.sourceImageSet.latestVersionId" in message


def test_list_length_and_sensitive_value_is_not_echoed() -> None:
    path = f"/datastore/{DS}/searchImageSets"
    values = [{"DICOMPatientId": "secret-patient"}]
    body = {"filters": [{"values": values, "operator": "EQUAL"}] * 3}
    message = _rejects("POST", path, body=json.dumps(body).encode())
    assert "at 'searchCriteria.filters'" in message and "length less than or equal to 2" in message
    assert "secret-patient" not in message


def test_blob_must_be_base64_and_within_bounds() -> None:
    path = f"/datastore/{DS}/imageSet/{IS}/updateImageSetMetadata"
    bad = {"DICOMUpdates": {"updatableAttributes": "not base64!"}}
    message = _rejects("POST", path, query=b"latestVersion=1", body=json.dumps(bad).encode())
    assert "updateImageSetMetadataUpdates.DICOMUpdates.updatableAttributes" in message and "base64" in message

    empty = {"DICOMUpdates": {"updatableAttributes": ""}}
    message = _rejects("POST", path, query=b"latestVersion=1", body=json.dumps(empty).encode())
    assert "updateImageSetMetadataUpdates.DICOMUpdates.updatableAttributes" in message
    assert "length greater than or equal to 1" in message


def test_boolean_query_values() -> None:
    path = f"/datastore/{DS}/imageSet/{IS}/copyImageSet"
    body = json.dumps({"sourceImageSet": {"latestVersionId": "1"}}).encode()
    params = _request("POST", path, query=b"force=true&promoteToPrimary=false", body=body)
    assert params["force"] is True and params["promoteToPrimary"] is False
    message = _rejects("POST", path, query=b"force=yes", body=body)
    assert "force" in message


def test_tags_arn_is_percent_encoded_in_path_and_decoded() -> None:
    op, uri_params = ROUTER.match("GET", f"/tags/{ENCODED_ARN}")
    assert op.name == "ListTagsForResource"
    assert uri_params == {"resourceArn": ARN}
    params = _request("DELETE", f"/tags/{ENCODED_ARN}", query=b"tagKeys=a&tagKeys=b%3Ac")
    assert params == {"resourceArn": ARN, "tagKeys": ["a", "b:c"]}


def test_bad_arn_in_tags_path() -> None:
    message = _rejects("GET", "/tags/arn%3Aaws%3As3%3A%3A%3Abucket")
    assert "at 'resourceArn'" in message


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nothing/here", 404),
        ("GET", f"/datastore/{DS}/extra", 404),
        ("PUT", f"/datastore/{DS}", 405),
        ("GET", f"/datastore/{DS}/imageSet/{IS}/getImageSet", 405),
    ],
)
def test_unknown_route(method: str, path: str, status: int) -> None:
    with pytest.raises(RouteNotFound) as info:
        ROUTER.match(method, path)
    assert info.value.status == status
    assert method in str(info.value) and path in str(info.value)


def test_iso_timestamps_and_presign_query_are_accepted() -> None:
    path = f"/datastore/{DS}/searchImageSets"
    body = {"filters": [{"values": [{"createdAt": "1985-04-12T23:20:50.52Z"}], "operator": "EQUAL"}]}
    params = _request("POST", path, query=b"X-Amz-Date=20240101T000000Z", body=json.dumps(body).encode())
    value = params["searchCriteria"]["filters"][0]["values"][0]["createdAt"]
    assert value == datetime(1985, 4, 12, 23, 20, 50, 520000, tzinfo=UTC)
    assert "X-Amz-Date" not in params


def test_empty_body_without_required_body_members() -> None:
    assert _request("POST", f"/datastore/{DS}/searchImageSets") == {"datastoreId": DS}
    assert _request("GET", "/datastore") == {}


def test_pathological_pattern_is_linear() -> None:
    shape = load_service_model().shape_for("MetadataFilePath")
    regex = compiled_pattern(shape.metadata["pattern"])
    assert regex.fullmatch("a" * 1000 + "\x01") is None  # would take hours with the literal pattern
    assert regex.fullmatch("dir/a b/c.json") is not None
    assert regex.fullmatch(" leading") is None and regex.fullmatch("trailing ") is None


def test_router_greedy_labels_and_literal_query_in_request_uri() -> None:
    model = ServiceModel(
        {
            "metadata": {"protocol": "rest-json", "apiVersion": "2020-01-01", "endpointPrefix": "x"},
            "operations": {
                "GetObject": {
                    "name": "GetObject",
                    "http": {"method": "GET", "requestUri": "/b/{Bucket}/{Key+}"},
                },
                "ListParts": {
                    "name": "ListParts",
                    "http": {"method": "GET", "requestUri": "/b/{Bucket}/{Key+}/parts?x-id=ListParts"},
                },
            },
            "shapes": {},
        }
    )
    router = Router(model)
    op, params = router.match("GET", "/b/my%20bucket/a/b%2Fc.txt")
    assert (op.name, params) == ("GetObject", {"Bucket": "my bucket", "Key": "a/b/c.txt"})
    op, params = router.match("GET", "/b/bucket/dir/key/parts")
    assert (op.name, params) == ("ListParts", {"Bucket": "bucket", "Key": "dir/key"})
    with pytest.raises(RouteNotFound) as info:
        router.match("GET", "/b/bucket")
    assert info.value.status == 404 and "/b/bucket" in str(info.value)


def test_null_member_is_absent_but_null_list_item_is_rejected() -> None:
    body = b'{"clientToken": "t", "datastoreName": null}'
    assert _request("POST", "/datastore", body=body) == {"clientToken": "t"}

    job = {
        "clientToken": "t",
        "dataAccessRoleArn": "arn:aws:iam::123456789012:role/ImportJobRole",
        "inputS3Uri": "s3://in-bucket/",
        "outputS3Uri": "s3://out-bucket/",
        "importConfiguration": {"dicomJsonMetadataImportConfiguration": {"dicomMetadataMappings": [None]}},
    }
    message = _rejects("POST", f"/startDICOMImportJob/datastore/{DS}", body=json.dumps(job).encode())
    assert "importConfiguration.dicomJsonMetadataImportConfiguration.dicomMetadataMappings[0]" in message
    assert "got null" in message
