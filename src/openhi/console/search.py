"""The console's image set search: the form's criteria as SearchImageSets filters (two at most go to
the index, the others are checked on each page's rows), and a patient name search through the DICOM index."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openhi.auth.routes import Request
from openhi.awsapi.serializer import WireResponse
from openhi.console.errors import html_errors
from openhi.console.pages import flash
from openhi.console.render import page, query_fields
from openhi.core.dicom_query import BY_KEYWORD, DicomQuery, Kind, Level, Match
from openhi.core.errors import OpenHIError, ValidationError
from openhi.core.records import ImageSet

if TYPE_CHECKING:
    from openhi.services import Services

PAGE_SIZE = 25
NAME_STUDIES = 50  # studies a patient name search looks at
SORT_FIELDS = {"updatedAt": "Updated", "createdAt": "Created", "DICOMStudyDateAndTime": "Study date"}
_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
#: the criteria of the form, in the order they go to the index (the most selective first)
FORM_FIELDS = ("study_uid", "patient_id", "accession", "date_from", "date_to", "primary", "name")


@dataclass
class Criteria:
    """What the search form asked for."""

    values: dict[str, str] = field(default_factory=dict)
    sort: str = "updatedAt"
    order: str = "DESC"

    @classmethod
    def from_query(cls, fields: dict[str, str]) -> Criteria:
        values = {k: fields[k].strip() for k in FORM_FIELDS if fields.get(k, "").strip()}
        sort = fields.get("sort") if fields.get("sort") in SORT_FIELDS else "updatedAt"
        order = "ASC" if fields.get("order") == "ASC" else "DESC"
        return cls(values, str(sort), order)


def _date(text: str, name: str) -> str:
    found = _DATE.fullmatch(text)
    if found is None:
        raise ValidationError(f"The {name} must be a date (YYYY-MM-DD).")
    return "".join(found.groups())


def filters_of(c: Criteria) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """(SearchImageSets filters, the rest as (criterion, value) checked on each row).

    Raises:
        ValidationError: a date that is not a date.
    """
    v = c.values
    wanted: list[tuple[str, dict[str, Any]]] = []
    if "study_uid" in v:
        wanted.append(("study_uid", _equal("DICOMStudyInstanceUID", v["study_uid"])))
    if "patient_id" in v:
        wanted.append(("patient_id", _equal("DICOMPatientId", v["patient_id"])))
    if "accession" in v:
        wanted.append(("accession", _equal("DICOMAccessionNumber", v["accession"])))
    if "date_from" in v or "date_to" in v:
        low = _date(v["date_from"], "first study date") if "date_from" in v else "19000101"
        high = _date(v["date_to"], "last study date") if "date_to" in v else "99991231"
        bounds = [
            {"DICOMStudyDateAndTime": {"DICOMStudyDate": low, "DICOMStudyTime": "000000"}},
            {"DICOMStudyDateAndTime": {"DICOMStudyDate": high, "DICOMStudyTime": "235959.999999"}},
        ]
        wanted.append(("dates", {"values": bounds, "operator": "BETWEEN"}))
    if v.get("primary") in ("yes", "no"):
        wanted.append(("primary", _equal("isPrimary", v["primary"] == "yes")))
    sent = [spec for _, spec in wanted[:2]]
    rest = [(name, spec) for name, spec in wanted[2:]]
    return sent, rest


def _equal(attribute: str, value: Any) -> dict[str, Any]:
    return {"values": [{attribute: value}], "operator": "EQUAL"}


def _row_matches(row: ImageSet, rest: list[tuple[str, Any]]) -> bool:
    tags = row.search
    for name, spec in rest:
        if name == "primary":
            if row.is_primary != spec["values"][0]["isPrimary"]:
                return False
        elif name == "dates":
            low = spec["values"][0]["DICOMStudyDateAndTime"]["DICOMStudyDate"]
            high = spec["values"][1]["DICOMStudyDateAndTime"]["DICOMStudyDate"]
            date = str(tags.get("DICOMStudyDate") or "")
            if not (date and low <= date <= high):
                return False
        else:
            attribute, value = next(iter(spec["values"][0].items()))
            if str(tags.get(attribute) or "") != value:
                return False
    return True


def _by_name(services: Services, ds_id: str, name: str, c: Criteria) -> list[ImageSet]:
    """Image sets of the studies whose PatientName matches ``name`` (case-insensitive, any name
    component's prefix; ``*`` / ``?`` wildcards), at most :data:`NAME_STUDIES` studies."""
    attribute = BY_KEYWORD[(Level.STUDY, "PatientName")]
    kind = Kind.WILDCARD if ("*" in name or "?" in name) else Kind.FUZZY
    query = DicomQuery(Level.STUDY, ds_id, matches=[Match(attribute, kind, (name,))], limit=NAME_STUDIES)
    studies = services.env.index.dicom_studies(query)
    rows: list[ImageSet] = []
    for study in studies:
        uid = study.get("study_uid")
        if not uid:
            continue
        criteria = {"filters": [_equal("DICOMStudyInstanceUID", uid)]}
        found = services.reads.search(ds_id, criteria, max_results=50, next_token=None)
        rows.extend(found.image_sets)
    key = {"updatedAt": lambda r: r.updated_at, "createdAt": lambda r: r.created_at}.get(
        c.sort,
        lambda r: str(r.search.get("DICOMStudyDate") or "") + str(r.search.get("DICOMStudyTime") or ""),
    )
    rows.sort(key=key, reverse=c.order == "DESC")
    return rows


@html_errors
def search_page(services: Services, request: Request) -> WireResponse:
    """``GET /console/datastores/{id}/imagesets``: the search form and one page of image sets."""
    ds = services.datastores.get(request.labels["datastoreId"])
    fields = query_fields(request)
    c = Criteria.from_query(fields)
    rows: list[ImageSet] = []
    next_token: str | None = None
    error: str | None = None
    filtered_here = False
    try:
        sent, rest = filters_of(c)
        if "name" in c.values:
            checks = [(_name_of(spec), spec) for spec in sent] + rest
            rows = [r for r in _by_name(services, ds.id, c.values["name"], c) if _row_matches(r, checks)]
        else:
            criteria: dict[str, Any] = {"filters": sent, "sort": {"sortField": c.sort, "sortOrder": c.order}}
            result = services.reads.search(
                ds.id, criteria, max_results=PAGE_SIZE, next_token=fields.get("token") or None
            )
            rows = [r for r in result.image_sets if _row_matches(r, rest)]
            next_token = result.next_token
            filtered_here = bool(rest)
    except OpenHIError as exc:
        error = exc.message
    carried = dict(c.values)
    carried.update(sort=c.sort, order=c.order)
    return page(
        services,
        request,
        "search.html",
        ds=ds,
        rows=rows,
        c=c,
        carried=carried,
        sort_fields=SORT_FIELDS,
        next_token=next_token,
        error=error,
        filtered_here=filtered_here,
        searched=bool(c.values) or "token" in fields,
        flash=flash(request),
    )


def _name_of(spec: dict[str, Any]) -> str:
    """The criterion name of one SearchImageSets filter (for checking it on rows)."""
    if spec["operator"] == "BETWEEN":
        return "dates"
    attribute = next(iter(spec["values"][0]))
    return "primary" if attribute == "isPrimary" else attribute
