"""DICOMweb STOW-RS (PS3.18 §10.5): ``POST /studies`` and ``POST /studies/{StudyInstanceUID}``.

The body is ``multipart/related; type="application/dicom"`` (PS3.18 §10.5.1) or a single
``application/dicom`` file (AWS's curl example). It arrives in a temporary file; its parts are split
into files of their own (:mod:`openhi.dicomweb.multipart_reader`), stored through
:class:`openhi.core.stow.StowService`, and removed. The answer is a Store Instances Response Module
(PS3.18 Annex I) as one DICOM JSON object: 200 when every instance was stored without a warning, 202
when some failed or have warnings, 409 when none was stored (PS3.18 §10.5.3).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openhi.auth.routes import Body, Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.core.errors import NotAcceptableError, UnsupportedMediaTypeError, ValidationError
from openhi.core.stow import DICOM_MEDIA_TYPE, StowPart, StowResult
from openhi.dicom.dicom_json import dumps
from openhi.dicomweb.multipart_reader import MultipartError, media_type, read_multipart
from openhi.dicomweb.targets import DATASTORE, STUDY, dicomweb_targets
from openhi.dicomweb.urls import base_url, instance_url, study_url

if TYPE_CHECKING:
    from openhi.services import Services

#: AWS: "These actions support upload of up to 1GB of DICOM data per request."
MAX_STOW_BYTES = 1024**3
DICOM_JSON = "application/dicom+json"
_ACCEPTED = frozenset({DICOM_JSON, "application/json", "application/*", "*/*"})
BASE = f"/datastore/{{{DATASTORE}}}"  # as dicomweb.routes.BASE (which imports this module)
# the private block naming the image set each instance went into (not a public attribute of PS3.18)
PRIVATE_CREATOR = "OPENHI"
_CREATOR_TAG, _SET_TAG, _VERSION_TAG, _PRIMARY_TAG = "00090010", "00091001", "00091002", "00091003"


def store_instances(services: Services, request: Request) -> WireResponse:
    """Store the request's instances; the Store Instances Response as DICOM JSON.

    Raises:
        UnsupportedMediaTypeError: a body other than multipart/related of application/dicom, or
            application/dicom (PS3.18 §10.5.1.1; the JSON + bulk data form is not taken).
        ValidationError: a malformed multipart body, or one without parts (400).
        NotAcceptableError: an Accept header without application/dicom+json.
        NotFoundError, ConflictError: no such datastore, or not ACTIVE.
    """
    ds_id = request.labels[DATASTORE]
    study = request.labels.get(STUDY)
    _check_accept(request.header("accept"))
    kind, params = media_type(request.header("content-type") or "")
    if kind == "multipart/related":
        root = params.get("type")
        if root is not None and media_type(root)[0] != DICOM_MEDIA_TYPE:
            raise UnsupportedMediaTypeError(
                f"STOW-RS takes multipart/related bodies of type application/dicom, not {root[:100]}."
            )
        boundary = params.get("boundary")
        if not boundary:
            raise ValidationError("The multipart/related Content-Type has no boundary parameter.")
    elif kind != DICOM_MEDIA_TYPE:
        raise UnsupportedMediaTypeError(
            f'STOW-RS takes multipart/related; type="application/dicom" or application/dicom, not '
            f"{kind[:100] or 'a body without a Content-Type'}."
        )
    services.datastores.require_active(ds_id)  # before the body is split: a missing datastore costs nothing
    if request.body_file is None:
        raise ValidationError("The request has no body.")
    with tempfile.TemporaryDirectory(prefix="stow-", dir=services.scratch_dir) as tmp:
        directory = Path(tmp)
        parts: list[StowPart] = []
        if kind == DICOM_MEDIA_TYPE:
            path = directory / "part-000000"
            with path.open("wb") as out:
                shutil.copyfileobj(request.body_file, out, 1024 * 1024)
            parts.append(StowPart(path, request.body_size, None))
        else:
            try:
                found = read_multipart(request.body_file, str(boundary), directory)
            except MultipartError as exc:
                raise ValidationError(str(exc)) from None
            parts = [StowPart(p.path, p.size, p.content_type) for p in found]
        if not parts:
            raise ValidationError("The request holds no instance to store.")
        result = services.stow.store(ds_id, parts, study)
    status = 409 if not result.stored else 200 if not result.failed and not result.warned else 202
    body = dumps(response_dataset(result, base_url(request, ds_id), study))
    return WireResponse(status, [("content-type", DICOM_JSON)], body.encode("utf-8"))


def _check_accept(accept: str | None) -> None:
    if not accept or not accept.strip():
        return
    for item in accept.split(","):
        if media_type(item)[0] in _ACCEPTED:
            return
    raise NotAcceptableError(f"STOW-RS answers {DICOM_JSON}; the request accepts {accept[:200]}.")


def response_dataset(result: StowResult, base: str, study: str | None) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 Table I.1-1) of ``result`` as a DICOM JSON object.

    Retrieve URL (0008,1190) names the study when everything stored belongs to one (the path's study,
    or the one study of the instances), and is empty otherwise (type 2). Each stored instance's Retrieve
    URL names the instance; one in a non-primary image set (a conflict, §7.3) adds ``?imageSetId=`` since
    DICOMweb reads only primary image sets without it. Warning Reason (0008,1196) is given per
    instance, and at the top level with the first instance warning of the request.
    """
    out: dict[str, Any] = {}
    studies = {s.study_uid for s in result.stored}
    one = (
        study if study is not None and result.stored else (next(iter(studies)) if len(studies) == 1 else None)
    )
    out["00081190"] = {"vr": "UR", "Value": [study_url(base, one)]} if one else {"vr": "UR"}
    warnings = [code for s in result.stored for code in s.warnings]
    if warnings:
        out["00081196"] = {"vr": "US", "Value": [warnings[0]]}
    if result.failed:
        items = []
        for f in result.failed:
            item: dict[str, Any] = {}
            if f.sop_class_uid:
                item["00081150"] = {"vr": "UI", "Value": [f.sop_class_uid]}
            if f.sop_instance_uid:
                item["00081155"] = {"vr": "UI", "Value": [f.sop_instance_uid]}
            item["00081197"] = {"vr": "US", "Value": [f.reason]}
            items.append(item)
        out["00081198"] = {"vr": "SQ", "Value": items}
    if result.stored:
        refs = []
        for s in result.stored:
            url = instance_url(base, s.study_uid, s.series_uid, s.sop_instance_uid)
            if not s.is_primary:
                url += f"?imageSetId={s.image_set_id}"
            ref: dict[str, Any] = {
                _CREATOR_TAG: {"vr": "LO", "Value": [PRIVATE_CREATOR]},
                _SET_TAG: {"vr": "LO", "Value": [s.image_set_id]},
                _VERSION_TAG: {"vr": "UL", "Value": [s.version]},
                _PRIMARY_TAG: {"vr": "CS", "Value": ["YES" if s.is_primary else "NO"]},
                "00081150": {"vr": "UI", "Value": [s.sop_class_uid]} if s.sop_class_uid else {"vr": "UI"},
                "00081155": {"vr": "UI", "Value": [s.sop_instance_uid]},
                "00081190": {"vr": "UR", "Value": [url]},
            }
            if s.warnings:
                ref["00081196"] = {"vr": "US", "Value": [s.warnings[0]]}
            refs.append(dict(sorted(ref.items())))
        out["00081199"] = {"vr": "SQ", "Value": refs}
    return out


ROUTES: list[Route] = [
    Route(
        "POST",
        f"{BASE}/studies",
        "medical-imaging:StoreDICOM",
        store_instances,
        dicomweb_targets,
        body=Body.FILE,
        max_body=MAX_STOW_BYTES,
        name="dicomweb-stow",
        front="dicomweb",
    ),
    Route(
        "POST",
        f"{BASE}/studies/{{{STUDY}}}",
        "medical-imaging:StoreDICOMStudy",
        store_instances,
        dicomweb_targets,
        body=Body.FILE,
        max_body=MAX_STOW_BYTES,
        name="dicomweb-stow-study",
        front="dicomweb",
    ),
]
