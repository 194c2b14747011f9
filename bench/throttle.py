"""What rate limits cost and how exact they are: the in-process check, frames/s with and without the
guard, and the admitted rate of a limit shared by 2 API processes.

Usage: .venv/bin/python bench/throttle.py [--seconds 8] [--rounds 2] [--n 60] [--size 256]
                                          [--skip-frames] [--skip-accuracy]
1. micro: ``Guard.check`` per call with ``--throttle aws`` (one principal and action; 1,000 principals;
   and a fault rule set that matches nothing), nanoseconds per call.
2. frames: GetImageFrame frames/s and server CPU µs per frame on the same data, interleaved
   off / guard / off … per round (the guard: a profile whose GetImageFrame limit is never reached, so
   every request pays the check); the loss is the guard's median against the off runs' median.
3. accuracy: ``serve --workers 2`` (OPENHI_PROCESSES=2: each process enforces half) with GetDatastore
   limited to 50/s (burst 50), driven over 1 keep-alive connection, 8 keep-alive connections, and a new
   connection per request; the admitted rate against the limit (and 1 process for comparison).
Prints tables and writes bench/results/throttle-<stamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any

from _common import table, tree_cpu_seconds, write_result
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from loadgen import Request, run_sync

from contract.helpers import active_datastore
from contract.imaging import run_import
from dicom_factory import make_ct_series
from openhi.testing import RunningServer
from openhi.throttle.buckets import Limit
from openhi.throttle.faults import parse_faults
from openhi.throttle.guard import Guard, Limiter, Throttled
from openhi.throttle.profiles import AWS_LIMITS, Profile, aws_profile

CREDS = Credentials("openhi-bench", "openhi-bench-secret")
LIMIT = {"rate": 50, "burst": 50}


def signed(method: str, url: str, body: bytes = b"") -> Request:
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(CREDS, "medical-imaging", "us-east-1").add_auth(request)
    return Request(method, url, dict(request.headers.items()), body)


def unreached() -> Profile:
    """AWS's table, with a GetImageFrame limit no benchmark reaches (every check admits, at full cost)."""
    return Profile(base={**AWS_LIMITS, "GetImageFrame": Limit(1e12, 1e12)}, name="aws")


def micro() -> list[dict[str, Any]]:
    rows = []
    frame = "medical-imaging:GetImageFrame"
    guard = Guard(Limiter(unreached()))
    n = 1_000_000
    seconds = min(timeit.repeat(lambda: guard.check(frame, "AKIDBENCH", "api"), number=n, repeat=3))
    rows.append({"case": "admitted: one principal, GetImageFrame", "ns_per_check": seconds / n * 1e9})
    many = Guard(Limiter(unreached()))
    keys = [f"AKID{i:04d}" for i in range(1000)]
    for key in keys:
        many.check(frame, key, "api")

    def round_robin() -> None:
        for key in keys:
            many.check(frame, key, "api")

    seconds = min(timeit.repeat(round_robin, number=200, repeat=3))
    rows.append(
        {"case": "admitted: 1,000 principals round robin", "ns_per_check": seconds / (200 * 1000) * 1e9}
    )
    spent = Guard(Limiter(aws_profile()))

    def throttled() -> None:
        with contextlib.suppress(Throttled):
            spent.check(frame, "AKIDBENCH", "api")

    timeit.repeat(throttled, number=3000, repeat=1)  # the burst of 2,000 is gone
    seconds = min(timeit.repeat(throttled, number=100_000, repeat=3))
    rows.append({"case": "refused (429 raised): GetImageFrame", "ns_per_check": seconds / 100_000 * 1e9})
    faults = Guard(None, parse_faults([{"operation": "CopyImageSet", "error": "ConflictException"}]))
    seconds = min(timeit.repeat(lambda: faults.check(frame, "AKIDBENCH", "api"), number=n, repeat=3))
    rows.append({"case": "faults: a rule for another operation", "ns_per_check": seconds / n * 1e9})
    both = Guard(Limiter(unreached()), faults.faults)
    seconds = min(timeit.repeat(lambda: both.check(frame, "AKIDBENCH", "api"), number=n, repeat=3))
    rows.append({"case": "aws + faults", "ns_per_check": seconds / n * 1e9})
    return rows


def frames(root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    profile = root / "never-reached.json"
    profile.write_text(
        json.dumps({"base": "aws", "operations": {"GetImageFrame": {"rate": 1e9, "burst": 1e9}}})
    )
    server = RunningServer(root / "data").start()
    try:
        client = server.client()
        ds_id = active_datastore(client, "bench-throttle")
        files = {f"ct/{i:04d}.dcm": d for i, d in enumerate(make_ct_series(args.n, args.size, args.size))}
        result = run_import(client, server, ds_id, files, timeout=1800)
        set_id = result["manifest"]["imageSetsSummary"][0]["imageSetId"]
        from contract.imaging import metadata

        doc = metadata(client, ds_id, set_id)
        frame_ids = [
            f["ID"]
            for series in doc["Study"]["Series"].values()
            for node in series["Instances"].values()
            for f in node["ImageFrames"]
        ]
    finally:
        server.stop()
    url = f"{server.endpoint}/datastore/{ds_id}/imageSet/{set_id}/getImageFrame"
    requests = [signed("POST", url, json.dumps({"imageFrameId": f}).encode()) for f in frame_ids]
    rows = []
    configs = [("off", []), ("guard", ["--throttle", str(profile)])]
    for round_no in range(args.rounds):
        for name, extra in [*configs, configs[0]]:
            server = RunningServer(root / "data", port=server.port, extra_args=extra).start()
            try:
                pid = server.proc.pid if server.proc else 0
                run_sync(requests, 8, 1.0)
                cpu0 = tree_cpu_seconds(pid)
                measured = run_sync(requests, 8, args.seconds)
                cpu = tree_cpu_seconds(pid) - cpu0
            finally:
                server.stop()
            row = {
                "round": round_no,
                "throttle": name,
                "frames_per_s": measured.requests_per_s,
                "p50_ms": measured.p50_ms,
                "server_cpu_us_per_frame": cpu * 1e6 / max(1, measured.requests),
                "non_200": sum(v for k, v in measured.statuses.items() if k != 200) + measured.errors,
            }
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    return rows


def _fresh_connections(url: str, seconds: float, threads: int = 8) -> dict[int, int]:
    """GET ``url`` signed, each request on a new connection, from ``threads`` threads."""
    request = signed("GET", url)
    host, port = url.split("/")[2].split(":")
    path = "/" + url.split("/", 3)[3]
    counts: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request("GET", path, headers=dict(request.headers))
                status = conn.getresponse().status
            except OSError:
                status = 0
            finally:
                conn.close()
            with lock:
                counts[status] = counts.get(status, 0) + 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return counts


def accuracy(root: Path, seconds: float) -> list[dict[str, Any]]:
    profile = root / "fifty.json"
    profile.write_text(json.dumps({"operations": {"GetDatastore": LIMIT}}))
    rows = []
    for processes in (1, 2):
        extra = ["--throttle", str(profile), "--workers", str(processes), "--no-workers"]
        server = RunningServer(
            root / f"acc{processes}", extra_args=extra, env={"OPENHI_PROCESSES": str(processes)}
        )
        server.start()
        time.sleep(4 if processes > 1 else 0.5)  # the other process starts listening
        try:
            url = f"{server.endpoint}/datastore/{'0' * 32}"  # 404 after the guard: admitted calls count
            for how in ("1 keep-alive connection", "8 keep-alive connections", "new connection per request"):
                time.sleep(LIMIT["burst"] / LIMIT["rate"] + 0.5)  # buckets full again
                if how.startswith("new"):
                    counts = _fresh_connections(url, seconds)
                else:
                    result = run_sync([signed("GET", url)], 1 if how.startswith("1 ") else 8, seconds)
                    counts = dict(result.statuses)
                admitted = sum(v for k, v in counts.items() if k not in (429, 0))
                throttled = counts.get(429, 0)
                expected = LIMIT["rate"] * seconds + LIMIT["burst"]
                row = {
                    "processes": processes,
                    "client": how,
                    "offered_per_s": (admitted + throttled) / seconds,
                    "admitted": admitted,
                    "limit_allows": expected,
                    "admitted_vs_limit": admitted / expected,
                }
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--skip-frames", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"args": vars(args)}
    out["micro"] = micro()
    print(table(out["micro"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="openhi-bench-throttle-") as tmp:
        root = Path(tmp)
        if not args.skip_frames:
            rows = frames(root, args)
            out["frames"] = rows
            off = [r["frames_per_s"] for r in rows if r["throttle"] == "off"]
            guard = [r["frames_per_s"] for r in rows if r["throttle"] == "guard"]
            cpu_off = [r["server_cpu_us_per_frame"] for r in rows if r["throttle"] == "off"]
            cpu_guard = [r["server_cpu_us_per_frame"] for r in rows if r["throttle"] == "guard"]
            out["frames_summary"] = {
                "off_median_fps": statistics.median(off),
                "off_spread_fps": max(off) - min(off),
                "guard_median_fps": statistics.median(guard),
                "guard_vs_off": statistics.median(guard) / statistics.median(off),
                "cpu_us_off": statistics.median(cpu_off),
                "cpu_us_guard": statistics.median(cpu_guard),
            }
            print(table(rows))
            print(table([out["frames_summary"]]))
        if not args.skip_accuracy:
            out["accuracy"] = accuracy(root, args.seconds)
            print(table(out["accuracy"]))
    print(f"wrote {write_result('throttle', out)}")


if __name__ == "__main__":
    main()
