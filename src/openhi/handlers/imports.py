"""Handlers for StartDICOMImportJob, GetDICOMImportJob and ListDICOMImportJobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openhi.handlers.convert import dt
from openhi.handlers.registry import handles

if TYPE_CHECKING:
    from openhi.services import Services


@handles("StartDICOMImportJob")
def start_job(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    job = svc.imports.start(
        p["datastoreId"],
        client_token=p["clientToken"],
        data_access_role_arn=p["dataAccessRoleArn"],
        input_s3_uri=p["inputS3Uri"],
        output_s3_uri=p["outputS3Uri"],
        job_name=p.get("jobName"),
        input_owner_account_id=p.get("inputOwnerAccountId"),
        import_configuration=p.get("importConfiguration"),
    )
    return {
        "datastoreId": job.datastore_id,
        "jobId": job.id,
        "jobStatus": job.status,
        "submittedAt": dt(job.submitted_at),
    }


@handles("GetDICOMImportJob")
def get_job(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    job = svc.imports.get(p["datastoreId"], p["jobId"])
    return {
        "jobProperties": {
            "jobId": job.id,
            "jobName": job.name,
            "jobStatus": job.status,
            "datastoreId": job.datastore_id,
            "dataAccessRoleArn": job.data_access_role_arn,
            "endedAt": dt(job.ended_at),
            "submittedAt": dt(job.submitted_at),
            "inputS3Uri": job.input_s3_uri,
            "outputS3Uri": job.output_s3_uri,
            "message": job.message,
            "importConfiguration": job.import_configuration,
        }
    }


@handles("ListDICOMImportJobs")
def list_jobs(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    rows, token = svc.imports.list(
        p["datastoreId"],
        status=p.get("jobStatus"),
        max_results=p.get("maxResults"),
        next_token=p.get("nextToken"),
    )
    return {
        "jobSummaries": [
            {
                "jobId": j.id,
                "jobName": j.name,
                "jobStatus": j.status,
                "datastoreId": j.datastore_id,
                "dataAccessRoleArn": j.data_access_role_arn,
                "endedAt": dt(j.ended_at),
                "submittedAt": dt(j.submitted_at),
                "message": j.message,
            }
            for j in rows
        ],
        "nextToken": token,
    }
