"""Contract tests: real files imported through a real server, then rebuilt as Part 10 and DICOM JSON from
GetImageSetMetadata + GetImageFrame, compared attribute by attribute and pixel by pixel with the source."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from contract.helpers import active_datastore
from contract.imaging import metadata, run_import
from openhi.codec.j2k import decode_j2k
from openhi.codec.jph import unwrap
from openhi.dicom.dicom_json import dumps, instance_dicom_json
from openhi.dicom.instance_view import InstanceView, instance_view
from openhi.dicom.part10 import IMPLEMENTATION_CLASS_UID, TranscodeUnavailable, rebuild
from openhi.testing import RunningServer

ELE = "1.2.840.10008.1.2.1"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
#: Text VRs whose trailing spaces and NULs are padding (the document holds values without them).
PADDED_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
#: VRs a rebuilt element may have where the source had the other one: the document keys public tags
#: by keyword and records no VR for them, so an ambiguous dictionary VR is resolved again.
AMBIGUOUS = ({"US", "SS"}, {"OB", "OW"})
#: Never carried into a rebuilt instance: Pixel Data encoding (rebuilt from frames), padding.
NOT_CARRIED = frozenset({0x7FE00001, 0x7FE00002, 0x7FE00010, 0xFFFCFFFC})
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
#: Attributes the transfer syntax decides (checked apart).
PIXEL_ENCODING = frozenset({0x00280004, 0x00280006})

#: Files imported together share a datastore; no two files of a batch share a study, series or SOP Instance UID.
BATCHES = (
    (
        "CT_small.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_small_odd.dcm",
        "examples_ybr_color.dcm",
        "rtdose.dcm",
        "examples_palette.dcm",
    ),
    (
        "MR_small_jp2klossless.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "examples_overlay.dcm",
        "rtplan.dcm",
        "693_J2KI.dcm",
    ),
    ("MR_small_bigendian.dcm", "SC_rgb_rle_2frame.dcm", "test-SR.dcm", "liver_1frame.dcm"),
    ("JPEG2000.dcm", "SC_ybr_full_422_uncompressed.dcm"),
    ("JPGExtended.dcm",),
)


def _text(elem_value: Any) -> list[str]:
    values = (
        list(elem_value)
        if isinstance(elem_value, list | tuple | pydicom.multival.MultiValue)
        else [elem_value]
    )
    out = ["" if v is None else str(v).rstrip(" \x00") for v in values]
    return [] if out == [""] else out


def _same_value(vr: str, a: Any, b: Any) -> bool:
    if vr in PADDED_VRS:
        return _text(a) == _text(b)
    if a in (None, b"", "") or b in (None, b"", ""):
        return a in (None, b"", "", []) and b in (None, b"", "", [])
    return bool(a == b)


def differences(source: Dataset, rebuilt: Dataset, path: str = "") -> list[str]:
    """What differs between a source dataset and its rebuilt copy, under the documented rules.

    Not compared: group lengths, Pixel Data encoding elements (Pixel Data, Extended Offset Table,
    trailing padding),
    Photometric Interpretation and Planar Configuration (the transfer syntax decides them). Text of a
    padded VR is compared without trailing spaces/NULs; US/SS and OB/OW may differ where the value fits both.
    """
    diffs: list[str] = []
    for elem in source:
        tag = int(elem.tag)
        if tag & 0xFFFF == 0 or tag in NOT_CARRIED or (not path and tag in PIXEL_ENCODING):
            continue
        name = f"{path}{elem.tag} {elem.keyword}"
        if tag not in rebuilt:
            diffs.append(f"{name}: missing")
            continue
        other = rebuilt[tag]
        if elem.VR != other.VR and {elem.VR, other.VR} not in AMBIGUOUS:
            diffs.append(f"{name}: VR {elem.VR} != {other.VR}")
        elif elem.VR == "SQ":
            if len(elem.value) != len(other.value):
                diffs.append(f"{name}: {len(elem.value)} items != {len(other.value)}")
            for i, (a, b) in enumerate(zip(elem.value, other.value, strict=False)):
                diffs.extend(differences(a, b, f"{name}[{i}] > "))
        elif not _same_value(str(elem.VR), elem.value, other.value):
            diffs.append(f"{name}: {str(elem.value)[:80]!r} != {str(other.value)[:80]!r}")
    for elem in rebuilt:
        tag = int(elem.tag)
        if tag not in source and not (not path and (tag in PIXEL_TAGS or tag in PIXEL_ENCODING)):
            diffs.append(f"{path}{elem.tag} {elem.keyword}: not in the source")
    return diffs


def expected_photometric(source: Dataset, syntax: str) -> str:
    """Photometric Interpretation of a rebuilt instance (the rules of docs: YBR after a JPEG decode
    is RGB; full-resolution YBR stored from YBR_FULL_422; RGB in JPEG 2000 with the colour transform)."""
    pi = str(source.PhotometricInterpretation)
    stored_as_is = source.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91")
    if syntax == ELE:
        if (stored_as_is and pi.startswith("YBR")) or pi in ("YBR_RCT", "YBR_ICT"):
            return "RGB"
        return "YBR_FULL" if pi == "YBR_FULL_422" else pi
    if stored_as_is:
        return pi
    if pi == "RGB" and int(source.SamplesPerPixel) == 3:
        return "YBR_RCT"  # stored HTJ2K and JPEG 2000 lossless output use the reversible colour transform
    return "YBR_FULL" if pi == "YBR_FULL_422" else pi


def _pixels(ds: Dataset) -> np.ndarray:
    """pydicom's pixels; frames of JPEG 2000 codestreams OpenJPEG cannot decode (32-bit) with OpenJPH."""
    try:
        return np.asarray(ds.pixel_array)
    except Exception:
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))
        arrays = [decode_j2k(f) for f in frames]
        return np.stack(arrays) if len(arrays) > 1 else arrays[0]


def _file(name: str) -> bytes | None:
    path = get_testdata_file(name, download=False)
    return None if path is None else Path(str(path)).read_bytes()


def _frames(client: Any, ds_id: str, image_set_id: str) -> Any:
    def get(frame_id: str) -> bytes:
        resp = client.get_image_frame(
            datastoreId=ds_id, imageSetId=image_set_id, imageFrameInformation={"imageFrameId": frame_id}
        )
        blob: bytes = resp["imageFrameBlob"].read()
        return unwrap(blob) if resp["contentType"] == "image/jph" else blob

    return get


def _check_instance(name: str, source: Dataset, view: InstanceView, frames: Any) -> int:
    """Rebuild in the stored syntax, ELE and (when offered) 4.90; return how many rebuilds were checked."""
    stored = view.stored_transfer_syntax
    checked = 0
    for syntax in (None, ELE, J2K_LOSSLESS):
        try:
            data = rebuild(view, frames, syntax)
        except TranscodeUnavailable:
            assert syntax == J2K_LOSSLESS, (name, syntax)
            continue
        out = pydicom.dcmread(io.BytesIO(data))
        want = stored if syntax is None else syntax
        meta = out.file_meta
        assert meta.TransferSyntaxUID == want, name
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
        assert meta.MediaStorageSOPClassUID == source.SOPClassUID
        assert not differences(source, out), (name, want, differences(source, out))
        if "PixelData" in source:
            assert out.PhotometricInterpretation == expected_photometric(source, want), (name, want)
            if int(source.SamplesPerPixel) > 1:
                assert out.PlanarConfiguration == 0
            expected, got = np.asarray(source.pixel_array), _pixels(out)
            assert got.shape == expected.shape and np.array_equal(got, expected), (name, want)
        checked += 1
    # DICOM JSON: every non-bulk attribute of the source, back through pydicom's reader
    doc = json.loads(dumps(instance_dicom_json(view, bulkdata_uri=lambda p: f"https://x/bulk/{p}")))
    assert list(doc) == sorted(doc) and all(int(k, 16) >> 16 != 2 for k in doc)
    back = Dataset.from_json(doc, bulk_data_uri_handler=lambda tag, vr, uri: None)
    for elem in source:
        tag = int(elem.tag)
        if elem.VR in ("OB", "OW", "UN") and elem.value and len(elem.value) > 1024:
            assert tag in back, (name, elem.tag)  # a BulkDataURI
            continue
        if tag & 0xFFFF == 0 or tag in NOT_CARRIED:
            continue
        assert tag in back, (name, elem.tag)
        diffs = differences(Dataset({tag: elem}), Dataset({tag: back[tag]}))
        assert not diffs or tag in PIXEL_ENCODING, (name, diffs)
    return checked


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: b[0].removesuffix(".dcm"))
def test_rebuilt_instances_equal_their_source(
    batch: tuple[str, ...], medical_imaging: Any, openhi_server: RunningServer
) -> None:
    files = {name: data for name in batch if (data := _file(name)) is not None}
    if not files:
        pytest.skip("none of these pydicom test files is bundled")
    ds_id = active_datastore(medical_imaging, "part10")
    result = run_import(medical_imaging, openhi_server, ds_id, files)
    assert result["job"]["jobStatus"] == "COMPLETED" and not result["failure"], result["failure"]
    by_file = {
        s["inputFile"].rsplit("/", 1)[-1]: s["importResponse"]["imageSetId"] for s in result["success"]
    }
    checked = 0
    for name, data in files.items():
        source = pydicom.dcmread(io.BytesIO(data))
        image_set_id = by_file[name]
        doc = metadata(medical_imaging, ds_id, image_set_id)
        view = instance_view(doc, str(source.SOPInstanceUID))
        checked += _check_instance(name, source, view, _frames(medical_imaging, ds_id, image_set_id))
    assert checked >= 2 * len(files)
