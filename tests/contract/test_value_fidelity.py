"""Contract tests: odd-length DICOM text values come back unpadded, the same in the metadata document, in the
SearchImageSets DICOMTags and in search matching, also after updates, copies and for documents of earlier versions."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from contract.helpers import active_datastore
from contract.imaging import metadata, run_import, wait_active
from dicom_factory import make_ct_series
from openhi.testing import RunningServer

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"  # 27 characters: written with a NUL pad
SERIES_UID = "1.2.826.0.1.3680043.8.498.23"  # 28: no pad
ODD = {
    "PatientName": "NAME^NONE",
    "AccessionNumber": "ACC-123",
    "StudyID": "S-1",
    "StudyDescription": "Head CT",
    "StudyTime": "083000.25",
    "StudyDate": "20240102",
    "BodyPartExamined": "CHEST",
    "SeriesNumber": "1",
    "KVP": "120",
    "StationName": "STUDIO5_11112",
    "ImageType": ["DERIVED", "PRIMARY", "AXIAL"],
}
#: GZIP header of a document written in the current format (a gzip extra field with the format number)
CURRENT_HEADER = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\x03\x05\x00OH\x01\x00\x02"


def _files(patient_id: str = "ACC-PAT-A", seed: int = 41) -> dict[str, bytes]:
    series = make_ct_series(
        2, rows=8, cols=8, seed=seed, patient_id=patient_id, study_uid=STUDY_UID, series_uid=SERIES_UID, **ODD
    )
    for data in series:
        assert f"{patient_id} ".encode() in data and f"{STUDY_UID}\x00".encode() in data  # padded in the file
    return {f"odd/{i}.dcm": data for i, data in enumerate(series)}


class Odd:
    def __init__(self, client: Any, ds: str, set_id: str) -> None:
        self.client, self.ds, self.set_id = client, ds, set_id

    def search(self, member: str, value: str) -> list[dict[str, Any]]:
        filters = [{"operator": "EQUAL", "values": [{member: value}]}]
        resp = self.client.search_image_sets(datastoreId=self.ds, searchCriteria={"filters": filters})
        found: list[dict[str, Any]] = resp["imageSetsMetadataSummaries"]
        return found

    def summary(self, set_id: str | None = None) -> dict[str, Any]:
        [found] = [
            s
            for s in self.search("DICOMPatientId", "ACC-PAT-A")
            if s["imageSetId"] == (set_id or self.set_id)
        ]
        return found


@pytest.fixture(scope="module")
def odd(openhi_server: RunningServer) -> Odd:
    client = openhi_server.client()
    ds = active_datastore(client, "fidelity")
    result = run_import(client, openhi_server, ds, _files())
    assert result["job"]["jobStatus"] == "COMPLETED" and not result["failure"]
    [summary] = result["manifest"]["imageSetsSummary"]
    return Odd(client, ds, summary["imageSetId"])


def _levels(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    series = doc["Study"]["Series"][SERIES_UID]
    instance = next(iter(series["Instances"].values()))["DICOM"]
    return doc["Patient"]["DICOM"], doc["Study"]["DICOM"], series["DICOM"], instance


def _assert_agree(doc: dict[str, Any], tags: dict[str, Any]) -> None:
    """DICOMTags show exactly the document's values."""
    patient, study, series, _ = _levels(doc)
    assert tags["DICOMPatientId"] == patient["PatientID"]
    assert tags["DICOMPatientName"] == patient["PatientName"]
    assert tags["DICOMStudyInstanceUID"] == study["StudyInstanceUID"]
    assert tags["DICOMAccessionNumber"] == study["AccessionNumber"]
    assert tags["DICOMStudyId"] == study["StudyID"]
    assert tags["DICOMStudyDescription"] == study["StudyDescription"]
    assert tags["DICOMStudyTime"] == study["StudyTime"] and tags["DICOMStudyDate"] == study["StudyDate"]
    assert tags["DICOMSeriesInstanceUID"] == series["SeriesInstanceUID"]
    assert tags["DICOMSeriesBodyPart"] == series["BodyPartExamined"]
    assert tags["DICOMSeriesNumber"] == int(series["SeriesNumber"])


def test_document_values_are_unpadded_except_number_strings(odd: Odd) -> None:
    doc = metadata(odd.client, odd.ds, odd.set_id)
    patient, study, series, instance = _levels(doc)
    assert patient["PatientID"] == "ACC-PAT-A" and patient["PatientName"] == "NAME^NONE"
    assert study["StudyInstanceUID"] == STUDY_UID and study["AccessionNumber"] == "ACC-123"
    assert study["StudyID"] == "S-1" and study["StudyDescription"] == "Head CT"
    assert study["StudyTime"] == "083000.25"
    assert series["BodyPartExamined"] == "CHEST" and series["StationName"] == "STUDIO5_11112"
    assert series["SeriesNumber"] == "1 "  # IS keeps the string as read, as AWS does
    assert instance["KVP"] == "120 "  # DS too
    assert instance["ImageType"] == ["DERIVED", "PRIMARY", "AXIAL"]
    assert instance["InstanceNumber"] in ("1 ", "2 ")


def test_search_summary_shows_the_document_values(odd: Odd) -> None:
    _assert_agree(metadata(odd.client, odd.ds, odd.set_id), odd.summary()["DICOMTags"])


@pytest.mark.parametrize(
    ("member", "keyword"),
    [
        ("DICOMPatientId", "PatientID"),
        ("DICOMAccessionNumber", "AccessionNumber"),
        ("DICOMStudyId", "StudyID"),
        ("DICOMStudyInstanceUID", "StudyInstanceUID"),
        ("DICOMSeriesInstanceUID", "SeriesInstanceUID"),
    ],
)
def test_search_with_the_document_value_finds_the_set(odd: Odd, member: str, keyword: str) -> None:
    patient, study, series, _ = _levels(metadata(odd.client, odd.ds, odd.set_id))
    value = {**patient, **study, **series}[keyword]
    assert [s["imageSetId"] for s in odd.search(member, value)] == [odd.set_id]


def test_trailing_spaces_of_a_search_value_are_padding(odd: Odd) -> None:
    for member, value in (("DICOMPatientId", "ACC-PAT-A "), ("DICOMAccessionNumber", "ACC-123  ")):
        assert [s["imageSetId"] for s in odd.search(member, value)] == [odd.set_id]
    assert odd.search("DICOMPatientId", " ACC-PAT-A") == []  # a leading space is part of the value
    assert odd.search("DICOMPatientId", "ACC-PAT") == []  # exact match, not a prefix


def test_updates_and_copies_keep_values_unpadded(odd: Odd) -> None:
    client = odd.client
    latest = client.get_image_set(datastoreId=odd.ds, imageSetId=odd.set_id)["versionId"]
    updates = {"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDescription": "Odd desc"}}}
    client.update_image_set_metadata(
        datastoreId=odd.ds, imageSetId=odd.set_id, latestVersionId=latest,
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(updates).encode()}},
    )  # fmt: skip
    wait_active(client, odd.ds, odd.set_id)
    doc = metadata(client, odd.ds, odd.set_id)
    assert doc["Study"]["DICOM"]["StudyDescription"] == "Odd desc"
    assert doc["Patient"]["DICOM"]["PatientID"] == "ACC-PAT-A"
    _assert_agree(doc, odd.summary()["DICOMTags"])

    version = client.get_image_set(datastoreId=odd.ds, imageSetId=odd.set_id)["versionId"]
    resp = client.copy_image_set(
        datastoreId=odd.ds, sourceImageSetId=odd.set_id,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": version}},
    )  # fmt: skip
    copy_id = resp["destinationImageSetProperties"]["imageSetId"]
    wait_active(client, odd.ds, copy_id)
    wait_active(client, odd.ds, odd.set_id)
    copied = metadata(client, odd.ds, copy_id)
    assert _levels(copied)[:3] == _levels(doc)[:3]
    _assert_agree(copied, odd.summary(copy_id)["DICOMTags"])


# ------------------------------------------------------------------ documents written by earlier versions


def _plant(server: Any, key: str, data: bytes) -> None:
    """Replace a stored blob, as an earlier openhi version would have written it."""
    if hasattr(server, "blobs_bucket"):  # distributed: the S3 blob store
        server.stage_object(server.blobs_bucket, f"blobs/{key}", data)
        return
    from openhi.storage.blobs_fs import FsBlobStore

    path = FsBlobStore(server.data_dir / "blobs").local_path(key)
    assert path is not None and path.is_file()
    path.write_bytes(data)


def _padded(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the padding earlier versions kept: odd-length text values carry their pad again."""
    legacy: dict[str, Any] = json.loads(json.dumps(doc))
    patient, study, series, instance = _levels(legacy)
    patient["PatientID"] += " "
    patient["PatientName"] += " "
    study["StudyInstanceUID"] += "\x00"
    study["AccessionNumber"] += " "
    study["StudyTime"] += " "
    series["StationName"] += " "
    instance["ImageType"][-1] += " "
    return legacy


def test_documents_of_earlier_versions_are_served_normalised(openhi_fresh: RunningServer) -> None:
    client = openhi_fresh.client()
    ds = active_datastore(client, "legacy")
    result = run_import(client, openhi_fresh, ds, _files("ACC-PAT-A", seed=43))
    [summary] = result["manifest"]["imageSetsSummary"]
    set_id = summary["imageSetId"]
    key = f"metadata/{ds}/{set_id}/1.json.gz"
    stored = openhi_fresh.read_blob(key)
    assert stored is not None and stored.startswith(CURRENT_HEADER)
    current = json.loads(gzip.decompress(stored))
    legacy = _padded(current)
    _plant(openhi_fresh, key, gzip.compress(json.dumps(legacy, separators=(",", ":")).encode(), mtime=0))

    body = client.get_image_set_metadata(datastoreId=ds, imageSetId=set_id)["imageSetMetadataBlob"].read()
    assert body.startswith(CURRENT_HEADER)  # served in the current format
    assert json.loads(gzip.decompress(body)) == current

    # an update reads the earlier document and writes the new version unpadded
    updates = {"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDescription": "Later"}}}
    client.update_image_set_metadata(
        datastoreId=ds, imageSetId=set_id, latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(updates).encode()}},
    )  # fmt: skip
    wait_active(client, ds, set_id)
    new_key = f"metadata/{ds}/{set_id}/2.json.gz"
    written = openhi_fresh.read_blob(new_key)
    assert written is not None and written.startswith(CURRENT_HEADER)
    expected = json.loads(json.dumps(current))
    expected["Study"]["DICOM"]["StudyDescription"] = "Later"
    assert json.loads(gzip.decompress(written)) == expected
    assert metadata(client, ds, set_id, "1") == current  # the earlier version, normalised on read


def test_padded_update_values_are_stored_unpadded(odd: Odd) -> None:
    client = odd.client
    latest = client.get_image_set(datastoreId=odd.ds, imageSetId=odd.set_id)["versionId"]
    updates = {
        "SchemaVersion": "1.1",
        "Study": {"DICOM": {"StudyDescription": "Padded ", "PatientWeight": "70 "}},
    }
    client.update_image_set_metadata(
        datastoreId=odd.ds, imageSetId=odd.set_id, latestVersionId=latest,
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(updates).encode()}},
    )  # fmt: skip
    wait_active(client, odd.ds, odd.set_id)
    doc = metadata(client, odd.ds, odd.set_id)
    assert doc["Study"]["DICOM"]["PatientWeight"] == "70 "  # DS: as given
    assert doc["Study"]["DICOM"]["StudyDescription"] == "Padded"
    _assert_agree(doc, odd.summary()["DICOMTags"])
