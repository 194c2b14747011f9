"""DICOMweb QIDO-RS routes (PS3.18 §10.6): search for studies, series and instances as DICOM JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.core.dicom_query import Level
from openhi.core.errors import NotAcceptableError
from openhi.core.qido_answer import QidoAnswer
from openhi.core.qido_parse import parse_qido
from openhi.dicom.dicom_json import dumps
from openhi.dicomweb.targets import DATASTORE, SERIES, STUDY, dicomweb_targets
from openhi.dicomweb.urls import base_url, instance_url, series_url, study_url

if TYPE_CHECKING:
    from openhi.auth.routes import Handler
    from openhi.services import Services

MEDIA_TYPE = "application/dicom+json"
#: what an Accept header may ask for: the DICOM JSON media type, plain JSON, or anything
_ACCEPTED = frozenset({MEDIA_TYPE, "application/json", "application/*", "*/*"})
#: the agent of the Warning headers (RFC 7234 §5.5: a pseudonym)
WARN_AGENT = "openhi"

_STUDIES = "/datastore/{datastoreId}/studies"
_STUDY = "/datastore/{datastoreId}/studies/{StudyInstanceUID}"


def acceptable(accept: str | None) -> bool:
    """True when ``accept`` (an Accept header, or none) admits DICOM JSON; q=0 ranges admit nothing."""
    if accept is None or not accept.strip():
        return True
    for media_range in accept.split(","):
        kind, *params = (p.strip() for p in media_range.split(";"))
        quality = next((p.partition("=")[2].strip() for p in params if p.lower().startswith("q=")), "1")
        try:
            zero = float(quality) == 0
        except ValueError:
            zero = False
        if not zero and kind.lower() in _ACCEPTED:
            return True
    return False


def _quoted(text: str) -> str:
    """An RFC 9110 quoted-string of printable ASCII: ``"`` and ``\\`` escaped, anything else as ``?``."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        else:
            out.append(ch if " " <= ch <= "~" else "?")
    return '"' + "".join(out) + '"'


def _warning(text: str) -> tuple[str, str]:
    return ("warning", f"299 {WARN_AGENT} {_quoted(text)}")


def _search(level: Level) -> Handler:
    def handler(services: Services, request: Request) -> WireResponse:
        if not acceptable(request.header("accept")):
            raise NotAcceptableError(
                f"QIDO-RS answers {MEDIA_TYPE} (or application/json); the Accept header asks for neither."
            )
        labels = request.labels
        datastore_id = labels[DATASTORE]
        services.dicom_reads.live_datastore(datastore_id)
        parsed = parse_qido(level, datastore_id, request.query, labels.get(STUDY), labels.get(SERIES))
        base = base_url(request, datastore_id)

        def url_for(lvl: Level, study: str, series: str, sop: str) -> str:
            if lvl is Level.STUDY:
                return study_url(base, study)
            if lvl is Level.SERIES:
                return series_url(base, study, series)
            return instance_url(base, study, series, sop)

        results = QidoAnswer(services.env.index, services.dicom_reads).results(parsed, url_for)
        headers = [("content-type", MEDIA_TYPE), *(_warning(w) for w in parsed.warnings)]
        return WireResponse(200, headers, dumps(results).encode("utf-8"))

    return handler


def _route(pattern: str, action: str, level: Level, name: str) -> Route:
    return Route(
        "GET",
        pattern,
        f"medical-imaging:{action}",
        _search(level),
        dicomweb_targets,
        name=name,
        front="dicomweb",
    )


ROUTES: list[Route] = [
    _route(_STUDIES, "SearchDICOMStudies", Level.STUDY, "qido-studies"),
    _route(f"{_STUDY}/series", "SearchDICOMSeries", Level.SERIES, "qido-study-series"),
    _route("/datastore/{datastoreId}/series", "SearchDICOMSeries", Level.SERIES, "qido-series"),
    _route(
        f"{_STUDY}/series/{{SeriesInstanceUID}}/instances",
        "SearchDICOMInstances",
        Level.INSTANCE,
        "qido-series-instances",
    ),
    _route(f"{_STUDY}/instances", "SearchDICOMInstances", Level.INSTANCE, "qido-study-instances"),
    _route("/datastore/{datastoreId}/instances", "SearchDICOMInstances", Level.INSTANCE, "qido-instances"),
]
