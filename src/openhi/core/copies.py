"""CopyImageSet: select source instances, build the destination document, start the asynchronous copy."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from typing import Any

from openhi.core.errors import QuotaExceededError, ValidationError
from openhi.core.ids import new_id
from openhi.core.pending import Pending, VersionWriter
from openhi.core.records import ImageSet, ImageSetVersion
from openhi.dicom.document import SCHEMA_VERSION, conflict_keys, search_tags
from openhi.dicom.index_rows import index_rows
from openhi.ports.index import LockRequest, VersionCommit

Selection = dict[str, set[str] | None]  # series uid -> SOP Instance UIDs (None: the whole series)
Selected = dict[str, dict[str, Any]]  # series uid -> {SOP Instance UID: instance node}


@dataclass
class CopyStarted:
    source: ImageSet  # as the response shows it: LOCKED / COPYING_WITH_READ_ONLY_ACCESS, same version
    destination: ImageSetVersion  # the destination's new LOCKED / COPYING version


def parse_copiable(text: str | None) -> Selection | None:
    """``copiableAttributes`` → the selection (None: copy every instance).

    Raises:
        ValidationError: not JSON, no SchemaVersion 1.1, or anything but Series/Instances selectors.
    """
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"copiableAttributes is not a valid JSON document: {exc}") from None
    if not isinstance(doc, dict) or doc.get("SchemaVersion") not in (1.1, "1.1"):
        raise ValidationError("copiableAttributes must be a JSON object with SchemaVersion 1.1.")
    if set(doc) - {"SchemaVersion", "Study"}:
        raise ValidationError("copiableAttributes may only select Study.Series.<uid>.Instances.<uid>.")
    study = doc.get("Study", {})
    if (
        not isinstance(study, dict)
        or set(study) - {"Series"}
        or not isinstance(study.get("Series", {}), dict)
    ):
        raise ValidationError("copiableAttributes may only select Study.Series.<uid>.Instances.<uid>.")
    selection: Selection = {}
    for series_uid, node in study.get("Series", {}).items():
        if node == {}:
            selection[series_uid] = None
            continue
        instances = node.get("Instances") if isinstance(node, dict) else None
        if not isinstance(instances, dict) or set(node) != {"Instances"}:
            raise ValidationError(
                f"copiableAttributes: Study.Series.{series_uid} must be {{}} or hold only Instances."
            )
        if any(value != {} for value in instances.values()):
            raise ValidationError(
                "copiableAttributes: each selected SOP Instance must be an empty object {}."
            )
        selection[series_uid] = set(instances)
    if not selection or not any(v is None or v for v in selection.values()):
        raise ValidationError("copiableAttributes selects no SOP Instance.")
    return selection


def select(doc: dict[str, Any], selection: Selection | None) -> Selected:
    """The source instances a selection names.

    Raises:
        ValidationError: a selected series or SOP Instance is not in the source image set.
    """
    all_series = doc["Study"]["Series"]
    if selection is None:
        return {uid: dict(node["Instances"]) for uid, node in all_series.items() if node["Instances"]}
    chosen: Selected = {}
    for series_uid, sops in selection.items():
        series = all_series.get(series_uid)
        if series is None:
            raise ValidationError(f"copiableAttributes: series {series_uid} is not in the source image set.")
        if sops is None:
            chosen[series_uid] = dict(series["Instances"])
            continue
        missing = sorted(sops - set(series["Instances"]))
        if missing:
            raise ValidationError(
                f"copiableAttributes: SOP Instance {missing[0]} is not in series {series_uid} of the source image set."
            )
        chosen[series_uid] = {sop: series["Instances"][sop] for sop in sorted(sops)}
    return chosen


def new_document(
    datastore_id: str, image_set_id: str, source: dict[str, Any], selected: Selected
) -> dict[str, Any]:
    """A new image set holding the selected instances with the source's Patient/Study/Series metadata."""
    series = source["Study"]["Series"]
    return copy.deepcopy(
        {
            "SchemaVersion": SCHEMA_VERSION,
            "DatastoreID": datastore_id,
            "ImageSetID": image_set_id,
            "Patient": source["Patient"],
            "Study": {
                "DICOM": source["Study"]["DICOM"],
                "Series": {
                    uid: {"DICOM": series[uid]["DICOM"], "Instances": instances}
                    for uid, instances in selected.items()
                },
            },
        }
    )


def merge_copy(
    dest: dict[str, Any], source: dict[str, Any], selected: Selected, *, force: bool
) -> tuple[dict[str, Any] | None, str | None]:
    """The destination document with the selected instances added, or the COPY_FAILED message.

    Without ``force`` the Patient, Study and Series level metadata must be equal; with it the destination's
    stay and the instances go under the destination's (first) series.
    """
    if not force:
        for level, a, b in (
            ("Patient", source["Patient"]["DICOM"], dest["Patient"]["DICOM"]),
            ("Study", source["Study"]["DICOM"], dest["Study"]["DICOM"]),
        ):
            if a != b:
                return (
                    None,
                    f"INVALID_REQUEST:  {level} of SourceImageSet and DestinationImageSet don't match.",
                )
        for uid in selected:
            target = dest["Study"]["Series"].get(uid)
            if target is None or target["DICOM"] != source["Study"]["Series"][uid]["DICOM"]:
                return None, "INVALID_REQUEST:  Series of SourceImageSet and DestinationImageSet don't match."
    existing = {sop for node in dest["Study"]["Series"].values() for sop in node["Instances"]}
    for instances in selected.values():
        duplicate = sorted(existing & set(instances))
        if duplicate:
            return None, (
                f"INVALID_REQUEST:  SOP Instance UID {duplicate[0]} already exists in DestinationImageSet, "
                "SOP Instance UIDs must be unique within an image set."
            )
    merged = copy.deepcopy(dest)
    all_series = merged["Study"]["Series"]
    first = next(iter(all_series))
    for uid, instances in selected.items():
        all_series[first if force else uid]["Instances"].update(copy.deepcopy(instances))
    return merged, None


def start_copy(
    writer: VersionWriter,
    datastore_id: str,
    source_id: str,
    *,
    source_latest: int,
    copiable: str | None = None,
    destination_id: str | None = None,
    destination_latest: int | None = None,
    force: bool = False,
    promote: bool = False,
) -> CopyStarted:
    """Check the copy, lock source (read-only) and destination in one write, finish in the background.

    Raises:
        ValidationError: self-copy, bad copiableAttributes, unknown SOP/series, promote misuse.
        QuotaExceededError: more frames than ``settings.max_frames_per_copy``.
        NotFoundError: no such datastore, source or destination.
        ConflictError: a set is locked/deleted or a ``latestVersionId`` is stale; datastore not ACTIVE.
    """
    env = writer.env
    writer.datastores.require_active(datastore_id)
    if destination_id == source_id:
        raise ValidationError("An image set cannot be copied onto itself.")
    source = writer.head(datastore_id, source_id)
    writer.writable(source, source_latest)
    dest = None
    if destination_id is not None:
        dest = writer.head(datastore_id, destination_id)
        writer.writable(dest, destination_latest)
    source_doc = writer.load(source)
    selected = select(source_doc, parse_copiable(copiable))
    frame_ids = [
        f["ID"] for inst in selected.values() for node in inst.values() for f in node.get("ImageFrames") or ()
    ]
    if len(frame_ids) > env.settings.max_frames_per_copy:
        raise QuotaExceededError(
            f"The copy selects {len(frame_ids)} image frames; CopyImageSet copies at most "
            f"{env.settings.max_frames_per_copy}."
        )
    by_id = {f.frame_id: f for f in env.index.list_frames(datastore_id, source_id)}
    refs = [by_id[fid] for fid in frame_ids if fid in by_id]
    if promote:
        dest = _promotion_target(writer, source, source_doc, selected, dest)
    locks = [LockRequest(source.id, source.latest_version, "COPYING_WITH_READ_ONLY_ACCESS", None)]
    creates: list[tuple[ImageSet, ImageSetVersion]] = []
    if dest is not None:
        merged, failure = merge_copy(writer.load(dest), source_doc, selected, force=force)
        row = writer.new_row(dest, "COPYING", forced=force)
        search = None if merged is None else search_tags(merged)
        rows = None if merged is None else index_rows(merged)
        pending = Pending(
            row,
            writer.content_key(dest),
            merged,
            search=search,
            dicom=rows,
            frames=refs,
            fail_message=failure,
        )
        locks.append(LockRequest(dest.id, dest.latest_version, "COPYING", row))
    else:
        set_id, now = new_id(), env.clock()
        doc = new_document(datastore_id, set_id, source_doc, selected)
        tags = search_tags(doc)
        head = ImageSet(
            datastore_id, set_id, 1, "LOCKED", "COPYING", promote, now, now, 0, last_accessed_at=now
        )
        head.search = tags
        row = ImageSetVersion(
            datastore_id, set_id, 1, "LOCKED", "COPYING", now, now, promote, None, forced=force
        )
        creates.append((head, row))
        pending = Pending(row, None, doc, search=tags, dicom=index_rows(doc), frames=refs)
    writer.lock(datastore_id, locks, creates)
    unlock = VersionCommit(source.id, None, "ACTIVE", source.workflow_status, source.updated_at)
    writer.finish_later(datastore_id, [pending], [unlock])
    return CopyStarted(replace(source, state="LOCKED", workflow_status="COPYING_WITH_READ_ONLY_ACCESS"), row)


def _promotion_target(
    writer: VersionWriter, source: ImageSet, doc: dict[str, Any], selected: Selected, dest: ImageSet | None
) -> ImageSet | None:
    """promoteToPrimary: the primary set to merge into, or None to create a new primary set.

    Raises:
        ValidationError: the source is already primary, the destination is not primary, the selection spans
            several series, or the Study level conflicts with the study's other primary sets.
    """
    if source.is_primary:
        raise ValidationError(f"ImageSet {source.id} is already a primary image set.")
    if dest is not None:
        if not dest.is_primary:
            raise ValidationError(
                "With promoteToPrimary the destinationImageSet must be a primary image set."
            )
        return dest
    if len(selected) != 1:
        raise ValidationError("promoteToPrimary copies exactly one series; select instances of one series.")
    series_uid = next(iter(selected))
    study_uid = str(doc["Study"]["DICOM"].get("StudyInstanceUID") or "").strip()
    index = writer.env.index
    primary = index.find_primary(source.datastore_id, study_uid, series_uid)
    if primary is not None:
        writer.writable(primary, None)
        return primary
    keys = conflict_keys(doc)[:5]
    for sibling in index.list_primary_in_study(source.datastore_id, study_uid):
        if conflict_keys(writer.load(sibling))[:5] != keys:
            raise ValidationError(
                f"The Study level metadata of ImageSet {source.id} conflicts with primary ImageSet {sibling.id} of "
                "the same study (PatientID, StudyDate, AccessionNumber, StudyID); update it before promoting."
            )
    return None
