"""JPH file wrapping (ISO/IEC 15444-15 Annex D), checked with OpenJPEG in JP2-box mode."""

from __future__ import annotations

import struct
from io import BytesIO

import imagecodecs
import numpy as np
import pytest
from openjpeg.utils import decode as openjpeg_decode

from openhi.codec.j2k import decode_j2k, encode_htj2k_rpcl
from openhi.codec.jph import parse_siz, unwrap, wrap_jph


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + length]))
        pos += length
    return out


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((70, 90), "int16"), ((64, 64), "uint8"), ((30, 20, 3), "uint8"), ((100, 80), "uint16")],
)
def test_jph_structure_and_openjpeg_jp2_mode(shape: tuple[int, ...], dtype: str) -> None:
    info = np.iinfo(dtype)
    pixels = np.random.default_rng(3).integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    codestream = encode_htj2k_rpcl(pixels)
    jph = wrap_jph(codestream)
    boxes = _boxes(jph)
    assert [b[0] for b in boxes] == [b"jP  ", b"ftyp", b"jp2h", b"jp2c"]
    assert boxes[0][1] == b"\r\n\x87\n"
    assert boxes[1][1][:4] == b"jph " and b"jph " in boxes[1][1][8:]
    header = _boxes(boxes[2][1])
    assert [b[0] for b in header] == [b"ihdr", b"colr"]
    height, width, nc, bpc, c, unk, ipr = struct.unpack(">IIHBBBB", header[0][1])
    assert (height, width, nc) == (shape[0], shape[1], 1 if len(shape) == 2 else shape[2])
    assert bpc == (0x80 if dtype.startswith("int") else 0) | (pixels.dtype.itemsize * 8 - 1)
    assert (c, unk, ipr) == (7, 0, 0)
    meth, _, _, enum_cs = struct.unpack(">BBBI", header[1][1])
    assert meth == 1 and enum_cs == (17 if nc == 1 else 16)
    assert boxes[3][1] == codestream
    # AWS's own Python example: OpenJPEG forced to JP2-box mode (format 2) — accepts brand 'jph '
    assert np.array_equal(openjpeg_decode(BytesIO(jph), 2), pixels)
    assert np.array_equal(imagecodecs.jpeg2k_decode(jph), pixels)
    assert np.array_equal(decode_j2k(jph), pixels)
    assert unwrap(jph) == codestream
    assert unwrap(codestream) == codestream


def test_parse_siz_and_errors() -> None:
    codestream = encode_htj2k_rpcl(np.zeros((12, 34), dtype=np.int16))
    siz = parse_siz(codestream)
    assert (siz.width, siz.height, siz.components, siz.bit_depths) == (34, 12, 1, (0x8F,))
    with pytest.raises(ValueError):
        parse_siz(b"\x00" * 50)
    with pytest.raises(ValueError):
        unwrap(b"not a codestream")
