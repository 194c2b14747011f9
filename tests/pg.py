"""Throwaway PostgreSQL schemas for the PostgreSQL index tests (one prefix per test run); independent of pytest."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

# the server the tests use; CI and the developers' machines run PostgreSQL on loopback with trust auth
URL = os.environ.get("OPENHI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

TABLES = (
    "meta",
    "datastores",
    "tags",
    "import_jobs",
    "image_sets",
    "image_set_versions",
    "image_set_frames",
    "blob_gc",
    "write_owners",
    "write_locks",
    "dicom_studies",
    "dicom_series",
    "dicom_instances",
    "events",
    "webhook_cursors",
)


def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here (psycopg missing, server unreachable), or None."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        return f"psycopg 3 / psycopg-pool not installed ({exc})"
    try:
        with psycopg.connect(URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {URL} ({' '.join(str(exc).split())})"
    return None


def _connect() -> Any:
    import psycopg

    return psycopg.connect(URL, autocommit=True, connect_timeout=10)


@contextmanager
def connection(schema: str) -> Iterator[Any]:
    """An autocommit connection whose ``search_path`` is ``schema``."""
    from psycopg import sql

    with _connect() as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        yield conn


def execute(schema: str, statement: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement with ``search_path`` set to ``schema``; its rows (empty when it returns none)."""
    with connection(schema) as conn:
        cur = conn.execute(statement, args)
        return list(cur.fetchall()) if cur.description else []


def with_query(url: str, **params: str) -> str:
    """``url`` with more query parameters."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


class Schemas:
    """Schemas named ``openhi_test_<random>[_N]`` for one test run; ``drop_all`` removes every one made."""

    def __init__(self) -> None:
        self.run = f"openhi_test_{secrets.token_hex(4)}"
        self._made: list[str] = [self.run]
        self.url = URL

    def new(self) -> str:
        """A fresh, not yet existing schema name of this run."""
        name = f"{self.run}_{len(self._made)}"
        self._made.append(name)
        return name

    def truncate(self, schema: str) -> None:
        """Empty every table of the index in ``schema`` (keeps the applied migrations)."""
        from psycopg import sql

        names = sql.SQL(", ").join(sql.Identifier(schema, t) for t in TABLES)
        with _connect() as conn:
            conn.execute(sql.SQL("TRUNCATE {}").format(names))

    def drop_all(self) -> None:
        from psycopg import sql

        with _connect() as conn:
            for name in self._made:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def seed_search_rows(schema: str, count: int, datastore_id: str) -> None:
    """``count`` image sets in ``datastore_id`` (plus a tenth as many in another), spread like real data, analysed."""
    columns = (
        "id, datastore_id, latest_version, content_version, state, workflow_status, is_primary, created_at,"
        " updated_at, storage_tier, patient_id, accession_number, study_id, study_uid, series_uid, study_datetime"
    )
    values = (
        "SELECT md5(g::text), CASE WHEN g %% 11 = 0 THEN 'other' ELSE %s END, 1, 1,"
        " CASE WHEN g %% 50 = 0 THEN 'DELETED' ELSE 'ACTIVE' END, 'CREATED', g %% 2, 1000.0 + g, 50000.0 - g,"
        " 'FREQUENT_ACCESS', 'P' || g %% 1000, 'A' || g %% 2000, 'S' || g %% 500, '1.2.' || g %% 400,"
        " '1.2.' || g %% 400 || '.' || g,"
        " CASE WHEN g %% 6 = 0 THEN NULL ELSE '2020' || lpad((1 + g %% 12)::text, 2, '0')"
        " || lpad((1 + g %% 28)::text, 2, '0') || lpad((g %% 24)::text, 2, '0') || '0000.000000' END"
        " FROM generate_series(1, %s) AS g"
    )
    execute(schema, f"INSERT INTO image_sets ({columns}) {values}", (datastore_id, count + count // 10))
    execute(schema, "ANALYZE image_sets")
