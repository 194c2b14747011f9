"""Contract tests: SearchImageSets filters, operators, sorts, pagination and validation through boto3."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from contract.helpers import active_datastore
from contract.imaging import run_import
from dicom_factory import make_ct_series, uid
from openhi.testing import RunningServer

# name -> (seed, patient, StudyDate, StudyTime, AccessionNumber, StudyID, instances)
SERIES: dict[str, tuple[int, str, str | None, str | None, str | None, str, int]] = {
    "A": (1, "P-A", "20200115", "083000", "ACC-A", "SA", 2),
    "B": (2, "P-B", "20210610", "140000.25", "ACC-B", "SB", 1),
    "C": (3, "P-A", "20220301", None, "ACC-C", "SC", 3),
    "D": (4, "P-D", None, None, None, "SD", 1),
}


def _files(name: str) -> dict[str, bytes]:
    seed, patient, date, time, accession, study_id, n = SERIES[name]
    series = make_ct_series(
        n, rows=16, cols=16, seed=seed, patient_id=patient,
        StudyDate=date, StudyTime=time, AccessionNumber=accession, StudyID=study_id,
    )  # fmt: skip
    return {f"{name}/{i}.dcm": data for i, data in enumerate(series)}


class Corpus:
    def __init__(self, client: Any, datastore_id: str, raw: Any) -> None:
        self.client = client
        self.raw = raw  # no client-side parameter validation: the server's answer is under test
        self.ds = datastore_id
        self.ids: dict[str, str] = {}
        self.summaries: dict[str, dict[str, Any]] = {}

    def search(
        self, criteria: dict[str, Any] | None = None, *, raw: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        if criteria is not None:
            kwargs["searchCriteria"] = criteria
        client = self.raw if raw else self.client
        result: dict[str, Any] = client.search_image_sets(datastoreId=self.ds, **kwargs)
        return result

    def names(self, criteria: dict[str, Any] | None = None, **kwargs: Any) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id[s["imageSetId"]] for s in self.search(criteria, **kwargs)["imageSetsMetadataSummaries"]]


@pytest.fixture(scope="module")
def corpus(openhi_server: RunningServer) -> Corpus:
    client = openhi_server.client()
    ds_id = active_datastore(client, "search")
    files: dict[str, bytes] = {}
    for name in SERIES:
        files.update(_files(name))
    first = run_import(client, openhi_server, ds_id, files)
    assert first["job"]["jobStatus"] == "COMPLETED" and len(first["manifest"]["imageSetsSummary"]) == 4
    # E: A's study and series with a different accession number -> a non-primary image set, created later
    conflicting = make_ct_series(
        1, rows=16, cols=16, seed=9, patient_id="P-A",
        study_uid=uid("ct-study", 1, "P-A"), series_uid=uid("ct-series", 1, "P-A"),
        StudyDate="20200115", StudyTime="083000", AccessionNumber="ACC-E", StudyID="SA",
    )  # fmt: skip
    second = run_import(client, openhi_server, ds_id, {"E/0.dcm": conflicting[0]})
    assert second["manifest"]["imageSetsSummary"][0]["isPrimary"] is False
    unvalidated = Config(inject_host_prefix=False, retries={"max_attempts": 1}, parameter_validation=False)
    c = Corpus(client, ds_id, openhi_server.client(config=unvalidated))
    c.ids["E"] = second["manifest"]["imageSetsSummary"][0]["imageSetId"]
    for s in c.search()["imageSetsMetadataSummaries"]:
        tags = s["DICOMTags"]
        if s["imageSetId"] == c.ids["E"]:
            continue
        name = next(n for n, spec in SERIES.items() if tags["DICOMStudyId"] == spec[5])
        c.ids[name] = s["imageSetId"]
    for s in c.search()["imageSetsMetadataSummaries"]:
        c.summaries[next(k for k, v in c.ids.items() if v == s["imageSetId"])] = s
    assert sorted(c.ids) == ["A", "B", "C", "D", "E"]
    return c


def _eq(value: dict[str, Any]) -> dict[str, Any]:
    return {"filters": [{"values": [value], "operator": "EQUAL"}]}


def _between(member: str, low: Any, high: Any) -> dict[str, Any]:
    return {"filters": [{"values": [{member: low}, {member: high}], "operator": "BETWEEN"}]}


def _dt(date: str, time: str | None = None) -> dict[str, str]:
    return {"DICOMStudyDate": date, **({"DICOMStudyTime": time} if time is not None else {})}


def test_no_criteria_returns_everything_sorted_by_updated_desc(corpus: Corpus) -> None:
    result = corpus.search()
    assert result["sort"] == {"sortField": "updatedAt", "sortOrder": "DESC"}
    assert "nextToken" not in result
    rows = result["imageSetsMetadataSummaries"]
    assert sorted(corpus.names()) == ["A", "B", "C", "D", "E"]
    assert [r["updatedAt"] for r in rows] == sorted((r["updatedAt"] for r in rows), reverse=True)
    assert corpus.names()[0] == "E"


def test_summary_fields_and_dicom_tags(corpus: Corpus) -> None:
    a = corpus.summaries["A"]
    assert a["version"] == 1 and a["isPrimary"] is True and a["storageTier"] == "FREQUENT_ACCESS"
    assert a["createdAt"] <= a["updatedAt"] and a["lastAccessedAt"] >= a["createdAt"]
    tags = a["DICOMTags"]
    assert tags == {
        **tags,
        "DICOMPatientId": "P-A",
        "DICOMPatientName": "TEST^PATIENT",
        "DICOMPatientBirthDate": "19700101",
        "DICOMPatientSex": "O",
        "DICOMStudyInstanceUID": uid("ct-study", 1, "P-A"),
        "DICOMSeriesInstanceUID": uid("ct-series", 1, "P-A"),
        "DICOMStudyId": "SA",
        "DICOMAccessionNumber": "ACC-A",
        "DICOMSeriesModality": "CT",
        "DICOMSeriesNumber": 1,
        "DICOMStudyDate": "20200115",
        "DICOMStudyTime": "083000",
        "DICOMNumberOfStudyRelatedSeries": 1,
        "DICOMNumberOfStudyRelatedInstances": 2,
    }
    assert corpus.summaries["C"]["DICOMTags"]["DICOMNumberOfStudyRelatedInstances"] == 3
    d = corpus.summaries["D"]["DICOMTags"]  # absent values are omitted
    assert "DICOMAccessionNumber" not in d and "DICOMStudyDate" not in d and "DICOMStudyTime" not in d
    assert corpus.summaries["E"]["isPrimary"] is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"DICOMPatientId": "P-A"}, {"A", "C", "E"}),
        ({"DICOMPatientId": "P-Z"}, set()),
        ({"DICOMAccessionNumber": "ACC-B"}, {"B"}),
        ({"DICOMStudyId": "SA"}, {"A", "E"}),
        ({"DICOMStudyInstanceUID": uid("ct-study", 3, "P-A")}, {"C"}),
        ({"DICOMSeriesInstanceUID": uid("ct-series", 1, "P-A")}, {"A", "E"}),
        ({"isPrimary": True}, {"A", "B", "C", "D"}),
        ({"isPrimary": False}, {"E"}),
        ({"DICOMStudyDateAndTime": _dt("20200115", "083000")}, {"A", "E"}),
        ({"DICOMStudyDateAndTime": _dt("20200115", "083000.000")}, {"A", "E"}),
        ({"DICOMStudyDateAndTime": _dt("20220301")}, {"C"}),  # no time: the start of the day
        ({"DICOMStudyDateAndTime": _dt("20200115")}, set()),
    ],
)
def test_equal_filters(corpus: Corpus, value: dict[str, Any], expected: set[str]) -> None:
    assert set(corpus.names(_eq(value))) == expected


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (_dt("20200101"), _dt("20211231"), {"A", "B", "E"}),
        (_dt("20200115", "083000"), _dt("20210610", "140000.25"), {"A", "B", "E"}),  # inclusive
        (_dt("20200115", "083000.000001"), _dt("20210610", "140000.25"), {"B"}),
        (_dt("20200115", "083000.000001"), _dt("20210610", "140000.249999"), set()),
        (_dt("20220301"), _dt("20220301", "000000"), {"C"}),
        (_dt("19000101"), _dt("29991231", "235959.999999"), {"A", "B", "C", "E"}),  # D has no study date
    ],
)
def test_study_date_between(corpus: Corpus, low: Any, high: Any, expected: set[str]) -> None:
    assert set(corpus.names(_between("DICOMStudyDateAndTime", low, high))) == expected


@pytest.mark.parametrize("member", ["createdAt", "updatedAt"])
def test_timestamp_between_is_inclusive_at_wire_precision(corpus: Corpus, member: str) -> None:
    s = corpus.summaries
    first = min(s[n][member] for n in "ABCD")
    last = max(s[n][member] for n in "ABCD")
    assert set(corpus.names(_between(member, first, last))) == {"A", "B", "C", "D"}
    assert set(corpus.names(_between(member, s["E"][member], s["E"][member]))) == {"E"}
    assert set(corpus.names(_eq({member: s["E"][member]}))) == {"E"}
    later = s["E"][member] + timedelta(seconds=5)
    assert corpus.names(_between(member, later, later + timedelta(days=1))) == []


def test_two_filters_are_anded(corpus: Corpus) -> None:
    criteria = {
        "filters": [
            {"values": [{"DICOMPatientId": "P-A"}], "operator": "EQUAL"},
            _between("DICOMStudyDateAndTime", _dt("20200101"), _dt("20201231"))["filters"][0],
        ],
        "sort": {"sortField": "createdAt", "sortOrder": "ASC"},
    }
    assert corpus.names(criteria) == ["A", "E"]
    criteria["filters"][1] = {"values": [{"isPrimary": True}], "operator": "EQUAL"}
    assert set(corpus.names(criteria)) == {"A", "C"}


@pytest.mark.parametrize("order", ["ASC", "DESC"])
@pytest.mark.parametrize("field", ["createdAt", "updatedAt", "DICOMStudyDateAndTime"])
def test_sorts_are_echoed_and_applied(corpus: Corpus, field: str, order: str) -> None:
    sort = {"sortField": field, "sortOrder": order}
    result = corpus.search({"sort": sort})
    assert result["sort"] == sort
    names = corpus.names({"sort": sort})
    if field == "DICOMStudyDateAndTime":
        dated = ["A", "B", "C"] if order == "ASC" else ["C", "B", "A"]
        assert [n for n in names if n != "E"] == [*dated, "D"]  # no study date: last in both orders
        assert abs(names.index("E") - names.index("A")) == 1  # same study date and time as A
    else:
        values = [corpus.summaries[n][field] for n in names]
        assert values == sorted(values, reverse=order == "DESC")
        assert (names[-1] if order == "ASC" else names[0]) == "E"


@pytest.mark.parametrize("field", ["createdAt", "updatedAt", "DICOMStudyDateAndTime"])
def test_pages_cover_everything_once(corpus: Corpus, field: str) -> None:
    criteria = {"sort": {"sortField": field, "sortOrder": "ASC"}}
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"maxResults": 2}
        if token:
            kwargs["nextToken"] = token
        page = corpus.search(criteria, **kwargs)
        assert page["sort"] == criteria["sort"] and len(page["imageSetsMetadataSummaries"]) <= 2
        seen += [s["imageSetId"] for s in page["imageSetsMetadataSummaries"]]
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 5
    assert seen == [corpus.ids[n] for n in corpus.names(criteria)]


def test_boto3_paginator(corpus: Corpus) -> None:
    paginator = corpus.client.get_paginator("search_image_sets")
    pages = list(
        paginator.paginate(
            datastoreId=corpus.ds,
            searchCriteria={"filters": [{"values": [{"isPrimary": True}], "operator": "EQUAL"}]},
            PaginationConfig={"PageSize": 1},
        )
    )
    assert len(pages) == 4
    assert {p["imageSetsMetadataSummaries"][0]["imageSetId"] for p in pages} == {
        corpus.ids[n] for n in "ABCD"
    }
    full = paginator.paginate(datastoreId=corpus.ds, PaginationConfig={"PageSize": 2}).build_full_result()
    assert len(full["imageSetsMetadataSummaries"]) == 5
    assert full["sort"] == {"sortField": "updatedAt", "sortOrder": "DESC"}


def test_token_is_bound_to_the_query(corpus: Corpus) -> None:
    token = corpus.search(maxResults=1)["nextToken"]
    with pytest.raises(ClientError) as exc:
        corpus.search(_eq({"isPrimary": True}), maxResults=1, nextToken=token)
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert "different request" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        corpus.search(maxResults=1, nextToken=token[:-3] + "AAA")
    assert exc.value.response["Error"]["Code"] == "ValidationException"


DT = {"DICOMStudyDateAndTime": _dt("20200101")}


@pytest.mark.parametrize(
    ("criteria", "fragment"),
    [
        (
            {"filters": [{"values": [{"DICOMPatientId": "a"}, {"DICOMStudyId": "b"}], "operator": "EQUAL"}]},
            "mixes",
        ),
        (
            {
                "filters": [
                    {"values": [{"DICOMPatientId": "a"}, {"DICOMPatientId": "b"}], "operator": "EQUAL"}
                ]
            },
            "EQUAL takes exactly 1",
        ),
        ({"filters": [{"values": [DT], "operator": "BETWEEN"}]}, "BETWEEN takes exactly 2"),
        (_between("DICOMPatientId", "a", "b"), "BETWEEN is only supported"),
        (_between("DICOMStudyDateAndTime", _dt("20210101"), _dt("20200101")), "lowerBound"),
        (_eq({"DICOMStudyDateAndTime": _dt("2020011")}), "DICOMStudyDate"),
        (_eq({"DICOMStudyDateAndTime": _dt("20200231")}), "calendar date"),
        (_eq({"DICOMStudyDateAndTime": _dt("20200101", "2460")}), "DICOMStudyTime"),
        (_eq({"DICOMStudyDateAndTime": _dt("20200101", "ab")}), "DICOMStudyTime"),
        (_eq({"DICOMStudyInstanceUID": "1..2"}), "DICOM UID"),
        (_eq({"DICOMSeriesInstanceUID": "1.2."}), "DICOM UID"),
        (
            {
                "filters": [
                    _eq({"DICOMPatientId": "a"})["filters"][0],
                    _eq({"DICOMPatientId": "b"})["filters"][0],
                ]
            },
            "both filter on DICOMPatientId",
        ),
        (
            {"filters": [{"values": [{"DICOMPatientId": "a", "DICOMStudyId": "b"}], "operator": "EQUAL"}]},
            "exactly one",
        ),
        ({"filters": [{"values": [DT, DT, DT], "operator": "BETWEEN"}]}, "length"),
        ({"sort": {"sortField": "DICOMPatientId", "sortOrder": "ASC"}}, "sortField"),
    ],
)
def test_invalid_criteria_are_validation_errors(
    corpus: Corpus, criteria: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ClientError) as exc:
        corpus.search(criteria, raw=True)
    error = exc.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert fragment in error["Message"]


def test_unknown_datastore_and_bad_max_results(corpus: Corpus) -> None:
    with pytest.raises(ClientError) as exc:
        corpus.client.search_image_sets(datastoreId="0" * 32)
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert "0" * 32 in exc.value.response["Error"]["Message"]
    for bad in (0, 51):
        with pytest.raises(ClientError) as exc:
            corpus.search(maxResults=bad, raw=True)
        assert exc.value.response["Error"]["Code"] == "ValidationException"


def test_pagination_survives_a_restart(openhi_fresh: RunningServer) -> None:
    client = openhi_fresh.client()
    ds_id = active_datastore(client, "restart")
    files: dict[str, bytes] = {}
    for name in ("A", "B", "C"):
        files.update(_files(name))
    run_import(client, openhi_fresh, ds_id, files)
    criteria = {"sort": {"sortField": "DICOMStudyDateAndTime", "sortOrder": "DESC"}}
    first = client.search_image_sets(datastoreId=ds_id, searchCriteria=criteria, maxResults=1)
    openhi_fresh.restart()
    client = openhi_fresh.client()
    rest = client.search_image_sets(
        datastoreId=ds_id, searchCriteria=criteria, maxResults=5, nextToken=first["nextToken"]
    )
    dates = [s["DICOMTags"]["DICOMStudyDate"] for s in first["imageSetsMetadataSummaries"]]
    dates += [s["DICOMTags"]["DICOMStudyDate"] for s in rest["imageSetsMetadataSummaries"]]
    assert dates == ["20220301", "20210610", "20200115"]
    assert "nextToken" not in rest
