"""process_instance on pydicom's real test files and generated ones: pixel-exact, independently decoded."""

from __future__ import annotations

import pickle
import sys
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import openjpeg
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder

from openhi.codec import transfer_syntax as tsx
from openhi.codec.j2k import CodestreamInfo
from openhi.dicom.instance import InstanceRejected, ProcessedInstance, process_instance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_factory as factory


def _file(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return Path(str(path)).read_bytes()


def _source_frames(data: bytes) -> list[np.ndarray]:
    """Reference pixels straight from pydicom (YBR kept as stored, like the importer)."""
    ds = pydicom.dcmread(BytesIO(data))
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric.startswith("YBR_FULL"):
        arr = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=True)[0]
    else:
        arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames") or 1)
    arr = arr if frames > 1 else arr[None]
    return [a.astype(a.dtype.newbyteorder("=")) for a in arr]


def _independent(stored: bytes) -> np.ndarray:
    try:
        return np.asarray(openjpeg.decode(stored))
    except Exception:  # OpenJPEG cannot read 32-bit precision: fall back to imagecodecs (OpenJPH)
        return np.asarray(imagecodecs.htj2k_decode(stored))


def check_transcoded(result: ProcessedInstance, data: bytes, stored_ts: str = tsx.HTJ2K_RPCL) -> None:
    node = result.instance
    assert node["StoredTransferSyntaxUID"] == stored_ts
    assert node["ChecksumType"] == "DECOMPRESSED"
    sources = _source_frames(data)
    assert len(result.frames) == len(node["ImageFrames"]) == len(sources)
    for frame, entry, source in zip(result.frames, node["ImageFrames"], sources, strict=True):
        assert frame.frame_id == entry["ID"] and len(entry["ID"]) == 32
        decoded = _independent(frame.data)
        assert decoded.dtype == source.dtype
        assert np.array_equal(decoded, source)
        full = entry["PixelDataChecksumFromBaseToFullResolution"][-1]
        assert (full["Width"], full["Height"]) == (source.shape[1], source.shape[0])
        assert full["Checksum"] == zlib.crc32(np.ascontiguousarray(decoded).tobytes())
        assert entry["MinPixelValue"] == int(source.min()) and entry["MaxPixelValue"] == int(source.max())
        assert entry["FrameSizeInBytes"] == source.nbytes
        info = CodestreamInfo.parse(frame.data)
        if stored_ts == tsx.HTJ2K_RPCL:
            assert info.progression_order == "RPCL" and info.tlm and info.cap
            assert info.base_width <= 64 and info.base_height <= 64
        else:
            assert not info.cap and info.reversible


TRANSCODED_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_RLE.dcm",
    "SC_rgb.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_rle_16bit_2frame.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "ExplVR_BigEnd.dcm",
    "US1_J2KR.dcm",
    "examples_jpeg2k.dcm",
    "GDCMJ2K_TextGBR.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "examples_overlay.dcm",
    "examples_palette.dcm",
    "image_dfl.dcm",
    "liver_expb_1frame.dcm",
    "rtdose.dcm",
    "rtdose_rle.dcm",
    "JPGExtended.dcm",
]


@pytest.mark.parametrize("name", TRANSCODED_FILES)
def test_real_files_transcode_pixel_exact(name: str) -> None:
    data = _file(name)
    result = process_instance(data)
    check_transcoded(result, data)
    dicom = result.instance["DICOM"]
    assert dicom["PixelData"] is None
    assert dicom["TransferSyntaxUID"] == pydicom.dcmread(BytesIO(data)).file_meta.TransferSyntaxUID
    assert pickle.loads(pickle.dumps(result)) == result


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm", "CT_small.dcm", "examples_jpeg2k.dcm"]
)
def test_real_files_jpeg2000_storage_format(name: str) -> None:
    data = _file(name)
    check_transcoded(process_instance(data, "JPEG_2000_LOSSLESS"), data, tsx.J2K_LOSSLESS)


@pytest.mark.parametrize(
    ("name", "ts"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", tsx.JPEG_BASELINE),
        ("color3d_jpeg_baseline.dcm", tsx.JPEG_BASELINE),
        ("examples_ybr_color.dcm", tsx.JPEG_BASELINE),
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", tsx.JPEG_BASELINE),
        ("JPEG2000.dcm", tsx.J2K),
        ("693_J2KI.dcm", tsx.J2K),
        ("liver_1frame.dcm", tsx.EXPLICIT_VR_LE),  # binary segmentation
    ],
)
def test_real_files_stored_as_is(name: str, ts: str) -> None:
    data = _file(name)
    ds = pydicom.dcmread(BytesIO(data))
    result = process_instance(data)
    node = result.instance
    assert node["StoredTransferSyntaxUID"] == ts
    assert node["ChecksumType"] == "COMPRESSED"
    frames = int(ds.get("NumberOfFrames") or 1)
    assert len(result.frames) == frames
    if ts != tsx.EXPLICIT_VR_LE:
        originals = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=frames))
        assert [f.data for f in result.frames] == originals
    for frame, entry in zip(result.frames, node["ImageFrames"], strict=True):
        assert entry["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"] == zlib.crc32(frame.data)
    if ts == tsx.EXPLICIT_VR_LE:
        unpacked = np.unpackbits(np.frombuffer(result.frames[0].data, np.uint8), bitorder="little")
        assert np.array_equal(unpacked[: ds.Rows * ds.Columns].reshape(ds.Rows, ds.Columns), ds.pixel_array)


def test_no_pixel_data_is_accepted_with_zero_frames() -> None:
    result = process_instance(_file("rtplan.dcm"))
    assert result.frames == [] and result.instance["ImageFrames"] == []
    assert "PixelData" not in result.instance["DICOM"]


GENERATED: list[dict[str, Any]] = [
    {},
    {"bits": 8},
    {"bits": 8, "signed": True},
    {"bits": 12, "signed": True},
    {"bits": 12},
    {"bits": 16, "signed": True, "rows": 100, "cols": 70},
    {"samples": 3, "bits": 8},
    {"samples": 3, "bits": 8, "planar": 1, "frames": 2},
    {"samples": 3, "bits": 16},
    {"samples": 3, "bits": 8, "photometric": "YBR_FULL"},
    {"frames": 4, "signed": True},
    {"transfer_syntax": factory.ImplicitVRLittleEndian, "signed": True},
    {"transfer_syntax": factory.ExplicitVRBigEndian, "signed": True, "bits": 12},
    {"transfer_syntax": factory.ExplicitVRBigEndian, "samples": 3, "bits": 8, "planar": 1},
    {"transfer_syntax": factory.DeflatedExplicitVRLittleEndian, "frames": 2},
    {"transfer_syntax": factory.RLELossless, "signed": True, "frames": 3},
    {"transfer_syntax": factory.RLELossless, "samples": 3, "bits": 8},
    {"transfer_syntax": factory.J2K_LOSSLESS, "signed": True, "bits": 12},
    {"transfer_syntax": factory.J2K_LOSSLESS, "samples": 3, "bits": 8, "frames": 2},
    {"transfer_syntax": factory.HTJ2K_LOSSLESS, "signed": True},
    {"transfer_syntax": factory.JPEG_LS_LOSSLESS},
]


@pytest.mark.parametrize(
    "kwargs", GENERATED, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "default"
)
def test_generated_instances_pixel_exact(kwargs: dict[str, Any]) -> None:
    if kwargs.get("transfer_syntax") == factory.JPEG_LS_LOSSLESS and not factory.JPEG_LS_AVAILABLE:
        pytest.skip("imagecodecs without JPEG-LS")
    data = factory.make_instance(**kwargs)
    check_transcoded(process_instance(data), data)


def test_ct_series_levels_and_identity() -> None:
    files = factory.make_ct_series(3, seed=7)
    results = [process_instance(f) for f in files]
    assert len({r.series_uid for r in results}) == 1 and len({r.sop_uid for r in results}) == 3
    first = results[0]
    assert first.patient["PatientID"] == "PAT1" and first.study["StudyInstanceUID"] == first.study_uid
    assert first.series["Modality"] == "CT" and "SOPInstanceUID" in first.instance["DICOM"]
    assert "PatientID" not in first.instance["DICOM"] and "StudyDate" not in first.instance["DICOM"]
    for data, result in zip(files, results, strict=True):
        check_transcoded(result, data)


def _rejected(data: bytes) -> InstanceRejected:
    with pytest.raises(InstanceRejected) as info:
        process_instance(data)
    rejected = info.value
    assert rejected.exception_type == "ValidationException"
    assert pickle.loads(pickle.dumps(rejected)).message == rejected.message
    return rejected


def test_garbage_rejected() -> None:
    assert "not a valid DICOM Part 10 file" in _rejected(factory.garbage_file()).message


def test_truncated_rejected() -> None:
    """A file cut short inside its Pixel Data: the element that does not fit is named."""
    for data in (factory.truncated_file(), _file("MR_truncated.dcm")):
        message = _rejected(data).message
        assert "(7FE0,0010) PixelData declares 8192 bytes but only" in message, message


@pytest.mark.parametrize(
    "keyword", ["TransferSyntaxUID", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]
)
def test_missing_required_attribute(keyword: str) -> None:
    assert (
        _rejected(factory.missing_attr_file(keyword)).message == f"DICOM attribute {keyword} does not exist"
    )


@pytest.mark.parametrize(
    ("keyword", "limit"), [("PatientID", 256), ("StudyID", 256), ("AccessionNumber", 256)]
)
def test_length_limits(keyword: str, limit: int) -> None:
    with pytest.warns(UserWarning):
        data = factory.make_instance(**{keyword: "X" * (limit + 1)})
    message = _rejected(data).message
    assert keyword in message and str(limit) in message
    process_instance(factory.make_instance(**{keyword: "X" * 16}))


def test_unsupported_transfer_syntax_rejected() -> None:
    data = factory.make_instance()
    ds = pydicom.dcmread(BytesIO(data))
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.10.1234.99"  # private syntax
    buffer = BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True)
    assert "Unsupported transfer syntax" in _rejected(buffer.getvalue()).message


def _pydicom_frames(ds: pydicom.Dataset) -> list[np.ndarray]:
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    return [a.astype(a.dtype.newbyteorder("=")) for a, _ in decoder.iter_array(ds, raw=True)]


@pytest.mark.parametrize(
    ("bits", "stored", "signed", "frames", "syntax", "photometric"),
    [
        (16, 16, True, 1, tsx.EXPLICIT_VR_LE, "MONOCHROME2"),
        (16, 12, True, 2, tsx.EXPLICIT_VR_LE, "MONOCHROME2"),  # garbage in the unused high bits
        (16, 12, False, 1, tsx.IMPLICIT_VR_LE, "MONOCHROME1"),
        (8, 8, False, 3, tsx.IMPLICIT_VR_LE, "MONOCHROME2"),  # odd length: padded Pixel Data
        (8, 5, True, 1, tsx.EXPLICIT_VR_LE, "MONOCHROME2"),
        (32, 32, False, 2, tsx.EXPLICIT_VR_LE, "MONOCHROME2"),
        (32, 20, True, 1, tsx.EXPLICIT_VR_LE, "MONOCHROME2"),
        (16, 16, False, 1, tsx.EXPLICIT_VR_LE, "PALETTE COLOR"),  # not monochrome: pydicom path
    ],
)
def test_native_fast_path_matches_pydicom(
    bits: int, stored: int, signed: bool, frames: int, syntax: str, photometric: str
) -> None:
    """Little-endian native frames viewed without pydicom's decoder equal what pydicom yields."""
    from openhi.dicom.frames import _native_monochrome, decoded_frames

    dtype = np.dtype(f"{'ui'[signed]}{bits // 8}")
    raw = np.random.default_rng(bits + stored).integers(
        0, 2**bits, (frames, 3, 7), dtype=np.uint64, endpoint=False
    )
    pixels = raw.astype(f"u{bits // 8}").view(dtype)  # every bit random, high bits included
    data = factory.make_instance(
        pixels=pixels, bits=bits, signed=signed, transfer_syntax=syntax, photometric=photometric
    )
    ds = pydicom.dcmread(BytesIO(data))
    ds.BitsStored, ds.HighBit = stored, stored - 1
    expected = _pydicom_frames(ds)
    got = list(decoded_frames(ds, syntax))
    assert (_native_monochrome(ds, syntax) is not None) == photometric.startswith("MONOCHROME")
    assert len(got) == len(expected) == frames
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape == (3, 7)
        assert np.array_equal(a, b)
    if stored < bits:  # the importer stores the corrected values, losslessly
        result = process_instance(_with_bits_stored(data, stored))
        sources = [f.astype(f.dtype.newbyteorder("=")) for f in expected]
        for entry, source in zip(result.instance["ImageFrames"], sources, strict=True):
            assert (entry["MinPixelValue"], entry["MaxPixelValue"]) == (int(source.min()), int(source.max()))


def _with_bits_stored(data: bytes, stored: int) -> bytes:
    ds = pydicom.dcmread(BytesIO(data))
    ds.BitsStored, ds.HighBit = stored, stored - 1
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
