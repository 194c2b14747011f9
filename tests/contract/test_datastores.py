"""Contract tests: the datastore lifecycle through a real boto3 client against a real server process."""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from contract.helpers import active_datastore, wait_for
from openhi.testing import RunningServer


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_create_get_delete_lifecycle(medical_imaging: Any) -> None:
    created = medical_imaging.create_datastore(datastoreName="lifecycle", tags={"team": "qa"})
    ds_id = created["datastoreId"]
    assert re.fullmatch(r"[0-9a-z]{32}", ds_id)
    assert created["datastoreStatus"] == "CREATING"
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert created["ResponseMetadata"]["RequestId"]

    props = wait_for(
        lambda: medical_imaging.get_datastore(datastoreId=ds_id)["datastoreProperties"],
        lambda p: p["datastoreStatus"] == "ACTIVE",
    )
    assert props["datastoreName"] == "lifecycle"
    assert props["losslessStorageFormat"] == "HTJ2K"
    assert props["datastoreArn"] == f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{ds_id}"
    assert props["createdAt"] <= props["updatedAt"]
    assert medical_imaging.list_tags_for_resource(resourceArn=props["datastoreArn"])["tags"] == {"team": "qa"}

    deleted = medical_imaging.delete_datastore(datastoreId=ds_id)
    assert deleted == {**deleted, "datastoreId": ds_id, "datastoreStatus": "DELETING"}
    final = wait_for(
        lambda: medical_imaging.get_datastore(datastoreId=ds_id)["datastoreProperties"]["datastoreStatus"],
        lambda s: s == "DELETED",
    )
    assert final == "DELETED"
    listed = medical_imaging.list_datastores(datastoreStatus="DELETED")["datastoreSummaries"]
    assert ds_id in [d["datastoreId"] for d in listed]
    # a deleted datastore rejects writes
    with pytest.raises(ClientError) as exc:
        medical_imaging.start_dicom_import_job(
            datastoreId=ds_id,
            dataAccessRoleArn="arn:aws:iam::123456789012:role/ImportRole",
            inputS3Uri="s3://in-bucket/x/",
            outputS3Uri="s3://out-bucket/y/",
        )
    assert _code(exc) in ("ConflictException", "ValidationException")


def test_kms_lambda_and_format_are_echoed(medical_imaging: Any) -> None:
    kms = "arn:aws:kms:us-east-1:123456789012:key/12345678-1234-1234-1234-123456789012"
    lam = "arn:aws:lambda:us-east-1:123456789012:function:authz"
    ds_id = medical_imaging.create_datastore(
        datastoreName="j2k",
        kmsKeyArn=kms,
        lambdaAuthorizerArn=lam,
        losslessStorageFormat="JPEG_2000_LOSSLESS",
    )["datastoreId"]
    props = medical_imaging.get_datastore(datastoreId=ds_id)["datastoreProperties"]
    assert props["kmsKeyArn"] == kms
    assert props["lambdaAuthorizerArn"] == lam
    assert props["losslessStorageFormat"] == "JPEG_2000_LOSSLESS"
    summary = next(
        d for d in medical_imaging.list_datastores()["datastoreSummaries"] if d["datastoreId"] == ds_id
    )
    assert "kmsKeyArn" not in summary and summary["datastoreName"] == "j2k"


def test_client_token_idempotency(medical_imaging: Any) -> None:
    first = medical_imaging.create_datastore(datastoreName="idem", clientToken="token-abc-1")
    again = medical_imaging.create_datastore(datastoreName="idem", clientToken="token-abc-1")
    assert again["datastoreId"] == first["datastoreId"]
    with pytest.raises(ClientError) as exc:
        medical_imaging.create_datastore(datastoreName="other-name", clientToken="token-abc-1")
    assert _code(exc) == "ConflictException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert "token-abc-1" in exc.value.response["Error"]["Message"]


def test_unknown_datastore_is_not_found(medical_imaging: Any) -> None:
    for call in (medical_imaging.get_datastore, medical_imaging.delete_datastore):
        with pytest.raises(ClientError) as exc:
            call(datastoreId="0" * 32)
        assert _code(exc) == "ResourceNotFoundException"
        assert "0" * 32 in exc.value.response["Error"]["Message"]


def test_bad_ids_and_page_sizes_are_validation_errors(raw_medical_imaging: Any) -> None:
    # boto3 validates client-side; raw_medical_imaging turns that off to reach the server's own validation
    raw = raw_medical_imaging
    cases = [
        (lambda: raw.get_datastore(datastoreId="NOT-AN-ID"), "datastoreId"),
        (lambda: raw.list_datastores(maxResults=0), "maxResults"),
        (lambda: raw.list_datastores(maxResults=51), "maxResults"),
        (lambda: raw.list_datastores(datastoreStatus="SLEEPING"), "datastoreStatus"),
        (lambda: raw.create_datastore(datastoreName="bad name!", clientToken="t"), "datastoreName"),
    ]
    for call, member in cases:
        with pytest.raises(ClientError) as exc:
            call()
        assert _code(exc) == "ValidationException", member
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert member in exc.value.response["Error"]["Message"]


def test_datastore_quota(tmp_path: Any) -> None:
    server = RunningServer(tmp_path / "data", env={"OPENHI_MAX_ACTIVE_DATASTORES": "2"}).start()
    try:
        client = server.client()
        client.create_datastore(datastoreName="a")
        client.create_datastore(datastoreName="b")
        with pytest.raises(ClientError) as exc:
            client.create_datastore(datastoreName="c")
        assert _code(exc) == "ServiceQuotaExceededException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
    finally:
        server.stop()


def test_pagination_across_pages_and_restart(openhi_fresh: RunningServer) -> None:
    client = openhi_fresh.client()
    made = [client.create_datastore(datastoreName=f"page-{i}")["datastoreId"] for i in range(7)]
    first = client.list_datastores(maxResults=3)
    assert len(first["datastoreSummaries"]) == 3 and "nextToken" in first
    openhi_fresh.restart()
    client = openhi_fresh.client()
    second = client.list_datastores(maxResults=3, nextToken=first["nextToken"])
    seen = [d["datastoreId"] for d in first["datastoreSummaries"] + second["datastoreSummaries"]]
    rest = client.list_datastores(maxResults=3, nextToken=second["nextToken"])
    seen += [d["datastoreId"] for d in rest["datastoreSummaries"]]
    assert "nextToken" not in rest
    assert sorted(seen) == sorted(made)
    assert len(set(seen)) == 7
    # the boto3 paginator walks the same pages
    pages = client.get_paginator("list_datastores").paginate(PaginationConfig={"PageSize": 2})
    assert sorted(d["datastoreId"] for page in pages for d in page["datastoreSummaries"]) == sorted(made)


def test_tampered_or_mismatched_tokens_are_rejected(medical_imaging: Any) -> None:
    for i in range(3):
        medical_imaging.create_datastore(datastoreName=f"tok-{i}")
    token = medical_imaging.list_datastores(maxResults=1)["nextToken"]
    body, sig = token.split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig
    with pytest.raises(ClientError) as exc:
        medical_imaging.list_datastores(maxResults=1, nextToken=tampered)
    assert _code(exc) == "ValidationException" and "nextToken" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        medical_imaging.list_datastores(maxResults=1, nextToken=token, datastoreStatus="DELETED")
    assert (
        _code(exc) == "ValidationException" and "different request" in exc.value.response["Error"]["Message"]
    )


def test_delete_is_idempotent_and_blocked_while_creating_is_not_fatal(medical_imaging: Any) -> None:
    ds_id = active_datastore(medical_imaging, "del-twice")
    assert medical_imaging.delete_datastore(datastoreId=ds_id)["datastoreStatus"] == "DELETING"
    again = medical_imaging.delete_datastore(datastoreId=ds_id)["datastoreStatus"]
    assert again in ("DELETING", "DELETED")
