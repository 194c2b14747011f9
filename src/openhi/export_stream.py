"""A WADO-RS ``multipart/related`` answer read as it arrives: each part handed over as soon as it is complete."""

from __future__ import annotations

from collections.abc import Callable, Iterator

#: bytes read from the connection at a time (straight into the buffer: one copy from the socket)
CHUNK = 1 << 20
#: the buffer's first size; it grows to hold a part larger than half of it
BUFFER = 8 << 20
#: a part's headers (or what comes before the first boundary) longer than this is not an answer
_HEAD_LIMIT = 64 * 1024


class MultipartError(ValueError):
    """The body is not the multipart/related answer it says it is, or ends before its close delimiter."""


def boundary_of(content_type: str) -> bytes | None:
    """The ``boundary`` parameter of a ``multipart/related`` Content-Type (None: not multipart)."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/related":
        return None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    return None


def _headers(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            out[name.strip().lower()] = value.strip()
    return out


class _Buffer:
    """Bytes read from the body and not consumed yet: ``data[start:end]``."""

    def __init__(self, readinto: Callable[[memoryview], int]) -> None:
        self.readinto = readinto
        self.data = bytearray(BUFFER)
        self.start = self.end = 0

    def more(self) -> None:
        """Read more of the body. Raises MultipartError at its end."""
        if len(self.data) - self.end < CHUNK:
            kept = self.end - self.start
            if kept + CHUNK > len(self.data) // 2:  # hold a large part: a bigger buffer
                self.data.extend(bytes(max(len(self.data), kept + CHUNK)))
            self.data[:kept] = self.data[self.start : self.end]  # what is not consumed moves to the front
            self.start, self.end = 0, kept
        with memoryview(self.data) as view:
            n = self.readinto(view[self.end : self.end + CHUNK])
        if not n:
            raise MultipartError("the answer ends before its close delimiter")
        self.end += n

    def find(self, what: bytes, start: int) -> int:
        return self.data.find(what, start, self.end)


def parts(
    readinto: Callable[[memoryview], int], boundary: bytes
) -> Iterator[tuple[dict[str, str], memoryview]]:
    """(headers with lower-case names, content) of each part of the body ``readinto(b)`` reads (0 at
    its end). The content is a view of a buffer that is reused: it is valid until the next part is
    asked for.

    Raises MultipartError: the body does not start with the boundary, or ends inside a part.
    """
    delimiter = b"\r\n--" + boundary
    buf = _Buffer(readinto)
    buf.data[:2] = b"\r\n"  # the first delimiter has no CRLF before it
    buf.end = 2
    found = buf.find(delimiter, 0)
    while found < 0:  # the first delimiter (a preamble before it is ignored)
        if buf.end > _HEAD_LIMIT:
            raise MultipartError("the answer does not start with its boundary")
        buf.more()
        found = buf.find(delimiter, 0)
    buf.start = found + len(delimiter)
    while True:
        while buf.end - buf.start < 2:
            buf.more()
        if buf.data[buf.start : buf.start + 2] == b"--":  # the close delimiter
            return
        end = buf.find(b"\r\n\r\n", buf.start)
        while end < 0:
            if buf.end - buf.start > _HEAD_LIMIT:
                raise MultipartError("a part's headers do not end")
            buf.more()
            end = buf.find(b"\r\n\r\n", buf.start)
        headers = _headers(bytes(buf.data[buf.start : end]))
        buf.start = end + 4  # the part's content
        scan = buf.start
        found = buf.find(delimiter, scan)
        while found < 0:
            scan = max(buf.start, buf.end - len(delimiter) + 1)  # positions (relative) survive a move
            offset = buf.start
            buf.more()
            scan += buf.start - offset
            found = buf.find(delimiter, scan)
        view = memoryview(buf.data)[buf.start : found]
        try:
            yield headers, view
        finally:
            view.release()
        buf.start = found + len(delimiter)
