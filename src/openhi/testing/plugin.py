"""pytest plugin (auto-registered): ``openhi_server`` (shared per session) and ``openhi_fresh`` fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from openhi.testing.server import RunningServer


@pytest.fixture(scope="session")
def openhi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real openhi server for the whole test session (embedded storage in a temp dir)."""
    server = RunningServer(tmp_path_factory.mktemp("openhi") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def openhi_fresh(tmp_path: Any) -> Iterator[RunningServer]:
    """A real openhi server of its own, for tests that restart or kill it."""
    server = RunningServer(tmp_path / "data").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture()
def medical_imaging(openhi_server: RunningServer) -> Any:
    """A boto3 ``medical-imaging`` client bound to the session's openhi server."""
    return openhi_server.client()
