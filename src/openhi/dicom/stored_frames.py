"""Stored frames of an instance turned back into pixels: decoders per stored transfer syntax, the image format."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from openhi.codec import transfer_syntax as tsx
from openhi.codec.j2k import decode_j2k
from openhi.codec.jph import is_jp2_family, unwrap
from openhi.dicom.frames import PixelInfo

#: JPEG 2000 family syntaxes: decoded with openhi's own codec (OpenJPH / OpenJPEG through imagecodecs).
J2K_FAMILY = frozenset(
    {
        tsx.J2K_LOSSLESS,
        tsx.J2K,
        tsx.J2K_PART2_LOSSLESS,
        tsx.J2K_PART2,
        tsx.HTJ2K_LOSSLESS,
        tsx.HTJ2K_RPCL,
        tsx.HTJ2K,
    }
)
#: Stored syntaxes whose frames are a lossless encoding of the pixels the import verified.
LOSSLESS = frozenset(
    {
        tsx.EXPLICIT_VR_LE,
        tsx.J2K_LOSSLESS,
        tsx.HTJ2K_LOSSLESS,
        tsx.HTJ2K_RPCL,
        tsx.JPEG_LOSSLESS,
        tsx.JPEG_LOSSLESS_SV1,
        tsx.JPEG_LS_LOSSLESS,
        tsx.RLE_LOSSLESS,
    }
)


class TranscodeUnavailable(Exception):
    """The instance cannot be given in the requested transfer syntax (WADO-RS answers 406)."""

    def __init__(self, requested: str, stored: str, reason: str) -> None:
        super().__init__(
            f"Cannot provide transfer syntax {requested} from frames stored as {stored}: {reason}"
        )
        self.requested = requested
        self.stored = stored
        self.reason = reason


def _int(value: Any, default: int) -> int:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or value == "":
        return default
    return int(str(value).strip())


def image_format(attributes: dict[str, Any]) -> PixelInfo:
    """The Image Pixel module of an instance, as the document holds it (raises ``ValueError`` when a
    value is missing or bad)."""
    allocated = _int(attributes.get("BitsAllocated"), 0)
    rows, columns = _int(attributes.get("Rows"), 0), _int(attributes.get("Columns"), 0)
    if allocated <= 0 or rows <= 0 or columns <= 0:
        raise ValueError("Rows, Columns and Bits Allocated must be present and positive")
    return PixelInfo(
        rows=rows,
        columns=columns,
        samples=_int(attributes.get("SamplesPerPixel"), 1),
        bits_allocated=allocated,
        bits_stored=_int(attributes.get("BitsStored"), allocated),
        signed=_int(attributes.get("PixelRepresentation"), 0) == 1,
        photometric=str(attributes.get("PhotometricInterpretation") or ""),
        planar=_int(attributes.get("PlanarConfiguration"), 0),
        frames=_int(attributes.get("NumberOfFrames"), 1),
    )


def codestream(data: bytes) -> bytes:
    """A JPEG 2000 family frame as a bare codestream (a JPH/JP2 file, as GetImageFrame gives it, unwrapped)."""
    return unwrap(data) if is_jp2_family(data) else data


def uses_mct(data: bytes) -> bool:
    """Whether a JPEG 2000 codestream applies a multiple component transform (COD SGcod byte 4)."""
    stream = codestream(data)
    pos = 2
    while pos + 4 <= len(stream) and stream[pos] == 0xFF:
        marker = stream[pos + 1]
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        if marker == 0x52:  # COD
            return pos + 8 < len(stream) and stream[pos + 8] == 1
        if marker == 0x90:  # SOT: the main header is over
            return False
        pos += 2 + length
    return False


def _pydicom_decode(data: bytes, stored_ts: str, fmt: PixelInfo) -> tuple[np.ndarray, str]:
    """Decode one encapsulated frame with pydicom's decoders, YBR colour converted to RGB."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(stored_ts)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = fmt.rows, fmt.columns, fmt.samples
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = fmt.bits_allocated, fmt.bits_stored, fmt.bits_stored - 1
    ds.PixelRepresentation = int(fmt.signed)
    ds.PhotometricInterpretation = fmt.photometric
    if fmt.samples > 1:
        ds.PlanarConfiguration = fmt.planar
    ds.NumberOfFrames = 1
    ds.PixelData = encapsulate([data])
    decoder = get_decoder(stored_ts)
    arr, meta = decoder.as_array(ds, index=0)  # raw=False: YBR becomes RGB
    return arr, str(meta.get("photometric_interpretation") or fmt.photometric)


def decode_frame(data: bytes, stored_ts: str, fmt: PixelInfo) -> tuple[np.ndarray, str]:
    """One stored frame as rows × cols [× samples] pixels, and the Photometric Interpretation they have.

    JPEG 2000 family: YBR_RCT/YBR_ICT become RGB (the decoder undoes the component transform);
    YBR_FULL_422 becomes YBR_FULL (the import stored full-resolution YBR). JPEG and other
    pydicom-decoded syntaxes: YBR colour is converted to RGB. Raises :class:`TranscodeUnavailable`.
    """
    photometric = fmt.photometric
    try:
        if stored_ts in J2K_FAMILY:
            arr = decode_j2k(data)
            if photometric in ("YBR_RCT", "YBR_ICT"):
                photometric = "RGB"
            elif photometric == "YBR_FULL_422":
                photometric = "YBR_FULL"
        elif stored_ts in tsx.NATIVE:
            arr = _native(data, stored_ts, fmt)
        elif stored_ts in tsx.VIDEO or stored_ts in (
            tsx.JPEG_XL,
            tsx.JPEG_XL_LOSSLESS,
            tsx.JPEG_XL_JPEG_RECOMPRESSION,
        ):
            raise TranscodeUnavailable(tsx.EXPLICIT_VR_LE, stored_ts, "frames in this syntax are not decoded")
        else:
            arr, photometric = _pydicom_decode(data, stored_ts, fmt)
    except TranscodeUnavailable:
        raise
    except NotImplementedError as exc:
        raise TranscodeUnavailable(tsx.EXPLICIT_VR_LE, stored_ts, f"no decoder: {exc}") from exc
    except (ValueError, RuntimeError, KeyError, EOFError, AttributeError, TypeError) as exc:
        raise TranscodeUnavailable(
            tsx.EXPLICIT_VR_LE, stored_ts, f"a frame cannot be decoded: {exc}"
        ) from exc
    expected = (fmt.rows, fmt.columns) if fmt.samples == 1 else (fmt.rows, fmt.columns, fmt.samples)
    if arr.ndim == 3 and arr.shape[2] == 1 and fmt.samples == 1:
        arr = arr[:, :, 0]
    if arr.shape != expected:
        raise TranscodeUnavailable(
            tsx.EXPLICIT_VR_LE, stored_ts, f"a frame decodes to shape {arr.shape}, expected {expected}"
        )
    return arr, photometric


def _native(data: bytes, stored_ts: str, fmt: PixelInfo) -> np.ndarray:
    if stored_ts != tsx.EXPLICIT_VR_LE:
        raise ValueError(f"native frames are stored little endian, not as {stored_ts}")
    if fmt.bits_allocated == 1:
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        return bits[: fmt.rows * fmt.columns].reshape(fmt.rows, fmt.columns)
    count = fmt.rows * fmt.columns * fmt.samples
    arr = np.frombuffer(data, dtype=fmt.dtype, count=count)
    return arr.reshape((fmt.rows, fmt.columns) if fmt.samples == 1 else (fmt.rows, fmt.columns, fmt.samples))


def native_bytes(arr: np.ndarray, fmt: PixelInfo) -> bytes:
    """One decoded frame as native little-endian Pixel Data bytes (colour-by-pixel)."""
    if fmt.bits_allocated == 1:
        return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
    return np.ascontiguousarray(arr).astype(fmt.dtype, copy=False).tobytes()
