"""A pydicom Dataset from a metadata document's attributes, every value kept as the document holds it."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from openhi.dicom.instance_view import PIXEL_TAGS, VRContext, attribute_vr, context_of, key_tag

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_STRINGS = frozenset({"IS", "DS"})
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "SV", "UV"})
_FLOAT_VRS = frozenset({"FL", "FD"})


class DocumentValueError(ValueError):
    """A document value cannot be written with its VR (names the attribute)."""


class _ExactElement(DataElement):
    """An element whose IS/DS values stay the document's strings: written byte for byte as read
    from the original file (``"1 "``, ``" -1000"``), never parsed (an invalid one is kept too)."""

    def _convert(self, val: Any) -> Any:
        if self.VR in _NUMBER_STRINGS:
            return val
        return super()._convert(val)


def _element(tag: int, key: str, vr: str, value: Any) -> DataElement:
    if value is None or value == []:
        empty: Any = b"" if vr in BINARY_VRS else None
        return DataElement(tag, vr, empty, validation_mode=config.IGNORE)
    if vr in BINARY_VRS:
        if not isinstance(value, str):
            raise DocumentValueError(f"{key}: VR {vr} expects base64 text")
        try:
            return DataElement(tag, vr, base64.b64decode(value, validate=True), validation_mode=config.IGNORE)
        except binascii.Error as exc:
            raise DocumentValueError(f"{key}: invalid base64: {exc}") from exc
    values = value if isinstance(value, list) else [value]
    if vr in _NUMBER_STRINGS:
        strings = ["" if v is None else str(v) for v in values]
        return _ExactElement(
            tag, vr, strings if len(strings) > 1 else strings[0], validation_mode=config.IGNORE
        )
    converted: list[Any]
    if vr == "AT":
        converted = [BaseTag(int(str(v), 16)) for v in values if v is not None]
    elif vr in _INT_VRS:
        converted = [int(v) for v in values if v is not None]
    elif vr in _FLOAT_VRS:
        converted = [float(v) for v in values if v is not None]
    else:
        converted = ["" if v is None else str(v) for v in values]
    final: Any = converted if len(converted) != 1 else converted[0]
    return DataElement(tag, vr, final, validation_mode=config.IGNORE)


def build_dataset(
    attributes: Mapping[str, Any],
    vrs: Mapping[str, str],
    ctx: VRContext | None = None,
    *,
    file_meta: bool = False,
) -> Dataset:
    """The Dataset of a document's attributes (keywords or hex keys; ``vrs``: the instance's DICOMVRs).

    Group 0002 is left out unless ``file_meta`` (then only group 0002 is taken); Pixel Data
    elements (frames are stored apart) are always left out. Ambiguous VRs are resolved as
    :func:`~openhi.dicom.instance_view.attribute_vr` does. Raises :class:`DocumentValueError`.
    """
    top = ctx is None
    ctx = context_of(attributes) if ctx is None else ctx
    ds = Dataset()
    for key, value in attributes.items():
        tag = key_tag(key)
        if tag is None:
            raise DocumentValueError(f"Unknown DICOM keyword {key!r}")
        if top and ((tag >> 16 == 0x0002) != file_meta or tag in PIXEL_TAGS):
            continue
        vr = attribute_vr(key, tag, value, vrs, ctx)
        if vr == "SQ":
            items = value if isinstance(value, list) else [] if value is None else [value]
            seq = [build_dataset(item, vrs, ctx.inside(item)) for item in items if isinstance(item, dict)]
            ds.add(DataElement(tag, vr, Sequence(seq)))
            continue
        try:
            ds.add(_element(tag, key, vr, value))
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, DocumentValueError):
                raise
            raise DocumentValueError(f"{key}: {value!r} cannot be written as VR {vr}: {exc}") from exc
    return ds
