"""Export throughput: ``openhi export`` of the 300-instance CT series against ``cp -r`` of the files it wrote.

Usage: .venv/bin/python bench/export.py [--n 300] [--size 512] [--repeat 3] [--workers N]
The series is bench/import.py's (the peer corpus), imported through a real server. Each repeat runs
``openhi export --transfer-syntax stored`` into a fresh folder (the command's whole run: start-up,
listing, every instance fetched over WADO-RS and written), then ``cp -r`` of that folder to another
fresh folder (the baseline: the same bytes, the same files, the same disk, page cache warm as the
export left it). Every timed command starts after ``sync`` (not timed), so that none pays for writing
back what the one before it wrote. ``export_env`` repeats the export with credentials in the
environment (``AWS_ACCESS_KEY_ID``…: the command does not load botocore; the plain run resolves them
with botocore's chain, as a local-mode user's command does). ``--ele`` also times an Explicit VR
Little Endian export (decodes every frame).
Goal: export >= 0.5 x cp in bytes per second (medians). The CPU seconds of the command (client) and
of the server's process tree during it are reported per instance: on a shared machine they say more
than the wall times. Prints a table and writes bench/results/export-<stamp>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, table, tree_cpu_seconds, write_result

GOAL = 0.5
OPENHI = [str(Path(sys.executable).with_name("openhi"))]


def _bench_import() -> Any:
    """bench/import.py as a module (its name is a keyword): the series generator."""
    spec = importlib.util.spec_from_file_location("bench_import", ROOT / "bench" / "import.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(
    cmd: list[str], server_pid: int, cpu: dict[str, list[float]], name: str, env: dict[str, str] | None = None
) -> float:
    """Run ``cmd`` (after a sync); its wall time. Appends its own CPU seconds and the server's during it
    to ``cpu``."""
    os.sync()
    s0, c0 = tree_cpu_seconds(server_pid), _children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    cpu.setdefault(f"{name}_client_cpu", []).append(_children_cpu() - c0)
    cpu.setdefault(f"{name}_server_cpu", []).append(tree_cpu_seconds(server_pid) - s0)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="instances (300: the goal's series)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3, help="export + cp runs; medians reported")
    parser.add_argument("--workers", type=int, default=0, help="openhi serve --workers (0: one process)")
    parser.add_argument("--ele", action="store_true", help="also export in Explicit VR Little Endian")
    args = parser.parse_args()

    from contract.helpers import active_datastore
    from contract.imaging import run_import
    from openhi.testing import RunningServer

    files = _bench_import().make_files(args.n, args.size)
    work = Path(tempfile.mkdtemp(prefix="openhi-bench-export-"))
    extra = ["--workers", str(args.workers)] if args.workers else []
    rows: list[dict[str, Any]] = []
    runs: dict[str, list[float]] = {"export": [], "cp": [], "export_env": [], "export_ele": []}
    with_keys = {**os.environ, "AWS_ACCESS_KEY_ID": "openhi-local", "AWS_SECRET_ACCESS_KEY": "openhi-local"}
    cpu: dict[str, list[float]] = {}
    size = 0
    try:
        with RunningServer(work / "data", extra_args=extra) as server:
            client = server.client()
            ds_id = active_datastore(client, "bench-export")
            result = run_import(client, server, ds_id, files, timeout=1800)
            assert result["job"]["jobStatus"] == "COMPLETED" and not result["failure"], result["job"]
            series = result["success"][0]["importResponse"]["imageSetId"]
            base = [
                *OPENHI,
                "export",
                "--datastore",
                ds_id,
                "--image-set",
                series,
                "--endpoint",
                server.endpoint,
            ]
            os.sync()
            assert server.proc is not None
            pid = server.proc.pid
            for i in range(args.repeat):
                out, copy = work / f"out-{i}", work / f"copy-{i}"
                runs["export"].append(_timed([*base, "--out", str(out)], pid, cpu, "export"))
                size = _size(out)
                assert len(list(out.iterdir())) == args.n
                runs["cp"].append(_timed(["cp", "-r", str(out), str(copy)], pid, cpu, "cp"))
                keyed = [*base, "--out", str(work / f"env-{i}")]
                runs["export_env"].append(_timed(keyed, pid, cpu, "export_env", with_keys))
                shutil.rmtree(work / f"env-{i}")
                if args.ele:
                    ele = [*base, "--out", str(work / f"ele-{i}"), "--transfer-syntax", "1.2.840.10008.1.2.1"]
                    runs["export_ele"].append(_timed(ele, pid, cpu, "export_ele"))
                shutil.rmtree(copy)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in runs.items() if v}
    mb = size / 1e6
    for name in ("export", "cp", "export_env", "export_ele"):
        if name in median:
            rows.append(
                {
                    "measure": name,
                    "seconds": median[name],
                    "MB/s": mb / median[name] if name != "export_ele" else float("nan"),
                    "instances/s": args.n / median[name],
                    "client CPU ms/instance": statistics.median(cpu[f"{name}_client_cpu"]) * 1e3 / args.n,
                    "server CPU ms/instance": statistics.median(cpu[f"{name}_server_cpu"]) * 1e3 / args.n,
                }
            )
    ratio = median["cp"] / median["export"]
    ratio_env = median["cp"] / median["export_env"]
    print(table(rows))
    print(
        f"export / cp speed: {ratio:.3f} (goal >= {GOAL}; credentials in the environment: {ratio_env:.3f}); "
        f"{args.n} files, {mb:.1f} MB in the stored syntax"
    )
    path = write_result(
        "export",
        {
            "n": args.n,
            "size": args.size,
            "workers": args.workers,
            "bytes": size,
            "runs_seconds": runs,
            "median_seconds": median,
            "cpu_seconds": cpu,
            "ratio_export_over_cp_speed": ratio,
            "ratio_export_env_over_cp_speed": ratio_env,
            "goal": GOAL,
            "met": ratio >= GOAL,
            "rows": rows,
        },
    )
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
