"""One behavioural suite for the MetadataIndex port, run against the SQLite and the PostgreSQL adapters."""

from __future__ import annotations

import inspect
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from search_pages import page_rows

import pg
from openhi.core.records import Datastore, FrameRef, ImageSet, ImageSetVersion, ImportJob
from openhi.core.search import study_datetime_key
from openhi.ports.index import LockRequest, MetadataIndex, SearchFilter, SearchQuery, VersionCommit
from openhi.storage.sqlite.index import SqliteIndex

DS = "d" * 32
OTHER = "e" * 32


def _ds(i: int, token: str | None = None, status: str = "ACTIVE") -> Datastore:
    return Datastore(f"{i:032x}", f"ds{i}", status, "HTJ2K", 100.0 + i % 3, 100.0 + i % 3, client_token=token)


def _job(i: int, ds: str = DS, token: str | None = None, status: str = "SUBMITTED") -> ImportJob:
    return ImportJob(
        f"{i:032x}",
        ds,
        f"job{i}",
        status,
        "arn:role",
        "s3://in/",
        "s3://out/",
        500.0 + i // 2,
        client_token=token,
    )


def _search(i: int, dated: bool = True) -> dict[str, Any]:
    search: dict[str, Any] = {
        "DICOMPatientId": f"P{i % 3}",
        "DICOMPatientName": "Doe^Jane",
        "DICOMAccessionNumber": f"A{i % 4}",
        "DICOMStudyId": f"S{i % 2}",
        "DICOMStudyInstanceUID": f"1.2.{i % 2}",
        "DICOMSeriesInstanceUID": f"1.2.{i % 2}.{i}",
        "DICOMSeriesNumber": i,
        "DICOMNumberOfStudyRelatedInstances": 7,
    }
    if dated:
        search |= {"DICOMStudyDate": f"202001{1 + i % 5:02d}", "DICOMStudyTime": f"{i % 24:02d}30"}
    return search


def _set(i: int, ds: str = DS, state: str = "ACTIVE", primary: bool = True, dated: bool = True) -> ImageSet:
    return ImageSet(
        ds,
        f"{i:032x}",
        1,
        state,
        "CREATED",
        primary,
        1000.0 + i,
        2000.0 - (i % 4),
        1,
        search=_search(i, dated),
    )


def _v1(head: ImageSet, state: str | None = None, key: str | None = "meta/1") -> ImageSetVersion:
    status = "CREATED" if state is None else "UPDATING"
    return ImageSetVersion(
        head.datastore_id, head.id, 1, state or head.state, status, head.created_at, head.updated_at,
        head.is_primary, key,
    )  # fmt: skip


def _frames(n: int, prefix: str = "f") -> list[FrameRef]:
    return [FrameRef(f"{prefix}{k}", f"frames/{prefix}{k}", "1.2.840.10008.1.2.4.202") for k in range(n)]


def _create(index: MetadataIndex, i: int, **kw: Any) -> ImageSet:
    head = _set(i, **kw)
    index.create_image_set(head, _v1(head, key=f"meta/{head.id}/1"), _frames(2, f"s{i}-"))
    return head


def _lock(head: ImageSet, expected: int, new: int | None, now: float = 3000.0) -> LockRequest:
    version = None
    if new is not None:
        version = replace(_v1(head, "LOCKED"), version=new, updated_at=now, metadata_key=None)
    return LockRequest(head.id, expected, "UPDATING", version)


def test_both_adapters_implement_every_port_method(pg_schemas: pg.Schemas) -> None:
    from openhi.storage.postgres.index import PostgresIndex

    def params(f: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    port = {n: params(f) for n, f in vars(MetadataIndex).items() if inspect.isfunction(f) and n[0] != "_"}
    for adapter in (SqliteIndex, PostgresIndex):
        assert {n: params(getattr(adapter, n)) for n in port if hasattr(adapter, n)} == port, adapter


# -- meta, datastores, tags, jobs


def test_meta_is_set_once(index: MetadataIndex) -> None:
    assert index.get_meta("secret") is None
    assert index.set_meta_if_absent("secret", "a") == "a"
    assert index.set_meta_if_absent("secret", "b") == "a"
    assert index.get_meta("secret") == "a"


def test_datastores_token_idempotency_listing_and_status(index: MetadataIndex) -> None:
    first = index.insert_datastore(_ds(1, token="tok"))
    again = index.insert_datastore(_ds(2, token="tok"))
    assert again == first and again.id == f"{1:032x}"
    for i in range(3, 9):
        index.insert_datastore(_ds(i, status="DELETED" if i % 2 else "ACTIVE"))
    got = index.get_datastore(first.id)
    assert got == first and isinstance(got.created_at, float)
    assert index.get_datastore("x" * 32) is None
    everything = index.list_datastores(None, None, 100)
    keys = [(d.created_at, d.id) for d in everything]
    assert keys == sorted(keys) and len(keys) == 7
    page1 = index.list_datastores(None, None, 3)
    page2 = index.list_datastores(None, (page1[-1].created_at, page1[-1].id), 3)
    page3 = index.list_datastores(None, (page2[-1].created_at, page2[-1].id), 3)
    assert page1 + page2 + page3 == everything
    assert {d.id for d in index.list_datastores("DELETED", None, 100)} == {f"{i:032x}" for i in (3, 5, 7)}
    assert index.count_datastores(["ACTIVE"]) == 4 and index.count_datastores(["ACTIVE", "DELETED"]) == 7
    assert index.count_datastores([]) == 0
    index.set_datastore_status(first.id, "DELETING", 150.0)
    got = index.get_datastore(first.id)
    assert got is not None and (got.status, got.updated_at) == ("DELETING", 150.0)


def test_tags(index: MetadataIndex) -> None:
    arn = "arn:aws:medical-imaging:us-east-1:123456789012:datastore/" + DS
    assert index.get_tags(arn) == {}
    index.put_tags(arn, {"b": "2", "a": "1"})
    index.put_tags(arn, {"b": "3"})
    index.put_tags(arn + "x", {"z": "9"})
    assert index.get_tags(arn) == {"a": "1", "b": "3"} and list(index.get_tags(arn)) == ["a", "b"]
    index.remove_tags(arn, ["a", "missing"])
    index.remove_tags(arn, [])
    assert index.get_tags(arn) == {"b": "3"} and index.get_tags(arn + "x") == {"z": "9"}


def test_jobs_tokens_listing_order_pagination_and_filters(index: MetadataIndex) -> None:
    first = index.insert_job(replace(_job(1, token="t"), import_configuration={"a": [1, 2]}))
    assert index.insert_job(_job(2, token="t")) == first
    assert index.insert_job(_job(3, ds=OTHER, token="t")).id == f"{3:032x}"  # tokens are per datastore
    for i in range(4, 11):
        index.insert_job(_job(i, status="IN_PROGRESS" if i % 3 == 0 else "SUBMITTED"))
    got = index.get_job(DS, first.id)
    assert got == first and got.import_configuration == {"a": [1, 2]}
    assert index.get_job(OTHER, first.id) is None
    jobs = index.list_jobs(DS, None, None, 100)
    keys = [(j.submitted_at, j.id) for j in jobs]
    assert keys == sorted(keys, reverse=True) and len(keys) == 8  # newest first
    pages: list[ImportJob] = []
    before: tuple[float, str] | None = None
    while page := index.list_jobs(DS, None, before, 3):
        pages += page
        before = (page[-1].submitted_at, page[-1].id)
    assert pages == jobs
    assert [j.id for j in index.list_jobs(DS, "IN_PROGRESS", None, 100)] == [f"{i:032x}" for i in (9, 6)]
    assert (
        index.count_jobs(DS, ["IN_PROGRESS"]) == 2 and index.count_jobs(DS, ["SUBMITTED", "IN_PROGRESS"]) == 8
    )
    done = replace(first, status="COMPLETED", message="ok", ended_at=900.0)
    index.update_job(done)
    assert index.get_job(DS, first.id) == done
    submitted = index.jobs_in_status(["SUBMITTED"])
    assert [j.submitted_at for j in submitted] == sorted(j.submitted_at for j in submitted)
    assert {j.id for j in submitted} == {f"{i:032x}" for i in (3, 4, 5, 7, 8, 10)}


# -- image sets, versions, frames


def test_image_set_create_get_versions_and_frames(index: MetadataIndex) -> None:
    head = _create(index, 1)
    _create(index, 2, primary=False)
    _create(index, 3, state="DELETED")
    got = index.get_image_set(DS, head.id)
    assert got == head
    assert got is not None and got.is_primary is True and isinstance(got.created_at, float)
    assert got.search["DICOMSeriesNumber"] == 1 and "DICOMStudyDescription" not in got.search
    assert index.get_image_set(OTHER, head.id) is None
    assert index.get_version(DS, head.id, 1) == _v1(head, key=f"meta/{head.id}/1")
    assert index.get_version(DS, head.id, 2) is None and index.get_version(OTHER, head.id, 1) is None
    assert index.list_frames(DS, head.id) == _frames(2, "s1-")
    assert index.get_frame(DS, head.id, "s1-1") == _frames(2, "s1-")[1]
    assert index.get_frame(DS, head.id, "nope") is None and index.get_frame(OTHER, head.id, "s1-1") is None
    assert index.list_frames(OTHER, head.id) == []
    found = index.find_primary(DS, "1.2.1", "1.2.1.1")
    assert found is not None and found.id == head.id
    assert index.find_primary(DS, "1.2.0", "1.2.0.2") is None  # not primary
    assert index.find_primary(DS, "1.2.1", "1.2.1.3") is None  # deleted
    assert [s.id for s in index.list_primary_in_study(DS, "1.2.1")] == [head.id]
    assert index.count_image_sets(DS) == 2 and index.count_image_sets(OTHER) == 0
    assert sorted(index.remove_frame_refs(head.id)) == ["frames/s1-0", "frames/s1-1"]
    assert index.list_frames(DS, head.id) == []


def test_lock_commit_and_version_history(index: MetadataIndex) -> None:
    head = _create(index, 1)
    assert index.lock_image_sets(DS, [_lock(head, 1, 2)], 3000.0) is None
    locked = index.get_image_set(DS, head.id)
    assert locked is not None
    assert (locked.state, locked.workflow_status, locked.latest_version, locked.updated_at) == (
        "LOCKED", "UPDATING", 2, 3000.0,
    )  # fmt: skip
    assert locked.content_version == 1
    assert [v.id for v in index.locked_image_sets()] == [head.id]
    assert [(v.image_set_id, v.version) for v in index.locked_versions()] == [(head.id, 2)]
    final = replace(_v1(head), version=2, workflow_status="UPDATED", updated_at=3001.0, metadata_key="meta/2")
    search = _search(9) | {"DICOMStudyDescription": "new"}
    commit = VersionCommit(
        head.id, final, "ACTIVE", "UPDATED", 3001.0, content_version=2, search=search, is_primary=False,
        touch=True, frames=[FrameRef("s1-1", "frames/other", "1.2.840.10008.1.2.1"), *_frames(1, "n")],
    )  # fmt: skip
    index.commit_versions(DS, [commit])
    done = index.get_image_set(DS, head.id)
    assert done is not None
    assert (done.state, done.workflow_status, done.latest_version, done.content_version) == (
        "ACTIVE", "UPDATED", 2, 2,
    )  # fmt: skip
    assert (done.is_primary, done.updated_at, done.last_accessed_at) == (False, 3001.0, 3001.0)
    assert done.search["DICOMStudyDescription"] == "new" and done.search["DICOMPatientId"] == "P0"
    assert index.get_version(DS, head.id, 2) == final
    assert [v.version for v in index.list_versions(DS, head.id, None, 10)] == [2, 1]
    assert [v.version for v in index.list_versions(DS, head.id, 2, 10)] == [1]
    assert [v.version for v in index.list_versions(DS, head.id, None, 1)] == [2]
    assert index.get_frame(DS, head.id, "s1-1") == FrameRef("s1-1", "frames/other", "1.2.840.10008.1.2.1")
    assert [f.frame_id for f in index.list_frames(DS, head.id)] == ["n0", "s1-0", "s1-1"]
    assert index.locked_image_sets() == [] and index.locked_versions() == []


def test_lock_stale_locked_copy_source_and_atomic_rollback(index: MetadataIndex) -> None:
    a, b = _create(index, 1), _create(index, 2)
    stale = index.lock_image_sets(DS, [_lock(a, 5, 6)], 3000.0)
    assert stale == a  # the current head, nothing changed
    assert index.lock_image_sets(DS, [LockRequest(b.id, 1, "COPYING_WITH_READ_ONLY_ACCESS")], 3000.0) is None
    source = index.get_image_set(DS, b.id)
    assert source is not None and (source.state, source.latest_version, source.updated_at) == (
        "LOCKED", 1, b.updated_at,
    )  # fmt: skip
    assert index.get_version(DS, b.id, 2) is None
    new = _set(3, state="LOCKED")
    creates = [(new, _v1(new, "LOCKED"))]
    lost = index.lock_image_sets(DS, [_lock(a, 1, 2), _lock(b, 1, 2)], 3100.0, creates)
    assert lost is not None and lost.id == b.id and lost.state == "LOCKED"
    assert index.get_image_set(DS, a.id) == a and index.get_version(DS, a.id, 2) is None  # rolled back
    assert index.get_image_set(DS, new.id) is None
    assert index.lock_image_sets(DS, [_lock(a, 1, 2)], 3100.0, creates) is None
    created = index.get_image_set(DS, new.id)
    assert created is not None and created.state == "LOCKED"
    # a set that does not exist has no head to report: None, and nothing is written
    assert index.lock_image_sets(DS, [LockRequest("z" * 32, 1, "UPDATING")], 1.0) is None
    assert index.get_image_set(DS, "z" * 32) is None
    assert index.lock_image_sets(DS, [LockRequest(a.id, 2, "UPDATING")], 1.0) == index.get_image_set(DS, a.id)


def test_commit_versions_is_atomic(index: MetadataIndex) -> None:
    a, b = _create(index, 1), _create(index, 2)
    assert index.lock_image_sets(DS, [_lock(a, 1, 2), _lock(b, 1, 2)], 3000.0) is None
    good = VersionCommit(a.id, None, "ACTIVE", "UPDATED", 3001.0, content_version=2)
    bad = VersionCommit(b.id, None, "ACTIVE", "UPDATED", 3001.0, frames=[FrameRef("x", None, "ts")])  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own integrity error
        index.commit_versions(DS, [good, bad])
    assert {s.id for s in index.locked_image_sets()} == {a.id, b.id}
    index.commit_versions(DS, [good, replace(bad, frames=[])])
    assert index.locked_image_sets() == []
    after = index.get_image_set(DS, a.id)
    assert after is not None and after.content_version == 2


def test_append_version_is_conditional(index: MetadataIndex) -> None:
    head = _create(index, 1)
    version = replace(
        _v1(head), version=2, workflow_status="IMPORTED", updated_at=4000.0, metadata_key="meta/2"
    )
    commit = VersionCommit(
        head.id, version, "ACTIVE", "IMPORTED", 4000.0, content_version=2, frames=_frames(1, "x")
    )
    assert index.append_version(DS, commit, expected_latest=7) is False
    assert index.get_version(DS, head.id, 2) is None
    assert index.append_version(DS, commit, expected_latest=1) is True
    got = index.get_image_set(DS, head.id)
    assert got is not None and (got.latest_version, got.content_version, got.workflow_status) == (
        2, 2, "IMPORTED",
    )  # fmt: skip
    assert index.get_version(DS, head.id, 2) == version and len(index.list_frames(DS, head.id)) == 3
    assert index.lock_image_sets(DS, [_lock(head, 2, 3)], 5000.0) is None
    locked_commit = replace(commit, version=replace(version, version=4))
    assert index.append_version(DS, locked_commit, expected_latest=3) is False  # locked


def test_delete_collects_blobs_and_gc_queue(index: MetadataIndex) -> None:
    head, keep = _create(index, 1), _create(index, 2)
    assert index.blob_referenced("frames/s1-0") and index.blob_referenced(f"meta/{head.id}/1")
    assert index.lock_image_sets(DS, [_lock(head, 1, 2)], 3000.0) is None
    final = replace(_v1(head), version=2, state="DELETED", workflow_status="DELETED", deleted_at=3001.0)
    final.metadata_key = None
    commit = VersionCommit(head.id, final, "DELETED", "DELETED", 3001.0, deleted_at=3001.0, collect=True)
    index.commit_versions(DS, [commit])
    gone = index.get_image_set(DS, head.id)
    assert gone is not None and (gone.state, gone.deleted_at) == ("DELETED", 3001.0)
    assert index.list_frames(DS, head.id) == [] and index.count_image_sets(DS) == 1
    assert not index.blob_referenced("frames/s1-0") and not index.blob_referenced(f"meta/{head.id}/1")
    assert index.blob_referenced("frames/s2-0") and index.blob_referenced(f"meta/{keep.id}/1")
    index.enqueue_gc(["late", "frames/s1-0"], 9000.0)  # already queued: keeps its place
    index.enqueue_gc([], 9000.0)
    claimed = index.claim_gc(10)
    assert set(claimed) == {"frames/s1-0", "frames/s1-1", f"meta/{head.id}/1", "late"}
    assert claimed[-1] == "late" and len(index.claim_gc(2)) == 2
    index.forget_gc(["late", "frames/s1-0"])
    assert set(index.claim_gc(10)) == {"frames/s1-1", f"meta/{head.id}/1"}
    assert sorted(index.remove_frame_refs(keep.id)) == ["frames/s2-0", "frames/s2-1"]
    assert index.remove_frame_refs(keep.id) == [] and not index.blob_referenced("frames/s2-0")


def test_touch_and_archive_idle(index: MetadataIndex) -> None:
    a, b, c = _create(index, 1), _create(index, 2), _create(index, 3, state="DELETED")
    index.touch_image_sets(DS, [b.id], 5000.0)
    index.touch_image_sets(DS, [], 5000.0)
    assert index.archive_idle(1002.5) == 1  # a (created 1001); c is deleted; b was touched
    assert index.archive_idle(1002.5) == 0
    got = {s.id: s for s in (index.get_image_set(DS, x.id) for x in (a, b, c)) if s is not None}
    assert got[a.id].storage_tier == "ARCHIVE_INSTANT_ACCESS" and got[c.id].storage_tier == "FREQUENT_ACCESS"
    assert (got[b.id].storage_tier, got[b.id].last_accessed_at) == ("FREQUENT_ACCESS", 5000.0)
    index.touch_image_sets(DS, [a.id], 6000.0)
    touched = index.get_image_set(DS, a.id)
    assert touched is not None and (touched.storage_tier, touched.last_accessed_at) == (
        "FREQUENT_ACCESS",
        6000.0,
    )


# -- search


def _seed_search(index: MetadataIndex) -> list[ImageSet]:
    heads = [_create(index, i, primary=i % 3 != 0, dated=i % 5 != 0) for i in range(1, 25)]
    _create(index, 30, state="DELETED")
    _create(index, 31, ds=OTHER)
    return heads


def _key(head: ImageSet, sort: str) -> Any:
    if sort == "study_datetime":
        return study_datetime_key(head.search.get("DICOMStudyDate"), head.search.get("DICOMStudyTime"))
    return getattr(head, sort)


def _page_all(index: MetadataIndex, query: SearchQuery, limit: int) -> list[ImageSet]:
    return page_rows(index, DS, query, limit)


def _expected(heads: list[ImageSet], sort: str, order: str) -> list[str]:
    desc = order == "DESC"
    dated = sorted((h for h in heads if _key(h, sort) is not None), key=lambda h: (_key(h, sort), h.id))
    undated = sorted((h.id for h in heads if _key(h, sort) is None), reverse=desc)
    return [h.id for h in (reversed(dated) if desc else dated)] + undated


@pytest.mark.parametrize("sort", ["updated_at", "created_at", "study_datetime"])
@pytest.mark.parametrize("order", ["ASC", "DESC"])
def test_search_sorts_and_keyset_pages(index: MetadataIndex, sort: str, order: str) -> None:
    heads = _seed_search(index)
    expected = _expected(heads, sort, order)
    for limit in (1, 4, 50):
        assert [h.id for h in _page_all(index, SearchQuery([], sort, order), limit)] == expected


_FILTERS: list[tuple[SearchFilter, Any]] = [
    (SearchFilter("patient_id", "EQUAL", ["P1"]), lambda h: h.search["DICOMPatientId"] == "P1"),
    (SearchFilter("accession_number", "EQUAL", ["A2"]), lambda h: h.search["DICOMAccessionNumber"] == "A2"),
    (SearchFilter("study_id", "EQUAL", ["S1"]), lambda h: h.search["DICOMStudyId"] == "S1"),
    (SearchFilter("study_uid", "EQUAL", ["1.2.0"]), lambda h: h.search["DICOMStudyInstanceUID"] == "1.2.0"),
    (SearchFilter("series_uid", "EQUAL", ["1.2.1.7"]), lambda h: h.id == f"{7:032x}"),
    (SearchFilter("is_primary", "EQUAL", [1]), lambda h: h.is_primary),
    (SearchFilter("is_primary", "EQUAL", [0]), lambda h: not h.is_primary),
    (SearchFilter("created_at", "BETWEEN", [1003.0, 1009.0]), lambda h: 1003 <= h.created_at <= 1009),
    (SearchFilter("updated_at", "BETWEEN", [1997.0, 1998.0]), lambda h: 1997 <= h.updated_at <= 1998),
    (
        SearchFilter("study_datetime", "BETWEEN", ["20200102000000.000000", "20200103120000.000000"]),
        lambda h: "20200102000000.000000" <= (_key(h, "study_datetime") or "") <= "20200103120000.000000",
    ),
]


@pytest.mark.parametrize(
    ("flt", "match"), _FILTERS, ids=[f"{f.attribute}-{f.values[0]}" for f, _ in _FILTERS]
)
def test_search_filters(index: MetadataIndex, flt: SearchFilter, match: Any) -> None:
    heads = _seed_search(index)
    for sort in ("updated_at", "study_datetime"):
        wanted = _expected([h for h in heads if match(h)], sort, "DESC")
        assert wanted, "the data must exercise the filter"
        assert [h.id for h in _page_all(index, SearchQuery([flt], sort, "DESC"), 3)] == wanted
    both = SearchQuery([flt, SearchFilter("patient_id", "EQUAL", ["P0"])], "created_at", "ASC")
    wanted = _expected(
        [h for h in heads if match(h) and h.search["DICOMPatientId"] == "P0"], "created_at", "ASC"
    )
    assert [h.id for h in index.search_image_sets(DS, both, None, 100)] == wanted


# -- concurrency


def test_twenty_threads_race_one_lock(index: MetadataIndex) -> None:
    head = _create(index, 1)
    barrier = threading.Barrier(20)

    def attempt(n: int) -> ImageSet | None:
        barrier.wait()
        return index.lock_image_sets(DS, [_lock(head, 1, 2, now=3000.0 + n)], 3000.0 + n)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(attempt, range(20)))
    assert sum(r is None for r in results) == 1
    assert all(r is not None and r.latest_version == 2 and r.state == "LOCKED" for r in results if r)
    assert [v.version for v in index.list_versions(DS, head.id, None, 10)] == [2, 1]


# -- PostgreSQL only: migrations under concurrency, query plans, configuration


def test_pg_concurrent_opens_of_a_fresh_schema_migrate_once(pg_schemas: pg.Schemas) -> None:
    from openhi.storage.postgres.index import PostgresIndex
    from openhi.storage.postgres.schema import MIGRATIONS

    schema = pg_schemas.new()
    barrier = threading.Barrier(4)

    def open_one(n: int) -> str:
        barrier.wait()
        idx = PostgresIndex(pg_schemas.url, schema=schema)
        try:
            return idx.set_meta_if_absent("secret", f"s{n}")
        finally:
            idx.close()

    with ThreadPoolExecutor(4) as pool:
        secrets = set(pool.map(open_one, range(4)))
    assert len(secrets) == 1  # every process shares the first secret
    applied = pg.execute(schema, "SELECT version FROM schema_migrations ORDER BY version")
    assert applied == [(n,) for n in range(1, len(MIGRATIONS) + 1)]
    tables = pg.execute(
        schema, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
    )
    assert sorted(t for (t,) in tables) == sorted([*pg.TABLES, "schema_migrations"])


def test_pg_every_search_filter_and_sort_uses_an_index(pg_schemas: pg.Schemas) -> None:
    from openhi.storage.postgres.index import PostgresIndex
    from openhi.storage.sqlite.search import build_search_sql

    schema = pg_schemas.new()
    PostgresIndex(pg_schemas.url, schema=schema).close()
    pg.seed_search_rows(schema, 20_000, DS)
    filters: dict[str, tuple[str, list[Any]]] = {
        "patient_id": ("EQUAL", ["P1"]),
        "accession_number": ("EQUAL", ["A1"]),
        "study_id": ("EQUAL", ["S1"]),
        "study_uid": ("EQUAL", ["1.2.1"]),
        "series_uid": ("EQUAL", ["1.2.1.401"]),
        "is_primary": ("EQUAL", [1]),
        "created_at": ("BETWEEN", [1000.0, 1200.0]),
        "updated_at": ("BETWEEN", [49800.0, 50000.0]),
        "study_datetime": ("BETWEEN", ["20200101000000.000000", "20200115000000.000000"]),
    }
    combos: list[tuple[str, ...]] = [(), *((a,) for a in filters), *itertools.combinations(filters, 2)]
    bad: list[str] = []
    with pg.connection(schema) as conn:
        for combo, sort, order in itertools.product(
            combos, ("updated_at", "created_at", "study_datetime"), ("ASC", "DESC")
        ):
            query = SearchQuery([SearchFilter(a, *filters[a]) for a in combo], sort, order)
            middle = 25_000.0 if sort != "study_datetime" else "20200601000000.000000"
            cases = [(None, False), ((middle, "8" * 32), False)]
            if sort == "study_datetime":
                cases += [(None, True), ((None, "8" * 32), True)]
            for after, nulls in cases:
                sql, args = build_search_sql(DS, query, after, 51, mark="%s", nulls=nulls)
                plan = " | ".join(r[0] for r in conn.execute(f"EXPLAIN {sql}", args))
                if "Seq Scan on image_sets" in plan or "Index" not in plan:
                    bad.append(f"{combo} {sort} {order} after={after} nulls={nulls}: {plan}")
    assert bad == []


def test_pg_misconfigured_url_is_a_configuration_error_without_the_password(pg_schemas: pg.Schemas) -> None:
    from openhi.storage.registry import ConfigurationError, open_index

    with pytest.raises(ConfigurationError, match=r"postgresql://postgres:\*\*\*@127\.0\.0\.1:1/test") as err:
        open_index("postgresql://postgres:s3cret@127.0.0.1:1/test")
    assert "s3cret" not in str(err.value)
    with pytest.raises(ConfigurationError, match=r"openhi_no_such_db.*does not exist") as err:
        open_index(pg.with_query(pg_schemas.url.rsplit("/", 1)[0] + "/openhi_no_such_db", password="pw9"))
    assert "pw9" not in str(err.value)
    for bad in ({"pool_max": "0"}, {"pool_max": "x"}, {"schema": "no-dashes"}):
        with pytest.raises(ConfigurationError, match="Invalid"):
            open_index(pg.with_query(pg_schemas.url, **bad))


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_pg_registry_opens_both_schemes_with_url_options(pg_schemas: pg.Schemas, scheme: str) -> None:
    from openhi.storage.postgres.index import PostgresIndex
    from openhi.storage.registry import open_index

    schema = pg_schemas.new()
    url = pg.with_query(scheme + pg_schemas.url[pg_schemas.url.index(":") :], schema=schema, pool_max="2")
    idx = open_index(url)
    try:
        assert isinstance(idx, PostgresIndex) and idx.db.pool.max_size == 2 and idx.db.schema == schema
        idx.put_tags("arn", {"k": "v"})
        assert pg.execute(schema, "SELECT key, value FROM tags") == [("k", "v")]
    finally:
        idx.close()


# -- import-job queue: leases and the atomic import commit


def test_claim_takes_oldest_submitted_then_expired_leases(index: MetadataIndex) -> None:
    for i in (3, 1, 2):
        index.insert_job(_job(i))
    index.insert_job(_job(9, status="COMPLETED"))
    claimed = [index.claim_job(f"w{n}", 1000.0, 30.0) for n in range(3)]
    assert [j.id if j else None for j in claimed] == [f"{i:032x}" for i in (1, 2, 3)]
    assert all(j is not None and j.status == "IN_PROGRESS" for j in claimed)
    assert index.claim_job("w9", 1010.0, 30.0) is None  # every lease is still running
    assert index.renew_job_lease(f"{1:032x}", "w0", 1100.0) is True
    assert index.renew_job_lease(f"{1:032x}", "intruder", 2000.0) is False
    taken = index.claim_job("w9", 1040.0, 30.0)  # w1's and w2's leases ran out at 1030, w0 renewed
    assert taken is not None and taken.id == f"{2:032x}"
    assert index.renew_job_lease(taken.id, "w1", 1200.0) is False  # the dead worker lost it
    job = index.get_job(DS, taken.id)
    assert job is not None and job.status == "IN_PROGRESS"


def test_finish_job_only_by_the_lease_owner(index: MetadataIndex) -> None:
    index.insert_job(_job(1))
    job = index.claim_job("w0", 1000.0, 30.0)
    assert job is not None
    failed = replace(job, status="FAILED", message="boom", ended_at=1001.0)
    assert index.finish_job(failed, "w1") is False
    assert index.finish_job(failed, "w0") is True
    assert index.finish_job(failed, "w0") is False  # finished: nobody owns it any more
    got = index.get_job(DS, job.id)
    assert got is not None and (got.status, got.message, got.ended_at) == ("FAILED", "boom", 1001.0)
    assert index.claim_job("w2", 5000.0, 30.0) is None
    assert index.count_jobs(DS, ["SUBMITTED", "IN_PROGRESS"]) == 0


def _append(head: ImageSet, version: int, now: float = 3000.0) -> VersionCommit:
    row = ImageSetVersion(
        DS, head.id, version, "ACTIVE", "IMPORTED", head.created_at, now, True, f"m/{version}"
    )
    return VersionCommit(
        head.id, row, "ACTIVE", "IMPORTED", now, content_version=version, search=head.search,
        touch=True, frames=_frames(1, f"v{version}-"),
    )  # fmt: skip


def test_commit_import_is_atomic_and_conditional(index: MetadataIndex) -> None:
    existing = _create(index, 1)
    index.insert_job(_job(1))
    job = index.claim_job("w0", 1000.0, 30.0)
    assert job is not None
    done = replace(job, status="COMPLETED", ended_at=1002.0)
    new = _set(2)
    creation = (new, _v1(new, key="meta/new/1"), _frames(2, "n-"))
    # a stale append: nothing is written, not even the creation
    assert index.commit_import(DS, done, "w0", [creation], [(_append(existing, 2), 5)]) == "conflict"
    assert index.get_image_set(DS, new.id) is None
    # another owner: lease_lost, nothing written
    assert index.commit_import(DS, done, "w1", [creation], [(_append(existing, 2), 1)]) == "lease_lost"
    assert index.get_image_set(DS, new.id) is None
    got = index.get_job(DS, job.id)
    assert got is not None and got.status == "IN_PROGRESS"
    assert index.commit_import(DS, done, "w0", [creation], [(_append(existing, 2), 1)]) == "ok"
    head = index.get_image_set(DS, existing.id)
    assert head is not None and (head.latest_version, head.content_version) == (2, 2)
    assert {f.frame_id for f in index.list_frames(DS, existing.id)} == {"s1-0", "s1-1", "v2-0"}
    assert index.get_image_set(DS, new.id) is not None and len(index.list_frames(DS, new.id)) == 2
    got = index.get_job(DS, job.id)
    assert got is not None and (got.status, got.ended_at) == ("COMPLETED", 1002.0)
    # finished: a second commit of the same job (a worker that lost it) changes nothing
    assert index.commit_import(DS, done, "w0", [], []) == "lease_lost"


def test_commit_import_refuses_a_second_live_primary_of_a_series(index: MetadataIndex) -> None:
    first = _create(index, 1)
    index.insert_job(_job(1))
    job = index.claim_job("w0", 1000.0, 30.0)
    assert job is not None
    rival = replace(_set(99), search=first.search)  # same study and series, primary too
    creation = (rival, _v1(rival, key="meta/rival/1"), _frames(1, "r-"))
    done = replace(job, status="COMPLETED", ended_at=1002.0)
    assert index.commit_import(DS, done, "w0", [creation], []) == "conflict"
    assert index.get_image_set(DS, rival.id) is None
    non_primary = replace(rival, is_primary=False)
    version = replace(_v1(non_primary, key="meta/rival/1"), is_primary=False)
    assert index.commit_import(DS, done, "w0", [(non_primary, version, [])], []) == "ok"
    found = index.find_primary(
        DS, first.search["DICOMStudyInstanceUID"], first.search["DICOMSeriesInstanceUID"]
    )
    assert found is not None and found.id == first.id


def test_concurrent_claims_hand_each_job_to_one_worker(index: MetadataIndex) -> None:
    for i in range(12):
        index.insert_job(_job(i))

    def drain(worker: int) -> list[str]:
        got = []
        while (job := index.claim_job(f"w{worker}", 1000.0, 30.0)) is not None:
            got.append(job.id)
        return got

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(drain, range(4)))
    ids = [j for r in results for j in r]
    assert sorted(ids) == sorted(f"{i:032x}" for i in range(12))  # each exactly once


# -- write owners (crash recovery with several API processes)


def _owned_sets(index: MetadataIndex, base: int) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Set ``base`` LOCKED at version 2 (an update), ``base + 1`` LOCKED as a copy source, ``base + 2`` not."""
    a, b, c = _create(index, base), _create(index, base + 1), _create(index, base + 2)
    source = LockRequest(b.id, 1, "COPYING_WITH_READ_ONLY_ACCESS")
    assert index.lock_image_sets(DS, [_lock(a, 1, 2, now=5000.0), source], 5000.0) is None
    return a, b, c


def _orphans(index: MetadataIndex, now: float, before: float) -> tuple[list[tuple[str, int]], list[str]]:
    versions = [(v.image_set_id, v.version) for v in index.orphaned_versions(now, before)]
    return versions, [h.id for h in index.orphaned_image_sets(now, before)]


def test_locks_of_live_owners_are_not_orphaned(index: MetadataIndex) -> None:
    a, b, _ = _owned_sets(index, 900)
    live, dead = f"live-{os.getpid()}-900", f"dead-{os.getpid()}-900"
    index.beat_write_owner(live, 5000.0, 5006.0)
    index.beat_write_owner(dead, 4000.0, 4006.0)
    keys = [(a.id, 2), (b.id, 1)]
    index.record_write_locks(dead, keys, 4999.0)
    index.record_write_locks(live, keys, 5000.0)
    assert _orphans(index, 5001.0, 4000.0) == ([], [])  # one live owner is enough
    index.release_write_locks(live, keys)
    assert _orphans(index, 5001.0, 4000.0) == ([(a.id, 2)], [b.id])  # only a dead owner is noted
    index.beat_write_owner(dead, 5001.0, 5007.0)  # it beat again: alive
    assert _orphans(index, 5002.0, 4000.0) == ([], [])
    assert _orphans(index, 5008.0, 4000.0) == ([(a.id, 2)], [b.id])  # three beats missed
    index.release_write_locks(dead, keys)


def test_unnoted_locks_are_orphaned_after_the_grace_period(index: MetadataIndex) -> None:
    a, b, _ = _owned_sets(index, 910)
    # no note at all: the version's updated_at (the head's, for a copy source) stands for the lock time
    assert _orphans(index, 5001.0, 1000.0) == ([], [])
    assert _orphans(index, 5001.0, 2100.0) == ([], [b.id])  # the source head's updated_at is about 2000
    assert _orphans(index, 5001.0, 5000.5) == ([(a.id, 2)], [b.id])
    # a note naming an owner that never registered counts by its own lock time
    ghost = f"ghost-{os.getpid()}-910"
    index.record_write_locks(ghost, [(a.id, 2), (b.id, 1)], 5000.0)
    assert _orphans(index, 5001.0, 4000.0) == ([], [])
    assert _orphans(index, 5001.0, 5000.5) == ([(a.id, 2)], [b.id])
    index.release_write_locks(ghost, [(a.id, 2), (b.id, 1)])


def test_forget_dead_write_owners_keeps_notes_on_locked_keys(index: MetadataIndex) -> None:
    a, b, c = _owned_sets(index, 920)
    dead, live = f"dead-{os.getpid()}-920", f"live-{os.getpid()}-920"
    index.beat_write_owner(dead, 4000.0, 4006.0)
    index.beat_write_owner(live, 5000.0, 9000.0)
    index.record_write_locks(dead, [(a.id, 2), (b.id, 1), (c.id, 2)], 4500.0)  # c: a lock it never took
    index.record_write_locks(live, [(c.id, 3)], 4500.0)
    index.forget_dead_write_owners(5001.0, 4990.0)
    # c's note went (nothing LOCKED there), the dead owner stays while it still has notes on locked keys
    assert _orphans(index, 5001.0, 4990.0) == ([(a.id, 2)], [b.id])
    unlock = VersionCommit(b.id, None, "ACTIVE", "CREATED", 5002.0)
    final = replace(_v1(a), version=2, workflow_status="UPDATE_FAILED", updated_at=5002.0)
    index.commit_versions(DS, [VersionCommit(a.id, final, "ACTIVE", "UPDATE_FAILED", 5002.0), unlock])
    index.forget_dead_write_owners(5003.0, 4990.0)
    # every note of the dead owner went, and so did the owner: a lock noted by it now counts as unnoted
    index.lock_image_sets(DS, [LockRequest(b.id, 1, "COPYING_WITH_READ_ONLY_ACCESS")], 5004.0)
    index.record_write_locks(dead, [(b.id, 1)], 5004.0)
    assert _orphans(index, 5005.0, 4990.0) == ([], [])
    index.beat_write_owner(dead, 4000.0, 4006.0)  # registered again, but dead
    assert _orphans(index, 5005.0, 4990.0) == ([], [b.id])
    # the live owner's note on c survives every forget
    index.forget_dead_write_owners(9999.0 - 1, 9000.0)
    index.release_write_locks(live, [(c.id, 3)])
    index.release_write_locks(dead, [(b.id, 1)])
