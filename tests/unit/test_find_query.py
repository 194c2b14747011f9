"""C-FIND / C-MOVE / C-GET identifiers translated into index queries: the same match kinds as QIDO-RS."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from openhi.core.dicom_query import Kind, Level
from openhi.core.find_query import (
    PATIENT_ROOT,
    STUDY_ROOT,
    IdentifierError,
    parse_find,
    parse_retrieve,
)
from openhi.core.qido_parse import parse_qido

DS = "d" * 32


def ident(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def matches(request: Any) -> dict[str, tuple[Kind, tuple[str, ...]]]:
    return {m.attribute.keyword: (m.kind, m.values) for m in request.query.matches}


def test_study_level_match_kinds() -> None:
    request = parse_find(
        ident(
            QueryRetrieveLevel="STUDY",
            PatientID="P1",
            PatientName="Doe*",
            StudyDate="20200101-20201231",
            StudyTime="-1200",
            StudyInstanceUID=["1.2.3", "1.2.4"],
            ModalitiesInStudy=["CT", "MR"],
            AccessionNumber="",
            StudyDescription="*",
        ),
        STUDY_ROOT,
        DS,
    )
    assert request.level == "STUDY" and request.query.level is Level.STUDY
    assert matches(request) == {
        "PatientID": (Kind.SINGLE, ("P1",)),
        "PatientName": (Kind.WILDCARD, ("Doe*",)),
        "StudyDate": (Kind.RANGE, ("20200101", "20201231")),
        "StudyTime": (Kind.RANGE, ("", "1200")),
        "StudyInstanceUID": (Kind.LIST, ("1.2.3", "1.2.4")),
        "ModalitiesInStudy": (Kind.CONTAINS, ("CT", "MR")),
    }
    assert {"00080050", "00081030"} <= set(request.include)  # universal matching: returned
    assert 0x00080052 in {t for t, _ in request.keys}


@pytest.mark.parametrize(
    ("keys", "query"),
    [
        ({"PatientID": "P1"}, "PatientID=P1"),
        ({"StudyDate": "20200101-"}, "StudyDate=20200101-"),
        ({"PatientName": "D?e^*"}, "PatientName=D?e^*"),
        ({"StudyInstanceUID": ["1.2.3", "1.2.4"]}, "StudyInstanceUID=1.2.3,1.2.4"),
    ],
)
def test_the_same_matches_as_qido(keys: dict[str, Any], query: str) -> None:
    find = parse_find(ident(QueryRetrieveLevel="STUDY", **keys), STUDY_ROOT, DS)
    qido = parse_qido(Level.STUDY, DS, query)
    assert find.query.matches == qido.query.matches


def test_series_and_image_levels_match_upper_levels() -> None:
    request = parse_find(
        ident(QueryRetrieveLevel="SERIES", StudyInstanceUID="1.2.3", Modality="CT", SeriesNumber="2"),
        STUDY_ROOT,
        DS,
    )
    assert request.query.level is Level.SERIES
    assert matches(request)["StudyInstanceUID"] == (Kind.SINGLE, ("1.2.3",))
    assert matches(request)["SeriesNumber"] == (Kind.SINGLE, ("2",))
    image = parse_find(
        ident(QueryRetrieveLevel="IMAGE", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"), STUDY_ROOT, DS
    )
    assert image.query.level is Level.INSTANCE and matches(image)["SOPClassUID"][0] is Kind.SINGLE


def test_keys_the_level_cannot_match_are_returned_not_matched() -> None:
    request = parse_find(ident(QueryRetrieveLevel="STUDY", Modality="CT", PatientAge="054Y"), STUDY_ROOT, DS)
    assert request.query.matches == []  # Modality is a series key; PatientAge is not in the index
    assert set(request.unmatched) == {"Modality", "PatientAge"}
    assert {t for t, _ in request.keys} == {0x00080052, 0x00080060, 0x00101010}


def test_patient_level() -> None:
    request = parse_find(
        ident(QueryRetrieveLevel="PATIENT", PatientName="Smith*", StudyDate="20200101"), PATIENT_ROOT, DS
    )
    assert request.query.level is Level.STUDY
    assert matches(request) == {"PatientName": (Kind.WILDCARD, ("Smith*",))}  # StudyDate: not a patient key


@pytest.mark.parametrize(
    ("keys", "model"),
    [
        ({"PatientID": "P"}, STUDY_ROOT),  # no Query/Retrieve Level
        ({"QueryRetrieveLevel": "WARD"}, STUDY_ROOT),
        ({"QueryRetrieveLevel": "PATIENT"}, STUDY_ROOT),
        ({"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-01-01"}, STUDY_ROOT),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.x"}, STUDY_ROOT),
        ({"QueryRetrieveLevel": "STUDY", "PatientID": ["A", "B"]}, STUDY_ROOT),
    ],
)
def test_identifiers_that_do_not_fit(keys: dict[str, Any], model: str) -> None:
    with pytest.raises(IdentifierError):
        parse_find(ident(**keys), model, DS)


def test_a_value_that_does_not_decode_with_its_vr() -> None:
    identifier = ident(QueryRetrieveLevel="SERIES")
    identifier[0x00200011] = RawDataElement(Tag(0x00200011), "IS", 4, b"two ", 0, False, True)
    with pytest.raises(IdentifierError):
        parse_find(identifier, STUDY_ROOT, DS)


def test_retrieve_unique_keys() -> None:
    q = parse_retrieve(ident(QueryRetrieveLevel="STUDY", StudyInstanceUID=["1.2.3", "1.2.4"]), STUDY_ROOT, DS)
    assert q.level is Level.INSTANCE
    assert [(m.attribute.keyword, m.kind, m.values) for m in q.matches] == [
        ("StudyInstanceUID", Kind.LIST, ("1.2.3", "1.2.4"))
    ]
    q = parse_retrieve(ident(QueryRetrieveLevel="PATIENT", PatientID="P1"), PATIENT_ROOT, DS)
    assert [(m.attribute.keyword, m.values) for m in q.matches] == [("PatientID", ("P1",))]
    q = parse_retrieve(
        ident(
            QueryRetrieveLevel="IMAGE",
            StudyInstanceUID="1.2",
            SeriesInstanceUID="1.2.1",
            SOPInstanceUID="1.2.1.1",
        ),
        STUDY_ROOT,
        DS,
    )
    assert [m.attribute.keyword for m in q.matches] == [
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    ]


@pytest.mark.parametrize(
    "keys",
    [
        {"QueryRetrieveLevel": "STUDY"},
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2"},
        {"QueryRetrieveLevel": "PATIENT", "PatientID": "P*"},
        {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": "1.2.*"},
    ],
)
def test_retrieve_refusals(keys: dict[str, Any]) -> None:
    with pytest.raises(IdentifierError):
        parse_retrieve(ident(**keys), PATIENT_ROOT, DS)
