"""The absolute URLs DICOMweb answers carry (RetrieveURL, BulkDataURI): from the request's own host."""

from __future__ import annotations

from urllib.parse import quote

from openhi.auth.routes import Request


def base_url(request: Request, datastore_id: str) -> str:
    """``{scheme}://{host}/datastore/{datastore_id}`` as the client addressed this server.

    The scheme is ``X-Forwarded-Proto`` when a proxy in front set it, else http; the host is ``Host``.
    """
    scheme = (request.header("x-forwarded-proto") or "http").split(",")[0].strip().lower()
    if scheme not in ("http", "https"):
        scheme = "http"
    host = (request.header("host") or "localhost").strip()
    if not host or any(c in host for c in "/\\ @?#"):
        host = "localhost"
    return f"{scheme}://{host}/datastore/{quote(datastore_id, safe='')}"


def study_url(base: str, study: str) -> str:
    return f"{base}/studies/{study}"


def series_url(base: str, study: str, series: str) -> str:
    return f"{base}/studies/{study}/series/{series}"


def instance_url(base: str, study: str, series: str, sop: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"
