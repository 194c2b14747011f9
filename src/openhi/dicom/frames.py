"""Split a dataset's Pixel Data into frames: raw encapsulated/bit-packed bytes, or decoded pixel arrays."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pack_bits

PIXEL_DATA = 0x7FE00010
#: Little-endian native syntaxes whose Pixel Data bytes can be viewed as pixels without pydicom.
_NATIVE_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
#: Image Pixel module elements pydicom requires before it decodes native data (all must be present).
_REQUIRED_PIXEL_TAGS = (0x00280002, 0x00280004, 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280103)
_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
ROWS, COLUMNS, SAMPLES, PLANAR = 0x00280010, 0x00280011, 0x00280002, 0x00280006
BITS_ALLOCATED, BITS_STORED, PIXEL_REPRESENTATION = 0x00280100, 0x00280101, 0x00280103
_US_LE = struct.Struct("<H")
_US_VRS = frozenset({"US", None})  # None: implicit VR, where these tags' dictionary VR is US
_PIXEL_VRS = frozenset({"OB", "OW", None})


def us_value(ds: Dataset, tag: int, keyword: str, *, required: bool = False) -> Any:
    """``ds.<keyword>`` (``required``) or ``ds.get(keyword)`` for a US element of the Image Pixel module.

    A single little-endian value still in raw form is unpacked straight from its two bytes: the
    same int pydicom's conversion gives, without its ~15 µs per element. Anything else (absent,
    already converted, other VR or length, big endian) is pydicom's own answer.
    """
    raw = _raw_little_endian(ds, tag, _US_VRS)
    if raw is not None and len(raw) == 2:
        return _US_LE.unpack(raw)[0]
    return getattr(ds, keyword) if required else ds.get(keyword)


def _raw_little_endian(ds: Dataset, tag: int, vrs: frozenset[str | None]) -> bytes | None:
    """The element's bytes when pydicom has not converted it yet and it is little endian with one of ``vrs``."""
    elem: DataElement | RawDataElement | None = ds.get_item(tag)
    if (
        type(elem) is RawDataElement
        and elem.VR in vrs
        and elem.is_little_endian
        and type(elem.value) is bytes
    ):
        return elem.value
    return None


def _pixel_bytes(ds: Dataset) -> Any:
    """``ds.PixelData``; raw little-endian OB/OW bytes as they are (pydicom's value, unconverted)."""
    raw = _raw_little_endian(ds, PIXEL_DATA, _PIXEL_VRS)
    return raw if raw is not None else ds.PixelData


class PixelDataError(ValueError):
    """The Pixel Data element is inconsistent with the Image Pixel module or cannot be decoded."""


@dataclass(frozen=True)
class PixelInfo:
    """The Image Pixel module values that describe one frame."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    planar: int
    frames: int

    @property
    def frame_pixels(self) -> int:
        return self.rows * self.columns * self.samples

    @property
    def frame_size(self) -> int:
        """Uncompressed frame size in bytes (1-bit data counts one byte per pixel once unpacked)."""
        return self.frame_pixels * max(1, (self.bits_allocated + 7) // 8)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Little-endian dtype of one native sample (8, 16, 32 or 64 bits)."""
        size = max(1, (self.bits_allocated + 7) // 8)
        return np.dtype(f"<{'i' if self.signed else 'u'}{size}")

    @property
    def native_frame_bytes(self) -> int:
        """Bytes of one frame of native Pixel Data (bit-packed frames: rounded up to whole bytes)."""
        if self.bits_allocated == 1:
            return (self.frame_pixels + 7) // 8
        return self.frame_pixels * self.dtype.itemsize


def pixel_info(ds: Dataset) -> PixelInfo:
    """Read the Image Pixel module; raise ``PixelDataError`` when a required value is missing/invalid."""
    try:
        frames = ds.get("NumberOfFrames") or 1
        allocated = us_value(ds, BITS_ALLOCATED, "BitsAllocated", required=True)
        info = PixelInfo(
            rows=int(us_value(ds, ROWS, "Rows", required=True)),
            columns=int(us_value(ds, COLUMNS, "Columns", required=True)),
            samples=int(us_value(ds, SAMPLES, "SamplesPerPixel") or 1),
            bits_allocated=int(allocated),
            bits_stored=int(us_value(ds, BITS_STORED, "BitsStored") or allocated),
            signed=int(us_value(ds, PIXEL_REPRESENTATION, "PixelRepresentation") or 0) == 1,
            photometric=str(ds.get("PhotometricInterpretation") or ""),
            planar=int(us_value(ds, PLANAR, "PlanarConfiguration") or 0),
            frames=int(frames),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise PixelDataError(f"Invalid Image Pixel module: {exc}") from exc
    if info.rows <= 0 or info.columns <= 0 or info.frames <= 0 or info.samples <= 0:
        raise PixelDataError("Rows, Columns, Samples per Pixel and Number of Frames must be positive")
    return info


def has_pixel_data(ds: Dataset) -> bool:
    """Whether the dataset carries a (non-empty) Pixel Data element."""
    return PIXEL_DATA in ds and ds.get_item(PIXEL_DATA).value not in (None, b"")


def encapsulated_frames(ds: Dataset, info: PixelInfo) -> list[bytes]:
    """Return each frame's encoded bytes (fragments joined) using the basic/extended offset table."""
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=info.frames, extended_offsets=extended))
    except (ValueError, KeyError, EOFError) as exc:
        raise PixelDataError(f"Encapsulated Pixel Data cannot be split into frames: {exc}") from exc
    if len(frames) != info.frames:
        raise PixelDataError(f"Found {len(frames)} encapsulated frames, expected {info.frames}")
    return frames


def native_frames(ds: Dataset, info: PixelInfo) -> list[bytes]:
    """Return each frame of native Pixel Data as stored (bit-packed frames repacked from bit 0)."""
    data = ds.PixelData
    if info.bits_allocated == 1:
        bits = info.frame_pixels
        if len(data) * 8 < bits * info.frames:
            raise PixelDataError("Pixel Data is shorter than Rows × Columns × Number of Frames bits")
        unpacked = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        return [pack_bits(unpacked[i * bits : (i + 1) * bits]) for i in range(info.frames)]
    size = info.frame_size
    if len(data) < size * info.frames:
        raise PixelDataError(f"Pixel Data is truncated ({len(data)} of {size * info.frames} bytes)")
    view = memoryview(data)
    return [bytes(view[i * size : (i + 1) * size]) for i in range(info.frames)]


def _native_monochrome(ds: Dataset, transfer_syntax: str) -> list[np.ndarray] | None:
    """Frames of little-endian native single-sample 8/16/32-bit data as views on the Pixel Data bytes.

    The common case (CT, MR, …) without pydicom's decoder machinery; the values are exactly what
    pydicom's native decoder yields (including its correction of unused high bits when Bits Stored <
    Bits Allocated). Returns ``None`` whenever anything is unusual (missing or out-of-range Image
    Pixel values, colour, bit-packed data, Pixel Data of unexpected length): pydicom decides then.
    """
    if transfer_syntax not in _NATIVE_LE or any(ds.get_item(tag) is None for tag in _REQUIRED_PIXEL_TAGS):
        return None
    try:
        samples = int(us_value(ds, SAMPLES, "SamplesPerPixel", required=True))
        photometric = str(ds.PhotometricInterpretation)
        rows = int(us_value(ds, ROWS, "Rows", required=True))
        cols = int(us_value(ds, COLUMNS, "Columns", required=True))
        allocated = int(us_value(ds, BITS_ALLOCATED, "BitsAllocated", required=True))
        stored = int(us_value(ds, BITS_STORED, "BitsStored", required=True))
        signed = int(us_value(ds, PIXEL_REPRESENTATION, "PixelRepresentation", required=True))
        frames = int(ds.get("NumberOfFrames") or 1)
        data = _pixel_bytes(ds)
    except (AttributeError, TypeError, ValueError):
        return None
    if (
        samples != 1
        or photometric not in _MONOCHROME
        or allocated not in (8, 16, 32)
        or not 1 <= stored <= allocated
        or signed not in (0, 1)
        or not (0 < rows < 65536 and 0 < cols < 65536 and frames >= 1)
        or not isinstance(data, bytes)
    ):
        return None
    frame_bytes = rows * cols * (allocated // 8)
    expected = frame_bytes * frames
    if len(data) not in (expected, expected + expected % 2):
        return None  # pydicom pads, trims or finds excess frames: let it
    dtype = np.dtype(f"<{'ui'[signed]}{allocated // 8}")
    pixels = np.frombuffer(data, dtype=dtype, count=rows * cols * frames).reshape(frames, rows, cols)
    if stored < allocated:  # pydicom's correct_unused_bits: shift the unused high bits out
        shift = allocated - stored
        pixels = pixels.copy()
        np.left_shift(pixels, shift, out=pixels)
        np.right_shift(pixels, shift, out=pixels)
    if not pixels.dtype.isnative:  # pragma: no cover - big-endian hosts
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return list(pixels)


def decoded_frames(ds: Dataset, transfer_syntax: str) -> Iterator[np.ndarray]:
    """Yield each frame decoded by pydicom: rows × cols [× samples], interleaved, native byte order.

    Colour spaces are left as stored (``raw=True``: YBR_FULL is not converted to RGB); JPEG 2000
    decoders undo their own RCT/ICT, and native YBR_FULL_422 is upsampled to full resolution.
    Little-endian native monochrome data is viewed directly (same values, no decoder set-up).
    """
    fast = _native_monochrome(ds, transfer_syntax)
    if fast is not None:
        yield from fast
        return
    try:
        decoder = get_decoder(transfer_syntax)
        for arr, _ in decoder.iter_array(ds, raw=True, view_only=True):
            if not arr.dtype.isnative:
                arr = arr.astype(arr.dtype.newbyteorder("="))
            yield arr
    except NotImplementedError as exc:
        raise PixelDataError(f"No decoder available for transfer syntax {transfer_syntax}: {exc}") from exc
    except (ValueError, RuntimeError, AttributeError, KeyError, EOFError) as exc:
        raise PixelDataError(f"Pixel Data cannot be decoded: {exc}") from exc
