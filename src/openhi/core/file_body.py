"""A response body that is a short prefix, an open local file and a short suffix, so a server can ``sendfile`` the file."""

from __future__ import annotations

import os
from collections.abc import Iterator

#: chunk size when the body is read rather than sent with sendfile
CHUNK = 256 * 1024


class FileBody:
    """``prefix``, the first ``size`` bytes of the open file ``fd``, then ``suffix``; owns ``fd``.

    Iterating yields the bytes (and closes the file at the end), so any consumer of an iterable body can
    send it; a server with a zero-copy path sends ``prefix`` and then the file by its descriptor
    (:meth:`fileno`) and then ``suffix``, then calls :meth:`close`. The file is closed at the latest when the body is collected.
    """

    __slots__ = ("_fd", "prefix", "size", "suffix")

    def __init__(self, fd: int, size: int, prefix: bytes = b"", suffix: bytes = b"") -> None:
        self._fd: int | None = fd
        self.size = size
        self.prefix = prefix
        self.suffix = suffix

    def __len__(self) -> int:
        return len(self.prefix) + self.size + len(self.suffix)

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("the file body is closed")
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def read(self) -> bytes:
        """The whole body as bytes; closes the file."""
        return b"".join(self)

    def __iter__(self) -> Iterator[bytes]:
        try:
            if self.prefix:
                yield self.prefix
            fd, offset = self.fileno(), 0
            while offset < self.size:
                chunk = os.pread(fd, min(CHUNK, self.size - offset), offset)
                if not chunk:
                    raise OSError(f"file ended after {offset} of {self.size} bytes")
                offset += len(chunk)
                yield chunk
            if self.suffix:
                yield self.suffix
        finally:
            self.close()

    def __del__(self) -> None:
        self.close()
