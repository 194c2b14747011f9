"""Index the image sets written before the DICOM study / series / instance index existed."""

from __future__ import annotations

import logging
import threading

from openhi.core.env import Env
from openhi.dicom.document import decode_document
from openhi.dicom.index_rows import index_rows
from openhi.ports.blobs import BlobNotFound

log = logging.getLogger("openhi.dicom_backfill")
BATCH = 200


def backfill(env: Env, batch: int = BATCH) -> int:
    """Give every image set with content but no DICOM index rows its rows, from its current metadata
    document; return how many were indexed. A set that changes meanwhile is indexed by its own write; a
    set whose document cannot be read is logged and skipped."""
    after, indexed = "", 0
    while True:
        heads = env.index.dicom_unindexed(after, batch)
        if not heads:
            return indexed
        for head in heads:
            after = head.id
            version = env.index.get_version(head.datastore_id, head.id, head.content_version)
            if version is None or version.metadata_key is None:
                continue
            try:
                doc = decode_document(env.blobs.get(version.metadata_key))
                rows = index_rows(doc)
            except (BlobNotFound, OSError, ValueError, KeyError) as exc:
                log.warning("image set %s: its metadata cannot be indexed for DICOMweb: %r", head.id, exc)
                continue
            if env.index.dicom_reindex(head.datastore_id, head.id, head.content_version, rows):
                indexed += 1


def start_backfill(env: Env) -> threading.Thread:
    """Run :func:`backfill` in a background thread (start-up of an API process); returns the thread."""

    def run() -> None:
        try:
            count = backfill(env)
        except Exception:
            log.exception("indexing earlier image sets for DICOMweb failed; it is retried at the next start")
            return
        if count:
            log.info("indexed %d image sets written before the DICOM index for DICOMweb", count)

    thread = threading.Thread(target=run, name="openhi-dicom-backfill", daemon=True)
    thread.start()
    return thread
