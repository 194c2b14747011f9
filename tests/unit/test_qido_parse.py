"""QIDO-RS query parsing: every matching kind, includefield, paging under the cap, and every 400."""

from __future__ import annotations

import pytest

from openhi.core.dicom_query import BY_KEYWORD, Attribute, Kind, Level, Match
from openhi.core.errors import ValidationError
from openhi.core.qido_parse import DEFAULT_LIMIT, MAX_RESULTS, QidoRequest, parse_qido

DS = "0" * 32
STUDY_UID = "1.2.840.113619.2.55.3"
SERIES_UID = "1.2.840.113619.2.55.3.1"


def parse(
    query: str, level: Level = Level.STUDY, study: str | None = None, series: str | None = None
) -> QidoRequest:
    return parse_qido(level, DS, query.encode("latin-1"), study, series)


def only(query: str, level: Level = Level.STUDY) -> Match:
    matches = parse(query, level).query.matches
    assert len(matches) == 1, matches
    return matches[0]


def attr(keyword: str) -> Attribute:
    for level in Level:
        if (level, keyword) in BY_KEYWORD:
            return BY_KEYWORD[(level, keyword)]
    raise KeyError(keyword)


def test_defaults() -> None:
    r = parse("")
    q = r.query
    assert (q.level, q.datastore_id, q.study_uid, q.series_uid) == (Level.STUDY, DS, None, None)
    assert (q.matches, q.limit, q.offset) == ([], DEFAULT_LIMIT, 0)
    assert (r.include, r.include_all, r.warnings, r.empty) == ([], False, [], False)


def test_keyword_and_tag_name_the_same_attribute() -> None:
    by_keyword = only("PatientID=PAT1")
    by_tag = only("00100020=PAT1")
    lower_hex = only("0020000d=1.2.3")
    assert by_keyword == by_tag == Match(attr("PatientID"), Kind.SINGLE, ("PAT1",))
    assert lower_hex.attribute.keyword == "StudyInstanceUID"


def test_percent_decoding_and_plus_as_space() -> None:
    assert only("PatientName=Doe%5EJohn").values == ("Doe^John",)
    assert only("StudyDescription=CT+HEAD").values == ("CT HEAD",)
    assert only("StudyDescription=A%2BB").values == ("A+B",)
    assert only("PatientName=M%C3%BCller").values == ("Müller",)
    assert only("%50atientID=X").attribute.keyword == "PatientID"


def test_wildcards_in_text_values() -> None:
    m = only("PatientName=Doe*")
    assert (m.kind, m.values) == (Kind.WILDCARD, ("Doe*",))
    assert only("AccessionNumber=AC?1").kind is Kind.WILDCARD
    assert only("PatientName=D%2Ae").kind is Kind.WILDCARD


def test_fuzzy_applies_to_person_names_only() -> None:
    r = parse("PatientName=doe&PatientID=abc&fuzzymatching=true")
    kinds = {m.attribute.keyword: m.kind for m in r.query.matches}
    assert kinds == {"PatientName": Kind.FUZZY, "PatientID": Kind.SINGLE}
    assert parse("ReferringPhysicianName=smi&fuzzymatching=true").query.matches[0].kind is Kind.FUZZY
    assert parse("PatientName=doe*&fuzzymatching=true").query.matches[0].kind is Kind.WILDCARD
    assert parse("PatientName=doe&fuzzymatching=false").query.matches[0].kind is Kind.SINGLE


def test_uid_single_and_lists() -> None:
    assert only(f"StudyInstanceUID={STUDY_UID}") == Match(attr("StudyInstanceUID"), Kind.SINGLE, (STUDY_UID,))
    m = only("StudyInstanceUID=1.2.3%5C1.2.4")
    assert (m.kind, m.values) == (Kind.LIST, ("1.2.3", "1.2.4"))
    assert only("StudyInstanceUID=1.2.3,1.2.4").values == ("1.2.3", "1.2.4")
    repeated = only("StudyInstanceUID=1.2.3&StudyInstanceUID=1.2.4,1.2.3")
    assert (repeated.kind, repeated.values) == (Kind.LIST, ("1.2.3", "1.2.4"))


def test_date_single_and_ranges() -> None:
    assert only("StudyDate=20200101") == Match(attr("StudyDate"), Kind.SINGLE, ("20200101",))
    assert only("StudyDate=20200101-20201231").values == ("20200101", "20201231")
    assert only("StudyDate=-20201231").values == ("", "20201231")
    assert only("StudyDate=20200101-").values == ("20200101", "")
    assert only("StudyDate=20200101-").kind is Kind.RANGE
    assert only("PatientBirthDate=19700101-19791231").kind is Kind.RANGE


def test_time_values_and_ranges_keep_their_precision() -> None:
    assert only("StudyTime=09-12").values == ("09", "12")
    assert only("StudyTime=0930-1215").values == ("0930", "1215")
    assert only("StudyTime=093015.5-121500.25").values == ("093015.5", "121500.25")
    assert only("StudyTime=-120000").values == ("", "120000")
    single = only("StudyTime=120000")
    assert (single.kind, single.values) == (Kind.SINGLE, ("120000",))


def test_integer_keys() -> None:
    m = only("SeriesNumber=+3", Level.SERIES)
    assert (m.attribute.keyword, m.kind, m.values) == ("SeriesNumber", Kind.SINGLE, ("3",))
    assert only("InstanceNumber=12", Level.INSTANCE).values == ("12",)
    assert only("Rows=512", Level.INSTANCE).values == ("512",)


def test_modalities_in_study_contains() -> None:
    m = only("ModalitiesInStudy=CT")
    assert (m.kind, m.values) == (Kind.CONTAINS, ("CT",))
    assert only("ModalitiesInStudy=CT%5CMR").values == ("CT", "MR")
    assert only("ModalitiesInStudy=CT,MR").values == ("CT", "MR")
    assert only("ModalitiesInStudy=CT&ModalitiesInStudy=MR").values == ("CT", "MR")


def test_universal_matching_returns_the_attribute() -> None:
    r = parse("PatientName=&StudyDate=*&SeriesDescription=", Level.SERIES)
    assert r.query.matches == []
    assert r.include == ["00100010", "00080020", "0008103E"]


def test_includefield_forms() -> None:
    r = parse("includefield=00081030,PatientAge&includefield=InstitutionName&INCLUDEFIELD=x9")
    assert r.include == ["00081030", "00101010", "00080080"]
    assert r.warnings == ["The following query parameters are not supported and were ignored: x9."]
    assert parse("includefield=all").include_all
    assert parse("includeField=StudyDescription").include == ["00081030"]


def test_higher_levels_match_and_deeper_levels_are_ignored() -> None:
    r = parse("PatientName=Doe&Modality=CT", Level.SERIES, study=STUDY_UID)
    assert [m.attribute.keyword for m in r.query.matches] == ["PatientName", "Modality"]
    assert (r.query.study_uid, r.query.series_uid) == (STUDY_UID, None)
    studies = parse("SOPInstanceUID=1.2.3&Modality=CT&includefield=SOPClassUID")
    assert studies.query.matches == [] and studies.include == []
    assert studies.warnings == [
        "The following query parameters are not supported and were ignored: SOPClassUID, SOPInstanceUID, Modality."
    ]
    inst = parse("StudyDate=20200101&Modality=MR&SOPClassUID=1.2", Level.INSTANCE, STUDY_UID, SERIES_UID)
    assert [m.attribute.keyword for m in inst.query.matches] == ["StudyDate", "Modality", "SOPClassUID"]


def test_unknown_parameters_and_unindexed_attributes_are_ignored_with_a_warning() -> None:
    r = parse("_=1712&callback=x&InstitutionName=Hosp&NumberOfStudyRelatedSeries=3&00091010=x&PatientID=1")
    assert [m.attribute.keyword for m in r.query.matches] == ["PatientID"]
    assert r.include == ["00080080", "00201206", "00091010"]  # matched keys are returned when they can be
    assert r.warnings == [
        "The following query parameters are not supported and were ignored: _, callback, InstitutionName, "
        "NumberOfStudyRelatedSeries, 00091010."
    ]
    keyword_case = parse("patientname=Doe")
    assert keyword_case.query.matches == [] and "patientname" in keyword_case.warnings[0]


def test_empty_and_multiple_value_matching_are_not_performed() -> None:
    r = parse("emptyvaluematching=true&multiplevaluematching=true&emptyvaluematching=false")
    assert r.warnings == [
        "The emptyvaluematching parameter is not supported. Empty Value Matching has not been performed.",
        "The multiplevaluematching parameter is not supported. Multiple Value Matching has not been performed.",
    ]


def test_limit_and_offset() -> None:
    q = parse("limit=5&offset=10").query
    assert (q.limit, q.offset) == (5, 10)
    zero = parse("limit=0")
    assert zero.empty and zero.warnings == []


def test_limit_and_offset_stop_at_the_cap() -> None:
    near = parse(f"offset={MAX_RESULTS - 3}&limit=10")
    assert (near.query.offset, near.query.limit, near.empty) == (MAX_RESULTS - 3, 3, False)
    assert near.warnings == [
        f"Only the first {MAX_RESULTS} matches of a search can be returned; this response stops at match {MAX_RESULTS}."
    ]
    big = parse("limit=50000")
    assert big.query.limit == MAX_RESULTS and len(big.warnings) == 1
    beyond = parse(f"offset={MAX_RESULTS}")
    assert beyond.empty and beyond.query.limit == 0
    assert parse(f"offset={MAX_RESULTS - DEFAULT_LIMIT}").warnings == []


def test_path_uids_are_kept() -> None:
    q = parse("", Level.INSTANCE, STUDY_UID, SERIES_UID).query
    assert (q.level, q.study_uid, q.series_uid) == (Level.INSTANCE, STUDY_UID, SERIES_UID)


@pytest.mark.parametrize(
    ("query", "level", "message"),
    [
        ("StudyInstanceUID=1.2.abc", Level.STUDY, "not a valid UID"),
        ("StudyInstanceUID=1.2.*", Level.STUDY, "not a valid UID"),
        ("StudyInstanceUID=1..2", Level.STUDY, "not a valid UID"),
        ("StudyInstanceUID=" + "1." * 32 + "1", Level.STUDY, "not a valid UID"),
        ("StudyInstanceUID=1.2,", Level.STUDY, "not a valid UID"),
        ("SeriesInstanceUID=1.2%5C", Level.SERIES, "not a valid UID"),
        ("StudyDate=2020010", Level.STUDY, "not a date"),
        ("StudyDate=20201301", Level.STUDY, "not a date"),
        ("StudyDate=20200230", Level.STUDY, "not a date"),
        ("StudyDate=2020-01-01", Level.STUDY, "not a range"),
        ("StudyDate=-", Level.STUDY, "not a range"),
        ("StudyDate=2020*", Level.STUDY, "not a date"),
        ("StudyDate=20200101-2020", Level.STUDY, "not a date"),
        ("StudyTime=25", Level.STUDY, "not a time"),
        ("StudyTime=1261", Level.STUDY, "not a time"),
        ("StudyTime=12.5", Level.STUDY, "not a time"),
        ("StudyTime=120000.1234567", Level.STUDY, "not a time"),
        ("SeriesNumber=one", Level.SERIES, "not an integer"),
        ("SeriesNumber=1*", Level.SERIES, "not an integer"),
        ("InstanceNumber=1.5", Level.INSTANCE, "not an integer"),
        ("ModalitiesInStudy=C*", Level.STUDY, "wildcards are not supported"),
        ("ModalitiesInStudy=CT%5C", Level.STUDY, "wildcards are not supported"),
        ("PatientName=Doe%00", Level.STUDY, "control characters"),
        ("PatientName=" + "a" * 1025, Level.STUDY, "longer than 1024"),
        ("PatientName=Doe&PatientName=Roe", Level.STUDY, "more than once"),
        ("PatientName=%FF", Level.STUDY, "not valid UTF-8"),
        ("limit=-1", Level.STUDY, "limit must be a non-negative integer"),
        ("limit=ten", Level.STUDY, "limit must be a non-negative integer"),
        ("limit=", Level.STUDY, "limit must be a non-negative integer"),
        ("offset=1.5", Level.STUDY, "offset must be a non-negative integer"),
        ("limit=1&limit=2", Level.STUDY, "limit is given more than once"),
        ("fuzzymatching=yes", Level.STUDY, "fuzzymatching must be true or false"),
        ("fuzzymatching=TRUE", Level.STUDY, "fuzzymatching must be true or false"),
    ],
)
def test_bad_queries_are_400(query: str, level: Level, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse(query, level)
    assert message in err.value.message


def test_bad_path_uids_are_400() -> None:
    with pytest.raises(ValidationError, match="StudyInstanceUID 'x' is not a valid UID"):
        parse("", Level.SERIES, study="x")
    with pytest.raises(ValidationError, match="SeriesInstanceUID"):
        parse("", Level.INSTANCE, study=STUDY_UID, series="1.2.")
