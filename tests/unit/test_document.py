"""Metadata JSON encoding (§2.4), level normalization (§2.3) and the image set document (§2.2)."""

from __future__ import annotations

import base64
import gzip
import json
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword

from openhi.dicom.document import (
    build_document,
    conflict_keys,
    decode_document,
    document_from_instances,
    encode_document,
    frame_ids,
    merge_instances,
    search_tags,
)
from openhi.dicom.instance import process_instance
from openhi.dicom.json_values import dataset_to_json, element_to_json, json_to_element
from openhi.dicom.levels import level_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_factory as factory

EXAMPLES = Path("/work/shared/spec/examples")
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []


def _tag(key: str) -> int:
    tag = tag_for_keyword(key)
    return int(tag) if tag is not None else int(key, 16)


@pytest.mark.skipif(not EXAMPLE_FILES, reason="spec examples not available")
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_level_table_matches_real_documents(path: Path) -> None:
    doc = json.loads(path.read_text())
    maps: list[tuple[str, dict[str, Any]]] = [
        ("Patient", doc["Patient"]["DICOM"]),
        ("Study", doc["Study"]["DICOM"]),
    ]
    for series in doc["Study"]["Series"].values():
        maps.append(("Series", series["DICOM"]))
        maps.extend(("Instance", node["DICOM"]) for node in series["Instances"].values())
    for level, mapping in maps:
        for key in mapping:
            assert level_of(_tag(key)) == level, key


def _testfile(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not bundled")
    return pydicom.dcmread(str(path))


def test_value_encodings_follow_example_conventions() -> None:
    dicom, vrs = dataset_to_json(_testfile("CT_small.dcm"))
    assert dicom["FileMetaInformationVersion"] == "AAE="  # OB → base64
    assert dicom["FileMetaInformationGroupLength"] == 192  # UL → number
    assert dicom["Rows"] == 128 and dicom["BitsAllocated"] == 16  # US → number
    assert isinstance(dicom["InstanceNumber"], str)  # IS → string
    assert dicom["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]  # VM 2-n → list
    assert dicom["SpecificCharacterSet"] == ["ISO_IR 100"]  # VM 1-n, single value → list
    assert isinstance(dicom["PixelSpacing"], list) and all(isinstance(v, str) for v in dicom["PixelSpacing"])
    assert dicom["AccessionNumber"] is None  # empty → null
    assert dicom["PixelData"] is None
    assert dicom["PatientName"] == "CompressedSamples^CT1"  # PN flat string, padding removed
    assert dicom["ImplementationVersionName"] == "DCTOOL100"
    assert dicom["00090010"] == "GEMS_IDEN_01" and vrs["00090010"] == "LO"  # private: hex key + DICOMVRs
    assert all(len(k) == 8 and k == k.upper() for k in vrs)
    assert "Rows" not in vrs
    json.dumps(dicom)


def test_implicit_private_tags_are_un_base64() -> None:
    dicom, vrs = dataset_to_json(_testfile("priv_SQ.dcm"))
    assert vrs == {"3F030010": "LO", "3F031001": "UN"}
    assert dicom["3F030010"] == "aaabbbccc MEDICAL SYSTEMS"  # private creator (LO): padding removed
    assert isinstance(base64.b64decode(dicom["3F031001"]), bytes)


def test_at_and_sequences() -> None:
    dicom, _ = dataset_to_json(_testfile("JPEG2000.dcm"))
    assert dicom["FrameIncrementPointer"] == ["00540010", "00540020"]  # AT → 8-hex strings, list
    dicom, vrs = dataset_to_json(_testfile("UN_sequence.dcm"))
    item = dicom["4453100C"][0]
    assert item["ReferencedSeriesSequence"][0]["SeriesInstanceUID"].startswith("1.2.840")
    assert vrs["4453100C"] == "SQ"
    dicom, _ = dataset_to_json(_testfile("rtplan.dcm"))
    assert isinstance(dicom["BeamSequence"], list) and isinstance(dicom["BeamSequence"][0], dict)


def test_big_endian_numbers_and_strings() -> None:
    little, _ = dataset_to_json(_testfile("MR_small.dcm"))
    big, _ = dataset_to_json(_testfile("MR_small_bigendian.dcm"))
    for key in ("Rows", "Columns", "BitsAllocated", "PixelRepresentation", "ImagePositionPatient"):
        assert little[key] == big[key]


def test_element_to_json_and_back() -> None:
    ds = _testfile("CT_small.dcm")
    for keyword in ("Rows", "ImageType", "PixelSpacing", "PatientName", "InstanceNumber", "RescaleIntercept"):
        value = element_to_json(ds[keyword])
        elem = json_to_element(keyword, value)
        assert elem.tag == ds[keyword].tag and elem.VR == ds[keyword].VR
    assert json_to_element("Rows", 512).value == 512
    assert json_to_element("ImageType", ["ORIGINAL", "PRIMARY"]).VM == 2
    assert json_to_element("FrameIncrementPointer", ["00181065"]).value == 0x00181065
    assert json_to_element("FileMetaInformationVersion", "AAE=").value == b"\x00\x01"
    assert json_to_element("00091001", "ABC", "LO").value == "ABC"
    seq = json_to_element(
        "ReferencedSeriesSequence", [{"SeriesInstanceUID": "1.2.3", "00091001": "X"}], vrs={"00091001": "LO"}
    )
    assert seq.value[0].SeriesInstanceUID == "1.2.3"
    assert json_to_element("PatientName", None).value in (None, "")
    assert json_to_element("SmallestImagePixelValue", -5).VR == "SS"


@pytest.mark.parametrize(
    ("key", "value", "vr"),
    [
        ("Rows", "512", None),
        ("Rows", 70000, None),
        ("Rows", True, None),
        ("InstanceNumber", "1.5", None),
        ("SliceThickness", "abc", None),
        ("PatientName", 5, None),
        ("FrameIncrementPointer", ["0018"], None),
        ("FileMetaInformationVersion", "***", None),
        ("Rows", [1, 2], None),
        ("00091001", "x", None),
        ("NotAKeyword", "x", None),
        ("StudyDate", "2024-01-01", None),
        ("ReferencedSeriesSequence", ["x"], None),
    ],
)
def test_json_to_element_rejects_incompatible_values(key: str, value: Any, vr: str | None) -> None:
    with pytest.raises(ValueError, match=key):
        json_to_element(key, value, vr)


def _processed(n: int = 2, **kwargs: Any) -> list[Any]:
    return [process_instance(f) for f in factory.make_ct_series(n, rows=32, cols=32, **kwargs)]


def test_document_build_merge_encode_search() -> None:
    processed = _processed(3)
    doc = document_from_instances("d" * 32, "i" * 32, processed)
    assert doc["SchemaVersion"] == "1.1" and doc["DatastoreID"] == "d" * 32 and doc["ImageSetID"] == "i" * 32
    series = doc["Study"]["Series"][processed[0].series_uid]
    assert set(series["Instances"]) == {p.sop_uid for p in processed}
    assert doc["Patient"]["DICOM"]["PatientID"] == "PAT1"
    assert frame_ids(doc) == [f.frame_id for p in processed for f in p.frames]
    blob = encode_document(doc)
    assert blob == encode_document(doc)  # deterministic (mtime 0)
    assert gzip.decompress(blob).startswith(b'{"SchemaVersion":"1.1"')
    assert decode_document(blob) == json.loads(json.dumps(doc))
    tags = search_tags(doc)
    assert tags["DICOMPatientId"] == "PAT1" and tags["DICOMSeriesModality"] == "CT"
    assert tags["DICOMSeriesNumber"] == 1 and tags["DICOMStudyDate"] == "20240101"
    assert tags["DICOMNumberOfStudyRelatedInstances"] == 3 and tags["DICOMNumberOfStudyRelatedSeries"] == 1
    assert "DICOMSeriesBodyPart" not in tags
    assert conflict_keys(doc) == conflict_keys(processed[0])
    assert conflict_keys(doc)[0] == "PAT1"


def test_merge_replaces_same_sop_and_keeps_input_unchanged() -> None:
    first = _processed(2)
    doc = document_from_instances("d" * 32, "i" * 32, first)
    snapshot = json.dumps(doc, sort_keys=True)
    again = process_instance(factory.make_ct_series(1, rows=32, cols=32, StudyDescription="NEW")[0])
    merged = merge_instances(doc, [again])
    assert json.dumps(doc, sort_keys=True) == snapshot
    instances = merged["Study"]["Series"][again.series_uid]["Instances"]
    assert len(instances) == 2 and instances[again.sop_uid] is again.instance
    assert merged["Study"]["DICOM"]["StudyDescription"] == "NEW"  # odd length: the pad is removed
    assert again.frames[0].frame_id in frame_ids(merged)
    assert first[0].frames[0].frame_id not in frame_ids(merged)


def test_build_document_shape() -> None:
    doc = build_document(
        "a" * 32, "b" * 32, {"PatientID": "P"}, {"StudyInstanceUID": "1"}, "1.2", {"Modality": "CT"}, {}
    )
    assert doc["Study"]["Series"]["1.2"] == {"DICOM": {"Modality": "CT"}, "Instances": {}}
    assert search_tags(doc)["DICOMNumberOfStudyRelatedInstances"] == 0


def test_processed_instance_dicom_has_file_meta_and_pixel_null() -> None:
    data = factory.make_instance()
    result = process_instance(data)
    dicom = result.instance["DICOM"]
    assert dicom["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert dicom["MediaStorageSOPInstanceUID"] == result.sop_uid
    assert dicom["PixelData"] is None
    assert result.instance["DICOMVRs"] == {}
    ds = pydicom.dcmread(BytesIO(data))
    assert dicom["Rows"] == ds.Rows
