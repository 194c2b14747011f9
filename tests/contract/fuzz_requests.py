"""Model-driven request fuzzer: valid wire requests per operation, mutated member by member and whole.

Deterministic: the same model and base requests give the same cases in the same order (a fixed seed for
the combined mutations). Cases are wire-level (path, query, body text), so they can be anything a hostile
client sends, not only what botocore would serialize.
"""

from __future__ import annotations

import http.client
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import OperationModel, ServiceModel, Shape

from contract.fuzz_values import ODD_SEGMENTS, Raw, json_values, text_values

#: a ``{latest}`` string anywhere in a request is replaced by the image set's current latest version id
LATEST = "{latest}"
_ABSENT = object()
#: the key the test fixtures' servers accept
CREDENTIALS = Credentials("openhi-test", "openhi-test-secret")


@dataclass(frozen=True)
class RawSegment:
    """A uri label sent exactly as written (already percent-encoded, or oddly encoded)."""

    text: str


@dataclass
class Wire:
    """One request in wire terms: uri labels, query pairs, body (JSON-able with Raw leaves) or raw bytes."""

    uri: dict[str, Any]
    query: list[tuple[str, str]] = field(default_factory=list)
    body: Any = _ABSENT
    raw_body: bytes | None = None
    method: str | None = None
    content_type: str | None = "application/json"
    path_suffix: str = ""
    accept: str | None = None


@dataclass(frozen=True)
class Case:
    op: str
    label: str
    wire: Wire


# --------------------------------------------------------------------------- rendering


def _substitute(value: Any, subst: dict[str, str]) -> Any:
    if isinstance(value, str):
        return subst.get(value, value)
    if isinstance(value, dict):
        return {_substitute(k, subst): _substitute(v, subst) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, subst) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """JSON with ``Raw`` leaves spliced in as-is; lone surrogates are written as ``\\udXXX`` escapes."""
    raws: list[str] = []

    def strip(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(node.text)
            return f"\x01RAW{len(raws) - 1}\x01"
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    text = json.dumps(strip(value), ensure_ascii=True)
    for i, raw in enumerate(raws):
        text = text.replace(f'"\\u0001RAW{i}\\u0001"', raw)
    return text.encode("utf-8", "surrogatepass")


def _quote(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def render(op: OperationModel, wire: Wire, subst: dict[str, str]) -> tuple[str, str, bytes, dict[str, str]]:
    """(method, path?query, body, headers) for ``wire``."""
    path = op.http["requestUri"].split("?", 1)[0]
    for label, value in wire.uri.items():
        text = value.text if isinstance(value, RawSegment) else _quote(subst.get(value, value))
        path = path.replace("{" + label + "}", text)
    path += wire.path_suffix
    query = "&".join(f"{_quote(k)}={_quote(subst.get(v, v))}" for k, v in wire.query)
    if wire.raw_body is not None:
        body = wire.raw_body
    elif wire.body is _ABSENT:
        body = b""
    else:
        body = dumps(_substitute(wire.body, subst))
    headers = {"Content-Type": wire.content_type} if wire.content_type is not None else {}
    if wire.accept is not None:
        headers["Accept"] = wire.accept
    method = wire.method or op.http["method"]
    return method, path + ("?" + query if query else ""), body, headers


# --------------------------------------------------------------------------- member walk


def _members(shape: Shape, value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Shape, Any]]:
    """(path into the JSON body, shape, valid value) for every member reachable from ``value``'s shape.
    Members absent from the base get a path too (their mutations add them)."""
    yield path, shape, value
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if "location" in member.serialization:
                continue
            wire_name = member.serialization.get("name", name)
            item = value.get(wire_name) if isinstance(value, dict) else None
            if item is None:  # absent from the base: its mutations add it
                yield (*path, wire_name), member, None
            else:
                yield from _members(member, item, (*path, wire_name))
    elif shape.type_name == "list" and isinstance(value, list) and value:
        yield from _members(shape.member, value[0], (*path, 0))
    elif shape.type_name == "map" and isinstance(value, dict) and value:
        key = next(iter(value))
        yield from _members(shape.value, value[key], (*path, key))


def _set(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(body, list):
        copy_list = list(body)
        if new is _ABSENT and not rest:
            del copy_list[head]
            return copy_list
        copy_list[head] = _set(copy_list[head], rest, new)
        return copy_list
    copy = dict(body) if isinstance(body, dict) else {}
    if new is _ABSENT and not rest:
        copy.pop(head, None)
        return copy
    copy[head] = _set(copy.get(head, {}), rest, new)
    return copy


def _payload(op: OperationModel) -> str | None:
    name: str | None = op.input_shape.serialization.get("payload")
    return name


def member_cases(op: OperationModel, base: Wire) -> Iterator[Case]:
    shape = op.input_shape
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire_name = member.serialization.get("name", name)
        if location == "uri":
            valid = base.uri[wire_name]
            for text in text_values(member, valid):
                if text == "" or len(_quote(text)) > _MAX_HEAD_TEXT:
                    continue  # an empty label is another path: covered by the route cases
                uri = {**base.uri, wire_name: text}
                yield Case(op.name, f"{name}={text[:40]!r}", replace(base, uri=uri))
            for seg in ODD_SEGMENTS:
                uri = {**base.uri, wire_name: RawSegment(seg)}
                yield Case(op.name, f"{name} segment {seg[:20]!r}", replace(base, uri=uri))
        elif location == "querystring":
            valid = next((v for k, v in base.query if k == wire_name), "1")
            others = [(k, v) for k, v in base.query if k != wire_name]
            for text in text_values(member, valid):
                if len(_quote(text)) > _MAX_HEAD_TEXT:
                    continue
                query = [*others, (wire_name, text)]
                yield Case(op.name, f"{name}={text[:40]!r}", replace(base, query=query))
            yield Case(op.name, f"{name} absent", replace(base, query=others))
            yield Case(op.name, f"{name} twice", replace(base, query=[*base.query, (wire_name, "x")]))
    payload = _payload(op)
    body_shape = shape.members[payload] if payload else shape
    if (
        base.body is _ABSENT
        and payload is None
        and not any("location" not in m.serialization for m in shape.members.values())
    ):
        return
    body = base.body if base.body is not _ABSENT else {}
    for path, member, valid in _members(body_shape, body, ()):
        if not path:
            continue
        where = ".".join(str(p) for p in path)
        for value in json_values(member, valid):
            label = f"{where}={_short(value)}"
            yield Case(op.name, label, replace(base, body=_set(body, path, value)))
        yield Case(op.name, f"{where} absent", replace(base, body=_set(body, path, _ABSENT)))
        yield Case(op.name, f"{where} null", replace(base, body=_set(body, path, None)))


def _short(value: Any) -> str:
    text = value.text if isinstance(value, Raw) else repr(value)
    return text[:40] + (f"...({len(text)})" if len(text) > 40 else "")


_OVERSIZE_OPS = frozenset({"CreateDatastore", "GetImageFrame", "UpdateImageSetMetadata"})
_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
_CONTENT_TYPES = (
    None,
    "text/plain",
    "application/x-amz-json-1.1",
    "application/xml",
    "multipart/form-data; boundary=x",
    "application/json; charset=utf-16",
    "application/json\t; x=\u00e9",
)
#: uvicorn (h11) answers a request whose head passes 16 KiB with its own plain-text 400 before the app
#: sees it; texts sent in the path or query stay below that
_MAX_HEAD_TEXT = 12_000


_ACCEPTS = (
    "",
    "*/*",
    "image/jph",
    "image/jphc;transfer-syntax=1.2.840.10008.1.2.4.202",
    "application/octet-stream;q=0",
    "image/*;q=abc",
    "image/jph;q=1e400, image/jphc;q=NaN",
    "text/html",
    ";;;,,,;==",
    "image/jph;transfer-syntax=" + "9" * 4301,
    "a" * 8000,
)


def request_cases(op: OperationModel, base: Wire, subst: dict[str, str]) -> Iterator[Case]:
    """Whole-request mutations: methods, content types, Accept, bodies, query and path shapes."""
    for method in _METHODS:
        if method != op.http["method"]:
            yield Case(op.name, f"method {method}", replace(base, method=method))
    for ctype in _CONTENT_TYPES:
        yield Case(op.name, f"content-type {ctype!r}", replace(base, content_type=ctype))
    for accept in _ACCEPTS:
        yield Case(op.name, f"accept {accept[:30]!r}", replace(base, accept=accept))
    for name, member in op.input_shape.members.items():
        if member.serialization.get("location") == "querystring" and member.type_name == "list":
            wire_name = member.serialization.get("name", name)
            many = [(wire_name, f"k{i}") for i in range(member.metadata.get("max", 200) + 1)]
            yield Case(op.name, f"{name} x{len(many)}", replace(base, query=many))
    valid = render(op, base, subst)[2] or b"{}"
    bodies = [
        valid[: len(valid) // 4],
        valid[: len(valid) // 2],
        valid[:-1],
        valid + b"garbage",
        b"\xef\xbb\xbf" + valid,
        valid.decode().encode("utf-16"),
        b"",
        b"null",
        b"[]",
        b'"x"',
        b"1",
        b"{" * 100_000,
        b"[" * 1000 + b"]" * 1000,
        b"\xff\xfe\x00",
        b'{"a":1,"a":2}',
        b"{}",
        b'{"zzUnknown": 1}',
        b'{"\\ud800": 1}',
    ]
    if op.name in _OVERSIZE_OPS:  # one past the 1 MiB body limit: a few operations suffice
        bodies.append(b" " * 1_100_000)
    for i, raw in enumerate(bodies):
        yield Case(op.name, f"body #{i} {raw[:24]!r}", replace(base, raw_body=raw))
    yield Case(op.name, "unknown query member", replace(base, query=[*base.query, ("zzUnknown", "1")]))
    yield Case(op.name, "query without =", replace(base, query=[*base.query, ("flag", "")]))
    yield Case(op.name, "query %FF", replace(base, query=[*base.query, ("\udcff", "\udcff")]))
    for suffix in ("/", "//", "/..", "%00", "/x", ";a=b"):
        yield Case(op.name, f"path suffix {suffix!r}", replace(base, path_suffix=suffix))


def combined_cases(op: OperationModel, singles: list[Case], count: int, seed: int) -> Iterator[Case]:
    """``count`` cases that mutate two members at once (the second from another case's body/query)."""
    rng = random.Random(f"{seed}:{op.name}")
    bodied = [c for c in singles if c.wire.raw_body is None and c.wire.method is None]
    if len(bodied) < 2:
        return
    for _ in range(count):
        a, b = rng.sample(bodied, 2)
        body = a.wire.body
        if isinstance(body, dict) and isinstance(b.wire.body, dict):
            body = {**b.wire.body, **body}
        uri = {**a.wire.uri, **{k: v for k, v in b.wire.uri.items() if rng.random() < 0.5}}
        query = list(dict([*b.wire.query, *a.wire.query]).items())
        yield Case(op.name, f"{a.label} + {b.label}", replace(a.wire, uri=uri, query=query, body=body))


def all_cases(
    model: ServiceModel, bases: dict[str, list[Wire]], subst: dict[str, str], total: int, seed: int = 13
) -> list[Case]:
    """Every member mutation of each base request of every operation (several bases reach members a
    single one cannot, such as each member of a union), request mutations of the first base, then
    combined mutations up to ``total`` cases."""
    per_op: dict[str, list[Case]] = {}
    for name in model.operation_names:
        op = model.operation_model(name)
        first, *others = bases[name]
        per_op[name] = [*member_cases(op, first), *request_cases(op, first, subst)]
        for other in others:
            per_op[name] += member_cases(op, other)
    cases = [c for name in model.operation_names for c in per_op[name]]
    extra = max(0, total - len(cases))
    each = -(-extra // len(per_op)) if extra else 0
    for name in model.operation_names:
        cases += combined_cases(model.operation_model(name), per_op[name], each, seed)
    return cases


# --------------------------------------------------------------------------- sending


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened when the server closes it."""

    def __init__(self, endpoint: str) -> None:
        parts = urlsplit(endpoint)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn: http.client.HTTPConnection | None = None

    def send(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if response.will_close:
                self.conn.close()
                self.conn = None
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def signed_headers(
    endpoint: str, method: str, path: str, body: bytes, headers: dict[str, str]
) -> dict[str, str]:
    request = AWSRequest(method=method, url=endpoint + path, data=body, headers=headers)
    SigV4Auth(CREDENTIALS, "medical-imaging", "us-east-1").add_auth(request)
    return dict(request.headers.items())
