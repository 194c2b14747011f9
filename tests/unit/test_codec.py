"""HTJ2K RPCL / JPEG 2000 lossless codecs and the transfer-syntax tables, checked with OpenJPEG."""

from __future__ import annotations

import numpy as np
import openjpeg
import pytest

from openhi.codec import transfer_syntax as tsx
from openhi.codec.j2k import (
    CodestreamInfo,
    decode_j2k,
    decomposition_levels,
    encode_htj2k_rpcl,
    encode_j2k_lossless,
)


def independent_decode(codestream: bytes) -> np.ndarray:
    """OpenJPEG (pylibjpeg-openjpeg) decodes both HTJ2K and Part 1 codestreams."""
    return np.asarray(openjpeg.decode(codestream))


def _pixels(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max, shape, endpoint=True).astype(dtype)


CASES = [
    ((64, 64), "uint8"),
    ((33, 17), "int8"),
    ((300, 257), "int16"),
    ((128, 96), "uint16"),
    ((65, 64, 3), "uint8"),
    ((40, 50, 3), "uint16"),
    ((1, 1), "int16"),
    ((1000, 70), "uint16"),
]


@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_htj2k_rpcl_is_lossless_rpcl_with_tlm(shape: tuple[int, ...], dtype: str) -> None:
    pixels = _pixels(shape, dtype)
    stored = encode_htj2k_rpcl(pixels)
    assert stored[:2] == b"\xff\x4f"
    info = CodestreamInfo.parse(stored)
    assert info.progression_order == "RPCL"
    assert info.tlm and info.cap and info.reversible
    assert info.base_width <= 64 and info.base_height <= 64
    assert info.decompositions == max(1, decomposition_levels(shape[1], shape[0]))
    assert info.tile_parts == info.decompositions + 1  # one tile-part per resolution
    decoded = independent_decode(stored)
    assert decoded.dtype == pixels.dtype
    assert np.array_equal(decoded, pixels)
    assert np.array_equal(decode_j2k(stored), pixels)


@pytest.mark.parametrize(("shape", "dtype"), CASES)
def test_j2k_lossless_roundtrip(shape: tuple[int, ...], dtype: str) -> None:
    pixels = _pixels(shape, dtype, seed=1)
    stored = encode_j2k_lossless(pixels)
    info = CodestreamInfo.parse(stored)
    assert not info.cap and info.reversible  # (imagecodecs clamps levels for thin images)
    assert np.array_equal(independent_decode(stored), pixels)
    assert np.array_equal(decode_j2k(stored), pixels)


def test_big_endian_and_32bit_input() -> None:
    pixels = _pixels((20, 30), "int16")
    assert np.array_equal(decode_j2k(encode_htj2k_rpcl(pixels.astype(">i2"))), pixels)
    wide = _pixels((10, 10), "uint32")
    assert np.array_equal(decode_j2k(encode_htj2k_rpcl(wide)), wide)  # OpenJPH only; OpenJPEG caps at 31 bits


def test_rejects_unsupported_arrays() -> None:
    with pytest.raises(ValueError):
        encode_htj2k_rpcl(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        encode_htj2k_rpcl(np.zeros((4, 4, 4), dtype=np.uint8))


def test_decomposition_levels() -> None:
    assert decomposition_levels(64, 64) == 0
    assert decomposition_levels(65, 10) == 1
    assert decomposition_levels(512, 512) == 3
    assert decomposition_levels(640, 480) == 4
    assert decomposition_levels(4096, 100) == 6


@pytest.mark.parametrize(
    ("input_ts", "fmt", "expected"),
    [
        (tsx.IMPLICIT_VR_LE, "HTJ2K", tsx.HTJ2K_RPCL),
        (tsx.EXPLICIT_VR_LE, "HTJ2K", tsx.HTJ2K_RPCL),
        (tsx.EXPLICIT_VR_BE, "JPEG_2000_LOSSLESS", tsx.J2K_LOSSLESS),
        (tsx.DEFLATED_EXPLICIT_VR_LE, "HTJ2K", tsx.HTJ2K_RPCL),
        (tsx.RLE_LOSSLESS, "HTJ2K", tsx.HTJ2K_RPCL),
        (tsx.JPEG_LS_LOSSLESS, "HTJ2K", tsx.HTJ2K_RPCL),
        (tsx.JPEG_EXTENDED, "HTJ2K", tsx.HTJ2K_RPCL),
        (tsx.J2K_LOSSLESS, "HTJ2K", tsx.HTJ2K_RPCL),
        (tsx.J2K_LOSSLESS, "JPEG_2000_LOSSLESS", tsx.J2K_LOSSLESS),
        (tsx.JPEG_BASELINE, "HTJ2K", tsx.JPEG_BASELINE),
        (tsx.J2K, "JPEG_2000_LOSSLESS", tsx.J2K),
        (tsx.HTJ2K, "HTJ2K", tsx.HTJ2K),
        (tsx.JPEG_XL, "HTJ2K", tsx.JPEG_XL),
        ("1.2.840.10008.1.2.4.102", "HTJ2K", "1.2.840.10008.1.2.4.102"),
        ("1.2.840.10008.1.2.4.100.1", "HTJ2K", "1.2.840.10008.1.2.4.100.1"),
    ],
)
def test_stored_syntax(input_ts: str, fmt: str, expected: str) -> None:
    assert tsx.stored_syntax(input_ts, fmt) == expected


def test_stored_syntax_binary_segmentation_and_errors() -> None:
    assert tsx.stored_syntax(tsx.EXPLICIT_VR_LE, "HTJ2K", binary_segmentation=True) == tsx.EXPLICIT_VR_LE
    assert tsx.stored_syntax(tsx.IMPLICIT_VR_LE, "HTJ2K", binary_segmentation=True) == tsx.HTJ2K_RPCL
    with pytest.raises(ValueError):
        tsx.stored_syntax("1.2.3.4", "HTJ2K")
    with pytest.raises(ValueError):
        tsx.stored_syntax(tsx.EXPLICIT_VR_LE, "PNG")


def test_content_type() -> None:
    assert tsx.content_type(None) == "image/jph"
    assert tsx.content_type(tsx.HTJ2K_RPCL) == "image/jph"
    assert tsx.content_type(tsx.J2K_LOSSLESS) == "image/j2c"
    assert tsx.content_type(tsx.J2K) == "image/j2c"
    assert tsx.content_type(tsx.HTJ2K) == "image/jphc"
    assert tsx.content_type(tsx.JPEG_BASELINE) == "image/jpeg"
    assert tsx.content_type(tsx.JPEG_XL) == "image/jxl"
    assert tsx.content_type(tsx.EXPLICIT_VR_LE) == "application/octet-stream"
    assert tsx.content_type("1.2.840.10008.1.2.4.101") == "video/mpeg"
    assert tsx.content_type("1.2.840.10008.1.2.4.106.1") == "video/mp4"
    assert tsx.content_type("1.2.840.10008.1.2.4.107") == "video/H256"
    assert tsx.content_type("9.9") == "application/octet-stream"
