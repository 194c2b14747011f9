"""Text VR values as the metadata document holds them: DICOM padding removed, IS and DS as read.

One rule per VR, used by everything that produces or compares a text value: the import's element
encoding, documents written by earlier versions (re-normalised when read), UpdateImageSetMetadata
values, the SearchImageSets ``DICOMTags`` and the search filter values.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_has_tag, dictionary_VR, tag_for_keyword

#: VRs whose trailing spaces (and NULs, the UI padding) are padding and are removed.
PADDED_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
#: Number strings: kept exactly as read (only trailing NUL bytes, never valid in them, are dropped).
RAW_VRS = frozenset({"IS", "DS"})
TEXT_VRS = PADDED_VRS | RAW_VRS
#: Text VRs with a single value: a backslash in them is a character, not a value delimiter.
SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_PAD = " \x00"


def normalise_text(vr: str, value: str) -> str:
    """One value of text VR ``vr`` without its padding (IS and DS: unchanged).

    Trailing spaces and NULs are removed; leading spaces are kept (they are not padding, and for
    LT, ST and UT they are significant).
    """
    if vr in RAW_VRS:
        return value
    return value.rstrip(_PAD)


def _shaped(values: list[str], multiple: bool) -> Any:
    """The JSON form of an element's values: ``None`` when it holds no value at all."""
    if len(values) == 1 and not values[0]:
        return None
    return values if len(values) > 1 or multiple else values[0]


def text_json(text: str, vr: str, multiple: bool) -> Any:
    """The JSON value of a decoded text element (``text``: the whole value field, backslashes included).

    ``multiple``: the attribute's VM allows several values (then one value is still a list).
    An element holding only padding is ``None``; empty values among several are kept as ``""``.
    """
    text = text.rstrip("\x00")
    if vr in RAW_VRS:
        if not text.strip(" "):
            return None  # nothing but padding: no value
        values = text.split("\\")
        return values if len(values) > 1 or multiple else values[0]
    if vr in SINGLE_VALUED:
        return normalise_text(vr, text) or None
    return _shaped([normalise_text(vr, v) for v in text.split("\\")], multiple)


def normalise_json(vr: str | None, value: Any, vrs: dict[str, str] | None = None) -> Any:
    """A document value (string, list of strings, sequence items) with ``vr``'s padding rule applied.

    Values of other VRs, and values whose VR is unknown (``None``), are returned unchanged; ``vrs``
    (the instance's DICOMVRs) gives the VRs of private tags inside sequence items.
    """
    if vr == "SQ":
        if not isinstance(value, list):
            return value
        return [normalise_attributes(item, vrs) if isinstance(item, dict) else item for item in value]
    if vr not in TEXT_VRS or value is None:
        return value
    if isinstance(value, str):
        if vr in RAW_VRS:
            return value.rstrip("\x00") if value.strip(" \x00") else None
        return normalise_text(vr, value) or None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if vr in RAW_VRS:
            return value
        return _shaped([normalise_text(vr, v) for v in value], True)
    return value


@lru_cache(maxsize=8192)
def keyword_vr(key: str) -> str | None:
    """The dictionary VR of a document key (keyword or 8 hex digits); ``None`` when not in the dictionary.

    Ambiguous dictionary VRs (``US or SS``, ``OB or OW``) are never text, so their first choice is used.
    """
    if len(key) == 8 and all(c in "0123456789ABCDEFabcdef" for c in key):
        tag: int | None = int(key, 16)
    else:
        found = tag_for_keyword(key)
        tag = None if found is None else int(found)
    if tag is None or (tag >> 16) & 1 or not dictionary_has_tag(tag):
        return None
    return str(dictionary_VR(tag)).split(" or ")[0]


def normalise_value(key: str, value: Any, vrs: dict[str, str] | None = None) -> Any:
    """``value`` of attribute ``key`` with its VR's padding rule (private tags: VR from ``vrs``)."""
    vr = (vrs or {}).get(key) or keyword_vr(key)
    return normalise_json(vr, value, vrs)


def normalise_attributes(attrs: dict[str, Any], vrs: dict[str, str] | None = None) -> dict[str, Any]:
    """A new ``DICOM`` map (or sequence item) with every value normalised (``vrs``: DICOMVRs)."""
    return {key: normalise_value(key, value, vrs) for key, value in attrs.items()}


def _map(node: Any, key: str) -> dict[str, Any]:
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def normalise_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A new document with every Patient, Study, Series and Instance value normalised.

    Parts that are not shaped like a document (no ``Study``, a level that is not an object) are kept.
    """
    if not isinstance(doc.get("Patient"), dict) or not isinstance(doc.get("Study"), dict):
        return doc
    study = doc["Study"]
    series_out: dict[str, Any] = {}
    for series_uid, series in _map(study, "Series").items():
        if not isinstance(series, dict):
            series_out[series_uid] = series
            continue
        instances: dict[str, Any] = {}
        for sop_uid, node in _map(series, "Instances").items():
            if isinstance(node, dict) and isinstance(node.get("DICOM"), dict):
                vrs = _map(node, "DICOMVRs")
                node = {**node, "DICOM": normalise_attributes(node["DICOM"], vrs)}
            instances[sop_uid] = node
        series_out[series_uid] = {**series, "DICOM": normalise_attributes(_map(series, "DICOM"))}
        if "Instances" in series:
            series_out[series_uid]["Instances"] = instances
    out = dict(doc)
    out["Patient"] = {**doc["Patient"], "DICOM": normalise_attributes(_map(doc["Patient"], "DICOM"))}
    out["Study"] = {**study, "DICOM": normalise_attributes(_map(study, "DICOM"))}
    if "Series" in study:
        out["Study"]["Series"] = series_out
    return out
