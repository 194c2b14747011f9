"""What ``openhi export`` exports: the instances of an image set (version), a series, a study or a datastore."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from openhi.cli_client import CommandError, api_error

ELE = "1.2.840.10008.1.2.1"
#: SearchImageSets page size (HealthImaging's maximum)
PAGE = 50


@dataclass(frozen=True)
class Item:
    """One instance to export: where WADO-RS finds it and the syntax its frames are stored in."""

    sop_uid: str
    study_uid: str
    series_uid: str
    image_set_id: str
    stored_ts: str  # "" when the instance has no frames (then the rebuilt file is Explicit VR LE)
    version: int | None = None  # the image set version read (--version, else the one listed)

    @property
    def name(self) -> str:
        return f"{self.sop_uid}.dcm"

    def syntax(self, wanted: str) -> str:
        """The transfer syntax of the exported file: ``wanted`` or, for ``stored``, the stored one."""
        return (self.stored_ts or ELE) if wanted == "stored" else wanted


@dataclass
class Plan:
    """The instances selected, in image set / document order; SOP Instance UIDs listed twice (two
    primary image sets of a datastore naming the same instance) are kept once."""

    items: list[Item] = field(default_factory=list)
    image_sets: list[str] = field(default_factory=list)
    duplicates: int = 0
    _seen: set[str] = field(default_factory=set, repr=False)

    def add(self, item: Item) -> None:
        if item.sop_uid in self._seen:
            self.duplicates += 1
            return
        self._seen.add(item.sop_uid)
        self.items.append(item)


def _document(api: Any, endpoint: str, datastore_id: str, image_set_id: str, version: int | None) -> Any:
    """GetImageSetMetadata (of ``version``, else the current content), decoded. Raises CommandError."""
    kwargs: dict[str, Any] = {"datastoreId": datastore_id, "imageSetId": image_set_id}
    if version is not None:
        kwargs["versionId"] = str(version)
    try:
        resp = api.get_image_set_metadata(**kwargs)
        blob = resp["imageSetMetadataBlob"].read()
    except CommandError:  # export's own client tells its errors so already
        raise
    except Exception as exc:  # a botocore client's
        raise api_error(exc, endpoint) from exc
    if resp.get("contentEncoding") == "gzip":
        blob = gzip.decompress(blob)
    return json.loads(blob)


def _pinned(api: Any, endpoint: str, datastore_id: str, image_set_id: str) -> tuple[Any, int | None]:
    """The current content of an image set and its version number, so that every instance is read from
    that version even if the set is updated during the export (version None: the set is being changed
    now, its content is read unpinned). Raises CommandError."""
    try:
        head = api.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id)
    except CommandError:  # export's own client tells its errors so already
        raise
    except Exception as exc:  # a botocore client's
        raise api_error(exc, endpoint) from exc
    if head.get("imageSetState") == "ACTIVE":
        version = int(head["versionId"])
        try:
            return _document(api, endpoint, datastore_id, image_set_id, version), version
        except CommandError:
            pass  # changed meanwhile, or a latest version without content: read what is current
    return _document(api, endpoint, datastore_id, image_set_id, None), None


def _dict(value: Any, key: str) -> dict[str, Any]:
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, dict) else {}


def _add_set(plan: Plan, doc: Any, image_set_id: str, version: int | None, only: str | None) -> None:
    """The instances of a metadata document (the order of ``openhi.dicom.instance_view``'s walk,
    without its views: the client does not load pydicom)."""
    plan.image_sets.append(image_set_id)
    study = _dict(doc, "Study")
    study_uid = str(_dict(study, "DICOM").get("StudyInstanceUID") or "")
    for series_uid, series in _dict(study, "Series").items():
        if only is not None and series_uid != only:
            continue
        for sop_uid, node in _dict(series, "Instances").items():
            if isinstance(node, dict):
                stored = str(node.get("StoredTransferSyntaxUID") or "")
                plan.add(Item(sop_uid, study_uid, series_uid, image_set_id, stored, version))


def _primary_sets(
    api: Any, endpoint: str, datastore_id: str, attribute: str | None, uid: str
) -> Iterator[str]:
    """Ids of the primary image sets whose ``attribute`` (DICOMStudyInstanceUID / DICOMSeriesInstanceUID)
    is ``uid``, or (``attribute`` None) of every primary image set. Raises CommandError."""
    filters: list[dict[str, Any]] = [{"values": [{"isPrimary": True}], "operator": "EQUAL"}]
    if attribute is not None:
        filters.insert(0, {"values": [{attribute: uid}], "operator": "EQUAL"})
    kwargs: dict[str, Any] = {
        "datastoreId": datastore_id,
        "searchCriteria": {"filters": filters},
        "maxResults": PAGE,
    }
    while True:
        try:
            page = api.search_image_sets(**kwargs)
        except CommandError:
            raise
        except Exception as exc:
            raise api_error(exc, endpoint) from exc
        for summary in page.get("imageSetsMetadataSummaries", []):
            if summary.get("isPrimary", True):
                yield str(summary["imageSetId"])
        token = page.get("nextToken")
        if not token:
            return
        kwargs["nextToken"] = token


def make_plan(
    api: Any,
    endpoint: str,
    datastore_id: str,
    *,
    image_set: str | None = None,
    version: int | None = None,
    study: str | None = None,
    series: str | None = None,
) -> Plan:
    """The instances of ``image_set`` (its ``version``), of the primary image sets of ``study`` or
    ``series``, or (none given) of every primary image set of the datastore; each image set's version
    is the one listed (its current content then), unless ``version`` names another.

    Raises CommandError: unknown image set / version, a study or series with no image set, the API refused.
    """
    plan = Plan()
    if image_set is not None:
        if version is not None:
            doc = _document(api, endpoint, datastore_id, image_set, version)
        else:
            doc, version = _pinned(api, endpoint, datastore_id, image_set)
        _add_set(plan, doc, image_set, version, None)
        return plan
    attribute = "DICOMStudyInstanceUID" if study else "DICOMSeriesInstanceUID" if series else None
    uid = study or series or ""
    for set_id in _primary_sets(api, endpoint, datastore_id, attribute, uid):
        doc, pinned = _pinned(api, endpoint, datastore_id, set_id)
        _add_set(plan, doc, set_id, pinned, series)
    if attribute is not None and not plan.items:
        what = "study" if study else "series"
        raise CommandError(f"{what} {uid} is not in datastore {datastore_id}")
    return plan
