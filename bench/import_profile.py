"""py-spy sampling of the import (server + pixel workers) and a summary of the samples by component."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

_PROCESS = re.compile(r'process (\d+):"([^"]*)";')

#: A thread whose innermost frames include one of these is waiting, not working. py-spy 0.4 with
#: ``--subprocesses`` does not drop idle threads of Python 3.11 reliably, so the summary does.
IDLE = frozenset(
    {
        "Condition.wait",
        "Event.wait",
        "Thread.join",
        "_wait_for_tstate_lock",
        "_PollLikeSelector.select",
        "EpollSelector.select",
        "wait",  # multiprocessing.connection.wait: select() on the pool's pipes
        "_worker",  # concurrent.futures.thread: a pool thread waiting for work
        "Runner.run",  # uvloop's C event loop: epoll_wait between callbacks
        "uv__io_poll",
        "uv_run",
        "pthread_cond_timedwait",
        "pthread_cond_wait",
        "epoll_wait",
        "sleep",
    }
)

#: (component, function names, path fragments); a sample goes to the innermost frame that matches,
#: so time inside a C extension counts for the Python function that called it.
COMPONENTS: tuple[tuple[str, frozenset[str], tuple[str, ...]], ...] = (
    (
        "HTJ2K encode",
        frozenset({"encode_htj2k_rpcl", "htj2k_encode", "encode_j2k_lossless", "jpeg2k_encode"}),
        (),
    ),
    (
        "verification decode",
        frozenset({"decode_htj2k", "htj2k_decode", "decode_j2k_part1", "jpeg2k_decode"}),
        (),
    ),
    ("verification compare (array_equal)", frozenset({"array_equal"}), ()),
    ("CRC-32", frozenset({"crc32", "deflate_crc32"}), ()),
    ("min/max", frozenset({"_amin", "_amax"}), ()),
    ("gzip", frozenset(), ("gzip.py", "zlib")),
    ("JSON encoding", frozenset(), ("json/",)),
    ("pickle / pool pipes", frozenset(), ("multiprocessing/", "concurrent/futures/", "pickle")),
    ("index (SQL)", frozenset(), ("sqlite3", "imagesets_sql.py", "control_sql.py", "sql_dialect.py")),
    ("blob syncfs flush", frozenset({"FsBlobStore.flush"}), ()),
    ("frame blob write", frozenset(), ("openhi/storage/blobs_fs.py",)),
    ("bucket read/write (input, reports)", frozenset(), ("openhi/storage/buckets_fs.py",)),
    ("pydicom (parse, element access)", frozenset(), ("pydicom/",)),
    ("frame extraction (dicom/frames.py)", frozenset(), ("openhi/dicom/frames.py",)),
    ("DICOM to JSON (dicom/json_values.py)", frozenset(), ("openhi/dicom/json_values.py", "levels.py")),
    ("process_instance other (dicom/instance.py)", frozenset(), ("openhi/dicom/instance.py",)),
    ("import run: batches, merge, commit (core/import_run.py)", frozenset(), ("openhi/core/import_run.py",)),
    ("HTTP/API (uvicorn, asgi, awsapi)", frozenset(), ("uvicorn/", "anyio/", "openhi/asgi", "openhi/awsapi")),
    ("other openhi", frozenset(), ("openhi/",)),
)


def py_spy() -> str:
    """py-spy next to this interpreter (the bench extra), else the one on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install -e '.[bench]' (or py-spy on PATH)")
    return found


def start(pid: int, out: Path, native: bool = False) -> subprocess.Popen[bytes]:
    """Sample ``pid`` and its children at 250 Hz into ``out`` (collapsed stacks) until :func:`stop`."""
    cmd = [py_spy(), "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", "250"]
    cmd += ["--native"] if native else []
    cmd += ["--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let py-spy attach before the job starts
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _frames(stack: str) -> list[tuple[str, str]]:
    """(function, file) of each frame, outermost first."""
    out = []
    for frame in _PROCESS.sub("", stack + ";").split(";"):
        name, _, where = frame.partition(" (")
        if name:
            out.append((name, where.rsplit(":", 1)[0].rstrip(")")))
    return out


def _is_python(path: str) -> bool:
    return path.endswith(".py") or path.startswith("<")


def is_idle(frames: list[tuple[str, str]]) -> bool:
    """The innermost Python frame waits (below it, with ``--native``: the C calls that block)."""
    for name, path in reversed(frames):
        if _is_python(path):
            return name in IDLE
        if name in IDLE:
            return True
    return False


def component(frames: list[tuple[str, str]]) -> str:
    for name, path in reversed(frames):
        for label, names, paths in COMPONENTS:
            if name in names or any(p in path for p in paths):
                return label
    return "other"


def summarize(raw: Path, top: int = 25) -> str:
    """Busy samples by process role and by component (pixel workers, server), then by function."""
    by_role: dict[str, dict[str, int]] = {"pixel workers": {}, "server": {}}
    functions: dict[str, int] = {}
    idle = busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        procs = _PROCESS.findall(stack + ";")
        role = "pixel workers" if procs and "forkserver" in procs[-1][1] else "server"
        frames = _frames(stack)
        if is_idle(frames):
            idle += count
            continue
        busy += count
        label = component(frames)
        by_role[role][label] = by_role[role].get(label, 0) + count
        for key in {f"{name} ({path})" for name, path in frames}:
            functions[key] = functions.get(key, 0) + count
    out = [f"{busy} busy samples ({idle} samples of waiting threads left out)"]
    totals: dict[str, int] = {}
    for counts in by_role.values():
        for label, n in counts.items():
            totals[label] = totals.get(label, 0) + n
    out.append(f"{'component':58s} {'all':>6s} {'workers':>8s} {'server':>7s}")
    for label, n in sorted(totals.items(), key=lambda x: -x[1]):
        w, s = by_role["pixel workers"].get(label, 0), by_role["server"].get(label, 0)
        out.append(f"{label:58s} {n / max(1, busy):6.1%} {w / max(1, busy):8.1%} {s / max(1, busy):7.1%}")
    w_all, s_all = sum(by_role["pixel workers"].values()), sum(by_role["server"].values())
    out.append(f"{'total':58s} {1:6.1%} {w_all / max(1, busy):8.1%} {s_all / max(1, busy):7.1%}")
    out.append("busy samples by function (inclusive):")
    out += [
        f"  {n:6d} {n / max(1, busy):6.1%}  {k}"
        for k, n in sorted(functions.items(), key=lambda x: -x[1])[:top]
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])))
