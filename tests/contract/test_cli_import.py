"""Contract tests: the ``openhi`` client commands (import, diff) as a user runs them, against a real server.

Each command runs as a subprocess from an unrelated directory with only ``AWS_ENDPOINT_URL_MEDICAL_IMAGING``
pointing at the deployment, so nothing depends on the server's data dir or the current directory.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from contract.helpers import active_datastore
from contract.imaging import metadata, wait_active
from dicom_factory import garbage_file, make_ct_series
from openhi.testing.server import free_port

JPEG_LS = "MR_small_jpeg_ls_lossless.dcm"
J2K = "MR_small_jp2klossless.dcm"


def _testfile(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom's test file {name} is not installed"
    return Path(str(path)).read_bytes()


def openhi(
    *args: str, endpoint: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m openhi <args>`` from ``cwd`` with the endpoint given only by the environment."""
    cwd.mkdir(parents=True, exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    environ.update({"AWS_ENDPOINT_URL_MEDICAL_IMAGING": endpoint, **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "openhi", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The command failed with exactly one ``openhi <command>: …`` line on stderr (no traceback)."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"openhi {command}: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def bucket_keys(server: Any, bucket: str) -> list[str]:
    """Every object key in ``bucket`` of the deployment (embedded folder or S3)."""
    weed = getattr(server, "weed", None)
    if weed is None:
        root = server.bucket_path(bucket)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    s3 = weed.client()
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        return []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def fresh_bucket() -> str:
    return f"cli-{uuid.uuid4().hex[:12]}"


def counts(stdout: str) -> dict[str, int]:
    """The summary rows ``<label>   <number>`` of ``openhi import --wait``."""
    out = {}
    for line in stdout.splitlines():
        label, _, value = line.rpartition(" ")
        if value.isdigit() and label.strip() and not line.startswith(" "):
            out[label.strip()] = int(value)
    return out


def _decode_htj2k(blob: bytes) -> np.ndarray:
    """Decode a GetImageFrame answer (HTJ2K in a JPH box) with OpenJPEG, independently of openhi."""
    from openjpeg.utils import decode

    return np.asarray(decode(io.BytesIO(blob), 2))


def frames_by_sop(client: Any, ds_id: str) -> dict[str, list[np.ndarray]]:
    """SOP Instance UID -> its frames, fetched with GetImageFrame and decoded."""
    found: dict[str, list[np.ndarray]] = {}
    for summary in client.search_image_sets(datastoreId=ds_id)["imageSetsMetadataSummaries"]:
        set_id = summary["imageSetId"]
        doc = metadata(client, ds_id, set_id)
        for series in doc["Study"]["Series"].values():
            for sop, node in series["Instances"].items():
                assert node["StoredTransferSyntaxUID"] == "1.2.840.10008.1.2.4.202", sop  # HTJ2K lossless
                frames = []
                for frame in node["ImageFrames"]:
                    blob = client.get_image_frame(
                        datastoreId=ds_id,
                        imageSetId=set_id,
                        imageFrameInformation={"imageFrameId": frame["ID"]},
                    )["imageFrameBlob"].read()
                    frames.append(_decode_htj2k(blob))
                found[sop] = frames
    return found


@pytest.mark.parametrize("pydicom_file", [JPEG_LS, J2K])
def test_import_from_any_directory_gives_frames_that_decode_to_the_source(
    openhi_server: Any, medical_imaging: Any, tmp_path: Path, pydicom_file: str
) -> None:
    ds_id = active_datastore(medical_imaging, "cli-pixels")
    folder = tmp_path / "dicom"
    (folder / "nested").mkdir(parents=True)
    sources = {folder / pydicom_file: _testfile(pydicom_file)}
    for i, data in enumerate(make_ct_series(2, rows=16, cols=16, seed=11)):
        sources[folder / "nested" / f"ct{i}.dcm"] = data
    for path, data in sources.items():
        path.write_bytes(data)
    elsewhere = tmp_path / "elsewhere"
    bucket = fresh_bucket()

    proc = openhi("import", str(folder), "--datastore", ds_id, "--bucket", bucket, "--wait",
                  endpoint=openhi_server.endpoint, cwd=elsewhere)  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout and "MISSING" not in proc.stdout
    summary = counts(proc.stdout)
    assert summary["files uploaded"] == summary["files scanned"] == summary["files imported"] == 3
    assert summary["files failed"] == 0 and summary["instances imported"] == 3
    assert summary["image sets"] == 2  # the MR study and the CT study
    assert list(elsewhere.iterdir()) == []  # nothing written into the current directory
    keys = bucket_keys(openhi_server, bucket)
    assert keys and not [k for k in keys if "/input/" in k], keys  # staged inputs removed, reports kept
    assert any(k.endswith("job-output-manifest.json") for k in keys)

    decoded = frames_by_sop(medical_imaging, ds_id)
    assert len(decoded) == 3
    for data in sources.values():
        source = pydicom.dcmread(io.BytesIO(data))
        expected = source.pixel_array
        frames = decoded[source.SOPInstanceUID]
        assert len(frames) == 1
        assert np.array_equal(frames[0].reshape(expected.shape), expected), source.SOPInstanceUID


def test_a_bad_file_among_good_ones_exits_1_naming_it(
    openhi_server: Any, medical_imaging: Any, tmp_path: Path
) -> None:
    ds_id = active_datastore(medical_imaging, "cli-bad")
    folder = tmp_path / "dicom"
    folder.mkdir()
    for i, data in enumerate(make_ct_series(2, rows=16, cols=16, seed=12)):
        (folder / f"{i}.dcm").write_bytes(data)
    (folder / "junk.bin").write_bytes(garbage_file())

    proc = openhi("import", str(folder), "--datastore", ds_id, "--wait",
                  endpoint=openhi_server.endpoint, cwd=tmp_path / "elsewhere")  # fmt: skip

    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED  {folder / 'junk.bin'}: "), proc.stdout
    summary = counts(proc.stdout)
    assert (summary["files imported"], summary["files failed"], summary["instances imported"]) == (2, 1, 2)


def test_a_transcoding_exception_is_printed(openhi_server: Any, medical_imaging: Any, tmp_path: Path) -> None:
    """JPEG 2000 Part 2 has no decoder: the file is stored as it is, and the warning is shown."""
    ds_id = active_datastore(medical_imaging, "cli-warn")
    source = pydicom.dcmread(io.BytesIO(_testfile(J2K)))
    source.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"
    path = tmp_path / "dicom" / "part2.dcm"
    path.parent.mkdir()
    source.save_as(path, enforce_file_format=True)

    proc = openhi("import", str(path), "--datastore", ds_id, "--wait",
                  endpoint=openhi_server.endpoint, cwd=tmp_path / "elsewhere")  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr  # a warning is not a failure
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and warnings[0].startswith(f"WARNING {path}: TRANSCODING_EXCEPTION: "), (
        proc.stdout
    )
    summary = counts(proc.stdout)
    assert (summary["files imported"], summary["files with warnings"]) == (1, 1)


def test_unknown_datastore_exits_2_and_stages_nothing(openhi_server: Any, tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(make_ct_series(1, rows=8, cols=8)[0])
    bucket = fresh_bucket()

    proc = openhi("import", str(folder), "--datastore", "0" * 32, "--bucket", bucket, "--wait",
                  endpoint=openhi_server.endpoint, cwd=tmp_path / "elsewhere")  # fmt: skip

    assert proc.returncode == 2
    assert "ResourceNotFoundException" in one_error_line(proc, "import")
    assert proc.stdout == "" and bucket_keys(openhi_server, bucket) == []


def test_an_empty_folder_exits_2_and_starts_no_job(
    openhi_server: Any, medical_imaging: Any, tmp_path: Path
) -> None:
    ds_id = active_datastore(medical_imaging, "cli-empty")
    (tmp_path / "empty" / "sub").mkdir(parents=True)

    proc = openhi("import", str(tmp_path / "empty"), "--datastore", ds_id,
                  endpoint=openhi_server.endpoint, cwd=tmp_path / "elsewhere")  # fmt: skip

    assert proc.returncode == 2
    assert "no files to import" in one_error_line(proc, "import")
    assert medical_imaging.list_dicom_import_jobs(datastoreId=ds_id)["jobSummaries"] == []


def test_an_unreachable_endpoint_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"x")
    endpoint = f"http://127.0.0.1:{free_port()}"
    proc = openhi("import", str(tmp_path / "a.dcm"), "--datastore", "0" * 32, endpoint=endpoint,
                  cwd=tmp_path / "elsewhere")  # fmt: skip
    assert proc.returncode == 2
    assert f"cannot reach {endpoint}" in one_error_line(proc, "import")
    diff = openhi("diff", "--datastore", "0" * 32, "--image-set", "1" * 32, "--from", "1", "--to", "2",
                  endpoint=endpoint, cwd=tmp_path / "elsewhere")  # fmt: skip
    assert diff.returncode == 2 and f"cannot reach {endpoint}" in one_error_line(diff, "diff")


@pytest.mark.openhi_env(OPENHI_MAX_CONCURRENT_JOBS_PER_DATASTORE="0")
def test_a_refused_job_removes_what_was_staged(openhi_fresh: Any, tmp_path: Path) -> None:
    """The server refuses the job after the files were uploaded: the command deletes them again."""
    client = openhi_fresh.client()
    ds_id = active_datastore(client, "cli-refused")
    folder = tmp_path / "dicom"
    folder.mkdir()
    for i, data in enumerate(make_ct_series(3, rows=8, cols=8, seed=13)):
        (folder / f"{i}.dcm").write_bytes(data)
    bucket = fresh_bucket()

    proc = openhi("import", str(folder), "--datastore", ds_id, "--bucket", bucket, "--wait",
                  endpoint=openhi_fresh.endpoint, cwd=tmp_path / "elsewhere")  # fmt: skip

    assert proc.returncode == 2
    assert "ServiceQuotaExceededException" in one_error_line(proc, "import")
    assert bucket_keys(openhi_fresh, bucket) == []
    assert client.list_dicom_import_jobs(datastoreId=ds_id)["jobSummaries"] == []


def test_diff_between_two_versions(openhi_server: Any, medical_imaging: Any, tmp_path: Path) -> None:
    ds_id = active_datastore(medical_imaging, "cli-diff")
    path = tmp_path / "ct.dcm"
    path.write_bytes(make_ct_series(1, rows=8, cols=8, seed=14)[0])
    elsewhere = tmp_path / "elsewhere"
    imported = openhi("import", str(path), "--datastore", ds_id, "--wait",
                      endpoint=openhi_server.endpoint, cwd=elsewhere)  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    set_id = medical_imaging.search_image_sets(datastoreId=ds_id)["imageSetsMetadataSummaries"][0][
        "imageSetId"
    ]
    updates = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "CLI DIFF"}}}
    medical_imaging.update_image_set_metadata(
        datastoreId=ds_id,
        imageSetId=set_id,
        latestVersionId="1",
        updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(updates).encode()}},
    )
    wait_active(medical_imaging, ds_id, set_id)

    args = ["diff", "--datastore", ds_id, "--image-set", set_id, "--from", "1", "--to", "2"]
    proc = openhi(*args, endpoint=openhi_server.endpoint, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "Study.DICOM.StudyDescription" in x)
    assert line.split()[:2] == ["added", "Study"] and line.endswith('-> "CLI DIFF"')  # the factory sets none
    as_json = json.loads(openhi(*args, "--json", endpoint=openhi_server.endpoint, cwd=elsewhere).stdout)
    assert {"change": "added", "level": "Study", "to": "CLI DIFF"}.items() <= next(
        c for c in as_json["changes"] if c["path"] == "Study.DICOM.StudyDescription"
    ).items()

    unknown = openhi("diff", "--datastore", ds_id, "--image-set", "f" * 32, "--from", "1", "--to", "2",
                     endpoint=openhi_server.endpoint, cwd=elsewhere)  # fmt: skip
    assert unknown.returncode == 2
    assert "ResourceNotFoundException" in one_error_line(unknown, "diff")


@pytest.mark.openhi_env(OPENHI_ACCESS_KEY_ID="AKIDCLIIMPORT", OPENHI_SECRET_ACCESS_KEY="cli-import-secret")
def test_a_server_with_credentials_takes_the_aws_environment_keys(openhi_fresh: Any, tmp_path: Path) -> None:
    """Every request is really verified: uploads (their body hash), the API calls, report reads, diff."""
    client = openhi_fresh.client(aws_access_key_id="AKIDCLIIMPORT", aws_secret_access_key="cli-import-secret")
    ds_id = active_datastore(client, "cli-keys")
    path = tmp_path / "ct.dcm"
    path.write_bytes(make_ct_series(1, rows=8, cols=8, seed=15)[0])
    keys = {"AWS_ACCESS_KEY_ID": "AKIDCLIIMPORT", "AWS_SECRET_ACCESS_KEY": "cli-import-secret"}
    args = ["import", str(path), "--datastore", ds_id, "--wait"]

    proc = openhi(*args, endpoint=openhi_fresh.endpoint, cwd=tmp_path / "elsewhere", env=keys)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert counts(proc.stdout)["files imported"] == 1
    set_id = client.search_image_sets(datastoreId=ds_id)["imageSetsMetadataSummaries"][0]["imageSetId"]
    diff = openhi("diff", "--datastore", ds_id, "--image-set", set_id, "--from", "1", "--to", "1",
                  endpoint=openhi_fresh.endpoint, cwd=tmp_path / "elsewhere", env=keys)  # fmt: skip
    assert diff.returncode == 0 and diff.stdout.strip() == "no differences", diff.stdout + diff.stderr

    wrong = {**keys, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    refused = openhi(*args, endpoint=openhi_fresh.endpoint, cwd=tmp_path / "elsewhere", env=wrong)
    assert refused.returncode == 2
    assert "AccessDeniedException" in one_error_line(refused, "import")
