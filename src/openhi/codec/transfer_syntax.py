"""DICOM transfer syntax constants, the §7.4 stored-syntax decision and the §9 frame content types."""

from __future__ import annotations

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
J2K_PART2_LOSSLESS = "1.2.840.10008.1.2.4.92"
J2K_PART2 = "1.2.840.10008.1.2.4.93"
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"
JPEG_XL_JPEG_RECOMPRESSION = "1.2.840.10008.1.2.4.111"
JPEG_XL = "1.2.840.10008.1.2.4.112"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

MPEG2 = frozenset(
    {
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.100.1",
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.101.1",
    }
)
MPEG4 = frozenset(
    {f"1.2.840.10008.1.2.4.{n}" for n in range(102, 107)}
    | {f"1.2.840.10008.1.2.4.{n}.1" for n in range(102, 107)}
)
HEVC = frozenset({"1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"})
VIDEO = MPEG2 | MPEG4 | HEVC

#: Input syntaxes whose frames are stored in their original encoding (§7.4 ``*`` rows).
AS_IS = frozenset({JPEG_BASELINE, J2K, HTJ2K, JPEG_XL}) | VIDEO

#: Input syntaxes that are decoded and re-encoded losslessly into the datastore format.
TRANSCODED = frozenset(
    {
        IMPLICIT_VR_LE,
        EXPLICIT_VR_LE,
        DEFLATED_EXPLICIT_VR_LE,
        EXPLICIT_VR_BE,
        JPEG_EXTENDED,
        JPEG_LOSSLESS,
        JPEG_LOSSLESS_SV1,
        JPEG_LS_LOSSLESS,
        JPEG_LS_NEAR_LOSSLESS,
        J2K_LOSSLESS,
        J2K_PART2_LOSSLESS,
        HTJ2K_LOSSLESS,
        HTJ2K_RPCL,
        RLE_LOSSLESS,
    }
)

#: Native (uncompressed) syntaxes.
NATIVE = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE})

STORAGE_FORMATS = frozenset({"HTJ2K", "JPEG_2000_LOSSLESS"})

_CONTENT_TYPES = {
    EXPLICIT_VR_LE: "application/octet-stream",
    JPEG_BASELINE: "image/jpeg",
    J2K_LOSSLESS: "image/j2c",
    J2K: "image/j2c",
    HTJ2K_RPCL: "image/jph",
    HTJ2K: "image/jphc",
    JPEG_XL: "image/jxl",
}


def stored_syntax(input_ts: str, storage_format: str, *, binary_segmentation: bool = False) -> str:
    """Return the transfer syntax the frames of an instance in ``input_ts`` are stored in (§7.4).

    Raises ``ValueError`` for an unknown or unsupported input transfer syntax or storage format.
    """
    if storage_format not in STORAGE_FORMATS:
        raise ValueError(f"Unsupported storage format {storage_format!r}")
    if input_ts in AS_IS or (binary_segmentation and input_ts == EXPLICIT_VR_LE):
        return input_ts
    if input_ts not in TRANSCODED:
        raise ValueError(f"Unsupported transfer syntax {input_ts!r}")
    return J2K_LOSSLESS if storage_format == "JPEG_2000_LOSSLESS" else HTJ2K_RPCL


def content_type(stored_ts: str | None) -> str:
    """Return the GetImageFrame ``Content-Type`` for frames stored in ``stored_ts`` (§9)."""
    if stored_ts is None:
        return "image/jph"
    if stored_ts in MPEG2:
        return "video/mpeg"
    if stored_ts in MPEG4:
        return "video/mp4"
    if stored_ts in HEVC:
        return "video/H256"
    return _CONTENT_TYPES.get(stored_ts, "application/octet-stream")
