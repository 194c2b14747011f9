"""Contract tests: what ``openhi serve`` checks before it creates anything, and what ``/readyz`` reports."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openhi.codec.decoders import REQUIRED


@pytest.fixture()
def busy_port() -> Iterator[int]:
    """A loopback port another program is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_port_stops_the_start_before_anything_is_created(
    busy_port: int, tmp_path: Path, workers: str
) -> None:
    data = tmp_path / "new-data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "openhi",
            "serve",
            "--port",
            str(busy_port),
            "--data-dir",
            str(data),
            "--workers",
            workers,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"openhi: port {busy_port} on 127.0.0.1 is in use"), lines
    assert "startup complete" not in proc.stderr.lower()
    assert not data.exists()


def test_a_busy_dicom_port_stops_a_single_process_start_with_one_line(busy_port: int, tmp_path: Path) -> None:
    from openhi.testing import free_port

    command = [sys.executable, "-m", "openhi", "serve", "--port", str(free_port()), "--data-dir"]
    command += [str(tmp_path / "data"), "--dicom-port", str(busy_port)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("openhi:")]
    assert errors == [
        f"openhi: DICOM port: cannot listen for DICOM on 127.0.0.1:{busy_port}: [Errno 98] Address already in use"
    ]


def test_readyz_reports_a_decoder_for_every_transcoded_syntax(openhi_server: Any) -> None:
    resp = httpx.get(f"{openhi_server.endpoint}/readyz")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["status"] == "ready"
    assert set(doc["codecs"]) == set(REQUIRED)
    assert all(state.startswith("available") for state in doc["codecs"].values()), doc["codecs"]
