"""Import one DICOM P10 instance: validate, normalize metadata by level, transcode and verify every frame."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from openhi.codec import transfer_syntax as tsx
from openhi.codec.j2k import (
    crc32,
    decode_htj2k,
    decode_j2k_part1,
    encode_htj2k_rpcl,
    encode_j2k_lossless,
)
from openhi.core.ids import new_id
from openhi.dicom import strict
from openhi.dicom.frames import (
    PixelDataError,
    PixelInfo,
    decoded_frames,
    encapsulated_frames,
    has_pixel_data,
    native_frames,
    pixel_info,
)
from openhi.dicom.json_dataset import MetadataFileError, MetadataOverride, apply_overrides
from openhi.dicom.json_values import iter_dataset_json
from openhi.dicom.levels import level_of
from openhi.dicom.strict import UnfitFile, check_elements, check_inflation, tags_text

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: §7.2 "DICOM element constraints during import" (characters, trailing padding ignored).
MAX_LENGTHS = {
    "PatientName": 256,
    "PatientID": 256,
    "PatientBirthDate": 18,
    "PatientSex": 16,
    "StudyInstanceUID": 256,
    "StudyID": 256,
    "StudyDescription": 256,
    "AccessionNumber": 256,
    "StudyDate": 18,
    "StudyTime": 28,
    "SOPInstanceUID": 256,
    "SeriesInstanceUID": 256,
}
MAX_VALUES = {"NumberOfStudyRelatedSeries": 1_000_000, "NumberOfStudyRelatedInstances": 1_000_000}
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
TRANSCODING_EXCEPTION = (0xB100, "TRANSCODING_EXCEPTION")
ELEMENTS_DISCARDED = (0xB006, "ELEMENTS_DISCARDED")
DECOMPRESSED = "DECOMPRESSED"  # checksum over the decoded full-resolution pixels
COMPRESSED = "COMPRESSED"  # checksum over the stored (original-encoding) frame bytes


@dataclass(frozen=True)
class StoredFrame:
    """One stored frame: its image frame id and the bare stored codestream/bytes."""

    frame_id: str
    data: bytes


@dataclass(frozen=True)
class ProcessedInstance:
    """Everything an import needs from one instance; picklable for process pools."""

    study_uid: str
    series_uid: str
    sop_uid: str
    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    frames: list[StoredFrame]
    warnings: list[dict[str, Any]] = field(default_factory=list)
    metadata_bytes: int = 0  # size of the instance's attributes (every level) as JSON
    mappings: tuple[int, ...] = ()  # dicomMetadataMappings applied, by position
    verification_seconds: float = 0.0  # decoding the encoded frames again and comparing them (transcodes)


class InstanceRejected(Exception):
    """The instance cannot be imported; ``exception_type``/``message`` go to failure.ndjson."""

    def __init__(self, exception_type: str, message: str, mappings: tuple[int, ...] = ()) -> None:
        super().__init__(exception_type, message, mappings)
        self.exception_type = exception_type
        self.message = message
        self.mappings = mappings  # the dicomMetadataMappings that matched the instance

    def __str__(self) -> str:
        return f"{self.exception_type}: {self.message}"


def _reject(message: str) -> InstanceRejected:
    return InstanceRejected("ValidationException", message)


def _read(data: bytes) -> Dataset:
    try:
        check_inflation(data)
    except UnfitFile as exc:
        raise _reject(f"Input file is not acceptable: {exc}") from None
    try:
        return pydicom.dcmread(BytesIO(data), force=False)
    except Exception as exc:  # pydicom raises many types for malformed input
        raise _reject(f"Input file is not a valid DICOM Part 10 file: {exc}") from exc


def _strip(value: Any) -> Any:
    return value.strip(" \x00") if isinstance(value, str) else value


def _check_constraints(flat: dict[str, Any]) -> None:
    for keyword, limit in MAX_LENGTHS.items():
        value = flat.get(keyword)
        if isinstance(value, list):
            value = "\\".join(value)
        if isinstance(value, str) and len(value.rstrip(" ")) > limit:
            raise _reject(f"DICOM attribute {keyword} exceeds the maximum length of {limit}")
    for keyword, limit in MAX_VALUES.items():
        value = _strip(flat.get(keyword))
        try:
            number = int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            raise _reject(f"DICOM attribute {keyword} is not a valid integer string") from None
        if number is not None and not 0 <= number <= limit:
            raise _reject(f"DICOM attribute {keyword} exceeds the maximum value of {limit}")


def _frame_entry(
    width: int, height: int, checksum: int, size: int, lo: int | None, hi: int | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ID": new_id(),
        "PixelDataChecksumFromBaseToFullResolution": [
            {"Width": width, "Height": height, "Checksum": checksum}
        ],
    }
    if lo is not None and hi is not None:
        entry["MinPixelValue"], entry["MaxPixelValue"] = lo, hi
    entry["FrameSizeInBytes"] = size
    return entry


def _as_is(
    ds: Dataset, ts: str, info: PixelInfo, decompressed: bool
) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Frames kept in their original encoding; range (and, if ``decompressed``, CRC32) from a decode.

    Without ``decompressed`` the CRC32 covers the stored bytes (``ChecksumType`` COMPRESSED); with
    it (a lossless input already in the datastore's format) it covers the decoded pixels.
    """
    raw = native_frames(ds, info) if ts in tsx.NATIVE else encapsulated_frames(ds, info)
    stats: Sequence[tuple[int | None, int | None, int | None]] = [(None, None, None)] * len(raw)
    try:
        stats = [
            (
                int(a.min()),
                int(a.max()),
                crc32(a) if decompressed else None,
            )
            for a in decoded_frames(ds, ts)
        ][: len(raw)]
    except PixelDataError:
        if decompressed:
            raise
        # video, JPEG XL or an undecodable frame: no pixel range
    entries = [
        _frame_entry(info.columns, info.rows, crc32(data) if crc is None else crc, info.frame_size, lo, hi)
        for data, (lo, hi, crc) in zip(raw, stats, strict=False)
    ]
    return raw, entries


def _transcode(ds: Dataset, ts: str, stored_ts: str) -> tuple[list[bytes], list[dict[str, Any]], float]:
    """Decode, re-encode losslessly, decode the result and require bit-exact equality per frame; the
    frames, their entries and the seconds the verification (second decode and comparison) took."""
    if stored_ts == tsx.J2K_LOSSLESS:
        encode, decode = encode_j2k_lossless, decode_j2k_part1
    else:
        encode, decode = encode_htj2k_rpcl, decode_htj2k
    out: list[bytes] = []
    entries: list[dict[str, Any]] = []
    verifying = 0.0
    for index, pixels in enumerate(decoded_frames(ds, ts)):
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        try:
            stored = encode(pixels)
            started = time.perf_counter()
            decoded = decode(stored)
        except Exception as exc:  # codec errors: imagecodecs raises its own RuntimeError subclasses
            raise _EncodeFailed(str(exc)) from exc
        same = (
            decoded.shape == pixels.shape
            and decoded.dtype == pixels.dtype
            and np.array_equal(decoded, pixels)
        )
        verifying += time.perf_counter() - started
        if not same:
            raise _reject(f"Pixel data verification failed for frame {index + 1}")
        rows, cols = pixels.shape[:2]
        # the decoded frame is a fresh C-contiguous array equal to the source: checksum it as is
        entries.append(
            _frame_entry(cols, rows, crc32(decoded), decoded.nbytes, int(decoded.min()), int(decoded.max()))
        )
        out.append(stored)
    return out, entries, verifying


class _EncodeFailed(Exception):
    pass


def _native_blobs(ds: Dataset, ts: str) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Fallback after an encoder failure: decoded frames stored as little-endian native bytes."""
    out: list[bytes] = []
    entries: list[dict[str, Any]] = []
    for pixels in decoded_frames(ds, ts):
        data = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
        rows, cols = pixels.shape[:2]
        lo, hi = (int(pixels.min()), int(pixels.max())) if pixels.dtype.kind in "iub" else (None, None)
        entries.append(_frame_entry(cols, rows, crc32(data), len(data), lo, hi))
        out.append(data)
    return out, entries


def _warning(code: tuple[int, str], message: str) -> dict[str, Any]:
    return {"warning_reason_code": code[0], "type": code[1], "message": message}


def process_instance(
    data: bytes, storage_format: str = "HTJ2K", overrides: Sequence[MetadataOverride] = ()
) -> ProcessedInstance:
    """Parse, validate, normalize and transcode one DICOM P10 file (raises ``InstanceRejected``).

    ``overrides``: the job's metadata mappings; those matching the instance's study (and series)
    set their attributes on it before normalization.
    """
    ds = _read(data)
    try:
        dropped = check_elements(ds)
    except UnfitFile as exc:
        raise _reject(f"Input file is not acceptable: {exc}") from None
    except Exception as exc:  # a sequence pydicom cannot parse
        raise _reject(f"Input file is not a valid DICOM Part 10 file: {exc}") from exc
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID") or "").strip("\x00 ") if meta is not None else ""
    if not ts:
        raise _reject("DICOM attribute TransferSyntaxUID does not exist")
    uids: dict[str, Any] = {}
    for keyword in REQUIRED:
        uids[keyword] = ds.get(keyword)
        if not uids[keyword]:
            raise _reject(f"DICOM attribute {keyword} does not exist")

    study_uid = str(uids["StudyInstanceUID"]).strip("\x00 ")
    series_uid = str(uids["SeriesInstanceUID"]).strip("\x00 ")
    try:
        mappings = apply_overrides(ds, overrides, study_uid, series_uid)
    except MetadataFileError as exc:
        matched = tuple(o.index for o in overrides if o.matches(study_uid, series_uid))
        raise InstanceRejected("ValidationException", str(exc), matched) from None
    try:
        return _process(data, ds, ts, uids, storage_format, dropped, mappings)
    except InstanceRejected as exc:
        exc.mappings = mappings
        raise


def _process(
    data: bytes,
    ds: Dataset,
    ts: str,
    uids: dict[str, Any],
    storage_format: str,
    dropped: list[int],
    mappings: tuple[int, ...],
) -> ProcessedInstance:
    vrs: dict[str, str] = {}
    levels: dict[str, dict[str, Any]] = {"Patient": {}, "Study": {}, "Series": {}, "Instance": {}}
    flat: dict[str, Any] = {}
    try:
        for tag, key, value in iter_dataset_json(ds, vrs):
            levels[level_of(tag)][key] = value
            flat[key] = value
    except Exception as exc:  # malformed element values
        raise _reject(f"Input file is not a valid DICOM Part 10 file: {exc}") from exc
    _check_constraints(flat)
    metadata_bytes = len(json.dumps([levels, vrs], separators=(",", ":"), ensure_ascii=False).encode())
    if metadata_bytes > strict.MAX_INSTANCE_METADATA_BYTES:
        raise _reject(
            f"The instance's metadata is {metadata_bytes} bytes as JSON, over the maximum of "
            f"{strict.MAX_INSTANCE_METADATA_BYTES} bytes per instance"
        )

    binary_seg = str(uids["SOPClassUID"]) == SEGMENTATION_STORAGE and ds.get("BitsAllocated") == 1
    try:
        stored_ts = tsx.stored_syntax(ts, storage_format, binary_segmentation=binary_seg)
    except ValueError as exc:
        raise _reject(str(exc)) from exc

    frames: list[bytes] = []
    entries: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    if dropped:
        warnings.append(
            _warning(
                ELEMENTS_DISCARDED,
                f"Binary values over {strict.MAX_INLINE_BINARY_BYTES} bytes are not stored in the "
                f"metadata: {tags_text(dropped)}",
            )
        )
    checksum_type = DECOMPRESSED
    verifying = 0.0
    if has_pixel_data(ds):
        try:
            info = pixel_info(ds)
            if stored_ts == ts:
                lossless_format = ts in (tsx.HTJ2K_RPCL, tsx.J2K_LOSSLESS)
                frames, entries = _as_is(ds, ts, info, lossless_format)
                checksum_type = DECOMPRESSED if lossless_format else COMPRESSED
            else:
                raw_split = None if ts in tsx.NATIVE else encapsulated_frames(ds, info)
                try:
                    frames, entries, verifying = _transcode(ds, ts, stored_ts)
                except PixelDataError as exc:
                    if raw_split is None:
                        raise
                    frames, entries, stored_ts, checksum_type = (*_as_is(ds, ts, info, False), ts, COMPRESSED)
                    warnings.append(_warning(TRANSCODING_EXCEPTION, f"Stored in original encoding: {exc}"))
                except _EncodeFailed as exc:
                    frames, entries = _native_blobs(ds, ts)
                    stored_ts = tsx.EXPLICIT_VR_LE
                    warnings.append(_warning(TRANSCODING_EXCEPTION, f"Stored as native pixel data: {exc}"))
        except PixelDataError as exc:
            raise _reject(f"Invalid pixel data: {exc}") from exc

    node: dict[str, Any] = {
        "DICOM": levels["Instance"],
        "DICOMVRs": vrs,
        "StoredTransferSyntaxUID": stored_ts,
        "ChecksumType": checksum_type,
        "ImageFrames": entries,
    }
    return ProcessedInstance(
        study_uid=str(uids["StudyInstanceUID"]).strip("\x00 "),
        series_uid=str(uids["SeriesInstanceUID"]).strip("\x00 "),
        sop_uid=str(uids["SOPInstanceUID"]).strip("\x00 "),
        patient=levels["Patient"],
        study=levels["Study"],
        series=levels["Series"],
        instance=node,
        frames=[StoredFrame(entry["ID"], blob) for entry, blob in zip(entries, frames, strict=True)],
        warnings=warnings,
        metadata_bytes=metadata_bytes,
        mappings=mappings,
        verification_seconds=verifying,
    )
