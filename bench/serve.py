"""GetImageFrame throughput and latency vs nginx serving the same bytes; GetImageSetMetadata latency.

Usage: .venv/bin/python bench/serve.py [--n 300] [--size 512] [--seconds 8] [--rounds 1]
                                       [--api-processes 1,2] [--loadgen wrk|python]
Imports an n-instance size×size signed 16-bit CT series into a fresh openhi, then drives openhi and an
nginx (static files, same frame bytes; ``bench/peers_systems.Nginx``, one worker per core) with the same
keep-alive HTTP/1.1 load generator at 8 and 32 connections: wrk with a Lua URL list (``bench/wrk.py``, one
thread) when wrk is installed, else the asyncio generator (``bench/loadgen.py``). openhi is measured with
each ``--api-processes`` count (``openhi serve --workers N`` on the same data). Each round runs openhi and
nginx back to back at each concurrency; with several rounds the summary gives medians, and the ratio
openhi/nginx is taken within a round (so both saw the same background load). Prints tables and writes
bench/results/serve-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import table, tree_cpu_seconds, write_result
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from loadgen import Request, Result, run_each, run_sync
from peers_systems import Nginx
from wrk import available as wrk_available
from wrk import run_wrk

from contract.helpers import active_datastore
from contract.imaging import run_import
from dicom_factory import make_ct_series
from openhi.testing import RunningServer

CREDS = Credentials("openhi-bench", "openhi-bench-secret")
CONNECTIONS = (8, 32)
#: how long the other API processes of ``serve --workers N`` may take to start listening
PROCESS_START_S = 4.0


def signed_post(url: str, body: bytes) -> Request:
    """A SigV4-signed POST (signed once, replayed for a whole round: well inside the 15-minute skew)."""
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(CREDS, "medical-imaging", "us-east-1").add_auth(request)
    return Request("POST", url, dict(request.headers.items()), body)


def measure(
    requests: list[Request], connections: int, seconds: float, loadgen: str, server_pid: int
) -> dict[str, Any]:
    """One closed-loop run after a short unrecorded warm-up; also the server's CPU time per request
    (its whole process tree), the figure that does not depend on how the cores were shared."""
    run = run_wrk if loadgen == "wrk" else run_sync
    run(requests, connections, 1.0)  # warm-up
    cpu0 = tree_cpu_seconds(server_pid)
    result: Result = run(requests, connections, seconds)
    cpu = tree_cpu_seconds(server_pid) - cpu0
    return {
        "connections": connections,
        "requests": result.requests,
        "frames_per_s": result.requests_per_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "server_cpu_us_per_frame": cpu * 1e6 / max(1, result.requests),
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per concurrency: median openhi and nginx frames/s and p99 over the rounds, and the median ratio."""
    out = []
    processes = sorted({row["processes"] for row in rows if row["server"] == "openhi"})
    for procs, connections in ((p, c) for p in processes for c in CONNECTIONS):
        by_round: dict[int, dict[str, dict[str, Any]]] = {}
        for row in rows:
            if row["connections"] == connections and row["processes"] == procs:
                by_round.setdefault(row["round"], {})[row["server"]] = row
        rounds = [r for r in by_round.values() if "openhi" in r and "nginx" in r]
        if not rounds:
            continue

        def med(server: str, key: str, rounds: list[dict[str, dict[str, Any]]] = rounds) -> float:
            return float(statistics.median(r[server][key] for r in rounds))

        out.append(
            {
                "api_processes": procs,
                "connections": connections,
                "rounds": len(rounds),
                "openhi_fps": med("openhi", "frames_per_s"),
                "nginx_fps": med("nginx", "frames_per_s"),
                "ratio": statistics.median(
                    r["openhi"]["frames_per_s"] / r["nginx"]["frames_per_s"] for r in rounds
                ),
                "openhi_cpu_us": med("openhi", "server_cpu_us_per_frame"),
                "nginx_cpu_us": med("nginx", "server_cpu_us_per_frame"),
                "openhi_p50_ms": med("openhi", "p50_ms"),
                "openhi_p99_ms": med("openhi", "p99_ms"),
                "nginx_p99_ms": med("nginx", "p99_ms"),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the openhi/nginx runs; report medians")
    parser.add_argument(
        "--nginx-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="nginx worker processes (default: cores)",
    )
    parser.add_argument(
        "--api-processes", default="1,2", help="comma-separated openhi API process counts (serve --workers N)"
    )
    parser.add_argument(
        "--loadgen", choices=("wrk", "python"), default="wrk" if wrk_available() else "python"
    )
    args = parser.parse_args()
    process_counts = [int(p) for p in args.api_processes.split(",")]

    with tempfile.TemporaryDirectory(prefix="openhi-bench-serve-") as tmp:
        root = Path(tmp)
        server = RunningServer(root / "data").start()
        nginx: Nginx | None = None
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
            www = root / "www"
            (www / "frames").mkdir(parents=True)
            sizes = []
            for fid in frame_ids:
                data = client.get_image_frame(
                    datastoreId=ds_id, imageSetId=set_id, imageFrameInformation={"imageFrameId": fid}
                )["imageFrameBlob"].read()
                (www / "frames" / f"{fid}.jph").write_bytes(data)
                sizes.append(len(data))
            mean_frame = sum(sizes) / len(sizes)
            nginx = Nginx(root / "nginx", www, workers=args.nginx_workers).start()
            frame_url = f"{server.endpoint}/datastore/{ds_id}/imageSet/{set_id}/getImageFrame"
            nginx_reqs = [Request("GET", f"{nginx.endpoint}/frames/{f}.jph") for f in frame_ids]

            rows = []
            for procs in process_counts:
                server.stop()
                server = RunningServer(root / "data", port=server.port, extra_args=["--workers", str(procs)])
                server.start()
                if procs > 1:  # /healthz answers as soon as one process is up: give the others time to listen
                    time.sleep(PROCESS_START_S)
                for round_no in range(args.rounds):
                    openhi_reqs = [
                        signed_post(frame_url, json.dumps({"imageFrameId": f}).encode()) for f in frame_ids
                    ]
                    for connections in CONNECTIONS:
                        for name, reqs, pid in (
                            ("openhi", openhi_reqs, server.proc.pid if server.proc else 0),
                            ("nginx", nginx_reqs, nginx.proc.pid if nginx.proc else 0),
                        ):
                            measured = measure(reqs, connections, args.seconds, args.loadgen, pid)
                            row = {"round": round_no, "processes": procs, "server": name, **measured}
                            rows.append(row)
                            print(table([row]).splitlines()[-1], flush=True)
            meta_url = f"{server.endpoint}/datastore/{ds_id}/imageSet/{set_id}/getImageSetMetadata"
            meta_result = asyncio.run(run_each([signed_post(meta_url, b"")] * 200, 1, timeout=120))
            meta = {
                "p50_ms": meta_result.p50_ms,
                "p99_ms": meta_result.p99_ms,
                "requests": meta_result.requests,
            }
        finally:
            if nginx is not None:
                nginx.stop()
            server.stop()

    summary = summarize(rows)
    print()
    print(table(rows))
    print()
    print(table(summary))
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
            "rounds": args.rounds,
            "nginx_workers": args.nginx_workers,
            "api_processes": process_counts,
            "load_generator": "wrk -t1 (Lua URL list)" if args.loadgen == "wrk" else "bench/loadgen.py",
            "mean_frame_bytes": mean_frame,
            "metadata_gzip_bytes": len(blob),
            "import_seconds": import_s,
            "get_image_frame": rows,
            "summary": summary,
            "get_image_set_metadata": meta,
            "note": "load generator, openhi and nginx share the same machine",
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
