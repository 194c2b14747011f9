"""Distributed deployment (PostgreSQL + SeaweedFS, 2 API processes, 2 import workers): failover and races."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from contract.helpers import active_datastore, wait_for
from contract.imaging import ROLE, read_reports, run_import, stage
from dicom_factory import make_ct_series
from openhi.testing.distributed import DistributedDeployment, unavailable

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributedDeployment]:
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the distributed deployment is required in CI: {reason}")
        pytest.skip(reason)
    deployment = DistributedDeployment(
        tmp_path_factory.mktemp("cluster"), env={"OPENHI_JOB_LEASE_SECONDS": "2"}
    ).start()
    try:
        deployment.wait_workers()
        yield deployment
    finally:
        deployment.close()


def _job(client: Any, ds_id: str, job_id: str) -> dict[str, Any]:
    props: dict[str, Any] = client.get_dicom_import_job(datastoreId=ds_id, jobId=job_id)["jobProperties"]
    return props


def _runner(cluster: DistributedDeployment, job_id: str) -> int | None:
    for i in range(cluster.worker_count):
        if f"runs import job {job_id}" in cluster.worker_log(i):
            return i
    return None


def test_worker_killed_mid_import_another_finishes_the_job_once(cluster: DistributedDeployment) -> None:
    client = cluster.client()
    ds_id = active_datastore(client, "failover")
    files = {f"{i:03d}.dcm": d for i, d in enumerate(make_ct_series(60, rows=256, cols=256, seed=61))}
    uri = stage(cluster, files)
    job_id = client.start_dicom_import_job(
        datastoreId=ds_id, dataAccessRoleArn=ROLE, inputS3Uri=uri, outputS3Uri="s3://output-bucket/failover/"
    )["jobId"]
    victim = wait_for(lambda: _runner(cluster, job_id), lambda i: i is not None, timeout=60, step=0.02)
    assert _job(client, ds_id, job_id)["jobStatus"] == "IN_PROGRESS"
    cluster.kill_worker(victim)
    killed_at = time.monotonic()
    props = wait_for(
        lambda: _job(client, ds_id, job_id), lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"), timeout=180
    )
    assert props["jobStatus"] == "COMPLETED", props
    survivor = 1 - victim
    assert f"runs import job {job_id}" in cluster.worker_log(survivor)
    assert time.monotonic() - killed_at > 1.0  # it waited for the dead worker's lease to expire
    reports = read_reports(cluster, props["outputS3Uri"])
    manifest = reports["manifest"]
    assert manifest["numberOfScannedFiles"] == 60 and manifest["numberOfImportedFiles"] == 60
    assert manifest["numberOfGeneratedImageSets"] == 1 and len(reports["success"]) == 60
    sets = client.search_image_sets(datastoreId=ds_id)["imageSetsMetadataSummaries"]
    assert len(sets) == 1 and sets[0]["version"] == 1  # created exactly once, never merged twice
    assert sets[0]["imageSetId"] == manifest["imageSetsSummary"][0]["imageSetId"]
    jobs = client.list_dicom_import_jobs(datastoreId=ds_id)["jobSummaries"]
    assert [(j["jobId"], j["jobStatus"]) for j in jobs] == [(job_id, "COMPLETED")]
    cluster.start_worker(victim)  # back to two workers for the other tests
    cluster.wait_workers()


def test_two_workers_importing_one_new_series_make_one_primary(cluster: DistributedDeployment) -> None:
    client = cluster.client()
    ds_id = active_datastore(client, "samesries")
    series = make_ct_series(
        8, seed=62, study_uid="1.2.826.0.1.3680043.8.498.620", series_uid="1.2.826.0.1.3680043.8.498.621"
    )
    uris = [stage(cluster, {f"{i}.dcm": series[i] for i in range(k, 8, 2)}) for k in (0, 1)]
    jobs = [
        client.start_dicom_import_job(
            datastoreId=ds_id, dataAccessRoleArn=ROLE, inputS3Uri=uri, outputS3Uri="s3://output-bucket/same/"
        )["jobId"]
        for uri in uris
    ]
    for job_id in jobs:
        props = wait_for(
            lambda j=job_id: _job(client, ds_id, j),
            lambda p: p["jobStatus"] != "IN_PROGRESS" and p["jobStatus"] != "SUBMITTED",
            timeout=120,
        )
        assert props["jobStatus"] == "COMPLETED", props
    sets = client.search_image_sets(datastoreId=ds_id)["imageSetsMetadataSummaries"]
    primaries = [s for s in sets if s["isPrimary"]]
    assert len(primaries) == 1 and len(sets) == 1  # the second job merged into the first one's set
    assert primaries[0]["version"] == 2


def _race(clients: list[Any], ds_id: str, set_id: str, latest: str) -> list[tuple[str, str]]:
    barrier = threading.Barrier(len(clients))
    outcomes: list[tuple[str, str]] = [("", "")] * len(clients)

    def write(i: int) -> None:
        doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": f"R{i}"}}}
        barrier.wait()
        try:
            resp = clients[i].update_image_set_metadata(
                datastoreId=ds_id,
                imageSetId=set_id,
                latestVersionId=latest,
                updateImageSetMetadataUpdates={
                    "DICOMUpdates": {"updatableAttributes": json.dumps(doc).encode()}
                },
            )
            outcomes[i] = ("ok", resp["latestVersionId"])
        except ClientError as err:
            outcomes[i] = (err.response["Error"]["Code"], err.response["Error"]["Message"])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_api_processes_racing_on_one_latest_version_have_one_winner(cluster: DistributedDeployment) -> None:
    client = cluster.client()
    ds_id = active_datastore(client, "race")
    result = run_import(client, cluster, ds_id, {"a.dcm": make_ct_series(1, seed=63)[0]})
    set_id = result["success"][0]["importResponse"]["imageSetId"]
    # one port, two uvicorn processes behind it
    outcomes = _race([cluster.client() for _ in range(16)], ds_id, set_id, "1")
    winners = [o for o in outcomes if o[0] == "ok"]
    assert len(winners) == 1 and winners[0][1] == "2", outcomes
    assert all(code == "ConflictException" for code, _ in outcomes if code != "ok"), outcomes
    wait_for(
        lambda: client.get_image_set(datastoreId=ds_id, imageSetId=set_id)["imageSetState"],
        lambda s: s == "ACTIVE",
    )
    # two single-process API servers on ports of their own, sharing the index
    a, b = cluster.api_server(), cluster.api_server()
    clients = [(a if i % 2 else b).client() for i in range(16)]
    outcomes = _race(clients, ds_id, set_id, "2")
    winners = [o for o in outcomes if o[0] == "ok"]
    assert len(winners) == 1 and winners[0][1] == "3", outcomes
    wait_for(
        lambda: client.get_image_set(datastoreId=ds_id, imageSetId=set_id)["versionId"], lambda v: v == "3"
    )


def test_next_token_from_one_process_is_accepted_by_another(cluster: DistributedDeployment) -> None:
    a, b = cluster.api_server(), cluster.api_server()
    ca, cb = a.client(), b.client()
    ds_id = active_datastore(ca, "pages")
    files = {f"s{k}.dcm": make_ct_series(1, seed=640 + k)[0] for k in range(3)}  # three studies: three sets
    run_import(ca, cluster, ds_id, files)
    first = ca.search_image_sets(datastoreId=ds_id, maxResults=1)
    second = cb.search_image_sets(datastoreId=ds_id, maxResults=1, nextToken=first["nextToken"])
    third = ca.search_image_sets(datastoreId=ds_id, maxResults=1, nextToken=second["nextToken"])
    ids = [p["imageSetsMetadataSummaries"][0]["imageSetId"] for p in (first, second, third)]
    assert len(set(ids)) == 3 and "nextToken" not in third
    every = ca.search_image_sets(datastoreId=ds_id)["imageSetsMetadataSummaries"]
    assert ids == [s["imageSetId"] for s in every]
    jobs_a = ca.list_dicom_import_jobs(datastoreId=ds_id, maxResults=1)
    assert "nextToken" not in jobs_a  # one job
    stores = ca.list_datastores(maxResults=1)
    more = cb.list_datastores(maxResults=1, nextToken=stores["nextToken"])
    assert more["datastoreSummaries"] and more["datastoreSummaries"][0] != stores["datastoreSummaries"][0]
    with pytest.raises(ClientError) as err:  # a tampered token is refused by every process alike
        cb.list_datastores(maxResults=1, nextToken=re.sub(r".$", "A", stores["nextToken"]) + "x")
    assert err.value.response["Error"]["Code"] == "ValidationException"
