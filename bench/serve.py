"""GetImageFrame throughput and latency vs nginx serving the same bytes; GetImageSetMetadata latency.

Usage: .venv/bin/python bench/serve.py [--n 300] [--size 512] [--seconds 8]
Imports an n-instance size×size signed 16-bit CT series into a fresh openhi, then drives openhi and an
nginx (static files, same frame bytes) with the same asyncio keep-alive HTTP/1.1 load generator at 8 and
32 connections. Prints a table and writes bench/results/serve-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import percentile, table, write_result
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from contract.helpers import active_datastore
from contract.imaging import run_import
from dicom_factory import make_ct_series
from openhi.testing import RunningServer, free_port

CREDS = Credentials("openhi-bench", "openhi-bench-secret")


def signed_post(endpoint: str, path: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 request (SigV4-signed once, replayed for the whole run)."""
    request = AWSRequest(
        method="POST", url=endpoint + path, data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(CREDS, "medical-imaging", "us-east-1").add_auth(request)
    host = endpoint.split("://", 1)[1]
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def plain_get(endpoint: str, path: str) -> bytes:
    host = endpoint.split("://", 1)[1]
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


async def _response(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status, length


async def _connection(
    port: int, requests: list[bytes], offset: int, deadline: float, latencies: list[float], errors: list[int]
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    i = offset
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            status, _ = await _response(reader)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(status)
            done += 1
            i += 1
    finally:
        writer.close()
    return done


async def _load(port: int, requests: list[bytes], connections: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[int] = []
    # warm up: one pass over a few requests per connection
    await asyncio.gather(
        *(_connection(port, requests, c * 7, time.perf_counter() + 0.5, [], []) for c in range(connections))
    )
    start = time.perf_counter()
    deadline = start + seconds
    counts = await asyncio.gather(
        *(
            _connection(port, requests, c * len(requests) // connections, deadline, latencies, errors)
            for c in range(connections)
        )
    )
    elapsed = time.perf_counter() - start
    return {
        "connections": connections,
        "requests": sum(counts),
        "frames_per_s": sum(counts) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": len(errors),
    }


def load(port: int, requests: list[bytes], connections: int, seconds: float) -> dict[str, Any]:
    return asyncio.run(_load(port, requests, connections, seconds))


NGINX_CONF = """
worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60;
    types {{ image/jph jph; }}
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""


def start_nginx(root: Path, frames: dict[str, bytes]) -> tuple[subprocess.Popen[bytes], int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    www = root / "www" / "frames"
    www.mkdir(parents=True)
    for d in (root.parent, root, root / "www", www):  # nginx workers drop privileges: let them read
        d.chmod(0o755)
    for frame_id, data in frames.items():
        (www / f"{frame_id}.jph").write_bytes(data)
    port = free_port()
    (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port))
    proc = subprocess.Popen([nginx, "-c", str(root / "nginx.conf"), "-p", str(root)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            asyncio.run(_probe(port))
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(
        f"nginx did not start: {(root / 'error.log').read_text() if (root / 'error.log').exists() else ''}"
    )


async def _probe(port: int) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()


def metadata_latency(port: int, request: bytes, n: int) -> dict[str, Any]:
    async def run() -> list[float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(request)
            status, _ = await _response(reader)
            assert status == 200
            out.append(time.perf_counter() - t0)
        writer.close()
        return out

    lat = asyncio.run(run())
    return {"p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000, "requests": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="openhi-bench-serve-") as tmp:
        root = Path(tmp)
        server = RunningServer(root / "data").start()
        nginx: subprocess.Popen[bytes] | None = None
        try:
            client = server.client()
            ds_id = active_datastore(client, "bench-serve")
            files = {f"ct/{i:04d}.dcm": d for i, d in enumerate(make_ct_series(args.n, args.size, args.size))}
            t0 = time.perf_counter()
            result = run_import(client, server, ds_id, files, timeout=1800)
            import_s = time.perf_counter() - t0
            set_id = result["manifest"]["imageSetsSummary"][0]["imageSetId"]
            blob = client.get_image_set_metadata(datastoreId=ds_id, imageSetId=set_id)[
                "imageSetMetadataBlob"
            ].read()
            doc = json.loads(gzip.decompress(blob))
            frame_ids = [
                f["ID"]
                for series in doc["Study"]["Series"].values()
                for node in series["Instances"].values()
                for f in node["ImageFrames"]
            ]
            frames = {
                fid: client.get_image_frame(
                    datastoreId=ds_id, imageSetId=set_id, imageFrameInformation={"imageFrameId": fid}
                )["imageFrameBlob"].read()
                for fid in frame_ids
            }
            mean_frame = sum(map(len, frames.values())) / len(frames)
            path = f"/datastore/{ds_id}/imageSet/{set_id}/getImageFrame"
            openhi_reqs = [
                signed_post(server.endpoint, path, json.dumps({"imageFrameId": f}).encode())
                for f in frame_ids
            ]
            nginx, nginx_port = start_nginx(root / "nginx", frames)
            nginx_reqs = [plain_get(f"http://127.0.0.1:{nginx_port}", f"/frames/{f}.jph") for f in frame_ids]

            rows = []
            for connections in (8, 32):
                for name, port, reqs in (
                    ("openhi", server.port, openhi_reqs),
                    ("nginx", nginx_port, nginx_reqs),
                ):
                    row = {"server": name, **load(port, reqs, connections, args.seconds)}
                    rows.append(row)
                    print(table([row]).splitlines()[-1], flush=True)
            meta_path = f"/datastore/{ds_id}/imageSet/{set_id}/getImageSetMetadata"
            meta = metadata_latency(server.port, signed_post(server.endpoint, meta_path, b""), 200)
        finally:
            if nginx is not None:
                nginx.terminate()
                nginx.wait(timeout=10)
            server.stop()

    print()
    print(table(rows))
    print(
        f"\nGetImageSetMetadata ({args.n} instances, {len(blob)} bytes gzip): "
        f"p50 {meta['p50_ms']:.2f} ms, p99 {meta['p99_ms']:.2f} ms"
    )
    print(
        f"import of {args.n} instances {args.size}x{args.size}: {import_s:.1f} s; mean frame {mean_frame:.0f} bytes"
    )
    out = write_result(
        "serve",
        {
            "instances": args.n,
            "size": args.size,
            "seconds_per_run": args.seconds,
            "mean_frame_bytes": mean_frame,
            "metadata_gzip_bytes": len(blob),
            "import_seconds": import_s,
            "get_image_frame": rows,
            "get_image_set_metadata": meta,
            "note": "load generator, openhi and nginx share the same machine",
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
