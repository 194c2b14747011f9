"""Handlers for GetImageSet, ListImageSetVersions, GetImageSetMetadata, GetImageFrame and SearchImageSets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openhi.core.records import ImageSet, ImageSetVersion
from openhi.handlers.convert import VersionIds, dt
from openhi.handlers.registry import handles

if TYPE_CHECKING:
    from openhi.services import Services

#: where the app puts the raw ``Accept`` request header for GetImageFrame (the model has no member for it)
ACCEPT_PARAM = "__accept__"


def _overrides(forced: bool) -> dict[str, Any] | None:
    return {"forced": True} if forced else None


def _version_properties(v: ImageSetVersion) -> dict[str, Any]:
    return {
        "imageSetId": v.image_set_id,
        "versionId": str(v.version),
        "imageSetState": v.state,
        "ImageSetWorkflowStatus": v.workflow_status,
        "createdAt": dt(v.created_at),
        "updatedAt": dt(v.updated_at),
        "deletedAt": dt(v.deleted_at),
        "message": v.message,
        "overrides": _overrides(v.forced),
        "isPrimary": v.is_primary,
    }


@handles("GetImageSet")
def get_image_set(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    versions = VersionIds()
    version_id = versions.text("versionId", p.get("versionId"))
    with versions.explained():
        view = svc.reads.get_image_set(p["datastoreId"], p["imageSetId"], version_id)
    return {
        "datastoreId": view.datastore_id,
        "imageSetId": view.image_set_id,
        "versionId": str(view.version),
        "imageSetState": view.state,
        "imageSetWorkflowStatus": view.workflow_status,
        "createdAt": dt(view.created_at),
        "updatedAt": dt(view.updated_at),
        "deletedAt": dt(view.deleted_at),
        "message": view.message,
        "imageSetArn": svc.env.image_set_arn(view.datastore_id, view.image_set_id),
        "overrides": _overrides(view.forced),
        "isPrimary": view.is_primary,
        "lastAccessedAt": dt(view.last_accessed_at),
        "storageTier": view.storage_tier,
    }


@handles("ListImageSetVersions")
def list_image_set_versions(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    rows, token = svc.reads.list_versions(
        p["datastoreId"], p["imageSetId"], max_results=p.get("maxResults"), next_token=p.get("nextToken")
    )
    return {"imageSetPropertiesList": [_version_properties(v) for v in rows], "nextToken": token}


@handles("GetImageSetMetadata")
def get_image_set_metadata(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    versions = VersionIds()
    version_id = versions.text("versionId", p.get("versionId"))
    with versions.explained():
        blob = svc.reads.metadata(p["datastoreId"], p["imageSetId"], version_id)
    return {"imageSetMetadataBlob": blob, "contentType": "application/json", "contentEncoding": "gzip"}


@handles("GetImageFrame")
def get_image_frame(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    frame = svc.reads.frame(
        p["datastoreId"],
        p["imageSetId"],
        p["imageFrameInformation"]["imageFrameId"],
        accept=p.get(ACCEPT_PARAM),
    )
    return {"imageFrameBlob": frame.data, "contentType": frame.content_type}


def _summary(row: ImageSet) -> dict[str, Any]:
    return {
        "imageSetId": row.id,
        "version": row.latest_version,
        "createdAt": dt(row.created_at),
        "updatedAt": dt(row.updated_at),
        "lastAccessedAt": dt(row.last_accessed_at),
        "storageTier": row.storage_tier,
        "isPrimary": row.is_primary,
        "DICOMTags": dict(row.search),
    }


@handles("SearchImageSets")
def search_image_sets(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    page = svc.reads.search(
        p["datastoreId"],
        p.get("searchCriteria"),
        max_results=p.get("maxResults"),
        next_token=p.get("nextToken"),
    )
    return {
        "imageSetsMetadataSummaries": [_summary(r) for r in page.image_sets],
        "sort": page.sort,
        "nextToken": page.next_token,
    }
