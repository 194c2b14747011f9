"""Contract tests: DICOM import jobs through boto3 against a real server (embedded buckets)."""

from __future__ import annotations

import io
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from botocore.exceptions import ClientError
from pydicom.data import get_testdata_file

from contract.helpers import active_datastore, wait_for
from contract.imaging import ROLE, metadata, read_reports, run_import, stage
from dicom_factory import make_ct_series
from openhi.testing import RunningServer


def _testfile(name: str) -> bytes | None:
    path = get_testdata_file(name, download=False)
    return None if path is None else Path(str(path)).read_bytes()


def _decode_frame(blob: bytes) -> np.ndarray:
    """Decode a GetImageFrame answer with OpenJPEG in JP2-box mode, as AWS's own example does."""
    from openjpeg.utils import decode

    return np.asarray(decode(io.BytesIO(blob), 2))


def _decode_imagecodecs(blob: bytes) -> np.ndarray:
    """32-bit samples: OpenJPEG can't; OpenJPH (through imagecodecs) is the independent decoder."""
    import imagecodecs

    from openhi.codec.jph import unwrap

    return np.asarray(imagecodecs.htj2k_decode(unwrap(blob)))


def test_job_lifecycle_reports_and_listing(medical_imaging: Any, openhi_server: RunningServer) -> None:
    ds_id = active_datastore(medical_imaging, "jobs")
    files = {f"series/ct{i}.dcm": data for i, data in enumerate(make_ct_series(3))}
    input_uri = stage(openhi_server, files)
    started = medical_imaging.start_dicom_import_job(
        datastoreId=ds_id,
        dataAccessRoleArn=ROLE,
        inputS3Uri=input_uri,
        outputS3Uri="s3://output-bucket/jobs/",
    )
    assert started["jobStatus"] == "SUBMITTED" and started["datastoreId"] == ds_id
    assert re.fullmatch(r"[0-9a-z]{32}", started["jobId"])
    props = wait_for(
        lambda: medical_imaging.get_dicom_import_job(datastoreId=ds_id, jobId=started["jobId"])[
            "jobProperties"
        ],
        lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"),
    )
    assert props["jobStatus"] == "COMPLETED"
    assert props["outputS3Uri"] == f"s3://output-bucket/jobs/{ds_id}-DicomImport-{started['jobId']}/"
    assert props["inputS3Uri"] == input_uri
    assert props["jobName"] and props["dataAccessRoleArn"] == ROLE
    assert props["submittedAt"] <= props["endedAt"]
    reports = read_reports(openhi_server, props["outputS3Uri"])
    manifest = reports["manifest"]
    assert manifest["numberOfScannedFiles"] == 3 and manifest["numberOfImportedFiles"] == 3
    assert manifest["numberOfGeneratedImageSets"] == 1
    assert manifest["imageSetsSummary"][0]["numberOfMatchedSOPInstances"] == 3
    assert manifest["successOutputS3Uri"] == props["outputS3Uri"] + "SUCCESS/"
    success = reports["success"]
    assert sorted(s["inputFile"] for s in success) == sorted(input_uri.split("/", 3)[3] + k for k in files)
    assert all(s["importResponse"]["isPrimary"] is True for s in success)
    assert (
        openhi_server.read_object(
            "output-bucket", f"jobs/{ds_id}-DicomImport-{started['jobId']}/FAILURE/failure.ndjson"
        )
        == b""
    )

    second = run_import(medical_imaging, openhi_server, ds_id, {"x.dcm": make_ct_series(1, seed=7)[0]})
    listed = medical_imaging.list_dicom_import_jobs(datastoreId=ds_id)["jobSummaries"]
    assert [j["jobId"] for j in listed] == [second["job"]["jobId"], started["jobId"]]  # newest first
    assert "outputS3Uri" not in listed[0]
    page = medical_imaging.list_dicom_import_jobs(datastoreId=ds_id, maxResults=1)
    rest = medical_imaging.list_dicom_import_jobs(
        datastoreId=ds_id, maxResults=1, nextToken=page["nextToken"]
    )
    assert [page["jobSummaries"][0]["jobId"], rest["jobSummaries"][0]["jobId"]] == [
        j["jobId"] for j in listed
    ]
    done = medical_imaging.list_dicom_import_jobs(datastoreId=ds_id, jobStatus="COMPLETED")["jobSummaries"]
    assert len(done) == 2
    assert medical_imaging.list_dicom_import_jobs(datastoreId=ds_id, jobStatus="FAILED")["jobSummaries"] == []


def test_client_token_idempotency_and_errors(medical_imaging: Any, openhi_server: RunningServer) -> None:
    ds_id = active_datastore(medical_imaging, "jobtokens")
    uri = stage(openhi_server, {"a.dcm": make_ct_series(1)[0]})
    kwargs = {
        "datastoreId": ds_id,
        "dataAccessRoleArn": ROLE,
        "inputS3Uri": uri,
        "outputS3Uri": "s3://o-b/x/",
    }
    first = medical_imaging.start_dicom_import_job(clientToken="job-token-1", **kwargs)
    again = medical_imaging.start_dicom_import_job(clientToken="job-token-1", **kwargs)
    assert again["jobId"] == first["jobId"]
    with pytest.raises(ClientError) as exc:
        medical_imaging.start_dicom_import_job(
            clientToken="job-token-1", **{**kwargs, "outputS3Uri": "s3://o-b/y/"}
        )
    assert exc.value.response["Error"]["Code"] == "ConflictException"
    with pytest.raises(ClientError) as exc:
        medical_imaging.start_dicom_import_job(**{**kwargs, "datastoreId": "1" * 32})
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        medical_imaging.get_dicom_import_job(datastoreId=ds_id, jobId="2" * 32)
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    for bad in ("s3://in-bucket/../escape/", "s3://in-bucket/a/../../b/"):
        with pytest.raises(ClientError) as exc:
            medical_imaging.start_dicom_import_job(**{**kwargs, "inputS3Uri": bad})
        assert exc.value.response["Error"]["Code"] == "ValidationException"
        assert ".." in exc.value.response["Error"]["Message"]


def test_creating_datastore_rejects_jobs(medical_imaging: Any) -> None:
    ds_id = medical_imaging.create_datastore(datastoreName="fresh")["datastoreId"]
    status = medical_imaging.get_datastore(datastoreId=ds_id)["datastoreProperties"]["datastoreStatus"]
    if status == "CREATING":
        with pytest.raises(ClientError) as exc:
            medical_imaging.start_dicom_import_job(
                datastoreId=ds_id,
                dataAccessRoleArn=ROLE,
                inputS3Uri="s3://in-b/a/",
                outputS3Uri="s3://o-b/x/",
            )
        assert exc.value.response["Error"]["Code"] == "ConflictException"
    wait_for(
        lambda: medical_imaging.get_datastore(datastoreId=ds_id)["datastoreProperties"]["datastoreStatus"],
        lambda s: s == "ACTIVE",
    )


PYDICOM_FILES = [
    "CT_small.dcm",  # 16-bit signed, explicit LE
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_rle.dcm",  # RGB, RLE
    "SC_rgb_rle_2frame.dcm",  # multi-frame RGB RLE
    "rtdose_rle.dcm",  # 15-frame 32-bit RLE
    "examples_rgb_color.dcm",  # RGB native
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless -> HTJ2K
    "examples_jpeg2k.dcm",
    "image_dfl.dcm",  # deflated
    "JPEGLSNoMod_16.dcm",  # JPEG-LS lossless
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline: stored as-is
    "examples_ybr_color.dcm",  # 30-frame JPEG baseline: stored as-is
    "JPEG2000.dcm",  # JPEG 2000 lossy: stored as-is
]


def test_pydicom_files_import_pixel_exact(medical_imaging: Any, openhi_server: RunningServer) -> None:
    ds_id = active_datastore(medical_imaging, "pydicom")
    files = {name: data for name in PYDICOM_FILES if (data := _testfile(name)) is not None}
    assert len(files) >= 12, sorted(files)
    checked = 0
    for name, data in files.items():
        # one job per file: several pydicom files share SOP Instance UIDs and would replace each other
        result = run_import(medical_imaging, openhi_server, ds_id, {name: data})
        assert result["job"]["jobStatus"] == "COMPLETED"
        assert result["failure"] == [], result["failure"]
        image_set_id = result["success"][0]["importResponse"]["imageSetId"]
        source = pydicom.dcmread(io.BytesIO(data))
        doc = metadata(medical_imaging, ds_id, image_set_id)
        series = doc["Study"]["Series"][source.SeriesInstanceUID]
        node = series["Instances"][source.SOPInstanceUID]
        assert doc["SchemaVersion"] == "1.1" and doc["DatastoreID"] == ds_id
        assert node["DICOM"]["PixelData"] is None
        assert node["DICOM"]["TransferSyntaxUID"] == source.file_meta.TransferSyntaxUID
        stored = node["StoredTransferSyntaxUID"]
        frames = node["ImageFrames"]
        assert len(frames) == int(getattr(source, "NumberOfFrames", 1) or 1)
        if stored not in ("1.2.840.10008.1.2.4.202",):
            assert stored == source.file_meta.TransferSyntaxUID  # 4.50 / 4.91 are kept as-is
            continue
        expected = source.pixel_array
        if len(frames) == 1:
            expected = expected[np.newaxis]
        for index, frame in enumerate(frames):
            resp = medical_imaging.get_image_frame(
                datastoreId=ds_id,
                imageSetId=image_set_id,
                imageFrameInformation={"imageFrameId": frame["ID"]},
            )
            assert resp["contentType"] == "image/jph"
            blob = resp["imageFrameBlob"].read()
            pixels = _decode_frame(blob) if expected.dtype.itemsize < 4 else _decode_imagecodecs(blob)
            want = expected[index]
            assert np.array_equal(pixels.reshape(want.shape), want), name
            crc = zlib.crc32(np.ascontiguousarray(pixels).tobytes()) & 0xFFFFFFFF
            assert crc == frame["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"], name
            checked += 1
    assert checked >= 10


def test_bad_files_next_to_good_ones(medical_imaging: Any, openhi_server: RunningServer) -> None:
    from dicom_factory import garbage_file, missing_attr_file, truncated_file

    ds_id = active_datastore(medical_imaging, "garbage")
    good = make_ct_series(2, seed=11)
    files = {
        "good/1.dcm": good[0],
        "good/2.dcm": good[1],
        "bad/garbage.dcm": garbage_file(),
        "bad/empty.dcm": b"",
        "bad/truncated.dcm": truncated_file(),
        "bad/no-sop.dcm": missing_attr_file("SOPInstanceUID"),
        "bad/no-series.dcm": missing_attr_file("SeriesInstanceUID"),
        "bad/readme.txt": b"not dicom at all\n",
    }
    result = run_import(medical_imaging, openhi_server, ds_id, files)
    assert result["job"]["jobStatus"] == "COMPLETED"
    manifest = result["manifest"]
    assert manifest["numberOfScannedFiles"] == 8
    assert manifest["numberOfImportedFiles"] == 2
    assert manifest["numberOfFilesWithCustomerError"] == 6
    failures = {f["inputFile"].split("/", 1)[1]: f["exception"] for f in result["failure"]}
    assert set(failures) == {k for k in files if k.startswith("bad/")}
    assert all(f["exceptionType"] == "ValidationException" for f in failures.values())
    assert "SOPInstanceUID" in failures["bad/no-sop.dcm"]["message"]
    assert "SeriesInstanceUID" in failures["bad/no-series.dcm"]["message"]
    image_set = result["success"][0]["importResponse"]["imageSetId"]
    doc = metadata(medical_imaging, ds_id, image_set)
    assert sum(len(s["Instances"]) for s in doc["Study"]["Series"].values()) == 2


def test_duplicate_sop_instances_in_one_job(medical_imaging: Any, openhi_server: RunningServer) -> None:
    """The first file of a SOP Instance UID in key order is imported; an identical later file is a success
    with a WARNING (stored once), a different one a FAILURE naming the first; the counts are true."""
    from dicom_factory import make_instance, uid

    ds_id = active_datastore(medical_imaging, "dupes")
    study, series, sop = uid("dup-study", 1), uid("dup-series", 1), uid("dup-sop", 1)
    ids = {"study_uid": study, "series_uid": series}
    first = make_instance(sop_uid=sop, seed=1, InstanceNumber="1", **ids)
    different = make_instance(sop_uid=sop, seed=2, InstanceNumber="2", **ids)
    other = make_instance(sop_uid=uid("dup-sop", 2), seed=3, InstanceNumber="3", **ids)
    files = {"a.dcm": first, "b.dcm": first, "c.dcm": different, "d.dcm": other}
    result = run_import(medical_imaging, openhi_server, ds_id, files)
    assert result["job"]["jobStatus"] == "COMPLETED"
    prefix = result["job"]["inputS3Uri"].split("/", 3)[3]
    manifest = result["manifest"]
    assert manifest["numberOfScannedFiles"] == 4
    assert manifest["numberOfImportedFiles"] == 3  # a, b (the same bytes as a) and d
    assert manifest["numberOfFilesWithCustomerError"] == 1
    [summary] = manifest["imageSetsSummary"]
    assert summary["numberOfMatchedSOPInstances"] == 2  # two distinct instances
    assert sorted(s["inputFile"][len(prefix) :] for s in result["success"]) == ["a.dcm", "b.dcm", "d.dcm"]
    [failure] = result["failure"]
    assert failure["inputFile"] == prefix + "c.dcm"
    assert failure["exception"]["exceptionType"] == "ValidationException"
    assert f"Duplicate SOPInstanceUID {sop} of {prefix}a.dcm" in failure["exception"]["message"]
    [warning] = result["warning"]
    assert warning["inputFile"] == prefix + "b.dcm"
    assert warning["importResponse"]["imageSetId"] == summary["imageSetId"]
    assert warning["importResponse"]["warnings"][0]["type"] == "IDENTICAL_DUPLICATE"
    doc = metadata(medical_imaging, ds_id, summary["imageSetId"])
    instances = doc["Study"]["Series"][series]["Instances"]
    assert sorted(instances) == sorted([sop, uid("dup-sop", 2)])
    assert (
        instances[sop]["DICOM"]["InstanceNumber"].strip() == "1"
    )  # the first file's content (IS keeps its pad)


def test_hostile_files_fail_by_element_and_leave_no_image_set(
    medical_imaging: Any, openhi_server: RunningServer
) -> None:
    from dicom_factory import uid
    from hostile_files import deflated_with_private_binary, overrunning_private

    ds_id = active_datastore(medical_imaging, "hostile")
    hostile_study = uid("hostile-study", 1)
    files = {
        "overrun.dcm": overrunning_private(study_uid=hostile_study, series_uid=uid("hostile-series", 1)),
        "bomb.dcm": deflated_with_private_binary(32 * 1024 * 1024, seed=5),
        "good.dcm": make_ct_series(1, seed=71)[0],
    }
    assert len(files["bomb.dcm"]) < 64 * 1024
    result = run_import(medical_imaging, openhi_server, ds_id, files)
    assert result["job"]["jobStatus"] == "COMPLETED"
    prefix = result["job"]["inputS3Uri"].split("/", 3)[3]
    [failure] = result["failure"]
    assert failure["inputFile"] == prefix + "overrun.dcm"
    assert "(0029,1010) declares 4294967280 bytes" in failure["exception"]["message"]
    assert result["manifest"]["numberOfImportedFiles"] == 2
    found = medical_imaging.search_image_sets(
        datastoreId=ds_id,
        searchCriteria={
            "filters": [{"values": [{"DICOMStudyInstanceUID": hostile_study}], "operator": "EQUAL"}]
        },
    )["imageSetsMetadataSummaries"]
    assert found == []  # nothing half-written for the refused file
    [warning] = result["warning"]
    assert warning["inputFile"] == prefix + "bomb.dcm"
    [entry] = warning["importResponse"]["warnings"]
    assert entry["type"] == "ELEMENTS_DISCARDED" and "(0029,1010)" in entry["message"]
    raw = medical_imaging.get_image_set_metadata(
        datastoreId=ds_id, imageSetId=warning["importResponse"]["imageSetId"]
    )["imageSetMetadataBlob"].read()
    assert len(raw) < 16 * 1024  # the 32 MiB value is not inlined (it was a 44.8 MB document)
    doc = metadata(medical_imaging, ds_id, warning["importResponse"]["imageSetId"])
    [node] = [i for s in doc["Study"]["Series"].values() for i in s["Instances"].values()]
    assert "00291010" not in node["DICOM"] and node["DICOM"]["00290010"] == "HOSTILE"
    assert len(node["ImageFrames"]) == 1


def test_grouping_primary_merge_and_conflicts(medical_imaging: Any, openhi_server: RunningServer) -> None:
    ds_id = active_datastore(medical_imaging, "grouping")
    series = make_ct_series(
        4, seed=21, study_uid="1.2.826.0.1.3680043.8.498.100", series_uid="1.2.826.0.1.3680043.8.498.101"
    )
    first = run_import(medical_imaging, openhi_server, ds_id, {"a.dcm": series[0], "b.dcm": series[1]})
    primary = first["success"][0]["importResponse"]["imageSetId"]
    assert first["manifest"]["imageSetsSummary"][0]["isPrimary"] is True
    # the rest of the series in a second job joins the same primary image set as version 2
    second = run_import(medical_imaging, openhi_server, ds_id, {"c.dcm": series[2], "d.dcm": series[3]})
    assert {s["importResponse"]["imageSetId"] for s in second["success"]} == {primary}
    assert second["manifest"]["imageSetsSummary"][0]["imageSetVersion"] == 2
    got = medical_imaging.get_image_set(datastoreId=ds_id, imageSetId=primary)
    assert got["versionId"] == "2" and got["isPrimary"] is True
    assert (
        len(
            metadata(medical_imaging, ds_id, primary)["Study"]["Series"]["1.2.826.0.1.3680043.8.498.101"][
                "Instances"
            ]
        )
        == 4
    )
    assert (
        len(
            metadata(medical_imaging, ds_id, primary, "1")["Study"]["Series"][
                "1.2.826.0.1.3680043.8.498.101"
            ]["Instances"]
        )
        == 2
    )
    # re-importing an instance replaces it in the primary set and bumps the version
    third = run_import(medical_imaging, openhi_server, ds_id, {"again.dcm": series[0]})
    assert third["success"][0]["importResponse"] == {
        **third["success"][0]["importResponse"],
        "imageSetId": primary,
    }
    assert medical_imaging.get_image_set(datastoreId=ds_id, imageSetId=primary)["versionId"] == "3"
    # same series, conflicting PatientID -> a non-primary image set
    conflicting = make_ct_series(
        1,
        seed=22,
        study_uid="1.2.826.0.1.3680043.8.498.100",
        series_uid="1.2.826.0.1.3680043.8.498.101",
        patient_id="OTHER",
    )
    fourth = run_import(medical_imaging, openhi_server, ds_id, {"other.dcm": conflicting[0]})
    response = fourth["success"][0]["importResponse"]
    assert response["isPrimary"] is False and response["imageSetId"] != primary
    versions = medical_imaging.list_image_set_versions(datastoreId=ds_id, imageSetId=primary)[
        "imageSetPropertiesList"
    ]
    assert [v["versionId"] for v in versions] == ["3", "2", "1"]
    assert [v["ImageSetWorkflowStatus"] for v in versions] == ["IMPORTED", "IMPORTED", "CREATED"]


def test_job_quota_fails_the_job(tmp_path: Path) -> None:
    with RunningServer(tmp_path / "data", env={"OPENHI_MAX_FILES_PER_JOB": "2"}) as server:
        client = server.client()
        ds_id = active_datastore(client, "quota")
        result = run_import(client, server, ds_id, {f"{i}.dcm": d for i, d in enumerate(make_ct_series(3))})
        assert result["job"]["jobStatus"] == "FAILED"
        assert "at most 2" in result["job"]["message"]


@pytest.mark.openhi_env(OPENHI_JOB_LEASE_SECONDS="2")
def test_kill_during_import_resumes_the_job(openhi_fresh: RunningServer) -> None:
    """SIGKILL everything mid-import: after the restart the job's lease expires, a worker re-runs it
    from the start, and it ends COMPLETED exactly once; nothing half-imported is ever visible."""
    client = openhi_fresh.client()
    ds_id = active_datastore(client, "crash")
    files = {f"{i}.dcm": d for i, d in enumerate(make_ct_series(40, rows=256, cols=256, seed=5))}
    uri = stage(openhi_fresh, files)
    job = client.start_dicom_import_job(
        datastoreId=ds_id, dataAccessRoleArn=ROLE, inputS3Uri=uri, outputS3Uri="s3://o-b/crash/"
    )
    wait_for(
        lambda: client.get_dicom_import_job(datastoreId=ds_id, jobId=job["jobId"])["jobProperties"][
            "jobStatus"
        ],
        lambda s: s != "SUBMITTED",
        step=0.01,
    )
    openhi_fresh.kill()
    openhi_fresh.start()
    client = openhi_fresh.client()
    props = wait_for(
        lambda: client.get_dicom_import_job(datastoreId=ds_id, jobId=job["jobId"])["jobProperties"],
        lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"),
        timeout=120,
    )
    assert props["jobStatus"] == "COMPLETED", props
    reports = read_reports(openhi_fresh, props["outputS3Uri"])
    assert reports["manifest"]["numberOfImportedFiles"] == 40
    assert len(reports["success"]) == 40
    found = client.search_image_sets(datastoreId=ds_id)["imageSetsMetadataSummaries"]
    assert len(found) == 1 and found[0]["version"] == 1  # created once, not twice or merged twice
    doc = metadata(client, ds_id, found[0]["imageSetId"])
    instances = [inst for s in doc["Study"]["Series"].values() for inst in s["Instances"].values()]
    assert len(instances) == 40
    for inst in instances[:5]:  # metadata and frames readable
        for frame in inst["ImageFrames"]:
            blob = client.get_image_frame(
                datastoreId=ds_id,
                imageSetId=found[0]["imageSetId"],
                imageFrameInformation={"imageFrameId": frame["ID"]},
            )["imageFrameBlob"].read()
            assert len(blob) > 0
