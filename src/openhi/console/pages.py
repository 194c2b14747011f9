"""Console pages for datastores (list with counts, create, delete) and the status page."""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from openhi.auth.routes import Request
from openhi.awsapi.serializer import WireResponse
from openhi.console.errors import STARTED_AT, error_ring, html_errors
from openhi.console.render import check_csrf, form_fields, page, query_fields, redirect, with_flash
from openhi.core.errors import OpenHIError, ValidationError

if TYPE_CHECKING:
    from openhi.services import Services

FORMATS = ("HTJ2K", "JPEG_2000_LOSSLESS")
_NAME = re.compile(r"[A-Za-z0-9._/#-]+( [A-Za-z0-9._/#-]+)*")
QUEUED = ("SUBMITTED", "IN_PROGRESS")
#: image set counts are counted again after this many seconds (a count of 100,000 rows costs ~50 ms)
COUNT_SECONDS = 10.0
_counts: dict[str, tuple[float, int]] = {}


def image_set_count(services: Services, datastore_id: str) -> int:
    """The datastore's image sets, counted at most every :data:`COUNT_SECONDS` per process."""
    now = time.monotonic()
    found = _counts.get(datastore_id)
    if found is None or now - found[0] > COUNT_SECONDS:
        found = (now, services.env.index.count_image_sets(datastore_id))
        _counts[datastore_id] = found
        if len(_counts) > 1000:
            _counts.clear()
    return found[1]


def flash(request: Request) -> dict[str, str] | None:
    fields = query_fields(request)
    if "flash" not in fields:
        return None
    return {"message": fields["flash"][:500], "kind": "error" if fields.get("flashkind") == "error" else "ok"}


@html_errors
def datastores_page(services: Services, request: Request) -> WireResponse:
    """``GET /``: every datastore with its status, format, image set count and running jobs."""
    rows: list[Any] = []
    token: str | None = None
    while True:  # all of them: a store has at most a few hundred (the active quota)
        page_rows, token = services.datastores.list(status=None, max_results=50, next_token=token)
        rows.extend(page_rows)
        if token is None or len(rows) >= 1000:
            break
    index = services.env.index
    listed = []
    for ds in rows:
        live = ds.status in ("CREATING", "ACTIVE")
        listed.append(
            {
                "ds": ds,
                "image_sets": image_set_count(services, ds.id) if live else None,
                "jobs": index.count_jobs(ds.id, QUEUED) if live else None,
            }
        )
    return page(
        services, request, "datastores.html", datastores=listed, formats=FORMATS, flash=flash(request)
    )


@html_errors
def create_datastore(services: Services, request: Request) -> WireResponse:
    """``POST /console/datastores``: name and lossless format from the form."""
    form = form_fields(request)
    check_csrf(request, form)
    name = form.get("name", "").strip() or None
    fmt = form.get("format") or "HTJ2K"
    try:
        if name is not None and (len(name) > 256 or not _NAME.fullmatch(name)):
            raise ValidationError(
                "A datastore name is 1-256 letters, digits, spaces and . _ / # - (no leading or trailing space)."
            )
        if fmt not in FORMATS:
            raise ValidationError(f"The lossless storage format must be one of {', '.join(FORMATS)}.")
        ds = services.datastores.create(
            client_token=form.get("token") or str(uuid.uuid4()), name=name, lossless_storage_format=fmt
        )
    except OpenHIError as exc:
        return redirect(with_flash("/", exc.message, "error"))
    return redirect(with_flash("/", f"Datastore {ds.name or ds.id} created ({ds.status})."))


@html_errors
def delete_datastore(services: Services, request: Request) -> WireResponse:
    """``POST /console/datastores/{id}/delete``: refused (with the reason) while it holds image sets."""
    form = form_fields(request)
    check_csrf(request, form)
    ds_id = request.labels["datastoreId"]
    try:
        ds = services.datastores.delete(ds_id)
    except OpenHIError as exc:
        return redirect(with_flash("/", f"Datastore {ds_id} was not deleted: {exc.message}", "error"))
    return redirect(with_flash("/", f"Datastore {ds.id} is {ds.status}."))


_USERINFO = re.compile(r"//[^@/?#]*@")


def without_secrets(url: str) -> str:
    """A URL without its user and password (``postgresql://u:p@h/db`` → ``postgresql://h/db``) and
    without a query (it may carry tokens)."""
    return _USERINFO.sub("//", url).split("?", 1)[0]


def describe_index(index: Any) -> str:
    db = getattr(index, "db", None)
    path = getattr(db, "path", None)
    if isinstance(path, str):
        return f"sqlite:///{path}"
    settings = getattr(db, "settings", None)
    if settings is not None:
        host = getattr(settings, "host", None) or "?"
        name = getattr(settings, "dbname", None) or getattr(settings, "database", None) or "?"
        return f"postgresql://{host}/{name} (schema {getattr(settings, 'schema', '?')})"
    return type(index).__name__


def describe_blobs(blobs: Any) -> str:
    root = getattr(blobs, "root", None)
    if root is not None:
        return f"file://{root}"
    bucket = getattr(blobs, "bucket", None)
    if isinstance(bucket, str):
        return without_secrets(f"s3://{bucket}/{getattr(blobs, 'prefix', '') or ''}")
    return type(blobs).__name__


def _deployment(services: Services) -> dict[str, Any]:
    return {
        "index": describe_index(services.env.index),
        "blobs": describe_blobs(services.env.blobs),
        "import_worker": "running in this process" if services.worker is not None else "not in this process",
        "pixel_pool": "yes" if services.env.pixel_pool is not None else "no (encoded in the request thread)",
        "process": os.getpid(),
        "cpus": os.cpu_count(),
    }


@html_errors
def status_page(services: Services, request: Request) -> WireResponse:
    """``GET /console/status``: version, deployment, codecs, queue depth, recent errors."""
    from openhi.codec.decoders import decoder_status

    jobs = services.env.index.jobs_in_status(list(QUEUED))
    queue = {status: sum(1 for j in jobs if j.status == status) for status in QUEUED}
    return page(
        services,
        request,
        "status.html",
        uptime=int(time.time() - STARTED_AT),
        deployment=_deployment(services),
        codecs=sorted(decoder_status().items()),
        queue=queue,
        jobs=jobs[:20],
        errors=error_ring().recent(),
        ready=services.ready(),
    )
