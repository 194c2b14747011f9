"""A small HTTP/1.1 client connection (``openhi export``, webhook deliveries): one keep-alive socket, bodies read into the caller's buffer.

``http.client`` would do, but it loads the ``email`` package (a fifth of a short export's start-up),
parses every answer's headers with it and reads a body through two buffers; here a request goes out in
one write and a streamed body goes from the socket straight into the caller's buffer (``recv_into``).
Bodies are delimited by Content-Length, chunked transfer coding, or the end of the connection.
"""

from __future__ import annotations

import socket
from typing import Any

#: longest status line, header line or chunk-size line accepted
_LINE_LIMIT = 64 * 1024
_HEADERS_LIMIT = 256


class Dropped(ConnectionError):
    """The connection ended before a complete answer (a keep-alive connection the server closed)."""


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1."""


class Response:
    """An answer's status and headers; its body is read with :meth:`readinto` or :meth:`read`."""

    def __init__(self, conn: WireConnection, status: int, headers: dict[str, str], will_close: bool) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        self.will_close = will_close
        encoding = headers.get("transfer-encoding", "").lower()
        self._chunked = "chunked" in encoding
        length = headers.get("content-length")
        self._left: int | None = None  # body bytes (or bytes of the current chunk) still to read
        self._to_close = not self._chunked and length is None  # the body ends with the connection
        if not self._chunked and length is not None:
            if not length.strip().isdigit():
                raise ProtocolError(f"bad Content-Length {length[:40]!r}")
            self._left = int(length)
        if self._to_close:
            self.will_close = True
        self.complete = self._left == 0 and not self._chunked

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def readinto(self, buffer: memoryview) -> int:
        """Body bytes into ``buffer``: at least one unless the body is over (then 0).

        Raises Dropped (the connection ended inside the body) and OSError.
        """
        if self.complete or not len(buffer):
            return 0
        if self._chunked:
            if not self._left:
                self._left = self._chunk_size()
                if not self._left:
                    self.complete = True
                    return 0
            n = self._conn.recv_into(buffer[: self._left])
            if not n:
                raise Dropped("the connection ended inside a chunk")
            self._left -= n
            if not self._left:
                self._conn.expect(b"\r\n")
            return n
        if self._left is None:  # until the connection ends
            n = self._conn.recv_into(buffer)
            self.complete = not n
            return n
        n = self._conn.recv_into(buffer[: self._left])
        if not n:
            raise Dropped("the connection ended inside the body")
        self._left -= n
        self.complete = not self._left
        return n

    def _chunk_size(self) -> int:
        line = self._conn.readline()
        size = line.split(b";", 1)[0].strip()
        try:
            value = int(size, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size[:20]!r}") from None
        if value == 0:
            while self._conn.readline():  # trailer fields, up to the blank line
                pass
        return value

    def read(self) -> bytes:
        """The rest of the body."""
        out = bytearray()
        chunk = bytearray(1 << 16)
        with memoryview(chunk) as view:
            while n := self.readinto(view):
                out += view[:n]
        return bytes(out)


class WireConnection:
    """One HTTP/1.1 connection to ``host:port`` (TLS when ``https``), opened on the first request."""

    def __init__(self, host: str, port: int, https: bool, timeout: float) -> None:
        self.host, self.port, self.https, self.timeout = host, port, https, timeout
        self._sock: Any = None
        self._buf = bytearray()  # received, not consumed
        self.used = False  # a request was answered on it (a failure may be a dropped keep-alive)

    def _open(self) -> Any:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.https:
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buf.clear()
        self.used = False

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        """Send the request; its answer's status and headers (the body is the caller's to read).

        Raises Dropped, ProtocolError and OSError.
        """
        if self._sock is None:
            self._sock = self._open()
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._sock.sendall(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self._sock.sendall(body)
        while True:
            status, fields, version = self._head()
            if not 100 <= status < 200:
                break
        self.used = True
        connection = fields.get("connection", "").lower()
        will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        if method == "HEAD" or status in (204, 304):
            fields = {**fields, "content-length": "0"}
            fields.pop("transfer-encoding", None)
        return Response(self, status, fields, will_close)

    def _head(self) -> tuple[int, dict[str, str], str]:
        line = self.readline()
        version, _, rest = line.decode("latin-1").partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.1 status line: {line[:60]!r}")
        fields: dict[str, str] = {}
        for _ in range(_HEADERS_LIMIT):
            field = self.readline()
            if not field:
                return int(code), fields, version
            name, colon, value = field.decode("latin-1").partition(":")
            if not colon:
                raise ProtocolError(f"bad header line {field[:60]!r}")
            key = name.strip().lower()
            fields[key] = f"{fields[key]}, {value.strip()}" if key in fields else value.strip()
        raise ProtocolError("too many header lines")

    def readline(self) -> bytes:
        """The next line without its CRLF. Raises Dropped and ProtocolError."""
        start = 0
        while True:
            end = self._buf.find(b"\r\n", start)
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                return line
            if len(self._buf) > _LINE_LIMIT:
                raise ProtocolError("a line of the answer is too long")
            start = max(0, len(self._buf) - 1)
            data = self._sock.recv(65536)
            if not data:
                raise Dropped("the connection ended before the answer")
            self._buf += data

    def expect(self, what: bytes) -> None:
        """Consume ``what`` (the CRLF after a chunk). Raises Dropped and ProtocolError."""
        while len(self._buf) < len(what):
            data = self._sock.recv(65536)
            if not data:
                raise Dropped("the connection ended inside the body")
            self._buf += data
        if self._buf[: len(what)] != what:
            raise ProtocolError("a chunk does not end with CRLF")
        del self._buf[: len(what)]

    def recv_into(self, buffer: memoryview) -> int:
        """Bytes received into ``buffer`` (those already buffered first); 0 when the connection ended."""
        if not self._buf:
            received: int = self._sock.recv_into(buffer)
            return received
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        del self._buf[:n]
        return n
