"""A streaming ``multipart/related`` reader (RFC 2046 §5.1, RFC 2387): each part's body to a file of its own.

The request body is read from a file in chunks, never whole: a part's bytes go to a new file in the
caller's directory as they are found, so memory stays at about two chunks whatever the part sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: bytes read from the body at a time
CHUNK = 1024 * 1024
#: the header block of one part may be at most this large
MAX_HEADER_BYTES = 16 * 1024
#: parts one request may hold at most (each becomes a file)
MAX_PARTS = 50_000
#: RFC 2046 allows 1..70 characters; a little more is tolerated, never an empty one
MAX_BOUNDARY = 200


class MultipartError(ValueError):
    """The body is not well-formed multipart: no delimiter, no closing delimiter, a bad header block."""


@dataclass(frozen=True)
class Part:
    """One body part: where its bytes are, how many, and its headers (names in lower case)."""

    path: Path
    size: int
    headers: dict[str, str]

    @property
    def content_type(self) -> str | None:
        """The part's media type (``type/subtype``, lower case) without parameters; None when absent."""
        value = self.headers.get("content-type")
        return media_type(value)[0] if value else None


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lower case) and the parameters (names lower case, quoted strings unquoted) of a
    Content-Type value (RFC 9110 §8.3.1). A malformed parameter is skipped."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        semi = rest.find(";", i)
        if 0 <= semi < eq:  # a parameter without a value: skipped
            i = semi + 1
            continue
        name = rest[i:eq].strip().lower()
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':  # quoted-string, with quoted-pairs
            i += 1
            chars: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            i += 1  # the closing quote
            text = "".join(chars)
            semi = rest.find(";", i)
            i = n if semi < 0 else semi
        else:
            semi = rest.find(";", i)
            end = n if semi < 0 else semi
            text = rest[i:end].strip()
            i = end
        if name and name not in params:
            params[name] = text
    return head.strip().lower(), params


class _Stream:
    """The body with a buffer of what was read but not yet consumed."""

    def __init__(self, source: IO[bytes], chunk: int) -> None:
        self.source = source
        self.chunk = chunk
        self.buf = bytearray()
        self.eof = False

    def fill(self) -> bool:
        """Read one more chunk into the buffer; False at the end of the body."""
        if self.eof:
            return False
        data = self.source.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def need(self, count: int) -> bool:
        """At least ``count`` bytes buffered (False when the body ends first)."""
        while len(self.buf) < count:
            if not self.fill():
                return False
        return True


def read_multipart(
    source: IO[bytes],
    boundary: str,
    directory: Path,
    *,
    chunk: int = CHUNK,
    max_parts: int = MAX_PARTS,
) -> list[Part]:
    """Every body part of ``source`` (positioned at the body's start), each written to a new file in
    ``directory`` (which the caller removes, with the files, when done).

    The preamble before the first delimiter and the epilogue after the closing one are ignored; a
    delimiter line is ``--boundary``, then optional spaces or tabs, then CRLF, and a part's body ends
    at the CRLF before the next delimiter (RFC 2046 §5.1.1).

    Raises:
        MultipartError: no valid boundary, no first delimiter, a header block over
            :data:`MAX_HEADER_BYTES` or without its blank line, more than ``max_parts`` parts, or a
            body that ends before its closing delimiter.
    """
    if not boundary or len(boundary) > MAX_BOUNDARY or any(ord(c) < 32 or ord(c) > 126 for c in boundary):
        raise MultipartError("The multipart boundary is missing or not valid.")
    dash = b"--" + boundary.encode("ascii")
    delimiter = b"\r\n" + dash
    stream = _Stream(source, max(chunk, len(delimiter) + 4))
    stream.buf += b"\r\n"  # the first delimiter may open the body: it then has no CRLF of its own
    _skip_preamble(stream, delimiter)
    parts: list[Part] = []
    while True:
        if not stream.need(2):
            raise MultipartError("The multipart body ends without its closing delimiter.")
        if stream.buf[:2] == b"--":  # the close delimiter: the rest is the epilogue
            return parts
        _end_of_delimiter_line(stream)
        if len(parts) >= max_parts:
            raise MultipartError(f"The multipart body holds more than {max_parts} parts.")
        headers = _headers(stream)
        parts.append(_body(stream, delimiter, directory, len(parts), headers))


def _skip_preamble(stream: _Stream, delimiter: bytes) -> None:
    while True:
        at = stream.buf.find(delimiter)
        if at >= 0:
            del stream.buf[: at + len(delimiter)]
            return
        keep = len(delimiter) - 1
        if len(stream.buf) > keep:
            del stream.buf[: len(stream.buf) - keep]
        if not stream.fill():
            raise MultipartError("The body holds no multipart delimiter for its boundary.")


def _end_of_delimiter_line(stream: _Stream) -> None:
    """Consume the transport padding (spaces, tabs) and the CRLF that end a delimiter line."""
    while True:
        i = 0
        while i < len(stream.buf) and stream.buf[i] in b" \t":
            i += 1
        if i > MAX_HEADER_BYTES:
            raise MultipartError("A multipart delimiter line is too long.")
        if i + 2 <= len(stream.buf):
            if stream.buf[i : i + 2] != b"\r\n":
                raise MultipartError("A multipart delimiter is not followed by CRLF.")
            del stream.buf[: i + 2]
            return
        if not stream.fill():
            raise MultipartError("The multipart body ends without its closing delimiter.")


def _headers(stream: _Stream) -> dict[str, str]:
    """The header block of a part (up to and including its blank line), parsed."""
    while True:
        if stream.buf[:2] == b"\r\n":  # no headers at all (an incomplete buffer is filled below)
            del stream.buf[:2]
            return {}
        end = stream.buf.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
        if end >= 0:
            block = bytes(stream.buf[:end])
            del stream.buf[: end + 4]
            return _parse_headers(block)
        if len(stream.buf) > MAX_HEADER_BYTES:
            raise MultipartError(f"A part's headers exceed {MAX_HEADER_BYTES} bytes.")
        if not stream.fill():
            raise MultipartError("The multipart body ends inside a part's headers.")


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    name = ""
    for raw in block.decode("latin-1").split("\r\n"):
        if raw[:1] in (" ", "\t") and name:  # an obsolete folded continuation line
            headers[name] += " " + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if not sep or not key.strip() or key != key.rstrip():
            raise MultipartError(f"A part has a malformed header line: {raw[:80]!r}")
        name = key.strip().lower()
        headers[name] = value.strip()  # a repeated header: the last one wins
    return headers


def _body(stream: _Stream, delimiter: bytes, directory: Path, index: int, headers: dict[str, str]) -> Part:
    """Write the part's body to its file, up to the next delimiter (consumed)."""
    path = directory / f"part-{index:06d}"
    keep = len(delimiter) - 1
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while True:
            at = stream.buf.find(delimiter)
            if at >= 0:
                _write(out, stream.buf, at)
                size += at
                del stream.buf[: at + len(delimiter)]
                return Part(path, size, headers)
            if len(stream.buf) > keep:  # all but what could be the start of a delimiter
                cut = len(stream.buf) - keep
                _write(out, stream.buf, cut)
                size += cut
                del stream.buf[:cut]
            if not stream.fill():
                raise MultipartError("The multipart body ends without its closing delimiter.")


def _write(out: IO[bytes], buf: bytearray, count: int) -> None:
    """The first ``count`` bytes of ``buf``, without a copy (the view is released before ``buf`` shrinks)."""
    with memoryview(buf) as view, view[:count] as head:
        out.write(head)
