"""Shared pytest configuration: make tests/ importable helpers (dicom_factory, seaweed) available."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def seaweed_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real S3-compatible server (SeaweedFS ``weed mini``) on loopback for the whole session.

    Skipped with a reason when it cannot start outside CI; in CI (CI=true) that is a failure.
    """
    from seaweed import SeaweedServer, SeaweedUnavailable

    server = SeaweedServer()
    try:
        server.start(tmp_path_factory.mktemp("seaweed-session"))
    except (SeaweedUnavailable, OSError) as exc:
        server.stop()
        if os.environ.get("CI") == "true":
            pytest.fail(f"SeaweedFS is required in CI but could not start: {exc}")
        pytest.skip(f"SeaweedFS (weed mini) could not start: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[object]:
    """Fresh PostgreSQL schemas for index tests (``pg.Schemas``), all dropped at the end of the session.

    Skipped with a reason when no server answers outside CI; in CI (CI=true) that is a failure.
    """
    import pg

    reason = pg.unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {reason}")
        pytest.skip(reason)
    schemas = pg.Schemas()
    try:
        yield schemas
    finally:
        schemas.drop_all()
