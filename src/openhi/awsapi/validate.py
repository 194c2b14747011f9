"""Validates parsed params against the model's constraints (required, enum, pattern, min/max, unions)."""

from __future__ import annotations

import functools
import re
from typing import Any

from botocore.model import Shape, StructureShape

from openhi.awsapi.json_guard import safe_text
from openhi.core.errors import ValidationError

# Java character classes (``\p{Name}``) used by Smithy/Coral patterns, as Python class contents.
_JAVA_CLASSES: dict[str, str] = {
    "ASCII": r"\x00-\x7F",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Lower": "a-z",
    "Upper": "A-Z",
    "Punct": r"!-/:-@\[-`{-~",
    "Graph": r"!-~",
    "Print": r" -~",
    "Blank": r" \t",
    "Space": r" \t\n\x0B\f\r",
    "XDigit": "0-9a-fA-F",
    "Cntrl": r"\x00-\x1F\x7F",
}
_JAVA_CLASS = re.compile(r"\\p\{(\w+)\}")

# Patterns whose nested quantifiers backtrack exponentially on a near-miss, mapped to an equivalent
# linear form. ``X+([X ]*X+)*`` accepts exactly ``X([X ]*X)?``: printable text without outer spaces.
_EQUIVALENT_PATTERNS: dict[str, str] = {
    "[a-zA-Z0-9!-~]+([a-zA-Z0-9!-~ ]*[a-zA-Z0-9!-~]+)*": "[!-~](?:[!-~ ]*[!-~])?",
}

_MAX_SHOWN = 128
_NUMERIC = frozenset({"integer", "long", "float", "double"})


def translate_pattern(pattern: str) -> str:
    """Translate a model (Java-flavoured) regex to Python ``re`` syntax."""
    pattern = _EQUIVALENT_PATTERNS.get(pattern, pattern)
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            m = _JAVA_CLASS.match(pattern, i)
            if m is not None and m.group(1) in _JAVA_CLASSES:
                body = _JAVA_CLASSES[m.group(1)]
                out.append(body if in_class else f"[{body}]")
                i = m.end()
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


@functools.cache
def compiled_pattern(pattern: str) -> re.Pattern[str]:
    """Compile (once) a model pattern; ASCII semantics for ``\\d``/``\\w`` like Java's defaults."""
    return re.compile(translate_pattern(pattern), re.ASCII)


def _show(value: Any, sensitive: bool) -> str:
    if value is None:
        return "Value null"
    if sensitive:
        return "Value"
    if isinstance(value, bytes):
        return "Value"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 400:
        # str() only well below the 4,300 digits past which Python refuses the conversion
        return f"Value of {len(str(abs(value))) if value.bit_length() < 14_000 else 'over 4,200'} digits"
    text = str(value)
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return f"Value '{safe_text(text)}'"


class _Validator:
    __slots__ = ("errors",)

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, value: Any, path: str, constraint: str, sensitive: bool) -> None:
        self.errors.append(
            f"{_show(value, sensitive)} at '{safe_text(path)}' failed to satisfy constraint: Member must {constraint}"
        )

    def check(self, shape: Shape, value: Any, path: str, sensitive: bool) -> None:
        meta = shape.metadata
        sensitive = sensitive or bool(meta.get("sensitive"))
        type_name = shape.type_name
        if type_name == "structure":
            if isinstance(value, dict):
                self.structure(shape, value, path, sensitive)
        elif type_name == "string":
            if isinstance(value, str):
                self.string(shape, value, path, sensitive)
        elif type_name == "list":
            if isinstance(value, list):
                self.length(meta, value, len(value), path, sensitive)
                member = shape.member
                for i, item in enumerate(value):
                    if item is None:
                        self.fail(item, f"{path}[{i}]", "not be null", sensitive)
                    else:
                        self.check(member, item, f"{path}[{i}]", sensitive)
        elif type_name == "map":
            if isinstance(value, dict):
                self.length(meta, value, len(value), path, sensitive)
                key_shape, value_shape = shape.key, shape.value
                for k, v in value.items():
                    self.check(key_shape, k, f"{path}.{k}", sensitive)
                    self.check(value_shape, v, f"{path}.{k}", sensitive)
        elif type_name == "blob":
            if isinstance(value, (bytes, bytearray, memoryview)):
                self.length(meta, value, len(value), path, sensitive)
        elif type_name in _NUMERIC and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = meta.get("min"), meta.get("max")
            if low is not None and value < low:
                self.fail(value, path, f"have value greater than or equal to {low}", sensitive)
            if high is not None and value > high:
                self.fail(value, path, f"have value less than or equal to {high}", sensitive)

    def length(self, meta: dict[str, Any], value: Any, size: int, path: str, sensitive: bool) -> None:
        low, high = meta.get("min"), meta.get("max")
        if low is not None and size < low:
            self.fail(value, path, f"have length greater than or equal to {low}", sensitive)
        if high is not None and size > high:
            self.fail(value, path, f"have length less than or equal to {high}", sensitive)

    def string(self, shape: Shape, value: str, path: str, sensitive: bool) -> None:
        meta = shape.metadata
        enum = meta.get("enum")
        if enum is not None and value not in enum:
            self.fail(value, path, f"satisfy enum value set: [{', '.join(enum)}]", sensitive)
            return
        before = len(self.errors)
        self.length(meta, value, len(value), path, sensitive)
        pattern = meta.get("pattern")
        # Length first: never run a regex over an over-long value.
        if (
            pattern is not None
            and len(self.errors) == before
            and compiled_pattern(pattern).fullmatch(value) is None
        ):
            self.fail(value, path, f"satisfy regular expression pattern: {pattern}", sensitive)

    def structure(self, shape: Shape, value: dict[str, Any], path: str, sensitive: bool) -> None:
        members = shape.members
        for name in shape.required_members:
            if value.get(name) is None:
                self.fail(None, _join(path, name), "not be null", False)
        if shape.metadata.get("union"):
            chosen = [name for name in members if value.get(name) is not None]
            if len(chosen) != 1:
                got = ", ".join(chosen) if chosen else "none"
                self.errors.append(
                    f"Value at '{path or shape.name}' failed to satisfy constraint: Member must have "
                    f"exactly one of [{', '.join(members)}] set (got {got})"
                )
        for name, item in value.items():
            member = members.get(name)
            if member is None:
                self.errors.append(f"Unknown parameter '{safe_text(_join(path, name))}'")
            elif item is not None:
                self.check(member, item, _join(path, name), sensitive)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate_params(shape: StructureShape, params: dict[str, Any]) -> None:
    """Raise :class:`ValidationError` listing every constraint that ``params`` breaks (AWS message style).

    Valid params (nearly every request) pass a check compiled once per shape; only params it does not
    pass go through :class:`_Validator`, which finds and words every error.
    """
    if _passes(shape)(params):
        return
    validator = _Validator()
    validator.structure(shape, params, "", bool(shape.metadata.get("sensitive")))
    errors = validator.errors
    if errors:
        count = len(errors)
        noun = "validation error" if count == 1 else "validation errors"
        raise ValidationError(f"{count} {noun} detected: {'; '.join(errors)}")


Check = Any  # Callable[[Any], bool]; Any keeps the recursive closures simple for mypy


@functools.cache
def _passes(shape: Shape) -> Check:
    """A predicate, built once per shape, that is true only when :class:`_Validator` would find nothing
    wrong with a value of ``shape`` (values of another type pass, as they do there: the parser rejects
    those). False sends the value to the full validator, which words the errors."""
    meta = shape.metadata
    type_name = shape.type_name
    low, high = meta.get("min"), meta.get("max")

    def sized(size: int) -> bool:
        return (low is None or size >= low) and (high is None or size <= high)

    if type_name == "structure":
        members = shape.members
        required = tuple(shape.required_members)
        union = bool(meta.get("union"))
        checks: dict[str, Check] = {}  # filled lazily: shapes may refer to themselves

        def structure(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            for name in required:
                if value.get(name) is None:
                    return False
            if union and sum(1 for name in members if value.get(name) is not None) != 1:
                return False
            for name, item in value.items():
                check = checks.get(name)
                if check is None:
                    member = members.get(name)
                    if member is None:
                        return False
                    check = checks[name] = _passes(member)
                if item is not None and not check(item):
                    return False
            return True

        return structure
    if type_name == "string":
        enum = meta.get("enum")
        enum_set = frozenset(enum) if enum is not None else None
        pattern = meta.get("pattern")
        fullmatch = compiled_pattern(pattern).fullmatch if pattern is not None else None

        def string(value: Any) -> bool:
            if not isinstance(value, str):
                return True
            if enum_set is not None and value not in enum_set:
                return False
            return sized(len(value)) and (fullmatch is None or fullmatch(value) is not None)

        return string
    if type_name == "list":
        member_shape = shape.member

        def list_(value: Any) -> bool:
            if not isinstance(value, list):
                return True
            if not sized(len(value)):
                return False
            check = _passes(member_shape)
            return all(item is not None and check(item) for item in value)

        return list_
    if type_name == "map":
        key_shape, value_shape = shape.key, shape.value

        def map_(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            if not sized(len(value)):
                return False
            check_key, check_value = _passes(key_shape), _passes(value_shape)
            return all(check_key(k) and check_value(v) for k, v in value.items())

        return map_
    if type_name == "blob":
        return lambda value: not isinstance(value, (bytes, bytearray, memoryview)) or sized(len(value))
    if type_name in _NUMERIC:

        def number(value: Any) -> bool:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return True
            return (low is None or value >= low) and (high is None or value <= high)

        return number
    return lambda value: True
