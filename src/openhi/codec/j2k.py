"""Lossless HTJ2K (RPCL + TLM) and JPEG 2000 encoding, decoding and codestream inspection via imagecodecs."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np

from openhi.codec.jph import is_jp2_family, unwrap

#: DICOM PS3.5 §10.18: the lowest resolution of an HTJ2K RPCL codestream is at most this wide/high.
BASE_RESOLUTION_MAX = 64

_SUPPORTED = frozenset("bBhHiI")  # int8, uint8, int16, uint16, int32, uint32
PROGRESSION_ORDERS = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")
#: libdeflate's CRC-32 (PCLMUL) is ~8x faster than zlib's on frame-sized buffers; same values.
_crc32: Callable[[Any], int] = (
    imagecodecs.deflate_crc32
    if getattr(imagecodecs, "DEFLATE", None) and imagecodecs.DEFLATE.available
    else zlib.crc32
)


def decomposition_levels(width: int, height: int) -> int:
    """Fewest wavelet decompositions that bring the base resolution to ≤ 64 × 64 pixels."""
    levels = 0
    while (max(width, height) + (1 << levels) - 1) >> levels > BASE_RESOLUTION_MAX:
        levels += 1
    return levels


def _check(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype.char not in _SUPPORTED or pixels.ndim not in (2, 3):
        raise ValueError(f"Cannot encode pixels of dtype {pixels.dtype} and shape {pixels.shape}")
    if pixels.ndim == 3 and pixels.shape[2] not in (1, 3):
        raise ValueError(f"Cannot encode {pixels.shape[2]} components per pixel")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return np.ascontiguousarray(pixels)


def encode_htj2k_rpcl(pixels: np.ndarray, *, mct: bool | None = None) -> bytes:
    """Encode a frame (rows × cols [× 3], interleaved) as a lossless HTJ2K RPCL codestream with TLM.

    Reversible 5/3 wavelet, RPCL progression (OpenJPH's default, verified in tests), one tile-part
    per resolution, a TLM marker, and enough decompositions for a base resolution ≤ 64 × 64.
    ``mct`` enables the reversible colour transform for 3 components (default: on).
    """
    pixels = _check(pixels)
    rows, cols = pixels.shape[:2]
    three = pixels.ndim == 3
    # imagecodecs treats resolutions=0 as "library default (5)": small images still get >= 1 level
    levels = max(1, decomposition_levels(cols, rows))
    data = imagecodecs.htj2k_encode(
        pixels,
        reversible=True,
        resolutions=levels,
        rgb=bool(three and (mct is None or mct)),
        planar=False,
        tlm=True,
        tilepart=1,  # HTJ2K.TILEPART.RESOLUTIONS: one tile-part per resolution level
    )
    return bytes(data)


def encode_j2k_lossless(pixels: np.ndarray, *, mct: bool | None = None) -> bytes:
    """Encode a frame as a lossless (reversible 5/3) JPEG 2000 Part 1 codestream (J2K format)."""
    pixels = _check(pixels)
    rows, cols = pixels.shape[:2]
    levels = decomposition_levels(cols, rows)
    three = pixels.ndim == 3
    data = imagecodecs.jpeg2k_encode(
        pixels,
        codecformat="J2K",
        reversible=True,
        resolutions=levels + 1,
        mct=bool(three and (mct is None or mct)),
        planar=False,
    )
    return bytes(data)


def is_htj2k(codestream: bytes) -> bool:
    """Whether a bare codestream uses HT block coding (a CAP marker announcing Part 15)."""
    return CodestreamInfo.parse(codestream).cap


def decode_htj2k(codestream: bytes) -> np.ndarray:
    """Decode a bare HTJ2K codestream (one this module encoded: no header inspection needed)."""
    return imagecodecs.htj2k_decode(codestream)


def decode_j2k_part1(codestream: bytes) -> np.ndarray:
    """Decode a bare JPEG 2000 Part 1 codestream (one this module encoded)."""
    return imagecodecs.jpeg2k_decode(codestream)


def crc32(data: np.ndarray | bytes) -> int:
    """CRC-32 (zlib's) of an array's bytes in C order or of a byte string; libdeflate when present."""
    return int(_crc32(data))


def decode_j2k(data: bytes) -> np.ndarray:
    """Decode an HTJ2K or JPEG 2000 codestream, or a JPH/JP2 file, to rows × cols [× components]."""
    codestream = unwrap(data) if is_jp2_family(data) else data
    if is_htj2k(codestream):
        return imagecodecs.htj2k_decode(codestream)
    return imagecodecs.jpeg2k_decode(codestream)


@dataclass(frozen=True)
class CodestreamInfo:
    """Main-header facts of a codestream: what DICOM HTJ2K RPCL (PS3.5 §10.18) requires."""

    width: int
    height: int
    components: int
    progression_order: str
    decompositions: int
    reversible: bool
    cap: bool  # CAP marker present (Part 15 / HTJ2K)
    tlm: bool  # TLM marker present
    tile_parts: int

    @property
    def base_width(self) -> int:
        return -(-self.width // (1 << self.decompositions))

    @property
    def base_height(self) -> int:
        return -(-self.height // (1 << self.decompositions))

    @classmethod
    def parse(cls, codestream: bytes) -> CodestreamInfo:
        """Walk the main header (and count SOT tile-parts) of a bare codestream."""
        if codestream[:2] != b"\xff\x4f":
            raise ValueError("Not a JPEG 2000 codestream (no SOC marker)")
        pos, n = 2, len(codestream)
        fields: dict[str, object] = {"cap": False, "tlm": False}
        tile_parts = 0
        while pos + 4 <= n:
            (marker, length) = struct.unpack_from(">HH", codestream, pos)
            if marker == 0xFF51:  # SIZ
                xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", codestream, pos + 6)
                (fields["components"],) = struct.unpack_from(">H", codestream, pos + 38)
                fields["width"], fields["height"] = xsiz - xo, ysiz - yo
            elif marker == 0xFF52:  # COD: Scod, SGcod(order, layers(2), mct), SPcod(levels, ..., transform)
                order = codestream[pos + 5]
                fields["progression_order"] = PROGRESSION_ORDERS[order] if order < 5 else str(order)
                fields["decompositions"] = codestream[pos + 9]
                fields["reversible"] = codestream[pos + 13] == 1
            elif marker == 0xFF50:
                fields["cap"] = True
            elif marker == 0xFF55:
                fields["tlm"] = True
            elif marker == 0xFF90:  # SOT: Psot gives the tile-part length from the SOT marker
                tile_parts += 1
                (psot,) = struct.unpack_from(">I", codestream, pos + 6)
                if psot == 0:
                    break
                pos += psot
                continue
            elif marker == 0xFFD9:
                break
            pos += 2 + length
        return cls(tile_parts=tile_parts, **fields)  # type: ignore[arg-type]
