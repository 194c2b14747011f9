"""Handlers for UpdateImageSetMetadata, CopyImageSet and DeleteImageSet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openhi.handlers.convert import VersionIds, dt
from openhi.handlers.registry import handles

if TYPE_CHECKING:
    from openhi.services import Services


@handles("UpdateImageSetMetadata")
def update_image_set_metadata(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    updates = p["updateImageSetMetadataUpdates"]
    dicom = updates.get("DICOMUpdates") or {}
    versions = VersionIds()
    latest = versions.number("latestVersionId", p["latestVersionId"])
    revert_to = versions.optional("revertToVersionId", updates.get("revertToVersionId"))
    with versions.explained():
        row = svc.writes.update(
            p["datastoreId"],
            p["imageSetId"],
            latest_version=latest,
            force=bool(p.get("force")),
            include_study=bool(p.get("includeStudyImageSets")),
            updatable=dicom.get("updatableAttributes"),
            removable=dicom.get("removableAttributes"),
            revert_to=revert_to,
        )
    return {
        "datastoreId": row.datastore_id,
        "imageSetId": row.image_set_id,
        "latestVersionId": str(row.version),
        "imageSetState": row.state,
        "imageSetWorkflowStatus": row.workflow_status,
        "createdAt": dt(row.created_at),
        "updatedAt": dt(row.updated_at),
    }


@handles("CopyImageSet")
def copy_image_set(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    info = p["copyImageSetInformation"]
    source = info["sourceImageSet"]
    dest = info.get("destinationImageSet")
    ds = p["datastoreId"]
    versions = VersionIds()
    source_latest = versions.number("sourceImageSet.latestVersionId", source["latestVersionId"])
    dest_latest = (
        versions.number("destinationImageSet.latestVersionId", dest["latestVersionId"]) if dest else None
    )
    with versions.explained():
        started = svc.writes.copy(
            ds,
            p["sourceImageSetId"],
            source_latest=source_latest,
            copiable=(source.get("DICOMCopies") or {}).get("copiableAttributes"),
            destination_id=dest["imageSetId"] if dest else None,
            destination_latest=dest_latest,
            force=bool(p.get("force")),
            promote=bool(p.get("promoteToPrimary")),
        )
    src, row = started.source, started.destination
    return {
        "datastoreId": ds,
        "sourceImageSetProperties": {
            "imageSetId": src.id,
            "latestVersionId": str(src.latest_version),
            "imageSetState": src.state,
            "imageSetWorkflowStatus": src.workflow_status,
            "createdAt": dt(src.created_at),
            "updatedAt": dt(src.updated_at),
            "imageSetArn": svc.env.image_set_arn(ds, src.id),
        },
        "destinationImageSetProperties": {
            "imageSetId": row.image_set_id,
            "latestVersionId": str(row.version),
            "imageSetState": row.state,
            "imageSetWorkflowStatus": row.workflow_status,
            "createdAt": dt(row.created_at),
            "updatedAt": dt(row.updated_at),
            "imageSetArn": svc.env.image_set_arn(ds, row.image_set_id),
        },
    }


@handles("DeleteImageSet")
def delete_image_set(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    head = svc.writes.delete(p["datastoreId"], p["imageSetId"])
    return {
        "datastoreId": head.datastore_id,
        "imageSetId": head.id,
        "imageSetState": head.state,
        "imageSetWorkflowStatus": head.workflow_status,
    }
