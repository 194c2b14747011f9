"""The console's image set page (versions, diff, metadata tree, thumbnails) and its write forms."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from openhi.auth.routes import Request
from openhi.awsapi.serializer import WireResponse
from openhi.console.documents import diff as document_diff
from openhi.console.documents import tree_html, version_document
from openhi.console.errors import html_errors
from openhi.console.pages import flash
from openhi.console.render import check_csrf, form_fields, page, query_fields, redirect, with_flash
from openhi.core.errors import NotFoundError, OpenHIError

if TYPE_CHECKING:
    from openhi.services import Services

MAX_VERSIONS = 100
#: instances per series shown in the tree and as thumbnails (the full document is one link away)
TREE_INSTANCES = 50
THUMBNAILS = 24
EXAMPLE_UPDATE = {"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDescription": "New description"}}}


def set_url(ds_id: str, set_id: str) -> str:
    return f"/console/datastores/{ds_id}/imagesets/{set_id}"


def _instances_sorted(series: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    def number(item: tuple[str, dict[str, Any]]) -> tuple[int, str]:
        value = item[1].get("DICOM", {}).get("InstanceNumber")
        try:
            return int(value), item[0]
        except (TypeError, ValueError):
            return 2**31, item[0]

    return sorted(series.get("Instances", {}).items(), key=number)


def _tree(doc: dict[str, Any], full: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The document for the tree (instances per series cut at :data:`TREE_INSTANCES` unless ``full``)
    and the series summaries (UID, modality, instance count, the instances shown)."""
    series_list = []
    shown_series: dict[str, Any] = {}
    for uid, series in doc.get("Study", {}).get("Series", {}).items():
        instances = _instances_sorted(series)
        shown = instances if full else instances[:TREE_INSTANCES]
        shown_series[uid] = {**series, "Instances": dict(shown)}
        series_list.append(
            {
                "uid": uid,
                "modality": series.get("DICOM", {}).get("Modality", ""),
                "description": series.get("DICOM", {}).get("SeriesDescription", ""),
                "count": len(instances),
                "cut": len(instances) - len(shown),
                "instances": [sop for sop, _ in instances[:THUMBNAILS]],
            }
        )
    study = {**doc.get("Study", {}), "Series": shown_series}
    return {**doc, "Study": study}, series_list


def _set_page(
    services: Services,
    request: Request,
    *,
    status: int = 200,
    update_error: str | None = None,
    update_text: str | None = None,
    removable_text: str | None = None,
) -> WireResponse:
    ds_id, set_id = request.labels["datastoreId"], request.labels["imageSetId"]
    fields = query_fields(request)
    view = services.reads.get_image_set(ds_id, set_id)
    versions, _ = services.reads.list_versions(ds_id, set_id, max_results=MAX_VERSIONS, next_token=None)
    doc: dict[str, Any] | None = None
    doc_error: str | None = None
    head = services.env.index.get_image_set(ds_id, set_id)
    try:
        if head is None or head.state == "DELETED":
            raise NotFoundError(f"Image set {set_id} was deleted; its metadata is gone.")
        doc = version_document(services, ds_id, set_id, head.content_version)
        services.reads.touches.touch(ds_id, set_id)  # read like GetImageSetMetadata
    except OpenHIError as exc:
        doc_error = exc.message
    tree, series = _tree(doc, fields.get("full") == "1") if doc else (None, [])
    study_uid = (doc or {}).get("Study", {}).get("DICOM", {}).get("StudyInstanceUID")
    diff, diff_error = None, None
    latest = view.version
    frm = fields.get("from") or (str(latest - 1) if latest > 1 else None)
    to = fields.get("to") or str(latest)
    if frm is not None and view.state != "DELETED":
        try:
            diff = document_diff(services, ds_id, set_id, frm, to)
        except OpenHIError as exc:
            diff_error = exc.message
    base = f"/datastore/{ds_id}"
    thumbs = [
        {
            "series": s["uid"],
            "sop": sop,
            "src": f"{base}/studies/{study_uid}/series/{s['uid']}/instances/{sop}/thumbnail"
            f"?viewport=128,128&imageSetId={set_id}",
        }
        for s in series
        for sop in s["instances"]
    ][:THUMBNAILS]
    viewer_link = (
        f"/viewer?StudyInstanceUIDs={quote(study_uid)}&datastore={quote(ds_id)}" if study_uid else None
    )
    return page(
        services,
        request,
        "imageset.html",
        status=status,
        ds_id=ds_id,
        view=view,
        versions=versions,
        tree=tree_html("Document", tree) if tree else None,
        doc_error=doc_error,
        series=series,
        study_uid=study_uid,
        thumbs=thumbs if study_uid else [],
        viewer_link=viewer_link,
        diff=diff,
        diff_error=diff_error,
        diff_from=frm,
        diff_to=to,
        update_error=update_error,
        update_text=update_text if update_text is not None else json.dumps(EXAMPLE_UPDATE, indent=2),
        removable_text=removable_text or "",
        busy=view.state == "LOCKED",
        tree_instances=TREE_INSTANCES,
        full=fields.get("full") == "1",
        url=set_url(ds_id, set_id),
        flash=flash(request),
    )


@html_errors
def image_set_page(services: Services, request: Request) -> WireResponse:
    """``GET /console/datastores/{id}/imagesets/{setId}`` (``?from=&to=`` versions to diff, ``?full=1``
    every instance in the tree)."""
    return _set_page(services, request)


def _number(text: str | None, what: str) -> int:
    from openhi.core.errors import ValidationError

    if not text or not text.isdigit() or len(text) > 19:
        raise ValidationError(f"The {what} must be a version number.")
    return int(text)


@html_errors
def update_image_set(services: Services, request: Request) -> WireResponse:
    """``POST …/update``: UpdateImageSetMetadata with the form's JSON; a refused update shows the
    model's message beside the editor, keeping what was typed."""
    ds_id, set_id = request.labels["datastoreId"], request.labels["imageSetId"]
    form = form_fields(request)
    check_csrf(request, form)
    updatable = form.get("updatable", "").strip()
    removable = form.get("removable", "").strip()
    try:
        row = services.writes.update(
            ds_id,
            set_id,
            latest_version=_number(form.get("latest"), "latest version"),
            force=form.get("force") == "on",
            include_study=form.get("include_study") == "on",
            updatable=updatable.encode() if updatable else None,
            removable=removable.encode() if removable else None,
        )
    except OpenHIError as exc:
        status = 409 if exc.code == "ConflictException" else 400
        return _set_page(
            services,
            request,
            status=status,
            update_error=exc.message,
            update_text=form.get("updatable", ""),
            removable_text=form.get("removable", ""),
        )
    return redirect(with_flash(set_url(ds_id, set_id), f"Version {row.version} is being written."))


@html_errors
def revert_image_set(services: Services, request: Request) -> WireResponse:
    """``POST …/revert``: a new version with the content of an earlier one."""
    ds_id, set_id = request.labels["datastoreId"], request.labels["imageSetId"]
    form = form_fields(request)
    check_csrf(request, form)
    back = set_url(ds_id, set_id)
    try:
        row = services.writes.update(
            ds_id,
            set_id,
            latest_version=_number(form.get("latest"), "latest version"),
            revert_to=_number(form.get("version"), "version to revert to"),
        )
    except OpenHIError as exc:
        return redirect(with_flash(back, f"Not reverted: {exc.message}", "error"))
    return redirect(with_flash(back, f"Version {row.version} reverts to version {form.get('version')}."))


@html_errors
def copy_image_set(services: Services, request: Request) -> WireResponse:
    """``POST …/copy``: into a new image set, or into an existing one (its id and latest version)."""
    ds_id, set_id = request.labels["datastoreId"], request.labels["imageSetId"]
    form = form_fields(request)
    check_csrf(request, form)
    back = set_url(ds_id, set_id)
    destination = form.get("destination", "").strip() or None
    try:
        started = services.writes.copy(
            ds_id,
            set_id,
            source_latest=_number(form.get("latest"), "latest version"),
            destination_id=destination,
            destination_latest=(
                _number(form.get("destination_latest"), "destination's latest version")
                if destination
                else None
            ),
            force=form.get("force") == "on",
            promote=form.get("promote") == "on",
        )
    except OpenHIError as exc:
        return redirect(with_flash(back, f"Not copied: {exc.message}", "error"))
    target = started.destination.image_set_id
    return redirect(with_flash(set_url(ds_id, target), f"Copied from {set_id}."))


@html_errors
def delete_image_set(services: Services, request: Request) -> WireResponse:
    """``POST …/delete``."""
    ds_id, set_id = request.labels["datastoreId"], request.labels["imageSetId"]
    form = form_fields(request)
    check_csrf(request, form)
    try:
        head = services.writes.delete(ds_id, set_id)
    except OpenHIError as exc:
        return redirect(with_flash(set_url(ds_id, set_id), f"Not deleted: {exc.message}", "error"))
    return redirect(
        with_flash(f"/console/datastores/{ds_id}/imagesets", f"Image set {head.id} is {head.state}.")
    )
