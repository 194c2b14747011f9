"""JPH file format (ISO/IEC 15444-15 Annex D) wrapping and unwrapping of HTJ2K codestreams."""

from __future__ import annotations

import struct
from dataclasses import dataclass

SIGNATURE_BOX = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
SOC_SIZ = b"\xff\x4f\xff\x51"

_GREYSCALE = 17
_SRGB = 16
_YCC = 18


@dataclass(frozen=True)
class SizInfo:
    """Image geometry from a codestream's SIZ marker segment."""

    width: int
    height: int
    components: int
    bit_depths: tuple[int, ...]  # Ssiz per component: bit 7 = signed, bits 0-6 = precision - 1


def parse_siz(codestream: bytes) -> SizInfo:
    """Parse the SIZ marker segment that must directly follow SOC in a JPEG 2000 codestream."""
    if codestream[:4] != SOC_SIZ:
        raise ValueError("Not a JPEG 2000 codestream (SOC/SIZ markers missing)")
    (lsiz,) = struct.unpack_from(">H", codestream, 4)
    if len(codestream) < 4 + lsiz or lsiz < 41:
        raise ValueError("Truncated SIZ marker segment")
    xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", codestream, 8)
    (csiz,) = struct.unpack_from(">H", codestream, 40)
    if lsiz != 38 + 3 * csiz:
        raise ValueError("Inconsistent SIZ marker segment length")
    depths = tuple(codestream[42 + 3 * i] for i in range(csiz))
    return SizInfo(width=xsiz - xo, height=ysiz - yo, components=csiz, bit_depths=depths)


def _box(box_type: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + box_type + payload


def wrap_jph(codestream: bytes, *, colourspace: int | None = None) -> bytes:
    """Wrap a bare HTJ2K codestream in a JPH file: signature, ``ftyp``, ``jp2h`` (``ihdr``+``colr``), ``jp2c``.

    ``colourspace`` is the enumerated colour space of the ``colr`` box; by default 17 (greyscale)
    for one component and 16 (sRGB) otherwise.
    """
    siz = parse_siz(codestream)
    depths = set(siz.bit_depths)
    bpc = siz.bit_depths[0] if len(depths) == 1 else 0xFF
    # ihdr: HEIGHT, WIDTH, NC, BPC, C (7 = JPEG 2000), UnkC (0 = colour space known), IPR (0)
    ihdr = _box(b"ihdr", struct.pack(">IIHBBBB", siz.height, siz.width, siz.components, bpc, 7, 0, 0))
    if colourspace is None:
        colourspace = _GREYSCALE if siz.components < 3 else _SRGB
    # colr: METH 1 (enumerated), PREC 0, APPROX 0, EnumCS
    colr = _box(b"colr", struct.pack(">BBBI", 1, 0, 0, colourspace))
    # components of differing depth (BPC = 0xFF) list their depths in a bpcc box
    bpcc = _box(b"bpcc", bytes(siz.bit_depths)) if bpc == 0xFF else b""
    ftyp = _box(b"ftyp", b"jph " + struct.pack(">I", 0) + b"jph ")
    return b"".join((SIGNATURE_BOX, ftyp, _box(b"jp2h", ihdr + bpcc + colr), _box(b"jp2c", codestream)))


def _iter_boxes(data: bytes, start: int = 0) -> list[tuple[bytes, int, int]]:
    """Return ``(type, payload_start, payload_end)`` for each top-level box from ``start``."""
    boxes = []
    pos = start
    n = len(data)
    while pos + 8 <= n:
        (lbox,) = struct.unpack_from(">I", data, pos)
        tbox = data[pos + 4 : pos + 8]
        header = 8
        if lbox == 1:
            if pos + 16 > n:
                raise ValueError("Truncated JP2 box header")
            (lbox,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif lbox == 0:
            lbox = n - pos
        if lbox < header or pos + lbox > n:
            raise ValueError(f"Invalid JP2 box length for {tbox!r}")
        boxes.append((tbox, pos + header, pos + lbox))
        pos += lbox
    return boxes


def is_jp2_family(data: bytes) -> bool:
    """Whether ``data`` starts with the JPEG 2000 family signature box (JP2, JPH, JPX)."""
    return data[:12] == SIGNATURE_BOX


def unwrap(data: bytes) -> bytes:
    """Return the bare codestream of a JPH/JP2 file, or ``data`` itself if it already is a codestream."""
    if not is_jp2_family(data):
        if data[:2] == b"\xff\x4f":
            return data
        raise ValueError("Neither a JPEG 2000 codestream nor a JP2/JPH file")
    for tbox, begin, end in _iter_boxes(data):
        if tbox == b"jp2c":
            return data[begin:end]
    raise ValueError("JP2/JPH file without a contiguous codestream (jp2c) box")
