"""One instance of a metadata document as a viewer sees it: every level's attributes merged, with its VRs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_has_tag, dictionary_VR, tag_for_keyword

_HEX_KEY = re.compile(r"[0-9A-Fa-f]{8}")
PIXEL_DATA = 0x7FE00010
#: Pixel Data elements: never values of the document (frames are stored apart).
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})


class InstanceNotFound(LookupError):
    """The document holds no instance with this SOP Instance UID (in this series, when one is given)."""


@dataclass(frozen=True)
class InstanceView:
    """An instance's attributes (Patient, Study, Series, then Instance level: later levels win), its
    ``DICOMVRs``, the transfer syntax its frames are stored in and its image frame ids in frame order."""

    study_uid: str
    series_uid: str
    sop_uid: str
    attributes: dict[str, Any]
    vrs: dict[str, str]
    stored_transfer_syntax: str
    frame_ids: tuple[str, ...]


def _dicom(node: Any) -> dict[str, Any]:
    value = node.get("DICOM") if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def _view(doc: Mapping[str, Any], series_uid: str, series: Any, sop_uid: str, node: Any) -> InstanceView:
    attributes: dict[str, Any] = {}
    for level in (_dicom(doc.get("Patient")), _dicom(doc.get("Study")), _dicom(series), _dicom(node)):
        attributes.update(level)
    vrs = node.get("DICOMVRs") if isinstance(node.get("DICOMVRs"), dict) else {}
    frames = node.get("ImageFrames") if isinstance(node.get("ImageFrames"), list) else []
    return InstanceView(
        study_uid=str(_dicom(doc.get("Study")).get("StudyInstanceUID") or ""),
        series_uid=series_uid,
        sop_uid=sop_uid,
        attributes=attributes,
        vrs=dict(vrs),
        stored_transfer_syntax=str(node.get("StoredTransferSyntaxUID") or ""),
        frame_ids=tuple(str(f["ID"]) for f in frames if isinstance(f, dict) and "ID" in f),
    )


def iter_instance_views(doc: Mapping[str, Any]) -> Iterator[InstanceView]:
    """Every instance of the document, series by series, in the document's order."""
    study = doc.get("Study")
    all_series = study.get("Series") if isinstance(study, dict) else None
    for series_uid, series in (all_series or {}).items():
        instances = series.get("Instances") if isinstance(series, dict) else None
        for sop_uid, node in (instances or {}).items():
            if isinstance(node, dict):
                yield _view(doc, series_uid, series, sop_uid, node)


def instance_view(doc: Mapping[str, Any], sop_uid: str, series_uid: str | None = None) -> InstanceView:
    """The instance ``sop_uid`` of the document (raises :class:`InstanceNotFound`): looked up by key,
    only that instance's view is built."""
    study = doc.get("Study")
    all_series = study.get("Series") if isinstance(study, dict) else None
    for uid, series in (all_series or {}).items():
        if series_uid not in (None, uid) or not isinstance(series, dict):
            continue
        instances = series.get("Instances")
        node = instances.get(sop_uid) if isinstance(instances, dict) else None
        if isinstance(node, dict):
            return _view(doc, uid, series, sop_uid, node)
    raise InstanceNotFound(f"Instance {sop_uid} is not in the image set")


# ------------------------------------------------------------------------------------- VRs


@lru_cache(maxsize=8192)
def key_tag(key: str) -> int | None:
    """The tag of a document key (PS3.6 keyword or 8 hex digits); ``None`` for an unknown keyword."""
    if _HEX_KEY.fullmatch(key):
        return int(key, 16)
    tag = tag_for_keyword(key)
    return None if tag is None else int(tag)


@dataclass(frozen=True)
class VRContext:
    """The values pydicom resolves ambiguous VRs with (from the dataset or the enclosing one)."""

    pixel_representation: int | None = None
    bits_allocated: int | None = None

    def inside(self, item: Mapping[str, Any]) -> VRContext:
        """The context of a sequence item: its own Pixel Representation / Bits Allocated win."""
        pr, ba = item.get("PixelRepresentation"), item.get("BitsAllocated")
        if not isinstance(pr, int) and not isinstance(ba, int):
            return self
        return VRContext(
            pr if isinstance(pr, int) else self.pixel_representation,
            ba if isinstance(ba, int) else self.bits_allocated,
        )


def _values(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _ambiguous(tag: int, options: list[str], value: Any, ctx: VRContext) -> str:
    """Choose among ``US or SS``, ``OB or OW``, ``US or OW``, ``US or SS or OW`` like pydicom does."""
    binary = [vr for vr in options if vr in ("OB", "OW")]
    numeric = [vr for vr in options if vr in ("US", "SS")]
    if binary and (isinstance(value, str) or not numeric):
        if "OW" not in binary:
            return "OB"
        if "OB" not in binary:
            return "OW"
        if tag == PIXEL_DATA and ctx.bits_allocated is not None and ctx.bits_allocated <= 8:
            return "OB"
        return "OW"
    if len(numeric) == 1:
        return numeric[0]
    ints = [v for v in _values(value) if isinstance(v, int | float) and not isinstance(v, bool)]
    if any(v < 0 for v in ints):
        return "SS"
    if any(v > 0x7FFF for v in ints):
        return "US"
    return "SS" if ctx.pixel_representation == 1 else "US"


def attribute_vr(key: str, tag: int, value: Any, vrs: Mapping[str, str], ctx: VRContext) -> str:
    """The VR of one document attribute.

    Hex keys take their VR from ``DICOMVRs`` (private and unknown tags, repeating-group copies);
    keywords from the data dictionary, an ambiguous one resolved from the value's JSON type
    (base64 text → OB/OW), Pixel Representation (US/SS) and Bits Allocated (OB/OW of Pixel Data).
    A tag neither knows is UN.
    """
    recorded = vrs.get(key)
    if recorded and " or " not in recorded:
        return recorded
    if (tag >> 16) & 1 or not dictionary_has_tag(tag):
        try:
            vr = str(dictionary_VR(tag))  # repeating groups (60xx, 50xx) are in the dictionary
        except KeyError:
            return "UN"
    else:
        vr = str(dictionary_VR(tag))
    if " or " in vr:
        return _ambiguous(tag, vr.split(" or "), value, ctx)
    return vr if vr not in ("", "NONE") else "UN"


def context_of(attributes: Mapping[str, Any]) -> VRContext:
    """The top-level :class:`VRContext` of an instance's attributes."""
    return VRContext().inside(attributes)
