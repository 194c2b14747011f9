"""Messages the service writes into modeled ``Message`` strings (job and image set messages), made valid."""

from __future__ import annotations

import re

#: The model's ``Message`` shape (``DICOMImportJobProperties.message``, ``ImageSetProperties.message``,
#: ``GetImageSetResponse.message``, …): this pattern, 1 to 2048 characters. A unit test checks the
#: copy against the pinned model (core must not read botocore's files).
MESSAGE_PATTERN = r"[\w -:`]+"
MESSAGE_MIN = 1
MESSAGE_MAX = 2048

# \w as the model's (Java) regular expressions read it: ASCII letters, digits and '_'.
_VALID = re.compile(r"[A-Za-z0-9_ -:`]+")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_ -:`]")
_SUBSTITUTES = {
    ";": ",",
    "[": "(",
    "]": ")",
    "{": "(",
    "}": ")",
    "<": "(",
    ">": ")",
    "=": ":",
    "|": "/",
    "\\": "/",
    "~": "-",
    "?": ".",
    "@": " at ",
    "^": " ",
    "\t": " ",
    "\n": " ",
    "\r": " ",
}
_ELLIPSIS = "..."


def is_modeled_message(text: str) -> bool:
    """Whether ``text`` is a valid modeled ``Message`` (pattern, ASCII word characters, length)."""
    return MESSAGE_MIN <= len(text) <= MESSAGE_MAX and _VALID.fullmatch(text) is not None


def modeled_message(text: str) -> str:
    """``text`` made a valid modeled ``Message``: characters outside ``[\\w -:`]`` replaced by the
    nearest allowed ones (``;`` → ``,``, brackets → parentheses, other characters → ``_``), cut to
    2048 characters (ending in ``...``); an empty text becomes ``-``."""
    if is_modeled_message(text):
        return text
    out = _INVALID_CHAR.sub(lambda m: _SUBSTITUTES.get(m.group(0), "_"), text)
    if len(out) > MESSAGE_MAX:
        out = out[: MESSAGE_MAX - len(_ELLIPSIS)] + _ELLIPSIS
    return out or "-"
