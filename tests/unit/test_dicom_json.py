"""PS3.18 F.2 DICOM JSON of a metadata document's instance: value encoding, VRs, bulk data, tag order."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydicom.dataset import Dataset

from openhi.dicom.dicom_json import DSNumber, bulkdata_value, dumps, instance_dicom_json
from openhi.dicom.instance_view import InstanceNotFound, instance_view, iter_instance_views

BIG = bytes(range(256)) * 8  # 2048 bytes: over the inline threshold
SMALL = b"\x01\x02\x03\x04"
LUT = b"\x00\x01" * 4


def document() -> dict[str, Any]:
    """A hand-built document: one instance with every kind of value the encoding has a rule for."""
    instance = {
        "FileMetaInformationGroupLength": 200,
        "TransferSyntaxUID": "1.2.840.10008.1.2.1",
        "SpecificCharacterSet": "ISO_IR 192",
        "ImageType": ["ORIGINAL", "PRIMARY", "", "0015"],
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "SOPInstanceUID": "1.2.3.4.5",
        "InstanceNumber": "11",
        "AcquisitionNumber": None,
        "SliceThickness": "0.25",
        "ImagePositionPatient": ["0.000000", "-2.625000 ", "9007199254740993"],
        "RescaleIntercept": " -1000",
        "WindowCenter": ["40", "+.5"],
        "FrameIncrementPointer": "00181063",
        "Rows": 2,
        "Columns": 2,
        "BitsAllocated": 16,
        "PixelRepresentation": 1,
        "SmallestImagePixelValue": 5,
        "DerivationCodeSequence": None,
        "ModalityLUTSequence": [{"LUTDescriptor": [4, 0, 16], "LUTData": base64.b64encode(LUT).decode()}],
        "ReferencedImageSequence": [
            {"ReferencedSOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "00091010": base64.b64encode(BIG).decode()}
        ],
        "00090010": "ACME 1.0",
        "00091001": base64.b64encode(SMALL).decode(),
        "00091002": base64.b64encode(BIG).decode(),
        "00091003": ["a", "b"],
        "PixelData": None,
    }
    return {
        "SchemaVersion": "1.1",
        "DatastoreID": "d" * 32,
        "ImageSetID": "i" * 32,
        "Patient": {"DICOM": {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう", "PatientID": "P1"}},
        "Study": {
            "DICOM": {"StudyInstanceUID": "1.2.3", "ReferringPhysicianName": None},
            "Series": {
                "1.2.3.4": {
                    "DICOM": {"SeriesInstanceUID": "1.2.3.4", "Modality": "CT", "SeriesNumber": "1 "},
                    "Instances": {
                        "1.2.3.4.5": {
                            "DICOM": instance,
                            "DICOMVRs": {
                                "00090010": "LO",
                                "00091001": "OB",
                                "00091002": "UN",
                                "00091003": "SH",
                                "00091010": "OB",
                            },
                            "StoredTransferSyntaxUID": "1.2.840.10008.1.2.4.202",
                            "ImageFrames": [{"ID": "f" * 32}],
                        }
                    },
                }
            },
        },
    }


def _json(**kwargs: Any) -> dict[str, Any]:
    return instance_dicom_json(instance_view(document(), "1.2.3.4.5"), **kwargs)


def test_values_follow_ps3_18_f2() -> None:
    out = _json()
    assert out["00100010"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}],
    }
    assert out["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", None, "0015"]}
    assert out["00200013"] == {"vr": "IS", "Value": [11]}
    assert out["00200011"] == {"vr": "IS", "Value": [1]}  # "1 " from the series level
    assert out["00281052"] == {"vr": "DS", "Value": [DSNumber("-1000")]}
    assert out["00281050"]["Value"] == [
        DSNumber("40"),
        DSNumber("0.5"),
    ]  # "+.5" is not JSON: canonical digits
    assert out["00280009"] == {"vr": "AT", "Value": ["00181063"]}
    assert out["00280010"] == {"vr": "US", "Value": [2]}
    assert out["00280106"] == {"vr": "SS", "Value": [5]}  # US or SS: Pixel Representation 1
    assert out["00200012"] == {"vr": "IS"}  # empty: no Value
    assert out["00089215"] == {"vr": "SQ"}
    assert out["00080090"] == {"vr": "PN"}
    lut = out["00283000"]["Value"][0]
    assert lut["00283002"] == {"vr": "SS", "Value": [4, 0, 16]}  # US or SS: Pixel Representation 1
    assert lut["00283006"] == {"vr": "OW", "InlineBinary": base64.b64encode(LUT).decode()}  # US or OW: base64
    assert out["00090010"] == {"vr": "LO", "Value": ["ACME 1.0"]}
    assert out["00091003"] == {"vr": "SH", "Value": ["a", "b"]}
    # without a bulk data URI builder every binary is inline and Pixel Data is left out
    assert out["00091002"] == {"vr": "UN", "InlineBinary": base64.b64encode(BIG).decode()}
    assert "7FE00010" not in out


def test_keys_ascending_file_meta_excluded() -> None:
    out = _json(bulkdata_uri=lambda path: f"/bulk/{path}")
    keys = list(out)
    assert keys == sorted(keys) and all(len(k) == 8 and k == k.upper() for k in keys)
    assert not [k for k in keys if k.startswith("0002")]
    assert keys[-1] == "7FE00010"
    for item in out["00081140"]["Value"]:
        assert list(item) == sorted(item)


def test_bulk_data_threshold_and_uris() -> None:
    out = _json(bulkdata_uri=lambda path: f"/bulk/{path}", inline_max=16)
    assert out["00091001"] == {"vr": "OB", "InlineBinary": base64.b64encode(SMALL).decode()}
    assert out["00091002"] == {"vr": "UN", "BulkDataURI": "/bulk/00091002"}
    assert out["00081140"]["Value"][0]["00091010"] == {"vr": "OB", "BulkDataURI": "/bulk/00081140/0/00091010"}
    assert out["7FE00010"] == {"vr": "OW", "BulkDataURI": "/bulk/7FE00010"}
    view = instance_view(document(), "1.2.3.4.5")
    assert bulkdata_value(view, "00091002") == BIG
    assert bulkdata_value(view, "00081140/0/00091010") == BIG
    for missing in (
        "00091003",
        "00081140/1/00091010",
        "00081140/x/00091010",
        "7FE00010",
        "00020001",
        "12345678",
    ):
        with pytest.raises(KeyError):
            bulkdata_value(view, missing)


def test_dumps_keeps_ds_digits_and_is_valid_json() -> None:
    text = dumps(_json(bulkdata_uri=lambda path: f"/bulk/{path}"))
    assert '"Value":[0.000000,-2.625000,9007199254740993]' in text  # no float rounding
    assert '"Value":[-1000]' in text
    parsed = json.loads(text)
    assert parsed["00100010"]["Value"][0]["Ideographic"] == "山田^太郎"
    assert dumps({"a": [None, True, 1.5, '\u2028"']}) == '{"a":[null,true,1.5,"\u2028\\""]}'
    with pytest.raises(ValueError):
        dumps({"a": float("nan")})


def test_pydicom_reads_it_back() -> None:
    text = dumps(_json(bulkdata_uri=lambda path: f"/bulk/{path}", inline_max=16))
    ds = Dataset.from_json(json.loads(text), bulk_data_uri_handler=lambda tag, vr, uri: BIG)
    assert str(ds.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert ds.InstanceNumber == 11 and ds.SliceThickness == 0.25 and ds.RescaleIntercept == -1000
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "", "0015"]
    assert ds.FrameIncrementPointer == 0x00181063
    assert ds[0x00091001].value == SMALL and ds[0x00091002].value == BIG
    assert ds.ModalityLUTSequence[0].LUTData == [1, 1, 1, 1] or ds.ModalityLUTSequence[0].LUTData == LUT


def test_view_merges_levels_and_finds_instances() -> None:
    doc = document()
    doc["Study"]["Series"]["1.2.3.4"]["DICOM"]["PatientID"] = "series-level"  # a later level wins
    view = instance_view(doc, "1.2.3.4.5", "1.2.3.4")
    assert view.attributes["PatientID"] == "series-level" and view.attributes["Modality"] == "CT"
    assert view.frame_ids == ("f" * 32,) and view.stored_transfer_syntax == "1.2.840.10008.1.2.4.202"
    assert view.study_uid == "1.2.3" and [v.sop_uid for v in iter_instance_views(doc)] == ["1.2.3.4.5"]
    with pytest.raises(InstanceNotFound):
        instance_view(doc, "1.2.3.4.5", "9.9")
    with pytest.raises(InstanceNotFound):
        instance_view(doc, "9.9")
