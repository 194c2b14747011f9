"""uvicorn's httptools protocol plus the ASGI zero-copy send extension (``http.response.zerocopysend``).

uvicorn answers an ASGI app only with bytes it is handed, so a frame blob would be read into memory, copied
into the response and copied again into the socket. This protocol advertises the ASGI extension
(https://asgi.readthedocs.io/en/latest/extensions.html#zero-copy-send) and serves such a message with
``os.sendfile`` from the open file to the socket when nothing else is queued on the connection; if the socket
takes only part of it, or the transport is not a plain TCP socket, the rest goes through the transport like
any body. Everything else (parsing, keep-alive, flow control, bodies) is uvicorn's own code.

A response's head and its first small body chunks are held (:class:`_HeldWrites`) until the response ends,
grows past :data:`HOLD_BYTES`, or its file goes out: an ordinary response leaves in one ``write`` instead of
two, and a file's head goes out in one ``send(MSG_MORE)`` just before its ``sendfile``, so that head and
file share full TCP segments (nginx's ``tcp_nopush``) without two ``TCP_CORK`` calls per response.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

ZEROCOPY = "http.response.zerocopysend"
Message = MutableMapping[str, Any]


class ZeroCopyHttpToolsProtocol(HttpToolsProtocol):
    """Every request's scope advertises ``http.response.zerocopysend``; its send serves that message."""

    _tcp_fd: int | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = _plain_socket(transport)
        self._tcp_fd = None if sock is None else sock.fileno()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            return
        cycle.scope.setdefault("extensions", {})[ZEROCOPY] = {}
        held = _HeldWrites(cycle.transport, cycle)
        cycle.transport = held  # type: ignore[assignment]
        # The ASGI task looks ``cycle.send`` up when it first runs, which is after this method returns.
        original: Callable[[Message], Awaitable[None]] = cycle.send  # type: ignore[assignment]
        cycle.send = _send_with_zerocopy(cycle, original, held, self._tcp_fd)  # type: ignore[method-assign,assignment]


#: At most this many bytes of a response (its head, small first body chunks) wait to leave together.
HOLD_BYTES = 64 * 1024


class _HeldWrites:
    """The cycle's transport, holding what the cycle writes once its response has started.

    Held bytes leave in one write when the response ends, when more than :data:`HOLD_BYTES` would be
    held, before the transport is closed, or (with ``take``) ahead of the response's file. Everything
    else (the ``100 Continue`` line, ``is_closing``, buffer sizes) is the transport's own.
    """

    __slots__ = ("_cycle", "_held", "_size", "transport")

    def __init__(self, transport: Any, cycle: RequestResponseCycle) -> None:
        self.transport = transport
        self._cycle = cycle
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not self._cycle.response_started or self._size + len(data) > HOLD_BYTES:
            self._held.append(data)
            self.flush()
            return
        self._held.append(data)
        self._size += len(data)

    def take(self) -> bytes:
        """The held bytes, no longer held (the caller sends them)."""
        data = b"".join(self._held)
        self._held.clear()
        self._size = 0
        return data

    def flush(self) -> None:
        """Write what is held; on a transport already closing (the client went away) drop it."""
        if self._held:
            data = self.take()
            if data and not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _send_with_zerocopy(
    cycle: RequestResponseCycle,
    send: Callable[[Message], Awaitable[None]],
    held: _HeldWrites,
    sock_fd: int | None,
) -> Callable[[Message], Awaitable[None]]:
    async def zerocopy_send(message: Message) -> None:
        try:
            if message["type"] == ZEROCOPY:
                await _send_file(cycle, message, held, sock_fd)
            else:
                await send(message)
        except BaseException:
            held.flush()
            raise
        if cycle.response_complete or cycle.disconnected:
            held.flush()

    return zerocopy_send


def _plain_socket(transport: Any) -> Any:
    """The transport's TCP socket, or None (TLS, Unix socket, no socket)."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return None
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock


def _libc_send() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        send: Any = libc.send
    except (OSError, AttributeError):
        return None
    send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
    send.restype = ctypes.c_ssize_t
    fn: Callable[..., int] = send
    return fn


#: ``send(2)`` on a descriptor, for its flags: uvloop's socket wrapper offers no ``send``
_SEND = _libc_send()
_MSG_MORE: int = getattr(socket, "MSG_MORE", 0)
_MSG_NOSIGNAL: int = getattr(socket, "MSG_NOSIGNAL", 0)


def _send_more(fd: int, data: bytes) -> int:
    """``send(fd, data, MSG_MORE)``: bytes sent now (0 when the socket buffer is full). The kernel holds
    them until the data that follows (the file) fills the segment. Raises OSError as ``send`` fails."""
    if _SEND is None or not _MSG_MORE:
        raise OSError("send(MSG_MORE) is not available")
    n = _SEND(fd, data, len(data), _MSG_MORE | _MSG_NOSIGNAL)
    if n >= 0:
        return n
    err = ctypes.get_errno()
    if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
        return 0
    raise OSError(err, os.strerror(err))


async def _send_file(
    cycle: RequestResponseCycle, message: Message, held: _HeldWrites, sock_fd: int | None
) -> None:
    if not cycle.response_started or cycle.response_complete:
        raise RuntimeError(
            f"Unexpected ASGI message '{ZEROCOPY}' before the response start or after its end."
        )
    if cycle.chunked_encoding:
        raise RuntimeError(f"'{ZEROCOPY}' needs a response with a Content-Length.")
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    fd = message["file"].fileno()
    offset = message.get("offset")
    if offset is None:
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    count = message.get("count")
    if count is None:
        count = os.fstat(fd).st_size - offset
    if cycle.scope["method"] != "HEAD":
        if count > cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        cycle.expected_content_length -= count
        _write_file(held.transport, sock_fd, held.take(), fd, offset, count)
    else:
        held.flush()
    if not message.get("more_body", False):
        if cycle.scope["method"] == "HEAD":
            cycle.expected_content_length = 0
        if cycle.expected_content_length != 0:
            raise RuntimeError("Response content shorter than Content-Length")
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()


def _write_file(transport: Any, sock_fd: int | None, head: bytes, fd: int, offset: int, count: int) -> None:
    """``head`` (``send`` with MSG_MORE) then ``sendfile`` straight to the socket when the transport has
    nothing queued (so bytes stay in order); whatever the socket does not take now is queued on the
    transport (the file's rest read from it)."""
    sent = 0
    if sock_fd is not None and transport.get_write_buffer_size() == 0:
        try:
            if head and count > 0:
                head = head[_send_more(sock_fd, head) :]
            while not head and sent < count:
                n = os.sendfile(sock_fd, fd, offset + sent, count - sent)
                if n == 0:
                    break
                sent += n
        except (BlockingIOError, InterruptedError):
            pass  # the socket buffer is full: the transport queues the rest and sends it when it drains
        except OSError:
            pass  # e.g. a file system without sendfile support: fall back to reading
    if head:
        transport.write(head)
    if sent < count:
        rest = os.pread(fd, count - sent, offset + sent)
        if len(rest) != count - sent:
            raise RuntimeError("The file is shorter than the count to send.")
        transport.write(rest)
