"""Whether an exported file is complete and is the instance expected: what lets ``openhi export`` resume."""

from __future__ import annotations

import struct
from io import BytesIO

from openhi.export_plan import Item

#: transfer syntaxes whose data set the walker reads (explicit / implicit VR little endian encodings)
IMPLICIT_LE = "1.2.840.10008.1.2"
_NOT_WALKED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"})  # deflated, big endian
#: explicit VR with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1)
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class Truncated(ValueError):
    """The bytes end inside an element, or an element's length runs past its container."""


def _header(buf: bytes, pos: int, explicit: bool) -> tuple[int, bytes, int, int]:
    """(tag, VR (b"" when implicit), value length, header size) of the element at ``pos``."""
    if pos + 8 > len(buf):
        raise Truncated(f"the data ends inside an element header at byte {pos}")
    group, elem = struct.unpack_from("<HH", buf, pos)
    tag = group << 16 | elem
    if group == 0xFFFE or not explicit:
        return tag, b"", struct.unpack_from("<I", buf, pos + 4)[0], 8
    vr = buf[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise Truncated(f"the data ends inside an element header at byte {pos}")
        return tag, vr, struct.unpack_from("<I", buf, pos + 8)[0], 12
    return tag, vr, struct.unpack_from("<H", buf, pos + 6)[0], 8


def _dataset(buf: bytes, pos: int, end: int, explicit: bool, in_item: bool) -> int:
    """Walk a data set from ``pos`` to ``end`` (or to its item delimiter); the position after it."""
    while pos < end:
        tag, vr, length, size = _header(buf, pos, explicit)
        pos += size
        if tag == _ITEM_END and in_item:
            return pos
        if length == _UNDEFINED:
            if tag == 0x7FE00010:
                pos = _items(buf, pos, end, explicit, fragments=True)
            elif vr in (b"SQ", b"UN", b""):
                pos = _items(buf, pos, end, explicit, fragments=False)
            else:
                raise Truncated(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) has an undefined length")
        elif vr == b"SQ":
            if pos + length > end:
                raise Truncated(f"sequence ({tag >> 16:04X},{tag & 0xFFFF:04X}) runs past the data")
            _items(buf, pos, pos + length, explicit, fragments=False, defined=True)
            pos += length
        else:
            pos += length
        if pos > end:
            raise Truncated(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) runs past the end of the data")
    if in_item:
        raise Truncated("an item has no delimiter")
    return pos


def _items(buf: bytes, pos: int, end: int, explicit: bool, *, fragments: bool, defined: bool = False) -> int:
    """Walk sequence items or Pixel Data fragments up to the delimiter (or ``end`` when ``defined``)."""
    while pos < end:
        tag, _, length, size = _header(buf, pos, False)
        pos += size
        if tag == _SEQ_END and not defined:
            return pos
        if tag != _ITEM:
            raise Truncated(f"expected an item at byte {pos - size}")
        if length == _UNDEFINED and not fragments:
            pos = _dataset(buf, pos, end, explicit, in_item=True)
            continue
        if length == _UNDEFINED or pos + length > end:
            raise Truncated("an item runs past the end of the data")
        if not fragments:
            _dataset(buf, pos, pos + length, explicit, in_item=False)
        pos += length
    if defined and pos == end:
        return pos
    raise Truncated("a sequence or Pixel Data has no delimiter")


def problem(data: bytes, item: Item, syntax: str) -> str | None:
    """Why ``data`` is not a complete export of ``item`` in transfer syntax ``syntax`` (None: it is).

    Verified means: a Part 10 file (preamble, ``DICM``, file meta) in that syntax whose Media Storage
    SOP Instance UID and SOP Instance UID are the item's, whose Study and Series Instance UIDs are the
    item's, and whose every element (sequences and Pixel Data fragments included) ends inside the
    file, the last one exactly at its end. Deflated and big endian files are never verified.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if len(data) < 144 or data[128:132] != b"DICM":
        return "not a DICOM Part 10 file"
    try:
        ds = pydicom.dcmread(
            BytesIO(data),
            stop_before_pixels=True,
            specific_tags=["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"],
        )
    except (InvalidDicomError, ValueError, EOFError, OSError, struct.error, KeyError) as exc:
        return f"unreadable: {exc}"
    meta = ds.file_meta
    found = str(meta.get("TransferSyntaxUID", ""))
    if found != syntax:
        return f"transfer syntax {found or 'missing'}, not {syntax}"
    if syntax in _NOT_WALKED:
        return f"a file in {syntax} is not verified"
    for what, value in (
        ("Media Storage SOP Instance UID", meta.get("MediaStorageSOPInstanceUID")),
        ("SOP Instance UID", ds.get("SOPInstanceUID")),
        ("Study Instance UID", ds.get("StudyInstanceUID")),
        ("Series Instance UID", ds.get("SeriesInstanceUID")),
    ):
        expected = {
            "Study Instance UID": item.study_uid,
            "Series Instance UID": item.series_uid,
        }.get(what, item.sop_uid)
        if str(value or "") != expected:
            return f"{what} {str(value or '')[:70]!r} is not {expected}"
    if data[132:138] != b"\x02\x00\x00\x00UL":
        return "the file meta group does not start with its length"
    start = 144 + struct.unpack_from("<I", data, 140)[0]  # after the File Meta group
    try:
        _dataset(data, start, len(data), syntax != IMPLICIT_LE, in_item=False)
    except (Truncated, struct.error) as exc:
        return f"incomplete: {exc}"
    return None
