"""What ``openhi export`` exports: the instances of an image set (version), a series, a study or a datastore."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from openhi.cli_client import CommandError, api_error
from openhi.dicom.instance_view import iter_instance_views

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
    version: int | None = None  # an image set version other than the current content (--version)

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
    except Exception as exc:
        raise api_error(exc, endpoint) from exc
    if resp.get("contentEncoding") == "gzip":
        blob = gzip.decompress(blob)
    return json.loads(blob)


def _add_set(plan: Plan, doc: Any, image_set_id: str, version: int | None, series_uid: str | None) -> None:
    plan.image_sets.append(image_set_id)
    for view in iter_instance_views(doc):
        if series_uid is None or view.series_uid == series_uid:
            plan.add(
                Item(
                    view.sop_uid,
                    view.study_uid,
                    view.series_uid,
                    image_set_id,
                    view.stored_transfer_syntax,
                    version,
                )
            )


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
    ``series``, or (none given) of every primary image set of the datastore.

    Raises CommandError: unknown image set / version, a study or series with no image set, the API refused.
    """
    plan = Plan()
    if image_set is not None:
        doc = _document(api, endpoint, datastore_id, image_set, version)
        _add_set(plan, doc, image_set, version, None)
        return plan
    attribute = "DICOMStudyInstanceUID" if study else "DICOMSeriesInstanceUID" if series else None
    uid = study or series or ""
    for set_id in _primary_sets(api, endpoint, datastore_id, attribute, uid):
        _add_set(plan, _document(api, endpoint, datastore_id, set_id, None), set_id, None, series)
    if attribute is not None and not plan.items:
        what = "study" if study else "series"
        raise CommandError(f"{what} {uid} is not in datastore {datastore_id}")
    return plan
