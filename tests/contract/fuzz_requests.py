"""Model-driven request fuzzer: valid wire requests per operation, mutated member by member and whole.

Deterministic: the same model and base requests give the same cases in the same order (a fixed seed for
the combined mutations). Cases are wire-level (path, query, body text), so they can be anything a hostile
client sends, not only what botocore would serialize.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from botocore.model import OperationModel, ServiceModel, Shape

#: a ``{latest}`` string anywhere in a request is replaced by the image set's current latest version id
LATEST = "{latest}"
_ABSENT = object()


@dataclass(frozen=True)
class Raw:
    """JSON text put into a body as-is (numbers JSON cannot round-trip, deep nesting, broken escapes)."""

    text: str


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


# --------------------------------------------------------------------------- hostile values

UNICODE = [
    "\ud800",
    "\udfff",
    "a\ud800b",
    "\udc00\ud800",
    "\x00",
    "a\x00b",
    "\u202eevil",
    "\U0001f600",
    "\U0001d11e",
    "\ufeff",
    "\uffff",
    "\u0085\u2028",
    "e\u0301",
    "\uff46\uff55\uff4c\uff4c",
]
_NUMBER_TEXT = [str(2**63), str(2**63 - 1), str(-(2**63) - 1), "-1", "0", "9" * 4300, "9" * 4301, "1e400"]
_PATTERN_BREAKERS = ["!!", "../../etc/passwd", " padded ", "'; DROP TABLE t;--", "\\", '"', "%s%n", "A" * 33]
_RAW_NUMBERS = [Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("-Infinity"), Raw("9" * 4300), Raw("9" * 5000)]
_DEEP = [Raw("[" * 1000 + "]" * 1000), Raw('{"a":' * 200 + "1" + "}" * 200), Raw("[" * 70 + "]" * 70)]
_WRONG_TYPES: list[Any] = [0, 123, -1.5, True, [], {}, ["x"], {"a": "b"}, None]
_ODD_SEGMENTS = [
    "%",
    "%zz",
    "%2e%2e",
    "..",
    ".",
    "%2F",
    "%00",
    "%C0%AF",
    "%FF",
    "%ED%A0%80",
    "%25",
    "a%20b",
    "+",
    "x" * 5000,
    "%252F",
]


def _sized(meta: dict[str, Any], filler: str) -> list[str]:
    out: list[str] = [""]
    low, high = meta.get("min"), meta.get("max")
    if low is not None and low > 1:
        out.append(filler * (low - 1))
    if high is not None and high < 300_000:
        out.append(filler * (high + 1))
    return out


def string_texts(shape: Shape, valid: str) -> list[str]:
    """Hostile texts for a string member (query, uri or body)."""
    meta = shape.metadata
    out = list(UNICODE) + [valid + u for u in UNICODE[:9]]
    out += _sized(meta, "a") + _sized(meta, "\U0001f600")
    if meta.get("pattern"):
        out += _PATTERN_BREAKERS
    if meta.get("enum"):
        out += ["NOT_AN_ENUM", meta["enum"][0].lower(), meta["enum"][0] + " "]
    out += [*_NUMBER_TEXT, "true", "null", "[]", "{}"]
    return out


def _doc(**study: Any) -> str:
    return json.dumps({"SchemaVersion": 1.1, **study})


def embedded_docs(valid: str) -> list[Any]:
    """Hostile JSON documents for a member that carries one (copiable/updatable/removable attributes)."""
    dicom = [
        _doc(Study={"DICOM": {"StudyDescription": f"FUZZ {u}"}})
        for u in ("\U0001f600", "\u202eRTL", "\x00", "\U0001d11e")
    ]
    texts = [
        "{" * 1000 + "}" * 1000,
        '{"SchemaVersion": 1.1, "Patient": ' + "[" * 500 + "]" * 500 + "}",
        '{"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "\\ud800"}}}',
        '{"SchemaVersion": 1.1, "Study": {"Series": {"\\udc00": {}}}}',
        '{"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": 1e400}}}',
        '{"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": ' + "9" * 4300 + "}}}",
        '{"SchemaVersion": NaN}',
        "not json",
        "[]",
        "null",
        "{}",
        '{"SchemaVersion": 2}',
        _doc(Unknown={}),
        _doc(Study={"Series": {"1.2.3": {"Instances": {"1.2.3.4": {"x": 1}}}}}),
        valid[: len(valid) // 2],
        *dicom,
    ]
    return texts


def _json_values(shape: Shape, valid: Any) -> list[Any]:
    """Hostile JSON values for one body member of ``shape`` (``valid`` is its value in the base request)."""
    t = shape.type_name
    meta = shape.metadata
    out: list[Any] = [v for v in _WRONG_TYPES if not _same_type(t, v)]
    if t == "string":
        out += string_texts(shape, valid if isinstance(valid, str) else "")
        out += [*_RAW_NUMBERS[:2], Raw('"\\u12"'), Raw('"\\ud800\\u0000"')]
        if shape.name == "CopiableAttributes":
            out += embedded_docs(valid)
    elif t in ("integer", "long"):
        low, high = meta.get("min"), meta.get("max")
        out += ["1", 1.5, 0.5, 2**63, -(2**63) - 1, 2**64, Raw("-0"), Raw("1.0"), Raw("1e2"), *_RAW_NUMBERS]
        out += [low - 1] if low is not None else []
        out += [high + 1] if high is not None else []
    elif t == "boolean":
        out += ["true", 1, 0, "yes", *_RAW_NUMBERS[:3]]
    elif t == "timestamp":
        out += ["not a date", "2024-13-45T99:00:00", -1e20, 1e20, 2**63, "9" * 400, *_RAW_NUMBERS]
    elif t == "blob":
        out += ["!!!notbase64", "", "====", "e30", *_sized_blob(meta)]
        if shape.name == "DICOMAttribute":
            out += [_b64(d) for d in embedded_docs(base64.b64decode(valid).decode() if valid else "{}")]
            out += [_b64(b"\xff\xfe\xfd"), _b64("\ufeff" + _doc())]
    elif t == "structure":
        out += [{"zzUnknown": 1}, {"\ud800": 1}, *_DEEP]
        if isinstance(valid, dict):
            out.append({**valid, "zzUnknown": None})
    elif t == "list":
        out += [[None], [[[]]], [1], [{}], *_DEEP]
        high = meta.get("max")
        if high is not None and high < 10_000 and isinstance(valid, list) and valid:
            out.append(valid * (high + 1))
    elif t == "map":
        out += [{"\ud800": "v"}, {"k": None}, {"k": 1}, {"k": {}}, {"": "v"}, {"k" * 200: "v"}]
        out += [{"aws:x": "v"}, {"k\x00": "v"}, {"k": "\ud800"}, *_DEEP]
        out += [{f"k{i}": "v" for i in range(51)}]
    return out


def _sized_blob(meta: dict[str, Any]) -> list[str]:
    high = meta.get("max")
    return [_b64(b"x" * (high + 1))] if high is not None else []


def _same_type(type_name: str, value: Any) -> bool:
    if value is None:
        return False
    kinds = {
        "string": str,
        "structure": dict,
        "map": dict,
        "list": list,
        "boolean": bool,
    }
    kind = kinds.get(type_name)
    if kind is not None:
        return isinstance(value, kind)
    return False


def _b64(text: str | bytes) -> str:
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def _text_values(shape: Shape, valid: str) -> list[str]:
    """Hostile texts for a uri label or query member."""
    t = shape.type_name
    if t == "string":
        return string_texts(shape, valid)
    if t in ("integer", "long"):
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        out = ["abc", "1.5", "", " 1", "1_0", "\u0663", "0x10", "+5", "-0", *_NUMBER_TEXT]
        out += [str(low - 1)] if low is not None else []
        out += [str(high + 1)] if high is not None else []
        return out
    if t == "boolean":
        return ["yes", "1", "", "TRUE", "\ud800"]
    if t == "list":
        return _text_values(shape.member, valid)
    return ["x", ""]


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
            for text in _text_values(member, valid):
                if text == "" or len(_quote(text)) > _MAX_HEAD_TEXT:
                    continue  # an empty label is another path: covered by the route cases
                uri = {**base.uri, wire_name: text}
                yield Case(op.name, f"{name}={text[:40]!r}", replace(base, uri=uri))
            for seg in _ODD_SEGMENTS:
                uri = {**base.uri, wire_name: RawSegment(seg)}
                yield Case(op.name, f"{name} segment {seg[:20]!r}", replace(base, uri=uri))
        elif location == "querystring":
            valid = next((v for k, v in base.query if k == wire_name), "1")
            others = [(k, v) for k, v in base.query if k != wire_name]
            for text in _text_values(member, valid):
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
        for value in _json_values(member, valid):
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
