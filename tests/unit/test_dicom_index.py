"""The DICOM study / series / instance index through the port, on SQLite and PostgreSQL: upkeep on the real
write paths (create, import commit, append, commit_versions) and every match kind of PS3.4 C.2.2.2."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from openhi.core.dicom_query import BY_KEYWORD, DicomQuery, Kind, Level, Match
from openhi.core.records import FrameRef, ImageSet, ImageSetVersion, ImportJob
from openhi.dicom.document import build_document, search_tags
from openhi.dicom.index_rows import index_rows
from openhi.ports.index import MetadataIndex, VersionCommit
from openhi.storage.sqlite.index import SqliteIndex

DS = "d" * 32
OTHER = "e" * 32
TS = "1.2.840.10008.1.2.1"
DICOM_TABLES = ("dicom_studies", "dicom_series", "dicom_instances")


@pytest.fixture(params=["sqlite", "postgres"])
def index(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[MetadataIndex]:
    """An SQLite index (a file: WAL, the production mode) and PostgreSQL in the session's test schema."""
    if request.param == "sqlite":
        idx: Any = SqliteIndex(str(tmp_path / "index.sqlite3"))
        yield idx
        idx.close()
        return
    schemas: Any = request.getfixturevalue("pg_schemas")
    import pg
    from openhi.storage.postgres.index import PostgresIndex

    idx = PostgresIndex(schemas.url, schema=schemas.run)
    try:
        yield idx
    finally:
        idx.close()
        schemas.truncate(schemas.run)
        pg.execute(schemas.run, f"TRUNCATE {', '.join(DICOM_TABLES)}")


# -- documents and writes
def _doc(
    set_id: str,
    study: str,
    series: str,
    sops: list[tuple[str, int | None]],
    *,
    patient_id: str | None = "P1",
    patient_name: str | None = "Doe^John",
    modality: str = "CT",
    series_number: str | None = "1",
    study_date: str | None = "20240101",
    study_time: str = "101500",
    accession: str | None = "A1",
    description: str = "Chest",
) -> dict[str, Any]:
    patient = {
        k: v for k, v in {"PatientID": patient_id, "PatientName": patient_name}.items() if v is not None
    }
    study_attrs = {"StudyInstanceUID": study, "StudyTime": study_time, "StudyDescription": description}
    study_attrs |= {k: v for k, v in {"StudyDate": study_date, "AccessionNumber": accession}.items() if v}
    series_attrs: dict[str, Any] = {"SeriesInstanceUID": series, "Modality": modality}
    if series_number is not None:
        series_attrs["SeriesNumber"] = series_number
    instances = {
        sop: {
            "DICOM": {
                "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                "SOPInstanceUID": sop,
                **({"InstanceNumber": str(number)} if number is not None else {}),
                "NumberOfFrames": "2",
            },
            "ImageFrames": [{"ID": f"{sop}-f{k}"} for k in range(2)],
            "StoredTransferSyntaxUID": TS,
        }
        for sop, number in sops
    }
    return build_document(DS, set_id, patient, study_attrs, series, series_attrs, instances)


def _head(set_id: str, doc: dict[str, Any], now: float, primary: bool = True) -> ImageSet:
    return ImageSet(
        doc["DatastoreID"], set_id, 1, "ACTIVE", "CREATED", primary, now, now, 1,
        search=search_tags(doc), dicom=index_rows(doc),
    )  # fmt: skip


def _v(head: ImageSet, version: int = 1, state: str = "ACTIVE", status: str = "CREATED") -> ImageSetVersion:
    return ImageSetVersion(
        head.datastore_id, head.id, version, state, status, head.created_at, head.updated_at,
        head.is_primary, f"meta/{head.id}/{version}",
    )  # fmt: skip


def _frames(doc: dict[str, Any]) -> list[FrameRef]:
    series = next(iter(doc["Study"]["Series"].values()))
    return [
        FrameRef(f["ID"], f"frames/{f['ID']}", TS)
        for node in series["Instances"].values()
        for f in node["ImageFrames"]
    ]


def _create(index: MetadataIndex, n: int, study: str, series: str, now: float, **kw: Any) -> ImageSet:
    primary = kw.pop("primary", True)
    sops = kw.pop("sops", [(f"{series}.{k}", k) for k in (2, 1)])
    doc = _doc(f"{n:032x}", study, series, sops, **kw)
    head = _head(f"{n:032x}", doc, now, primary)
    index.create_image_set(head, _v(head), _frames(doc))
    return head


def _content(head: ImageSet, doc: dict[str, Any], version: int, now: float) -> VersionCommit:
    row = _v(head, version, status="UPDATED")
    row.updated_at = now
    return VersionCommit(
        head.id, row, "ACTIVE", "UPDATED", now, content_version=version, search=search_tags(doc),
        dicom=index_rows(doc), touch=True,
    )  # fmt: skip


def _q(level: Level, *matches: tuple[str, Kind, tuple[str, ...]], **kw: Any) -> DicomQuery:
    found = []
    for keyword, kind, values in matches:
        attr = next(BY_KEYWORD[(lv, keyword)] for lv in Level if (lv, keyword) in BY_KEYWORD)
        found.append(Match(attr, kind, values))
    return DicomQuery(level, kw.pop("datastore_id", DS), matches=found, **kw)


def _studies(index: MetadataIndex, *matches: tuple[str, Kind, tuple[str, ...]], **kw: Any) -> list[str]:
    return [r["study_uid"] for r in index.dicom_studies(_q(Level.STUDY, *matches, **kw))]


def _series(index: MetadataIndex, *matches: tuple[str, Kind, tuple[str, ...]], **kw: Any) -> list[str]:
    return [r["series_uid"] for r in index.dicom_series(_q(Level.SERIES, *matches, **kw))]


def _instances(index: MetadataIndex, *matches: tuple[str, Kind, tuple[str, ...]], **kw: Any) -> list[str]:
    return [r["sop_uid"] for r in index.dicom_instances(_q(Level.INSTANCE, *matches, **kw))]


# -- rows and upkeep
def test_rows_of_a_created_set_at_every_level(index: MetadataIndex) -> None:
    head = _create(index, 1, "1.1", "1.1.1", 100.0)
    [study] = index.dicom_studies(_q(Level.STUDY))
    assert study == {
        "study_date": "20240101", "study_time": "101500", "accession_number": "A1",
        "referring_physician_name": None, "study_description": "Chest", "patient_name": "Doe^John",
        "patient_id": "P1", "patient_birth_date": None, "patient_sex": None, "study_uid": "1.1",
        "study_id": None, "modalities": ["CT"], "num_series": 1, "num_instances": 2, "updated_at": 100.0,
    }  # fmt: skip
    [series] = index.dicom_series(_q(Level.SERIES, study_uid="1.1"))
    assert series["series_uid"] == "1.1.1" and series["modality"] == "CT" and series["series_number"] == 1
    assert series["num_instances"] == 2 and series["image_set_id"] == head.id
    assert series["patient_id"] == "P1" and series["num_series"] == 1
    rows = index.dicom_instances(_q(Level.INSTANCE, study_uid="1.1", series_uid="1.1.1"))
    assert [r["sop_uid"] for r in rows] == ["1.1.1.1", "1.1.1.2"]  # by InstanceNumber
    assert rows[0]["frame_ids"] == ["1.1.1.1-f0", "1.1.1.1-f1"] and rows[0]["stored_ts"] == TS
    assert rows[0]["number_of_frames"] == 2 and rows[0]["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
    assert rows[0]["instance_number"] == 1 and rows[0]["image_set_id"] == head.id
    assert rows[0]["study_description"] == "Chest" and rows[0]["series_uid"] == "1.1.1"
    one = index.dicom_instance(DS, "1.1", "1.1.1", "1.1.1.2")
    assert one == rows[1]
    assert index.dicom_instance(DS, "1.1", "1.1.1", "nope") is None
    assert index.dicom_instance(DS, "1.1", "9.9", "1.1.1.2") is None
    assert index.dicom_instance(OTHER, "1.1", "1.1.1", "1.1.1.2") is None
    assert index.dicom_studies(_q(Level.STUDY, datastore_id=OTHER)) == []


def test_study_is_recomputed_from_its_live_series(index: MetadataIndex) -> None:
    _create(index, 1, "1.1", "1.1.1", 100.0, modality="CT")
    b = _create(index, 2, "1.1", "1.1.2", 200.0, modality="MR", sops=[("s1", 1)], description="Newer")
    _create(index, 3, "1.1", "1.1.3", 300.0, modality="US", primary=False)  # not primary: not indexed live
    [study] = index.dicom_studies(_q(Level.STUDY))
    assert study["modalities"] == ["CT", "MR"] and study["num_series"] == 2 and study["num_instances"] == 3
    assert study["study_description"] == "Newer" and study["updated_at"] == 200.0  # the latest series wins
    assert _series(index, study_uid="1.1") == ["1.1.1", "1.1.2"]
    # delete the newest series: the study falls back to the other one
    dead = _v(b, 2, "DELETED", "DELETED")
    index.commit_versions(
        DS, [VersionCommit(b.id, dead, "DELETED", "DELETED", 400.0, deleted_at=400.0, collect=True)]
    )
    [study] = index.dicom_studies(_q(Level.STUDY))
    assert study["modalities"] == ["CT"] and study["num_series"] == 1 and study["num_instances"] == 2
    assert study["study_description"] == "Chest" and study["updated_at"] == 400.0  # the study changed
    assert _series(index, study_uid="1.1") == ["1.1.1"]
    assert index.dicom_instance(DS, "1.1", "1.1.2", "s1") is None
    assert _instances(index, ("SOPInstanceUID", Kind.SINGLE, ("s1",))) == []


def test_primary_flag_and_deletion_remove_rows_from_results(index: MetadataIndex) -> None:
    a = _create(index, 1, "1.1", "1.1.1", 100.0)
    _create(index, 2, "2.2", "2.2.1", 150.0)
    row = _v(a, 2)
    index.commit_versions(DS, [VersionCommit(a.id, row, "ACTIVE", "UPDATED", 200.0, is_primary=False)])
    assert _studies(index) == ["2.2"]
    assert _series(index, ("PatientID", Kind.SINGLE, ("P1",))) == ["2.2.1"]
    assert index.dicom_instance(DS, "1.1", "1.1.1", "1.1.1.1") is None
    index.commit_versions(DS, [VersionCommit(a.id, _v(a, 3), "ACTIVE", "UPDATED", 300.0, is_primary=True)])
    assert _studies(index) == ["1.1", "2.2"]  # back, from the rows the set kept; newest first
    assert index.dicom_instance(DS, "1.1", "1.1.1", "1.1.1.1") is not None


def test_content_change_replaces_series_and_instances(index: MetadataIndex) -> None:
    head = _create(index, 1, "1.1", "1.1.1", 100.0, sops=[("a", 1), ("b", 2), ("c", 3)])
    doc = _doc(head.id, "1.1", "1.1.1", [("b", 20), ("c", 3), ("d", 4)], patient_id="P9", modality="MR")
    assert index.append_version(DS, _content(head, doc, 2, 200.0), 1)
    assert _instances(index, study_uid="1.1") == ["c", "d", "b"]
    assert index.dicom_instance(DS, "1.1", "1.1.1", "a") is None
    [study] = index.dicom_studies(_q(Level.STUDY))
    assert (study["patient_id"], study["modalities"], study["num_instances"]) == ("P9", ["MR"], 3)
    # the study UID itself changes: the old study disappears, the new one appears
    moved = _doc(head.id, "7.7", "1.1.1", [("b", 1)])
    index.commit_versions(DS, [_content(head, moved, 3, 300.0)])
    assert _studies(index) == ["7.7"]
    assert _instances(index, study_uid="7.7") == ["b"] and _instances(index, study_uid="1.1") == []


def test_import_commit_writes_rows_and_a_conflict_leaves_none(index: MetadataIndex) -> None:
    existing = _create(index, 1, "1.1", "1.1.1", 100.0)
    index.insert_job(ImportJob("j" * 32, DS, "job", "SUBMITTED", "arn:role", "s3://in/", "s3://out/", 50.0))
    job = index.claim_job("w1", 60.0, 600.0)
    assert job is not None
    doc = _doc("2" * 32, "2.2", "2.2.1", [("x", 1)])
    new = _head("2" * 32, doc, 120.0)
    merged = _doc(existing.id, "1.1", "1.1.1", [("1.1.1.1", 1), ("1.1.1.2", 2), ("y", 3)])
    stale = _content(existing, merged, 2, 130.0)
    job.status = "COMPLETED"
    assert index.commit_import(DS, job, "w1", [(new, _v(new), _frames(doc))], [(stale, 5)]) == "conflict"
    assert _studies(index) == ["1.1"] and _instances(index, study_uid="1.1") == ["1.1.1.1", "1.1.1.2"]
    assert index.dicom_instance(DS, "2.2", "2.2.1", "x") is None
    assert index.commit_import(DS, job, "w1", [(new, _v(new), _frames(doc))], [(stale, 1)]) == "ok"
    assert _studies(index) == ["1.1", "2.2"]
    assert _instances(index, study_uid="1.1") == ["1.1.1.1", "1.1.1.2", "y"]
    assert index.dicom_studies(_q(Level.STUDY, study_uid="1.1"))[0]["num_instances"] == 3


def test_failed_copy_without_content_changes_nothing(index: MetadataIndex) -> None:
    head = _create(index, 1, "1.1", "1.1.1", 100.0)
    before = index.dicom_studies(_q(Level.STUDY))
    index.commit_versions(DS, [VersionCommit(head.id, _v(head, 2), "ACTIVE", "UPDATE_FAILED", 200.0)])
    index.commit_versions(DS, [VersionCommit(head.id, None, "ACTIVE", "COPIED", 300.0)])
    assert index.dicom_studies(_q(Level.STUDY)) == before


def test_backfill_indexes_sets_written_before_the_index(index: MetadataIndex) -> None:
    doc = _doc("1" * 32, "1.1", "1.1.1", [("a", 1)])
    legacy = _head("1" * 32, doc, 100.0)
    rows, legacy.dicom = legacy.dicom, None  # as written before the DICOM index existed
    index.create_image_set(legacy, _v(legacy), _frames(doc))
    _create(index, 2, "2.2", "2.2.1", 200.0)
    adapter: Any = index
    assert [s.id for s in adapter.dicom_unindexed("", 10)] == [legacy.id]
    assert adapter.dicom_unindexed(legacy.id, 10) == []
    assert rows is not None
    assert not adapter.dicom_reindex(DS, legacy.id, 2, rows)  # the set moved on: not this content
    assert _studies(index) == ["2.2"]
    assert adapter.dicom_reindex(DS, legacy.id, 1, rows)
    assert _studies(index) == ["2.2", "1.1"] and adapter.dicom_unindexed("", 10) == []
    assert index.dicom_instance(DS, "1.1", "1.1.1", "a") is not None


# -- matching
@pytest.fixture
def three(index: MetadataIndex) -> MetadataIndex:
    _create(index, 1, "1.1", "1.1.1", 100.0, patient_id="P1", patient_name="Doe^John", study_date="20240101",
            accession="A1", series_number="2", modality="CT")  # fmt: skip
    _create(index, 2, "2.2", "2.2.1", 200.0, patient_id="P2", patient_name="Smith^Anna=Smith^Ann",
            study_date="20240315", accession="A2", series_number=None, modality="MR")  # fmt: skip
    _create(index, 3, "3.3", "3.3.1", 300.0, patient_id="p1", patient_name=None, study_date=None,
            accession=None, series_number="1", modality="CT", study_time="235959")  # fmt: skip
    _create(index, 4, "1.1", "1.1.2", 50.0, series_number="1", modality="SR", sops=[("z", None), ("y", 7)])
    return index


def test_single_list_and_null_never_match(three: MetadataIndex) -> None:
    assert _studies(three) == ["3.3", "2.2", "1.1"]  # newest update first
    assert _studies(three, ("PatientID", Kind.SINGLE, ("P1",))) == ["1.1"]  # case-sensitive
    assert _studies(three, ("PatientID", Kind.SINGLE, ("",))) == ["3.3", "2.2", "1.1"]  # universal
    assert _studies(three, ("StudyInstanceUID", Kind.LIST, ("1.1", "3.3", "9"))) == ["3.3", "1.1"]
    assert _studies(three, ("AccessionNumber", Kind.SINGLE, ("A2",))) == ["2.2"]
    assert _studies(three, ("NumberOfStudyRelatedSeries", Kind.SINGLE, ("2",))) == ["1.1"]
    assert _studies(three, ("NumberOfStudyRelatedSeries", Kind.SINGLE, ("x",))) == []
    assert _series(three, ("SeriesNumber", Kind.SINGLE, ("01",))) == ["1.1.2", "3.3.1"]  # integers
    assert _studies(three, ("StudyDate", Kind.RANGE, ("20000101", ""))) == ["2.2", "1.1"]  # NULL: no match
    assert _studies(three, ("PatientName", Kind.WILDCARD, ("*o*",))) == ["1.1"]
    assert _studies(three, ("PatientName", Kind.WILDCARD, ("*",))) == ["3.3", "2.2", "1.1"]


def test_wildcards_are_case_sensitive_whole_value_with_literal_metacharacters(three: MetadataIndex) -> None:
    assert _studies(three, ("PatientName", Kind.WILDCARD, ("Doe*",))) == ["1.1"]
    assert _studies(three, ("PatientName", Kind.WILDCARD, ("doe*",))) == []
    assert _studies(three, ("PatientName", Kind.WILDCARD, ("Doe",))) == []  # whole value (no implicit *)
    assert _studies(three, ("PatientName", Kind.WILDCARD, ("D?e^J*n",))) == ["1.1"]
    assert _studies(three, ("PatientID", Kind.WILDCARD, ("?1",))) == ["3.3", "1.1"]
    _create(three, 9, "9.9", "9.9.1", 10.0, patient_id="a%b_c[d]\\e", accession="A_1")
    assert _studies(three, ("PatientID", Kind.WILDCARD, ("a%b_c[d]\\*",))) == ["9.9"]
    assert _studies(three, ("PatientID", Kind.WILDCARD, ("a_b*",))) == []
    assert _studies(three, ("AccessionNumber", Kind.WILDCARD, ("A_*",))) == ["9.9"]
    assert _studies(three, ("AccessionNumber", Kind.WILDCARD, ("A?",))) == ["2.2", "1.1"]


def test_ranges_are_inclusive_with_open_ends(three: MetadataIndex) -> None:
    assert _studies(three, ("StudyDate", Kind.RANGE, ("20240101", "20240315"))) == ["2.2", "1.1"]
    assert _studies(three, ("StudyDate", Kind.RANGE, ("20240102", ""))) == ["2.2"]
    assert _studies(three, ("StudyDate", Kind.RANGE, ("", "20240101"))) == ["1.1"]
    assert _studies(three, ("StudyDate", Kind.RANGE, ("", ""))) == ["3.3", "2.2", "1.1"]
    assert _studies(three, ("StudyTime", Kind.RANGE, ("1000", "1015"))) == ["2.2", "1.1"]  # 101500 <= 1015
    assert _studies(three, ("StudyTime", Kind.RANGE, ("2359", ""))) == ["3.3"]


def test_fuzzy_person_names_match_any_component_start_case_insensitive(three: MetadataIndex) -> None:
    assert _studies(three, ("PatientName", Kind.FUZZY, ("joh",))) == ["1.1"]
    assert _studies(three, ("PatientName", Kind.FUZZY, ("DOE",))) == ["1.1"]
    assert _studies(three, ("PatientName", Kind.FUZZY, ("doe^j",))) == ["1.1"]
    assert _studies(three, ("PatientName", Kind.FUZZY, ("ann",))) == [
        "2.2"
    ]  # a component of the second group
    assert _studies(three, ("PatientName", Kind.FUZZY, ("ohn",))) == []  # not the start of a component
    assert _studies(three, ("PatientName", Kind.FUZZY, ("s*h^a",))) == ["2.2"]


def test_modalities_in_study_contains(three: MetadataIndex) -> None:
    assert _studies(three, ("ModalitiesInStudy", Kind.CONTAINS, ("SR",))) == ["1.1"]
    assert _studies(three, ("ModalitiesInStudy", Kind.CONTAINS, ("MR", "SR"))) == ["2.2", "1.1"]
    assert _studies(three, ("ModalitiesInStudy", Kind.CONTAINS, ("C",))) == []
    assert _studies(three, ("ModalitiesInStudy", Kind.SINGLE, ("CT",))) == ["3.3", "1.1"]
    assert _studies(three, ("ModalitiesInStudy", Kind.WILDCARD, ("S?",))) == ["1.1"]
    assert three.dicom_studies(_q(Level.STUDY, study_uid="1.1"))[0]["modalities"] == ["CT", "SR"]


def test_orders_pages_and_hierarchy(three: MetadataIndex) -> None:
    # series: SeriesNumber ascending, no number last, then the UID
    assert _series(three) == ["1.1.2", "3.3.1", "1.1.1", "2.2.1"]
    assert _series(three, limit=2, offset=1) == ["3.3.1", "1.1.1"]
    assert _series(three, study_uid="1.1") == ["1.1.2", "1.1.1"]
    assert _series(three, ("PatientID", Kind.SINGLE, ("P1",)), ("Modality", Kind.SINGLE, ("CT",))) == [
        "1.1.1"
    ]
    assert _studies(three, limit=1, offset=1) == ["2.2"]
    assert _studies(three, limit=5, offset=3) == []
    # instances: InstanceNumber ascending, none last, then the UID
    assert _instances(three, study_uid="1.1", series_uid="1.1.2") == ["y", "z"]
    assert _instances(three, study_uid="1.1") == ["1.1.1.1", "1.1.1.2", "y", "z"]
    assert _instances(three, study_uid="1.1", series_uid="1.1.2", limit=1, offset=1) == ["z"]
    assert _instances(three, ("SOPInstanceUID", Kind.SINGLE, ("3.3.1.2",))) == ["3.3.1.2"]
    assert _instances(
        three, ("PatientID", Kind.SINGLE, ("P2",)), ("InstanceNumber", Kind.RANGE, ("2", ""))
    ) == ["2.2.1.2"]
    assert _instances(three, ("Modality", Kind.SINGLE, ("SR",)), ("InstanceNumber", Kind.SINGLE, ("7",))) == [
        "y"
    ]
    assert _instances(three, study_uid="2.2", series_uid="1.1.1") == []


def test_a_match_below_the_query_level_is_refused(index: MetadataIndex) -> None:
    with pytest.raises(ValueError, match="Modality"):
        index.dicom_studies(_q(Level.STUDY, ("Modality", Kind.SINGLE, ("CT",))))


def test_concurrent_writers_of_one_study_count_each_other(index: MetadataIndex) -> None:
    """PostgreSQL writers of one study take turns on its recomputation; none overwrites another's series."""
    from concurrent.futures import ThreadPoolExecutor

    def write(n: int) -> None:
        _create(index, n, "5.5", f"5.5.{n}", 100.0 + n, sops=[(f"5.5.{n}.1", 1)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(1, 17)))
    [study] = index.dicom_studies(_q(Level.STUDY))
    assert (study["num_series"], study["num_instances"]) == (16, 16)
    assert len(_series(index, study_uid="5.5")) == 16
