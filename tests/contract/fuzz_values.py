"""Hostile values for the request fuzzer, by member type: wrong JSON types, lengths just outside the model's
bounds, pattern and enum breakers, Unicode (lone surrogates, NUL, RTL, emoji, 4-byte), huge numbers, deep
nesting, and hostile JSON documents for the members that carry one."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from botocore.model import Shape


@dataclass(frozen=True)
class Raw:
    """JSON text put into a body as-is (numbers JSON cannot round-trip, deep nesting, broken escapes)."""

    text: str


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
ODD_SEGMENTS = [
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


def json_values(shape: Shape, valid: Any) -> list[Any]:
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


def text_values(shape: Shape, valid: str) -> list[str]:
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
        return text_values(shape.member, valid)
    return ["x", ""]
