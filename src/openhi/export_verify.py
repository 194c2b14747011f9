"""Whether an exported file is complete and is the instance expected: what lets ``openhi export`` resume."""

from __future__ import annotations

import struct

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
_MEDIA_SOP, _SYNTAX = 0x00020003, 0x00020010
_SOP, _STUDY, _SERIES = 0x00080018, 0x0020000D, 0x0020000E


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


def _dataset(
    buf: bytes, pos: int, end: int, explicit: bool, in_item: bool, keep: dict[int, bytes] | None = None
) -> int:
    """Walk a data set from ``pos`` to ``end`` (or to its item delimiter); the position after it.
    The values of the tags in ``keep`` (keys) are put in it."""
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
            if keep is not None and tag in keep:
                keep[tag] = buf[pos : pos + length]
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


def _uid(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii", "replace")


def file_meta(data: bytes | memoryview) -> tuple[str, str] | None:
    """(Media Storage SOP Instance UID, Transfer Syntax UID) of a Part 10 file's File Meta group, or
    None when ``data`` does not start with a readable one."""
    if len(data) < 144 or data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        return None
    head = bytes(data[: min(len(data), 144 + struct.unpack_from("<I", data, 140)[0])])
    meta: dict[int, bytes] = {_MEDIA_SOP: b"", _SYNTAX: b""}
    try:
        _dataset(head, 132, len(head), True, in_item=False, keep=meta)
    except (Truncated, struct.error):
        return None
    return _uid(meta[_MEDIA_SOP]), _uid(meta[_SYNTAX])


def problem(data: bytes, item: Item, syntax: str) -> str | None:
    """Why ``data`` is not a complete export of ``item`` in transfer syntax ``syntax`` (None: it is).

    Verified means: a Part 10 file (preamble, ``DICM``, file meta group with its length) in that
    syntax whose Media Storage SOP Instance UID and SOP Instance UID are the item's, whose Study and
    Series Instance UIDs are the item's, and whose every element (sequences and Pixel Data fragments
    included) ends inside the file, the last one exactly at its end. Deflated and big endian files
    are never verified (they are exported again).
    """
    if len(data) < 144 or data[128:132] != b"DICM":
        return "not a DICOM Part 10 file"
    if data[132:138] != b"\x02\x00\x00\x00UL":
        return "the file meta group does not start with its length"
    start = 144 + struct.unpack_from("<I", data, 140)[0]  # after the File Meta group
    meta: dict[int, bytes] = {_MEDIA_SOP: b"", _SYNTAX: b""}
    try:
        _dataset(data, 132, start, True, in_item=False, keep=meta)
    except (Truncated, struct.error) as exc:
        return f"unreadable file meta: {exc}"
    found = _uid(meta[_SYNTAX])
    if found != syntax:
        return f"transfer syntax {found or 'missing'}, not {syntax}"
    if syntax in _NOT_WALKED:
        return f"a file in {syntax} is not verified"
    tags: dict[int, bytes] = {_SOP: b"", _STUDY: b"", _SERIES: b""}
    try:
        _dataset(data, start, len(data), syntax != IMPLICIT_LE, in_item=False, keep=tags)
    except (Truncated, struct.error) as exc:
        return f"incomplete: {exc}"
    expected = (
        ("Media Storage SOP Instance UID", meta[_MEDIA_SOP], item.sop_uid),
        ("SOP Instance UID", tags[_SOP], item.sop_uid),
        ("Study Instance UID", tags[_STUDY], item.study_uid),
        ("Series Instance UID", tags[_SERIES], item.series_uid),
    )
    for what, value, want in expected:
        if _uid(value) != want:
            return f"{what} {_uid(value)[:70]!r} is not {want}"
    return None
