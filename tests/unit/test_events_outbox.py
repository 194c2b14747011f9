"""The event outbox on both index adapters: one event per state change, in the change's transaction, with
AWS's detail-type and detail; a gap-free sequence in commit order; webhook cursors and their leases."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import pg
from openhi.core.records import Datastore, FrameRef, ImageSet, ImageSetVersion, ImportJob
from openhi.ports.index import LockRequest, MetadataIndex, StoredEvent, VersionCommit

DS = "d" * 32


def _types(events: list[StoredEvent]) -> list[str]:
    return [e.detail_type for e in events]


def _all(index: MetadataIndex) -> list[StoredEvent]:
    return index.list_events(0, 1000)


def _set(i: int, primary: bool = True, state: str = "ACTIVE", status: str = "CREATED") -> ImageSet:
    search = {"DICOMStudyInstanceUID": f"1.2.{i}", "DICOMSeriesInstanceUID": f"1.2.{i}.1"}
    return ImageSet(DS, f"{i:032x}", 1, state, status, primary, 1000.0, 1000.0 + i, 1, search=search)


def _v(
    head: ImageSet, version: int = 1, state: str | None = None, status: str | None = None
) -> ImageSetVersion:
    return ImageSetVersion(
        DS, head.id, version, state or head.state, status or head.workflow_status, head.created_at,
        head.updated_at, head.is_primary, f"meta/{head.id}/{version}",
    )  # fmt: skip


def _frames(i: int) -> list[FrameRef]:
    return [FrameRef(f"f{i}", f"frames/{i}", "1.2.840.10008.1.2.4.202")]


def _job(i: int = 1) -> ImportJob:
    return ImportJob(f"{i:032x}", DS, f"job{i}", "SUBMITTED", "arn:role", "s3://in/x/", "s3://out/y/", 500.0)


def test_datastore_status_changes_are_events_once(index: MetadataIndex) -> None:
    ds = Datastore(DS, "pacs", "CREATING", "HTJ2K", 100.0, 100.0, client_token="t1")
    index.insert_datastore(ds)
    assert index.insert_datastore(replace(ds, id="e" * 32)).id == DS  # the same token: no new datastore
    index.set_datastore_status(DS, "ACTIVE", 101.0)
    index.set_datastore_status(DS, "ACTIVE", 102.0)  # no change, no event
    index.set_datastore_status(DS, "DELETING", 103.0)
    index.set_datastore_status(DS, "DELETED", 104.0)
    events = _all(index)
    assert _types(events) == [
        "Data Store Creating",
        "Data Store Created",
        "Data Store Deleting",
        "Data Store Deleted",
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.time for e in events] == [100.0, 101.0, 103.0, 104.0]
    assert events[1].detail == {
        "imagingVersion": "1.0",
        "datastoreId": DS,
        "datastoreName": "pacs",
        "datastoreStatus": "ACTIVE",
    }
    assert all(e.datastore_id == DS and e.image_set_id is None for e in events)


def test_job_lifecycle_and_import_commit(index: MetadataIndex) -> None:
    index.insert_job(_job())
    job = index.claim_job("w0", 1000.0, 30.0)
    assert job is not None
    assert index.claim_job("w1", 2000.0, 30.0) is not None  # taken over after the lease: no status change
    head = _set(1)
    done = replace(job, status="COMPLETED", ended_at=2001.0)
    assert index.commit_import(DS, done, "w0", [(head, _v(head), _frames(1))], []) == "lease_lost"
    assert index.commit_import(DS, done, "w1", [(head, _v(head), _frames(1))], []) == "ok"
    events = _all(index)
    assert _types(events) == [
        "Import Job Submitted",
        "Import Job In Progress",
        "Image Set Created",
        "Import Job Completed",
    ]
    assert events[0].detail == {
        "imagingVersion": "1.0",
        "datastoreId": DS,
        "jobName": "job1",
        "jobId": job.id,
        "jobStatus": "SUBMITTED",
        "inputS3Uri": "s3://in/x/",
        "outputS3Uri": "s3://out/y/",
    }
    assert events[1].detail["jobStatus"] == "IN_PROGRESS" and events[1].time == 1000.0
    assert events[2].detail == {
        "imagingVersion": "1.0",
        "datastoreId": DS,
        "imageSetId": head.id,
        "imageSetState": "ACTIVE",
        "imageSetWorkflowStatus": "CREATED",
        "isPrimary": True,
    }
    assert events[2].image_set_id == head.id
    assert events[3].detail["jobStatus"] == "COMPLETED" and events[3].time == 2001.0


def test_a_rolled_back_change_leaves_no_event_and_no_gap(index: MetadataIndex) -> None:
    index.insert_job(_job())
    job = index.claim_job("w0", 1000.0, 30.0)
    assert job is not None
    first, second = _set(1), _set(2, primary=False)
    stale = replace(_v(first, 2, status="IMPORTED"), updated_at=1500.0)
    append = VersionCommit(first.id, stale, "ACTIVE", "IMPORTED", 1500.0, content_version=2)
    done = replace(job, status="COMPLETED", ended_at=2000.0)
    # the append names a set that does not exist: the creation before it rolls back with its event
    assert index.commit_import(DS, done, "w0", [(second, _v(second), [])], [(append, 1)]) == "conflict"
    assert _types(_all(index)) == ["Import Job Submitted", "Import Job In Progress"]
    assert index.commit_import(DS, done, "w0", [(first, _v(first), [])], []) == "ok"
    events = _all(index)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert _types(events)[2:] == ["Image Set Created", "Import Job Completed"]
    assert index.finish_job(replace(job, status="FAILED"), "w0") is False  # finished already: no event
    assert len(_all(index)) == 4


def test_a_failed_job_and_a_non_primary_set(index: MetadataIndex) -> None:
    index.insert_job(_job(2))
    job = index.claim_job("w0", 1000.0, 30.0)
    assert job is not None
    assert index.finish_job(replace(job, status="FAILED", ended_at=1200.0, message="no files"), "w0")
    head = _set(3, primary=False)
    assert index.commit_store(DS, [(head, _v(head), [])], []) == "ok"
    events = _all(index)
    assert _types(events) == [
        "Import Job Submitted",
        "Import Job In Progress",
        "Import Job Failed",
        "Image Set Created",
    ]
    assert events[2].detail["jobStatus"] == "FAILED"
    assert events[3].detail["isPrimary"] is False


def _updating(head: ImageSet, expected: int, new: int, now: float, status: str = "UPDATING") -> LockRequest:
    row = replace(_v(head, new, "LOCKED", status), updated_at=now, metadata_key=None)
    return LockRequest(head.id, expected, status, row)


def test_update_copy_and_delete_events(index: MetadataIndex) -> None:
    src, dest = _set(1), _set(2)
    index.create_image_set(src, _v(src), _frames(1))
    index.create_image_set(dest, _v(dest), _frames(2))
    # an update: Updating at the lock, Updated at the commit
    assert index.lock_image_sets(DS, [_updating(src, 1, 2, 3000.0)], 3000.0) is None
    assert index.lock_image_sets(DS, [_updating(src, 1, 2, 3001.0)], 3001.0) is not None  # stale: no event
    done = replace(_v(src, 2, "ACTIVE", "UPDATED"), updated_at=3002.0)
    index.commit_versions(DS, [VersionCommit(src.id, done, "ACTIVE", "UPDATED", 3002.0, content_version=2)])
    # a copy: the source read-only, the destination Copying, then Copied (the source's unlock: no event)
    source_lock = LockRequest(src.id, 2, "COPYING_WITH_READ_ONLY_ACCESS", None)
    assert index.lock_image_sets(DS, [source_lock, _updating(dest, 1, 2, 4000.0, "COPYING")], 4000.0) is None
    copied = replace(_v(dest, 2, "ACTIVE", "COPIED"), updated_at=4001.0)
    unlock = VersionCommit(src.id, None, "ACTIVE", "UPDATED", 3002.0)
    index.commit_versions(DS, [VersionCommit(dest.id, copied, "ACTIVE", "COPIED", 4001.0), unlock])
    # a copy into a new set that fails
    new = _set(3, state="LOCKED", status="COPYING")
    lock = LockRequest(src.id, 2, "COPYING_WITH_READ_ONLY_ACCESS", None)
    assert index.lock_image_sets(DS, [lock], 5000.0, [(new, _v(new))]) is None
    failed = replace(_v(new, 1, "ACTIVE", "COPY_FAILED"), updated_at=5001.0)
    index.commit_versions(DS, [VersionCommit(new.id, failed, "ACTIVE", "COPY_FAILED", 5001.0), unlock])
    # a delete
    assert index.lock_image_sets(DS, [_updating(dest, 2, 3, 6000.0, "DELETING")], 6000.0) is None
    gone = replace(_v(dest, 3, "DELETED", "DELETED"), updated_at=6001.0, deleted_at=6001.0)
    index.commit_versions(DS, [VersionCommit(dest.id, gone, "DELETED", "DELETED", 6001.0, deleted_at=6001.0)])
    events = _all(index)
    got = [
        (e.detail_type, e.image_set_id, e.detail["imageSetState"], e.detail["imageSetWorkflowStatus"])
        for e in events
    ]
    assert got == [
        ("Image Set Created", src.id, "ACTIVE", "CREATED"),
        ("Image Set Created", dest.id, "ACTIVE", "CREATED"),
        ("Image Set Updating", src.id, "LOCKED", "UPDATING"),
        ("Image Set Updated", src.id, "ACTIVE", "UPDATED"),
        ("Image Set Copying With Read Only Access", src.id, "LOCKED", "COPYING_WITH_READ_ONLY_ACCESS"),
        ("Image Set Copying", dest.id, "LOCKED", "COPYING"),
        ("Image Set Copied", dest.id, "ACTIVE", "COPIED"),
        ("Image Set Copying", new.id, "LOCKED", "COPYING"),
        ("Image Set Copying With Read Only Access", src.id, "LOCKED", "COPYING_WITH_READ_ONLY_ACCESS"),
        ("Image Set Copy Failed", new.id, "ACTIVE", "COPY_FAILED"),
        ("Image Set Deleting", dest.id, "LOCKED", "DELETING"),
        ("Image Set Deleted", dest.id, "DELETED", "DELETED"),
    ]
    assert [e.seq for e in events] == list(range(1, 13))
    assert [e.time for e in events][2:4] == [3000.0, 3002.0]
    assert all(set(e.detail) >= {"imagingVersion", "datastoreId", "imageSetId"} for e in events)


def test_feed_paging(index: MetadataIndex) -> None:
    for i in range(7):
        index.insert_datastore(Datastore(f"{i:032x}", f"d{i}", "CREATING", "HTJ2K", 100.0 + i, 100.0 + i))
    assert index.last_event_seq() == 7
    pages, after = [], 0
    while True:
        page = index.list_events(after, 3)
        if not page:
            break
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]
    assert index.list_events(7, 3) == []


def test_webhook_cursor_lease_and_backoff_state(index: MetadataIndex) -> None:
    index.insert_datastore(Datastore(DS, "x", "CREATING", "HTJ2K", 100.0, 100.0))
    cursor = index.claim_webhook("hook", "p1", 1000.0, 1030.0, from_end=True)
    assert cursor is not None and cursor.delivered_seq == 1  # this new webhook starts at the feed's end
    whole = index.claim_webhook("all", "p1", 1000.0, 1030.0)
    assert whole is not None and whole.delivered_seq == 0  # this one gets the whole feed
    assert index.claim_webhook("hook", "p2", 1010.0, 1040.0) is None  # one delivering process at a time
    assert index.claim_webhook("hook", "p1", 1010.0, 1040.0) is not None  # renewed by its owner
    index.set_datastore_status(DS, "ACTIVE", 1011.0)
    assert index.fail_webhook("hook", "p1", 1, 1012.0, "HTTP 503")
    assert index.fail_webhook("hook", "p2", 5, 9999.0, "not mine") is False
    again = index.claim_webhook("hook", "p2", 1041.0, 1070.0)  # p1's lease ran out
    assert again is not None
    assert (again.delivered_seq, again.attempts, again.next_attempt_at, again.last_error) == (
        1,
        1,
        1012.0,
        "HTTP 503",
    )
    assert index.advance_webhook("hook", "p1", 2) is False
    assert index.advance_webhook("hook", "p2", 2)
    index.release_webhook("hook", "p2")
    assert index.claim_webhook("hook", "p3", 1042.0, 1070.0) is not None  # released: taken at once
    state = index.webhook_cursors()[1]
    assert (state.name, state.delivered_seq, state.attempts, state.lease_owner) == ("hook", 2, 0, "p3")


def test_postgres_numbers_events_in_commit_order(pg_schemas: Any) -> None:
    """An event whose transaction commits after a later one is numbered after it: a reader that already
    read past the later one never skips it."""
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row

    from openhi.storage import events_sql
    from openhi.storage.postgres.index import PostgresIndex

    schema = pg_schemas.new()
    index = PostgresIndex(pg_schemas.url, schema=schema)
    try:
        with psycopg.connect(pg.URL, row_factory=dict_row) as slow:
            slow.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            with slow.cursor() as cur:  # opens a transaction: its event takes the lower id
                events_sql.datastore_changed(cur, events_sql.POSTGRES, "a" * 32, "slow", "CREATING", 1.0)
                index.insert_datastore(Datastore("b" * 32, "fast", "CREATING", "HTJ2K", 2.0, 2.0))
                first = index.list_events(0, 10)
                assert [(e.seq, e.detail["datastoreName"]) for e in first] == [(1, "fast")]
            slow.commit()
        later = index.list_events(first[-1].seq, 10)
        assert [(e.seq, e.detail["datastoreName"]) for e in later] == [(2, "slow")]
        assert index.last_event_seq() == 2
    finally:
        index.close()


@pytest.mark.parametrize("status", ["CREATING", "ACTIVE", "DELETING", "DELETED", "CREATE_FAILED"])
def test_every_datastore_status_has_its_aws_type(status: str) -> None:
    from openhi.storage.events_sql import DATASTORE_TYPES

    assert (
        DATASTORE_TYPES[status]
        == {
            "CREATING": "Data Store Creating",
            "ACTIVE": "Data Store Created",
            "DELETING": "Data Store Deleting",
            "DELETED": "Data Store Deleted",
            "CREATE_FAILED": "Data Store Creation Failed",
        }[status]
    )


def _datastores(index: MetadataIndex, n: int, at: float) -> None:
    """``n`` datastores created and activated at ``at``: 2 events each."""
    for i in range(n):
        index.insert_datastore(Datastore(f"{i:032x}"[-32:], f"r{i}", "CREATING", "HTJ2K", at, at))
        index.set_datastore_status(f"{i:032x}"[-32:], "ACTIVE", at)


def test_prune_removes_old_events_up_to_a_seq_but_never_the_last(index: MetadataIndex) -> None:
    _datastores(index, 3, at=100.0)  # seq 1..6 at time 100
    index.insert_datastore(Datastore("e" * 32, "new", "CREATING", "HTJ2K", 500.0, 500.0))  # seq 7 at 500
    assert index.prune_events(200.0, 4, 1000) == 4  # old and not after seq 4
    assert [e.seq for e in _all(index)] == [5, 6, 7]
    assert index.prune_events(200.0, 100, 1) == 1  # in batches
    assert index.prune_events(200.0, 100, 1000) == 1
    assert [e.seq for e in _all(index)] == [7]  # newer than the cut
    assert index.prune_events(1000.0, 100, 1000) == 0  # the last event stays, whatever its age
    assert index.last_event_seq() == 7
    index.set_datastore_status("e" * 32, "ACTIVE", 600.0)
    assert [e.seq for e in _all(index)] == [7, 8]  # numbering goes on after it, without a gap


def test_the_pruner_keeps_what_a_webhook_has_not_delivered(index: MetadataIndex) -> None:
    from openhi.core.env import Env
    from openhi.core.event_retention import EventPruner
    from openhi.core.settings import Settings

    now = [1000.0]
    env = Env(Settings(event_retention_seconds=100.0), index, None, None, None, clock=lambda: now[0])  # type: ignore[arg-type]
    _datastores(index, 3, at=500.0)  # seq 1..6, old by 400 s
    pruner = EventPruner(env, ["hook"])
    assert pruner.run_once() == 0  # the webhook has no cursor yet: it would get the feed from its start
    assert index.claim_webhook("hook", "me", now[0], now[0] + 30) is not None
    assert index.advance_webhook("hook", "me", 3)
    assert pruner.run_once() == 3  # what the webhook has delivered
    assert [e.seq for e in _all(index)] == [4, 5, 6]
    assert index.advance_webhook("hook", "me", 6)
    assert pruner.run_once() == 2  # the last event stays
    assert EventPruner(env).run_once() == 0
    kept = replace(Settings(), event_retention_seconds=0.0)
    assert EventPruner(Env(kept, index, None, None, None)).start()._thread is None  # type: ignore[arg-type]
