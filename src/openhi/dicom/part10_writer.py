"""A Part 10 file in its stored syntax written straight from a document instance: pydicom's bytes, without its objects.

:func:`openhi.dicom.part10.rebuild` builds a pydicom Dataset from the document and lets pydicom write
it; that costs about a millisecond per instance, mostly in pydicom's element objects. This module
writes the same bytes directly, for the common case: Explicit VR Little Endian data sets (the stored
syntax native, or encapsulated frames), values pydicom writes as they are, text in ASCII (or in
ISO_IR 100 / ISO_IR 192 when the instance says so). Anything else raises :class:`Unsupported` and
the caller writes the instance with pydicom, which stays the reference: the unit tests compare both
writers byte for byte.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom.uid import UID

from openhi import __version__
from openhi.codec import transfer_syntax as tsx
from openhi.dicom.instance_view import PIXEL_TAGS, InstanceView, VRContext, attribute_vr, context_of, key_tag
from openhi.dicom.stored_frames import J2K_FAMILY, LOSSLESS, codestream, image_format, uses_mct

#: openhi's Implementation Class UID (PS3.7 D.3.3.2): a UUID-derived UID (PS3.5 B.2, root ``2.25``),
#: fixed for every openhi version; the version goes into the Implementation Version Name.
IMPLEMENTATION_CLASS_UID = "2.25.237461049402934755301306489946302916207"
IMPLEMENTATION_VERSION_NAME = f"OPENHI_{__version__}"[:16]
#: Explicit VR with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1)
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "SV": "q", "UV": "Q", "FL": "f", "FD": "d"}
_FLOAT_VRS = frozenset({"FL", "FD"})
#: the VRs pydicom writes (any other raises there)
_VRS = _LONG_VRS | frozenset(
    {
        "AE",
        "AS",
        "AT",
        "CS",
        "DA",
        "DS",
        "DT",
        "FD",
        "FL",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "SL",
        "SS",
        "ST",
        "TM",
    }
    | {"UI", "UL", "US"}
)
#: written in the default repertoire whatever the character set (pydicom's ``write_string``)
_DEFAULT_REPERTOIRE_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UR", "IS", "DS"})
#: written in the instance's character set (pydicom's ``write_text`` and ``write_PN``)
_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
#: US or SS descriptors whose first value pydicom always writes unsigned
_LUT_DESCRIPTORS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
#: what rebuild drops: the source's encapsulation of Pixel Data and its trailing padding
_DROPPED = frozenset({0x7FE00001, 0x7FE00002, 0xFFFCFFFC})
_SPECIFIC_CHARACTER_SET = 0x00080005
_SOP_CLASS, _SOP_INSTANCE, _PHOTOMETRIC = 0x00080016, 0x00080018, 0x00280004
_PIXEL_DATA = 0x7FE00010
#: character sets in which ASCII text is written as ASCII (their first value, PS3.3 C.12.1.1.2)
_ASCII_COMPATIBLE = frozenset(
    {"", "ISO_IR 6", "ISO 2022 IR 6", "ISO_IR 100", "ISO 2022 IR 100", "ISO_IR 192"}
)
#: the character sets whose non-ASCII text is written here (one value only), with Python's codec
_CODECS = {"ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
_BOT_LIMIT = 2**32 - 1
PREAMBLE = b"\x00" * 128 + b"DICM"
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)

Text = Callable[[str], bytes]
#: encoded top-level elements by (key and value, recorded VR, VR context and text encoder): the
#: instances of a series share most of their values
Memo = dict[tuple[Any, ...], tuple[int, Any, tuple[str, bytes]]]


class Unsupported(Exception):
    """Not written here: the caller writes the instance with pydicom (which also names any error)."""


@dataclass(frozen=True)
class Layout:
    """A Part 10 file but its Pixel Data: the bytes before it (preamble, file meta, the data set's
    elements before (7FE0,0010)), after it, and how Pixel Data is written."""

    head: bytes
    tail: bytes
    #: "OB"/"OW": native Pixel Data of that VR; "" encapsulated; None: the instance has no Pixel Data
    native_vr: str | None
    #: the stored syntax is of the JPEG 2000 family (a wrapped frame is unwrapped)
    j2k: bool = False
    #: decides Bits Allocated 1 (refused: repacked by pydicom's path)
    bits_allocated: int = 0

    def pixel_data(self, frames: list[bytes]) -> list[bytes]:
        """The Pixel Data element of ``frames`` (stored bytes in frame order), as chunks to join.

        Raises Unsupported: an empty frame, or frames too large for a Basic Offset Table.
        """
        if self.native_vr is None:
            return []
        if self.native_vr:
            size = sum(len(f) for f in frames)
            pad = [b"\x00"] if size & 1 else []
            header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, self.native_vr.encode(), 0, size + len(pad))
            return [header, *frames, *pad]
        if self.j2k:
            frames = [codestream(f) for f in frames]
        if not frames or any(not f for f in frames):
            raise Unsupported("an empty frame")
        if sum(len(f) + 8 + (len(f) & 1) for f in frames) > _BOT_LIMIT:
            raise Unsupported("an Extended Offset Table is needed")
        offsets: list[int] = []
        chunks: list[bytes] = []
        position = 0
        for frame in frames:
            offsets.append(position)
            odd = len(frame) & 1
            chunks.append(_ITEM + struct.pack("<L", len(frame) + odd))
            chunks.append(frame)
            if odd:
                chunks.append(b"\x00")
            position += 8 + len(frame) + odd
        table = _ITEM + struct.pack(f"<L{len(offsets)}L", 4 * len(offsets), *offsets)
        header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
        return [header, table, *chunks, _SEQUENCE_END]


@lru_cache(maxsize=64)
def _syntax_kind(syntax: str) -> bool:
    """Whether ``syntax`` encapsulates Pixel Data (raises Unsupported unless pydicom writes it as
    Explicit VR Little Endian with the length rule this module follows)."""
    uid = UID(syntax)
    if not uid.is_transfer_syntax or uid.is_private or uid.is_deflated:
        raise Unsupported(f"transfer syntax {syntax}")
    if uid.is_implicit_VR or not uid.is_little_endian:
        raise Unsupported(f"transfer syntax {syntax}")
    return bool(uid.is_compressed)


def _ascii(text: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise Unsupported("non-ASCII text") from None


def _text_encoder(charset: Any) -> Text:
    """How text values (LO, PN, …) of a data set with this Specific Character Set value are encoded."""
    values = charset if isinstance(charset, list) else [charset]
    if not all(v is None or isinstance(v, str) for v in values):
        raise Unsupported(f"character set {values!r}")
    return _encoder(tuple("" if v is None else v for v in values))


@lru_cache(maxsize=64)
def _encoder(names: tuple[str, ...]) -> Text:
    if len(names) == 1 and names[0] in _CODECS:
        codec = _CODECS[names[0]]

        def encode(text: str) -> bytes:
            try:
                return text.encode(codec)
            except UnicodeEncodeError:
                raise Unsupported("text outside the character set") from None

        return encode
    if not all(name in _ASCII_COMPATIBLE for name in names):
        raise Unsupported(f"character set {list(names)!r}")
    return _ascii


def _header(tag: int, vr: str, length: int) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
    if length > 0xFFFF:
        raise Unsupported("a value too long for its VR")  # pydicom writes it as UN, with a warning
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)


def _value(tag: int, vr: str, value: Any, text: Text) -> bytes:
    """The encoded value of one element (what :func:`openhi.dicom.document_dataset.build_dataset`
    makes of the document value, as pydicom writes it)."""
    if value is None or value == []:
        return b""
    if vr in _BINARY_VRS:
        if not isinstance(value, str):
            raise Unsupported("binary value not base64 text")
        data = base64.b64decode(value, validate=True)
        return data + b"\x00" if len(data) & 1 and vr != "UN" else data
    values = value if isinstance(value, list) else [value]
    if vr in _NUMBER_FORMATS:
        convert: Callable[[Any], Any] = float if vr in _FLOAT_VRS else int
        numbers = [convert(v) for v in values if v is not None]
        fmt = _NUMBER_FORMATS[vr]
        if vr == "SS" and tag in _LUT_DESCRIPTORS and len(numbers) > 1:
            return struct.pack("<H", numbers[0]) + struct.pack(f"<{len(numbers) - 1}h", *numbers[1:])
        return struct.pack(f"<{len(numbers)}{fmt}", *numbers)
    if vr == "AT":
        tags = [int(str(v), 16) for v in values if v is not None]
        return b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in tags)
    strings = ["" if v is None else str(v) for v in values]
    if vr == "UI":
        pieces = strings[0].split("\\") if len(strings) == 1 else strings
        data = _ascii("\\".join(p.strip() for p in pieces))
        return data + b"\x00" if len(data) & 1 else data
    joined = "\\".join(strings)
    if vr in _DEFAULT_REPERTOIRE_VRS:
        data = _ascii(joined)
    elif vr in _TEXT_VRS:
        if vr == "PN" and "=" in joined:
            raise Unsupported("a person name with component groups")
        data = text(joined)
    else:
        raise Unsupported(f"VR {vr}")
    return data + b" " if len(data) & 1 else data


def _elements(
    attributes: Mapping[str, Any],
    vrs: Mapping[str, str],
    ctx: VRContext,
    text: Text,
    meta: dict[int, tuple[str, bytes]] | None = None,
    memo: Memo | None = None,
) -> dict[int, tuple[str, bytes]]:
    """Tag -> (VR, encoded element) of a data set's attributes. ``meta`` given: the top level, whose
    group 0002 elements go there (encoded in the default repertoire) and whose Pixel Data elements
    are left out, as build_dataset does. ``memo``: elements already encoded (see :func:`layout`)."""
    out: dict[int, tuple[str, bytes]] = {}
    context = (ctx.pixel_representation, ctx.bits_allocated, text)
    for key, value in attributes.items():
        if memo is not None:
            remembered = (_memo_key(key, value), vrs.get(key), context)
            known = memo.get(remembered)
            if known is not None:
                out[known[0]] = known[2]
                continue
        tag = key_tag(key)
        if tag is None:
            raise Unsupported(f"unknown keyword {key!r}")
        group = tag >> 16
        target = out
        if meta is not None:
            if tag in PIXEL_TAGS:
                continue
            if group == 0x0002:
                target = meta
        elif tag == _SPECIFIC_CHARACTER_SET:
            raise Unsupported("a character set inside a sequence item")
        if group == 0:
            raise Unsupported("a command element")
        recorded = vrs.get(key)
        if recorded and " or " not in recorded:
            vr = recorded
        else:
            vr = _dictionary_vr(tag) or attribute_vr(key, tag, value, vrs, ctx)
        if vr not in _VRS:
            raise Unsupported(f"VR {vr!r}")
        if vr == "SQ":
            items = value if isinstance(value, list) else [] if value is None else [value]
            body = b"".join(
                _item(item, vrs, ctx.inside(item), text) for item in items if isinstance(item, dict)
            )
            target[tag] = (vr, _header(tag, vr, len(body)) + body)
            if memo is not None and target is out:
                memo[remembered] = (tag, value, target[tag])
            continue
        data = _value(tag, vr, value, _ascii if target is meta else text)
        target[tag] = (vr, _header(tag, vr, len(data)) + data)
        if memo is not None and target is out:
            memo[remembered] = (tag, value, target[tag])
    return out


def _memo_key(key: str, value: Any) -> tuple[Any, ...]:
    """What identifies a document value for :data:`Memo`: its type and value (a float by its exact
    bits: -0.0 is not 0.0), a list's the same way, anything else its id (the memo keeps the value, so
    that the id names no other object)."""
    kind = type(value)
    if kind is float:
        return (key, kind, value.hex())
    if kind in (str, int, bool) or value is None:
        return (key, kind, value)
    if kind is list and all(type(v) in (str, int, bool) or v is None for v in value):
        return (key, kind, tuple((type(v), v) for v in value))
    return (key, None, id(value))


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    """The VR attribute_vr gives a tag with no recorded VR, when the value does not decide it ("" when
    it does: an ambiguous dictionary VR)."""
    vr = attribute_vr("", tag, None, {}, VRContext())
    return "" if " or " in _dictionary_entry(tag) else vr


def _dictionary_entry(tag: int) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _item(item: Mapping[str, Any], vrs: Mapping[str, str], ctx: VRContext, text: Text) -> bytes:
    body = _joined(_elements(item, vrs, ctx, text))
    return _ITEM + struct.pack("<L", len(body)) + body


def _joined(elements: Mapping[int, tuple[str, bytes]]) -> bytes:
    """The elements in tag order, without retired group lengths (gggg,0000) beyond group 0006."""
    return b"".join(elements[tag][1] for tag in sorted(elements) if tag & 0xFFFF or tag >> 16 <= 6)


def _single_uid(value: Any) -> str:
    """A UI value that is one UID (as pydicom converts it), else "" (missing, empty or several)."""
    if isinstance(value, list):
        if len(value) != 1:
            return ""
        value = value[0]
    if not isinstance(value, str) or "\\" in value:
        return ""
    return value.strip()


def _top_value(attributes: Mapping[str, Any], tag: int) -> Any:
    """The value the data set holds for ``tag`` (the last document key naming it wins, as in build_dataset)."""
    found = None
    for key, value in attributes.items():
        if key_tag(key) == tag:
            found = value
    return found


def _file_meta(
    view: InstanceView,
    target: str,
    group: dict[int, tuple[str, bytes]],
    dataset: Mapping[int, tuple[str, bytes]],
) -> bytes:
    """The File Meta group (with its group length) of the file part10's ``_file_meta`` describes:
    ``group``, the document's group 0002 elements (encoded), less those the writer sets; ``dataset``,
    the data set's encoded elements (its SOP Class and Instance UIDs are copied)."""
    elements = {tag: element for tag, element in group.items() if tag not in _WRITER_META}
    if any(tag in dataset and dataset[tag][0] != "UI" for tag in (_SOP_CLASS, _SOP_INSTANCE)):
        raise Unsupported("a SOP UID of another VR")
    sop_class = _single_uid(_top_value(view.attributes, _SOP_CLASS))
    given = _top_value(view.attributes, _SOP_INSTANCE)
    sop_instance = _single_uid(given) if given not in (None, "", []) else view.sop_uid.strip()
    if not sop_class or not sop_instance:
        raise Unsupported("no single SOP Class or SOP Instance UID")
    for tag, vr, value in (
        (0x00020002, "UI", sop_class),
        (0x00020003, "UI", sop_instance),
        (0x00020010, "UI", target),
    ):
        data = _value(tag, vr, value, _ascii)
        elements[tag] = (vr, _header(tag, vr, len(data)) + data)
    elements.update(_fixed_meta())
    body = _joined(elements)
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body


@lru_cache(maxsize=1)
def _fixed_meta() -> dict[int, tuple[str, bytes]]:
    """File Meta Information Version and openhi's implementation UID and name, encoded."""
    out: dict[int, tuple[str, bytes]] = {}
    for tag, vr, value in (
        (0x00020001, "OB", "AAE="),
        (0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
        (0x00020013, "SH", IMPLEMENTATION_VERSION_NAME),
    ):
        data = _value(tag, vr, value, _ascii)
        out[tag] = (vr, _header(tag, vr, len(data)) + data)
    return out


#: Group 0002 elements the writer sets (as part10's ``_WRITER_META``)
_WRITER_META = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})


def layout(
    view: InstanceView, target: str, first_frame: Callable[[], bytes], memo: Memo | None = None
) -> Layout:
    """Everything of the Part 10 file of ``view`` in ``target`` (its stored syntax) but the frames.

    ``first_frame()`` gives the first frame's stored bytes; it is only called for RGB frames of the
    JPEG 2000 family (whether they use the colour transform decides Photometric Interpretation).
    ``memo``: one dict passed for the instances of one answer, so that the values they share are
    encoded once. Raises Unsupported (then write it with pydicom), and what ``first_frame`` raises.
    """
    stored = view.stored_transfer_syntax or tsx.EXPLICIT_VR_LE
    if target != stored:
        raise Unsupported("a transcoded instance")
    try:
        encapsulated = _syntax_kind(target)
        if encapsulated == (stored in tsx.NATIVE):  # pydicom's length rule and part10's frames disagree
            raise Unsupported(f"transfer syntax {target}")
        ctx = context_of(view.attributes)
        charset = _top_value(view.attributes, _SPECIFIC_CHARACTER_SET)
        text = _ascii if charset is None else _text_encoder(charset)
        group: dict[int, tuple[str, bytes]] = {}
        elements = _elements(view.attributes, view.vrs, ctx, text, group, memo)
        for tag in _DROPPED:
            elements.pop(tag, None)
        meta = _file_meta(view, target, group, elements)
        native_vr: str | None = None
        bits = 0
        if view.frame_ids:
            fmt = image_format(view.attributes)
            bits = fmt.bits_allocated
            if encapsulated:
                native_vr = ""
            elif bits == 1:
                raise Unsupported("bit-packed frames")
            else:
                native_vr = "OW" if bits > 8 else "OB"
            override = _photometric(stored, fmt.photometric, first_frame) if stored in J2K_FAMILY else None
            if override is not None and _PHOTOMETRIC in elements:
                vr = elements[_PHOTOMETRIC][0]
                data = _value(_PHOTOMETRIC, vr, override, text)
                elements[_PHOTOMETRIC] = (vr, _header(_PHOTOMETRIC, vr, len(data)) + data)
            elif override is not None:
                raise Unsupported("Photometric Interpretation set on a data set without one")
    except (ValueError, TypeError, OverflowError, struct.error) as exc:  # pydicom's path names it
        raise Unsupported(str(exc)) from exc
    before = {t: e for t, e in elements.items() if t < _PIXEL_DATA}
    after = {t: e for t, e in elements.items() if t > _PIXEL_DATA}
    return Layout(
        head=PREAMBLE + meta + _joined(before),
        tail=_joined(after),
        native_vr=native_vr,
        j2k=stored in J2K_FAMILY,
        bits_allocated=bits,
    )


def _photometric(stored: str, photometric: str, first_frame: Callable[[], bytes]) -> str | None:
    """Photometric Interpretation of JPEG 2000 family frames as part10's ``_stored_pixels`` sets it."""
    if photometric == "RGB" and uses_mct(codestream(first_frame())):
        return "YBR_RCT" if stored in LOSSLESS else "YBR_ICT"
    if photometric == "YBR_FULL_422":
        return "YBR_FULL"
    return None


def write(view: InstanceView, frames: Callable[[str], bytes], target: str) -> bytes:
    """The Part 10 file of ``view`` in its stored syntax ``target``. Raises Unsupported, and what
    ``frames`` raises."""
    data: dict[str, bytes] = {}

    def frame(frame_id: str) -> bytes:
        if frame_id not in data:
            data[frame_id] = frames(frame_id)
        return data[frame_id]

    shape = layout(view, target, lambda: frame(view.frame_ids[0]))
    pixels = shape.pixel_data([frame(f) for f in view.frame_ids]) if view.frame_ids else []
    return b"".join((shape.head, *pixels, shape.tail))
