"""Guards for untrusted JSON text: a nesting limit, valid Unicode only, and hostile values echoed safely."""

from __future__ import annotations

import json
import re
from typing import Any

from openhi.core.errors import ValidationError

#: The deepest nesting of JSON arrays/objects a request body, or a JSON document carried inside a member
#: (``copiableAttributes``, ``updatableAttributes``, ``removableAttributes``), may have. The deepest valid
#: request of the model nests 6 levels, an attribute document about 8; Python's parser gives up near 1,000.
MAX_JSON_DEPTH = 64

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(data: bytes, stop: int | None = None) -> int:
    """The deepest array/object nesting in JSON text (parsed or not, valid or not), without recursion;
    brackets inside strings do not count. With ``stop``, counting ends once the depth passes it."""
    brackets = _JSON_STRING.sub(b'""', data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += _DEPTH_STEP[byte]
        if depth > deepest:
            deepest = depth
            if stop is not None and deepest > stop:
                break
    return deepest


def check_depth(data: bytes, what: str) -> None:
    """Raise ``ValidationError`` when ``data`` nests deeper than :data:`MAX_JSON_DEPTH` (text with at most
    that many opening brackets in all is cleared by two ``count`` calls)."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return
    if json_depth(data, stop=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValidationError(
            f"{what} nests JSON arrays/objects deeper than the limit of {MAX_JSON_DEPTH} levels"
        )


def safe_text(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) written as ``\\udXXX`` escapes."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_unicode(value: str, path: str) -> None:
    """Raise ``ValidationError`` when ``value`` is not text every back end stores: it holds a lone
    surrogate (not Unicode text at all) or U+0000 (PostgreSQL's text type cannot hold it, so a value
    SQLite would keep could not be stored in the distributed deployment: it is refused in both)."""
    if "\x00" in value:
        raise ValidationError(
            f"Invalid value for parameter {safe_text(path)}: the character U+0000 is not allowed "
            f"(at character {value.index(chr(0))})"
        )
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ascii(value[exc.start : exc.end])[1:-1]
        raise ValidationError(
            f"Invalid value for parameter {safe_text(path)}: not valid Unicode text "
            f"(unpaired surrogate {bad} at character {exc.start})"
        ) from None


def check_embedded_json(raw: str | bytes, path: str) -> None:
    """Checks on a JSON document sent as a string/blob member, before anything parses it for use: its
    nesting depth, and valid Unicode in every key and string (``json.loads`` accepts ``"\\ud800"``).
    Text that is not JSON passes: the operation that reads it words that error."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    check_depth(data, f"Parameter {path}")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            check_unicode(node, path)
        elif isinstance(node, dict):
            for key, item in node.items():
                check_unicode(key, path)
                stack.append(item)
        elif isinstance(node, list):
            stack.extend(node)
