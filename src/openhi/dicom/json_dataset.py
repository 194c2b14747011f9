"""DICOM JSON (PS3.18 Annex F) metadata that overrides or adds to an instance's attributes at import."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_VR = re.compile(r"[A-Z]{2}")
#: Attributes a metadata file may not set: they identify the instance (and decide which mapping
#: applies), or describe the pixel data the frames were made from.
PROTECTED_TAGS = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280006: "PlanarConfiguration",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280102: "HighBit",
    0x00280103: "PixelRepresentation",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
    0x7FE00010: "PixelData",
}


class MetadataFileError(ValueError):
    """A metadata file is not one DICOM JSON dataset this import can apply."""


@dataclass(frozen=True)
class MetadataOverride:
    """One ``dicomMetadataMappings`` entry, its file already read: ``dataset`` when valid, else ``error``."""

    index: int  # position in dicomMetadataMappings
    study_uid: str
    series_uid: str | None
    path: str  # metadataFilePath as given
    dataset: dict[str, Any] | None = None
    error: str | None = None

    def describe(self) -> str:
        """``dicomMetadataMappings[i] (metadataFilePath p)``: how reports name the mapping."""
        return f"dicomMetadataMappings[{self.index}] (metadataFilePath {self.path})"

    def matches(self, study_uid: str, series_uid: str) -> bool:
        return self.study_uid == study_uid and self.series_uid in (None, series_uid)


def parse_metadata_file(data: bytes) -> dict[str, Any]:
    """The one DICOM JSON dataset in ``data`` (an object, or an array holding exactly one).

    Raises:
        MetadataFileError: not UTF-8 JSON, not one dataset, a malformed attribute, a BulkDataURI
            (only inline values are read), or an attribute in :data:`PROTECTED_TAGS`.
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MetadataFileError(f"not a JSON document ({exc})") from None
    if isinstance(doc, list):
        if len(doc) != 1:
            raise MetadataFileError(f"an array must hold exactly one dataset, it holds {len(doc)}")
        doc = doc[0]
    if not isinstance(doc, dict) or not doc:
        raise MetadataFileError("not a DICOM JSON dataset (an object keyed by 8 hex digit tags)")
    _check_dataset(doc, top=True)
    to_dataset(doc)  # every value converts
    return doc


def _check_dataset(doc: dict[str, Any], *, top: bool) -> None:
    for key, attr in doc.items():
        if not _TAG.fullmatch(key):
            raise MetadataFileError(f"{key!r} is not a tag of 8 hex digits")
        tag = int(key, 16)
        if top and tag in PROTECTED_TAGS:
            raise MetadataFileError(f"({key[:4]},{key[4:]}) {PROTECTED_TAGS[tag]} cannot be overridden")
        if top and tag >> 16 == 0x0002:
            raise MetadataFileError(
                f"({key[:4]},{key[4:]}) is file meta information and cannot be overridden"
            )
        if not isinstance(attr, dict) or not _VR.fullmatch(str(attr.get("vr", ""))):
            raise MetadataFileError(f'attribute {key} has no valid "vr"')
        if "BulkDataURI" in attr:
            raise MetadataFileError(f"attribute {key} uses a BulkDataURI; give the value inline")
        if set(attr) - {"vr", "Value", "InlineBinary"}:
            raise MetadataFileError(
                f"attribute {key} has unknown members {sorted(set(attr) - {'vr', 'Value', 'InlineBinary'})}"
            )
        value = attr.get("Value")
        if value is not None and not isinstance(value, list):
            raise MetadataFileError(f'attribute {key}: "Value" must be an array')
        if attr["vr"] == "SQ":
            for item in value or []:
                if not isinstance(item, dict):
                    raise MetadataFileError(f"attribute {key}: a sequence item must be an object")
                _check_dataset(item, top=False)


def to_dataset(doc: dict[str, Any]) -> Dataset:
    """``Dataset.from_json`` with pydicom's leniency turned into errors.

    Raises:
        MetadataFileError: a value does not fit its VR.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return Dataset.from_json(doc)
        except Exception as exc:  # pydicom raises (and warns) many types for bad values
            raise MetadataFileError(f"an attribute value is not valid: {exc}") from None


def apply_overrides(
    ds: Dataset, overrides: Sequence[MetadataOverride], study_uid: str, series_uid: str
) -> tuple[int, ...]:
    """Set the attributes of every mapping matching the instance on ``ds``; return their indexes.

    Study-level mappings apply first, then study+series ones (in list order within each kind), so
    the most specific mapping's value wins and every matching file's other attributes still apply.
    A matching mapping whose file could not be read raises ``MetadataFileError`` naming it.
    """
    matched = [o for o in overrides if o.matches(study_uid, series_uid)]
    matched.sort(key=lambda o: (o.series_uid is not None, o.index))
    for override in matched:
        if override.dataset is None:
            raise MetadataFileError(f"{override.describe()} cannot be applied: {override.error}")
    for override in matched:
        assert override.dataset is not None
        for elem in to_dataset(override.dataset):
            ds[elem.tag] = elem
    return tuple(o.index for o in matched)
