"""C-FIND / C-MOVE / C-GET identifiers (PS3.4 C.4, C.6) turned into the DICOM index's queries, as QIDO-RS does.

Matching is QIDO-RS's (:mod:`openhi.core.qido_parse`): the same match kinds and validators, so a C-FIND and
the QIDO-RS search with the same keys find the same entities: a UI value (several with backslashes) is a
SINGLE / LIST match, DA / TM with ``-`` a RANGE, ``*`` / ``?`` a case-sensitive WILDCARD, ModalitiesInStudy
CONTAINS, an empty value or ``*`` universal matching. A key the index does not hold (or a sequence) is
returned but not matched; a key of a deeper level than the query's is returned empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from openhi.core.dicom_query import BY_KEYWORD, BY_TAG, COUNTS, Attribute, DicomQuery, Kind, Level, Match
from openhi.core.errors import ValidationError
from openhi.core.qido_parse import check_uid, level_order
from openhi.core.qido_parse import value_match as qido_match

#: Information models (PS3.4 C.6.1 / C.6.2), by the root they are named after
PATIENT_ROOT = "PATIENT"
STUDY_ROOT = "STUDY"
#: Query/Retrieve levels (0008,0052) and the index level each one reads
QR_LEVELS: dict[str, Level] = {
    "PATIENT": Level.STUDY,
    "STUDY": Level.STUDY,
    "SERIES": Level.SERIES,
    "IMAGE": Level.INSTANCE,
}
QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE = 0x00080054
INSTANCE_AVAILABILITY = 0x00080056
#: Attributes of a patient (PS3.4 C.6.1.1.2): the study-level index columns a PATIENT query matches
PATIENT_KEYWORDS = frozenset({"PatientName", "PatientID", "PatientBirthDate", "PatientSex"})
#: Patient-level counts (computed from the patient's studies)
PATIENT_STUDIES = 0x00201200
PATIENT_SERIES = 0x00201202
PATIENT_INSTANCES = 0x00201204
PATIENT_COUNTS = frozenset({PATIENT_STUDIES, PATIENT_SERIES, PATIENT_INSTANCES})
#: keys the answer sets itself (never matched, never read from the index or a document)
SERVICE_KEYS = frozenset(
    {QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, RETRIEVE_AE_TITLE, INSTANCE_AVAILABILITY, *PATIENT_COUNTS}
)
_STUDY_UID = BY_KEYWORD[(Level.STUDY, "StudyInstanceUID")]
_SERIES_UID = BY_KEYWORD[(Level.SERIES, "SeriesInstanceUID")]
_SOP_UID = BY_KEYWORD[(Level.INSTANCE, "SOPInstanceUID")]
_PATIENT_ID = BY_KEYWORD[(Level.STUDY, "PatientID")]


class IdentifierError(ValidationError):
    """The identifier does not fit the SOP class (PS3.4 status 0xA900): a missing or unknown
    Query/Retrieve Level, a level the information model lacks, a malformed value or a missing unique key."""


@dataclass
class FindRequest:
    """A C-FIND identifier as an index query.

    ``level``: the Query/Retrieve Level; ``query``: the index query (STUDY level for PATIENT, paged by the
    caller); ``keys``: the requested return keys (tag, VR) in identifier order, without Specific Character
    Set; ``include``: the tags (8 upper-case hex digits) :class:`~openhi.core.qido_answer.QidoAnswer` must
    fill beyond its defaults; ``unmatched``: keys given with a value whose matching is not performed.
    """

    model: str
    level: str
    query: DicomQuery
    keys: list[tuple[int, str]] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def qr_level(identifier: Dataset, model: str) -> str:
    """The identifier's Query/Retrieve Level. Raises IdentifierError (missing, unknown, or PATIENT in the
    Study Root model)."""
    tag = QUERY_RETRIEVE_LEVEL
    value = element_text(_element(identifier, tag)).strip(" ") if tag in identifier else ""
    if value not in QR_LEVELS:
        raise IdentifierError(f"Query/Retrieve Level {value[:20]!r} is not PATIENT, STUDY, SERIES or IMAGE.")
    if value == "PATIENT" and model != PATIENT_ROOT:
        raise IdentifierError("The Study Root information model has no PATIENT level.")
    return value


def element_text(element: DataElement) -> str:
    """The element's value as a QIDO-RS query value: several values joined with backslashes, a person
    name with its ``=`` groups, trailing padding removed ("" for an empty element).

    Raises IdentifierError when the value does not decode with its VR (an IS that is not a number).
    """
    try:
        value: Any = element.value
    except (ValueError, TypeError, OverflowError) as exc:
        raise IdentifierError(f"{element.keyword or element.tag}: {exc}") from None
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value if value is not None else "").rstrip(" \x00")


def _element(identifier: Dataset, tag: Any) -> DataElement:
    """The identifier's element ``tag``, decoded. Raises IdentifierError when it cannot be."""
    try:
        element: DataElement = identifier[tag]
        return element
    except (ValueError, TypeError, OverflowError, KeyError) as exc:
        raise IdentifierError(f"The identifier's element {tag} cannot be decoded: {exc}") from None


def _index_attribute(tag: int, index_level: Level, patient: bool) -> Attribute | None:
    """The index attribute of ``tag`` a query at ``index_level`` can match (None: deeper or not held)."""
    text = f"{tag:08X}"
    for level in Level:
        attr = BY_TAG.get((level, text))
        if attr is None:
            continue
        if level_order(attr.level) > level_order(index_level):
            return None
        if patient and attr.keyword not in PATIENT_KEYWORDS:
            return None
        return attr
    return None


def parse_find(identifier: Dataset, model: str, datastore_id: str, page: int = 1000) -> FindRequest:
    """Translate a C-FIND identifier of ``model`` (PATIENT_ROOT or STUDY_ROOT) into a :class:`FindRequest`.

    Raises:
        IdentifierError: see :func:`qr_level`; also a malformed value (a UID, date, time, range or
            integer QIDO-RS would refuse) and a non-UID key given several values.
    """
    level = qr_level(identifier, model)
    index_level = QR_LEVELS[level]
    patient = level == "PATIENT"
    request = FindRequest(model, level, DicomQuery(index_level, datastore_id, limit=page))
    matches: dict[str, Match] = {}
    for raw in list(identifier.keys()):
        element = _element(identifier, raw)
        tag = int(element.tag)
        if element.tag.group in (0x0000, 0x0002) or tag == SPECIFIC_CHARACTER_SET:
            continue
        request.keys.append((tag, element.VR))
        if tag in SERVICE_KEYS:
            continue
        attr = _index_attribute(tag, index_level, patient)
        text = "" if element.VR == "SQ" else element_text(element)
        if attr is None:
            if not element.tag.is_private and not patient and element.VR != "SQ":
                request.include.append(f"{tag:08X}")  # read from a document: returned, not matched
            if text not in ("", "*"):
                request.unmatched.append(element.keyword or f"{tag:08X}")
            continue
        request.include.append(attr.tag)
        if text in ("", "*") or attr.keyword in COUNTS:
            if text not in ("", "*"):
                request.unmatched.append(attr.keyword)
            continue
        if "\\" in text and attr.vr not in ("UI",) and attr.keyword != "ModalitiesInStudy":
            raise IdentifierError(f"{attr.keyword} has several values; only UIDs may be matched by a list.")
        try:
            matches[attr.tag] = qido_match(attr, attr.keyword, text, False)
        except ValidationError as exc:
            raise IdentifierError(exc.message) from None
    request.query.matches = list(matches.values())
    return request


def _unique_values(identifier: Dataset, attr: Attribute, required: bool) -> tuple[str, ...]:
    """The UIDs (or the Patient ID) of a retrieve identifier's unique key. Raises IdentifierError."""
    tag = int(attr.tag, 16)
    text = element_text(_element(identifier, tag)) if tag in identifier else ""
    if not text:
        if required:
            raise IdentifierError(f"A retrieve at this level needs {attr.keyword}.")
        return ()
    if attr.vr != "UI":
        if "*" in text or "?" in text or "\\" in text:
            raise IdentifierError(f"{attr.keyword} must be a single value without wildcards in a retrieve.")
        return (text,)
    try:
        return tuple(dict.fromkeys(check_uid(v.strip(" "), attr.keyword) for v in text.split("\\")))
    except ValidationError as exc:
        raise IdentifierError(exc.message) from None


def parse_retrieve(identifier: Dataset, model: str, datastore_id: str, page: int = 1000) -> DicomQuery:
    """The INSTANCE-level index query of a C-MOVE / C-GET identifier: its unique keys (PS3.4 C.4.2.2.1)
    down to its level (PatientID for PATIENT; a list of UIDs at the retrieve level; the keys of the levels
    above, when given, narrow the match). Other keys are ignored.

    Raises:
        IdentifierError: see :func:`qr_level`; a missing unique key of the retrieve level, a malformed
            UID, a Patient ID with wildcards.
    """
    level = qr_level(identifier, model)
    order = ("PATIENT", "STUDY", "SERIES", "IMAGE").index(level)
    keys: list[tuple[Attribute, bool]] = [(_PATIENT_ID, level == "PATIENT")]
    keys += [(_STUDY_UID, level == "STUDY"), (_SERIES_UID, level == "SERIES"), (_SOP_UID, level == "IMAGE")]
    matches: list[Match] = []
    for depth, (attr, required) in enumerate(keys):
        if depth > order:
            break
        values = _unique_values(identifier, attr, required)
        if values:
            matches.append(Match(attr, Kind.SINGLE if len(values) == 1 else Kind.LIST, values))
    return DicomQuery(Level.INSTANCE, datastore_id, matches=matches, limit=page)


def requested_tags(keys: Iterable[tuple[int, str]]) -> set[str]:
    """The 8-hex-digit tags of requested keys."""
    return {f"{tag:08X}" for tag, _ in keys}
