"""Image set metadata document (§2.2): build, merge instances, gzip encode/decode, search tags, conflict keys."""

from __future__ import annotations

import contextlib
import gzip
import json
import struct
import zlib
from typing import Any

from openhi.dicom.instance import ProcessedInstance
from openhi.dicom.text_values import normalise_document, normalise_value

SCHEMA_VERSION = "1.1"
CONFLICT_KEYWORDS = (
    "PatientID",
    "StudyDate",
    "AccessionNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
)
#: The gzip header of a document written with unpadded text values: RFC 1952 header with an extra
#: field (FLG.FEXTRA) holding one subfield "OH" whose data is the document format number (2). Documents
#: of earlier versions (plain header, padded text) lack it and are normalised when read.
DOCUMENT_FORMAT = 2
GZIP_HEADER = (
    b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\x03" + b"\x05\x00" + b"OH\x01\x00" + bytes([DOCUMENT_FORMAT])
)
_SEARCH_STRINGS = (
    ("DICOMPatientId", "Patient", "PatientID"),
    ("DICOMPatientName", "Patient", "PatientName"),
    ("DICOMPatientBirthDate", "Patient", "PatientBirthDate"),
    ("DICOMPatientSex", "Patient", "PatientSex"),
    ("DICOMStudyInstanceUID", "Study", "StudyInstanceUID"),
    ("DICOMStudyId", "Study", "StudyID"),
    ("DICOMStudyDescription", "Study", "StudyDescription"),
    ("DICOMAccessionNumber", "Study", "AccessionNumber"),
    ("DICOMStudyDate", "Study", "StudyDate"),
    ("DICOMStudyTime", "Study", "StudyTime"),
    ("DICOMSeriesInstanceUID", "Series", "SeriesInstanceUID"),
    ("DICOMSeriesModality", "Series", "Modality"),
    ("DICOMSeriesBodyPart", "Series", "BodyPartExamined"),
)


def build_document(
    datastore_id: str,
    image_set_id: str,
    patient: dict[str, Any],
    study: dict[str, Any],
    series_uid: str,
    series: dict[str, Any],
    instances: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Assemble a §2.2 document with one series holding ``instances`` (SOPInstanceUID → node)."""
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "DatastoreID": datastore_id,
        "ImageSetID": image_set_id,
        "Patient": {"DICOM": dict(patient)},
        "Study": {
            "DICOM": dict(study),
            "Series": {series_uid: {"DICOM": dict(series), "Instances": dict(instances)}},
        },
    }


def document_from_instances(
    datastore_id: str, image_set_id: str, processed: list[ProcessedInstance]
) -> dict[str, Any]:
    """A new document holding ``processed`` (at least one instance; the last one is the newest)."""
    if not processed:
        raise ValueError("An image set needs at least one instance")
    first = processed[0]
    empty = build_document(datastore_id, image_set_id, {}, {}, first.series_uid, {}, {})
    return merge_instances(empty, processed)


def merge_instances(doc: dict[str, Any], processed: list[ProcessedInstance]) -> dict[str, Any]:
    """Return a NEW document with ``processed`` added (same SOPInstanceUID: replaced).

    Patient/Study/Series maps are updated in order, so the newest (last) instance's values win
    while attributes only older instances carry are kept. The input document is not modified;
    untouched instance nodes are shared with it (treat documents as immutable).
    """
    study_node = doc["Study"]
    new_series: dict[str, Any] = {
        uid: {"DICOM": node["DICOM"], "Instances": dict(node["Instances"])}
        for uid, node in study_node["Series"].items()
    }
    patient = dict(doc["Patient"]["DICOM"])
    study = dict(study_node["DICOM"])
    touched: set[str] = set()
    for item in processed:
        for uid, node in new_series.items():
            if uid != item.series_uid:
                node["Instances"].pop(item.sop_uid, None)
        target = new_series.setdefault(item.series_uid, {"DICOM": {}, "Instances": {}})
        if item.series_uid not in touched:
            target["DICOM"] = dict(target["DICOM"])
            touched.add(item.series_uid)
        target["DICOM"].update(item.series)
        target["Instances"][item.sop_uid] = item.instance
        patient.update(item.patient)
        study.update(item.study)
    new_series = {uid: node for uid, node in new_series.items() if node["Instances"] or uid in touched}
    out = dict(doc)
    out["Patient"] = {**doc["Patient"], "DICOM": patient}
    out["Study"] = {**study_node, "DICOM": study, "Series": new_series}
    return out


def encode_document(doc: dict[str, Any]) -> bytes:
    """Gzip (level 6, mtime 0, header :data:`GZIP_HEADER`) of the compact JSON: the GetImageSetMetadata body.

    ``doc``'s text values must already be normalised (``text_values``): this only serialises.
    """
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    trailer = struct.pack("<LL", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)
    return b"".join((GZIP_HEADER, zlib.compress(raw, level=6, wbits=-15), trailer))


def is_current(gz: bytes) -> bool:
    """Whether a stored document was written in the current format (a header check, nothing decompressed)."""
    return gz[: len(GZIP_HEADER)] == GZIP_HEADER


def decode_document(gz: bytes) -> dict[str, Any]:
    """Inverse of ``encode_document``; a document of an earlier version comes back normalised."""
    doc: dict[str, Any] = json.loads(gzip.decompress(gz))
    return doc if is_current(gz) or not isinstance(doc, dict) else normalise_document(doc)


def current_body(gz: bytes) -> bytes:
    """The GetImageSetMetadata body for a stored document: itself when current, else re-encoded normalised
    (a stored blob that is not a gzip JSON object is served as it is)."""
    if is_current(gz):
        return gz
    try:
        doc = json.loads(gzip.decompress(gz))
    except (OSError, EOFError, ValueError):
        return gz
    return encode_document(normalise_document(doc)) if isinstance(doc, dict) else gz


def iter_instances(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(series_uid, sop_uid, instance node)`` for every instance of the document."""
    return [
        (series_uid, sop_uid, node)
        for series_uid, series in doc["Study"]["Series"].items()
        for sop_uid, node in series["Instances"].items()
    ]


def frame_ids(doc: dict[str, Any]) -> list[str]:
    """Every image frame id referenced by the document, in document order."""
    return [frame["ID"] for _, _, node in iter_instances(doc) for frame in node.get("ImageFrames") or ()]


def _clean(value: Any) -> str | None:
    if isinstance(value, list):
        value = "\\".join(str(v) for v in value)
    if not isinstance(value, str):
        return None
    value = value.strip(" \x00")
    return value or None


def search_string(keyword: str, value: Any) -> str | None:
    """The ``DICOMTags`` (and search index) string of a document value: the value itself, as the
    document holds it (padding removed per VR); several values joined by backslashes; empty: ``None``."""
    value = normalise_value(keyword, value)
    if isinstance(value, list):
        value = "\\".join(str(v) for v in value)
    return value if isinstance(value, str) and value else None


def search_tags(doc: dict[str, Any]) -> dict[str, Any]:
    """The SearchImageSets ``DICOMTags`` of an image set (absent/empty values omitted): the document's
    values, so that a summary, a search filter and GetImageSetMetadata show the same string."""
    series_map = doc["Study"]["Series"]
    first_series: dict[str, Any] = next(iter(series_map.values()), {"DICOM": {}})
    levels = {
        "Patient": doc["Patient"]["DICOM"],
        "Study": doc["Study"]["DICOM"],
        "Series": first_series["DICOM"],
    }
    tags: dict[str, Any] = {}
    for name, level, keyword in _SEARCH_STRINGS:
        value = search_string(keyword, levels[level].get(keyword))
        if value is not None:
            tags[name] = value
    number = _clean(first_series["DICOM"].get("SeriesNumber"))
    if number is not None:
        with contextlib.suppress(ValueError):
            tags["DICOMSeriesNumber"] = int(number)
    tags["DICOMNumberOfStudyRelatedInstances"] = len(iter_instances(doc))
    tags["DICOMNumberOfStudyRelatedSeries"] = len(series_map)
    return tags


def conflict_keys(source: dict[str, Any] | ProcessedInstance) -> tuple[str | None, ...]:
    """Primary-grouping key: (PatientID, StudyDate, AccessionNumber, StudyID, StudyInstanceUID,
    SeriesInstanceUID, SeriesNumber) with padding stripped, from a document or a processed instance."""
    if isinstance(source, ProcessedInstance):
        merged = {**source.patient, **source.study, **source.series}
    else:
        first_series: dict[str, Any] = next(iter(source["Study"]["Series"].values()), {"DICOM": {}})
        merged = {**source["Patient"]["DICOM"], **source["Study"]["DICOM"], **first_series["DICOM"]}
    return tuple(_clean(merged.get(keyword)) for keyword in CONFLICT_KEYWORDS)
