"""Part 10 rebuild of a document instance + stored frames: attribute-exact, pixel-exact, file meta, refusals."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from contract.test_part10_roundtrip import differences, expected_photometric
from openhi.codec.jph import wrap_jph
from openhi.dicom.document import document_from_instances
from openhi.dicom.instance import process_instance
from openhi.dicom.instance_view import InstanceView, instance_view
from openhi.dicom.part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    DocumentValueError,
    TranscodeUnavailable,
    available_syntaxes,
    rebuild,
)

ELE = "1.2.840.10008.1.2.1"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"


def _imported(name: str) -> tuple[pydicom.Dataset, InstanceView, dict[str, bytes]]:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with pydicom")
    data = Path(str(path)).read_bytes()
    processed = process_instance(data)
    doc = json.loads(json.dumps(document_from_instances("d" * 32, "i" * 32, [processed])))
    view = instance_view(doc, processed.sop_uid)
    return pydicom.dcmread(io.BytesIO(data)), view, {f.frame_id: f.data for f in processed.frames}


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "SC_rgb_small_odd.dcm",
        "examples_ybr_color.dcm",
        "MR_small_RLE.dcm",
        "examples_palette.dcm",
    ],
)
def test_every_attribute_and_pixel_equal_in_each_syntax(name: str) -> None:
    source, view, blobs = _imported(name)
    rebuilt = 0
    for syntax in (None, ELE, J2K_LOSSLESS):
        if syntax not in (None, *available_syntaxes(view)):
            with pytest.raises(TranscodeUnavailable):
                rebuild(view, blobs.__getitem__, syntax)
            continue
        out = pydicom.dcmread(io.BytesIO(rebuild(view, blobs.__getitem__, syntax)))
        want = syntax or view.stored_transfer_syntax
        assert out.file_meta.TransferSyntaxUID == want
        assert differences(source, out) == []
        assert out.PhotometricInterpretation == expected_photometric(source, want)
        assert np.array_equal(out.pixel_array, source.pixel_array), (name, want)
        rebuilt += 1
    assert rebuilt >= 2


def test_file_meta_is_openhis_and_keeps_the_source_application() -> None:
    source, view, blobs = _imported("CT_small.dcm")
    view.attributes["SourceApplicationEntityTitle"] = "MODALITY1"
    out = pydicom.dcmread(io.BytesIO(rebuild(view, blobs.__getitem__, ELE)))
    meta = out.file_meta
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID and len(IMPLEMENTATION_CLASS_UID) <= 64
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.MediaStorageSOPClassUID == source.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert meta.SourceApplicationEntityTitle == "MODALITY1"
    assert meta.TransferSyntaxUID == ELE


def test_stored_syntax_is_one_fragment_per_frame_with_offsets() -> None:
    _, view, blobs = _imported("examples_ybr_color.dcm")
    out = pydicom.dcmread(io.BytesIO(rebuild(view, blobs.__getitem__, "*")))
    frames = list(generate_frames(out.PixelData, number_of_frames=30))
    assert frames == [blobs[i] for i in view.frame_ids]  # the stored JPEG bytes, untouched
    offsets = np.frombuffer(out.PixelData[8 : 8 + 4 * 30], dtype="<u4")
    assert offsets[0] == 0 and np.all(np.diff(offsets) > 0)  # a Basic Offset Table


def test_htj2k_frames_given_as_jph_files_are_unwrapped() -> None:
    source, view, blobs = _imported("MR_small_RLE.dcm")
    wrapped = {k: wrap_jph(v) for k, v in blobs.items()}
    out = pydicom.dcmread(io.BytesIO(rebuild(view, wrapped.__getitem__)))
    assert out.file_meta.TransferSyntaxUID == HTJ2K_RPCL
    assert next(generate_frames(out.PixelData, number_of_frames=1))[:2] == b"\xff\x4f"
    assert np.array_equal(out.pixel_array, source.pixel_array)


def _hand_document() -> dict[str, Any]:
    pixels = np.arange(12, dtype="<i2").reshape(3, 4) - 6
    instance = {
        "TransferSyntaxUID": ELE,
        "SpecificCharacterSet": ["", "ISO 2022 IR 87"],
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",
        "SOPInstanceUID": "1.2.3.4.5",
        "InstanceNumber": "1 ",
        "SliceThickness": " 0.50",
        "ImagePositionPatient": ["1", "", "3 "],
        "AcquisitionNumber": "not a number",
        "ImageComments": "  leading spaces kept",
        "FrameIncrementPointer": "00181063",
        "Rows": 3,
        "Columns": 4,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 1,
        "SmallestImagePixelValue": -6,
        "ReferencedImageSequence": [{"ReferencedSOPInstanceUID": "1.2.3", "00091001": "AQI="}],
        "00090010": "ACME",
        "00091001": "AQI=",
        "PixelData": None,
    }
    return {
        "Patient": {"DICOM": {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう", "PatientID": "P1"}},
        "Study": {
            "DICOM": {"StudyInstanceUID": "1.2.3"},
            "Series": {
                "1.2.3.4": {
                    "DICOM": {"SeriesInstanceUID": "1.2.3.4", "Modality": "OT"},
                    "Instances": {
                        "1.2.3.4.5": {
                            "DICOM": instance,
                            "DICOMVRs": {"00090010": "LO", "00091001": "OB"},
                            "StoredTransferSyntaxUID": ELE,
                            "ImageFrames": [{"ID": "frame1"}],
                        }
                    },
                }
            },
        },
        "_pixels": pixels,
    }


def test_hand_built_document_values_are_written_exactly() -> None:
    doc = _hand_document()
    pixels = doc.pop("_pixels")
    view = instance_view(doc, "1.2.3.4.5")
    data = rebuild(view, {"frame1": pixels.tobytes()}.__getitem__)
    out = pydicom.dcmread(io.BytesIO(data))
    assert str(out.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert "山田".encode("iso2022_jp")[3:7] in data  # written in the instance's character set (JIS X 0208)
    assert b"1 " in data and b" 0.50" in data and b"1\\\\3 " in data and b"not a number" in data
    assert out.ImageComments == "  leading spaces kept"
    assert out.FrameIncrementPointer == 0x00181063
    assert out[0x00280106].VR == "SS" and out.SmallestImagePixelValue == -6
    assert out[0x00090010].value == "ACME" and out[0x00091001].value == b"\x01\x02"
    assert out.ReferencedImageSequence[0][0x00091001].value == b"\x01\x02"
    assert np.array_equal(out.pixel_array, pixels)
    j2k = pydicom.dcmread(io.BytesIO(rebuild(view, {"frame1": pixels.tobytes()}.__getitem__, J2K_LOSSLESS)))
    assert np.array_equal(j2k.pixel_array, pixels)


def test_impossible_requests_raise_transcode_unavailable() -> None:
    _, view, blobs = _imported("SC_rgb_jpeg_dcmtk.dcm")  # JPEG baseline: kept as stored, lossy
    assert available_syntaxes(view) == ("1.2.840.10008.1.2.4.50", ELE)
    with pytest.raises(TranscodeUnavailable) as exc:
        rebuild(view, blobs.__getitem__, J2K_LOSSLESS)
    assert exc.value.requested == J2K_LOSSLESS and exc.value.stored == "1.2.840.10008.1.2.4.50"
    with pytest.raises(TranscodeUnavailable):
        rebuild(view, blobs.__getitem__, "1.2.840.10008.1.2")  # implicit VR is not offered
    video = InstanceView(**{**view.__dict__, "stored_transfer_syntax": "1.2.840.10008.1.2.4.102"})
    assert ELE not in available_syntaxes(video)
    with pytest.raises(TranscodeUnavailable):
        rebuild(video, blobs.__getitem__, ELE)
    broken = InstanceView(**{**view.__dict__, "stored_transfer_syntax": "1.2.840.10008.1.2.4.90"})
    with pytest.raises(TranscodeUnavailable, match="cannot be decoded"):
        rebuild(broken, lambda _: b"not a codestream", ELE)


def test_a_value_that_does_not_fit_its_vr_names_the_attribute() -> None:
    doc = _hand_document()
    doc.pop("_pixels")
    bad = copy.deepcopy(doc)
    bad["Study"]["Series"]["1.2.3.4"]["Instances"]["1.2.3.4.5"]["DICOM"]["Rows"] = "three"
    with pytest.raises(DocumentValueError, match="Rows"):
        rebuild(instance_view(bad, "1.2.3.4.5"), lambda _: b"")
    bad = copy.deepcopy(doc)
    bad["Study"]["Series"]["1.2.3.4"]["Instances"]["1.2.3.4.5"]["DICOM"]["00091001"] = "%%%"
    with pytest.raises(DocumentValueError, match="00091001"):
        rebuild(instance_view(bad, "1.2.3.4.5"), lambda _: b"")


def test_no_pixel_data_instance() -> None:
    source, view, _ = _imported("rtplan.dcm")
    assert view.frame_ids == ()
    for syntax in available_syntaxes(view):
        out = pydicom.dcmread(io.BytesIO(rebuild(view, lambda _: b"", syntax)))
        assert "PixelData" not in out and differences(source, out) == []
