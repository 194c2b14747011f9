"""The SQLite MetadataIndex adapter (embedded deployments): one file, WAL mode, one writer."""

from __future__ import annotations

from openhi.storage.sqlite.connection import Database
from openhi.storage.sqlite.control import ControlTables
from openhi.storage.sqlite.dicom_index import DicomIndexTables
from openhi.storage.sqlite.imagesets import ImageSetTables
from openhi.storage.sqlite.jobs import JobQueueTables
from openhi.storage.sqlite.owners import WriteOwnerTables
from openhi.storage.sqlite.search import SearchTables


class SqliteIndex(
    ControlTables, JobQueueTables, ImageSetTables, SearchTables, WriteOwnerTables, DicomIndexTables
):
    """``sqlite:///path/index.sqlite3`` or ``sqlite:///:memory:`` (the in-memory fake used by unit tests)."""

    def __init__(self, path: str) -> None:
        self.db = Database(path)

    def close(self) -> None:
        self.db.close()
