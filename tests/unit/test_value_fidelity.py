"""Text values in the metadata document: DICOM padding removed per VR, IS and DS as read (as AWS writes them)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from openhi.core.search import parse_criteria
from openhi.dicom.document import (
    GZIP_HEADER,
    current_body,
    decode_document,
    document_from_instances,
    encode_document,
    is_current,
    search_tags,
)
from openhi.dicom.instance import process_instance
from openhi.dicom.json_values import element_to_json, vm_is_multiple
from openhi.dicom.text_values import (
    PADDED_VRS,
    RAW_VRS,
    normalise_document,
    normalise_json,
    normalise_text,
    normalise_value,
    text_json,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_factory as factory

AWS_EXAMPLE = Path("/work/shared/spec/examples/ct-1-instance-htj2k-2025.json")


def _raw(keyword_or_tag: str | int, vr: str | None, value: bytes) -> RawDataElement:
    tag = tag_for_keyword(keyword_or_tag) if isinstance(keyword_or_tag, str) else keyword_or_tag
    assert tag is not None
    return RawDataElement(Tag(tag), vr, len(value), value, 0, vr is None, True)


def _json(keyword_or_tag: str | int, vr: str | None, value: bytes) -> Any:
    return element_to_json(_raw(keyword_or_tag, vr, value))


# one single-valued attribute per padded VR, with an odd-length value as a writer pads it
PADDED = [
    ("AE", "SourceApplicationEntityTitle", b"STUDIO5_11112 ", "STUDIO5_11112"),
    ("AS", "PatientAge", b"045Y", "045Y"),
    ("CS", "PatientSex", b"O ", "O"),
    ("DA", "StudyDate", b"20240101", "20240101"),
    ("DT", "AcquisitionDateTime", b"20180803160125.605+0100 ", "20180803160125.605+0100"),
    ("LO", "PatientID", b"ACC-PAT-A ", "ACC-PAT-A"),
    ("LT", "AdditionalPatientHistory", b"  two leading spaces ", "  two leading spaces"),
    ("PN", "PatientName", b"NAME^NONE ", "NAME^NONE"),
    ("SH", "AccessionNumber", b"ACC-123 ", "ACC-123"),
    ("ST", "InstitutionAddress", b"1 Main St ", "1 Main St"),
    ("TM", "StudyTime", b"083000.25 ", "083000.25"),
    ("UC", "StrainDescription", b"odd strain ", "odd strain"),
    ("UI", "StudyInstanceUID", b"1.2.826.0.1.3680043.8.498.1\x00", "1.2.826.0.1.3680043.8.498.1"),
    ("UR", "RetrieveURL", b"https://x.example/a ", "https://x.example/a"),
    ("UT", "TextValue", b"unlimited text ", "unlimited text"),
]


@pytest.mark.parametrize(("vr", "keyword", "raw", "expected"), PADDED, ids=[p[0] for p in PADDED])
def test_padding_is_removed_for_every_text_vr(vr: str, keyword: str, raw: bytes, expected: str) -> None:
    tag = tag_for_keyword(keyword)
    assert tag is not None and dictionary_VR(tag) == vr and vr in PADDED_VRS
    assert _json(keyword, vr, raw) == expected
    assert _json(keyword, None, raw) == expected  # implicit VR: the same
    assert normalise_text(vr, raw.decode("latin-1")) == expected  # the one rule used everywhere


def test_is_and_ds_keep_the_string_as_read() -> None:
    assert {"IS", "DS"} == RAW_VRS
    assert _json("SeriesNumber", "IS", b"1 ") == "1 "
    assert _json("KVP", "DS", b"120 ") == "120 "
    assert _json("RescaleIntercept", "DS", b" -1000") == " -1000"  # leading space kept too
    assert _json("PixelSpacing", "DS", b"0.25\\0.25 ") == ["0.25", "0.25 "]  # only the last value is padded
    assert _json("WindowCenter", "DS", b"0 ") == ["0 "]  # VM 1-n, one value: still a list
    assert _json("NumberOfFrames", "IS", b"1\x00") == "1"  # a NUL is never part of a number string
    assert _json("SeriesNumber", "IS", b"  ") is None  # nothing but padding: no value


def test_multi_valued_values_each_lose_their_trailing_spaces() -> None:
    assert _json("ImageType", "CS", b"DERIVED\\PRIMARY\\AXIAL ") == ["DERIVED", "PRIMARY", "AXIAL"]
    assert _json("ImageType", "CS", b"ORIGINAL \\PRIMARY") == ["ORIGINAL", "PRIMARY"]
    assert _json("ImageType", "CS", b"ORIGINAL\\PRIMARY\\\\0015 ") == ["ORIGINAL", "PRIMARY", "", "0015"]
    assert _json("PatientOrientation", "CS", b"L\\P ") == ["L", "P"]
    assert _json("SpecificCharacterSet", "CS", b"ISO_IR 100") == ["ISO_IR 100"]  # inner space kept
    assert _json("SoftwareVersions", "LO", b"3.1.62") == ["3.1.62"]
    assert _json("OtherPatientIDs", "LO", b"A \\B ") == ["A", "B"]
    assert _json("OtherPatientNames", "PN", b"DOE^JOHN\\ROE^JANE ") == ["DOE^JOHN", "ROE^JANE"]
    uids = b"1.2.840.10008.5.1.4.1.1.2\\1.2.3\x00"
    assert _json("RelatedGeneralSOPClassUID", "UI", uids) == ["1.2.840.10008.5.1.4.1.1.2", "1.2.3"]


def test_empty_values() -> None:
    assert _json("PatientID", "LO", b"") is None
    assert _json("PatientID", "LO", b"  ") is None  # padding only
    assert _json("StudyInstanceUID", "UI", b"\x00\x00") is None
    assert _json("ImageType", "CS", b" ") is None
    assert _json("ImageType", "CS", b"A\\ ") == ["A", ""]  # an empty value among several is kept
    assert _json("AdditionalPatientHistory", "LT", b"  ") is None


def test_leading_spaces_are_kept_and_single_valued_text_keeps_backslashes() -> None:
    assert _json("PatientID", "LO", b"  P1 ") == "  P1"
    assert _json("TextValue", "UT", b" a\\b ") == " a\\b"  # UT is one value: a backslash is text
    assert _json("StudyComments", "LT", b"line 1\r\nline 2 ") == "line 1\r\nline 2"


def test_person_names_with_component_groups() -> None:
    raw = "Yamada^Tarou=山田^太郎=やまだ^たろう ".encode()
    elem = _raw("PatientName", "PN", raw)
    assert element_to_json(elem, ["utf_8"]) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert _json("PatientName", "PN", b"DOE^JOHN^^^ ") == "DOE^JOHN^^^"  # empty components are not padding
    assert _json("PatientName", "PN", b"^^^^ ") == "^^^^"


def test_private_text_uses_its_own_vr() -> None:
    assert _json(0x00091001, "LO", b"PRIVATE ") == "PRIVATE"
    assert _json(0x00090010, None, b"GEMS_IDEN_01") == "GEMS_IDEN_01"  # implicit private creator: LO
    assert _json(0x00091002, "DS", b"1.5 ") == "1.5 "


def test_text_json_and_normalise_json_agree() -> None:
    """The import's rule (from the value field) and the rule for stored JSON values give one answer."""
    cases = [
        ("LO", "ACC-PAT-A ", False),
        ("CS", "A \\B ", True),
        ("UI", "1.2.3\x00", False),
        ("PN", "NAME^NONE ", False),
        ("DS", "0.25\\0.25 ", True),
        ("IS", "1 ", False),
        ("ST", " text ", False),
    ]
    for vr, text, multiple in cases:
        padded = text.split("\\") if multiple else text
        assert normalise_json(vr, padded) == text_json(text, vr, multiple), (vr, text)
    assert normalise_json("LO", ["  "]) is None
    assert normalise_json("US", 5) == 5 and normalise_json(None, "x ") == "x "
    assert normalise_json("OB", "AAE=") == "AAE="


def test_generated_file_with_odd_values_imports_unpadded() -> None:
    data = factory.make_ct_series(
        1, rows=8, cols=8, seed=3, patient_id="ACC-PAT-A",
        study_uid="1.2.826.0.1.3680043.8.498.1", series_uid="1.2.826.0.1.3680043.8.498.23",
        PatientName="NAME^NONE", AccessionNumber="ACC-123", StudyID="S-1", StudyDescription="Head CT",
        StudyTime="083000.25", BodyPartExamined="CHEST", SeriesNumber="1", KVP="120",
        ImageType=["DERIVED", "PRIMARY", "AXIAL"], StationName="STUDIO5_11112",
    )[0]  # fmt: skip
    assert b"ACC-PAT-A " in data and b"1.2.826.0.1.3680043.8.498.1\x00" in data  # pydicom wrote the padding
    processed = process_instance(data)
    doc = document_from_instances("d" * 32, "i" * 32, [processed])
    patient, study = doc["Patient"]["DICOM"], doc["Study"]["DICOM"]
    series = doc["Study"]["Series"][processed.series_uid]
    assert processed.series_uid == "1.2.826.0.1.3680043.8.498.23"
    assert patient["PatientID"] == "ACC-PAT-A" and patient["PatientName"] == "NAME^NONE"
    assert study["StudyInstanceUID"] == "1.2.826.0.1.3680043.8.498.1"
    assert study["AccessionNumber"] == "ACC-123" and study["StudyID"] == "S-1"
    assert study["StudyDescription"] == "Head CT" and study["StudyTime"] == "083000.25"
    assert (
        series["DICOM"]["BodyPartExamined"] == "CHEST" and series["DICOM"]["StationName"] == "STUDIO5_11112"
    )
    assert series["DICOM"]["SeriesNumber"] == "1 "  # IS: as read
    instance = series["Instances"][processed.sop_uid]["DICOM"]
    assert instance["KVP"] == "120 " and instance["ImageType"] == ["DERIVED", "PRIMARY", "AXIAL"]
    tags = search_tags(doc)
    assert (
        tags["DICOMPatientId"] == patient["PatientID"] and tags["DICOMPatientName"] == patient["PatientName"]
    )
    assert tags["DICOMAccessionNumber"] == study["AccessionNumber"] and tags["DICOMStudyId"] == "S-1"
    assert tags["DICOMStudyInstanceUID"] == study["StudyInstanceUID"] and tags["DICOMSeriesNumber"] == 1
    assert tags["DICOMStudyTime"] == "083000.25" and tags["DICOMSeriesBodyPart"] == "CHEST"


def test_search_values_are_compared_without_trailing_padding() -> None:
    for member in ("DICOMPatientId", "DICOMAccessionNumber", "DICOMStudyId"):
        query = parse_criteria({"filters": [{"operator": "EQUAL", "values": [{member: "ACC-PAT-A "}]}]})
        assert query.filters[0].values == ["ACC-PAT-A"]
    query = parse_criteria({"filters": [{"operator": "EQUAL", "values": [{"DICOMPatientId": " P1"}]}]})
    assert query.filters[0].values == [" P1"]  # leading spaces are part of the value


# ---------------------------------------------------------------------------------- earlier documents


def _legacy_doc() -> tuple[dict[str, Any], dict[str, Any]]:
    """A document as an earlier version wrote it (padding kept), and what the import writes today."""
    current = {
        "SchemaVersion": "1.1",
        "DatastoreID": "d" * 32,
        "ImageSetID": "i" * 32,
        "Patient": {"DICOM": {"PatientID": "ACC-PAT-A", "PatientName": "NAME^NONE", "PatientSex": None}},
        "Study": {
            "DICOM": {"StudyInstanceUID": "1.2.3", "StudyTime": "083000.25", "PatientWeight": "70 "},
            "Series": {
                "1.2.3.4": {
                    "DICOM": {"SeriesNumber": "1 ", "Modality": "CT", "SoftwareVersions": ["3.1.62"]},
                    "Instances": {
                        "1.2.3.4.5": {
                            "DICOM": {
                                "SOPInstanceUID": "1.2.3.4.5",
                                "ImageType": ["DERIVED", "PRIMARY", "AXIAL"],
                                "PixelSpacing": ["0.25", "0.25 "],
                                "Rows": 8,
                                "FileMetaInformationVersion": "AAE=",
                                "00091001": "PRIVATE",
                                "ContributingEquipmentSequence": [
                                    {"StationName": "STUDIO5_11112", "00091001": "IN ITEM"}
                                ],
                            },
                            "DICOMVRs": {"00091001": "LO"},
                            "StoredTransferSyntaxUID": "1.2.840.10008.1.2.4.202",
                            "ImageFrames": [],
                        }
                    },
                }
            },
        },
    }
    legacy = json.loads(json.dumps(current))
    legacy["Patient"]["DICOM"].update(PatientID="ACC-PAT-A ", PatientName="NAME^NONE ")
    legacy["Study"]["DICOM"].update(StudyInstanceUID="1.2.3\x00", StudyTime="083000.25 ")
    inst = legacy["Study"]["Series"]["1.2.3.4"]["Instances"]["1.2.3.4.5"]["DICOM"]
    inst.update(SOPInstanceUID="1.2.3.4.5\x00", ImageType=["DERIVED", "PRIMARY", "AXIAL "])
    inst["00091001"] = "PRIVATE "
    inst["ContributingEquipmentSequence"][0].update(StationName="STUDIO5_11112 ", **{"00091001": "IN ITEM "})
    return legacy, current


def test_documents_of_earlier_versions_are_normalised_when_read() -> None:
    legacy, current = _legacy_doc()
    assert normalise_document(legacy) == current
    assert normalise_document(current) == current  # idempotent
    stored = gzip.compress(json.dumps(legacy, separators=(",", ":")).encode(), compresslevel=6, mtime=0)
    assert not is_current(stored)
    assert decode_document(stored) == current
    body = current_body(stored)
    assert is_current(body) and json.loads(gzip.decompress(body)) == current


def test_current_documents_are_served_byte_for_byte() -> None:
    _, current = _legacy_doc()
    stored = encode_document(current)
    assert stored.startswith(GZIP_HEADER) and is_current(stored)
    assert current_body(stored) is stored  # the hot path: a header check, no copy
    assert json.loads(gzip.decompress(stored)) == current  # any gzip reader skips the extra field
    assert decode_document(stored) == current


def test_update_values_use_the_same_rule() -> None:
    assert normalise_value("StudyDescription", "NEW ") == "NEW"
    assert normalise_value("SeriesNumber", "2 ") == "2 "
    assert normalise_value("00091001", "X ", {"00091001": "LO"}) == "X"
    assert normalise_value("00091001", "X ") == "X "  # private tag without a VR: left as given
    items = normalise_value("ContributingEquipmentSequence", [{"StationName": "S1 "}])
    assert items == [{"StationName": "S1"}]


# ---------------------------------------------------------------------------- the real AWS document

# Text values of the real AWS document (examples/ct-1-instance-htj2k-2025.json): keyword -> value.
AWS_VALUES: dict[str, Any] = {
    "PatientName": "NAME^NONE",
    "PatientID": "NOID",
    "PatientIdentityRemoved": "YES",
    "StudyTime": "000000.000",
    "StudyInstanceUID": "1.3.6.1.4.1.5962.99.1.5128099.2103784727.1533308485539.4.0",
    "SeriesInstanceUID": "1.3.6.1.4.1.5962.99.1.5128099.2103784727.1533308485539.5.0",
    "SOPInstanceUID": "1.3.6.1.4.1.5962.99.1.5128099.2103784727.1533308485539.26.0",
    "ManufacturerModelName": "i-CAT",
    "Manufacturer": "Imaging Sciences International",
    "ImplementationVersionName": "PIXELMEDJAVA001",
    "SourceApplicationEntityTitle": "STUDIO5_11112",
    "StationName": "STUDIO5_11112",
    "ContributionDateTime": "20180803160125.605+0100",
    "CodeMeaning": "Basic Application Confidentiality Profile",
    "ImageType": ["DERIVED", "PRIMARY", "AXIAL"],
    "PatientOrientation": ["L", "P"],
    "LossyImageCompressionMethod": ["ISO_10918_1"],
    "SeriesNumber": "1 ",
    "NumberOfFrames": "1 ",
    "KVP": "120 ",
    "RescaleIntercept": "-1000 ",
    "GantryDetectorTilt": "0.0 ",
    "ImagePositionPatient": ["0.000000", "0.000000", "-2.625000 "],
    "PixelSpacing": ["0.25", "0.25 "],
    "PixelAspectRatio": ["1", "1 "],
    "WindowCenter": ["0 "],
    "DeidentificationMethod": [
        "Deidentified",
        "Descriptors removed",
        "Patient Characteristics removed",
        "Device identity removed",
        "Institution identity removed",
        "Dates modified",
        "Unsafe private removed",
        "UIDs remapped",
    ],
}


def _value_field(vr: str, value: Any) -> bytes:
    """The DICOM value field a writer produced for ``value`` (IS/DS: AWS shows it with its pad)."""
    text = "\\".join(value) if isinstance(value, list) else value
    raw = text.encode("latin-1")
    if vr in RAW_VRS:
        assert len(raw) % 2 == 0, "AWS keeps the number string as read: the pad is in the value"
        return raw
    return raw + (b"\x00" if vr == "UI" else b" ") * (len(raw) % 2)


def _reproduced(keyword: str, value: Any) -> Any:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    vr = dictionary_VR(tag)
    assert vr in PADDED_VRS | RAW_VRS
    raw = _value_field(vr, value)
    assert text_json(raw.decode("latin-1"), vr, vm_is_multiple(tag)) == value
    return _json(keyword, vr, raw)


@pytest.mark.parametrize("keyword", sorted(AWS_VALUES))
def test_aws_example_text_values_are_reproduced(keyword: str) -> None:
    assert _reproduced(keyword, AWS_VALUES[keyword]) == AWS_VALUES[keyword]


def _text_values(node: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        tag = tag_for_keyword(key)
        if tag is None or value is None:
            continue
        vr = dictionary_VR(tag)
        if vr == "SQ":
            for item in value:
                out.extend(_text_values(item))
        elif vr in PADDED_VRS | RAW_VRS:
            out.append((key, value))
    return out


@pytest.mark.skipif(not AWS_EXAMPLE.is_file(), reason="the spec's example documents are not available")
def test_every_text_value_of_the_aws_example_is_reproduced() -> None:
    doc = json.loads(AWS_EXAMPLE.read_text())
    maps = [doc["Patient"]["DICOM"], doc["Study"]["DICOM"]]
    for series in doc["Study"]["Series"].values():
        maps.append(series["DICOM"])
        maps.extend(node["DICOM"] for node in series["Instances"].values())
    values = [kv for m in maps for kv in _text_values(m)]
    assert len(values) > 60
    for keyword, value in values:
        assert _reproduced(keyword, value) == value, keyword
    assert normalise_document(doc) == doc  # the normaliser leaves an AWS document as it is


def test_values_of_converted_elements_follow_the_same_rules() -> None:
    """Elements pydicom converted already (e.g. from a DICOM JSON metadata file) get the same rule."""
    ds = Dataset.from_json(
        {
            "00100020": {"vr": "LO", "Value": ["ACC-PAT-A "]},
            "00080008": {"vr": "CS", "Value": ["DERIVED ", "PRIMARY"]},
            "00081090": {"vr": "LO", "Value": ["i-CAT "]},
        }
    )
    assert element_to_json(ds["PatientID"]) == "ACC-PAT-A"
    assert element_to_json(ds["ImageType"]) == ["DERIVED", "PRIMARY"]
    assert element_to_json(ds["ManufacturerModelName"]) == "i-CAT"
    assert element_to_json(DataElement(0x00100020, "LO", "  ")) is None


@pytest.mark.skipif(not AWS_EXAMPLE.is_file(), reason="the spec's example documents are not available")
@pytest.mark.parametrize("path", sorted(AWS_EXAMPLE.parent.glob("*.json")), ids=lambda p: p.name)
def test_aws_documents_are_left_as_they_are(path: Path) -> None:
    doc = json.loads(path.read_text())
    if "Study" in doc:
        assert normalise_document(doc) == doc
