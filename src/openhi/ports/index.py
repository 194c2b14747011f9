"""The MetadataIndex port: rows for datastores, tags, jobs, image sets, versions and frame references."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from openhi.core.records import Datastore, FrameRef, ImageSet, ImageSetVersion, ImportJob

if TYPE_CHECKING:
    from openhi.core.dicom_query import DicomQuery
    from openhi.dicom.index_rows import DicomRows


@dataclass
class LockRequest:
    """Lock one image set for a write, conditional on its latest version.

    ``new_version`` (a LOCKED row) is inserted and becomes the latest version; when it is ``None``
    (a copy source) the head is locked without a new version.
    """

    image_set_id: str
    expected_latest: int
    head_status: str
    new_version: ImageSetVersion | None = None


@dataclass
class VersionCommit:
    """Finish (or append) a version: its final row, the head's new fields and the frames it adds."""

    image_set_id: str
    version: ImageSetVersion | None
    head_state: str
    head_status: str
    updated_at: float
    content_version: int | None = None
    search: dict[str, Any] | None = None
    #: the DICOM index rows of the new content (with ``search``: the study / series / instance index)
    dicom: DicomRows | None = None
    is_primary: bool | None = None
    deleted_at: float | None = None
    touch: bool = False
    frames: list[FrameRef] = field(default_factory=list)
    # a delete: drop the set's frame references and queue its frame and metadata blobs for collection
    collect: bool = False


@dataclass
class SearchFilter:
    """One normalised filter: ``attribute`` is an index column name, ``values`` one (EQUAL) or two (BETWEEN)."""

    attribute: str
    operator: str
    values: list[Any]


@dataclass
class SearchQuery:
    filters: list[SearchFilter]
    sort_field: str  # column: updated_at | created_at | study_datetime
    sort_order: str  # ASC | DESC


@dataclass
class StoredEvent:
    """One event of the outbox: AWS's detail-type and detail, numbered ``seq`` in commit order."""

    seq: int
    time: float
    detail_type: str
    datastore_id: str
    image_set_id: str | None
    detail: dict[str, Any]


@dataclass
class WebhookCursor:
    """A webhook's delivery state: every event up to ``delivered_seq`` is delivered (or filtered out)."""

    name: str
    delivered_seq: int
    attempts: int  # failed attempts at the next event
    next_attempt_at: float  # no attempt before this time (backoff)
    last_error: str | None = None
    lease_owner: str | None = None


class MetadataIndex(Protocol):
    """Everything the core stores in the index. Adapters: SQLite (embedded), PostgreSQL (scale)."""

    # -- meta
    def get_meta(self, key: str) -> str | None: ...
    def set_meta_if_absent(self, key: str, value: str) -> str: ...

    # -- datastores
    def insert_datastore(self, ds: Datastore) -> Datastore: ...
    def get_datastore(self, datastore_id: str) -> Datastore | None: ...
    def list_datastores(
        self, status: str | None, after: tuple[float, str] | None, limit: int
    ) -> list[Datastore]: ...
    def set_datastore_status(self, datastore_id: str, status: str, now: float) -> None: ...
    def count_datastores(self, statuses: Sequence[str]) -> int: ...

    # -- tags
    def get_tags(self, resource_arn: str) -> dict[str, str]: ...
    def put_tags(self, resource_arn: str, tags: dict[str, str]) -> None: ...
    def remove_tags(self, resource_arn: str, keys: Sequence[str]) -> None: ...

    # -- import jobs
    def insert_job(self, job: ImportJob) -> ImportJob: ...
    def get_job(self, datastore_id: str, job_id: str) -> ImportJob | None: ...
    def list_jobs(
        self, datastore_id: str, status: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[ImportJob]: ...
    def update_job(self, job: ImportJob) -> None: ...
    def count_jobs(self, datastore_id: str, statuses: Sequence[str]) -> int: ...
    def jobs_in_status(self, statuses: Sequence[str]) -> list[ImportJob]: ...

    # -- image sets
    def create_image_set(self, head: ImageSet, version: ImageSetVersion, frames: list[FrameRef]) -> None: ...
    def get_image_set(self, datastore_id: str, image_set_id: str) -> ImageSet | None: ...
    def get_version(self, datastore_id: str, image_set_id: str, version: int) -> ImageSetVersion | None: ...
    def list_versions(
        self, datastore_id: str, image_set_id: str, before: int | None, limit: int
    ) -> list[ImageSetVersion]: ...
    def get_frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> FrameRef | None: ...
    def list_frames(self, datastore_id: str, image_set_id: str) -> list[FrameRef]: ...
    def find_primary(self, datastore_id: str, study_uid: str, series_uid: str) -> ImageSet | None: ...
    def list_primary_in_study(self, datastore_id: str, study_uid: str) -> list[ImageSet]: ...
    def count_image_sets(self, datastore_id: str) -> int: ...
    def lock_image_sets(
        self,
        datastore_id: str,
        locks: list[LockRequest],
        now: float,
        creates: Sequence[tuple[ImageSet, ImageSetVersion]] = (),
    ) -> ImageSet | None:
        """Apply every lock, and create every (LOCKED) new image set of ``creates``, atomically. On a stale
        version or a locked set, change nothing and return that set's current head (the caller raises
        ConflictException); return None on success."""
        ...

    def commit_versions(self, datastore_id: str, commits: list[VersionCommit]) -> None:
        """Finish locked versions (and unlock copy sources) atomically."""
        ...

    def append_version(self, datastore_id: str, commit: VersionCommit, expected_latest: int) -> bool:
        """Add a finished version to an ACTIVE set whose latest is ``expected_latest`` (imports)."""
        ...

    def locked_versions(self) -> list[ImageSetVersion]: ...
    def locked_image_sets(self) -> list[ImageSet]: ...
    def touch_image_sets(self, datastore_id: str, image_set_ids: Sequence[str], now: float) -> None: ...
    def archive_idle(self, cutoff: float) -> int: ...
    def search_image_sets(
        self, datastore_id: str, query: SearchQuery, after: tuple[Any, str] | None, limit: int
    ) -> list[ImageSet]: ...

    # -- blob collection
    def enqueue_gc(self, blob_keys: Sequence[str], now: float) -> None: ...
    def claim_gc(self, limit: int) -> list[str]: ...
    def blob_referenced(self, blob_key: str) -> bool:
        """True while a frame reference, or a version of a set that is not DELETED, points at the blob."""
        ...

    def forget_gc(self, blob_keys: Sequence[str]) -> None: ...
    def remove_frame_refs(self, image_set_id: str) -> list[str]: ...

    def close(self) -> None: ...

    # -- import-job queue (leases): any number of workers, in any process, share the SUBMITTED jobs
    def claim_job(self, worker_id: str, now: float, lease_seconds: float) -> ImportJob | None:
        """Take the oldest SUBMITTED job, or an IN_PROGRESS one whose lease expired (its worker died):
        mark it IN_PROGRESS, owned by ``worker_id`` until ``now + lease_seconds``; None when there is none."""
        ...

    def renew_job_lease(self, job_id: str, worker_id: str, until: float) -> bool:
        """Extend the lease while ``worker_id`` still owns the running job; False once it lost it."""
        ...

    def finish_job(self, job: ImportJob, worker_id: str) -> bool:
        """Write the job's final status, message and end time, if ``worker_id`` still owns it."""
        ...

    def commit_import(
        self,
        datastore_id: str,
        job: ImportJob,
        worker_id: str,
        creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]],
        appends: list[tuple[VersionCommit, int]],
    ) -> str:
        """One transaction: check that ``worker_id`` owns the job, create every new image set, append
        every version (conditional on its expected latest version) and mark the job COMPLETED.

        Returns "ok"; "lease_lost" (another worker owns the job now); or "conflict" (an appended set moved
        on, or another primary set of the series appeared): nothing was changed.
        """
        ...

    # -- DICOM study / series / instance index of the live primary image sets (QIDO-RS, WADO-RS, C-FIND).
    # Rows are dicts keyed by openhi.core.dicom_query column names (see DicomQuery's contract there).
    def dicom_studies(self, query: DicomQuery) -> list[dict[str, Any]]:
        """Studies matching ``query`` (level STUDY), newest update first, ``query.offset``/``limit`` applied."""
        ...

    def dicom_series(self, query: DicomQuery) -> list[dict[str, Any]]:
        """Series matching ``query`` (level SERIES), by SeriesNumber then UID; each with its study's columns."""
        ...

    def dicom_instances(self, query: DicomQuery) -> list[dict[str, Any]]:
        """Instances matching ``query`` (level INSTANCE), by InstanceNumber then UID; with study and series
        columns, ``image_set_id``, ``frame_ids`` (list) and ``stored_ts``."""
        ...

    def dicom_instance(
        self, datastore_id: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> dict[str, Any] | None:
        """One instance of the live primary image set of its series (the row of :meth:`dicom_instances`)."""
        ...

    def dicom_instance_frames(
        self, datastore_id: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> tuple[list[str], str | None, str] | None:
        """The WADO-RS frame hot path: (frame ids, stored transfer syntax, image set id) of the instance
        :meth:`dicom_instance` finds."""
        ...

    def dicom_unindexed(self, after: str, limit: int) -> list[ImageSet]:
        """Up to ``limit`` image sets (by id, after ``after``) with content but no DICOM index rows: sets
        written before the index existed."""
        ...

    def dicom_reindex(
        self, datastore_id: str, image_set_id: str, content_version: int, rows: DicomRows
    ) -> bool:
        """Write the DICOM index rows of a set's content ``content_version``; False (nothing written) when
        the set changed since."""
        ...

    def commit_store(
        self,
        datastore_id: str,
        creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]],
        appends: list[tuple[VersionCommit, int]],
    ) -> str:
        """:meth:`commit_import` without a job (STOW-RS, C-STORE): "ok" or "conflict" (nothing changed)."""
        ...

    # -- GetImageFrame hot path
    #: True when reads are in-process and short (SQLite), so an app may run frame lookups on its event loop
    local_reads: bool

    def get_frame_for_read(
        self, datastore_id: str, image_set_id: str, frame_id: str
    ) -> tuple[str, FrameRef | None] | None:
        """One read for GetImageFrame: the image set's state and the frame reference. None when the image
        set does not exist in the datastore; ``(state, None)`` when it does but references no ``frame_id``."""
        ...

    # -- write owners: which live process finishes each LOCKED write (recovery with several API processes)
    def beat_write_owner(self, owner: str, now: float, stale_at: float) -> None:
        """Register ``owner`` (a process that finishes writes) or renew its heartbeat; it counts as dead
        from ``stale_at`` on unless it beats again."""
        ...

    def record_write_locks(self, owner: str, keys: Sequence[tuple[str, int]], now: float) -> None:
        """Note that ``owner`` finishes the write locking these ``(image_set_id, version)``: a new LOCKED
        version, or a copy source's head at its latest version. Written before the lock is taken."""
        ...

    def release_write_locks(self, owner: str, keys: Sequence[tuple[str, int]]) -> None:
        """Forget ``owner``'s notes on these keys (the write committed, or its lock was not taken)."""
        ...

    def orphaned_versions(self, now: float, unowned_before: float) -> list[ImageSetVersion]:
        """LOCKED versions no live owner finishes: every owner noted for it is dead at ``now``, or none is
        registered and it was locked before ``unowned_before``."""
        ...

    def orphaned_image_sets(self, now: float, unowned_before: float) -> list[ImageSet]:
        """LOCKED heads whose latest version is not LOCKED (copy sources) that no live owner finishes, by the
        rule of :meth:`orphaned_versions` (``updated_at`` stands for the lock time of an unnoted head)."""
        ...

    def forget_dead_write_owners(self, now: float, unowned_before: float) -> None:
        """Drop the notes of dead owners on what is no longer LOCKED, and dead owners with no notes left."""
        ...

    # -- events: an outbox written in the transaction of each state change (storage/events_sql.py)
    def list_events(self, after: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` events with ``seq > after``, in ``seq`` order. The sequence is gap-free and in
        commit order: an event that is not listed yet is numbered after every listed one."""
        ...

    def last_event_seq(self) -> int:
        """The highest ``seq`` numbered so far (0: none)."""
        ...

    def prune_events(self, before: float, through_seq: int, limit: int) -> int:
        """Delete up to ``limit`` of the oldest numbered events written before ``before`` with ``seq`` at most
        ``through_seq``; never the last event (the feed's numbering goes on after it). How many went."""
        ...

    def claim_webhook(
        self, name: str, owner: str, now: float, until: float, from_end: bool = False
    ) -> WebhookCursor | None:
        """Register webhook ``name`` unless it is known (its cursor starts before the feed's first event, or
        with ``from_end`` at its current end), and take or renew its delivery lease for ``owner`` until
        ``until``; its cursor, or None while another live owner holds the lease."""
        ...

    def advance_webhook(self, name: str, owner: str, seq: int) -> bool:
        """Every event up to ``seq`` is delivered: move the cursor, clear the failures (while ``owner``
        holds the lease; False otherwise)."""
        ...

    def fail_webhook(self, name: str, owner: str, attempts: int, next_attempt_at: float, error: str) -> bool:
        """Record a failed attempt at the event after the cursor (while ``owner`` holds the lease)."""
        ...

    def release_webhook(self, name: str, owner: str) -> None:
        """Give the lease back (shutting down) so another process takes over at once."""
        ...

    def webhook_cursors(self) -> list[WebhookCursor]:
        """Every registered webhook's cursor, by name (backlog = :meth:`last_event_seq` - delivered_seq)."""
        ...
