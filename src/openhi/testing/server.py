"""A real openhi server process on a free loopback port, with a temporary data dir and boto3 clients."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from openhi.testing import model_check


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RunningServer:
    """``openhi serve`` in a subprocess. ``restart()`` keeps the data dir; ``kill()`` is a SIGKILL."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> RunningServer:
        cmd = [
            sys.executable,
            "-m",
            "openhi",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        env = {**os.environ, **self.env}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"openhi exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"openhi did not answer within {timeout}s: {self.log_path.read_text()[-2000:]}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        # anything the server left in its process group (a pixel worker that outlived it) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the whole process group (server and its pixel workers), as a crash would."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart(self) -> RunningServer:
        self.stop()
        return self.start()

    def client(
        self, service: str = "medical-imaging", *, validate_responses: bool | None = None, **kwargs: Any
    ) -> Any:
        """A boto3 client for this server (no host prefix injection, no retries, dummy credentials).

        ``validate_responses`` (default: the pytest plugin's ``openhi_validate_responses`` switch) makes a
        ``medical-imaging`` client check every response against the service model
        (:func:`openhi.testing.model_check.validate_responses`).
        """
        import boto3
        from botocore.config import Config

        config = Config(
            inject_host_prefix=False, retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120
        )
        client = boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=kwargs.pop("region_name", "us-east-1"),
            aws_access_key_id=kwargs.pop("aws_access_key_id", "openhi-test"),
            aws_secret_access_key=kwargs.pop("aws_secret_access_key", "openhi-test-secret"),
            config=kwargs.pop("config", config),
            **kwargs,
        )
        if validate_responses is None:
            validate_responses = model_check.default_enabled()
        if validate_responses and service == "medical-imaging":
            model_check.validate_responses(client)
        return client

    def faults(self) -> Any:
        """A :class:`openhi.throttle.client.FaultClient` of this server's ``/openhi/faults``."""
        from openhi.throttle.client import FaultClient

        return FaultClient(self.endpoint)

    def inject(self, operation: str, **fault: Any) -> Any:
        """Add a fault-injection rule (``error=``, ``delay=``, ``drop=``, ``every=``, ``probability=``,
        ``times=``, ``message=``); the result removes it (``remove()``, or as a context manager)::

            with openhi_server.inject("GetImageFrame", error="ThrottlingException", every=3):
                ...
        """
        return self.faults().inject(operation, **fault)

    def bucket_path(self, bucket: str) -> Path:
        """Where ``s3://bucket/...`` lives for the embedded object store."""
        return self.data_dir / "buckets" / bucket

    def stage_object(self, bucket: str, key: str, data: bytes) -> None:
        """Put an object where import jobs read ``s3://bucket/key`` (any deployment has this method)."""
        path = self.bucket_path(bucket) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def read_object(self, bucket: str, key: str) -> bytes | None:
        """The object ``s3://bucket/key`` an import job wrote, or None when there is none."""
        path = self.bucket_path(bucket) / key
        return path.read_bytes() if path.is_file() else None

    def read_blob(self, key: str) -> bytes | None:
        """The stored bytes of blob ``key`` (``frames/…``, ``metadata/…``), or None when absent."""
        from openhi.storage.blobs_fs import FsBlobStore

        try:
            return FsBlobStore(self.data_dir / "blobs").get(key)
        except Exception:
            return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``/readyz`` answers 200 (the index answers too)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.endpoint}/readyz not ready within {timeout}s")
            time.sleep(0.1)

    def close(self) -> None:
        """Release what the deployment holds besides its processes (nothing, for an embedded server)."""

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
