"""The DICOM study / series / instance index as queries see it: attributes per level and parsed matches."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Level(Enum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class Kind(Enum):
    """PS3.4 C.2.2.2 matching kinds, as the index executes them."""

    SINGLE = "single"  # single value matching: equal (case-sensitive)
    LIST = "list"  # list of UID matching: equal to any of ``values``
    WILDCARD = "wildcard"  # ``*`` any run, ``?`` one character; case-sensitive; the whole value
    RANGE = "range"  # ``values`` = (low, high); "" is open; inclusive; DA / TM / DT
    FUZZY = "fuzzy"  # PN with fuzzymatching=true: case-insensitive, prefix of the name or of a component
    CONTAINS = "contains"  # multi-valued column (ModalitiesInStudy): any of ``values`` is one of its values


@dataclass(frozen=True)
class Attribute:
    """One matchable (and returned) attribute of an index level and the column that holds it."""

    keyword: str
    tag: str  # 8 upper-case hex digits
    vr: str
    level: Level
    column: str


@dataclass(frozen=True)
class Match:
    attribute: Attribute
    kind: Kind
    values: tuple[str, ...]


@dataclass
class DicomQuery:
    """A QIDO-RS query: what level, inside which study / series, the matches, and the page."""

    level: Level
    datastore_id: str
    study_uid: str | None = None
    series_uid: str | None = None
    matches: list[Match] = field(default_factory=list)
    limit: int = 1000
    offset: int = 0


def _a(keyword: str, tag: str, vr: str, level: Level, column: str) -> Attribute:
    return Attribute(keyword, tag, vr, level, column)


S, SE, IN = Level.STUDY, Level.SERIES, Level.INSTANCE
#: Every attribute the index holds, by level (PS3.18 tables 10.6.3-3/4/5 and AWS's search attributes).
ATTRIBUTES: tuple[Attribute, ...] = (
    _a("StudyDate", "00080020", "DA", S, "study_date"),
    _a("StudyTime", "00080030", "TM", S, "study_time"),
    _a("AccessionNumber", "00080050", "SH", S, "accession_number"),
    _a("ModalitiesInStudy", "00080061", "CS", S, "modalities"),
    _a("ReferringPhysicianName", "00080090", "PN", S, "referring_physician_name"),
    _a("StudyDescription", "00081030", "LO", S, "study_description"),
    _a("PatientName", "00100010", "PN", S, "patient_name"),
    _a("PatientID", "00100020", "LO", S, "patient_id"),
    _a("PatientBirthDate", "00100030", "DA", S, "patient_birth_date"),
    _a("PatientSex", "00100040", "CS", S, "patient_sex"),
    _a("StudyInstanceUID", "0020000D", "UI", S, "study_uid"),
    _a("StudyID", "00200010", "SH", S, "study_id"),
    _a("NumberOfStudyRelatedSeries", "00201206", "IS", S, "num_series"),
    _a("NumberOfStudyRelatedInstances", "00201208", "IS", S, "num_instances"),
    _a("Modality", "00080060", "CS", SE, "modality"),
    _a("SeriesDescription", "0008103E", "LO", SE, "series_description"),
    _a("BodyPartExamined", "00180015", "CS", SE, "body_part"),
    _a("SeriesInstanceUID", "0020000E", "UI", SE, "series_uid"),
    _a("SeriesNumber", "00200011", "IS", SE, "series_number"),
    _a("SeriesDate", "00080021", "DA", SE, "series_date"),
    _a("SeriesTime", "00080031", "TM", SE, "series_time"),
    _a("PerformedProcedureStepStartDate", "00400244", "DA", SE, "pps_start_date"),
    _a("PerformedProcedureStepStartTime", "00400245", "TM", SE, "pps_start_time"),
    _a("NumberOfSeriesRelatedInstances", "00201209", "IS", SE, "num_instances"),
    _a("SOPClassUID", "00080016", "UI", IN, "sop_class_uid"),
    _a("SOPInstanceUID", "00080018", "UI", IN, "sop_uid"),
    _a("InstanceNumber", "00200013", "IS", IN, "instance_number"),
    _a("Rows", "00280010", "US", IN, "rows"),
    _a("Columns", "00280011", "US", IN, "columns"),
    _a("BitsAllocated", "00280100", "US", IN, "bits_allocated"),
    _a("NumberOfFrames", "00280008", "IS", IN, "number_of_frames"),
)
#: computed (count) attributes: returned, never stored from a document value
COUNTS = frozenset(
    {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances"}
)
#: integer columns (compared and sorted as numbers)
INTEGER_COLUMNS = frozenset(
    {
        "num_series",
        "num_instances",
        "series_number",
        "instance_number",
        "rows",
        "columns",
        "bits_allocated",
        "number_of_frames",
    }
)
BY_KEYWORD: dict[tuple[Level, str], Attribute] = {(a.level, a.keyword): a for a in ATTRIBUTES}
BY_TAG: dict[tuple[Level, str], Attribute] = {(a.level, a.tag): a for a in ATTRIBUTES}


def level_attributes(level: Level) -> tuple[Attribute, ...]:
    """The attributes of ``level`` alone (a series query also sees the study level's, and so on)."""
    return tuple(a for a in ATTRIBUTES if a.level is level)
