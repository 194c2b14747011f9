"""Import throughput: the full import job through the API vs imagecodecs HTJ2K encode alone (the limit).

Usage: .venv/bin/python bench/import.py [--n 1000] [--size 512]
Prints a table and writes bench/results/import-<stamp>.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import table, write_result


def _encode_one(args: tuple[int, int, int]) -> int:
    from openhi.codec.j2k import encode_htj2k_rpcl

    seed, rows, cols = args
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    body = ((yy - rows / 2) / (rows * 0.42)) ** 2 + ((xx - cols / 2) / (cols * 0.36)) ** 2 <= 1.0
    image = np.where(body, 40, -1000).astype(np.int16) + rng.normal(0, 20, (rows, cols)).astype(np.int16)
    t0 = time.perf_counter()
    encode_htj2k_rpcl(image)
    return int((time.perf_counter() - t0) * 1e9)


def codec_limit(n: int, size: int) -> float:
    """Instances/s of HTJ2K lossless RPCL encode alone on all cores (pixels made in the worker)."""
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_encode_one, [(i, size, size) for i in range(os.cpu_count() or 1)]))  # warm up
        total_ns = sum(pool.map(_encode_one, [(i, size, size) for i in range(n)], chunksize=4))
    per_core = n / (total_ns / 1e9)
    return per_core * (os.cpu_count() or 1)


def _rss_tree(pid: int) -> int:
    """Resident memory (bytes) of a process and its children."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def full_import(n: int, size: int, work: Path) -> dict[str, Any]:
    from contract.helpers import active_datastore, wait_for
    from contract.imaging import ROLE, stage
    from dicom_factory import make_ct_series
    from openhi.testing import RunningServer

    with RunningServer(work / "data") as server:
        client = server.client()
        ds_id = active_datastore(client, "bench")
        files: dict[str, bytes] = {}
        batch = 50
        for start in range(0, n, batch):
            count = min(batch, n - start)
            for i, data in enumerate(make_ct_series(count, rows=size, cols=size, seed=start)):
                files[f"ct/{start + i:06d}.dcm"] = data
        uri = stage(server, files)
        del files
        samples: list[int] = []
        stop = threading.Event()
        assert server.proc is not None
        pid = server.proc.pid

        def sample() -> None:
            while not stop.is_set():
                samples.append(_rss_tree(pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        job = client.start_dicom_import_job(
            datastoreId=ds_id, dataAccessRoleArn=ROLE, inputS3Uri=uri, outputS3Uri="s3://bench-out/x/"
        )
        props = wait_for(
            lambda: client.get_dicom_import_job(datastoreId=ds_id, jobId=job["jobId"])["jobProperties"],
            lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"),
            timeout=3600,
            step=0.2,
        )
        elapsed = time.perf_counter() - t0
        stop.set()
        sampler.join()
        assert props["jobStatus"] == "COMPLETED", props
        quarter = max(1, len(samples) // 4)
        return {
            "instances_per_s": n / elapsed,
            "seconds": elapsed,
            "rss_peak_mb": max(samples) / 2**20 if samples else 0.0,
            "rss_first_quarter_mb": max(samples[:quarter]) / 2**20 if samples else 0.0,
            "rss_last_quarter_mb": max(samples[-quarter:]) / 2**20 if samples else 0.0,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    limit = codec_limit(args.n, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        result = full_import(args.n, args.size, Path(tmp))
    ratio = result["instances_per_s"] / limit
    rows = [
        {"measure": "(a) imagecodecs HTJ2K encode alone, all cores", "instances/s": limit},
        {"measure": "(b) import job through the API", "instances/s": result["instances_per_s"]},
        {"measure": "ratio (b)/(a) (goal >= 0.5)", "instances/s": ratio},
    ]
    print(table(rows))
    print(
        f"server RSS (server + pixel workers): peak {result['rss_peak_mb']:.0f} MB, first quarter "
        f"{result['rss_first_quarter_mb']:.0f} MB, last quarter {result['rss_last_quarter_mb']:.0f} MB"
    )
    path = write_result(
        "import", {"n": args.n, "size": args.size, "codec_limit": limit, "import": result, "ratio": ratio}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
