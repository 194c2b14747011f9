"""What the shared index SQL needs of a driver: its placeholders, and something that runs statements."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal, Protocol

#: ``qmark``: ``?`` (sqlite3); ``format``: ``%s`` (psycopg)
Paramstyle = Literal["qmark", "format"]


@lru_cache(maxsize=512)
def sql(text: str, paramstyle: Paramstyle) -> str:
    """``text``, written with ``?`` placeholders, in ``paramstyle`` (computed once per statement and style)."""
    if paramstyle == "qmark":
        return text
    if "%" in text:
        raise ValueError(f"a shared statement may not contain a literal '%': {text!r}")
    return text.replace("?", "%s")


class Result(Protocol):
    """An executed statement: a sqlite3 or a psycopg cursor."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Executor(Protocol):
    """What runs the statements: a sqlite3.Connection, or a psycopg cursor."""

    def execute(self, sql: str, params: Any, /) -> Result: ...

    def executemany(self, sql: str, params: Any, /) -> object: ...
