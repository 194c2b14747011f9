"""Strict reading of untrusted P10 files: bounded inflation, elements that fit, size limits on metadata."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

DEFLATED = "1.2.840.10008.1.2.1.99"
MB = 1024 * 1024
#: A deflated file may expand to at most this many bytes (the inflated dataset is held in memory).
MAX_INFLATED_BYTES = 1024 * MB
#: Binary values (OB, OD, OF, OL, OV, OW, UN) longer than this are not inlined in the metadata.
MAX_INLINE_BINARY_BYTES = 1 * MB
#: Any other element (text, numbers, attribute tags) may hold at most this many bytes.
MAX_ELEMENT_BYTES = 4 * MB
#: The metadata of one instance (its attributes at every level, as JSON) may be at most this large.
MAX_INSTANCE_METADATA_BYTES = 10 * MB

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


class UnfitFile(ValueError):
    """The file breaks a structural rule or a limit; the message names the element and the limit."""


def tag_text(tag: int) -> str:
    """``(0029,1010)``, with the keyword when the dictionary knows the tag."""
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if dictionary_has_tag(tag):
        from pydicom.datadict import keyword_for_tag

        keyword = keyword_for_tag(tag)
        if keyword:
            text += f" {keyword}"
    return text


def _meta_elements(data: bytes) -> Iterator[tuple[int, bytes, int]]:
    """``(tag, value, end offset)`` of each file meta element (explicit VR little endian, group 0002)."""
    offset = 132
    while offset + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, offset)
        if group != 0x0002:
            return
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            if offset + 12 > len(data):
                return
            (length,) = struct.unpack_from("<I", data, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", data, offset + 6)
            start = offset + 8
        end = start + length
        if length == UNDEFINED or end > len(data):
            raise UnfitFile(f"file meta element {tag_text(group << 16 | element)} does not fit in the file")
        yield group << 16 | element, data[start:end], end
        offset = end


def check_inflation(data: bytes, limit: int | None = None) -> None:
    """For a deflated file, inflate at most ``limit`` + 1 bytes: raise when it expands beyond ``limit``
    (default :data:`MAX_INFLATED_BYTES`).

    Other files (and files too malformed to find the transfer syntax in) pass: the parser judges them.
    """
    limit = MAX_INFLATED_BYTES if limit is None else limit
    if data[128:132] != b"DICM":
        return
    syntax, end = b"", 0
    for tag, value, end in _meta_elements(data):  # noqa: B007 - the last end is where the dataset starts
        if tag == 0x00020010:
            syntax = value
    if syntax.rstrip(b"\x00 ").decode("ascii", "replace") != DEFLATED:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size = 0
    pending = data[end:]
    try:
        while pending and size <= limit:
            size += len(inflater.decompress(pending, 1 * MB))
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as exc:
        raise UnfitFile(f"the deflated dataset cannot be inflated: {exc}") from None
    if size > limit:
        raise UnfitFile(f"the deflated dataset expands beyond the maximum of {limit} bytes")


def _vr_of(tag: int, raw: RawDataElement) -> str:
    if raw.VR:
        return str(raw.VR)
    if dictionary_has_tag(tag):
        return str(dictionary_VR(tag)).split(" or ")[0]
    return "UN"


def check_elements(
    ds: Dataset,
    *,
    max_element: int | None = None,
    max_inline_binary: int | None = None,
) -> list[int]:
    """Require every element of ``ds`` (sequence items too) to fit the file and the size limits.

    Returns the tags of binary elements over ``max_inline_binary`` bytes (default
    :data:`MAX_INLINE_BINARY_BYTES`), removed from ``ds``: they are not inlined in the metadata. Raises :class:`UnfitFile` naming the first element whose
    declared length runs past the end of the file (or of its sequence item), or a non-binary
    element longer than ``max_element`` bytes (default :data:`MAX_ELEMENT_BYTES`).
    """
    max_element = MAX_ELEMENT_BYTES if max_element is None else max_element
    max_inline_binary = MAX_INLINE_BINARY_BYTES if max_inline_binary is None else max_inline_binary
    dropped: list[int] = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _walk(meta, max_element, UNDEFINED, dropped, "")
    _walk(ds, max_element, max_inline_binary, dropped, "")
    return dropped


def _walk(ds: Dataset, max_element: int, max_binary: int, dropped: list[int], where: str) -> None:
    for base in list(ds.keys()):
        tag = int(base)
        item = ds.get_item(base)
        if isinstance(item, RawDataElement):
            value = item.value
            size = len(value) if isinstance(value, bytes) else 0
            declared = int(item.length)
            if declared != UNDEFINED and size < declared:
                raise UnfitFile(
                    f"element {tag_text(tag)}{where} declares {declared} bytes but only {size} follow it in the file"
                )
            vr = _vr_of(tag, item)
        else:
            vr = str(item.VR)
            size = len(item.value) if isinstance(item.value, bytes | str) else 0
        if tag in PIXEL_TAGS:
            continue
        if vr == "SQ":
            sequence = ds[base].value  # pydicom parses the items (their elements stay raw)
            for number, child in enumerate(sequence or [], start=1):
                _walk(child, max_element, max_binary, dropped, f"{where} in item {number} of {tag_text(tag)}")
            continue
        if vr in BINARY_VRS:
            if size > max_binary:
                del ds[base]
                dropped.append(tag)
        elif size > max_element:
            raise UnfitFile(
                f"element {tag_text(tag)}{where} holds {size} bytes, over the maximum of {max_element} bytes"
            )


def tags_text(tags: list[int]) -> str:
    return ", ".join(tag_text(Tag(t)) for t in tags)
