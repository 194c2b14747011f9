"""Contract-test helpers that go through the public API: stage DICOM, run an import job, read results."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

from contract.helpers import wait_for
from openhi.testing import RunningServer

ROLE = "arn:aws:iam::123456789012:role/ImportRole"


def stage(server: RunningServer, files: dict[str, bytes], bucket: str = "input-bucket") -> str:
    """Put files under a fresh prefix of the deployment's bucket (embedded or S3); the s3:// prefix URI."""
    prefix = f"in-{uuid.uuid4().hex[:10]}/"
    for name, data in files.items():
        server.stage_object(bucket, prefix + name, data)
    return f"s3://{bucket}/{prefix}"


def run_import(
    client: Any, server: RunningServer, datastore_id: str, files: dict[str, bytes], timeout: float = 300
) -> dict[str, Any]:
    """Import ``files`` (name -> P10 bytes) and return {"job": jobProperties, "manifest", "success", "failure", "warning"}."""
    input_uri = stage(server, files)
    job = client.start_dicom_import_job(
        datastoreId=datastore_id,
        dataAccessRoleArn=ROLE,
        inputS3Uri=input_uri,
        outputS3Uri="s3://output-bucket/out/",
    )
    props = wait_for(
        lambda: client.get_dicom_import_job(datastoreId=datastore_id, jobId=job["jobId"])["jobProperties"],
        lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"),
        timeout=timeout,
        step=0.1,
    )
    return {"job": props, **read_reports(server, props["outputS3Uri"])}


def read_reports(server: RunningServer, output_uri: str) -> dict[str, Any]:
    bucket, _, key = output_uri[len("s3://") :].partition("/")
    manifest = server.read_object(bucket, key + "job-output-manifest.json")
    if manifest is None:
        return {"manifest": None, "success": [], "failure": [], "warning": []}

    def lines(name: str) -> list[dict[str, Any]]:
        data = server.read_object(bucket, key + name)
        return [json.loads(line) for line in data.decode().splitlines() if line] if data else []

    return {
        "manifest": json.loads(manifest)["jobSummary"],
        "success": lines("SUCCESS/success.ndjson"),
        "failure": lines("FAILURE/failure.ndjson"),
        "warning": lines("WARNING/warning.ndjson"),
    }


def metadata(client: Any, datastore_id: str, image_set_id: str, version: str | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"datastoreId": datastore_id, "imageSetId": image_set_id}
    if version is not None:
        kwargs["versionId"] = version
    resp = client.get_image_set_metadata(**kwargs)
    assert resp["contentEncoding"] == "gzip"
    doc: dict[str, Any] = json.loads(gzip.decompress(resp["imageSetMetadataBlob"].read()))
    return doc


def wait_active(client: Any, datastore_id: str, image_set_id: str, timeout: float = 60) -> dict[str, Any]:
    """Wait until the image set's latest version finished its operation (state is not LOCKED)."""
    result: dict[str, Any] = wait_for(
        lambda: client.get_image_set(datastoreId=datastore_id, imageSetId=image_set_id),
        lambda r: r["imageSetState"] != "LOCKED",
        timeout=timeout,
    )
    return result
