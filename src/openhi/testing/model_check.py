"""Checks every medical-imaging response a botocore client receives against the operation's modeled shape.

botocore parses only the members it knows and never checks output constraints, so a response that a
strict client (one that validates outputs) would reject can pass a boto3 test unnoticed. This walks the
raw wire response instead: the JSON body against the output (or error) structure, header-bound members,
and the status code. Rules: required members present, no unknown members, no nulls, JSON types, string
``pattern`` (full match, the model's Java-style regexes translated), ``min``/``max`` length, ``enum``,
integer ranges, list and map sizes, nested structures, lists and maps, unions (exactly one member set),
and rest-json timestamps (epoch seconds in a body).

:func:`validate_responses` hooks it into a client (botocore's ``after-call`` event): a violation raises
:class:`ResponseViolation` from the call that received it, naming operation, member path, value and rule.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SERVICE_EVENT = "after-call.medical-imaging"
_HANDLER_ID = "openhi-model-check"
_MAX_SHOWN = 120

# Java regex constructs the model uses that Python spells differently (POSIX classes, US-ASCII only).
_JAVA_CLASSES = {
    "ASCII": r"\x00-\x7F",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Upper": "A-Z",
    "Lower": "a-z",
    "Punct": r"!-/:-@\[-`{-~",
    "Graph": r"!-~",
    "Print": r" -~",
    "Space": r" \t\n\x0B\f\r",
    "XDigit": "0-9a-fA-F",
}
_JAVA_CLASS_RE = re.compile(r"\\p\{(\w+)\}")
_JAVA_DOT = "[^\\n\\r\\x85\\u2028\\u2029]"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: ``operation``, the member ``path`` (``$`` is the body), the value and the rule."""

    operation: str
    path: str
    value: Any
    rule: str

    def __str__(self) -> str:
        shown = repr(self.value)
        if len(shown) > _MAX_SHOWN:
            shown = shown[:_MAX_SHOWN] + "…"
        return f"{self.operation}: {self.path} = {shown} violates {self.rule}"


class ResponseViolation(AssertionError):
    """A response does not obey the service model (raised from the client call that received it)."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        lines = "\n  ".join(str(v) for v in violations)
        super().__init__(f"response breaks the medical-imaging model:\n  {lines}")


@functools.cache
def java_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a model (Java) regex for Python with Java's meaning: ``\\p{ASCII}``-style classes expanded,
    ``\\w \\d \\s`` ASCII only, and ``.`` not matching any of Java's line terminators."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            match = _JAVA_CLASS_RE.match(pattern, i)
            if match is not None:
                name = match.group(1)
                if name not in _JAVA_CLASSES:
                    raise ValueError(f"unsupported Java character class \\p{{{name}}} in {pattern!r}")
                ranges = _JAVA_CLASSES[name]
                out.append(ranges if in_class else f"[{ranges}]")
                i = match.end()
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(char)
            if pattern[i + 1 : i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1 : i + 2] == "]":  # a leading ] is a literal in both dialects
                out.append("\\]")
                i += 1
        elif char == "]" and in_class:
            in_class = False
            out.append(char)
        elif char == "." and not in_class:
            out.append(_JAVA_DOT)
        else:
            out.append(char)
        i += 1
    return re.compile("".join(out), re.ASCII)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Walker:
    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.found: list[Violation] = []

    def bad(self, path: str, value: Any, rule: str) -> None:
        self.found.append(Violation(self.operation, path, value, rule))

    def value(self, shape: Any, value: Any, path: str) -> None:
        if value is None:
            self.bad(path, value, f"null is not a {shape.type_name} ({shape.name})")
            return
        kind = shape.type_name
        check = getattr(self, f"_{kind}", None)
        if check is None:
            self.bad(path, value, f"unknown shape type {kind!r} ({shape.name})")
            return
        check(shape, value, path)

    def _structure(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.bad(path, value, f"type: {shape.name} is a JSON object")
            return
        self.members(shape, value, path, body_only=False)

    def members(self, shape: Any, value: Mapping[str, Any], path: str, *, body_only: bool) -> None:
        """The members of a structure, keyed by wire name; ``body_only`` skips header-bound members."""
        by_wire: dict[str, tuple[str, Any]] = {}
        for name, member in shape.members.items():
            if body_only and "location" in member.serialization:
                continue
            by_wire[member.serialization.get("name", name)] = (name, member)
        for key in value:
            if key not in by_wire:
                self.bad(f"{path}.{key}", value[key], f"unknown member: {shape.name} has no member {key!r}")
        present = [key for key in by_wire if key in value]
        for key in present:
            self.value(by_wire[key][1], value[key], f"{path}.{key}")
        required = set(shape.required_members)
        for key, (name, _member) in by_wire.items():
            if name in required and key not in value:
                self.bad(f"{path}.{key}", None, f"required: {shape.name}.{name} is missing")
        if shape.metadata.get("union") and len(present) != 1:
            self.bad(path, sorted(present), f"union: exactly one member of {shape.name} is set")

    def _list(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, list):
            self.bad(path, value, f"type: {shape.name} is a JSON array")
            return
        self.size(shape, len(value), value, path, "list size")
        for index, item in enumerate(value):
            self.value(shape.member, item, f"{path}[{index}]")

    def _map(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.bad(path, value, f"type: {shape.name} is a JSON object")
            return
        self.size(shape, len(value), value, path, "map size")
        for key, item in value.items():
            self.value(shape.key, key, f"{path}<key {key!r}>")
            self.value(shape.value, item, f"{path}[{key!r}]")

    def _string(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, str):
            self.bad(path, value, f"type: {shape.name} is a string")
            return
        enum = shape.metadata.get("enum")
        if enum and value not in enum:
            self.bad(path, value, f"enum: {shape.name} is one of {enum}")
        self.size(shape, len(value), value, path, "length")
        pattern = shape.metadata.get("pattern")
        if pattern is not None and java_pattern(pattern).fullmatch(value) is None:
            self.bad(path, value, f"pattern: {shape.name} matches {pattern!r} in full")

    def _integer(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            self.bad(path, value, f"type: {shape.name} is an integer")
            return
        self.size(shape, value, value, path, "value")

    _long = _integer

    def _float(self, shape: Any, value: Any, path: str) -> None:
        if not _is_number(value):
            self.bad(path, value, f"type: {shape.name} is a number")
            return
        self.size(shape, value, value, path, "value")

    _double = _float

    def _boolean(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            self.bad(path, value, f"type: {shape.name} is a boolean")

    def _timestamp(self, shape: Any, value: Any, path: str) -> None:
        fmt = shape.serialization.get("timestampFormat", "unixTimestamp")
        if fmt == "unixTimestamp" and not _is_number(value):
            self.bad(path, value, f"type: {shape.name} is epoch seconds (a JSON number)")
        elif fmt != "unixTimestamp" and not isinstance(value, str):
            self.bad(path, value, f"type: {shape.name} is a {fmt} string")

    def _blob(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, str):
            self.bad(path, value, f"type: {shape.name} is a base64 string")
            return
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            self.bad(path, value, f"type: {shape.name} is a base64 string")

    def size(self, shape: Any, size: float, value: Any, path: str, what: str) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and size < low:
            self.bad(path, value, f"min: {shape.name} {what} >= {low} (is {size})")
        if high is not None and size > high:
            self.bad(path, value, f"max: {shape.name} {what} <= {high} (is {size})")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, text in headers.items():
        if key.lower() == wanted:
            return text
    return None


def _header_members(walker: _Walker, shape: Any, headers: Mapping[str, str]) -> None:
    required = set(shape.required_members)
    for name, member in shape.members.items():
        if member.serialization.get("location") != "header":
            continue
        wire = member.serialization.get("name", name)
        text = _header(headers, wire)
        if text is None:
            if name in required:
                walker.bad(f"<header {wire}>", None, f"required: {shape.name}.{name} is missing")
            continue
        if member.type_name == "string":
            walker.value(member, text, f"<header {wire}>")
        elif member.type_name in ("integer", "long"):
            try:
                walker.value(member, int(text), f"<header {wire}>")
            except ValueError:
                walker.bad(f"<header {wire}>", text, f"type: {member.name} is an integer")


def _json_body(walker: _Walker, body: bytes) -> Any:
    if not body:
        return {}
    try:
        return json.loads(body)
    except ValueError as exc:
        walker.bad("$", body[:_MAX_SHOWN], f"body is JSON ({exc})")
        return None


def check_response(
    operation: Any, status: int, headers: Mapping[str, str], body: bytes | None
) -> list[Violation]:
    """Every way the response (``body`` None for a streamed payload) breaks ``operation``'s model."""
    walker = _Walker(operation.name)
    if status >= 300:
        _check_error(walker, operation, status, headers, body or b"")
        return walker.found
    expected = int(operation.http.get("responseCode", 200))
    if status != expected:
        walker.bad("<status>", status, f"HTTP status of {operation.name} is {expected}")
    shape = operation.output_shape
    if shape is None:
        return walker.found
    _header_members(walker, shape, headers)
    payload = shape.serialization.get("payload")
    if payload is not None:
        member = shape.members[payload]
        if member.type_name == "structure" and body is not None:
            document = _json_body(walker, body)
            if document is not None:
                walker.value(member, document, "$")
        return walker.found
    if body is None:
        walker.bad("$", None, f"{shape.name} has a JSON body")
        return walker.found
    document = _json_body(walker, body)
    if document is None:
        return walker.found
    if not isinstance(document, dict):
        walker.bad("$", document, f"type: {shape.name} is a JSON object")
        return walker.found
    walker.members(shape, document, "$", body_only=True)
    return walker.found


def _check_error(
    walker: _Walker, operation: Any, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    code = (_header(headers, "x-amzn-ErrorType") or "").split(":", 1)[0]
    document = _json_body(walker, body)
    if isinstance(document, dict) and not code:
        code = str(document.get("__type") or document.get("code") or "").rsplit("#", 1)[-1]
    if not code:
        walker.bad("<header x-amzn-ErrorType>", None, "an error response names its error code")
    shape = next((s for s in operation.service_model.error_shapes if s.name == code), None)
    if shape is None:
        # not one of the model's exceptions (a protocol error such as InvalidSignatureException):
        # AWS sends the same {"message": ...} document for those
        if document is not None and (not isinstance(document, dict) or set(document) - {"message"}):
            walker.bad("$", document, f"{code or 'error'} body is {{'message': string}}")
        elif isinstance(document, dict) and not isinstance(document.get("message"), str):
            walker.bad("$.message", document.get("message"), "type: an error message is a string")
        return
    expected = shape.metadata.get("error", {}).get("httpStatusCode")
    if expected is not None and status != int(expected):
        walker.bad("<status>", status, f"HTTP status of {code} is {expected}")
    if isinstance(document, dict):
        walker.members(shape, document, "$", body_only=True)
    elif document is not None:
        walker.bad("$", document, f"type: {code} is a JSON object")


# -- hooking into botocore clients

_lock = threading.Lock()
_state: dict[str, bool] = {"default": False}
_recorded: list[Violation] = []


def set_default(enabled: bool) -> None:
    """Whether :meth:`RunningServer.client` validates responses when not told (the pytest switch sets it)."""
    _state["default"] = enabled


def default_enabled() -> bool:
    return _state["default"]


def take_recorded() -> list[Violation]:
    """The violations validated clients met since the last call, forgotten once taken (the pytest plugin
    takes them around each test, so one a test swallowed still fails it)."""
    with _lock:
        taken = list(_recorded)
        _recorded.clear()
        return taken


def _after_call(http_response: Any, model: Any, **_: Any) -> None:
    if http_response is None or getattr(http_response, "raw", None) is None:
        return  # a stubbed response (botocore.stub.Stubber): nothing came over the wire
    status = int(http_response.status_code)
    streamed = status < 300 and model.has_streaming_output
    body = None if streamed else http_response.content
    found = check_response(model, status, dict(http_response.headers), body)
    if found:
        with _lock:
            _recorded.extend(found)
        raise ResponseViolation(found)


def validate_responses(client: Any) -> Any:
    """Make a ``medical-imaging`` botocore/boto3 client check every response it receives; returns it."""
    client.meta.events.register(_SERVICE_EVENT, _after_call, unique_id=_HANDLER_ID)
    return client
