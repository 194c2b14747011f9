"""DICOM study / series / instance index SQL shared by the SQLite and PostgreSQL adapters: upkeep and reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from openhi.core.dicom_query import ATTRIBUTES, COUNTS, INTEGER_COLUMNS, DicomQuery, Kind, Level
from openhi.storage.sql_dialect import Executor, Paramstyle, sql

if TYPE_CHECKING:
    from openhi.dicom.index_rows import DicomRows


def _stored(level: Level) -> tuple[str, ...]:
    return tuple(
        a.column
        for a in ATTRIBUTES
        if a.level is level and a.keyword not in COUNTS and a.keyword != "ModalitiesInStudy"
    )


#: the document-valued columns of each level (the counts and ModalitiesInStudy are computed)
STUDY_COLUMNS = _stored(Level.STUDY)
SERIES_COLUMNS = _stored(Level.SERIES)
INSTANCE_COLUMNS = _stored(Level.INSTANCE)
#: the columns of a dicom_series row written from DicomRows.series (with image_set_id, datastore_id, live)
_SERIES_ROW = ("updated_at", "num_instances", *STUDY_COLUMNS, *SERIES_COLUMNS)
#: the columns of a dicom_instances row after its key (image_set_id, sop_uid)
_INSTANCE_ROW = (
    "datastore_id",
    "study_uid",
    "series_uid",
    *(c for c in INSTANCE_COLUMNS if c != "sop_uid"),
    "frame_ids",
    "stored_ts",
)
#: PostgreSQL advisory-lock class of a study's recomputation (the second key is a hash of datastore/study)
STUDY_LOCK_CLASS = 0x6F686463  # "ohdc"


def _upsert(table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    names = (*key, *columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


_STATE = (
    "SELECT s.is_primary AS is_primary, s.state AS state, se.study_uid AS study_uid, se.live AS live"
    " FROM image_sets s LEFT JOIN dicom_series se ON se.image_set_id = s.id WHERE s.id = ?"
)
_UPSERT_SERIES = _upsert("dicom_series", ("image_set_id",), ("datastore_id", "live", *_SERIES_ROW))
_UPSERT_INSTANCE = _upsert("dicom_instances", ("image_set_id", "sop_uid"), _INSTANCE_ROW)
_INSTANCES_OF = f"SELECT sop_uid, {', '.join(_INSTANCE_ROW)} FROM dicom_instances WHERE image_set_id = ?"
_DROP_INSTANCE = "DELETE FROM dicom_instances WHERE image_set_id = ? AND sop_uid = ?"
_DROP_INSTANCES = "DELETE FROM dicom_instances WHERE image_set_id = ?"
_DROP_SERIES = "DELETE FROM dicom_series WHERE image_set_id = ?"
_SET_LIVE = "UPDATE dicom_series SET live = ? WHERE image_set_id = ?"
_LIVE_SERIES_OF_STUDY = (
    f"SELECT {', '.join(STUDY_COLUMNS)}, modality, num_instances, updated_at FROM dicom_series"
    " WHERE datastore_id = ? AND study_uid = ? AND live = 1 ORDER BY updated_at DESC, image_set_id DESC"
)
_STUDY_ROW = (
    *(c for c in STUDY_COLUMNS if c != "study_uid"),
    "modalities",
    "num_series",
    "num_instances",
    "updated_at",
)
_UPSERT_STUDY = _upsert("dicom_studies", ("datastore_id", "study_uid"), _STUDY_ROW)
_DROP_STUDY = "DELETE FROM dicom_studies WHERE datastore_id = ? AND study_uid = ?"
_LOCK_STUDY = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"


# -- upkeep (inside the caller's write transaction, after the image_sets row is written)
def sync(
    ex: Executor,
    style: Paramstyle,
    datastore_id: str,
    image_set_id: str,
    rows: DicomRows | None,
    updated_at: float,
) -> None:
    """Bring the index in line with image set ``image_set_id`` as its (just written) head row says.

    ``rows``: the set's new content (its series and instance rows replace the old ones), or None when only
    its state or primary flag may have changed. A DELETED set's rows are removed. Every study that gains or
    loses a live series, or whose live series changed, is recomputed (:func:`refresh_study`).
    """
    head = ex.execute(sql(_STATE, style), (image_set_id,)).fetchone()
    if head is None:
        return
    had, old_study, old_live = head["study_uid"] is not None, head["study_uid"], bool(head["live"])
    live = bool(head["is_primary"]) and head["state"] != "DELETED"
    studies = {old_study} if had and old_live else set()
    if head["state"] == "DELETED":
        if not had:
            return
        ex.execute(sql(_DROP_INSTANCES, style), (image_set_id,))
        ex.execute(sql(_DROP_SERIES, style), (image_set_id,))
    elif rows is not None:
        series = rows.series
        values: list[Any] = [updated_at, int(series.get("num_instances") or len(rows.instances))]
        values += [series.get(c) for c in (*STUDY_COLUMNS, *SERIES_COLUMNS)]
        values[2 + STUDY_COLUMNS.index("study_uid")] = rows.study_uid
        values[2 + len(STUDY_COLUMNS) + SERIES_COLUMNS.index("series_uid")] = rows.series_uid
        ex.execute(sql(_UPSERT_SERIES, style), (image_set_id, datastore_id, int(live), *values))
        _sync_instances(ex, style, datastore_id, image_set_id, rows, had)
        if live:
            studies.add(rows.study_uid)
    elif had and old_live != live:
        ex.execute(sql(_SET_LIVE, style), (int(live), image_set_id))
        studies.add(old_study)
    else:
        return
    for study_uid in sorted(studies):
        refresh_study(ex, style, datastore_id, study_uid, updated_at)


def _sync_instances(
    ex: Executor, style: Paramstyle, datastore_id: str, image_set_id: str, rows: DicomRows, had: bool
) -> None:
    """Write only the instance rows that changed (an import appending to a large series rewrites few)."""
    new: dict[str, tuple[Any, ...]] = {}
    for inst in rows.instances:
        frames = json.dumps(list(inst.get("frame_ids") or ()), separators=(",", ":"))
        values: list[Any] = [datastore_id, rows.study_uid, rows.series_uid]
        values += [inst.get(c) for c in INSTANCE_COLUMNS if c != "sop_uid"]
        new[str(inst["sop_uid"])] = (*values, frames, inst.get("stored_ts"))
    old: dict[str, tuple[Any, ...]] = {}
    if had:
        for r in ex.execute(sql(_INSTANCES_OF, style), (image_set_id,)).fetchall():
            old[r["sop_uid"]] = tuple(r[c] for c in _INSTANCE_ROW)
    gone = [(image_set_id, sop) for sop in old if sop not in new]
    if gone:
        ex.executemany(sql(_DROP_INSTANCE, style), gone)
    changed = [(image_set_id, sop, *v) for sop, v in new.items() if old.get(sop) != v]
    if changed:
        ex.executemany(sql(_UPSERT_INSTANCE, style), changed)


def refresh_study(ex: Executor, style: Paramstyle, datastore_id: str, study_uid: str, now: float) -> None:
    """Recompute a study's row from its live series: counts, modalities, and the study-level values of the
    most recently updated series; no live series, no row. ``now`` (the write's time) is its ``updated_at``.
    On PostgreSQL the study is locked first (until the transaction ends) so that concurrent writers of one
    study each count the other's series (a deadlock between two multi-study writes surfaces as
    DeadlockDetected, which commit_import / commit_store answer as a "conflict")."""
    if style == "format":
        ex.execute(_LOCK_STUDY, (STUDY_LOCK_CLASS, f"{datastore_id}/{study_uid}"))
    series = ex.execute(sql(_LIVE_SERIES_OF_STUDY, style), (datastore_id, study_uid)).fetchall()
    if not series:
        ex.execute(sql(_DROP_STUDY, style), (datastore_id, study_uid))
        return
    first = series[0]
    modalities = sorted({m for r in series for m in (r["modality"] or "").split("\\") if m})
    values = [first[c] for c in STUDY_COLUMNS if c != "study_uid"]
    values += [
        "\\" + "\\".join(modalities) + "\\" if modalities else None,
        len(series),
        sum(int(r["num_instances"]) for r in series),
        now,
    ]
    ex.execute(sql(_UPSERT_STUDY, style), (datastore_id, study_uid, *values))


# -- reads
def study_keys() -> tuple[str, ...]:
    return (*STUDY_COLUMNS, "modalities", "num_series", "num_instances")


def select_list(level: Level) -> tuple[tuple[str, str], ...]:
    """(expression, key) of every column a row of ``level`` returns; a lower level's count wins its key."""
    out = [(f"st.{c}", c) for c in (*STUDY_COLUMNS, "modalities", "num_series")]
    if level is Level.STUDY:
        return (*out, ("st.num_instances", "num_instances"), ("st.updated_at", "updated_at"))
    out += [(f"se.{c}", c) for c in (*SERIES_COLUMNS, "num_instances", "image_set_id")]
    if level is Level.SERIES:
        return tuple(out)
    out += [(f"i.{c}", c) for c in (*INSTANCE_COLUMNS, "frame_ids", "stored_ts")]
    return tuple(out)


def columns_sql(level: Level) -> str:
    return ", ".join(f"{expr} AS {key}" for expr, key in select_list(level))


def to_row(row: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """A result row as the port returns it: modalities a sorted list, frame_ids a list."""
    out = {k: row[k] for k in keys}
    modalities = out.get("modalities")
    out["modalities"] = [m for m in modalities.split("\\") if m] if modalities else []
    if "frame_ids" in out:
        out["frame_ids"] = json.loads(out["frame_ids"])
    return out


#: one live instance with its series and study (WADO-RS): (sop_uid, datastore_id, study_uid, series_uid)
INSTANCE_LOOKUP = (
    f"SELECT {columns_sql(Level.INSTANCE)} FROM dicom_series se"
    " JOIN dicom_instances i ON i.image_set_id = se.image_set_id AND i.sop_uid = ?"
    " JOIN dicom_studies st ON st.datastore_id = se.datastore_id AND st.study_uid = se.study_uid"
    " WHERE se.datastore_id = ? AND se.study_uid = ? AND se.series_uid = ? AND se.live = 1"
    " ORDER BY se.image_set_id LIMIT 1"
)
INSTANCE_KEYS = tuple(key for _, key in select_list(Level.INSTANCE))


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
_FROM = {
    Level.STUDY: "FROM dicom_studies st WHERE st.datastore_id = ?",
    Level.SERIES: "FROM dicom_series se"
    " JOIN dicom_studies st ON st.datastore_id = se.datastore_id AND st.study_uid = se.study_uid"
    " WHERE se.datastore_id = ? AND st.datastore_id = ? AND se.live = 1",
    Level.INSTANCE: "FROM dicom_series se"
    " JOIN dicom_studies st ON st.datastore_id = se.datastore_id AND st.study_uid = se.study_uid"
    " JOIN dicom_instances i ON i.image_set_id = se.image_set_id"
    " WHERE se.datastore_id = ? AND st.datastore_id = ? AND i.datastore_id = ? AND se.live = 1",
}
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
    ds = query.datastore_id
    args: list[Any] = [ds] * (1 + _DEPTH[level])
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
        condition = match_sql(
            f"{_ALIAS[a.level]}.{a.column}", m.kind, m.values, a.column in INTEGER_COLUMNS, pg, args
        )
        if condition is not None:
            where.append(condition)
            driven = driven or (
                a.level is Level.STUDY and a.column in INDEXED_STUDY_COLUMNS and m.kind is not Kind.FUZZY
            )
    order = _ORDER[level]
    if driven and level is Level.STUDY and not pg:
        order = "+" + order  # SQLite: search the matched column's index, not walk the sort's
    text = f"SELECT {columns_sql(level)} {_FROM[level]}"
    if where:
        text += " AND " + " AND ".join(where)
    text += f" ORDER BY {order} LIMIT ? OFFSET ?"
    args.extend([max(0, query.limit), max(0, query.offset)])
    return (text.replace("?", "%s") if pg else text), args


def row_keys(level: Level) -> tuple[str, ...]:
    return tuple(key for _, key in select_list(level))
