"""The benchmark load generator (bench/loadgen.py) against a tiny local asyncio HTTP server: counts and percentiles."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BODY = b"x" * 1000


def _loadgen() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "loadgen.py"
    spec = importlib.util.spec_from_file_location("bench_loadgen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


async def _serve(seen: dict[str, int]) -> asyncio.Server:
    """Keep-alive HTTP/1.1: /ok → 200 + 1000 bytes, /chunked → 200 chunked 1000 bytes, else 503."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                length = 0
                if b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length) if length else b""
                path = head.split(b" ")[1].decode()
                seen[path] = seen.get(path, 0) + 1
                seen["body_bytes"] = seen.get("body_bytes", 0) + len(body)
                if path == "/ok":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + BODY)
                elif path == "/chunked":
                    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (BODY[:400], BODY[400:]))
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
                    )
                else:
                    writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_timed_run_counts_errors_and_percentiles() -> None:
    lg = _loadgen()
    seen: dict[str, int] = {}

    async def main() -> Any:
        server = await _serve(seen)
        port = server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        reqs = [
            lg.Request("GET", f"{base}/ok"),
            lg.Request("GET", f"{base}/chunked"),
            lg.Request("POST", f"{base}/fail", {"Content-Type": "application/json"}, b'{"a":1}'),
        ]
        try:
            return await lg.run(reqs, connections=4, duration=0.5, warmup=0.1)
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(main())
    assert result.requests > 30
    assert sum(result.statuses.values()) == result.requests
    assert set(result.statuses) == {200, 503}
    # round-robin over three requests: a third of the responses are the 503s, all counted as errors
    assert abs(result.statuses[503] - result.requests / 3) <= 4
    assert result.errors == result.statuses[503]
    assert result.body_bytes == result.statuses[200] * 1000 + result.statuses[503] * 4
    assert 0 < result.p50_ms <= result.p99_ms < 1000
    assert result.requests_per_s == result.requests / result.seconds
    assert 0.45 < result.seconds < 2.0
    assert seen["body_bytes"] == 7 * seen["/fail"]  # the POST body went out with its Content-Length


def test_run_each_sends_every_request_once() -> None:
    lg = _loadgen()
    seen: dict[str, int] = {}

    async def main() -> Any:
        server = await _serve(seen)
        port = server.sockets[0].getsockname()[1]
        reqs = [lg.Request("POST", f"http://127.0.0.1:{port}/ok", {}, b"y" * i) for i in range(25)]
        try:
            return await lg.run_each(reqs, connections=3, timeout=10)
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(main())
    assert result.requests == 25 and result.errors == 0 and result.statuses == {200: 25}
    assert seen["/ok"] == 25 and seen["body_bytes"] == sum(range(25))
    assert result.p50_ms <= result.p99_ms


def test_percentile_is_nearest_rank() -> None:
    lg = _loadgen()
    values = [float(v) for v in range(1, 101)]
    assert lg.percentile(values, 50) == 51.0  # round(0.5 * 99) = 50 → the 51st value
    assert lg.percentile(values, 99) == 99.0
    assert lg.percentile([], 50) != lg.percentile([], 50)  # nan
