"""DICOM study / series / instance index SQL shared by the SQLite and PostgreSQL adapters: upkeep and reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from openhi.core.dicom_query import ATTRIBUTES, COUNTS, Level
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
    new_head: tuple[bool, str] | None = None,
) -> None:
    """Bring the index in line with image set ``image_set_id`` as its (just written) head row says.

    ``rows``: the set's new content (its series and instance rows replace the old ones), or None when only
    its state or primary flag may have changed. A DELETED set's rows are removed. Every study that gains or
    loses a live series, or whose live series changed, is recomputed (:func:`refresh_study`).
    ``new_head``: (is_primary, state) of a set just inserted (it has no rows yet: nothing to read).
    """
    if new_head is not None:
        (is_primary, state), had, old_study, old_live = new_head, False, "", False
    else:
        head = ex.execute(sql(_STATE, style), (image_set_id,)).fetchone()
        if head is None:
            return
        is_primary, state = bool(head["is_primary"]), head["state"]
        had, old_study, old_live = head["study_uid"] is not None, str(head["study_uid"]), bool(head["live"])
    live = is_primary and state != "DELETED"
    studies: set[str] = {old_study} if had and old_live else set()
    if state == "DELETED":
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
#: the WADO-RS frame hot path: an instance's frame ids, stored syntax and image set (sop, ds, study, series)
INSTANCE_FRAMES = (
    "SELECT i.frame_ids, i.stored_ts, se.image_set_id FROM dicom_series se"
    " JOIN dicom_instances i ON i.image_set_id = se.image_set_id AND i.sop_uid = ?"
    " WHERE se.datastore_id = ? AND se.study_uid = ? AND se.series_uid = ? AND se.live = 1"
    " ORDER BY se.image_set_id LIMIT 1"
)


def frames_of(row: Any) -> tuple[list[str], str | None, str] | None:
    """(frame ids, stored syntax, image set id) of an INSTANCE_FRAMES row."""
    if row is None:
        return None
    return json.loads(row["frame_ids"] or "[]"), row["stored_ts"], row["image_set_id"]


def row_keys(level: Level) -> tuple[str, ...]:
    """The keys of a row of ``level`` (:func:`select_list`)."""
    return tuple(key for _, key in select_list(level))


# -- backfill (image sets written before the DICOM index existed)
#: live or not, sets with content and no series row, by id after a key: (after, limit)
UNINDEXED = (
    "SELECT * FROM image_sets s WHERE s.id > ? AND s.state <> 'DELETED' AND s.content_version > 0"
    " AND NOT EXISTS (SELECT 1 FROM dicom_series se WHERE se.image_set_id = s.id) ORDER BY s.id LIMIT ?"
)
_CONTENT = "SELECT content_version, updated_at FROM image_sets WHERE id = ? AND datastore_id = ?"


def reindex(
    ex: Executor,
    style: Paramstyle,
    datastore_id: str,
    image_set_id: str,
    content_version: int,
    rows: DicomRows,
) -> bool:
    """Write the rows of a set's content ``content_version`` (read from its document by the caller), unless
    the set moved on meanwhile (False: its newer write indexed it already, or it is gone)."""
    head = ex.execute(sql(_CONTENT, style), (image_set_id, datastore_id)).fetchone()
    if head is None or int(head["content_version"]) != content_version:
        return False
    sync(ex, style, datastore_id, image_set_id, rows, float(head["updated_at"]))
    return True
