"""wrk (C, one thread) as the load generator: replays a URL list through a generated Lua script.

wrk costs far less CPU per request than a Python client, so on a small machine more of the cores are left
to the server under test. Same :class:`loadgen.Request` in, same :class:`loadgen.Result` out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from loadgen import Request, Result

_MARK = "OPENHI-WRK "

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\\n',
    "__MARK__", summary.requests, summary.duration, summary.bytes, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for ASCII text


def lua_script(requests: Sequence[Request]) -> str:
    """A wrk script that sends ``requests`` round-robin (every connection walks the same list)."""
    lines = ["local reqs = {}", "init = function(args)"]
    for r in requests:
        parts = urlsplit(r.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {k: v for k, v in r.headers.items() if k.lower() not in ("host", "content-length")}
        headers["Host"] = parts.netloc
        items = ",".join(f"[{_lua_string(k)}]={_lua_string(v)}" for k, v in headers.items())
        body = _lua_string(r.body.decode("latin-1")) if r.body else "nil"
        lines.append(
            f"  reqs[#reqs+1] = wrk.format({_lua_string(r.method)}, {_lua_string(target)}, {{{items}}}, {body})"
        )
    lines += [
        "end",
        "local i = 0",
        "request = function() i = i % #reqs + 1; return reqs[i] end",
        _DONE.replace("__MARK__", _MARK),
    ]
    return "\n".join(lines)


def run_wrk(requests: Sequence[Request], connections: int, seconds: float, warmup: float = 0.0) -> Result:
    """Drive ``requests`` with ``wrk -t1 -cN`` for ``seconds`` (after an unrecorded ``warmup`` run)."""
    endpoint = "{0.scheme}://{0.netloc}".format(urlsplit(requests[0].url))
    with tempfile.TemporaryDirectory(prefix="openhi-wrk-") as tmp:
        script = Path(tmp) / "urls.lua"
        script.write_text(lua_script(requests))
        if warmup > 0:
            _wrk(script, endpoint, connections, warmup)
        stats = _wrk(script, endpoint, connections, seconds)
    elapsed = stats["duration_us"] / 1e6
    n = stats["requests"]
    errors = stats["status_errors"] + stats["socket_errors"]
    return Result(
        connections=connections,
        seconds=elapsed,
        requests=n,
        errors=errors,
        requests_per_s=n / elapsed,
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
        mb_per_s=stats["bytes"] / elapsed / 1e6,
        body_bytes=stats["bytes"],  # wrk counts header bytes too
        statuses={},
    )


def _wrk(script: Path, endpoint: str, connections: int, seconds: float) -> dict[str, int]:
    duration = max(1, round(seconds))
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        endpoint,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    for line in out.splitlines():
        if line.startswith(_MARK):
            stats: dict[str, int] = json.loads(line[len(_MARK) :])
            return stats
    raise RuntimeError(f"wrk printed no summary: {out[-2000:]}")
