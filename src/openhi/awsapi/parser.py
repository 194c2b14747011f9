"""Parses a raw rest-json HTTP request into operation input params by walking the botocore input shape."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from botocore.model import OperationModel, Shape

from openhi.awsapi.json_guard import check_depth, check_embedded_json, check_unicode, safe_text
from openhi.core.errors import ValidationError

# Hostile input policy (every rejection is a modeled ValidationException, never a 5xx):
# - a body or embedded JSON document nested deeper than json_guard.MAX_JSON_DEPTH levels is rejected
#   before it is parsed;
# - strings must be valid Unicode: ``json.loads`` turns ``"\ud800"`` into a lone surrogate, which is
#   rejected wherever it appears (members, map keys and values, embedded JSON documents), and so is
#   U+0000, which PostgreSQL cannot store;
# - unknown members, in the body or the query, are rejected (stricter than botocore, which drops what
#   it does not model: a typo in a member name fails loudly instead of being ignored); ``null`` means
#   "absent", as in botocore's rest-json parser;
# - ``Content-Type`` is not looked at: a rest-json body is JSON whatever the header says, as in AWS.

# The JSON members whose strings/blobs carry a JSON document of their own, parsed later by the core.
_EMBEDDED_JSON = frozenset({"CopiableAttributes", "DICOMAttribute"})
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,4000}")

# SigV4 query-string authentication (presigned URLs) puts these next to the modeled members.
_AUTH_QUERY_PREFIX = "x-amz-"

_MAX_NAME = 64  # characters of an unknown member name echoed in a message
_MAX_NAMES = 8  # unknown member names listed in a message

_JSON_TYPE_NAMES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _type_error(path: str, expected: str, value: Any) -> ValidationError:
    got = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    return ValidationError(f"Invalid type for parameter {path}: expected {expected}, got {got}")


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per-operation lookup tables, built once."""

    uri: tuple[tuple[str, str, Shape], ...]  # (member, label, shape)
    query: dict[str, tuple[str, Shape]]  # wire name -> (member, shape)
    query_map: tuple[str, Shape] | None  # a map member that collects the remaining query params
    header: tuple[tuple[str, str, Shape], ...]  # (member, lower-case header, shape)
    header_prefix: tuple[tuple[str, str, Shape], ...]  # (member, lower-case prefix, map shape)
    payload: tuple[str, Shape] | None
    body: Shape | None  # the input structure when body members exist (no payload)
    body_required: bool


@functools.cache
def _plan(op: OperationModel) -> _Plan:
    shape = op.input_shape
    uri: list[tuple[str, str, Shape]] = []
    query: dict[str, tuple[str, Shape]] = {}
    query_map: tuple[str, Shape] | None = None
    header: list[tuple[str, str, Shape]] = []
    header_prefix: list[tuple[str, str, Shape]] = []
    has_body = False
    body_required = False
    payload: tuple[str, Shape] | None = None
    if shape is not None:
        required = set(shape.required_members)
        for name, member in shape.members.items():
            location = member.serialization.get("location")
            wire = member.serialization.get("name", name)
            if location == "uri":
                uri.append((name, wire, member))
            elif location == "querystring":
                if member.type_name == "map":
                    query_map = (name, member)
                else:
                    query[wire] = (name, member)
            elif location == "header":
                header.append((name, wire.lower(), member))
            elif location == "headers":
                header_prefix.append((name, wire.lower(), member))
            elif location is None:
                has_body = True
                body_required = body_required or name in required
        payload_name = shape.serialization.get("payload")
        if payload_name is not None:
            payload = (payload_name, shape.members[payload_name])
    return _Plan(
        uri=tuple(uri),
        query=query,
        query_map=query_map,
        header=tuple(header),
        header_prefix=tuple(header_prefix),
        payload=payload,
        body=shape if has_body and payload is None else None,
        body_required=body_required,
    )


# --------------------------------------------------------------------------- scalar text (uri/query/header)


def _parse_text(shape: Shape, text: str, path: str) -> Any:
    """Convert a uri label, query value or header value to the member's type."""
    type_name = shape.type_name
    if type_name == "string":
        check_unicode(text, path)
        return text
    if type_name in ("integer", "long"):
        if _INTEGER_TEXT.fullmatch(text) is None:
            raise ValidationError(
                f"Invalid value for parameter {path}: expected integer, got '{safe_text(text[:64])}'"
            )
        return int(text)
    if type_name in ("float", "double"):
        try:
            return float(text)
        except ValueError:
            raise ValidationError(
                f"Invalid value for parameter {path}: expected number, got '{safe_text(text[:64])}'"
            ) from None
    if type_name == "boolean":
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise ValidationError(
            f"Invalid value for parameter {path}: expected true or false, got '{safe_text(text[:64])}'"
        )
    if type_name == "timestamp":
        return _parse_timestamp(text, path)
    if type_name == "blob":
        return _b64decode(text, path)
    raise ValidationError(f"Parameter {path} of type {type_name} cannot be sent outside the body")


# --------------------------------------------------------------------------- JSON body values


def _b64decode(value: str, path: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"Invalid value for parameter {path}: expected base64-encoded data") from None


def _parse_timestamp(value: Any, path: str) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValidationError(f"Invalid value for parameter {path}: timestamp out of range") from None
    if isinstance(value, str):
        text = value.strip()
        try:
            return _parse_timestamp(float(text), path)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(
                f"Invalid value for parameter {path}: expected epoch seconds or an ISO-8601 timestamp"
            ) from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise _type_error(path, "timestamp", value)


def _convert(shape: Shape, value: Any, path: str) -> Any:
    """Convert one decoded-JSON value to its Python form according to ``shape``."""
    type_name = shape.type_name
    if type_name == "structure":
        if not isinstance(value, dict):
            raise _type_error(path, "object", value)
        return _convert_structure(shape, value, path)
    if type_name == "list":
        if not isinstance(value, list):
            raise _type_error(path, "array", value)
        member = shape.member
        return [_convert(member, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if type_name == "map":
        if not isinstance(value, dict):
            raise _type_error(path, "object", value)
        key_shape, value_shape = shape.key, shape.value
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if v is None:
                continue
            out[_convert(key_shape, k, f"{path} key")] = _convert(value_shape, v, f"{path}.{k}")
        return out
    if type_name == "string":
        if not isinstance(value, str):
            raise _type_error(path, "string", value)
        check_unicode(value, path)
        if shape.name in _EMBEDDED_JSON:
            check_embedded_json(value, path)
        return value
    if type_name in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _type_error(path, "integer", value)
        return value
    if type_name in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(path, "number", value)
        return float(value)
    if type_name == "boolean":
        if not isinstance(value, bool):
            raise _type_error(path, "boolean", value)
        return value
    if type_name == "blob":
        if not isinstance(value, str):
            raise _type_error(path, "base64-encoded string", value)
        data = _b64decode(value, path)
        if shape.name in _EMBEDDED_JSON:
            check_embedded_json(data, path)
        return data
    if type_name == "timestamp":
        return _parse_timestamp(value, path)
    return value  # document types and anything else pass through untouched


def _convert_structure(shape: Shape, value: dict[str, Any], path: str) -> dict[str, Any]:
    wire_names = _body_wire_names(shape)
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, item in value.items():
        name = wire_names.get(key)
        if name is None:
            unknown.append(key)
            continue
        if item is None:
            continue
        out[name] = _convert(shape.members[name], item, f"{path}.{name}" if path else name)
    if unknown:
        where = f" in {path}" if path else ""
        raise ValidationError(
            f"Unknown parameter{'s' if len(unknown) > 1 else ''}{where}: "
            f"{', '.join(safe_text(name[:_MAX_NAME]) for name in unknown[:_MAX_NAMES])}"
            + (f" (and {len(unknown) - _MAX_NAMES} more)" if len(unknown) > _MAX_NAMES else "")
        )
    return out


@functools.cache
def _body_wire_names(shape: Shape) -> dict[str, str]:
    """JSON key -> member name for the members that live in the body (no ``location``)."""
    return {
        member.serialization.get("name", name): name
        for name, member in shape.members.items()
        if "location" not in member.serialization
    }


def _decode_json(body: bytes) -> Any:
    check_depth(body, "Request body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValidationError(f"Request body is not valid JSON: {exc}") from None


# --------------------------------------------------------------------------- entry point


def parse_request(
    op: OperationModel,
    uri_params: dict[str, str],
    query_string: bytes,
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, Any]:
    """Build the operation's input params (member name → Python value) from the raw request parts."""
    plan = _plan(op)
    params: dict[str, Any] = {}

    for name, label, shape in plan.uri:
        text = uri_params.get(label)
        if text is not None:
            params[name] = _parse_text(shape, text, name)

    if query_string:
        _parse_query(plan, query_string, params)

    for name, header_name, shape in plan.header:
        text = headers.get(header_name)
        if text is not None:
            if shape.type_name == "list":
                params[name] = [
                    _parse_text(shape.member, part.strip(), name) for part in text.split(",") if part.strip()
                ]
            else:
                params[name] = _parse_text(shape, text, name)
    for name, prefix, _shape in plan.header_prefix:
        found = {k[len(prefix) :]: v for k, v in headers.items() if k.startswith(prefix)}
        if found:
            params[name] = found

    if plan.payload is not None:
        _parse_payload(plan.payload, op, body, params)
    elif plan.body is not None:
        if body.strip():
            decoded = _decode_json(body)
            if not isinstance(decoded, dict):
                got = _JSON_TYPE_NAMES.get(type(decoded), type(decoded).__name__)
                raise ValidationError(f"Invalid request body: expected JSON object, got {got}")
            params.update(_convert_structure(plan.body, decoded, ""))
    elif body.strip() and body.strip() != b"{}":
        raise ValidationError(f"Operation {op.name} does not accept a request body")
    return params


def _parse_query(plan: _Plan, query_string: bytes, params: dict[str, Any]) -> None:
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise ValidationError("Query string must be percent-encoded ASCII") from None
    extra: dict[str, str] = {}
    unknown: list[str] = []
    for key, text in pairs:
        spec = plan.query.get(key)
        if spec is None:
            if key.lower().startswith(_AUTH_QUERY_PREFIX):
                continue
            if plan.query_map is not None:
                extra.setdefault(key, text)
            elif key not in unknown:
                unknown.append(key)
            continue
        name, shape = spec
        if shape.type_name == "list":
            params.setdefault(name, []).append(_parse_text(shape.member, text, name))
        elif name not in params:  # the first of repeated scalar values wins
            params[name] = _parse_text(shape, text, name)
    if unknown:
        raise ValidationError(
            f"Unknown query parameter{'s' if len(unknown) > 1 else ''}: "
            f"{', '.join(safe_text(name[:_MAX_NAME]) for name in unknown[:_MAX_NAMES])}"
        )
    if extra and plan.query_map is not None:
        params[plan.query_map[0]] = extra


def _parse_payload(
    payload: tuple[str, Shape], op: OperationModel, body: bytes, params: dict[str, Any]
) -> None:
    name, shape = payload
    if shape.type_name == "blob":
        if body or name in op.input_shape.required_members:
            params[name] = body
        return
    if shape.type_name == "string":
        if body:
            try:
                params[name] = body.decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError(f"Payload {name} must be UTF-8 text") from None
        return
    if not body.strip():
        return  # absent payload; validation reports it if it is required
    decoded = _decode_json(body)
    if decoded is None:
        return
    value = _convert(shape, decoded, name)
    if value == {} and name not in op.input_shape.required_members:
        return  # botocore sends ``{}`` for an omitted optional payload structure
    params[name] = value
