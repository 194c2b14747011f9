"""Versioned writes: the lock → answer → finish-in-background protocol, update, delete and crash recovery."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from openhi.core import copies
from openhi.core.collector import BlobCollector
from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.errors import ConflictError, NotFoundError, ValidationError
from openhi.core.ids import new_id
from openhi.core.keys import metadata_key
from openhi.core.messages import modeled_message
from openhi.core.pending import Pending
from openhi.core.records import ImageSet, ImageSetVersion
from openhi.core.updates import apply_updates, parse_updates, sibling_updates, study_level_changed
from openhi.dicom.document import decode_document, encode_document, search_tags
from openhi.dicom.index_rows import index_rows
from openhi.ports.index import LockRequest, VersionCommit

Key = tuple[
    str, int
]  # (image_set_id, version): a LOCKED version, or a copy source's head at its latest version

log = logging.getLogger("openhi.writes")

# Test hook: seconds the background half of every write sleeps before it commits (crash tests).
DELAY_ENV = "OPENHI_TEST_WRITE_DELAY_SECONDS"
RESTART_MESSAGE = (
    "INTERNAL_ERROR:  the server stopped before the operation finished, the previous version is unchanged."
)
DONE = {"UPDATING": "UPDATED", "UPDATING_FOR_STUDY_CONSISTENCY": "UPDATED", "COPYING": "COPIED"}
FAILED = {
    "UPDATING": "UPDATE_FAILED",
    "UPDATING_FOR_STUDY_CONSISTENCY": "UPDATE_FAILED",
    "COPYING": "COPY_FAILED",
}


class ImageSetWriter:
    def __init__(self, env: Env, datastores: DatastoreService) -> None:
        self.env = env
        self.datastores = datastores
        self.collector = BlobCollector(env)
        # this process's id in the index's registry of write owners (heartbeats)
        self.owner = new_id()
        self._notes: dict[Key, list[Key]] = {}  # new LOCKED version → every key its write noted
        self._notes_lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ------------------------------------------------------------------ shared protocol helpers
    def head(self, datastore_id: str, image_set_id: str) -> ImageSet:
        head = self.env.index.get_image_set(datastore_id, image_set_id)
        if head is None:
            raise NotFoundError(f"Image set {image_set_id} does not exist in datastore {datastore_id}.")
        return head

    @staticmethod
    def conflict(head: ImageSet, expected: int | None) -> ConflictError | None:
        """The ConflictError a write on ``head`` naming ``expected`` as latest version meets, if any."""
        if head.state == "DELETED":
            return ConflictError(f"ImageSet {head.id} has been deleted.")
        if head.state == "LOCKED":
            return ConflictError(
                f"ImageSet {head.id} is locked by an operation in progress ({head.workflow_status})."
            )
        if expected is not None and head.latest_version != expected:
            return ConflictError(
                f"ImageSet {head.id} has latest version {head.latest_version}; the request named {expected}."
            )
        return None

    def writable(self, head: ImageSet, expected: int | None) -> None:
        error = self.conflict(head, expected)
        if error is not None:
            raise error

    def content_key(self, head: ImageSet) -> str | None:
        if head.content_version < 1:
            return None
        row = self.env.index.get_version(head.datastore_id, head.id, head.content_version)
        return None if row is None else row.metadata_key

    def load(self, head: ImageSet) -> dict[str, Any]:
        key = self.content_key(head)
        if key is None:
            raise ConflictError(f"ImageSet {head.id} has no metadata yet.")
        return decode_document(self.env.blobs.get(key))

    def new_row(self, head: ImageSet, status: str, *, forced: bool = False) -> ImageSetVersion:
        now = self.env.clock()
        return ImageSetVersion(
            datastore_id=head.datastore_id,
            image_set_id=head.id,
            version=head.latest_version + 1,
            state="LOCKED",
            workflow_status=status,
            created_at=head.created_at,
            updated_at=now,
            is_primary=head.is_primary,
            metadata_key=None,
            forced=forced,
        )

    def lock(
        self,
        datastore_id: str,
        locks: list[LockRequest],
        creates: Sequence[tuple[ImageSet, ImageSetVersion]] = (),
    ) -> None:
        """Take every lock with one conditional write.

        Raises:
            ConflictError: a set is locked, deleted, or its latest version is not the one expected.
            NotFoundError: a set disappeared.
        """
        lost = self._lock_owned(datastore_id, locks, creates)
        if lost is None:
            return
        expected = next((lk.expected_latest for lk in locks if lk.image_set_id == lost.id), None)
        error = self.conflict(lost, expected)
        raise error or ConflictError(f"ImageSet {lost.id} changed while the request was processed; retry.")

    def _lock_owned(
        self,
        datastore_id: str,
        locks: list[LockRequest],
        creates: Sequence[tuple[ImageSet, ImageSetVersion]] = (),
    ) -> ImageSet | None:
        """``index.lock_image_sets``, with this process noted as the owner of every lock *before* it is
        taken (so no other process ever sees the lock without a live owner); the notes go if it is not."""
        versions = [(lk.image_set_id, lk.new_version.version) for lk in locks if lk.new_version is not None]
        versions += [(head.id, row.version) for head, row in creates]
        keys = versions + [(lk.image_set_id, lk.expected_latest) for lk in locks if lk.new_version is None]
        index = self.env.index
        index.record_write_locks(self.owner, keys, self.env.clock())
        taken = False
        try:
            lost = index.lock_image_sets(datastore_id, locks, self.env.clock(), creates)
            taken = lost is None
        finally:
            if not taken:
                index.release_write_locks(self.owner, keys)
        with self._notes_lock:
            for key in versions:
                self._notes[key] = keys
        return lost

    def _release(self, keys: list[Key]) -> None:
        """Forget this process's notes on a finished write's locks (they are no longer LOCKED)."""
        with self._notes_lock:
            noted = {k: None for key in keys for k in self._notes.pop(key, [key])}
        try:
            self.env.index.release_write_locks(self.owner, list(noted))
        except Exception:  # a leftover note on an unlocked key is harmless; the sweep drops it later
            log.exception("could not release the write notes of %s", keys)

    def finish_later(self, datastore_id: str, pendings: list[Pending], extra: list[VersionCommit]) -> None:
        """Run the background half: write new documents, then commit every version in one transaction."""
        name = f"write-{pendings[0].row.image_set_id}-{pendings[0].row.version}"
        self.env.tasks.submit(name, lambda: self._finish(datastore_id, pendings, extra))

    def _finish(self, datastore_id: str, pendings: list[Pending], extra: list[VersionCommit]) -> None:
        try:
            self._finish_write(datastore_id, pendings, extra)
        finally:
            self._release([(p.row.image_set_id, p.row.version) for p in pendings])

    def _finish_write(self, datastore_id: str, pendings: list[Pending], extra: list[VersionCommit]) -> None:
        _test_delay()
        try:
            commits = [self._commit_for(datastore_id, p) for p in pendings]
            self.env.index.commit_versions(datastore_id, commits + extra)
        except Exception as exc:
            log.exception("write %s failed", pendings[0].row.image_set_id)
            message = f"INTERNAL_ERROR:  {type(exc).__name__}: {exc}"
            failed = [self._failure(replace(p, fail_message=p.fail_message or message)) for p in pendings]
            self.env.index.commit_versions(datastore_id, failed + extra)
            self.env.index.enqueue_gc(
                [metadata_key(datastore_id, p.row.image_set_id, p.row.version) for p in pendings],
                self.env.clock(),
            )

    def _commit_for(self, datastore_id: str, p: Pending) -> VersionCommit:
        if p.fail_message is not None:
            return self._failure(p)
        row = p.row
        key = p.reuse_key
        if key is None:
            assert p.doc is not None
            key = metadata_key(datastore_id, row.image_set_id, row.version)
            self.env.blobs.put(key, encode_document(p.doc))  # the blob before the index row points at it
        now = self.env.clock()
        status = DONE[row.workflow_status]
        return VersionCommit(
            image_set_id=row.image_set_id,
            version=replace(row, state="ACTIVE", workflow_status=status, updated_at=now, metadata_key=key),
            head_state="ACTIVE",
            head_status=status,
            updated_at=now,
            content_version=row.version,
            search=p.search,
            dicom=p.dicom,
            touch=True,
            frames=p.frames,
        )

    def _failure(self, p: Pending) -> VersionCommit:
        now = self.env.clock()
        status = FAILED[p.row.workflow_status]
        row = replace(
            p.row,
            state="ACTIVE",
            workflow_status=status,
            updated_at=now,
            metadata_key=p.prev_key,
            message=None if p.fail_message is None else modeled_message(p.fail_message),
        )
        # a copy into a new set that failed has no content at all: keep it out of attribute searches
        search: dict[str, Any] | None = {} if p.prev_key is None else None
        return VersionCommit(row.image_set_id, row, "ACTIVE", status, now, search=search)

    # ------------------------------------------------------------------ UpdateImageSetMetadata
    def update(
        self,
        datastore_id: str,
        image_set_id: str,
        *,
        latest_version: int,
        force: bool = False,
        include_study: bool = False,
        updatable: bytes | None = None,
        removable: bytes | None = None,
        revert_to: int | None = None,
    ) -> ImageSetVersion:
        """Start an update (or a revert); return the new LOCKED/UPDATING version of the requested set.

        Raises:
            ValidationError: malformed DICOMUpdates, a broken §4.3 constraint, union misuse.
            QuotaExceededError: DICOMUpdates larger than the payload quota.
            NotFoundError: no such datastore, image set, or revert target version.
            ConflictError: datastore not ACTIVE, set locked/deleted, or ``latest_version`` stale.
        """
        self.datastores.require_active(datastore_id)
        has_updates = bool(updatable or removable)
        if revert_to is not None and has_updates:
            raise ValidationError("Give either DICOMUpdates or revertToVersionId, not both.")
        if revert_to is not None and include_study:
            raise ValidationError("includeStudyImageSets is not supported with revertToVersionId.")
        updates = (
            None
            if revert_to is not None
            else parse_updates(updatable, removable, self.env.settings.max_update_payload_bytes)
        )
        head = self.head(datastore_id, image_set_id)
        self.writable(head, latest_version)
        row = self.new_row(head, "UPDATING", forced=force)
        pendings = [Pending(row, self.content_key(head))]
        locks = [LockRequest(head.id, head.latest_version, "UPDATING", row)]
        if updates is None:
            assert revert_to is not None
            target = self.env.index.get_version(datastore_id, image_set_id, revert_to)
            if target is None:
                raise NotFoundError(f"ImageSet {image_set_id} has no version {revert_to}.")
            if target.state == "LOCKED" or target.metadata_key is None:
                raise ConflictError(
                    f"Version {revert_to} of ImageSet {image_set_id} has no content to revert to."
                )
            doc = decode_document(self.env.blobs.get(target.metadata_key))
            pendings[0].reuse_key = target.metadata_key
            pendings[0].search, pendings[0].dicom = search_tags(doc), index_rows(doc)
        else:
            new_doc = apply_updates(self.load(head), updates, force=force, primary=head.is_primary)
            pendings[0].doc, pendings[0].search = new_doc, search_tags(new_doc)
            pendings[0].dicom = index_rows(new_doc)
            if head.is_primary and study_level_changed(updates):
                for sibling in self._siblings(head, include_study):
                    self.writable(sibling, sibling.latest_version)
                    sdoc = self.load(sibling)
                    srow = self.new_row(sibling, "UPDATING_FOR_STUDY_CONSISTENCY", forced=force)
                    snew = apply_updates(
                        sdoc, sibling_updates(updates, sdoc), force=force, primary=True, allow_empty=True
                    )
                    pending = Pending(
                        srow,
                        self.content_key(sibling),
                        snew,
                        search=search_tags(snew),
                        dicom=index_rows(snew),
                    )
                    pendings.append(pending)
                    locks.append(LockRequest(sibling.id, sibling.latest_version, srow.workflow_status, srow))
        self.lock(datastore_id, locks)
        self.finish_later(datastore_id, pendings, [])
        return row

    def _siblings(self, head: ImageSet, include_study: bool) -> list[ImageSet]:
        study_uid = head.search.get("DICOMStudyInstanceUID")
        if not study_uid:
            return []
        others = [
            s for s in self.env.index.list_primary_in_study(head.datastore_id, study_uid) if s.id != head.id
        ]
        if others and not include_study:
            raise ValidationError(
                f"ImageSet {head.id} is a primary image set and {len(others)} other primary image set(s) share its "
                "StudyInstanceUID; pass includeStudyImageSets=true to update the Study level of all of them."
            )
        return others

    # ------------------------------------------------------------------ CopyImageSet
    def copy(self, datastore_id: str, source_id: str, **kwargs: Any) -> copies.CopyStarted:
        """Start a copy; see :func:`openhi.core.copies.start_copy` for the parameters and errors."""
        return copies.start_copy(self, datastore_id, source_id, **kwargs)

    # ------------------------------------------------------------------ DeleteImageSet
    def delete(self, datastore_id: str, image_set_id: str) -> ImageSet:
        """Start deleting; return the head as the response shows it (LOCKED/DELETING, or DELETED if done).

        Raises:
            NotFoundError: no such datastore or image set.
            ConflictError: datastore not ACTIVE, or the set is locked by another operation.
        """
        self.datastores.require_active(datastore_id)
        for _ in range(5):
            head = self.head(datastore_id, image_set_id)
            if head.state == "DELETED":
                return head
            self.writable(head, None)
            row = self.new_row(head, "DELETING")
            lost = self._lock_owned(
                datastore_id, [LockRequest(head.id, head.latest_version, "DELETING", row)]
            )
            if lost is None:
                self._delete_later(row, self.content_key(head))
                return replace(head, state="LOCKED", workflow_status="DELETING", latest_version=row.version)
            if lost.state != "ACTIVE":
                continue  # locked or deleted meanwhile: the next round reports it
        raise ConflictError(f"ImageSet {image_set_id} keeps changing; retry the delete.")

    def _delete_later(self, row: ImageSetVersion, prev_key: str | None) -> None:
        def finish() -> None:
            try:
                self._finish_delete(row, prev_key, delay=True)
            finally:
                self._release([(row.image_set_id, row.version)])

        self.env.tasks.submit(f"delete-{row.image_set_id}", finish)

    def _finish_delete(self, row: ImageSetVersion, prev_key: str | None, *, delay: bool) -> None:
        if delay:
            _test_delay()
        now = self.env.clock()
        final = replace(
            row,
            state="DELETED",
            workflow_status="DELETED",
            updated_at=now,
            deleted_at=now,
            metadata_key=prev_key,
        )
        commit = VersionCommit(
            row.image_set_id, final, "DELETED", "DELETED", now, deleted_at=now, collect=True
        )
        self.env.index.commit_versions(row.datastore_id, [commit])

    # ------------------------------------------------------------------ recovery
    def recover(self) -> None:
        """At start: register this process as a write owner, recover the writes of dead processes (see
        :meth:`sweep`), then keep beating and sweeping every ``write_heartbeat_seconds`` in a daemon thread
        and start the background blob collector."""
        self.beat()
        self.sweep()
        self.collector.start()
        if self._heartbeat is None:
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat_loop, name="openhi-write-owner", daemon=True)
            self._heartbeat.start()

    def beat(self) -> None:
        """Renew this process's heartbeat: it counts as dead once three beats are missed."""
        now = self.env.clock()
        self.env.index.beat_write_owner(self.owner, now, now + 3 * self.env.settings.write_heartbeat_seconds)

    def sweep(self) -> int:
        """Fail the writes no live process finishes any more; return how many locks were recovered.

        A LOCKED version is orphaned when every process noted as finishing it missed three heartbeats, or
        when none is noted and it was locked more than ``3 × heartbeat + 10`` seconds ago. An orphaned
        version ends ``*_FAILED`` with :data:`RESTART_MESSAGE` (a delete is finished instead); an orphaned
        copy source (a head still LOCKED) returns to the status of its latest version. The writes of live
        processes (this one included) are never touched.
        """
        index = self.env.index
        now = self.env.clock()
        before = now - (3 * self.env.settings.write_heartbeat_seconds + 10.0)
        recovered = 0
        for row in index.orphaned_versions(now, before):
            head = index.get_image_set(row.datastore_id, row.image_set_id)
            current = index.get_version(row.datastore_id, row.image_set_id, row.version)
            if head is None or current is None or current.state != "LOCKED":
                continue  # another process recovered it meanwhile
            prev = self.content_key(head)
            recovered += 1
            log.warning("recovering %s version %d (%s)", row.image_set_id, row.version, row.workflow_status)
            if row.workflow_status == "DELETING":
                self._finish_delete(row, prev, delay=False)
                continue
            failure = self._failure(
                Pending(replace(row, workflow_status=_in_progress(row)), prev, fail_message=RESTART_MESSAGE)
            )
            index.commit_versions(row.datastore_id, [failure])
            orphan = metadata_key(row.datastore_id, row.image_set_id, row.version)
            if orphan != prev:
                index.enqueue_gc([orphan], self.env.clock())
        for head in index.orphaned_image_sets(now, before):
            latest = index.get_version(head.datastore_id, head.id, head.latest_version)
            status = latest.workflow_status if latest is not None else "CREATED"
            recovered += 1
            log.warning("unlocking copy source %s (%s)", head.id, head.workflow_status)
            index.commit_versions(
                head.datastore_id, [VersionCommit(head.id, None, "ACTIVE", status, head.updated_at)]
            )
        index.forget_dead_write_owners(now, before)
        return recovered

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.env.settings.write_heartbeat_seconds):
            try:
                self.beat()
                self.sweep()
            except Exception:  # the index may be closing or unreachable; try again next beat
                log.exception("write heartbeat or recovery sweep failed")

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5.0)
            self._heartbeat = None
        self.collector.stop()


def _in_progress(row: ImageSetVersion) -> str:
    return row.workflow_status if row.workflow_status in FAILED else "UPDATING"


def _test_delay() -> None:
    """The test hook: sleep ``OPENHI_TEST_WRITE_DELAY_SECONDS`` before a background half commits."""
    seconds = float(os.environ.get(DELAY_ENV) or 0)
    if seconds > 0:
        time.sleep(seconds)
