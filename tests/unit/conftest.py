"""Fixtures of the unit tests: a metadata index on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from openhi.ports.index import MetadataIndex
from openhi.storage.sqlite.index import SqliteIndex


@pytest.fixture(params=["sqlite", "postgres"])
def index(request: pytest.FixtureRequest) -> Iterator[MetadataIndex]:
    """The same contract on both adapters: an in-memory SQLite index, and PostgreSQL in the session's test
    schema (``pg_schemas``: skipped outside CI when no server answers, a failure in CI), emptied after."""
    if request.param == "sqlite":
        idx: Any = SqliteIndex(":memory:")
        yield idx
        idx.close()
        return
    schemas: Any = request.getfixturevalue("pg_schemas")
    from openhi.storage.postgres.index import PostgresIndex

    idx = PostgresIndex(schemas.url, schema=schemas.run)
    try:
        yield idx
    finally:
        idx.close()
        schemas.truncate(schemas.run)
