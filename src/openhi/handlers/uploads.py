"""``/openhi/upload/{bucket}/{key}``: put, read and remove import inputs through the server's object store.

``openhi import`` stages local files here (signed with SigV4 like every route), runs an import job on
``s3://bucket/prefix/``, reads the job's reports back, and removes what it staged when it is done.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from openhi.auth.routes import Body, Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.core.errors import NotFoundError, ValidationError
from openhi.ports.objects import (
    BucketNotFound,
    ObjectNotFound,
    validate_bucket,
    validate_key,
    validate_prefix,
)

if TYPE_CHECKING:
    from openhi.services import Services

UPLOAD_PATTERN = "/openhi/upload/{bucket}/{key+}"
MAX_OBJECT_BYTES = 2 * 1024**3  # one staged object (a DICOM file)


def _json(body: dict[str, object]) -> WireResponse:
    return WireResponse(200, [("content-type", "application/json")], json.dumps(body).encode())


def _where(request: Request, *, prefix: bool = False) -> tuple[str, str]:
    bucket, key = request.labels["bucket"], request.labels["key"]
    validate_bucket(bucket)
    if prefix:
        validate_prefix(key)
    else:
        validate_key(key)
    return bucket, key


def put_object(services: Services, request: Request) -> WireResponse:
    """Body → ``s3://bucket/key``; replies ``{"uri", "size"}``."""
    bucket, key = _where(request)
    if request.body_file is None:
        raise ValidationError("The upload has no body.")
    try:
        services.env.objects.put_file(bucket, key, request.body_file)
    except BucketNotFound:
        raise NotFoundError(f"Bucket {bucket} does not exist in the server's object store.") from None
    return _json({"uri": f"s3://{bucket}/{key}", "size": request.body_size})


def get_object(services: Services, request: Request) -> WireResponse:
    """``s3://bucket/key`` (an import job's report, say) as ``application/octet-stream``."""
    bucket, key = _where(request)
    try:
        data = services.env.objects.get(bucket, key)
    except (ObjectNotFound, BucketNotFound):
        raise NotFoundError(f"s3://{bucket}/{key} does not exist.") from None
    return WireResponse(200, [("content-type", "application/octet-stream")], data)


def delete_prefix(services: Services, request: Request) -> WireResponse:
    """Every object under ``s3://bucket/prefix`` removed; replies ``{"deleted": N}``."""
    bucket, prefix = _where(request, prefix=True)
    objects = services.env.objects
    try:
        found = list(objects.list(bucket, prefix))
    except BucketNotFound:
        found = []
    for info in found:
        objects.delete(bucket, info.key)
    return _json({"deleted": len(found)})


UPLOAD_ROUTES: tuple[Route, ...] = (
    Route(
        "PUT",
        UPLOAD_PATTERN,
        "openhi:PutImportInput",
        put_object,
        body=Body.FILE,
        max_body=MAX_OBJECT_BYTES,
        name="upload",
        front="openhi",
    ),
    Route("GET", UPLOAD_PATTERN, "openhi:GetImportOutput", get_object, name="upload-read", front="openhi"),
    Route(
        "DELETE",
        UPLOAD_PATTERN,
        "openhi:DeleteImportInput",
        delete_prefix,
        name="upload-delete",
        front="openhi",
    ),
)
