"""Contract tests: importConfiguration's DICOM JSON metadata mappings applied by a real import job (boto3)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from contract.helpers import active_datastore, wait_for
from contract.imaging import ROLE, metadata, read_reports, stage
from dicom_factory import make_ct_series, uid
from openhi.testing import RunningServer


def _pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


def _start(client: Any, datastore_id: str, input_uri: str, mappings: list[dict[str, Any]]) -> dict[str, Any]:
    job = client.start_dicom_import_job(
        datastoreId=datastore_id,
        dataAccessRoleArn=ROLE,
        inputS3Uri=input_uri,
        outputS3Uri="s3://output-bucket/config/",
        importConfiguration={"dicomJsonMetadataImportConfiguration": {"dicomMetadataMappings": mappings}},
    )
    props: dict[str, Any] = wait_for(
        lambda: client.get_dicom_import_job(datastoreId=datastore_id, jobId=job["jobId"])["jobProperties"],
        lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"),
        timeout=300,
        step=0.1,
    )
    return props


def _instances(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [i["DICOM"] for s in doc["Study"]["Series"].values() for i in s["Instances"].values()]


def test_metadata_mappings_override_add_fail_and_warn(
    medical_imaging: Any, openhi_server: RunningServer
) -> None:
    ds_id = active_datastore(medical_imaging, "jsonmeta")
    study, broken_study, missing_study = uid("jm-study", 1), uid("jm-study", 2), uid("jm-study", 3)
    series_a, series_b = uid("jm-series", 1), uid("jm-series", 2)
    a = make_ct_series(
        2, seed=61, study_uid=study, series_uid=series_a, patient_id="JM-1", PatientName="FILE^A"
    )
    b = make_ct_series(
        2, seed=62, study_uid=study, series_uid=series_b, patient_id="JM-1", PatientName="FILE^B"
    )
    c = make_ct_series(1, seed=63, study_uid=broken_study, patient_id="JM-2")
    d = make_ct_series(1, seed=64, study_uid=missing_study, patient_id="JM-3")
    files = {"a/1.dcm": a[0], "a/2.dcm": a[1], "b/1.dcm": b[0], "b/2.dcm": b[1], "c.dcm": c[0], "d.dcm": d[0]}
    files["meta/study.json"] = json.dumps(
        {"00100010": _pn("DOE^JANE"), "00204000": {"vr": "LT", "Value": ["ADDED FROM JSON"]}}
    ).encode()
    files["meta/series.json"] = json.dumps([{"00100010": _pn("DOE^JOHN")}]).encode()  # an array of one
    files["meta/broken.json"] = b'{"00100010": {"vr": "PN", "Value": '
    input_uri = stage(openhi_server, files)
    mappings = [
        {"studyInstanceUID": study, "metadataFilePath": "meta/study.json"},
        {"studyInstanceUID": study, "seriesInstanceUID": series_a, "metadataFilePath": "meta/series.json"},
        {"studyInstanceUID": broken_study, "metadataFilePath": "meta/broken.json"},
        {"studyInstanceUID": missing_study, "metadataFilePath": "meta/absent.json"},
        {"studyInstanceUID": uid("jm-study", 9), "metadataFilePath": "meta/study.json"},
    ]
    props = _start(medical_imaging, ds_id, input_uri, mappings)
    assert props["jobStatus"] == "COMPLETED", props
    got = props["importConfiguration"]["dicomJsonMetadataImportConfiguration"]["dicomMetadataMappings"]
    assert got == mappings
    reports = read_reports(openhi_server, props["outputS3Uri"])
    manifest = reports["manifest"]
    prefix = input_uri.split("/", 3)[3]
    # the metadata files are not DICOM input: 6 scanned, 4 imported, 2 refused
    assert (manifest["numberOfScannedFiles"], manifest["numberOfImportedFiles"]) == (6, 4)
    assert manifest["numberOfFilesWithCustomerError"] == 2
    failures = {f["inputFile"][len(prefix) :]: f["exception"] for f in reports["failure"]}
    assert set(failures) == {"c.dcm", "d.dcm"}
    assert "dicomMetadataMappings[2] (metadataFilePath meta/broken.json)" in failures["c.dcm"]["message"]
    assert "not one DICOM JSON dataset" in failures["c.dcm"]["message"]
    assert "dicomMetadataMappings[3] (metadataFilePath meta/absent.json)" in failures["d.dcm"]["message"]
    assert "does not exist" in failures["d.dcm"]["message"]
    [warning] = reports["warning"]
    assert warning["inputFile"] == prefix + "meta/study.json" and warning["metadataMapping"] == 4
    assert warning["warnings"][0]["type"] == "UNMATCHED_METADATA_MAPPING"
    assert "dicomMetadataMappings[4]" in warning["warnings"][0]["message"]

    by_file = {s["inputFile"][len(prefix) :]: s["importResponse"]["imageSetId"] for s in reports["success"]}
    doc_a = metadata(medical_imaging, ds_id, by_file["a/1.dcm"])
    doc_b = metadata(medical_imaging, ds_id, by_file["b/1.dcm"])
    # the study+series mapping wins over the study mapping; the study mapping's other attributes still apply
    assert doc_a["Patient"]["DICOM"]["PatientName"] == "DOE^JOHN"
    assert doc_b["Patient"]["DICOM"]["PatientName"] == "DOE^JANE"
    for doc in (doc_a, doc_b):
        assert [i["ImageComments"] for i in _instances(doc)] == ["ADDED FROM JSON"] * 2
        assert doc["Patient"]["DICOM"]["PatientID"] == "JM-1"  # what the files set and no mapping names
    found = medical_imaging.search_image_sets(
        datastoreId=ds_id,
        searchCriteria={"filters": [{"values": [{"DICOMPatientId": "JM-1"}], "operator": "EQUAL"}]},
    )["imageSetsMetadataSummaries"]
    assert {s["DICOMTags"]["DICOMPatientName"] for s in found} == {"DOE^JOHN", "DOE^JANE"}


@pytest.mark.parametrize("path", ["../escape.json", "meta//x.json", "meta/./x.json"])
def test_a_metadata_path_outside_the_input_is_refused(
    medical_imaging: Any, openhi_server: RunningServer, path: str
) -> None:
    ds_id = active_datastore(medical_imaging, "jsonmetapath")
    input_uri = stage(openhi_server, {"x.dcm": make_ct_series(1, seed=65)[0]})
    with pytest.raises(ClientError) as exc:
        medical_imaging.start_dicom_import_job(
            datastoreId=ds_id,
            dataAccessRoleArn=ROLE,
            inputS3Uri=input_uri,
            outputS3Uri="s3://output-bucket/config/",
            importConfiguration={
                "dicomJsonMetadataImportConfiguration": {
                    "dicomMetadataMappings": [{"studyInstanceUID": "1.2.3", "metadataFilePath": path}]
                }
            },
        )
    error = exc.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "dicomMetadataMappings[0]" in error["Message"]
    assert medical_imaging.list_dicom_import_jobs(datastoreId=ds_id)["jobSummaries"] == []
