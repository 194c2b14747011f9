"""uvicorn's httptools protocol plus the ASGI zero-copy send extension (``http.response.zerocopysend``).

uvicorn answers an ASGI app only with bytes it is handed, so a frame blob would be read into memory, copied
into the response and copied again into the socket. This protocol advertises the ASGI extension
(https://asgi.readthedocs.io/en/latest/extensions.html#zero-copy-send) and serves such a message with
``os.sendfile`` from the open file to the socket when nothing else is queued on the connection; if the socket
takes only part of it, or the transport is not a plain TCP socket, the rest goes through the transport like
any body. Everything else (parsing, keep-alive, flow control, bodies) is uvicorn's own code.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
        # The ASGI task looks ``cycle.send`` up when it first runs, which is after this method returns.
        original: Callable[[Message], Awaitable[None]] = cycle.send  # type: ignore[assignment]
        cycle.send = _send_with_zerocopy(cycle, original, self._tcp_fd)  # type: ignore[method-assign,assignment]


def _send_with_zerocopy(
    cycle: RequestResponseCycle, send: Callable[[Message], Awaitable[None]], sock_fd: int | None
) -> Callable[[Message], Awaitable[None]]:
    corked = False

    async def zerocopy_send(message: Message) -> None:
        nonlocal corked
        if message["type"] == "http.response.start" and sock_fd is not None and not cycle.response_started:
            # Hold the head (and a small first body chunk) until the response is complete, so that head,
            # prefix and file leave in full segments, as nginx does with sendfile and tcp_nopush.
            corked = _set_cork(sock_fd, True)
        try:
            if message["type"] == ZEROCOPY:
                await _send_file(cycle, message, sock_fd)
            else:
                await send(message)
        except BaseException:
            if corked and sock_fd is not None:
                corked = not _set_cork(sock_fd, False)
            raise
        if corked and sock_fd is not None and (cycle.response_complete or cycle.disconnected):
            corked = not _set_cork(sock_fd, False)

    return zerocopy_send


def _plain_socket(transport: Any) -> Any:
    """The transport's TCP socket, or None (TLS, Unix socket, no socket)."""
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return None
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock


def _libc_setsockopt() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    setsockopt: Callable[..., int] = libc.setsockopt
    return setsockopt


#: ``setsockopt(2)`` on a descriptor: uvloop's socket wrapper builds a Python socket object for every call
_SETSOCKOPT = _libc_setsockopt()
_ON, _OFF = ctypes.c_int(1), ctypes.c_int(0)


def _set_cork(fd: int, on: bool) -> bool:
    """TCP_CORK on or off for the connection's descriptor; False where it cannot be set."""
    if _SETSOCKOPT is None:
        return False
    value = _ON if on else _OFF
    return _SETSOCKOPT(fd, socket.IPPROTO_TCP, socket.TCP_CORK, ctypes.byref(value), 4) == 0


async def _send_file(cycle: RequestResponseCycle, message: Message, sock_fd: int | None) -> None:
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
        _write_file(cycle.transport, sock_fd, fd, offset, count)
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


def _write_file(transport: Any, sock_fd: int | None, fd: int, offset: int, count: int) -> None:
    """``sendfile`` straight to the socket when the transport has nothing queued (so bytes stay in order);
    whatever the socket does not take now is read and queued on the transport."""
    sent = 0
    if sock_fd is not None and transport.get_write_buffer_size() == 0:
        try:
            while sent < count:
                n = os.sendfile(sock_fd, fd, offset + sent, count - sent)
                if n == 0:
                    break
                sent += n
        except (BlockingIOError, InterruptedError):
            pass  # the socket buffer is full: the transport queues the rest and sends it when it drains
        except OSError:
            pass  # e.g. a file system without sendfile support: fall back to reading
    if sent < count:
        rest = os.pread(fd, count - sent, offset + sent)
        if len(rest) != count - sent:
            raise RuntimeError("The file is shorter than the count to send.")
        transport.write(rest)
