"""QIDO-RS results from hand-made index rows and documents: exact DICOM JSON, parent rows, includefield."""

from __future__ import annotations

from typing import Any

from openhi.core.dicom_query import BY_KEYWORD, DicomQuery, Kind, Level
from openhi.core.qido_answer import QidoAnswer, index_element, result_levels
from openhi.core.qido_parse import parse_qido
from openhi.dicom.dicom_json import dumps

DS = "d" * 32
ST1, ST2 = "1.2.3.1", "1.2.3.2"
SE1, SE2 = "1.2.3.1.1", "1.2.3.2.1"
SOP1 = "1.2.3.1.1.1"
BASE = "http://h/datastore/" + DS


def url_for(level: Level, study: str, series: str, sop: str) -> str:
    return {
        Level.STUDY: f"{BASE}/studies/{study}",
        Level.SERIES: f"{BASE}/studies/{study}/series/{series}",
        Level.INSTANCE: f"{BASE}/studies/{study}/series/{series}/instances/{sop}",
    }[level]


STUDY_ROWS: dict[str, dict[str, Any]] = {
    ST1: {
        "study_uid": ST1,
        "study_date": "20240101",
        "study_time": "120000",
        "accession_number": "ACC1",
        "modalities": "CT\\MR",
        "referring_physician_name": None,
        "study_description": "HEAD",
        "patient_name": "Doe^John",
        "patient_id": "PAT1",
        "patient_birth_date": "19700101",
        "patient_sex": "M",
        "study_id": "S1",
        "num_series": 2,
        "num_instances": 10,
    },
    ST2: {
        "study_uid": ST2,
        "study_date": "20230505",
        "study_time": None,
        "accession_number": None,
        "modalities": ["MR"],
        "referring_physician_name": "Smith^Ann=スミス^アン",
        "study_description": None,
        "patient_name": "Müller^Eva",
        "patient_id": "PAT2",
        "patient_birth_date": None,
        "patient_sex": None,
        "study_id": None,
        "num_series": 1,
        "num_instances": 1,
    },
}
SERIES_ROWS: dict[str, dict[str, Any]] = {
    SE1: {
        "study_uid": ST1,
        "series_uid": SE1,
        "modality": "CT",
        "series_description": "AX",
        "body_part": None,
        "series_number": 3,
        "series_date": None,
        "series_time": None,
        "pps_start_date": None,
        "pps_start_time": None,
        "num_instances": 4,
        "image_set_id": "a" * 32,
        # the study's columns, as a series row also carries them
        "patient_name": "Doe^John",
        "num_series": 2,
    },
    SE2: {"study_uid": ST2, "series_uid": SE2, "modality": "MR", "series_number": None, "num_instances": 1},
}
INSTANCE_ROW: dict[str, Any] = {
    "study_uid": ST1,
    "series_uid": SE1,
    "sop_uid": SOP1,
    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
    "instance_number": 7,
    "rows": 16,
    "columns": 16,
    "bits_allocated": 16,
    "number_of_frames": None,
    "image_set_id": "a" * 32,
    "frame_ids": ["f" * 32],
    "stored_ts": "1.2.840.10008.1.2.1",
    "num_instances": 10,
}
DOC: dict[str, Any] = {
    "Patient": {"DICOM": {"PatientName": "Doe^John", "PatientAge": "054Y", "PatientWeight": 70.5}},
    "Study": {
        "DICOM": {"StudyInstanceUID": ST1, "StudyDescription": "HEAD", "00091001": "private"},
        "Series": {
            SE1: {
                "DICOM": {"SeriesInstanceUID": SE1, "Modality": "CT", "InstitutionName": "Hosp"},
                "Instances": {
                    SOP1: {
                        "DICOM": {
                            "SOPInstanceUID": SOP1,
                            "ImageType": ["ORIGINAL", "PRIMARY"],
                            "InstanceNumber": "7",
                        },
                        "DICOMVRs": {"00091001": "LO"},
                        "StoredTransferSyntaxUID": "1.2.840.10008.1.2.1",
                        "ImageFrames": [{"ID": "f" * 32}],
                    }
                },
            }
        },
    },
}


class Index:
    """Hand-made rows; every query is recorded (the matching itself is the index's, tested elsewhere)."""

    def __init__(self) -> None:
        self.queries: list[DicomQuery] = []

    def _pick(self, q: DicomQuery, rows: dict[str, dict[str, Any]], keyword: str) -> list[dict[str, Any]]:
        self.queries.append(q)
        wanted = [m.values for m in q.matches if m.attribute.keyword == keyword]
        return [r for uid, r in rows.items() if not wanted or uid in wanted[0]][: q.limit]

    def dicom_studies(self, q: DicomQuery) -> list[dict[str, Any]]:
        return self._pick(q, STUDY_ROWS, "StudyInstanceUID")

    def dicom_series(self, q: DicomQuery) -> list[dict[str, Any]]:
        return self._pick(q, SERIES_ROWS, "SeriesInstanceUID")

    def dicom_instances(self, q: DicomQuery) -> list[dict[str, Any]]:
        self.queries.append(q)
        return [INSTANCE_ROW][: q.limit]


class Reader:
    def __init__(self) -> None:
        self.reads: list[str] = []

    def head(self, datastore_id: str, image_set_id: str) -> str:
        assert datastore_id == DS
        return image_set_id

    def document(self, head: str) -> dict[str, Any]:
        self.reads.append(head)
        return DOC


def answer(
    query: str, level: Level, study: str | None = None, series: str | None = None
) -> tuple[Any, Index, Reader]:
    index, reader = Index(), Reader()
    request = parse_qido(level, DS, query.encode(), study, series)
    results = QidoAnswer(index, reader).results(request, url_for)  # type: ignore[arg-type]
    return results, index, reader


def test_study_results_exact() -> None:
    results, index, reader = answer("", Level.STUDY)
    assert results[0] == {
        "00080020": {"vr": "DA", "Value": ["20240101"]},
        "00080030": {"vr": "TM", "Value": ["120000"]},
        "00080050": {"vr": "SH", "Value": ["ACC1"]},
        "00080056": {"vr": "CS", "Value": ["ONLINE"]},
        "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
        "00080090": {"vr": "PN"},
        "00081030": {"vr": "LO", "Value": ["HEAD"]},
        "00081190": {"vr": "UR", "Value": [f"{BASE}/studies/{ST1}"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
        "00100020": {"vr": "LO", "Value": ["PAT1"]},
        "00100030": {"vr": "DA", "Value": ["19700101"]},
        "00100040": {"vr": "CS", "Value": ["M"]},
        "0020000D": {"vr": "UI", "Value": [ST1]},
        "00200010": {"vr": "SH", "Value": ["S1"]},
        "00201206": {"vr": "IS", "Value": [2]},
        "00201208": {"vr": "IS", "Value": [10]},
    }
    assert list(results[0]) == sorted(results[0])
    assert [q.level for q in index.queries] == [Level.STUDY] and reader.reads == []


def test_non_ascii_values_carry_the_utf8_character_set() -> None:
    results, _, _ = answer("", Level.STUDY)
    second = results[1]
    assert second["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
    assert second["00080090"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Smith^Ann", "Ideographic": "スミス^アン"}],
    }
    assert second["00080061"] == {"vr": "CS", "Value": ["MR"]}
    assert second["00080030"] == {"vr": "TM"} and second["00200010"] == {"vr": "SH"}
    assert "00080005" not in results[0]
    text = dumps(results[1])
    assert '"00080005":{"vr":"CS","Value":["ISO_IR 192"]},"00080020"' in text and "Müller" in text


def test_series_of_a_study_carry_series_attributes_and_the_study_uid() -> None:
    results, index, _ = answer("", Level.SERIES, study=ST1)
    assert results[0] == {
        "00080021": {"vr": "DA"},
        "00080031": {"vr": "TM"},
        "00080056": {"vr": "CS", "Value": ["ONLINE"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "0008103E": {"vr": "LO", "Value": ["AX"]},
        "00081190": {"vr": "UR", "Value": [f"{BASE}/studies/{ST1}/series/{SE1}"]},
        "00180015": {"vr": "CS"},
        "0020000D": {"vr": "UI", "Value": [ST1]},
        "0020000E": {"vr": "UI", "Value": [SE1]},
        "00200011": {"vr": "IS", "Value": [3]},
        "00201209": {"vr": "IS", "Value": [4]},
        "00400244": {"vr": "DA"},
        "00400245": {"vr": "TM"},
    }
    assert [q.level for q in index.queries] == [Level.SERIES]


def test_series_of_all_studies_take_study_attributes_from_study_rows() -> None:
    results, index, _ = answer("Modality=CT", Level.SERIES)
    assert [q.level for q in index.queries] == [Level.SERIES, Level.STUDY]
    parent = index.queries[1]
    assert parent.matches[0].attribute is BY_KEYWORD[(Level.STUDY, "StudyInstanceUID")]
    assert (parent.matches[0].kind, parent.matches[0].values) == (Kind.LIST, (ST1, ST2))
    first, second = results
    assert first["00201208"] == {"vr": "IS", "Value": [10]}  # the study's count, not the series' 4
    assert first["00201209"] == {"vr": "IS", "Value": [4]}
    assert first["00201206"] == {"vr": "IS", "Value": [2]}
    assert first["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert first["00081190"] == {"vr": "UR", "Value": [f"{BASE}/studies/{ST1}/series/{SE1}"]}
    assert second["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Müller^Eva"}]}
    assert second["00200011"] == {"vr": "IS"}


def test_instances_of_a_study_carry_their_series_attributes() -> None:
    results, index, _ = answer("", Level.INSTANCE, study=ST1)
    assert [q.level for q in index.queries] == [Level.INSTANCE, Level.SERIES]
    series_query = index.queries[1]
    assert series_query.study_uid == ST1 and series_query.matches[0].values == (SE1,)
    obj = results[0]
    assert obj["00201209"] == {"vr": "IS", "Value": [4]}
    assert obj["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert "00100010" not in obj and "00201208" not in obj
    assert obj["00081190"] == {"vr": "UR", "Value": [f"{BASE}/studies/{ST1}/series/{SE1}/instances/{SOP1}"]}


def test_instances_of_a_series_exact() -> None:
    results, index, reader = answer("", Level.INSTANCE, study=ST1, series=SE1)
    assert results == [
        {
            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
            "00080018": {"vr": "UI", "Value": [SOP1]},
            "00080056": {"vr": "CS", "Value": ["ONLINE"]},
            "00081190": {"vr": "UR", "Value": [f"{BASE}/studies/{ST1}/series/{SE1}/instances/{SOP1}"]},
            "0020000D": {"vr": "UI", "Value": [ST1]},
            "0020000E": {"vr": "UI", "Value": [SE1]},
            "00200013": {"vr": "IS", "Value": [7]},
            "00280008": {"vr": "IS"},
            "00280010": {"vr": "US", "Value": [16]},
            "00280011": {"vr": "US", "Value": [16]},
            "00280100": {"vr": "US", "Value": [16]},
        }
    ]
    assert len(index.queries) == 1 and reader.reads == []


def test_all_instances_carry_every_level() -> None:
    results, index, _ = answer("", Level.INSTANCE)
    assert [q.level for q in index.queries] == [Level.INSTANCE, Level.STUDY, Level.SERIES]
    obj = results[0]
    assert obj["00201208"] == {"vr": "IS", "Value": [10]} and obj["00201209"] == {"vr": "IS", "Value": [4]}
    assert obj["00100020"] == {"vr": "LO", "Value": ["PAT1"]} and obj["00280010"] == {
        "vr": "US",
        "Value": [16],
    }


def test_includefield_of_a_parent_level_reads_the_parent_rows() -> None:
    results, index, reader = answer("includefield=PatientName&includefield=00201208", Level.SERIES, study=ST1)
    assert [q.level for q in index.queries] == [Level.SERIES, Level.STUDY]
    assert results[0]["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert results[0]["00201208"] == {"vr": "IS", "Value": [10]}
    assert "00100020" not in results[0] and reader.reads == []


def test_includefield_beyond_the_index_reads_one_document_per_result() -> None:
    results, index, reader = answer(
        "includefield=PatientAge,ImageType,00091001&StudyInstanceUID=" + ST1, Level.STUDY
    )
    assert reader.reads == ["a" * 32]
    first = index.queries[1]  # the study's first instance names the document
    assert (first.level, first.study_uid, first.series_uid, first.limit) == (Level.INSTANCE, ST1, None, 1)
    obj = results[0]
    assert obj["00101010"] == {"vr": "AS", "Value": ["054Y"]}
    assert obj["00091001"] == {"vr": "LO", "Value": ["private"]}
    assert "00080008" not in obj  # ImageType is the instance's: not an attribute of the study


def test_includefield_all_for_instances() -> None:
    results, _, reader = answer("includefield=all", Level.INSTANCE, study=ST1, series=SE1)
    obj = results[0]
    assert obj["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]}
    assert obj["00080080"] == {"vr": "LO", "Value": ["Hosp"]}
    assert obj["00101030"] == {"vr": "DS", "Value": [70.5]}
    assert obj["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert obj["00201208"] == {"vr": "IS", "Value": [10]}  # index attributes of every level above, too
    assert "7FE00010" not in obj and list(obj) == sorted(obj)
    assert reader.reads == ["a" * 32]


def test_includefield_all_for_series_stops_at_the_series_node() -> None:
    results, index, reader = answer("includefield=all", Level.SERIES, study=ST1)
    assert [q.level for q in index.queries] == [Level.SERIES, Level.STUDY, Level.INSTANCE]  # SE2: no set id
    assert reader.reads == ["a" * 32, "a" * 32]
    obj = results[0]
    assert obj["00080080"] == {"vr": "LO", "Value": ["Hosp"]} and "00080008" not in obj
    assert obj["00101010"] == {"vr": "AS", "Value": ["054Y"]}


def test_an_empty_page_asks_nothing() -> None:
    results, index, _ = answer("limit=0", Level.STUDY)
    assert results == [] and index.queries == []
    results, index, _ = answer("offset=10000", Level.STUDY)
    assert results == [] and index.queries == []


def test_the_page_goes_to_the_index() -> None:
    _, index, _ = answer("limit=1&offset=1&PatientID=PAT1", Level.STUDY)
    q = index.queries[0]
    assert (q.limit, q.offset, q.matches[0].values) == (1, 1, ("PAT1",))


def test_index_element_forms() -> None:
    pn = BY_KEYWORD[(Level.STUDY, "PatientName")]
    num = BY_KEYWORD[(Level.SERIES, "SeriesNumber")]
    assert index_element(pn, "A^B\\C^D") == {
        "vr": "PN",
        "Value": [{"Alphabetic": "A^B"}, {"Alphabetic": "C^D"}],
    }
    assert index_element(pn, "=Yamada") == {"vr": "PN", "Value": [{"Ideographic": "Yamada"}]}
    assert index_element(num, "12") == {"vr": "IS", "Value": [12]}
    assert index_element(num, " x") == {"vr": "IS", "Value": ["x"]}
    assert index_element(num, "") == {"vr": "IS"}


def test_result_levels() -> None:
    def levels(level: Level, study: str | None = None, series: str | None = None) -> list[Level]:
        return result_levels(DicomQuery(level, DS, study, series))

    assert levels(Level.STUDY) == [Level.STUDY]
    assert levels(Level.SERIES, ST1) == [Level.SERIES]
    assert levels(Level.SERIES) == [Level.STUDY, Level.SERIES]
    assert levels(Level.INSTANCE, ST1, SE1) == [Level.INSTANCE]
    assert levels(Level.INSTANCE, ST1) == [Level.SERIES, Level.INSTANCE]
    assert levels(Level.INSTANCE) == [Level.STUDY, Level.SERIES, Level.INSTANCE]
