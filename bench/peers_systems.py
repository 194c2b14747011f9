"""The peer systems of the benchmark, Orthanc (+ DICOMweb plugin) and nginx, run as loopback-only children."""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from openhi.testing import free_port

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))

#: every child process started here, stopped by PID at exit even if the benchmark fails half-way
_CHILDREN: list[subprocess.Popen[bytes]] = []

#: Orthanc 1.10 has no bind-address option (civetweb gets only a port, so it listens on 0.0.0.0 and merely
#: refuses remote clients when RemoteAccessAllowed is false). This LD_PRELOAD shim rewrites a wildcard
#: bind() to the loopback address, so nothing outside the machine can even connect.
_BIND_LOOPBACK_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (!memcmp(&a.sin6_addr, &in6addr_any, sizeof a.sin6_addr)) {
            a.sin6_addr = in6addr_loopback;
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real(fd, addr, len);
}
"""


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session (start_new_session)
        proc.wait(timeout=10)


@atexit.register
def _stop_all() -> None:
    for proc in reversed(_CHILDREN):
        _stop(proc)


def _spawn(
    cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    _CHILDREN.append(proc)
    return proc


def build_bind_loopback_shim(work: Path) -> Path:
    """Compile the LD_PRELOAD shim that turns wildcard binds into loopback binds (needs a C compiler)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise FileNotFoundError(
            "a C compiler (apt-get install gcc) is needed to keep Orthanc on 127.0.0.1: Orthanc 1.10 "
            "cannot be configured to bind a single address"
        )
    src, lib = work / "bind_loopback.c", work / "bind_loopback.so"
    src.write_text(_BIND_LOOPBACK_C)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True)
    return lib


def listening_addresses(pid: int) -> list[str]:
    """``address:port`` of every listening TCP socket owned by ``pid`` (from /proc, no external tools)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                    continue
                addr_hex, port_hex = cols[1].split(":")
                raw = bytes.fromhex(addr_hex)
                if v6:
                    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                    addr = str(ipaddress.IPv6Address(b"".join(words)))
                else:
                    addr = str(ipaddress.IPv4Address(raw[::-1]))
                found.append(f"{addr}:{int(port_hex, 16)}")
    return found


def assert_loopback_only(pid: int, what: str) -> None:
    """Raise if a process of ``pid``'s tree listens on anything but the loopback address."""
    for p in process_tree(pid):
        for address in listening_addresses(p):
            host = address.rsplit(":", 1)[0]
            if not ipaddress.ip_address(host).is_loopback:
                raise RuntimeError(f"{what} (pid {p}) listens on {address}, not only on loopback")


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError as exc:  # any HTTP answer means the server is up
            if exc.code < 500:
                return
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {log.read_text()[-2000:]}")


def _find_plugin(name: str, package: str) -> Path:
    for folder in PLUGIN_DIRS:
        for pattern in (f"{name}.so", f"{name}.so.*"):
            found = sorted(folder.glob(pattern))
            if found:
                return found[0]
    raise FileNotFoundError(
        f"Orthanc plugin {name} not found under /usr/share/orthanc/plugins or /usr/lib/orthanc "
        f"(apt-get install {package})"
    )


def find_dicomweb_plugin() -> Path:
    return _find_plugin("libOrthancDicomWeb", "orthanc-dicomweb")


def find_gdcm_plugin() -> Path:
    return _find_plugin("libOrthancGdcm", "orthanc-gdcm")


#: JPEG 2000 Image Compression (Lossless Only): what the transcoding Orthanc stores
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


class Orthanc:
    """Orthanc with its own JSON config, storage and index in ``work``; HTTP on 127.0.0.1 only, no DICOM port.

    With ``transcode`` (a transfer syntax UID), Orthanc transcodes every incoming instance to it before
    storing it (``IngestTranscoding``), through the GDCM plugin (Debian ``orthanc-gdcm``: GDCM with
    OpenJPEG), which JPEG 2000 needs: Orthanc's built-in DCMTK transcoder has no JPEG 2000 codec.
    """

    def __init__(self, work: Path, transcode: str | None = None) -> None:
        self.work = work
        self.transcode = transcode
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / "orthanc.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        """Orthanc's packaged defaults except for isolation: ports, directories, no remote access, no jobs saved."""
        config: dict[str, Any] = {
            "Name": "openhi-bench",
            "StorageDirectory": str(self.work / "storage"),
            "IndexDirectory": str(self.work / "index"),
            "Plugins": [str(find_dicomweb_plugin())],
            "HttpServerEnabled": True,
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,  # Orthanc then listens for loopback clients only
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "DicomPort": free_port(),  # unused (DICOM server disabled) but never the shared default 4242
            "SaveJobs": False,
            "StorageCompression": False,
            "HttpCompressionEnabled": False,  # plain JSON answers; no client here asks for gzip from Orthanc
            "KeepAlive": True,
            "TcpNoDelay": True,
            "HttpThreadsCount": 50,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": "127.0.0.1"},
        }
        if self.transcode is None:
            return config
        config["Plugins"].append(str(find_gdcm_plugin()))
        config["Gdcm"] = {"Enable": True}  # no "Throttling": GDCM calls not limited (/etc/orthanc has 4)
        config["IngestTranscoding"] = self.transcode
        return config

    def start(self, timeout: float = 60.0) -> Orthanc:
        if shutil.which("Orthanc") is None:
            raise FileNotFoundError("Orthanc not found: apt-get install orthanc orthanc-dicomweb")
        self.work.mkdir(parents=True, exist_ok=True)
        cfg = self.work / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        shim = build_bind_loopback_shim(self.work)
        self.proc = _spawn(["Orthanc", str(cfg)], self.log, self.work, env={"LD_PRELOAD": str(shim)})
        _wait_http(f"{self.endpoint}/system", self.proc, self.log, timeout)
        try:
            assert_loopback_only(self.proc.pid, "Orthanc")
        except RuntimeError:
            self.stop()
            raise
        return self

    def get_json(self, path: str, timeout: float = 60.0) -> Any:
        with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())

    def stored_syntaxes(self) -> dict[str, int]:
        """How many stored instances have each transfer syntax (from Orthanc's per-instance metadata)."""
        counts: dict[str, int] = {}
        for orthanc_id in self.get_json("/instances"):
            with urllib.request.urlopen(
                f"{self.endpoint}/instances/{orthanc_id}/metadata/TransferSyntax", timeout=60
            ) as resp:
                syntax = resp.read().decode().strip()
            counts[syntax] = counts.get(syntax, 0) + 1
        return counts

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def version(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint}/system", timeout=5) as resp:
            info: dict[str, Any] = json.loads(resp.read())
        with urllib.request.urlopen(f"{self.endpoint}/plugins/dicom-web", timeout=5) as resp:
            plugin = json.loads(resp.read())
        out = {"orthanc": info.get("Version"), "dicomweb_plugin": plugin.get("Version")}
        if self.transcode is not None:
            out["gdcm_plugin"] = self.get_json("/plugins/gdcm", timeout=5).get("Version")
        return out

    def delete_study(self, study_uid: str) -> None:
        """Remove a study by its StudyInstanceUID (so an upload can be timed again on an empty store)."""
        body = json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}).encode()
        req = urllib.request.Request(f"{self.endpoint}/tools/find", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            ids: list[str] = json.loads(resp.read())
        for orthanc_id in ids:
            req = urllib.request.Request(f"{self.endpoint}/studies/{orthanc_id}", method="DELETE")
            with urllib.request.urlopen(req, timeout=300):
                pass

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Nginx:
    """nginx (``daemon off``, child process) serving ``root`` on 127.0.0.1; pid, logs and temp files in ``work``."""

    def __init__(self, work: Path, root: Path, workers: int = 1) -> None:
        self.work = work
        self.root = root
        self.workers = workers
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / "nginx.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        w = self.work
        return f"""daemon off;
master_process on;
worker_processes {self.workers};
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        location / {{ }}
    }}
}}
"""

    def start(self, timeout: float = 30.0) -> Nginx:
        if shutil.which("nginx") is None:
            raise FileNotFoundError("nginx not found: apt-get install nginx")
        self.work.mkdir(parents=True, exist_ok=True)
        conf = self.work / "nginx.conf"
        conf.write_text(self.config())
        if os.geteuid() == 0:
            _let_nginx_workers_read(self.root)
        self.proc = _spawn(["nginx", "-c", str(conf), "-p", str(self.work)], self.log, self.work)
        _wait_http(f"{self.endpoint}/", self.proc, self.log, timeout)
        try:
            assert_loopback_only(self.proc.pid, "nginx")
        except RuntimeError:
            self.stop()
            raise
        return self

    def version(self) -> str:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
        return (out.stderr or out.stdout).strip().removeprefix("nginx version: ").removeprefix("nginx/")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _let_nginx_workers_read(root: Path) -> None:
    """Started as root, nginx workers run as ``nobody``: open the served tree (inside the temp dir) to them."""
    tmp = Path(tempfile.gettempdir()).resolve()
    root = root.resolve()
    if tmp not in root.parents:
        return
    for folder in [root, *root.parents]:
        if folder == tmp:
            break
        folder.chmod(folder.stat().st_mode | 0o005)
    for path in root.rglob("*"):
        path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (via /proc/<pid>/task/<tid>/children)."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
    return seen


def pin_tree(pid: int, cores: set[int]) -> None:
    """Set the CPU affinity of every thread of ``pid`` and its descendants (threads made later inherit it)."""
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cores)
