"""Shared helpers for benchmark scripts: machine facts, timing tables, JSON results, the codec limit."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import imagecodecs
    import pydicom

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "imagecodecs": imagecodecs.__version__,
        "pydicom": pydicom.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def _stat_fields(pid: int) -> dict[str, list[str]]:
    """The fields of /proc/<pid>/stat after the command name, for a process and each live descendant."""
    out: dict[str, list[str]] = {}
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            pids += [int(c) for c in Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text().split()]
        i += 1
    for p in pids:
        with contextlib.suppress(OSError):
            out[str(p)] = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
    return out


def process_tree_cpu(pid: int) -> dict[str, float]:
    """User + system CPU seconds of a process and of each live descendant, by pid (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for p, fields in _stat_fields(pid).items():
        with contextlib.suppress(IndexError, ValueError):
            out[p] = (int(fields[11]) + int(fields[12])) / tick
    return out


def process_tree_faults(pid: int) -> dict[str, int]:
    """Minor page faults so far of a process and of each live descendant, by pid (from /proc).

    On a virtual machine every first touch of a fresh page can cost a fault in the host too, so
    buffers the allocator hands back to the kernel and takes again show up here.
    """
    out: dict[str, int] = {}
    for p, fields in _stat_fields(pid).items():
        with contextlib.suppress(IndexError, ValueError):
            out[p] = int(fields[7])
    return out


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its live descendants."""
    return sum(process_tree_cpu(pid).values())


def _codec_frame(source: str | bytes) -> tuple[int, int, int, int]:
    """(encode wall ns, encode CPU ns, decode wall ns, decode CPU ns) of one P10 file's frame.

    The two codec calls an import makes per frame (``openhi.codec.j2k``: imagecodecs' HTJ2K lossless
    RPCL encode, then the verification decode of the result); reading the file and the bit-exact
    comparison are not timed.
    """
    import numpy as np
    import pydicom

    from openhi.codec.j2k import decode_htj2k, encode_htj2k_rpcl

    pixels = pydicom.dcmread(source if isinstance(source, str) else BytesIO(source)).pixel_array
    t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
    stored = encode_htj2k_rpcl(pixels)
    t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
    decoded = decode_htj2k(stored)
    t2, c2 = time.perf_counter_ns(), time.thread_time_ns()
    if not np.array_equal(decoded, pixels):
        raise RuntimeError("HTJ2K round trip is not lossless")
    return t1 - t0, c1 - c0, t2 - t1, c2 - c1


def codec_limits(sources: Sequence[str | bytes], cores: int | None = None) -> dict[str, float]:
    """The import's codec ceilings for these P10 files (paths or bytes), one process per core.

    ``encode_decode_instances_per_s`` (the limit the import is measured against): HTJ2K encode plus
    the verification decode of every frame; ``encode_instances_per_s``: the encode alone. Each is
    ``instances / (summed call time / cores)``: the rate the cores would reach doing nothing else.
    """
    cores = cores or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=cores) as pool:
        list(pool.map(_codec_frame, sources[:cores]))  # warm up: imports, first allocations
        times = list(pool.map(_codec_frame, sources, chunksize=4))
    n = len(times)
    encode_ns = sum(t[0] for t in times)
    decode_ns = sum(t[2] for t in times)
    return {
        "cores": cores,
        "instances": n,
        "encode_instances_per_s": n / (encode_ns / 1e9) * cores,
        "encode_decode_instances_per_s": n / ((encode_ns + decode_ns) / 1e9) * cores,
        "encode_cpu_ms_per_instance": sum(t[1] for t in times) / 1e6 / n,
        "decode_cpu_ms_per_instance": sum(t[3] for t in times) / 1e6 / n,
    }
