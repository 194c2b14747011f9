"""Contract test: import jobs reading from and reporting to a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contract.helpers import active_datastore, wait_for
from contract.imaging import ROLE
from dicom_factory import garbage_file, make_ct_series
from openhi.testing import RunningServer

pytestmark = pytest.mark.s3


def test_import_from_s3(seaweed_s3: Any, tmp_path: Path) -> None:
    from seaweed import ACCESS_KEY_ID, SECRET_ACCESS_KEY

    s3 = seaweed_s3.client()
    seaweed_s3.create_bucket("dicom-in")
    seaweed_s3.create_bucket("dicom-out")
    series = make_ct_series(3, seed=31)
    for i, data in enumerate(series):
        s3.put_object(Bucket="dicom-in", Key=f"study/ct-{i}.dcm", Body=data)
    s3.put_object(Bucket="dicom-in", Key="study/garbage.dcm", Body=garbage_file())
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
    with RunningServer(
        tmp_path / "data", extra_args=["--s3-endpoint-url", seaweed_s3.endpoint_url], env=env
    ) as server:
        client = server.client()
        ds_id = active_datastore(client, "s3")
        job = client.start_dicom_import_job(
            datastoreId=ds_id,
            dataAccessRoleArn=ROLE,
            inputS3Uri="s3://dicom-in/study/",
            outputS3Uri="s3://dicom-out/r/",
        )
        props = wait_for(
            lambda: client.get_dicom_import_job(datastoreId=ds_id, jobId=job["jobId"])["jobProperties"],
            lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"),
            timeout=120,
        )
        assert props["jobStatus"] == "COMPLETED", props
        prefix = f"r/{ds_id}-DicomImport-{job['jobId']}/"
        manifest = json.loads(
            s3.get_object(Bucket="dicom-out", Key=prefix + "job-output-manifest.json")["Body"].read()
        )
        summary = manifest["jobSummary"]
        assert summary["numberOfScannedFiles"] == 4
        assert summary["numberOfImportedFiles"] == 3
        assert summary["numberOfFilesWithCustomerError"] == 1
        failure = (
            s3.get_object(Bucket="dicom-out", Key=prefix + "FAILURE/failure.ndjson")["Body"].read().decode()
        )
        assert json.loads(failure.splitlines()[0])["inputFile"] == "study/garbage.dcm"
        assert not (server.data_dir / "buckets" / "dicom-in").exists()  # nothing read from the embedded store
        # a missing input bucket fails the job with a message naming it
        job2 = client.start_dicom_import_job(
            datastoreId=ds_id,
            dataAccessRoleArn=ROLE,
            inputS3Uri="s3://no-such-bucket/x/",
            outputS3Uri="s3://dicom-out/r/",
        )
        failed = wait_for(
            lambda: client.get_dicom_import_job(datastoreId=ds_id, jobId=job2["jobId"])["jobProperties"],
            lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"),
            timeout=120,
        )
        assert failed["jobStatus"] == "FAILED" and "no-such-bucket" in failed["message"]
