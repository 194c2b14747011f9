"""Hostile input at the wire layer: deep nesting, invalid Unicode and huge numbers are modeled 4xx, and the
error path itself cannot fail on what it echoes."""

from __future__ import annotations

import base64
import json

import pytest
from wire_requests import rejected as _rejects
from wire_requests import wire_request as _request

from openhi.awsapi.json_guard import MAX_JSON_DEPTH, check_embedded_json, json_depth, safe_text
from openhi.awsapi.serializer import serialize_error, serialize_output
from openhi.awsapi.service import load_service_model
from openhi.core.errors import ConflictError, NotFoundError
from openhi.handlers.convert import MAX_VERSION, NO_VERSION, VersionIds, version_number

DS = "a" * 32
IS = "b" * 32
ARN = f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{DS}"
TAGS_PATH = "/tags/" + ARN.replace(":", "%3A").replace("/", "%2F")
UPDATE_PATH = f"/datastore/{DS}/imageSet/{IS}/updateImageSetMetadata"
COPY_PATH = f"/datastore/{DS}/imageSet/{IS}/copyImageSet"
SURROGATE = b'"\\ud800"'  # JSON text of a lone surrogate: json.loads accepts it


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


# --------------------------------------------------------------------------- nesting


def test_json_depth_counts_only_brackets_outside_strings() -> None:
    assert json_depth(b"{}") == 1
    assert json_depth(b'{"a": [[{"b": 1}]]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{", "b": "\\"[[["}') == 1
    assert json_depth(b"[" * 1000 + b"]" * 1000) == 1000
    assert json_depth(b'"no brackets"') == 0


def test_a_body_of_a_thousand_brackets_is_a_validation_error() -> None:
    message = _rejects("POST", "/datastore", body=b"[" * 1000 + b"]" * 1000)
    assert f"limit of {MAX_JSON_DEPTH} levels" in message


def test_nesting_inside_a_member_is_a_validation_error() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    message = _rejects("POST", "/datastore", body=b'{"clientToken": "t", "tags": {"k": ' + deep + b"}}")
    assert f"limit of {MAX_JSON_DEPTH} levels" in message
    unterminated = b'{"clientToken": ' + b"{" * 2000
    assert f"limit of {MAX_JSON_DEPTH}" in _rejects("POST", "/datastore", body=unterminated)


def test_nesting_at_the_limit_reaches_the_type_checks() -> None:
    at_limit = b'{"tags": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    message = _rejects("POST", "/datastore", body=at_limit)
    assert "expected object" in message and "levels" not in message


def test_payload_nesting_is_a_validation_error() -> None:
    path = f"/datastore/{DS}/imageSet/{IS}/getImageFrame"
    message = _rejects("POST", path, body=b'{"imageFrameId": ' + b"[" * 3000 + b"]" * 3000 + b"}")
    assert f"limit of {MAX_JSON_DEPTH} levels" in message


def test_nesting_inside_updatable_attributes_is_a_validation_error() -> None:
    doc = '{"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": ' + "[" * 1000 + "]" * 1000 + "}}}"
    body = {"DICOMUpdates": {"updatableAttributes": _b64(doc)}}
    message = _rejects("POST", UPDATE_PATH, query=b"latestVersion=1", body=json.dumps(body).encode())
    assert "updatableAttributes" in message and f"limit of {MAX_JSON_DEPTH} levels" in message


def test_nesting_inside_copiable_attributes_is_a_validation_error() -> None:
    doc = '{"SchemaVersion": "1.1", "Study": ' + '{"a":' * 1000 + "{}" + "}" * 1000 + "}"
    body = {"sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {"copiableAttributes": doc}}}
    message = _rejects("POST", COPY_PATH, body=json.dumps(body).encode())
    assert "copiableAttributes" in message and f"limit of {MAX_JSON_DEPTH} levels" in message


# --------------------------------------------------------------------------- Unicode


@pytest.mark.parametrize(
    ("method", "path", "body", "member"),
    [
        ("POST", TAGS_PATH, b'{"tags": {"k": ' + SURROGATE + b"}}", "tags.k"),
        ("POST", TAGS_PATH, b'{"tags": {' + SURROGATE + b': "v"}}', "tags key"),
        ("POST", "/datastore", b'{"clientToken": "t", "datastoreName": "a\\udfffb"}', "datastoreName"),
        (
            "POST",
            f"/datastore/{DS}/imageSet/{IS}/getImageFrame",
            b'{"imageFrameId": ' + SURROGATE + b"}",
            "imageFrameInformation.imageFrameId",
        ),
        (
            "POST",
            f"/datastore/{DS}/searchImageSets",
            b'{"filters": [{"values": [{"DICOMPatientId": ' + SURROGATE + b'}], "operator": "EQUAL"}]}',
            "searchCriteria.filters[0].values[0].DICOMPatientId",
        ),
    ],
)
def test_lone_surrogates_are_validation_errors(method: str, path: str, body: bytes, member: str) -> None:
    message = _rejects(method, path, body=body)
    assert member in message and "not valid Unicode" in message
    assert "\\ud800" in message or "\\udfff" in message  # named, escaped


def test_an_unknown_member_named_with_a_surrogate_is_echoed_escaped() -> None:
    message = _rejects("POST", "/datastore", body=b'{"clientToken": "t", "x\\ud800": 1}')
    assert "Unknown parameter" in message and "x\\ud800" in message


def test_paired_surrogates_emoji_and_rtl_are_text() -> None:
    body = '{"tags": {"k": "\\ud83d\\ude00 \u202eabc \U0001f600 \\u0085"}}'.encode()
    params = _request("POST", TAGS_PATH, body=body)
    assert params["tags"]["k"] == "\U0001f600 \u202eabc \U0001f600 \x85"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", TAGS_PATH, b'{"tags": {"k": "a\\u0000b"}}'),
        ("POST", TAGS_PATH, b'{"tags": {"k\\u0000": "v"}}'),
        (
            "POST",
            f"/datastore/{DS}/searchImageSets",
            b'{"filters": [{"values": [{"DICOMPatientId": "\\u0000"}], "operator": "EQUAL"}]}',
        ),
        (
            "POST",
            UPDATE_PATH,
            json.dumps(
                {
                    "DICOMUpdates": {
                        "updatableAttributes": _b64(
                            '{"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "a\\u0000"}}}'
                        )
                    }
                }
            ).encode(),
        ),
    ],
)
def test_nul_characters_are_validation_errors(method: str, path: str, body: bytes) -> None:
    query = b"latestVersion=1" if path == UPDATE_PATH else b""
    message = _rejects(method, path, query=query, body=body)
    assert "U+0000 is not allowed" in message


def test_surrogate_inside_updatable_attributes_is_a_validation_error() -> None:
    doc = '{"SchemaVersion": 1.1, "Patient": {"DICOM": {"PatientName": "\\ud800"}}}'
    body = {"DICOMUpdates": {"updatableAttributes": _b64(doc)}}
    message = _rejects("POST", UPDATE_PATH, query=b"latestVersion=1", body=json.dumps(body).encode())
    assert "updatableAttributes" in message and "\\ud800" in message


def test_surrogate_key_inside_copiable_attributes_is_a_validation_error() -> None:
    doc = '{"SchemaVersion": "1.1", "Study": {"Series": {"\\udc00": {}}}}'
    body = {"sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {"copiableAttributes": doc}}}
    message = _rejects("POST", COPY_PATH, body=json.dumps(body).encode())
    assert "copiableAttributes" in message and "\\udc00" in message


def test_embedded_text_that_is_not_json_is_left_to_the_operation() -> None:
    check_embedded_json(b"not json {", "updatableAttributes")  # the core words that error
    check_embedded_json(b"\xff\xfe", "updatableAttributes")


def test_non_utf8_body_is_a_validation_error() -> None:
    message = _rejects("POST", "/datastore", body=b'{"clientToken": "\xff"}')
    assert "not valid JSON" in message
    # json.loads decodes bytes with "surrogatepass": an encoded surrogate is caught as one
    message = _rejects("POST", "/datastore", body=b'{"clientToken": "\xed\xa0\x80"}')
    assert "clientToken" in message and "\\ud800" in message


def test_safe_text_escapes_only_what_utf8_cannot_encode() -> None:
    assert safe_text("plain") == "plain"
    assert safe_text("é\U0001f600") == "é\U0001f600"
    assert safe_text("a\ud800b") == "a\\ud800b"


def test_serialize_error_never_fails_on_a_surrogate() -> None:
    response = serialize_error("ValidationException", "bad value '\ud800'")
    assert response.status == 400
    assert ("x-amzn-ErrorType", "ValidationException") in response.headers
    assert isinstance(response.body, bytes)
    assert json.loads(response.body)["message"] == "bad value '\\ud800'"


def test_serialize_output_with_a_surrogate_sends_json_escapes() -> None:
    op = load_service_model().operation_model("ListTagsForResource")
    response = serialize_output(op, {"tags": {"k": "\ud800"}})
    assert isinstance(response.body, bytes)
    assert response.body.isascii()
    assert json.loads(response.body) == {"tags": {"k": "\ud800"}}


# --------------------------------------------------------------------------- numbers


def test_version_number_range() -> None:
    assert version_number("1") == 1
    assert version_number("0000042") == 42
    assert version_number(str(MAX_VERSION)) == MAX_VERSION
    assert version_number(str(MAX_VERSION + 1)) is None
    assert version_number("9" * 4300) is None  # past Python's int conversion limit: no ValueError
    assert version_number("0" * 5000 + "7") == 7


def test_out_of_range_version_ids_become_no_version_and_are_explained() -> None:
    versions = VersionIds()
    assert versions.number("latestVersionId", "9" * 4300) == NO_VERSION
    assert versions.optional("revertToVersionId", None) is None
    assert versions.text("versionId", "12") == "12"
    with pytest.raises(ConflictError) as info, versions.explained():
        raise ConflictError("ImageSet x has latest version 3; the request named 0.")
    assert "latestVersionId 999999999999999999999999... (4300 digits)" in info.value.message
    with pytest.raises(NotFoundError), VersionIds().explained():
        raise NotFoundError("unchanged when every id was in range")


@pytest.mark.parametrize("text", ["1_0", " 5", "\u0665", "5" * 5000, "0x10", "1e3"])
def test_query_integers_are_plain_decimal(text: str) -> None:
    query = b"maxResults=" + text.encode("utf-8").replace(b" ", b"%20")
    query = query.replace("\u0665".encode(), b"%D9%A5")
    message = _rejects("GET", "/datastore", query=query)
    assert "maxResults" in message


@pytest.mark.parametrize(
    "value",
    [b"1" + b"0" * 4000, b"-" + b"9" * 300, b"1e400", b"NaN", b"Infinity", b"1" + b"0" * 5000],
)
def test_huge_and_special_numbers_in_the_body(value: bytes) -> None:
    body = b'{"maxResults": ' + value + b"}"
    message = _rejects("POST", f"/datastore/{DS}/searchImageSets", body=body)
    assert "maxResults" in message or "not valid JSON" in message
    assert len(message) < 1000


@pytest.mark.parametrize("value", [b"1e400", b"-1e400", b"NaN", b'"nan"', b'"inf"', b"1" + b"0" * 400])
def test_out_of_range_timestamps_are_validation_errors(value: bytes) -> None:
    body = b'{"filters": [{"values": [{"createdAt": ' + value + b'}], "operator": "EQUAL"}]}'
    message = _rejects("POST", f"/datastore/{DS}/searchImageSets", body=body)
    assert "createdAt" in message


def test_a_huge_integer_is_described_not_echoed() -> None:
    message = _rejects("GET", "/datastore", query=b"maxResults=1" + b"0" * 500)
    assert "Value of 501 digits at 'maxResults'" in message and "less than or equal to 50" in message
