"""C-FIND answers (PS3.4 C.4.1): a parsed identifier run through QIDO-RS's engine, results as identifiers.

The index is paged (:data:`PAGE` rows a query); every result is QIDO-RS's DICOM JSON object for the same
query (:class:`~openhi.core.qido_answer.QidoAnswer`), cut down to the requested keys. PATIENT level has no
table of its own: the matching studies are grouped by Patient ID (the attributes of a patient are those of
its most recently updated matching study; the counts are summed over its matching studies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from openhi.core.dicom_query import DicomQuery, Level
from openhi.core.find_query import (
    INSTANCE_AVAILABILITY,
    PATIENT_INSTANCES,
    PATIENT_SERIES,
    PATIENT_STUDIES,
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    FindRequest,
)
from openhi.core.qido_answer import QidoAnswer
from openhi.core.qido_parse import QidoRequest

#: index rows read per query
PAGE = 500
_PATIENT_ID = "00100020"
_STUDY_SERIES = "00201206"
_STUDY_INSTANCES = "00201208"
_UTF8 = "ISO_IR 192"

#: -> True once the SCU cancelled (C-CANCEL)
Cancelled = Callable[[], bool]


def _no_url(level: Level, study: str, series: str, sop: str) -> str:
    return ""


def _json_page(answer: QidoAnswer, request: FindRequest, offset: int) -> list[dict[str, Any]]:
    q = request.query
    page = DicomQuery(
        q.level, q.datastore_id, q.study_uid, q.series_uid, list(q.matches), limit=PAGE, offset=offset
    )
    return answer.results(QidoRequest(page, list(request.include)), _no_url)


def _pages(answer: QidoAnswer, request: FindRequest, cancelled: Cancelled) -> Iterator[dict[str, Any]]:
    offset = 0
    while not cancelled():
        objs = _json_page(answer, request, offset)
        yield from objs
        if len(objs) < PAGE:
            return
        offset += PAGE


def _first_number(obj: dict[str, Any], tag: str) -> int:
    values = (obj.get(tag) or {}).get("Value") or [0]
    try:
        return int(values[0] or 0)
    except (TypeError, ValueError):
        return 0


def _empty(tag: int, vr: str) -> DataElement:
    if vr in ("", "UN") or vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    if vr == "SQ":
        return DataElement(tag, "SQ", Sequence())
    return DataElement(tag, vr.split(" or ")[0], None)


def identifier(
    request: FindRequest, obj: dict[str, Any], retrieve_aet: str, counts: tuple[int, int, int] | None = None
) -> Dataset:
    """The response identifier of one result: exactly the requested keys (empty when there is no value),
    the Query/Retrieve Level, the Retrieve AE Title and, when a value is not ASCII, Specific Character Set
    ISO_IR 192 (UTF-8). ``counts``: a patient's (studies, series, instances)."""
    wanted = {f"{tag:08X}": tag for tag, _ in request.keys}
    ds = Dataset.from_json(
        {t: v for t, v in obj.items() if t in wanted and t != f"{SPECIFIC_CHARACTER_SET:08X}"}
    )
    for tag, vr in request.keys:
        if tag in ds:
            continue
        if tag == INSTANCE_AVAILABILITY:
            ds.add(DataElement(tag, "CS", "ONLINE"))
        elif counts is not None and tag in (PATIENT_STUDIES, PATIENT_SERIES, PATIENT_INSTANCES):
            value = counts[(PATIENT_STUDIES, PATIENT_SERIES, PATIENT_INSTANCES).index(tag)]
            ds.add(DataElement(tag, "IS", str(value)))
        elif tag not in (QUERY_RETRIEVE_LEVEL, RETRIEVE_AE_TITLE):
            ds.add(_empty(tag, vr))
    ds.QueryRetrieveLevel = request.level
    ds.RetrieveAETitle = retrieve_aet
    if f"{SPECIFIC_CHARACTER_SET:08X}" in obj:
        ds.SpecificCharacterSet = _UTF8
    return ds


def find(
    answer: QidoAnswer, request: FindRequest, retrieve_aet: str, cancelled: Cancelled
) -> Iterator[Dataset]:
    """Every matching entity's response identifier, in the index's order (studies: most recently updated
    first; series: by Series Number; instances: by Instance Number); stops when ``cancelled()``.

    Raises whatever the index raises (the caller answers 0xC000).
    """
    if request.level != "PATIENT":
        for obj in _pages(answer, request, cancelled):
            yield identifier(request, obj, retrieve_aet)
        return
    patients: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for obj in _pages(answer, request, cancelled):
        values = (obj.get(_PATIENT_ID) or {}).get("Value") or [""]
        key = str(values[0] or "")
        entry = patients.setdefault(key, (obj, [0, 0, 0]))
        entry[1][0] += 1
        entry[1][1] += _first_number(obj, _STUDY_SERIES)
        entry[1][2] += _first_number(obj, _STUDY_INSTANCES)
    for obj, (studies, series, instances) in patients.values():
        if cancelled():
            return
        yield identifier(request, obj, retrieve_aet, (studies, series, instances))
