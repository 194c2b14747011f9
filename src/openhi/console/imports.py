"""Console pages for import jobs: start one from a bucket path, the job history, one job's manifests."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from openhi.auth.routes import Request
from openhi.awsapi.serializer import WireResponse
from openhi.console.errors import html_errors
from openhi.console.pages import flash
from openhi.console.render import check_csrf, form_fields, page, query_fields, redirect, with_flash
from openhi.core.errors import OpenHIError
from openhi.ports.objects import parse_s3_uri

if TYPE_CHECKING:
    from openhi.services import Services

STATUSES = ("SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED")
#: rows of each manifest table shown on a job page
MAX_ROWS = 500
RUNNING = ("SUBMITTED", "IN_PROGRESS")


def role_arn(services: Services) -> str:
    return f"arn:aws:iam::{services.env.settings.account_id}:role/openhi-console-import"


@html_errors
def imports_page(services: Services, request: Request) -> WireResponse:
    """``GET /console/datastores/{id}/imports``: start and upload forms, and the job history
    (``?status=`` filters, ``?token=`` pages)."""
    ds = services.datastores.get(request.labels["datastoreId"])
    fields = query_fields(request)
    status = fields.get("status") or None
    if status not in STATUSES:
        status = None
    jobs, token = services.imports.list(
        ds.id, status=status, max_results=25, next_token=fields.get("token") or None
    )
    return page(
        services,
        request,
        "imports.html",
        ds=ds,
        jobs=jobs,
        next_token=token,
        job_status=status,
        statuses=STATUSES,
        role=role_arn(services),
        running=any(j.status in RUNNING for j in jobs),
        flash=flash(request),
    )


@html_errors
def start_import(services: Services, request: Request) -> WireResponse:
    """``POST /console/datastores/{id}/imports``: StartDICOMImportJob from the form's bucket paths."""
    ds_id = request.labels["datastoreId"]
    form = form_fields(request)
    check_csrf(request, form)
    back = f"/console/datastores/{ds_id}/imports"
    source = form.get("input", "").strip()
    output = form.get("output", "").strip() or _default_output(source)
    try:
        job = services.imports.start(
            ds_id,
            client_token=form.get("token") or str(uuid.uuid4()),
            data_access_role_arn=form.get("role", "").strip() or role_arn(services),
            input_s3_uri=source,
            output_s3_uri=output,
            job_name=form.get("name", "").strip() or None,
        )
    except OpenHIError as exc:
        return redirect(with_flash(back, f"The import did not start: {exc.message}", "error"))
    return redirect(f"{back}/{job.id}")


def _default_output(source: str) -> str:
    """``s3://bucket/output/`` beside the input (the bucket of the input), when the form leaves it out."""
    try:
        bucket, _ = parse_s3_uri(source)
    except OpenHIError:
        return source
    return f"s3://{bucket}/openhi-import-output/"


def _ndjson(data: bytes) -> list[dict[str, Any]]:
    rows = []
    for line in data.splitlines()[:MAX_ROWS]:
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def read_manifests(services: Services, output_uri: str) -> dict[str, Any]:
    """The job's output manifest and its success / failure / warning rows (the first MAX_ROWS of each);
    missing files are left out (the job has not written them yet)."""
    bucket, prefix = parse_s3_uri(output_uri)
    objects = services.env.objects
    found: dict[str, Any] = {"manifest": None, "success": [], "failure": [], "warning": []}
    try:
        found["manifest"] = json.loads(objects.get(bucket, f"{prefix}job-output-manifest.json"))
    except Exception:
        return found
    for name in ("success", "failure", "warning"):
        try:
            found[name] = _ndjson(objects.get(bucket, f"{prefix}{name.upper()}/{name}.ndjson"))
        except Exception:
            found[name] = []
    return found


@html_errors
def job_page(services: Services, request: Request) -> WireResponse:
    """``GET /console/datastores/{id}/imports/{jobId}``: the job (refreshing while it runs) and its
    manifests as tables."""
    ds_id = request.labels["datastoreId"]
    job = services.imports.get(ds_id, request.labels["jobId"])
    manifests = read_manifests(services, job.output_s3_uri) if job.status not in RUNNING else None
    return page(
        services,
        request,
        "job.html",
        ds_id=ds_id,
        job=job,
        running=job.status in RUNNING,
        manifests=manifests,
        flash=flash(request),
    )
