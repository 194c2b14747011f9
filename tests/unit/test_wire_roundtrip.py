"""Every modeled operation survives botocore → openhi (requests) and openhi → botocore (responses, errors)."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from botocore.awsrequest import HeadersDict
from botocore.model import OperationModel
from botocore.parsers import create_parser
from botocore.response import StreamingBody
from botocore.serialize import create_serializer
from botocore.utils import percent_encode_sequence
from shape_values import STREAM, generate, union_sizes

from openhi.awsapi.parser import parse_request
from openhi.awsapi.router import RouteNotFound, Router
from openhi.awsapi.serializer import (
    WireResponse,
    serialize_error,
    serialize_not_implemented,
    serialize_output,
    serialize_route_not_found,
)
from openhi.awsapi.service import load_service_model
from openhi.awsapi.validate import validate_params

MODEL = load_service_model()
ROUTER = Router()
OPERATIONS = sorted(MODEL.operation_names)
ERROR_SHAPES = sorted(
    name for name in MODEL.shape_names if MODEL.shape_for(name).metadata.get("exception", False)
)


def _variants(shape_getter: str) -> list[tuple[str, int]]:
    cases: list[tuple[str, int]] = []
    for name in OPERATIONS:
        shape = getattr(MODEL.operation_model(name), shape_getter)
        count = union_sizes(shape) if shape is not None else 1
        cases.extend((name, v) for v in range(count))
    return cases


def _normalise(value: Any) -> Any:
    """Make parsed values comparable: aware datetimes → UTC epoch, nested containers recursively."""
    if isinstance(value, datetime):
        return round(value.timestamp(), 3)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def _to_raw_request(
    op: OperationModel, params: dict[str, Any], botocore_query: bool = False
) -> tuple[str, str, bytes, dict[str, str], bytes]:
    serializer = create_serializer("rest-json", include_validation=True)
    request = serializer.serialize_to_request(params, op)
    # url_path is already percent-encoded by botocore, exactly as it goes on the wire.
    raw_path = urlsplit(request["url_path"]).path
    if botocore_query:  # what botocore's HTTP layer puts on the wire (%20, not +)
        query = percent_encode_sequence(request["query_string"]).encode("ascii")
    else:
        query = urlencode(request["query_string"], doseq=True).encode("ascii")
    headers = {k.lower(): v for k, v in request["headers"].items()}
    body = request["body"]
    if isinstance(body, str):
        body = body.encode("utf-8")
    return request["method"], raw_path, query, headers, body


@pytest.mark.parametrize("botocore_query", [False, True], ids=["urlencode", "botocore-encoding"])
@pytest.mark.parametrize(("op_name", "variant"), _variants("input_shape"))
def test_request_roundtrip(op_name: str, variant: int, botocore_query: bool) -> None:
    op = MODEL.operation_model(op_name)
    params = generate(op.input_shape, variant)
    assert params, "the generator must produce input"

    method, raw_path, query, headers, body = _to_raw_request(op, params, botocore_query)
    matched, uri_params = ROUTER.match(method, raw_path)
    assert matched.name == op_name

    parsed = parse_request(matched, uri_params, query, headers, body)
    validate_params(matched.input_shape, parsed)
    assert _normalise(parsed) == _normalise(params)
    # types survive, not just values
    for name, value in params.items():
        assert type(parsed[name]) is type(value), name


def _botocore_parse(op: OperationModel, wire: WireResponse) -> dict[str, Any]:
    headers = dict(wire.headers)
    body = wire.body if isinstance(wire.body, bytes) else b"".join(wire.body)
    payload = op.output_shape.serialization.get("payload") if op.output_shape is not None else None
    streaming = payload is not None and op.output_shape.members[payload].serialization.get("streaming")
    response = {
        "status_code": wire.status,
        "headers": HeadersDict(headers),
        "body": StreamingBody(io.BytesIO(body), len(body)) if streaming else body,
    }
    parsed: dict[str, Any] = create_parser("rest-json").parse(response, op.output_shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


@pytest.mark.parametrize(("op_name", "variant"), _variants("output_shape"))
def test_response_roundtrip(op_name: str, variant: int) -> None:
    op = MODEL.operation_model(op_name)
    output = generate(op.output_shape, variant)
    wire = serialize_output(op, output)
    assert wire.status == op.http.get("responseCode", 200)

    parsed = _botocore_parse(op, wire)
    for name, value in parsed.items():
        if isinstance(value, StreamingBody):
            parsed[name] = value.read()
    assert _normalise(parsed) == _normalise(output)
    assert b"null" not in (wire.body if isinstance(wire.body, bytes) else b"")


def test_streaming_payload_is_passed_through_untouched() -> None:
    op = MODEL.operation_model("GetImageFrame")
    chunks = iter([STREAM[:10], STREAM[10:]])
    wire = serialize_output(op, {"imageFrameBlob": chunks, "contentType": "application/octet-stream"})
    assert wire.body is chunks
    assert ("Content-Type", "application/octet-stream") in wire.headers

    meta = MODEL.operation_model("GetImageSetMetadata")
    wire = serialize_output(
        meta,
        {"imageSetMetadataBlob": b"\x1f\x8b", "contentType": "application/json", "contentEncoding": "gzip"},
    )
    assert wire.body == b"\x1f\x8b"
    assert dict(wire.headers) == {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def test_json_body_omits_none_and_keeps_model_spelling() -> None:
    op = MODEL.operation_model("ListImageSetVersions")
    output = {
        "imageSetPropertiesList": [
            {
                "imageSetId": "b" * 32,
                "versionId": "1",
                "imageSetState": "ACTIVE",
                "ImageSetWorkflowStatus": "CREATED",
                "message": None,
                "createdAt": datetime.fromtimestamp(1680042257.9084, tz=datetime.now().astimezone().tzinfo),
            }
        ],
        "nextToken": None,
    }
    wire = serialize_output(op, output)
    assert wire.body == (
        b'{"imageSetPropertiesList":[{"imageSetId":"' + b"b" * 32 + b'","versionId":"1",'
        b'"imageSetState":"ACTIVE","ImageSetWorkflowStatus":"CREATED","createdAt":1680042257.908}]}'
    )
    assert ("Content-Type", "application/json") in wire.headers


def test_empty_output_is_empty_json_object() -> None:
    wire = serialize_output(MODEL.operation_model("TagResource"), {})
    assert (wire.status, wire.body) == (200, b"{}")


@pytest.mark.parametrize("code", ERROR_SHAPES)
def test_error_roundtrip(code: str) -> None:
    status = MODEL.shape_for(code).metadata["error"]["httpStatusCode"]
    wire = serialize_error(code, f"something about {code} went wrong")
    assert wire.status == status
    assert ("x-amzn-ErrorType", code) in wire.headers
    parsed = _botocore_parse(MODEL.operation_model("GetImageSet"), wire)
    assert parsed["Error"]["Code"] == code
    assert parsed["Error"]["Message"] == f"something about {code} went wrong"


def test_quota_error_is_402_and_unknown_code_is_internal() -> None:
    assert serialize_error("ServiceQuotaExceededException", "too many").status == 402
    wire = serialize_error("NoSuchThingException", "boom")
    assert wire.status == 500
    assert ("x-amzn-ErrorType", "InternalServerException") in wire.headers
    explicit = serialize_error("InvalidSignatureException", "bad signature", status=403)
    assert explicit.status == 403
    assert ("x-amzn-ErrorType", "InvalidSignatureException") in explicit.headers


def test_not_implemented_and_route_not_found_responses() -> None:
    wire = serialize_not_implemented("CopyImageSet")
    parsed = _botocore_parse(MODEL.operation_model("CopyImageSet"), wire)
    assert wire.status == 501
    assert parsed["Error"] == {
        "Code": "NotImplementedException",
        "Message": "Operation CopyImageSet is not implemented by openhi yet",
    }
    with pytest.raises(RouteNotFound) as info:
        ROUTER.match("PUT", "/datastore")
    wire = serialize_route_not_found(info.value)
    assert wire.status == 405
    assert ("x-amzn-ErrorType", "UnknownOperationException") in wire.headers
    assert isinstance(wire.body, bytes)
    assert b"PUT" in wire.body and b"/datastore" in wire.body
