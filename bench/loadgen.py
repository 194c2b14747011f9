"""One asyncio HTTP/1.1 keep-alive load generator (raw streams) used for every system in the peer benchmark."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: how long a single request may take before it counts as an error and its connection is dropped
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Request:
    """One HTTP request to replay; ``url`` is absolute (``http://127.0.0.1:PORT/path?query``)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Result:
    """What a run measured: counts, rates and latency percentiles (milliseconds)."""

    connections: int
    seconds: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mb_per_s: float
    body_bytes: int
    statuses: dict[int, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (``nan`` when empty); the benchmarks' one percentile rule."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _target(requests: Sequence[Request]) -> tuple[str, int]:
    hosts = {(urlsplit(r.url).hostname or "", urlsplit(r.url).port or 80) for r in requests}
    if len(hosts) != 1:
        raise ValueError(f"all requests must go to one host:port, got {sorted(hosts)}")
    return hosts.pop()


def _encode(req: Request, host: str, port: int) -> bytes:
    """The request's bytes on the wire: request line, headers (Host and Content-Length added), body."""
    parts = urlsplit(req.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {k.lower(): (k, v) for k, v in req.headers.items()}
    lines = [f"{req.method} {target} HTTP/1.1"]
    if "host" not in headers:
        lines.append(f"Host: {host}:{port}")
    lines += [f"{k}: {v}" for k, v in headers.values() if k.lower() != "content-length"]
    if req.body or req.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(req.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body


class _Connection:
    """A keep-alive HTTP/1.1 connection that sends pre-encoded requests and reads whole responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, wire: bytes) -> tuple[int, int]:
        """Send ``wire``; return (status, body length). Reconnects when the server closed the connection."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        reader, writer = self.reader, self.writer
        writer.write(wire)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        length = 0
        pos = lower.find(b"\r\ncontent-length:")
        if pos >= 0:
            end = lower.index(b"\r\n", pos + 2)
            length = int(lower[pos + 17 : end])
            if length:
                await reader.readexactly(length)
        elif b"\r\ntransfer-encoding: chunked" in lower:
            length = await self._read_chunked(reader)
        elif status not in (204, 304) and not (100 <= status < 200):
            length = len(await reader.read())  # body delimited by connection close
            self.close()
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, length

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> int:
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return total
            await reader.readexactly(size + 2)
            total += size

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(requests: Sequence[Request], connections: int, duration: float, warmup: float = 0.0) -> Result:
    """Replay ``requests`` round-robin over ``connections`` keep-alive connections for ``duration`` seconds.

    A ``warmup`` period first runs the same loop without recording. Every response with status ≥ 400, and
    every connection failure or request slower than ``REQUEST_TIMEOUT_S``, counts as an error.
    """
    if not requests:
        raise ValueError("no requests")
    host, port = _target(requests)
    wires = [_encode(r, host, port) for r in requests]
    order: Iterator[int] = itertools.cycle(range(len(wires)))
    tally = _Tally()
    t_start = time.perf_counter()
    measure_from = t_start + warmup
    stop_at = measure_from + duration

    async def worker() -> None:
        conn = _Connection(host, port)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                wire = wires[next(order)]
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        status, length = await conn.request(wire)
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ValueError,
                    TimeoutError,
                ):
                    conn.close()
                    if t0 >= measure_from:
                        tally.errors += 1
                    await asyncio.sleep(0.01)
                    continue
                if t0 < measure_from:
                    continue
                tally.record(time.perf_counter() - t0, status, length)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = max(time.perf_counter() - measure_from, 1e-9)
    return _result(connections, elapsed, tally)


async def run_each(requests: Sequence[Request], connections: int, timeout: float) -> Result:
    """Send every request exactly once over ``connections`` connections (e.g. an upload); bounded by ``timeout``."""
    if not requests:
        raise ValueError("no requests")
    host, port = _target(requests)
    queue = iter([_encode(r, host, port) for r in requests])
    tally = _Tally()

    async def worker() -> None:
        conn = _Connection(host, port)
        try:
            for wire in queue:
                t0 = time.perf_counter()
                try:
                    status, length = await conn.request(wire)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                    conn.close()
                    tally.errors += 1
                    continue
                tally.record(time.perf_counter() - t0, status, length)
        finally:
            conn.close()

    t_start = time.perf_counter()
    async with asyncio.timeout(timeout):
        await asyncio.gather(*(worker() for _ in range(connections)))
    return _result(connections, time.perf_counter() - t_start, tally)


@dataclass
class _Tally:
    """What the connections of one run saw: a latency per answered request, statuses, errors, bytes."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    bytes: int = 0

    def record(self, latency: float, status: int, length: int) -> None:
        self.latencies.append(latency)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.bytes += length
        if status >= 400:
            self.errors += 1


def _result(connections: int, elapsed: float, tally: _Tally) -> Result:
    n = len(tally.latencies)
    return Result(
        connections=connections,
        seconds=elapsed,
        requests=n,
        errors=tally.errors,
        requests_per_s=n / elapsed,
        p50_ms=percentile(tally.latencies, 50) * 1000,
        p99_ms=percentile(tally.latencies, 99) * 1000,
        mb_per_s=tally.bytes / elapsed / 1e6,
        body_bytes=tally.bytes,
        statuses=dict(sorted(tally.statuses.items())),
    )


def run_sync(requests: Sequence[Request], connections: int, duration: float, warmup: float = 0.0) -> Result:
    """:func:`run` in a fresh event loop."""
    return asyncio.run(run(requests, connections, duration, warmup))


def pin_to(cores: set[int]) -> set[int]:
    """Pin the calling thread (the generator's event loop) to ``cores``; return the previous affinity."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    return previous


async def _run_httpx(requests: Sequence[Request], connections: int, duration: float) -> Result:
    """The same loop with httpx.AsyncClient (kept only to compare generators: ``--compare``)."""
    import httpx

    tally = _Tally()
    order = itertools.cycle(requests)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            while (t0 := time.perf_counter()) < stop_at:
                req = next(order)
                try:
                    resp = await client.request(
                        req.method, req.url, headers=dict(req.headers), content=req.body or None
                    )
                except httpx.HTTPError:
                    tally.errors += 1
                    continue
                tally.record(time.perf_counter() - t0, resp.status_code, len(resp.content))

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
    return _result(connections, time.perf_counter() - t_start, tally)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", "-c", type=int, default=8)
    parser.add_argument("--seconds", "-d", type=float, default=3.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the generator to this core")
    parser.add_argument("--compare", action="store_true", help="also run the httpx generator on the same URL")
    args = parser.parse_args()
    if args.cpu is not None:
        pin_to({args.cpu})
    reqs = [Request("GET", args.url)]
    raw = run_sync(reqs, args.connections, args.seconds, warmup=min(1.0, args.seconds / 3))
    print(
        f"raw asyncio streams: {raw.requests_per_s:.0f} req/s, p50 {raw.p50_ms:.2f} ms, "
        f"p99 {raw.p99_ms:.2f} ms, {raw.mb_per_s:.1f} MB/s, errors {raw.errors}"
    )
    if args.compare:
        with contextlib.suppress(ImportError):
            hx = asyncio.run(_run_httpx(reqs, args.connections, args.seconds))
            print(
                f"httpx.AsyncClient:   {hx.requests_per_s:.0f} req/s, p50 {hx.p50_ms:.2f} ms, "
                f"p99 {hx.p99_ms:.2f} ms, {hx.mb_per_s:.1f} MB/s, errors {hx.errors}"
            )


if __name__ == "__main__":
    main()
