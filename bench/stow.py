"""STOW-RS throughput: one multipart request of a CT series against the HTJ2K codec limit (encode + verification decode).

Usage: .venv/bin/python bench/stow.py [--n 300] [--size 512] [--repeat 1]
The series is bench/import.py's (``make_files``: the very files of its goal with ``--n 300``), sent as
one ``multipart/related; type="application/dicom"`` request to a running ``openhi serve``. Prints a
table and writes bench/results/stow-<stamp>.json.

(a) is bench/import.py's limit (``_common.codec_limits``: HTJ2K lossless RPCL encode + the
verification decode, one process per core, on the same frames, measured in the same run). (b) is
instances per second from the first byte of the request to the end of the response: the upload,
the multipart split, the processing in the pixel pool and the commit. Goal: (b) >= 0.8 x (a).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import codec_limits, process_tree_cpu, table, write_result

GOAL = 0.8  # STOW-RS >= GOAL x (encode + verification decode limit)


def multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = f"bench-{uuid.uuid4().hex}"
    chunks = []
    for data in files:
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def signed_headers(url: str, body: bytes, content_type: str) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {"Content-Type": content_type, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials("bench", "bench"), "medical-imaging", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def full_stow(files: dict[str, bytes], work: Path) -> dict[str, Any]:
    from contract.helpers import active_datastore
    from openhi.testing import RunningServer

    n = len(files)
    body, content_type = multipart(list(files.values()))
    work.mkdir(parents=True, exist_ok=True)
    with RunningServer(work / "data") as server:
        ds_id = active_datastore(server.client(), "bench")
        path = f"/datastore/{ds_id}/studies"
        headers = signed_headers(f"{server.endpoint}{path}", body, content_type)
        assert server.proc is not None
        pid = server.proc.pid
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3600)
        cpu0 = process_tree_cpu(pid)
        t0 = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        answer = resp.read()
        elapsed = time.perf_counter() - t0
        cpu1 = process_tree_cpu(pid)
        conn.close()
        assert resp.status == 200, (resp.status, answer[:500])
        stored = json.loads(answer)["00081199"]["Value"]
        assert len(stored) == n
        sets = {item["00091001"]["Value"][0] for item in stored}
        assert len(sets) == 1, sets
    return {
        "instances_per_s": n / elapsed,
        "seconds": elapsed,
        "body_mb": len(body) / 2**20,
        "server_cpu_ms_per_instance": (cpu1.get(str(pid), 0.0) - cpu0.get(str(pid), 0.0)) * 1e3 / n,
        "workers_cpu_ms_per_instance": sum(v - cpu0.get(k, 0.0) for k, v in cpu1.items() if k != str(pid))
        * 1e3
        / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="instances (300: the goal's series)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=1, help="runs of all measures; medians reported")
    args = parser.parse_args()
    make_files = importlib.import_module("import").make_files  # bench/import.py's series
    limits: list[dict[str, float]] = []
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(max(1, args.repeat)):
            files = make_files(args.n, args.size)
            limits.append(codec_limits(list(files.values())))
            results.append(full_stow(files, Path(tmp) / f"run{run}"))
            del files
    both = [lim["encode_decode_instances_per_s"] for lim in limits]
    rates = [r["instances_per_s"] for r in results]
    ratios = [r / b for r, b in zip(rates, both, strict=True)]
    job_ms = [r["server_cpu_ms_per_instance"] + r["workers_cpu_ms_per_instance"] for r in results]
    codec_ms = [lim["encode_cpu_ms_per_instance"] + lim["decode_cpu_ms_per_instance"] for lim in limits]
    cpu_ratio = statistics.median(a / b for a, b in zip(codec_ms, job_ms, strict=True) if b > 0)
    ratio = statistics.median(ratios)
    med = f" (median of {len(ratios)})" if len(ratios) > 1 else ""
    cores = int(limits[0]["cores"])
    rows = [
        {
            "measure": f"(a) HTJ2K encode + verification decode, {cores} cores: the limit{med}",
            "value": statistics.median(both),
        },
        {"measure": f"(b) STOW-RS, one request, instances/s{med}", "value": statistics.median(rates)},
        {"measure": f"ratio (b)/(a) (goal >= {GOAL:g}){med}", "value": ratio},
        {"measure": f"ratio by CPU ms per instance, (a)/(b){med}", "value": cpu_ratio},
    ]
    print(table(rows))
    print(f"goal (b) >= {GOAL:g} x (a): {'met' if ratio >= GOAL else 'NOT met'}")
    print(
        "CPU ms per instance (server process, pixel workers): "
        + ", ".join(
            f"({r['server_cpu_ms_per_instance']:.2f}, {r['workers_cpu_ms_per_instance']:.2f})"
            for r in results
        )
        + f"; body {results[0]['body_mb']:.0f} MB"
    )
    path = write_result(
        "stow",
        {
            "n": args.n,
            "size": args.size,
            "goal": f"STOW-RS >= {GOAL:g} x (HTJ2K encode + verification decode, all cores)",
            "codec_limit_encode_decode": statistics.median(both),
            "codec_limits_encode_decode": both,
            "codec_runs": limits,
            "stow": {**results[0], "instances_per_s": statistics.median(rates), "runs": results},
            "ratio_encode_decode": ratio,
            "ratios_encode_decode": ratios,
            "cpu_ratio_encode_decode": cpu_ratio,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
