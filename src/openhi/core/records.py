"""Plain records the core exchanges with the index port: datastores, image sets, versions, jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openhi.dicom.index_rows import DicomRows


@dataclass
class Datastore:
    id: str
    name: str | None
    status: str
    lossless_storage_format: str
    created_at: float
    updated_at: float
    kms_key_arn: str | None = None
    lambda_authorizer_arn: str | None = None
    client_token: str | None = None
    request_hash: str | None = None


@dataclass
class ImageSet:
    """The head row of an image set: its latest version and current (searchable) content."""

    datastore_id: str
    id: str
    latest_version: int
    state: str
    workflow_status: str
    is_primary: bool
    created_at: float
    updated_at: float
    content_version: int
    deleted_at: float | None = None
    last_accessed_at: float | None = None
    storage_tier: str = "FREQUENT_ACCESS"
    search: dict[str, Any] = field(default_factory=dict)
    #: the DICOM index rows of the content (written with the head; never read back into this record)
    dicom: DicomRows | None = None


@dataclass
class ImageSetVersion:
    """One row per version; never rewritten once its operation finished."""

    datastore_id: str
    image_set_id: str
    version: int
    state: str
    workflow_status: str
    created_at: float
    updated_at: float
    is_primary: bool
    metadata_key: str | None
    deleted_at: float | None = None
    message: str | None = None
    forced: bool = False


@dataclass
class FrameRef:
    """A frame referenced by an image set: where its stored bytes live and in which syntax."""

    frame_id: str
    blob_key: str
    stored_ts: str


@dataclass
class ImportJob:
    id: str
    datastore_id: str
    name: str
    status: str
    data_access_role_arn: str
    input_s3_uri: str
    output_s3_uri: str
    submitted_at: float
    ended_at: float | None = None
    message: str | None = None
    input_owner_account_id: str | None = None
    import_configuration: dict[str, Any] | None = None
    client_token: str | None = None
    request_hash: str | None = None
