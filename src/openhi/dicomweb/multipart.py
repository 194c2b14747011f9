"""A ``multipart/related`` writer (RFC 2046 §5.1, RFC 2387) for WADO-RS answers: framing and part headers.

The framing is fixed: the body opens with ``--boundary CRLF``, each part is its header lines, a blank
line and its bytes; parts are separated by ``CRLF --boundary CRLF`` and the body ends with
``CRLF --boundary-- CRLF``. A part's ``Content-Type`` header is spelled exactly so and carries the
part's ``transfer-syntax`` parameter (``Content-Type: image/jphc; transfer-syntax=1.2.840.10008.1.2.4.202``):
viewers (OHIF) read a frame's syntax only from a header spelled that way. The answer's own
Content-Type names the parts' ``type`` and the boundary, never a transfer syntax.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator

CRLF = b"\r\n"


def new_boundary() -> str:
    """A fresh boundary: 32 hex digits (cannot occur by chance in a part, needs no quoting)."""
    return secrets.token_hex(16)


class Multipart:
    """The framing of one multipart/related answer whose parts are of media type ``type``."""

    __slots__ = ("_close", "_dash", "boundary", "type")

    def __init__(self, type: str, boundary: str | None = None) -> None:
        self.type = type
        self.boundary = boundary or new_boundary()
        self._dash = b"--" + self.boundary.encode("ascii")
        self._close = CRLF + self._dash + b"--" + CRLF

    @property
    def content_type(self) -> str:
        """The answer's Content-Type: ``multipart/related; type="…"; boundary=…``."""
        return f'multipart/related; type="{self.type}"; boundary={self.boundary}'

    def head(self, media_type: str, transfer_syntax: str | None = None, *, first: bool) -> bytes:
        """What comes before a part's bytes: the delimiter (preceded by CRLF unless ``first``), the part's
        ``Content-Type`` (with ``; transfer-syntax=…`` when given) and the blank line."""
        value = media_type if transfer_syntax is None else f"{media_type}; transfer-syntax={transfer_syntax}"
        lead = b"" if first else CRLF
        return lead + self._dash + CRLF + b"Content-Type: " + value.encode("latin-1") + CRLF + CRLF

    def close(self) -> bytes:
        """The close delimiter that ends the body (after the last part's bytes)."""
        return self._close

    def empty(self) -> bytes:
        """A body without parts (RFC 2046 asks for one part at least; WADO-RS never sends it empty)."""
        return self._dash + b"--" + CRLF

    def stream(self, parts: Iterable[tuple[str, str | None, Iterable[bytes] | bytes]]) -> Iterator[bytes]:
        """The whole body, chunk by chunk, from ``(media type, transfer syntax or None, bytes or chunks)``
        parts (each part's content is only read when the body reaches it)."""
        first = True
        for media_type, syntax, content in parts:
            yield self.head(media_type, syntax, first=first)
            first = False
            if isinstance(content, bytes | bytearray | memoryview):
                yield bytes(content)
            else:
                yield from content
        yield self.empty() if first else self._close

    def join(self, parts: Iterable[tuple[str, str | None, bytes]]) -> bytes:
        """The whole body as bytes."""
        return b"".join(self.stream(parts))
