"""SQLite index, DICOM half: the study / series / instance queries of QIDO-RS and WADO-RS (dicom_index_sql)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openhi.core.dicom_query import DicomQuery, Level
from openhi.core.records import ImageSet
from openhi.storage import dicom_index_sql as dq
from openhi.storage.dicom_query_sql import query_sql
from openhi.storage.sqlite.connection import Database
from openhi.storage.sqlite.rows import image_set_from

if TYPE_CHECKING:
    from openhi.dicom.index_rows import DicomRows


class DicomIndexTables:
    db: Database

    def _query(self, query: DicomQuery, level: Level) -> list[dict[str, Any]]:
        if query.level is not level:
            raise ValueError(f"a {query.level.value} query asked for {level.value} rows")
        text, args = query_sql(query, pg=False)
        keys = dq.row_keys(level)
        return [dq.to_row(r, keys) for r in self.db.conn.execute(text, args).fetchall()]

    def dicom_studies(self, query: DicomQuery) -> list[dict[str, Any]]:
        return self._query(query, Level.STUDY)

    def dicom_series(self, query: DicomQuery) -> list[dict[str, Any]]:
        return self._query(query, Level.SERIES)

    def dicom_instances(self, query: DicomQuery) -> list[dict[str, Any]]:
        return self._query(query, Level.INSTANCE)

    def dicom_instance(
        self, datastore_id: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> dict[str, Any] | None:
        row = self.db.conn.execute(
            dq.INSTANCE_LOOKUP, (sop_uid, datastore_id, study_uid, series_uid)
        ).fetchone()
        return None if row is None else dq.to_row(row, dq.INSTANCE_KEYS)

    def dicom_instance_frames(
        self, datastore_id: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> tuple[list[str], str | None, str] | None:
        args = (sop_uid, datastore_id, study_uid, series_uid)
        return dq.frames_of(self.db.conn.execute(dq.INSTANCE_FRAMES, args).fetchone())

    # -- backfill of sets written before the DICOM index (not in the port yet: the core reads the documents)
    def dicom_unindexed(self, after: str, limit: int) -> list[ImageSet]:
        """Up to ``limit`` sets (by id, after ``after``) with content and no DICOM index rows."""
        return [image_set_from(r) for r in self.db.conn.execute(dq.UNINDEXED, (after, limit)).fetchall()]

    def dicom_reindex(
        self, datastore_id: str, image_set_id: str, content_version: int, rows: DicomRows
    ) -> bool:
        """Index a set's content ``content_version`` unless it changed since (see dicom_index_sql.reindex)."""
        with self.db.write() as conn:
            return dq.reindex(conn, "qmark", datastore_id, image_set_id, content_version, rows)
