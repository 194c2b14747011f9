"""The zero-copy send extension on uvicorn's httptools protocol: bytes, order, keep-alive, fallbacks."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from openhi.core.file_body import FileBody
from openhi.zerocopy import HOLD_BYTES, ZEROCOPY, ZeroCopyHttpToolsProtocol, _HeldWrites, _write_file

PREFIX = b"PREFIX-BOXES"


def _app(files: dict[str, Path]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        path = files.get(scope["path"])
        if path is None:  # an ordinary body on the same connection
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        assert ZEROCOPY in scope["extensions"]
        fd = os.open(path, os.O_RDONLY)
        body = FileBody(fd, os.fstat(fd).st_size, PREFIX)
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body.prefix, "more_body": True})
        await send({"type": ZEROCOPY, "file": body, "offset": 0, "count": body.size})
        body.close()

    return app


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, dict[str, bytes]]]:
    contents = {"/small": os.urandom(1000), "/big": os.urandom(24 * 1024 * 1024 + 7)}
    files = {}
    for name, data in contents.items():
        files[name] = tmp_path / name.strip("/")
        files[name].write_bytes(data)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _app(files), http=ZeroCopyHttpToolsProtocol, lifespan="off", log_level="warning", access_log=False
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port, contents
    srv.should_exit = True
    thread.join(10)
    sock.close()


def test_file_bodies_arrive_whole_and_in_order_on_one_keep_alive_connection(
    server: tuple[int, dict[str, bytes]],
) -> None:
    port, contents = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for path in ("/small", "/big", "/plain", "/big", "/small"):
        conn.request("POST", path, body=b"{}")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        if path == "/plain":
            assert body == b"ok"
        else:
            assert body == PREFIX + contents[path]
            assert int(resp.headers["content-length"]) == len(body)
    conn.close()


def test_a_slow_reader_gets_the_rest_through_the_transport(server: tuple[int, dict[str, bytes]]) -> None:
    """A file larger than the socket buffers and a client that reads late: sendfile stops part way and the
    transport queues the rest."""
    port, contents = server
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(30)
    sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    time.sleep(0.3)  # let the server fill the socket and queue the rest
    data = b""
    expected = PREFIX + contents["/big"]
    while len(data) < len(expected) + 40:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and len(data.split(b"\r\n\r\n", 1)[1]) >= len(expected):
            break
    sock.close()
    assert data.split(b"\r\n\r\n", 1)[1] == expected


class _QueuedTransport:
    """A transport that already holds unsent bytes: the file must be queued after them, not sendfile'd."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return 10

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_with_bytes_queued_the_file_goes_through_the_transport(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    transport = _QueuedTransport()
    fd = os.open(path, os.O_RDONLY)
    try:
        _write_file(transport, -1, b"HEAD", fd, 2, 5)  # a bad socket: sendfile would fail loudly
    finally:
        os.close(fd)
    assert transport.written == [b"HEAD", b"23456"]


def test_head_and_file_go_out_by_send_more_and_sendfile_on_an_idle_socket(tmp_path: Path) -> None:
    """A real socket pair: the head leaves with MSG_MORE, the file by sendfile, nothing through the transport."""
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    left, right = socket.socketpair()
    left.setblocking(False)
    transport = _IdleTransport()
    fd = os.open(path, os.O_RDONLY)
    try:
        _write_file(transport, left.fileno(), b"HEAD", fd, 2, 5)
    finally:
        os.close(fd)
        left.close()
    assert transport.written == []
    assert right.recv(100) == b"HEAD23456"
    right.close()


class _IdleTransport(_QueuedTransport):
    def get_write_buffer_size(self) -> int:
        return 0


class _Cycle:
    def __init__(self, started: bool = False) -> None:
        self.response_started = started


class _Recorder(_IdleTransport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _held(cycle: _Cycle) -> tuple[_HeldWrites, _Recorder]:
    transport = _Recorder()
    return _HeldWrites(transport, cycle), transport  # type: ignore[arg-type]


def test_held_writes_leave_together_and_before_a_close() -> None:
    cycle = _Cycle()
    held, transport = _held(cycle)
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response starts: at once
    assert transport.written == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    cycle.response_started = True
    held.write(b"head")
    held.write(b"body")
    assert transport.written == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    assert held.is_closing() is False  # everything else is the transport's
    held.close()
    assert transport.written[1:] == [b"headbody"] and transport.closed


def test_held_writes_are_dropped_once_the_client_is_gone() -> None:
    held, transport = _held(_Cycle(started=True))
    held.write(b"head")
    transport.closed = True  # connection_lost closed the transport
    held.flush()
    held.close()
    assert transport.written == []


def test_held_writes_never_hold_more_than_the_limit() -> None:
    held, transport = _held(_Cycle(started=True))
    held.write(b"head")
    big = b"x" * HOLD_BYTES
    held.write(big)
    assert transport.written == [b"head" + big]
    assert held.take() == b""


def test_an_ordinary_response_leaves_in_one_write(server: tuple[int, dict[str, bytes]]) -> None:
    """Head and body of a small response arrive together (one segment on loopback), and a HEAD request's
    file response sends only its head."""
    port, _ = server
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)
    sock.sendall(b"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 OK") and first.endswith(b"\r\n\r\nok")
    sock.sendall(b"HEAD /small HTTP/1.1\r\nHost: x\r\n\r\n")
    head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    assert b"content-length: %d" % (len(PREFIX) + 1000) in head.lower()
    sock.close()
