"""Rebuild a DICOM Part 10 instance from a metadata document's instance and its stored frames."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import BinaryIO

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from openhi.codec import transfer_syntax as tsx
from openhi.codec.j2k import decode_j2k_part1, encode_j2k_lossless
from openhi.dicom import part10_writer
from openhi.dicom.document_dataset import DocumentValueError, build_dataset
from openhi.dicom.frames import PixelInfo
from openhi.dicom.instance_view import InstanceView
from openhi.dicom.part10_writer import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from openhi.dicom.stored_frames import (
    J2K_FAMILY,
    LOSSLESS,
    TranscodeUnavailable,
    codestream,
    decode_frame,
    image_format,
    native_bytes,
    uses_mct,
)

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "DocumentValueError",
    "TranscodeUnavailable",
    "available_syntaxes",
    "rebuild",
    "rebuild_dataset",
    "write_part10",
]

#: Group 0002 elements that describe the file written (not the instance): set by the writer.
_WRITER_META = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})
#: Elements that describe the original encapsulation of Pixel Data: dropped (or recomputed).
_ENCAPSULATION_TAGS = frozenset({0x7FE00001, 0x7FE00002, 0xFFFCFFFC})
_BOT_LIMIT = 2**32 - 1

Frames = Callable[[str], bytes]


def available_syntaxes(view: InstanceView) -> tuple[str, ...]:
    """The transfer syntaxes :func:`rebuild` can give this instance in; the stored one first.

    Explicit VR Little Endian is offered unless frames are stored in a syntax openhi does not
    decode (video, JPEG XL); JPEG 2000 lossless when the stored frames are lossless (not
    bit-packed). Whether a frame really decodes is only known when it is read.
    """
    stored = view.stored_transfer_syntax or tsx.EXPLICIT_VR_LE
    out = [stored]
    undecodable = stored in tsx.VIDEO or stored in (
        tsx.JPEG_XL,
        tsx.JPEG_XL_LOSSLESS,
        tsx.JPEG_XL_JPEG_RECOMPRESSION,
    )
    if tsx.EXPLICIT_VR_LE not in out and (not view.frame_ids or not undecodable):
        out.append(tsx.EXPLICIT_VR_LE)
    bit_packed = str(view.attributes.get("BitsAllocated")) == "1"
    if tsx.J2K_LOSSLESS not in out and (not view.frame_ids or (stored in LOSSLESS and not bit_packed)):
        out.append(tsx.J2K_LOSSLESS)
    return tuple(out)


def _file_meta(view: InstanceView, ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    kept = build_dataset(view.attributes, view.vrs, file_meta=True)
    for elem in kept:
        if int(elem.tag) not in _WRITER_META:
            meta.add(elem)
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(
        str(ds.get("SOPClassUID") or view.attributes.get("MediaStorageSOPClassUID"))
    )
    meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID") or view.sop_uid))
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _encapsulated(frames: list[bytes]) -> tuple[bytes, tuple[bytes, bytes] | None]:
    """Encapsulated Pixel Data, one fragment per frame: a Basic Offset Table, or (over 4 GiB) an Extended one."""
    if sum(len(f) + 8 + (len(f) & 1) for f in frames) <= _BOT_LIMIT:
        return encapsulate(frames, fragments_per_frame=1, has_bot=True), None
    data, offsets, lengths = encapsulate_extended(frames)
    return data, (offsets, lengths)


def _stored_pixels(ds: Dataset, stored: str, fmt: PixelInfo, frames: list[bytes]) -> None:
    if stored in tsx.NATIVE:
        ds.add(DataElement(0x7FE00010, "OW" if fmt.bits_allocated > 8 else "OB", _native_join(fmt, frames)))
        return
    if stored in J2K_FAMILY:
        frames = [codestream(f) for f in frames]
        if fmt.photometric == "RGB" and frames and uses_mct(frames[0]):
            ds.PhotometricInterpretation = "YBR_RCT" if stored in LOSSLESS else "YBR_ICT"
        elif fmt.photometric == "YBR_FULL_422":  # the import stored full-resolution YBR
            ds.PhotometricInterpretation = "YBR_FULL"
    _set_encapsulated(ds, frames)


def _set_encapsulated(ds: Dataset, frames: list[bytes]) -> None:
    data, extended = _encapsulated(frames)
    ds.add(DataElement(0x7FE00010, "OB", data))
    if extended is not None:
        ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = extended


def _native_join(fmt: PixelInfo, frames: list[bytes]) -> bytes:
    if fmt.bits_allocated == 1:  # each stored frame is packed from bit 0: repack them as one bit stream
        bits = fmt.rows * fmt.columns * fmt.samples
        unpacked = [np.unpackbits(np.frombuffer(f, np.uint8), bitorder="little")[:bits] for f in frames]
        data = np.packbits(np.concatenate(unpacked), bitorder="little").tobytes()
    else:
        data = b"".join(frames)
    return data + b"\x00" if len(data) % 2 else data


def _decoded(ds: Dataset, view: InstanceView, fmt: PixelInfo, frames: list[bytes], target: str) -> None:
    stored = view.stored_transfer_syntax or tsx.EXPLICIT_VR_LE
    arrays: list[np.ndarray] = []
    photometric = fmt.photometric
    for data in frames:
        try:
            arr, photometric = decode_frame(data, stored, fmt)
        except TranscodeUnavailable as exc:
            raise TranscodeUnavailable(target, stored, exc.reason) from None
        arrays.append(arr)
    if fmt.samples > 1:
        ds.PlanarConfiguration = 0
    if photometric != fmt.photometric:
        ds.PhotometricInterpretation = photometric
    if target == tsx.EXPLICIT_VR_LE:
        if fmt.bits_allocated == 1:
            data = _native_join(fmt, [native_bytes(a, fmt) for a in arrays])
        else:
            data = b"".join(native_bytes(a, fmt) for a in arrays)
            data += b"\x00" * (len(data) % 2)
        ds.add(DataElement(0x7FE00010, "OW" if fmt.bits_allocated > 8 else "OB", data))
        return
    mct = photometric == "RGB"
    encoded = [
        _j2k_lossless(a.astype(fmt.dtype.newbyteorder("="), copy=False), mct, target, stored) for a in arrays
    ]
    if mct and fmt.samples == 3:
        ds.PhotometricInterpretation = "YBR_RCT"
    _set_encapsulated(ds, encoded)


def _j2k_lossless(pixels: np.ndarray, mct: bool, target: str, stored: str) -> bytes:
    """A JPEG 2000 lossless codestream of one frame, decoded again and compared (OpenJPEG cannot
    encode every depth losslessly, e.g. 32-bit samples)."""
    try:
        encoded = encode_j2k_lossless(pixels, mct=mct)
        decoded = decode_j2k_part1(encoded)
    except (ValueError, RuntimeError) as exc:
        raise TranscodeUnavailable(target, stored, f"a frame cannot be encoded: {exc}") from exc
    if decoded.shape != pixels.shape or not np.array_equal(decoded, pixels):
        raise TranscodeUnavailable(target, stored, "JPEG 2000 cannot hold these samples losslessly")
    return encoded


def rebuild_dataset(view: InstanceView, frames: Frames, transfer_syntax: str | None = None) -> Dataset:
    """The instance as a pydicom Dataset (with ``file_meta``) in ``transfer_syntax``.

    ``transfer_syntax``: ``None`` or ``"*"`` = the stored syntax (frames encapsulated as stored, one
    fragment per frame, Basic Offset Table), Explicit VR Little Endian (frames decoded to native
    Pixel Data), JPEG 2000 lossless ``1.2.840.10008.1.2.4.90`` (stored lossless frames transcoded).
    ``frames(frame_id)`` gives a frame's stored bytes (a JPH/JP2 file is unwrapped).

    Raises:
        TranscodeUnavailable: the syntax is not one of those, or a frame cannot be decoded/encoded.
        DocumentValueError: a document value cannot be written with its VR.
    """
    stored = view.stored_transfer_syntax or tsx.EXPLICIT_VR_LE
    target = stored if transfer_syntax in (None, "*") else str(transfer_syntax)
    if target not in available_syntaxes(view):
        reason = "offered: " + ", ".join(available_syntaxes(view))
        raise TranscodeUnavailable(target, stored, reason)
    ds = build_dataset(view.attributes, view.vrs)
    for tag in _ENCAPSULATION_TAGS:
        if tag in ds:
            del ds[tag]
    ds.file_meta = _file_meta(view, ds, target)
    if view.frame_ids:
        try:
            fmt = image_format(view.attributes)
        except ValueError as exc:
            raise TranscodeUnavailable(target, stored, f"invalid Image Pixel module: {exc}") from exc
        data = [frames(frame_id) for frame_id in view.frame_ids]
        if target == stored:
            _stored_pixels(ds, stored, fmt, data)
        else:
            _decoded(ds, view, fmt, data, target)
    return ds


def write_part10(view: InstanceView, frames: Frames, fp: BinaryIO, transfer_syntax: str | None = None) -> str:
    """Write the Part 10 file (preamble, ``DICM``, file meta, dataset) to ``fp``; return its transfer syntax."""
    ds = rebuild_dataset(view, frames, transfer_syntax)
    dcmwrite(fp, ds, enforce_file_format=True)
    return str(ds.file_meta.TransferSyntaxUID)


def rebuild(view: InstanceView, frames: Frames, transfer_syntax: str | None = None) -> bytes:
    """The Part 10 file as bytes (see :func:`rebuild_dataset`): in the stored syntax written by
    :mod:`openhi.dicom.part10_writer` where it can (the same bytes, without pydicom's objects)."""
    stored = view.stored_transfer_syntax or tsx.EXPLICIT_VR_LE
    if transfer_syntax in (None, "*", stored):
        try:
            return part10_writer.write(view, frames, stored)
        except part10_writer.Unsupported:
            pass  # pydicom writes it (and names what is wrong)
    out = BytesIO()
    write_part10(view, frames, out, transfer_syntax)
    return out.getvalue()
