"""Deterministic generators of small, valid DICOM P10 files (and broken ones) for tests."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import imagecodecs
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
JPEG_LS_AVAILABLE = bool(getattr(imagecodecs, "JPEGLS", None) and imagecodecs.JPEGLS.available)


def uid(*parts: object) -> str:
    """A deterministic UID derived from ``parts``."""
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def make_pixels(
    *,
    rows: int = 16,
    cols: int = 16,
    bits: int = 16,
    signed: bool = False,
    samples: int = 1,
    frames: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Random frames (frames × rows × cols [× samples]) using the full ``bits`` range."""
    rng = np.random.default_rng(seed)
    itemsize = 1 if bits <= 8 else 2
    dtype = np.dtype(f"{'i' if signed else 'u'}{itemsize}")
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    shape: tuple[int, ...] = (frames, rows, cols) + ((samples,) if samples > 1 else ())
    return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)


def _base_dataset(sop_class: str, sop_uid: str, study_uid: str, series_uid: str, ts: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1234.1"
    meta.ImplementationVersionName = "OPENHI_TEST"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "PAT1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "S1"
    ds.AccessionNumber = "ACC1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "OT"
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.Manufacturer = "openhi"
    return ds


def _set_pixel_module(
    ds: Dataset, pixels: np.ndarray, bits: int, signed: bool, photometric: str, planar: int
) -> None:
    frames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
    ds.SamplesPerPixel = pixels.shape[3] if pixels.ndim == 4 else 1
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = str(frames)


def _native_bytes(pixels: np.ndarray, planar: int, big_endian: bool) -> bytes:
    arr = pixels.transpose(0, 3, 1, 2) if pixels.ndim == 4 and planar == 1 else pixels
    if big_endian:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    data = np.ascontiguousarray(arr).tobytes()
    return data + b"\x00" if len(data) % 2 else data


def _encode_frames(pixels: np.ndarray, ts: str) -> list[bytes]:
    out = []
    for frame in pixels:
        if ts in (J2K_LOSSLESS, J2K):
            out.append(bytes(imagecodecs.jpeg2k_encode(frame, codecformat="J2K", reversible=True)))
        elif ts == JPEG_BASELINE:
            out.append(bytes(imagecodecs.jpeg8_encode(frame, level=90)))
        elif ts == JPEG_LS_LOSSLESS:
            out.append(bytes(imagecodecs.jpegls_encode(frame, level=0)))
        elif ts == HTJ2K_LOSSLESS:
            out.append(bytes(imagecodecs.htj2k_encode(frame, reversible=True)))
        else:
            raise ValueError(f"factory cannot encode {ts}")
    return out


def make_instance(
    *,
    bits: int = 16,
    signed: bool = False,
    samples: int = 1,
    planar: int = 0,
    photometric: str | None = None,
    frames: int = 1,
    rows: int = 16,
    cols: int = 16,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
    pixels: np.ndarray | None = None,
    sop_class: str = SECONDARY_CAPTURE,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    **attrs: Any,
) -> bytes:
    """One P10 file; ``pixels`` (frames × rows × cols [× samples]) default to ``make_pixels(...)``.

    Native syntaxes (LE, implicit, BE, deflated) and compressed ones: RLE (pydicom's encoder),
    JPEG 2000 (imagecodecs), JPEG baseline (imagecodecs), JPEG-LS and HTJ2K (imagecodecs).
    ``attrs`` set extra keyword attributes (``None`` deletes one).
    """
    if pixels is None:
        pixels = make_pixels(
            rows=rows, cols=cols, bits=bits, signed=signed, samples=samples, frames=frames, seed=seed
        )
    samples = pixels.shape[3] if pixels.ndim == 4 else 1
    photometric = photometric or ("RGB" if samples == 3 else "MONOCHROME2")
    study_uid = study_uid or uid("study", seed)
    series_uid = series_uid or uid("series", seed)
    sop_uid = sop_uid or uid("sop", seed, transfer_syntax, bits, signed, samples, frames)
    ds = _base_dataset(sop_class, sop_uid, study_uid, series_uid, transfer_syntax)
    _set_pixel_module(ds, pixels, bits, signed, photometric, planar)
    if transfer_syntax in NATIVE:
        ds.PixelData = _native_bytes(pixels, planar, transfer_syntax == ExplicitVRBigEndian)
        ds["PixelData"].VR = "OB" if pixels.dtype.itemsize == 1 else "OW"
    elif transfer_syntax == RLELossless:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PlanarConfiguration = 0 if samples > 1 else None
        if samples == 1:
            del ds.PlanarConfiguration
        ds.compress(RLELossless, pixels if pixels.shape[0] > 1 else pixels[0], encoding_plugin="pydicom")
    else:
        ds.PixelData = encapsulate(_encode_frames(pixels, transfer_syntax))
        ds["PixelData"].VR = "OB"
        if samples > 1:
            ds.PlanarConfiguration = 0
        if transfer_syntax == JPEG_BASELINE and samples == 3:
            ds.PhotometricInterpretation = "YBR_FULL_422"
    for keyword, value in attrs.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_ct_series(
    n: int,
    rows: int = 64,
    cols: int = 64,
    seed: int = 0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "PAT1",
    **attrs: Any,
) -> list[bytes]:
    """``n`` CT slices: a signed 16-bit ellipse 'body' (HU-like) plus noise, explicit VR LE."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or uid("ct-study", seed, patient_id)
    series_uid = series_uid or uid("ct-series", seed, patient_id)
    yy, xx = np.mgrid[0:rows, 0:cols]
    body = ((yy - rows / 2) / (rows * 0.42)) ** 2 + ((xx - cols / 2) / (cols * 0.36)) ** 2 <= 1.0
    files = []
    for i in range(n):
        image = np.where(body, 40, -1000).astype(np.int16) + rng.normal(0, 20, (rows, cols)).astype(np.int16)
        files.append(
            make_instance(
                pixels=image[None],
                bits=16,
                signed=True,
                sop_class=CT_IMAGE_STORAGE,
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=uid("ct-sop", seed, patient_id, i),
                PatientID=patient_id,
                Modality="CT",
                InstanceNumber=str(i + 1),
                ImagePositionPatient=["0", "0", str(i * 2.5)],
                RescaleIntercept="0",
                RescaleSlope="1",
                **attrs,
            )
        )
    return files


def garbage_file(size: int = 512, seed: int = 0) -> bytes:
    """Random bytes: not DICOM."""
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def truncated_file() -> bytes:
    """A valid 64 × 64 16-bit file cut short inside its Pixel Data."""
    data = make_instance(rows=64, cols=64)
    return data[: len(data) - 1000]


def missing_attr_file(keyword: str) -> bytes:
    """A valid file without ``keyword`` (``TransferSyntaxUID`` removes it from the file meta)."""
    if keyword == "TransferSyntaxUID":
        data = make_instance()
        from pydicom import dcmread

        ds = dcmread(BytesIO(data))
        del ds.file_meta.TransferSyntaxUID
        buffer = BytesIO()
        ds.save_as(buffer, implicit_vr=False, little_endian=True)
        return buffer.getvalue()
    return make_instance(**{keyword: None})
