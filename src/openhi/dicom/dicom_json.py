"""PS3.18 Annex F DICOM JSON of a metadata document's instance (WADO-RS metadata) and its bulk data values."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from json.encoder import encode_basestring as _encode_string
from typing import Any

from openhi.dicom.instance_view import (
    PIXEL_DATA,
    PIXEL_TAGS,
    InstanceView,
    VRContext,
    attribute_vr,
    context_of,
    key_tag,
)

#: Binary values up to this many bytes are inlined (``InlineBinary``) when a bulk data URI builder is given.
INLINE_BINARY_MAX = 1024
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "SV", "UV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

#: Top-level elements left out: Pixel Data (added from the frames), trailing padding, the original encapsulation.
_NOT_IN_JSON = PIXEL_TAGS | {0x7FE00001, 0x7FE00002, 0xFFFCFFFC}

BulkDataURI = Callable[[str], str]


class DSNumber(Decimal):
    """A DS value: a JSON number written with the decimal digits of the document (see :func:`dumps`)."""


def _is_json(text: str) -> Any:
    stripped = text.strip(" ")
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        number = Decimal(stripped)
    except InvalidOperation:
        return text  # not an integer string: kept as the document holds it
    return int(number) if number.is_finite() and number == number.to_integral_value() else text


def _ds_json(text: str) -> Any:
    stripped = text.strip(" ")
    if _JSON_NUMBER.fullmatch(stripped):
        return DSNumber(stripped)
    try:
        number = Decimal(stripped)
    except InvalidOperation:
        return text  # not a decimal string: kept as the document holds it
    canonical = str(number)
    return DSNumber(canonical) if _JSON_NUMBER.fullmatch(canonical) else text


def _pn_json(text: str) -> dict[str, str]:
    groups = text.split("=")
    return {name: group for name, group in zip(_PN_GROUPS, groups, strict=False) if group}


def _float_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
    return value


def _one(vr: str, value: Any) -> Any:
    """One value of a non-sequence, non-binary element as DICOM JSON (``None`` for an empty one)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return _float_json(value) if vr in _FLOAT_VRS else value
    if vr == "PN":
        return _pn_json(value) or None
    if vr == "IS":
        return _is_json(value) if value.strip(" ") else None
    if vr == "DS":
        return _ds_json(value) if value.strip(" ") else None
    if vr == "AT":
        return value.upper()
    return value


def _binary_length(b64: str) -> int:
    return len(b64) * 3 // 4 - b64[-2:].count("=")


class _Builder:
    def __init__(self, vrs: Mapping[str, str], bulkdata_uri: BulkDataURI | None, inline_max: int) -> None:
        self.vrs = vrs
        self.bulkdata_uri = bulkdata_uri
        self.inline_max = inline_max

    def dataset(self, attrs: Mapping[str, Any], ctx: VRContext, path: str, *, top: bool) -> dict[str, Any]:
        tagged = []
        for key, value in attrs.items():
            tag = key_tag(key)
            if tag is None or (top and (tag >> 16 == 0x0002 or tag in _NOT_IN_JSON)):
                continue  # group 0002 is not part of the DICOM JSON; Pixel Data is added by the caller
            tagged.append((tag, key, value))
        tagged.sort(key=lambda t: t[0])
        out: dict[str, Any] = {}
        for tag, key, value in tagged:
            hex_tag = f"{tag:08X}"
            vr = attribute_vr(key, tag, value, self.vrs, ctx)
            out[hex_tag] = self.element(vr, value, ctx, f"{path}{hex_tag}")
        return out

    def element(self, vr: str, value: Any, ctx: VRContext, path: str) -> dict[str, Any]:
        attr: dict[str, Any] = {"vr": vr}
        if vr == "SQ":
            items = value if isinstance(value, list) else [] if value is None else [value]
            if items:
                attr["Value"] = [
                    self.dataset(item, ctx.inside(item), f"{path}/{i}/", top=False)
                    if isinstance(item, dict)
                    else {}
                    for i, item in enumerate(items)
                ]
            return attr
        if vr in BINARY_VRS:
            if isinstance(value, str) and value:
                if self.bulkdata_uri is not None and _binary_length(value) > self.inline_max:
                    attr["BulkDataURI"] = self.bulkdata_uri(path)
                else:
                    attr["InlineBinary"] = value
            return attr
        values = value if isinstance(value, list) else [value]
        converted = [_one(vr, v) for v in values]
        if any(v is not None for v in converted):
            attr["Value"] = converted
        return attr


def instance_dicom_json(
    view: InstanceView,
    *,
    bulkdata_uri: BulkDataURI | None = None,
    inline_max: int = INLINE_BINARY_MAX,
) -> dict[str, Any]:
    """The PS3.18 F.2 DICOM JSON object of one instance (all levels merged, file meta group excluded).

    Keys are 8 uppercase hex digits in ascending order, every element has its ``vr``; PN values are
    ``{"Alphabetic", "Ideographic", "Phonetic"}`` objects, IS and DS values JSON numbers (DS as a
    :class:`DSNumber` holding the document's digits: serialise with :func:`dumps`), AT values hex
    strings, empty elements have no ``Value`` (empty values among several are ``null``). Binary
    values are ``InlineBinary``; with ``bulkdata_uri`` those over ``inline_max`` bytes become a
    ``BulkDataURI`` built from the element's path (``"00091010"``, in a sequence
    ``"00081140/0/00091010"``: hex tags and 0-based item indexes joined by ``/``), and Pixel Data
    (when the instance has frames) is always ``{"vr": "OW" or "OB", "BulkDataURI": bulkdata_uri("7FE00010")}``.
    Without ``bulkdata_uri``, Pixel Data is left out and every other binary is inlined.
    """
    ctx = context_of(view.attributes)
    out = _Builder(view.vrs, bulkdata_uri, inline_max).dataset(view.attributes, ctx, "", top=True)
    if bulkdata_uri is not None and view.frame_ids:
        vr = "OB" if ctx.bits_allocated is not None and ctx.bits_allocated <= 8 else "OW"
        out[f"{PIXEL_DATA:08X}"] = {"vr": vr, "BulkDataURI": bulkdata_uri(f"{PIXEL_DATA:08X}")}
        out = dict(sorted(out.items()))
    return out


def bulkdata_value(view: InstanceView, path: str) -> bytes:
    """The bytes of the binary element at ``path`` (as given to ``bulkdata_uri``; not Pixel Data).

    Raises:
        KeyError: no binary element with a value at that path.
    """
    parts = path.split("/")
    attrs: Any = view.attributes
    ctx = context_of(view.attributes)
    for depth in range(0, len(parts), 2):
        wanted = parts[depth].upper()
        found = [(k, v) for k, v in attrs.items() if (t := key_tag(k)) is not None and f"{t:08X}" == wanted]
        if not found or (depth == 0 and (int(wanted, 16) >> 16 == 0x0002 or int(wanted, 16) in PIXEL_TAGS)):
            raise KeyError(path)
        key, value = found[0]
        vr = attribute_vr(key, int(wanted, 16), value, view.vrs, ctx)
        if depth + 1 == len(parts):
            if vr not in BINARY_VRS or not isinstance(value, str) or not value:
                raise KeyError(path)
            return base64.b64decode(value)
        index = parts[depth + 1]
        if vr != "SQ" or not isinstance(value, list) or not index.isdigit() or int(index) >= len(value):
            raise KeyError(path)
        attrs = value[int(index)]
        if not isinstance(attrs, dict):
            raise KeyError(path)
        ctx = ctx.inside(attrs)
    raise KeyError(path)


def _write(obj: Any, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(_encode_string(obj))
    elif isinstance(obj, dict):
        out.append("{")
        first = True
        for key, value in obj.items():
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(str(key)))
            out.append(":")
            _write(value, out)
        out.append("}")
    elif isinstance(obj, list):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _write(value, out)
        out.append("]")
    elif obj is None:
        out.append("null")
    elif isinstance(obj, bool):
        out.append("true" if obj else "false")
    elif isinstance(obj, int | Decimal):
        out.append(str(obj))  # a DSNumber's str is its own digits
    else:
        out.append(json.dumps(obj, allow_nan=False))


def dumps(obj: Any) -> str:
    """Compact JSON text of DICOM JSON objects, DS numbers written with their own digits (UTF-8, not escaped)."""
    out: list[str] = []
    _write(obj, out)
    return "".join(out)
