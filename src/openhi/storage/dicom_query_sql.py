"""DICOM index queries shared by the SQLite and PostgreSQL adapters: PS3.4 C.2.2.2 matching executed in SQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openhi.core.dicom_query import INTEGER_COLUMNS, DicomQuery, Kind, Level, Match
from openhi.storage.dicom_index_sql import columns_sql

# -- query building (PS3.4 C.2.2.2 matching, executed in SQL)
_ALIAS = {Level.STUDY: "st", Level.SERIES: "se", Level.INSTANCE: "i"}
_DEPTH = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}
#: study-level columns with an index of their own (dicom_studies_*): a match on one drives the query
INDEXED_STUDY_COLUMNS = frozenset(
    {"study_uid", "patient_id", "patient_name", "accession_number", "study_date", "study_id"}
)
_ORDER = {
    Level.STUDY: "st.updated_at DESC, st.study_uid",
    Level.SERIES: "se.series_number NULLS LAST, se.series_uid, se.image_set_id",
    Level.INSTANCE: "i.instance_number NULLS LAST, i.sop_uid, i.image_set_id",
}
_TABLES = {"st": "dicom_studies st", "se": "dicom_series se", "i": "dicom_instances i"}
_JOINS = {
    frozenset({"st", "se"}): "st.datastore_id = se.datastore_id AND st.study_uid = se.study_uid",
    frozenset({"se", "i"}): "i.image_set_id = se.image_set_id",
}
#: the tables of a level's query in join order, by the table whose index drives it
_PATHS = {
    (Level.STUDY, "st"): ("st",),
    (Level.SERIES, "st"): ("st", "se"),
    (Level.SERIES, "se"): ("se", "st"),
    (Level.INSTANCE, "st"): ("st", "se", "i"),
    (Level.INSTANCE, "se"): ("se", "st", "i"),
    (Level.INSTANCE, "i"): ("i", "se", "st"),
}


def _from(level: Level, driver: str, pg: bool) -> str:
    """FROM ... WHERE (one ``?``: the datastore) joining the level's tables from ``driver`` on. SQLite keeps
    the order (CROSS JOIN): without statistics it may otherwise start from a table's datastore-wide index."""
    path = _PATHS[(level, driver)]
    text = f"FROM {_TABLES[path[0]]}"
    for k, alias in enumerate(path[1:], start=1):
        joined = next(
            _JOINS[frozenset({alias, other})] for other in path[:k] if frozenset({alias, other}) in _JOINS
        )
        text += f" {'JOIN' if pg else 'CROSS JOIN'} {_TABLES[alias]} ON {joined}"
    text += f" WHERE {path[0]}.datastore_id = ?"
    return text + (" AND se.live = 1" if "se" in path else "")


def _indexable(m: Match) -> bool:
    """A match one of its column's indexes serves (an equality, a list, a range, a literal-prefix pattern)."""
    if m.kind is Kind.WILDCARD:
        return bool(_literal_prefix(m.values[0] if m.values else ""))
    return m.kind in (Kind.SINGLE, Kind.LIST, Kind.RANGE)


def _driver(query: DicomQuery) -> str:
    level = query.level
    if level is Level.STUDY or query.study_uid is not None:
        return "st"
    indexed = [m for m in query.matches if _indexable(m)]
    if level is Level.INSTANCE and any(
        m.attribute.column == "sop_uid" and m.kind is not Kind.WILDCARD for m in indexed
    ):
        return "i"
    if any(m.attribute.level is Level.STUDY and m.attribute.column in INDEXED_STUDY_COLUMNS for m in indexed):
        return "st"
    return "se"


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NEVER = "1 = 0"


def _glob(pattern: str) -> str:
    """A DICOM wildcard pattern as a SQLite GLOB pattern (``[`` is its only other metacharacter)."""
    return pattern.replace("[", "[[]")


def _like(pattern: str) -> str:
    """A DICOM wildcard pattern as a PostgreSQL LIKE pattern (backslash escapes)."""
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append({"*": "%", "?": "_"}.get(ch, ch))
    return "".join(out)


def _literal_prefix(pattern: str) -> str:
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return pattern[:cut]


def _successor(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` (byte-wise UTF-8 order), or None."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == 0xD800:
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def _integers(values: Iterable[str]) -> list[int] | None:
    try:
        return [int(v.strip()) for v in values]
    except ValueError:
        return None


def match_sql(
    column: str, kind: Kind, values: tuple[str, ...], integer: bool, pg: bool, args: list[Any]
) -> str | None:
    """The condition of one match on ``column`` (an aliased column), its arguments appended to ``args``;
    None for universal matching (an empty value, ``*``, an open range)."""
    if kind is Kind.SINGLE or kind is Kind.LIST or kind is Kind.CONTAINS:
        wanted = [v for v in values if v != ""]
        if not wanted:
            return None
        if column.endswith(".modalities"):
            args.extend(f"\\{v}\\" for v in wanted)
            test = "strpos({}, ?) > 0" if pg else "instr({}, ?) > 0"
            return "(" + " OR ".join(test.format(column) for _ in wanted) + ")"
        typed: list[Any] | None = _integers(wanted) if integer else list(wanted)
        if typed is None:
            return _NEVER
        args.extend(typed)
        return f"{column} = ?" if len(typed) == 1 else f"{column} IN ({', '.join('?' * len(typed))})"
    if kind is Kind.RANGE:
        low, high = (*values, "", "")[:2]
        parts = []
        if integer:
            bounds = _integers(v for v in (low, high) if v)
            if bounds is None:
                return _NEVER
        if low:
            parts.append(f"{column} >= ?")
            args.append(int(low) if integer else low)
        if high:
            # a bound of coarser precision holds every finer value below it ("1200" holds "120059.99")
            parts.append(f"{column} <= ?" if integer else f"{column} < ?")
            args.append(int(high) if integer else high + "\x7f")
        return " AND ".join(parts) or None
    pattern = values[0] if values else ""
    if kind is Kind.FUZZY:
        p = pattern.translate(_ASCII_LOWER)
        if not p.strip("*"):
            return None
        if pg:
            args.extend([f"%^{_like(p)}%", f"%={_like(p)}%"])
            return f"('^' || lower({column}) LIKE ? OR '^' || lower({column}) LIKE ?)"
        args.append(f"*[=^]{_glob(p)}*")
        return f"'^' || lower({column}) GLOB ?"
    # WILDCARD
    if not pattern.strip("*"):
        return None
    text = f"CAST({column} AS TEXT)" if integer else column
    if column.endswith(".modalities"):
        args.append(f"%\\\\{_like(pattern)}\\\\%" if pg else f"*\\{_glob(pattern)}\\*")
        return f"{text} LIKE ?" if pg else f"{text} GLOB ?"
    parts = []
    prefix = _literal_prefix(pattern)
    if prefix and not integer:  # the index serves the literal prefix as a range
        parts.append(f"{column} >= ?")
        args.append(prefix)
        upper = _successor(prefix)
        if upper is not None:
            parts.append(f"{column} < ?")
            args.append(upper)
    parts.append(f"{text} LIKE ?" if pg else f"{text} GLOB ?")
    args.append(_like(pattern) if pg else _glob(pattern))
    return " AND ".join(parts)


def query_sql(query: DicomQuery, pg: bool) -> tuple[str, list[Any]]:
    """The statement (with the dialect's placeholders) and arguments of a QIDO query at ``query.level``.

    Raises:
        ValueError: a match on an attribute below the query's level.
    """
    level = query.level
    driver = _driver(query)
    args: list[Any] = [query.datastore_id]
    where: list[str] = []
    if query.study_uid is not None:
        where.append("st.study_uid = ?")
        args.append(query.study_uid)
        if level is not Level.STUDY:
            where.append("se.study_uid = ?")
            args.append(query.study_uid)
    if query.series_uid is not None and level is not Level.STUDY:
        where.append("se.series_uid = ?")
        args.append(query.series_uid)
    driven = query.study_uid is not None
    for m in query.matches:
        a = m.attribute
        if _DEPTH[a.level] > _DEPTH[level]:
            raise ValueError(f"{a.keyword} is not an attribute of the {level.value} level or above")
        column = f"{_ALIAS[a.level]}.{a.column}"
        condition = match_sql(column, m.kind, m.values, a.column in INTEGER_COLUMNS, pg, args)
        if condition is not None:
            where.append(condition)
            driven = driven or (
                a.level is Level.STUDY and a.column in INDEXED_STUDY_COLUMNS and _indexable(m)
            )
    order = _ORDER[level]
    if driven and level is Level.STUDY and not pg:
        order = "+" + order  # SQLite: search the matched column's index, not walk the sort's
    text = f"SELECT {columns_sql(level)} {_from(level, driver, pg)}"
    if where:
        text += " AND " + " AND ".join(where)
    text += f" ORDER BY {order} LIMIT ? OFFSET ?"
    args.extend([max(0, query.limit), max(0, query.offset)])
    return (text.replace("?", "%s") if pg else text), args
