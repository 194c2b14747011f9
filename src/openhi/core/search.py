"""SearchImageSets criteria: validate the model's filters and sort, and normalise them to a SearchQuery."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any

from openhi.core.errors import ValidationError
from openhi.dicom.text_values import normalise_text
from openhi.ports.index import SearchFilter, SearchQuery

#: SearchByAttributeValue member -> index column
ATTRIBUTE_COLUMNS: dict[str, str] = {
    "DICOMPatientId": "patient_id",
    "DICOMAccessionNumber": "accession_number",
    "DICOMStudyId": "study_id",
    "DICOMStudyInstanceUID": "study_uid",
    "DICOMSeriesInstanceUID": "series_uid",
    "createdAt": "created_at",
    "updatedAt": "updated_at",
    "DICOMStudyDateAndTime": "study_datetime",
    "isPrimary": "is_primary",
}
#: Sort field (model) -> index column
SORT_COLUMNS: dict[str, str] = {
    "updatedAt": "updated_at",
    "createdAt": "created_at",
    "DICOMStudyDateAndTime": "study_datetime",
}
SORT_FIELDS = {column: field for field, column in SORT_COLUMNS.items()}
DEFAULT_SORT = {"sortField": "updatedAt", "sortOrder": "DESC"}
RANGE_ATTRIBUTES = ("createdAt", "updatedAt", "DICOMStudyDateAndTime")
_TIMESTAMPS = ("createdAt", "updatedAt")
_UIDS = ("DICOMStudyInstanceUID", "DICOMSeriesInstanceUID")
#: the DICOM VR of each string attribute (PatientID, AccessionNumber, StudyID, the two UIDs)
_ATTRIBUTE_VRS = {
    "DICOMPatientId": "LO",
    "DICOMAccessionNumber": "SH",
    "DICOMStudyId": "SH",
    "DICOMStudyInstanceUID": "UI",
    "DICOMSeriesInstanceUID": "UI",
}

_UID = re.compile(r"[0-9]+(\.[0-9]+)*", re.ASCII)
_DA = re.compile(r"[0-9]{8}", re.ASCII)
_TM = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?", re.ASCII)
# Timestamps travel as milliseconds on the wire (responses are rounded to 1 ms), so a timestamp value
# stands for the millisecond around it: EQUAL and inclusive BETWEEN bounds widen by half a millisecond.
HALF_MS = 0.0005


def study_datetime_key(date: str | None, time: str | None) -> str | None:
    """Sortable ``YYYYMMDDHHMMSS.ffffff`` from DICOM DA + TM; a missing time is the start of the day.

    The one normalisation: the index adapters store it in the ``study_datetime`` column, and filter
    values and page cursors are built with it, so they always compare equal.
    """
    if not date:
        return None
    digits = "".join(ch for ch in (time or "") if ch.isdigit() or ch == ".")
    whole, _, frac = digits.partition(".")
    whole = (whole + "000000")[:6]
    frac = (frac + "000000")[:6]
    return f"{date[:8]}{whole}.{frac}"


def _check_date(value: Any) -> str:
    if not isinstance(value, str) or not _DA.fullmatch(value):
        raise ValidationError(
            f"Invalid DICOMStudyDate {value!r}: expected a DICOM DA date YYYYMMDD (8 digits)."
        )
    try:
        _dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        raise ValidationError(f"Invalid DICOMStudyDate {value!r}: not a calendar date.") from None
    return value


def _check_time(value: Any) -> str | None:
    if value is None or value == "":
        return None
    match = _TM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(
            f"Invalid DICOMStudyTime {value!r}: expected a DICOM TM time HH[MM[SS[.FFFFFF]]]."
        )
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups()[:3])
    if hours > 23 or minutes > 59 or seconds > 60:
        raise ValidationError(f"Invalid DICOMStudyTime {value!r}: hours, minutes or seconds out of range.")
    return str(value)


def _timestamp(value: Any, attribute: str) -> float:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return float(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValidationError(f"Invalid {attribute} value {value!r}: expected a timestamp.")


def _attribute(value: Any) -> tuple[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("Each search filter value must be an object with exactly one attribute.")
    chosen = [(k, v) for k, v in value.items() if v is not None]
    if len(chosen) != 1:
        names = ", ".join(k for k, _ in chosen) or "none"
        raise ValidationError(
            f"Each search filter value must set exactly one of {', '.join(ATTRIBUTE_COLUMNS)} (got {names})."
        )
    name, raw = chosen[0]
    if name not in ATTRIBUTE_COLUMNS:
        raise ValidationError(f"Unsupported search attribute {name}.")
    return name, raw


def _normalise(attribute: str, raw: Any) -> Any:
    """The index value for one filter value of ``attribute``."""
    if attribute in _TIMESTAMPS:
        return _timestamp(raw, attribute)
    if attribute == "DICOMStudyDateAndTime":
        if not isinstance(raw, Mapping):
            raise ValidationError("DICOMStudyDateAndTime must be an object with DICOMStudyDate.")
        date = _check_date(raw.get("DICOMStudyDate"))
        return study_datetime_key(date, _check_time(raw.get("DICOMStudyTime")))
    if attribute == "isPrimary":
        if not isinstance(raw, bool):
            raise ValidationError(f"Invalid isPrimary value {raw!r}: expected a boolean.")
        return int(raw)
    if not isinstance(raw, str):
        raise ValidationError(f"Invalid {attribute} value {raw!r}: expected a string.")
    if attribute in _UIDS and not _UID.fullmatch(raw):
        raise ValidationError(
            f"Invalid {attribute} {raw!r}: a DICOM UID is digits separated by single periods, "
            "without a leading or trailing period."
        )
    # the document's (and the index's) form of the value: trailing padding is not part of it
    return normalise_text(_ATTRIBUTE_VRS[attribute], raw)


def _filter(index: int, spec: Any) -> tuple[str, SearchFilter]:
    where = f"searchCriteria.filters[{index}]"
    if not isinstance(spec, Mapping):
        raise ValidationError(f"{where} must be an object with values and operator.")
    operator = spec.get("operator")
    values = spec.get("values") or []
    if operator not in ("EQUAL", "BETWEEN"):
        raise ValidationError(f"{where}.operator must be EQUAL or BETWEEN (got {operator!r}).")
    pairs = [_attribute(v) for v in values]
    names = sorted({name for name, _ in pairs})
    if len(names) > 1:
        raise ValidationError(
            f"{where} mixes attributes ({', '.join(names)}); all values of one filter must use the same attribute."
        )
    if not names:
        raise ValidationError(f"{where}.values must hold at least one value.")
    attribute = names[0]
    if operator == "EQUAL" and len(pairs) != 1:
        raise ValidationError(f"{where}: operator EQUAL takes exactly 1 value ({len(pairs)} given).")
    if operator == "BETWEEN":
        if attribute not in RANGE_ATTRIBUTES:
            raise ValidationError(
                f"{where}: operator BETWEEN is only supported for {', '.join(RANGE_ATTRIBUTES)}, not {attribute}."
            )
        if len(pairs) != 2:
            raise ValidationError(
                f"{where}: operator BETWEEN takes exactly 2 values (lowerBound, upperBound); {len(pairs)} given."
            )
    normalised = [_normalise(attribute, raw) for _, raw in pairs]
    if operator == "BETWEEN" and normalised[0] > normalised[1]:
        raise ValidationError(
            f"{where}: BETWEEN bounds of {attribute} must be given as (lowerBound, upperBound); "
            "the first value is after the second."
        )
    if attribute in _TIMESTAMPS:
        low, high = normalised[0], normalised[-1]
        operator, normalised = "BETWEEN", [low - HALF_MS, high + HALF_MS]
    return attribute, SearchFilter(ATTRIBUTE_COLUMNS[attribute], operator, normalised)


def _sort(spec: Any) -> tuple[str, str]:
    if spec is None:
        return SORT_COLUMNS[DEFAULT_SORT["sortField"]], DEFAULT_SORT["sortOrder"]
    if not isinstance(spec, Mapping):
        raise ValidationError("searchCriteria.sort must be an object with sortField and sortOrder.")
    field, order = spec.get("sortField"), spec.get("sortOrder")
    if field not in SORT_COLUMNS:
        raise ValidationError(
            f"searchCriteria.sort.sortField must be one of {', '.join(SORT_COLUMNS)} (got {field!r})."
        )
    if order not in ("ASC", "DESC"):
        raise ValidationError(f"searchCriteria.sort.sortOrder must be ASC or DESC (got {order!r}).")
    return SORT_COLUMNS[field], str(order)


def parse_criteria(criteria: Mapping[str, Any] | None) -> SearchQuery:
    """Translate ``searchCriteria`` (model member names) into an index query.

    Raises:
        ValidationError: a combination the service does not accept; the message names the problem.
    """
    criteria = criteria or {}
    filters_spec = criteria.get("filters") or []
    if not isinstance(filters_spec, list) or len(filters_spec) > 2:
        raise ValidationError("searchCriteria.filters takes at most 2 filters (they are ANDed).")
    filters: list[SearchFilter] = []
    seen: dict[str, int] = {}
    for i, spec in enumerate(filters_spec):
        attribute, parsed = _filter(i, spec)
        if attribute in seen:
            raise ValidationError(
                f"searchCriteria.filters[{seen[attribute]}] and [{i}] both filter on {attribute}; "
                "use one filter per attribute (BETWEEN for a range)."
            )
        seen[attribute] = i
        filters.append(parsed)
    sort_field, sort_order = _sort(criteria.get("sort"))
    return SearchQuery(filters=filters, sort_field=sort_field, sort_order=sort_order)


def sort_echo(query: SearchQuery) -> dict[str, str]:
    """The ``sort`` member of the response (always present, defaults included)."""
    return {"sortField": SORT_FIELDS[query.sort_field], "sortOrder": query.sort_order}


def query_fingerprint(datastore_id: str, query: SearchQuery) -> dict[str, Any]:
    """What a page token is bound to: the datastore and the normalised query."""
    return {
        "datastoreId": datastore_id,
        "filters": [[f.attribute, f.operator, f.values] for f in query.filters],
        "sort": [query.sort_field, query.sort_order],
    }
