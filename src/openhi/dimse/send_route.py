"""``POST /openhi/datastore/{datastoreId}/send``: the server pushes a study or series to a known DICOM peer."""

from __future__ import annotations

import json
from typing import Any

from pynetdicom import build_context

from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.core.dicom_query import BY_KEYWORD, DicomQuery, Kind, Level, Match
from openhi.core.errors import NotFoundError, ValidationError
from openhi.core.qido_parse import check_uid
from openhi.dicomweb.targets import dicomweb_targets
from openhi.dimse import retrieve
from openhi.dimse.ae import scu_ae
from openhi.dimse.settings import DimseSettings

SEND_PATTERN = "/openhi/datastore/{datastoreId}/send"
_MEMBERS = frozenset({"destination", "studyInstanceUID", "seriesInstanceUID"})


def _body(request: Request) -> tuple[str, str, str | None]:
    """(destination AE title, study UID, series UID or None). Raises ValidationError."""
    try:
        doc = json.loads(request.body or b"{}")
    except ValueError:
        raise ValidationError("The request body is not JSON.") from None
    if not isinstance(doc, dict):
        raise ValidationError("The request body must be a JSON object.")
    unknown = sorted(set(doc) - _MEMBERS)
    if unknown:
        raise ValidationError(f"Unknown member(s): {', '.join(unknown)}.")
    destination, study, series = (
        doc.get("destination"),
        doc.get("studyInstanceUID"),
        doc.get("seriesInstanceUID"),
    )
    if not isinstance(destination, str) or not destination.strip():
        raise ValidationError("destination (the AE title of a --dicom-peer) is required.")
    if not isinstance(study, str):
        raise ValidationError("studyInstanceUID is required.")
    if series is not None and not isinstance(series, str):
        raise ValidationError("seriesInstanceUID must be a string.")
    check_uid(study, "studyInstanceUID")
    if series is not None:
        check_uid(series, "seriesInstanceUID")
    return destination.strip(), study, series


def _query(datastore_id: str, study: str, series: str | None) -> DicomQuery:
    matches = [Match(BY_KEYWORD[(Level.STUDY, "StudyInstanceUID")], Kind.SINGLE, (study,))]
    if series is not None:
        matches.append(Match(BY_KEYWORD[(Level.SERIES, "SeriesInstanceUID")], Kind.SINGLE, (series,)))
    return DicomQuery(Level.INSTANCE, datastore_id, matches=matches)


def send(services: Any, request: Request) -> WireResponse:
    """Send every instance of the study (or series) of the live primary image sets to the peer, as C-MOVE
    would: in its stored syntax where the peer accepts it, else decoded. Answers the counts."""
    settings: DimseSettings = getattr(services, "dimse", None) or DimseSettings()
    datastore_id = request.labels["datastoreId"]
    destination, study, series = _body(request)
    peer = settings.peers.get(destination)
    if peer is None:
        known = ", ".join(sorted(settings.peers)) or "none: start the server with --dicom-peer AET=HOST:PORT"
        raise ValidationError(f"{destination} is not a known DICOM peer (known: {known}).")
    services.dicom_reads.live_datastore(datastore_id)
    found = retrieve.targets(services.env.index, _query(datastore_id, study, series))
    if not found:
        raise NotFoundError(f"No instance of study {study}{' series ' + series if series else ''} is stored.")
    host, _, port = peer.rpartition(":")
    ae = scu_ae(settings.aet, settings)
    contexts = [build_context(uid, syntaxes) for uid, syntaxes in retrieve.proposed_contexts(found)]
    assoc = ae.associate(host.strip("[]"), int(port), contexts=contexts, ae_title=destination)
    if not assoc.is_established:
        raise ValidationError(f"The peer {destination} at {peer} refused or did not answer the association.")
    counts = {"completed": 0, "failed": 0, "warning": 0}
    failed: list[str] = []
    try:
        accepted = retrieve.accepted_syntaxes(assoc.accepted_contexts)
        source = retrieve.InstanceSource(services.dicom_reads, datastore_id)
        for target, (_, ds) in zip(
            found, retrieve.sub_operations(source, found, accepted, lambda: False), strict=True
        ):
            status = None
            if ds is not None and "SOPClassUID" in ds:
                answer = assoc.send_c_store(ds)
                status = int(answer.Status) if answer and "Status" in answer else None
            if status == 0x0000:
                counts["completed"] += 1
            elif status is not None and (status & 0xF000) == 0xB000:
                counts["warning"] += 1
            else:
                counts["failed"] += 1
                failed.append(target.sop_uid)
    finally:
        assoc.release()
    body = {"destination": destination, **counts, "failedSOPInstanceUIDs": failed}
    return WireResponse(200, [("content-type", "application/json")], json.dumps(body).encode())


ROUTES: tuple[Route, ...] = (
    Route("POST", SEND_PATTERN, "openhi:SendDICOM", send, dicomweb_targets, name="send", front="openhi"),
)
