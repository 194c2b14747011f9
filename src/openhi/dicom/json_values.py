"""DICOM element ⇄ HealthImaging metadata JSON value encoding (§2.4): text without padding, IS/DS as read."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterator, MutableMapping
from functools import lru_cache
from typing import Any

import numpy as np
from pydicom import config
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_VM,
    dictionary_VR,
    keyword_for_tag,
    tag_for_keyword,
)
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import validate_value

from openhi.dicom.text_values import SINGLE_VALUED, TEXT_VRS, normalise_text, text_json

PIXEL_DATA = 0x7FE00010
_BULK_PIXELS = frozenset({PIXEL_DATA, 0x7FE00008, 0x7FE00009})  # (Float/DoubleFloat)PixelData too
#: Pixel Data VRs read from the file (not implicit "OB or OW", which pydicom resolves on conversion).
_EXPLICIT_PIXEL_VRS = frozenset({"OB", "OW"})

_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_SINGLE_VALUED = SINGLE_VALUED
INT_VRS = frozenset({"US", "SS", "UL", "SL", "SV", "UV"})
FLOAT_VRS = frozenset({"FL", "FD"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_INT_RANGE = {
    "US": (0, 2**16 - 1),
    "SS": (-(2**15), 2**15 - 1),
    "UL": (0, 2**32 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "UV": (0, 2**64 - 1),
    "SV": (-(2**63), 2**63 - 1),
}
#: struct codes of the binary numeric VRs (read straight from raw element bytes).
_STRUCT_CODE = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
_HEX_KEY = re.compile(r"^[0-9A-Fa-f]{8}$")
_INT_STRING = re.compile(r"^[+-]?[0-9]+$")

Encodings = list[str]
VRMap = MutableMapping[str, str]


@lru_cache(maxsize=8192)
def tag_key(tag: int) -> tuple[str, bool]:
    """Return ``(key, is_keyword)``: the PS3.6 keyword of a public tag, else 8 uppercase hex digits."""
    tag = int(tag)
    if not (tag >> 16) & 1:
        keyword = keyword_for_tag(tag)
        if keyword and tag_for_keyword(keyword) == tag:  # repeating groups (60xx…) only own their base
            return keyword, True
    return f"{tag:08X}", False


@lru_cache(maxsize=8192)
def vm_is_multiple(tag: int) -> bool:
    """Whether the dictionary VM of a public tag allows more than one value."""
    if (tag >> 16) & 1 or not dictionary_has_tag(tag):
        return False
    return dictionary_VM(tag) not in ("1", "0", "")


@lru_cache(maxsize=8192)
def _private_or_unknown(tag: int) -> bool:
    return bool((tag >> 16) & 1) or not dictionary_has_tag(tag)


@lru_cache(maxsize=8192)
def _numeric_vr(tag: int) -> str | None:
    """The dictionary VR of a public tag when it is one unambiguous binary numeric VR (US, FD, …)."""
    if _private_or_unknown(tag):
        return None
    vr = dictionary_VR(tag)
    return vr if vr in _STRUCT_CODE else None


def _numeric_json(raw: bytes, vr: str, little_endian: bool, multiple: bool) -> Any:
    """The JSON value of a binary numeric element from its bytes (what pydicom's conversion gives)."""
    code = _STRUCT_CODE[vr]
    count = len(raw) // struct.calcsize(code)
    if not count:
        return None
    values = list(struct.unpack(f"{'<' if little_endian else '>'}{count}{code}", raw))
    return values if count > 1 or multiple else values[0]


@lru_cache(maxsize=8192)
def _implicit_vr(tag: int) -> str | None:
    """VR of an implicit-VR element: LO for private creators, UN for other private/unknown tags."""
    if (tag >> 16) & 1:
        return "LO" if 0x10 <= (tag & 0xFFFF) <= 0xFF else "UN"
    if not dictionary_has_tag(tag):
        return "UN"
    vr = dictionary_VR(tag)
    return vr if vr in TEXT_VRS else None  # ambiguous/binary VRs are resolved by pydicom


def _text_json(raw: bytes, vr: str, encodings: Encodings, multiple: bool) -> Any:
    if vr in _CHARSET_VRS:
        text = decode_bytes(raw, encodings, {0x5C, 0x3D, 0x5E} if vr == "PN" else {0x5C})
    else:
        text = raw.decode("latin-1")
    return text_json(text, vr, multiple)


def _binary_json(value: bytes, vr: str, little_endian: bool) -> str:
    word = _WORD.get(vr)
    if not little_endian and word and len(value) % word == 0:
        value = np.frombuffer(value, dtype=f">u{word}").astype(f"<u{word}").tobytes()
    return base64.b64encode(value).decode("ascii")


def _scalar_text(value: Any) -> str:
    original = getattr(value, "original_string", None)
    return original if isinstance(original, str) else str(value)


def _converted_json(elem: DataElement, encodings: Encodings, vrs: VRMap | None, little_endian: bool) -> Any:
    vr, value = elem.VR, elem.value
    multiple = vm_is_multiple(elem.tag)
    if vr == "SQ":
        if not value:
            return None
        return [
            {key: v for _, key, v in _iter_json(item, encodings, vrs, little_endian, top=False)}
            for item in value
        ]
    if vr in BINARY_VRS:
        return "" if value is None else _binary_json(bytes(value), vr, little_endian)
    if value is None or value == "" or value == b"":
        return None
    values = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
    if not values:
        return None
    if vr in TEXT_VRS:
        out: list[Any] = [normalise_text(vr, _scalar_text(v)) for v in values]
        if len(out) == 1 and not out[0].strip(" "):
            return None
    elif vr == "AT":
        out = [f"{int(v):08X}" for v in values]
    elif vr in INT_VRS:
        out = [int(v) for v in values]
    elif vr in FLOAT_VRS:
        out = [float(v) for v in values]
    else:  # pragma: no cover - every VR is handled above
        out = [str(v) for v in values]
    return out if len(out) > 1 or multiple else out[0]


def element_to_json(
    elem: DataElement | RawDataElement,
    encodings: Encodings | None = None,
    vrs: VRMap | None = None,
) -> Any:
    """Return the §2.4 JSON value of one element (text per ``text_values``: padding removed, IS/DS as read).

    ``encodings`` are the Python codecs of the governing Specific Character Set (default ASCII);
    ``vrs`` collects the VRs of private/unknown tags met inside sequences.
    """
    encodings = encodings or ["iso8859"]
    tag = int(elem.tag)
    if tag in _BULK_PIXELS:
        return None
    little_endian = bool(getattr(elem, "is_little_endian", True))
    if isinstance(elem, RawDataElement):
        vr = elem.VR or _implicit_vr(tag)
        raw = elem.value
        if isinstance(raw, bytes) and vr is not None:
            if vr in TEXT_VRS:
                return _text_json(raw, vr, encodings, vm_is_multiple(tag))
            if vr == "UN" and ((tag >> 16) & 1 or not dictionary_has_tag(tag)):
                return _binary_json(raw, vr, little_endian)
        elem = _convert(elem)
    return _converted_json(elem, encodings, vrs, little_endian)


def _convert(raw: RawDataElement) -> DataElement:
    return convert_raw_data_element(raw)


def _element_vr(ds: Dataset, tag: int, item: DataElement | RawDataElement) -> str:
    if isinstance(item, RawDataElement):
        vr = item.VR or _implicit_vr(tag)
        if vr is not None and vr != "UN":
            return str(vr)
        if vr == "UN" and _private_or_unknown(tag):
            return "UN"
        return str(ds[tag].VR)
    return str(item.VR)


def _iter_json(
    ds: Dataset, encodings: Encodings, vrs: VRMap | None, little_endian: bool, *, top: bool = True
) -> Iterator[tuple[int, str, Any]]:
    """Yield ``(tag, key, value)`` per top-level element of ``ds``, in the dataset's order.

    Pixel Data of the dataset itself (``top``) is bulk data with no JSON value (its frames are stored
    apart); Pixel Data inside a sequence item (an icon image) is an ordinary binary value and is kept.
    """
    bulk = _BULK_PIXELS if top else frozenset()
    charset = ds.get_item(0x00080005)
    if charset is not None:
        encodings = convert_encodings(ds.SpecificCharacterSet) if ds.SpecificCharacterSet else encodings
    for base_tag, item in list(ds.items()):
        tag = int(base_tag)
        if tag & 0xFFFF == 0 and tag != 0x00020000:
            continue  # retired group lengths (other than the file meta group's) are not carried
        if isinstance(item, RawDataElement) and item.value is None:
            item = ds.get_item(tag)  # a deferred read: pydicom reads (and converts) it
        if top and isinstance(item, RawDataElement) and tag == PIXEL_DATA and item.VR in _EXPLICIT_PIXEL_VRS:
            value = None  # bulk data has no JSON value; converting it would change nothing, so it stays raw
        elif isinstance(item, RawDataElement):
            value = _raw_json(tag, item, encodings)
            if value is _NOT_RAW:
                elem = ds[tag]  # pydicom converts it (and corrects an ambiguous VR)
                value = None if tag in bulk else _converted_json(elem, encodings, vrs, little_endian)
        else:  # converted already: ds[tag] would return this very element
            value = None if tag in bulk else _converted_json(item, encodings, vrs, little_endian)
        key, is_keyword = tag_key(tag)
        if not is_keyword and vrs is not None:
            vrs[key] = _element_vr(ds, tag, item)
        yield tag, key, value


_NOT_RAW = object()


def _raw_json(tag: int, raw: RawDataElement, encodings: Encodings) -> Any:
    """The JSON value straight from a raw element's bytes, or ``_NOT_RAW`` when pydicom must convert it.

    Text goes through ``text_values.text_json`` (IS/DS keep the file's string); numeric VRs are unpacked here (same values as pydicom's); other
    VRs (sequences, AT, binary of public tags, ambiguous VRs of implicit files) go through pydicom.
    """
    value = raw.value
    if not isinstance(value, bytes) or tag in _BULK_PIXELS:
        return _NOT_RAW
    vr = raw.VR or _implicit_vr(tag)
    if vr is not None:
        if vr in TEXT_VRS:
            return _text_json(value, vr, encodings, vm_is_multiple(tag))
        if vr == "UN" and _private_or_unknown(tag):
            return _binary_json(value, vr, bool(raw.is_little_endian))
    else:
        vr = _numeric_vr(tag)
    if vr in _STRUCT_CODE and len(value) % struct.calcsize(_STRUCT_CODE[vr]) == 0:
        return _numeric_json(value, vr, bool(raw.is_little_endian), vm_is_multiple(tag))
    return _NOT_RAW


def dataset_to_json(ds: Dataset) -> tuple[dict[str, Any], dict[str, str]]:
    """Return ``(DICOM, DICOMVRs)`` for a dataset: file meta group first, then the dataset elements.

    Private/unknown tags are keyed by 8 hex digits and their VR is recorded in ``DICOMVRs`` — also
    for such tags nested inside sequence items (the map is flat, keyed by the tag alone).
    """
    vrs: dict[str, str] = {}
    out = {key: value for _, key, value in iter_dataset_json(ds, vrs)}
    return out, vrs


def iter_dataset_json(ds: Dataset, vrs: VRMap) -> Iterator[tuple[int, str, Any]]:
    """Yield ``(tag, key, value)`` for the file meta group then each top-level element of ``ds``."""
    little_endian = ds.original_encoding[1] is not False
    meta = getattr(ds, "file_meta", None)
    sources: list[tuple[Dataset, bool]] = [(meta, True)] if meta is not None else []
    sources.append((ds, little_endian))
    for source, le in sources:
        yield from _iter_json(source, ["iso8859"], vrs, le)


# ----------------------------------------------------------------------------------------- reverse


def _resolve(key: str, vr_hint: str | None) -> tuple[int, str]:
    if _HEX_KEY.match(key):
        tag = int(key, 16)
    else:
        found = tag_for_keyword(key)
        if found is None:
            raise ValueError(f"Unknown DICOM keyword {key!r}")
        tag = int(found)
    if vr_hint:
        return tag, vr_hint
    if (tag >> 16) & 1 or not dictionary_has_tag(tag):
        raise ValueError(f"A VR is required for private or unknown tag {key}")
    vr = dictionary_VR(tag)
    return tag, vr.split(" or ")[0]


def _as_list(key: str, vr: str, value: Any) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if len(values) > 1 and (vr in _SINGLE_VALUED or vr in BINARY_VRS or vr == "SQ"):
        raise ValueError(f"{key}: VR {vr} takes a single value, got {len(values)}")
    return values


def json_to_element(
    key: str, value: Any, vr_hint: str | None = None, *, vrs: VRMap | None = None
) -> DataElement:
    """Build a pydicom ``DataElement`` from a metadata key and JSON value (inverse of ``element_to_json``).

    ``vr_hint`` gives the VR (required for private/unknown tags; resolves ``US or SS``-style entries);
    ``vrs`` supplies VRs for private tags inside sequence items. Raises ``ValueError`` when the value
    does not fit the VR.
    """
    tag, vr = _resolve(key, vr_hint)
    if (
        vr_hint is None
        and dictionary_has_tag(tag)
        and "or SS" in dictionary_VR(tag)
        and any(isinstance(v, int) and v < 0 for v in (value if isinstance(value, list) else [value]))
    ):
        vr = "SS"
    if value is None:
        empty: Any = Sequence() if vr == "SQ" else (b"" if vr in BINARY_VRS else None)
        return DataElement(tag, vr, empty)
    if vr == "SQ":
        items = value if isinstance(value, list) else [value]
        seq = []
        for item in items:
            if not isinstance(item, dict):
                raise ValueError(f"{key}: sequence items must be JSON objects")
            seq.append(_dataset_from_json(item, vrs))
        return DataElement(tag, vr, Sequence(seq))
    if vr in BINARY_VRS:
        if not isinstance(value, str):
            raise ValueError(f"{key}: VR {vr} expects a base64 string")
        try:
            return DataElement(tag, vr, base64.b64decode(value, validate=True))
        except binascii.Error as exc:
            raise ValueError(f"{key}: invalid base64 for VR {vr}: {exc}") from exc
    values = _as_list(key, vr, value)
    converted = [_convert_value(key, vr, v) for v in values]
    if len(converted) > 1 and dictionary_has_tag(tag) and not (tag >> 16) & 1 and not vm_is_multiple(tag):
        raise ValueError(f"{key}: VM is 1 but {len(converted)} values were given")
    final: Any = converted if len(converted) > 1 else converted[0]
    return DataElement(tag, vr, final)


def _convert_value(key: str, vr: str, v: Any) -> Any:
    if vr in TEXT_VRS:
        if not isinstance(v, str):
            raise ValueError(f"{key}: VR {vr} expects a string, got {type(v).__name__}")
        text = v.strip()
        try:
            if vr == "IS" and text and not _INT_STRING.match(text):
                raise ValueError("not an integer string")
            if vr == "DS" and text:
                float(text)
            validate_value(vr, v.rstrip(" ") if vr != "PN" else v, config.RAISE)
        except ValueError as exc:
            raise ValueError(f"{key}: value {v!r} is not valid for VR {vr}: {exc}") from exc
        return v
    if vr == "AT":
        if not isinstance(v, str) or not _HEX_KEY.match(v):
            raise ValueError(f"{key}: VR AT expects 8 hex digits, got {v!r}")
        return BaseTag(int(v, 16))
    if vr in INT_VRS:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{key}: VR {vr} expects an integer, got {v!r}")
        low, high = _INT_RANGE[vr]
        if not low <= v <= high:
            raise ValueError(f"{key}: {v} is out of range for VR {vr}")
        return v
    if vr in FLOAT_VRS:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{key}: VR {vr} expects a number, got {v!r}")
        return float(v)
    raise ValueError(f"{key}: unsupported VR {vr!r}")


def _dataset_from_json(item: dict[str, Any], vrs: VRMap | None) -> Dataset:
    ds = Dataset()
    for k, v in item.items():
        hint = vrs.get(k) if vrs is not None and _HEX_KEY.match(k) else None
        ds.add(json_to_element(k, v, hint, vrs=vrs))
    return ds
