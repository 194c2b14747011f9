"""PostgreSQL connections: a psycopg pool, one schema on every connection, migrations at open."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, TupleRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from openhi.storage.errors import ConfigurationError
from openhi.storage.postgres.schema import MIGRATION_LOCK_KEY, MIGRATIONS

DEFAULT_POOL_MAX = 10
DEFAULT_CONNECT_TIMEOUT = 10
_OWN_PARAMS = ("schema", "pool_max")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True)
class Settings:
    """What an index URL says: the libpq connection string, the schema, the pool size, a safe display."""

    conninfo: str
    schema: str | None
    pool_max: int
    display: str


def redact(url: str) -> str:
    """The URL without its password (in the authority or as a ``password=`` query parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostinfo}"
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), parts.fragment))


def parse_url(url: str, schema: str | None = None) -> Settings:
    """Split ``postgresql://…?schema=NAME&pool_max=N`` into what libpq reads and what openhi reads."""
    display = redact(url)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_PARAMS}
    rest = [(k, v) for k, v in query if k not in _OWN_PARAMS]
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
    schema = schema if schema is not None else own.get("schema") or None
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigurationError(
            f"Invalid schema name {schema!r} for the PostgreSQL index {display}: "
            "use letters, digits and underscores (at most 63, not starting with a digit)."
        )
    try:
        pool_max = int(own.get("pool_max", DEFAULT_POOL_MAX))
    except ValueError:
        pool_max = 0
    if pool_max < 1:
        raise ConfigurationError(
            f"Invalid pool_max {own.get('pool_max')!r} in the PostgreSQL index URL {display}: "
            "use a positive integer."
        )
    return Settings(conninfo, schema, pool_max, display)


def _describe(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Database:
    """Owns the connection pool. ``tx()`` is one transaction: committed on success, else rolled back."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.settings = parse_url(url, schema)
        self.schema = self.settings.schema
        kwargs: dict[str, Any] = {"autocommit": False}
        try:
            if "connect_timeout" not in conninfo_to_dict(self.settings.conninfo):
                kwargs["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        except psycopg.ProgrammingError as exc:
            raise self._config_error(exc) from None
        self._migrate(kwargs)
        self.pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            self.settings.conninfo,
            kwargs=kwargs,
            min_size=1,
            max_size=self.settings.pool_max,
            configure=self._configure,
            name="openhi-index",
            open=False,
        )
        try:
            self.pool.open(wait=True, timeout=float(DEFAULT_CONNECT_TIMEOUT))
        except PoolTimeout as exc:
            self.pool.close()
            raise self._config_error(exc) from None

    def _config_error(self, exc: BaseException) -> ConfigurationError:
        return ConfigurationError(
            f"Cannot open the PostgreSQL index {self.settings.display}: {_describe(exc)}"
        )

    def _migrate(self, kwargs: dict[str, Any]) -> None:
        """Create the schema and apply pending migrations, serialised across processes by an advisory lock."""
        try:
            conn = psycopg.connect(self.settings.conninfo, **kwargs)
        except psycopg.Error as exc:
            raise self._config_error(exc) from None
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                if self.schema is not None:
                    name = sql.Identifier(self.schema)
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
                    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                )
                row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
                applied = int(row[0]) if row is not None else 0
                for number, script in enumerate(MIGRATIONS[applied:], start=applied + 1):
                    conn.execute(script)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at)"
                        " VALUES (%s, extract(epoch FROM clock_timestamp()))",
                        (number,),
                    )
        except psycopg.errors.InsufficientPrivilege as exc:
            raise self._config_error(exc) from None
        finally:
            conn.close()

    def _configure(self, conn: psycopg.Connection[TupleRow]) -> None:
        if self.schema is not None:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        conn.commit()

    @contextmanager
    def tx(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """One transaction on a pooled connection, rows as dicts; commit on success, roll back on error."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            yield cur

    def close(self) -> None:
        self.pool.close()
