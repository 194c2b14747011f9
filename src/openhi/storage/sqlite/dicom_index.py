"""The DICOM study / series / instance index queries (placeholder until built)."""

from __future__ import annotations

from typing import Any

from openhi.core.dicom_query import DicomQuery


class DicomIndexTables:
    def dicom_studies(self, query: DicomQuery) -> list[dict[str, Any]]:
        raise NotImplementedError

    def dicom_series(self, query: DicomQuery) -> list[dict[str, Any]]:
        raise NotImplementedError

    def dicom_instances(self, query: DicomQuery) -> list[dict[str, Any]]:
        raise NotImplementedError

    def dicom_instance(
        self, datastore_id: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> dict[str, Any] | None:
        raise NotImplementedError
