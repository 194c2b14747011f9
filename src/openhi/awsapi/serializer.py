"""Serializes operation outputs and errors to rest-json HTTP responses by walking the botocore output shape."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from botocore.model import NoShapeFoundError, OperationModel, Shape

from openhi.awsapi.json_guard import safe_text
from openhi.awsapi.router import RouteNotFound
from openhi.awsapi.service import load_service_model

JSON_CONTENT_TYPE = "application/json"
_OCTET_STREAM = "application/octet-stream"
_ERROR_TYPE_HEADER = "x-amzn-ErrorType"
_INTERNAL_ERROR = "InternalServerException"

_dumps_text = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_dumps_ascii = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode


def _json_bytes(value: Any) -> bytes:
    """UTF-8 JSON; text UTF-8 cannot encode (a lone surrogate) is sent as ``\\uXXXX`` escapes instead."""
    text = _dumps_text(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _dumps_ascii(value).encode("ascii")


@dataclass(slots=True)
class WireResponse:
    """A fully serialized HTTP response; ``body`` may be an iterable of chunks for streaming payloads."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterable[bytes]


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return round(value.timestamp(), 3)


def _to_json(shape: Shape, value: Any) -> Any:
    """Convert a Python value to its JSON-ready form according to ``shape`` (member names as modeled)."""
    type_name = shape.type_name
    if type_name == "structure":
        out: dict[str, Any] = {}
        members = shape.members
        for name, item in value.items():
            if item is None:
                continue
            member = members.get(name)
            if member is None:
                raise ValueError(f"{shape.name} has no member {name!r}")
            if "location" in member.serialization:
                continue
            out[member.serialization.get("name", name)] = _to_json(member, item)
        return out
    if type_name == "list":
        member_shape = shape.member
        return [_to_json(member_shape, item) for item in value if item is not None]
    if type_name == "map":
        value_shape = shape.value
        return {k: _to_json(value_shape, v) for k, v in value.items() if v is not None}
    if type_name == "timestamp":
        return _epoch(value) if isinstance(value, datetime) else value
    if type_name == "blob":
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return base64.b64encode(raw).decode("ascii")
    return value


def _header_text(shape: Shape, value: Any) -> str:
    type_name = shape.type_name
    if type_name == "boolean":
        return "true" if value else "false"
    if type_name == "timestamp" and isinstance(value, datetime):
        return format_datetime(value if value.tzinfo else value.replace(tzinfo=UTC), usegmt=True)
    if type_name == "list":
        return ",".join(_header_text(shape.member, item) for item in value)
    if shape.serialization.get("jsonvalue"):
        return base64.b64encode(_json_bytes(value)).decode("ascii")
    return str(value)


@dataclass(frozen=True, slots=True)
class _OutputPlan:
    header: tuple[tuple[str, str, Shape], ...]
    header_prefix: tuple[tuple[str, str], ...]
    payload: tuple[str, Shape] | None
    status: int


@functools.cache
def _output_plan(op: OperationModel) -> _OutputPlan:
    shape = op.output_shape
    header: list[tuple[str, str, Shape]] = []
    prefixes: list[tuple[str, str]] = []
    payload: tuple[str, Shape] | None = None
    if shape is not None:
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            if location == "header":
                header.append((name, member.serialization.get("name", name), member))
            elif location == "headers":
                prefixes.append((name, member.serialization.get("name", name)))
        payload_name = shape.serialization.get("payload")
        if payload_name is not None:
            payload = (payload_name, shape.members[payload_name])
    return _OutputPlan(tuple(header), tuple(prefixes), payload, int(op.http.get("responseCode", 200)))


def serialize_output(op: OperationModel, output: dict[str, Any]) -> WireResponse:
    """Serialize a handler's output dict (member name → Python value) as the operation's HTTP response."""
    plan = _output_plan(op)
    headers: list[tuple[str, str]] = []
    for name, header_name, shape in plan.header:
        value = output.get(name)
        if value is not None:
            headers.append((header_name, _header_text(shape, value)))
    for name, prefix in plan.header_prefix:
        for key, text in (output.get(name) or {}).items():
            headers.append((prefix + key, str(text)))

    body: bytes | Iterable[bytes]
    if plan.payload is not None:
        name, shape = plan.payload
        value = output.get(name)
        if shape.type_name in ("blob", "string"):
            if value is None:
                body = b""
            elif isinstance(value, str):
                body = value.encode("utf-8")
            else:
                body = value  # bytes or an iterable of chunks: streamed untouched
            if not any(h.lower() == "content-type" for h, _ in headers):
                headers.append(("Content-Type", _OCTET_STREAM))
            return WireResponse(plan.status, headers, body)
        body = _json_bytes(_to_json(shape, value) if value is not None else {})
    else:
        body = _json_bytes(_to_json(op.output_shape, output)) if op.output_shape is not None else b"{}"
    headers.append(("Content-Type", JSON_CONTENT_TYPE))
    return WireResponse(plan.status, headers, body)


@functools.cache
def _error_status(code: str) -> int | None:
    try:
        shape = load_service_model().shape_for(code)
    except NoShapeFoundError:
        return None
    if not shape.metadata.get("exception"):
        return None
    status = shape.metadata.get("error", {}).get("httpStatusCode")
    if status is None:
        return 500 if shape.metadata.get("fault") else 400
    return int(status)


def _error_response(status: int, code: str, message: str) -> WireResponse:
    """Never fails: a message with text UTF-8 cannot encode is sent with it escaped (``\\ud800``)."""
    headers = [(_ERROR_TYPE_HEADER, code), ("Content-Type", JSON_CONTENT_TYPE)]
    return WireResponse(status, headers, _dumps_text({"message": safe_text(str(message))}).encode("utf-8"))


def serialize_error(code: str, message: str, status: int | None = None) -> WireResponse:
    """Serialize a modeled exception by name; status comes from the model's ``error.httpStatusCode``.

    An unmodeled ``code`` becomes a 500 ``InternalServerException`` unless ``status`` is given, in which
    case the code is sent as-is (for protocol-level errors such as ``InvalidSignatureException``).
    """
    modeled = _error_status(code)
    if modeled is not None:
        return _error_response(modeled, code, message)
    if status is not None:
        return _error_response(status, code, message)
    return _error_response(_error_status(_INTERNAL_ERROR) or 500, _INTERNAL_ERROR, message)


def serialize_route_not_found(exc: RouteNotFound) -> WireResponse:
    """404/405 ``UnknownOperationException`` for a request that matches no modeled operation."""
    response = _error_response(exc.status, "UnknownOperationException", exc.message)
    if exc.status == 405 and exc.allowed:
        response.headers.append(("Allow", ", ".join(exc.allowed)))
    return response


def serialize_not_implemented(op_name: str) -> WireResponse:
    """501 ``NotImplementedException`` for a modeled operation that openhi does not serve yet."""
    return _error_response(
        501, "NotImplementedException", f"Operation {op_name} is not implemented by openhi yet"
    )
