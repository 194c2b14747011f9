"""QIDO-RS through a real server: studies, series and instances searched over HTTP and with dicomweb-client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from contract.helpers import active_datastore
from contract.imaging import run_import
from dicom_factory import CT_IMAGE_STORAGE, make_instance, uid
from openhi.testing import RunningServer

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
JSON = "application/dicom+json"

#: (key, patient name, patient id, date, time, accession, description, referring physician, age,
#:  series: [(modality, series number, description, institution, instances)])
STUDIES = [
    ("A", "Doe^John", "PID-A", "20200115", "101500", "ACC-A1", "CT HEAD", "House^Gregory", "054Y",
     [("CT", 1, "AX 5mm", "General Hospital", 2), ("MR", 2, "T1 SAG", "General Hospital", 1)]),
    ("B", "doe^jane", "PID-B", "20210620", "083000", "ACC-B1", "MR KNEE", "", "031Y",
     [("MR", 1, "PD FS", "Knee Clinic", 1)]),
    ("C", "Smith^Anna", "PID-C", "20221231", "235959", "ACC-C1", "CT CHEST", "Wilson^James", "067Y",
     [("CT", 5, "LUNG", "Chest Center", 2)]),
]  # fmt: skip


@dataclass
class Corpus:
    server: RunningServer
    ds: str
    study: dict[str, str]  # key -> StudyInstanceUID
    series: dict[tuple[str, int], str]  # (key, series number) -> SeriesInstanceUID
    sops: dict[tuple[str, int], list[str]]  # (key, series number) -> SOP Instance UIDs by InstanceNumber

    @property
    def base(self) -> str:
        return f"{self.server.endpoint}/datastore/{self.ds}"

    def get(self, path: str, query: str = "", accept: str | None = JSON) -> httpx.Response:
        headers = {"Accept": accept} if accept is not None else {}
        url = f"{self.base}{path}" + (f"?{query}" if query else "")
        return httpx.get(url, headers=headers, timeout=60)

    def search(self, path: str, query: str = "") -> list[dict[str, Any]]:
        response = self.get(path, query)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == JSON
        body: list[dict[str, Any]] = response.json()
        return body

    def study_keys(self, query: str) -> set[str]:
        by_uid = {v: k for k, v in self.study.items()}
        return {by_uid[value(r, "0020000D")] for r in self.search("/studies", query)}


def value(obj: dict[str, Any], tag: str) -> Any:
    values = obj[tag].get("Value")
    return values[0] if values else None


def _files() -> tuple[
    dict[str, bytes], dict[str, str], dict[tuple[str, int], str], dict[tuple[str, int], list[str]]
]:
    files: dict[str, bytes] = {}
    studies: dict[str, str] = {}
    series_uids: dict[tuple[str, int], str] = {}
    sops: dict[tuple[str, int], list[str]] = {}
    for key, name, pid, date, time, acc, desc, ref, age, series in STUDIES:
        study_uid = uid("qido-study", key)
        studies[key] = study_uid
        for modality, number, series_desc, institution, count in series:
            series_uid = uid("qido-series", key, number)
            series_uids[(key, number)] = series_uid
            sops[(key, number)] = []
            for i in range(count):
                sop = uid("qido-sop", key, number, i)
                sops[(key, number)].append(sop)
                files[f"{key}-{number}-{i}.dcm"] = make_instance(
                    rows=8,
                    cols=8,
                    seed=i,
                    sop_class=CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE,
                    study_uid=study_uid,
                    series_uid=series_uid,
                    sop_uid=sop,
                    PatientName=name,
                    PatientID=pid,
                    StudyDate=date,
                    StudyTime=time,
                    AccessionNumber=acc,
                    StudyDescription=desc,
                    ReferringPhysicianName=ref,
                    PatientAge=age,
                    Modality=modality,
                    SeriesNumber=str(number),
                    SeriesDescription=series_desc,
                    InstitutionName=institution,
                    InstanceNumber=str(i + 1),
                )
    return files, studies, series_uids, sops


@pytest.fixture(scope="module")
def corpus(openhi_server: RunningServer) -> Corpus:
    client = openhi_server.client()
    ds = active_datastore(client, "qido")
    files, studies, series_uids, sops = _files()
    result = run_import(client, openhi_server, ds, files)
    assert result["job"]["jobStatus"] == "COMPLETED", result
    assert len(result["success"]) == len(files), result["failure"]
    return Corpus(openhi_server, ds, studies, series_uids, sops)


# ------------------------------------------------------------------------------------------ studies


def test_all_studies_with_their_required_attributes(corpus: Corpus) -> None:
    results = corpus.search("/studies")
    assert len(results) == 3
    by_uid = {value(r, "0020000D"): r for r in results}
    a = by_uid[corpus.study["A"]]
    assert value(a, "00100010") == {"Alphabetic": "Doe^John"}
    assert (value(a, "00100020"), value(a, "00080020"), value(a, "00080030")) == (
        "PID-A",
        "20200115",
        "101500",
    )
    assert (value(a, "00080050"), value(a, "00081030")) == ("ACC-A1", "CT HEAD")
    assert value(a, "00080090") == {"Alphabetic": "House^Gregory"}
    assert sorted(a["00080061"]["Value"]) == ["CT", "MR"]
    assert (a["00201206"], a["00201208"]) == ({"vr": "IS", "Value": [2]}, {"vr": "IS", "Value": [3]})
    assert a["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert a["00081190"] == {"vr": "UR", "Value": [f"{corpus.base}/studies/{corpus.study['A']}"]}
    assert list(a) == sorted(a)
    b = by_uid[corpus.study["B"]]
    assert b["00080090"] == {"vr": "PN"} and b["00201208"]["Value"] == [1]


def test_patient_name_wildcards_are_case_sensitive(corpus: Corpus) -> None:
    assert corpus.study_keys("PatientName=Doe*") == {"A"}
    assert corpus.study_keys("PatientName=*oe%5Ej*") == {"B"}
    assert corpus.study_keys("PatientName=?oe*") == {"A", "B"}
    assert corpus.study_keys("00100010=Doe%5EJohn") == {"A"}
    assert corpus.study_keys("PatientName=doe%5Ejohn") == set()


def test_fuzzy_person_name_matching(corpus: Corpus) -> None:
    assert corpus.study_keys("PatientName=doe&fuzzymatching=true") == {"A", "B"}
    assert corpus.study_keys("PatientName=jan&fuzzymatching=true") == {"B"}
    assert corpus.study_keys("PatientName=SMI&fuzzymatching=true") == {"C"}
    assert corpus.study_keys("ReferringPhysicianName=wil&fuzzymatching=true") == {"C"}
    assert corpus.study_keys("PatientName=doe&fuzzymatching=false") == set()


def test_study_keys(corpus: Corpus) -> None:
    assert corpus.study_keys("PatientID=PID-B") == {"B"}
    assert corpus.study_keys("AccessionNumber=ACC-C1") == {"C"}
    assert corpus.study_keys("StudyDescription=CT+HEAD") == {"A"}  # + is a space
    assert corpus.study_keys("StudyDescription=CT*") == {"A", "C"}
    assert corpus.study_keys(f"StudyInstanceUID={corpus.study['A']},{corpus.study['C']}") == {"A", "C"}
    assert corpus.study_keys(f"StudyInstanceUID={corpus.study['B']}") == {"B"}
    assert corpus.study_keys("PatientID=PID-A&StudyDate=20210620") == set()


def test_date_and_time_ranges(corpus: Corpus) -> None:
    assert corpus.study_keys("StudyDate=20200101-20201231") == {"A"}
    assert corpus.study_keys("StudyDate=20210101-") == {"B", "C"}
    assert corpus.study_keys("StudyDate=-20210620") == {"A", "B"}
    assert corpus.study_keys("StudyDate=20210620") == {"B"}
    assert corpus.study_keys("StudyTime=08-09") == {"B"}
    assert corpus.study_keys("StudyTime=08-10") == {"A", "B"}  # "10" holds 10:15:00
    assert corpus.study_keys("StudyTime=0831-1015") == {"A"}
    assert corpus.study_keys("StudyTime=2359-") == {"C"}


def test_modalities_in_study(corpus: Corpus) -> None:
    assert corpus.study_keys("ModalitiesInStudy=MR") == {"A", "B"}
    assert corpus.study_keys("ModalitiesInStudy=CT") == {"A", "C"}
    assert corpus.study_keys("ModalitiesInStudy=CT%5CMR") == {"A", "B", "C"}
    assert corpus.study_keys("ModalitiesInStudy=US") == set()


def test_limit_and_offset_page_through_the_studies(corpus: Corpus) -> None:
    everything = [value(r, "0020000D") for r in corpus.search("/studies")]
    pages = [
        [value(r, "0020000D") for r in corpus.search("/studies", f"limit=2&offset={o}")] for o in (0, 2, 4)
    ]
    assert [len(p) for p in pages] == [2, 1, 0]
    assert pages[0] + pages[1] == everything
    assert corpus.search("/studies", "limit=0") == []
    assert corpus.search("/studies", "offset=10000") == []


def test_includefield(corpus: Corpus) -> None:
    query = (
        f"StudyInstanceUID={corpus.study['A']}&includefield=PatientAge,InstitutionName&includefield=00081030"
    )
    (a,) = corpus.search("/studies", query)
    assert a["00101010"] == {"vr": "AS", "Value": ["054Y"]}
    assert "00080080" not in a  # Institution Name is a series attribute (General Equipment)
    (every,) = corpus.search("/studies", f"StudyInstanceUID={corpus.study['C']}&includefield=all")
    assert every["00101010"] == {"vr": "AS", "Value": ["067Y"]}
    assert every["00201208"]["Value"] == [2]
    series = corpus.search(
        f"/studies/{corpus.study['A']}/series", "includefield=InstitutionName&PatientName="
    )
    assert {value(s, "00080080") for s in series} == {"General Hospital"}
    assert {value(s, "00100010")["Alphabetic"] for s in series} == {"Doe^John"}


# ------------------------------------------------------------------------------------------- series


def test_series_of_a_study(corpus: Corpus) -> None:
    study = corpus.study["A"]
    results = corpus.search(f"/studies/{study}/series")
    assert [value(r, "00200011") for r in results] == [1, 2]  # by SeriesNumber
    ct, mr = results
    assert value(ct, "0020000E") == corpus.series[("A", 1)] and value(ct, "0020000D") == study
    assert (value(ct, "00080060"), value(ct, "0008103E")) == ("CT", "AX 5mm")
    assert (ct["00201209"], mr["00201209"]) == ({"vr": "IS", "Value": [2]}, {"vr": "IS", "Value": [1]})
    url = f"{corpus.base}/studies/{study}/series/{corpus.series[('A', 1)]}"
    assert ct["00081190"] == {"vr": "UR", "Value": [url]}
    assert "00100010" not in ct  # study attributes only for series of all studies
    only_mr = corpus.search(f"/studies/{study}/series", "Modality=MR")
    assert [value(r, "0020000E") for r in only_mr] == [corpus.series[("A", 2)]]
    assert corpus.search(f"/studies/{study}/series", "SeriesNumber=2") == only_mr


def test_series_of_all_studies_carry_study_attributes(corpus: Corpus) -> None:
    results = corpus.search("/series", "Modality=MR")
    assert {value(r, "0020000E") for r in results} == {corpus.series[("A", 2)], corpus.series[("B", 1)]}
    by_series = {value(r, "0020000E"): r for r in results}
    a_mr = by_series[corpus.series[("A", 2)]]
    assert value(a_mr, "00100010") == {"Alphabetic": "Doe^John"}
    assert (a_mr["00201206"]["Value"], a_mr["00201208"]["Value"], a_mr["00201209"]["Value"]) == (
        [2],
        [3],
        [1],
    )
    assert {value(r, "0020000D") for r in corpus.search("/series", "PatientID=PID-C")} == {corpus.study["C"]}


# ----------------------------------------------------------------------------------------- instances


def test_instances_of_a_series(corpus: Corpus) -> None:
    study, series = corpus.study["A"], corpus.series[("A", 1)]
    results = corpus.search(f"/studies/{study}/series/{series}/instances")
    assert [value(r, "00080018") for r in results] == corpus.sops[("A", 1)]
    first = results[0]
    assert value(first, "00080016") == CT_IMAGE_STORAGE and value(first, "00200013") == 1
    url = f"{corpus.base}/studies/{study}/series/{series}/instances/{corpus.sops[('A', 1)][0]}"
    assert first["00081190"] == {"vr": "UR", "Value": [url]}
    assert (value(first, "0020000D"), value(first, "0020000E")) == (study, series)
    second = corpus.search(f"/studies/{study}/series/{series}/instances", "InstanceNumber=2")
    assert [value(r, "00080018") for r in second] == corpus.sops[("A", 1)][1:]
    by_sop = corpus.search(
        f"/studies/{study}/series/{series}/instances", f"SOPInstanceUID={corpus.sops[('A', 1)][1]}"
    )
    assert by_sop == second


def test_instance_image_attributes(corpus: Corpus) -> None:
    study, series = corpus.study["C"], corpus.series[("C", 5)]
    first = corpus.search(f"/studies/{study}/series/{series}/instances", "limit=1")[0]
    assert (first["00280010"], first["00280011"]) == ({"vr": "US", "Value": [8]}, {"vr": "US", "Value": [8]})
    assert first["00280100"] == {"vr": "US", "Value": [16]} and first["00280008"] == {"vr": "IS"}


def test_instances_of_a_study_and_of_all_studies(corpus: Corpus) -> None:
    study = corpus.study["A"]
    results = corpus.search(f"/studies/{study}/instances")
    assert len(results) == 3
    assert {value(r, "00080060") for r in results} == {"CT", "MR"}  # series attributes come along
    assert all("00201209" in r for r in results)
    mr = corpus.search("/instances", "Modality=MR&PatientID=PID-B")
    assert [value(r, "00080018") for r in mr] == corpus.sops[("B", 1)]
    assert value(mr[0], "00100010") == {"Alphabetic": "doe^jane"}
    everything = corpus.search("/instances", "includefield=InstitutionName&limit=100")
    assert len(everything) == 6 and {value(r, "00080080") for r in everything} == {
        "General Hospital",
        "Knee Clinic",
        "Chest Center",
    }


# ------------------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    "accept", [None, "application/json", "*/*", "application/dicom+json; q=0.9, */*; q=0.1"]
)
def test_accepted_media_types(corpus: Corpus, accept: str | None) -> None:
    response = corpus.get("/studies", "limit=1", accept=accept)
    assert response.status_code == 200 and response.headers["content-type"] == JSON
    assert len(response.json()) == 1


@pytest.mark.parametrize(
    "accept",
    ['multipart/related; type="application/dicom+xml"', "application/dicom+xml", "text/html", "*/*; q=0"],
)
def test_other_media_types_are_406(corpus: Corpus, accept: str) -> None:
    response = corpus.get("/studies", accept=accept)
    assert response.status_code == 406, response.text
    assert response.headers["x-amzn-errortype"] == "NotAcceptableException"


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        ("/studies", "StudyInstanceUID=1.2.x", "not a valid UID"),
        ("/studies", "StudyDate=2020-01", "not a date"),
        ("/studies", "StudyDate=20200101-20201301", "not a date"),
        ("/studies", "limit=-5", "limit must be a non-negative integer"),
        ("/studies", "offset=x", "offset must be a non-negative integer"),
        ("/studies", "fuzzymatching=maybe", "fuzzymatching must be true or false"),
        ("/studies/1.2.abc/series", "", "not a valid UID"),
        ("/series", "SeriesNumber=first", "not an integer"),
        ("/studies", "PatientName=a&PatientName=b", "more than once"),
    ],
)
def test_bad_queries_are_400(corpus: Corpus, path: str, query: str, message: str) -> None:
    response = corpus.get(path, query)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_unknown_datastore_is_404(corpus: Corpus) -> None:
    response = httpx.get(f"{corpus.server.endpoint}/datastore/{'0' * 32}/studies", timeout=30)
    assert response.status_code == 404
    assert response.headers["x-amzn-errortype"] == "ResourceNotFoundException"


def test_ignored_parameters_come_with_a_warning(corpus: Corpus) -> None:
    response = corpus.get("/studies", "PatientID=PID-A&SOPInstanceUID=1.2.3&_=17")
    assert response.status_code == 200 and len(response.json()) == 1
    assert response.headers["warning"] == (
        '299 openhi "The following query parameters are not supported and were ignored: SOPInstanceUID, _."'
    )
    odd = corpus.get("/studies", "%C3%BC%0D%0AX%22=1&PatientID=PID-B")
    assert odd.status_code == 200 and len(odd.json()) == 1
    assert odd.headers["warning"] == (
        '299 openhi "The following query parameters are not supported and were ignored: ???X\\"."'
    )


# ----------------------------------------------------------------------------------- dicomweb-client


def test_dicomweb_client(corpus: Corpus) -> None:
    api = pytest.importorskip("dicomweb_client.api")
    client = api.DICOMwebClient(url=corpus.base)
    studies = client.search_for_studies(search_filters={"PatientName": "Doe*"})
    assert [value(s, "0020000D") for s in studies] == [corpus.study["A"]]
    fuzzy = client.search_for_studies(search_filters={"PatientName": "doe"}, fuzzymatching=True)
    assert {value(s, "0020000D") for s in fuzzy} == {corpus.study["A"], corpus.study["B"]}
    spaced = client.search_for_studies(search_filters={"StudyDescription": "MR KNEE"})
    assert [value(s, "0020000D") for s in spaced] == [corpus.study["B"]]
    listed = client.search_for_studies(
        search_filters={"StudyInstanceUID": [corpus.study["A"], corpus.study["C"]]}
    )
    assert {value(s, "0020000D") for s in listed} == {corpus.study["A"], corpus.study["C"]}
    paged = client.search_for_studies(limit=1, offset=1, fields=["PatientAge"])
    assert len(paged) == 1 and "00101010" in paged[0]
    remaining = client.search_for_studies(limit=1, get_remaining=True)
    assert len(remaining) == 3
    series = client.search_for_series(study_instance_uid=corpus.study["A"], search_filters={"Modality": "CT"})
    assert [value(s, "0020000E") for s in series] == [corpus.series[("A", 1)]]
    instances = client.search_for_instances(
        study_instance_uid=corpus.study["C"], series_instance_uid=corpus.series[("C", 5)]
    )
    assert [value(i, "00080018") for i in instances] == corpus.sops[("C", 5)]
    all_series = client.search_for_series(search_filters={"PatientID": "PID-B"})
    assert [value(s, "0020000E") for s in all_series] == [corpus.series[("B", 1)]]
