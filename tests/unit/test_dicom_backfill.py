"""Image sets written before the DICOM index get their rows at start-up, from their metadata documents."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from test_dicom_index import _create, _doc
from test_dicom_index import index as index  # the same fixture: SQLite and PostgreSQL

from openhi.core.dicom_backfill import backfill
from openhi.core.env import Env
from openhi.core.settings import Settings
from openhi.dicom.document import encode_document
from openhi.ports.index import MetadataIndex
from openhi.storage.blobs_memory import MemoryBlobStore
from openhi.storage.sqlite.index import SqliteIndex
from openhi.storage.tasks_threads import ThreadTaskRunner


def _env(index: MetadataIndex, blobs: MemoryBlobStore) -> Env:
    return Env(Settings(), index, blobs, None, ThreadTaskRunner(1))  # type: ignore[arg-type]


def _old_set(index: MetadataIndex, blobs: MemoryBlobStore, n: int, series: str, *, store: bool = True) -> str:
    """A set as an index older than the DICOM index holds it: head and version, no DICOM rows."""
    head = _create(index, n, "1.2.3", series, 1000.0 + n)
    if store:
        blobs.put(f"meta/{head.id}/1", encode_document(_doc(head.id, "1.2.3", series, [(f"{series}.9", 9)])))
    _drop_rows(index, head.id)
    return head.id


def _drop_rows(index: Any, set_id: str) -> None:
    for table in ("dicom_instances", "dicom_series"):
        if isinstance(index, SqliteIndex):
            with index.db.write() as conn:
                conn.execute(f"DELETE FROM {table} WHERE image_set_id = ?", (set_id,))
        else:
            with index.db.tx() as cur:
                cur.execute(f"DELETE FROM {table} WHERE image_set_id = %s", (set_id,))


def test_sets_without_rows_are_indexed_from_their_documents_once(index: MetadataIndex) -> None:
    blobs = MemoryBlobStore()
    _old_set(index, blobs, 1, "1.2.3.1")
    _old_set(index, blobs, 2, "1.2.3.2")
    assert index.dicom_instance_frames(_ds(index), "1.2.3", "1.2.3.1", "1.2.3.1.9") is None
    assert backfill(_env(index, blobs), batch=1) == 2
    found = index.dicom_instance_frames(_ds(index), "1.2.3", "1.2.3.1", "1.2.3.1.9")
    assert found is not None and found[0] == ["1.2.3.1.9-f0", "1.2.3.1.9-f1"]
    assert backfill(_env(index, blobs)) == 0  # nothing left to index


def test_a_set_whose_document_is_gone_is_skipped_and_logged(
    index: MetadataIndex, caplog: pytest.LogCaptureFixture
) -> None:
    blobs = MemoryBlobStore()
    lost = _old_set(index, blobs, 1, "1.2.3.1", store=False)
    _old_set(index, blobs, 2, "1.2.3.2")
    with caplog.at_level(logging.WARNING, logger="openhi.dicom_backfill"):
        assert backfill(_env(index, blobs)) == 1
    assert lost in caplog.text
    assert index.dicom_instance_frames(_ds(index), "1.2.3", "1.2.3.2", "1.2.3.2.9") is not None


def _ds(index: MetadataIndex) -> str:
    from test_dicom_index import DS

    return DS
