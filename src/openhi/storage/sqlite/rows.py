"""Mapping between index rows and core records, shared by the SQL adapters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from openhi.core.records import Datastore, ImageSet, ImageSetVersion, ImportJob
from openhi.core.search import study_datetime_key


class RowLike(Protocol):
    """A result row addressable by column name (sqlite3.Row, a psycopg dict row)."""

    def __getitem__(self, key: str, /) -> Any: ...


# SearchImageSets DICOMTags member -> index column
SEARCH_COLUMNS: dict[str, str] = {
    "DICOMPatientId": "patient_id",
    "DICOMPatientName": "patient_name",
    "DICOMPatientBirthDate": "patient_birth_date",
    "DICOMPatientSex": "patient_sex",
    "DICOMStudyInstanceUID": "study_uid",
    "DICOMStudyId": "study_id",
    "DICOMStudyDescription": "study_description",
    "DICOMAccessionNumber": "accession_number",
    "DICOMSeriesInstanceUID": "series_uid",
    "DICOMSeriesModality": "modality",
    "DICOMSeriesBodyPart": "body_part",
    "DICOMSeriesNumber": "series_number",
    "DICOMStudyDate": "study_date",
    "DICOMStudyTime": "study_time",
    "DICOMNumberOfStudyRelatedSeries": "num_series",
    "DICOMNumberOfStudyRelatedInstances": "num_instances",
}


def search_columns(search: Mapping[str, Any]) -> dict[str, Any]:
    cols = {column: search.get(member) for member, column in SEARCH_COLUMNS.items()}
    cols["study_datetime"] = study_datetime_key(search.get("DICOMStudyDate"), search.get("DICOMStudyTime"))
    return cols


def datastore_from(row: RowLike) -> Datastore:
    return Datastore(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        lossless_storage_format=row["lossless_storage_format"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        kms_key_arn=row["kms_key_arn"],
        lambda_authorizer_arn=row["lambda_authorizer_arn"],
        client_token=row["client_token"],
        request_hash=row["request_hash"],
    )


def job_from(row: RowLike) -> ImportJob:
    config = row["import_configuration"]
    return ImportJob(
        id=row["id"],
        datastore_id=row["datastore_id"],
        name=row["name"],
        status=row["status"],
        data_access_role_arn=row["data_access_role_arn"],
        input_s3_uri=row["input_s3_uri"],
        output_s3_uri=row["output_s3_uri"],
        submitted_at=row["submitted_at"],
        ended_at=row["ended_at"],
        message=row["message"],
        input_owner_account_id=row["input_owner_account_id"],
        import_configuration=json.loads(config) if config else None,
        client_token=row["client_token"],
        request_hash=row["request_hash"],
    )


def image_set_from(row: RowLike) -> ImageSet:
    search = {member: row[column] for member, column in SEARCH_COLUMNS.items() if row[column] is not None}
    return ImageSet(
        datastore_id=row["datastore_id"],
        id=row["id"],
        latest_version=row["latest_version"],
        content_version=row["content_version"],
        state=row["state"],
        workflow_status=row["workflow_status"],
        is_primary=bool(row["is_primary"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
        last_accessed_at=row["last_accessed_at"],
        storage_tier=row["storage_tier"],
        search=search,
    )


def version_from(row: RowLike) -> ImageSetVersion:
    return ImageSetVersion(
        datastore_id=row["datastore_id"],
        image_set_id=row["image_set_id"],
        version=row["version"],
        state=row["state"],
        workflow_status=row["workflow_status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
        message=row["message"],
        forced=bool(row["forced"]),
        is_primary=bool(row["is_primary"]),
        metadata_key=row["metadata_key"],
    )
