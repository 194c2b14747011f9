"""What every store of DICOM files shares (import jobs, STOW-RS): file results filed, then grouped into image sets.

:class:`InstanceGrouper` files each processed file's result in input order (failures, duplicates),
and plans one commit attempt against the primary image sets of the moment (§7.3): merge into the
series' primary, create a new primary, or a non-primary set on a conflict. The caller commits the
plan (``commit_import`` with a job, ``commit_store`` without) and plans again after a race.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from openhi.core.env import Env
from openhi.core.ids import new_id
from openhi.core.import_plan import Plan, conflict_keys, doc_conflict_keys, record_placement
from openhi.core.import_reports import Outcome, failure_entry
from openhi.core.keys import frame_key, metadata_key
from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.dicom.document import (
    build_document,
    decode_document,
    encode_document,
    merge_instances,
    search_tags,
)
from openhi.dicom.index_rows import index_rows
from openhi.dicom.instance import InstanceRejected, ProcessedInstance
from openhi.ports.index import VersionCommit
from openhi.ports.objects import BucketNotFound, ObjectInfo, ObjectNotFound, ObjectStore

log = logging.getLogger("openhi.import")

UNEXPECTED = "Unexpected error while importing the file: {}"
DENIED = "Reading the file was refused: {}"
DUPLICATE = (
    "Duplicate SOPInstanceUID {} of {}, which is imported: the first file of a SOP Instance in key "
    "order wins, a later file with different content is not imported"
)
SET_TOO_LARGE = "The image set's metadata would be {} bytes as JSON, over the maximum of {} bytes"

#: The metadata document of one image set may be at most this large (JSON, before compression).
MAX_IMAGE_SET_METADATA_BYTES = 50 * 1024 * 1024
#: How often frames written so far are flushed in the background while files are transcoded.
FLUSH_SECONDS = 0.5


class InstanceGrouper:
    """One batch of files into one datastore: their outcome, and the plan that places them."""

    def __init__(self, env: Env, datastore_id: str, label: str) -> None:
        self.env = env
        self.datastore_id = datastore_id
        self.label = label  # names the batch in log lines ("import job …", "STOW-RS …")
        self.outcome = Outcome()
        self._input: tuple[ObjectStore, str] | None = None  # (store, bucket) the files are read from
        #: instances the last plan leaves as the primary stores them already (see :meth:`_changing`)
        self.unchanged: list[ProcessedInstance] = []

    def max_metadata_bytes(self) -> int:
        """The largest image set document (JSON bytes) a plan may write."""
        return MAX_IMAGE_SET_METADATA_BYTES

    @contextlib.contextmanager
    def _flushing(self) -> Iterator[None]:
        """While pixel workers write frames, flush the blob store every ``FLUSH_SECONDS`` in the background.

        Durability is unchanged (the commit flushes before any row points at a frame); the flush it
        waits for then finds only the last moments' frames still to write instead of the whole batch's.
        """
        if self.env.pixel_pool is None:
            yield
            return
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(FLUSH_SECONDS):
                try:
                    self.env.blobs.flush()
                except Exception:  # the commit's own flush reports a real problem
                    log.warning("%s: background flush failed", self.label, exc_info=True)

        threading.Thread(target=loop, name="openhi-import-flush", daemon=True).start()
        try:
            yield
        finally:
            stop.set()  # a flush in progress ends by itself; the commit's flush covers everything

    # -- filing each file's result
    def _record(
        self,
        info: ObjectInfo,
        result: ProcessedInstance | BaseException,
        matched: set[int],
        seen: dict[str, tuple[str, ProcessedInstance]],
    ) -> None:
        """File the result of one file, in input order: the first file of a SOP Instance UID wins."""
        if isinstance(result, InstanceRejected):
            matched.update(result.mappings)
            self.outcome.fail(info.key, result.exception_type, result.message)
            return
        if isinstance(result, PermissionError):  # the input's store refused the read (owner check)
            self.outcome.fail(info.key, "AccessDeniedException", DENIED.format(result))
            return
        if isinstance(result, BaseException):
            log.warning("%s: %s failed: %r", self.label, info.key, result)
            self.outcome.fail(info.key, "InternalServerException", UNEXPECTED.format(result))
            return
        matched.update(result.mappings)
        first = seen.get(result.sop_uid)
        if first is None:
            seen[result.sop_uid] = (info.key, result)
            self.outcome.success.append((info.key, result))
            return
        self._drop_frames(result)  # the instance is stored once, from the first file
        first_key = first[0]
        if self._same_bytes(first_key, info.key):
            self.outcome.duplicates.append((info.key, result, first_key))
        else:
            self.outcome.fail(info.key, "ValidationException", DUPLICATE.format(result.sop_uid, first_key))

    def _same_bytes(self, first_key: str, key: str) -> bool:
        """Whether two input files are byte for byte the same (read again: duplicates are rare, so no
        file pays for a hash up front). A file that cannot be read again counts as different."""
        if self._input is None:
            return False
        store, bucket = self._input
        try:
            return store.get(bucket, first_key) == store.get(bucket, key)
        except (OSError, ObjectNotFound, BucketNotFound):
            return False

    def _drop_frames(self, p: ProcessedInstance) -> None:
        keys = [frame_key(self.datastore_id, f["ID"]) for f in p.instance.get("ImageFrames", [])]
        if keys:
            self.env.index.enqueue_gc(keys, self.env.clock())

    # -- grouping
    def _plan(self) -> Plan:
        plan = Plan()
        self.unchanged = []
        groups: dict[tuple[str, str], dict[tuple[Any, ...], list[ProcessedInstance]]] = {}
        for _key, p in self.outcome.success:
            groups.setdefault((p.study_uid, p.series_uid), {}).setdefault(conflict_keys(p), []).append(p)
        for (study_uid, series_uid), subgroups in groups.items():
            for keys, items in subgroups.items():
                self._place(plan, study_uid, series_uid, keys, items)
        return plan

    def _place(
        self,
        plan: Plan,
        study_uid: str,
        series_uid: str,
        keys: tuple[Any, ...],
        items: list[ProcessedInstance],
    ) -> None:
        ds_id = self.datastore_id
        if (study_uid, series_uid) in plan.new_primaries:  # created by this batch with other keys
            self._create(plan, items, is_primary=False)
            return
        primary = self.env.index.find_primary(ds_id, study_uid, series_uid)
        if primary is not None:
            doc = self._load(primary)
            if primary.state == "ACTIVE" and doc_conflict_keys(doc) == keys:
                changing = self._changing(doc, items)
                if changing:
                    self._merge(plan, primary, doc, changing)
                if len(changing) < len(items):  # already stored as they are: placed in the set's content
                    chosen = {id(p) for p in changing}
                    same = [p for p in items if id(p) not in chosen]
                    merged = [plan.placed[p.sop_uid][1] for p in changing if p.sop_uid in plan.placed]
                    record_placement(
                        plan, primary.id, max(merged, default=primary.latest_version), True, same
                    )
                    self.unchanged.extend(same)
            else:
                self._create(plan, items, is_primary=False)
            return
        siblings = [self._load(s) for s in self.env.index.list_primary_in_study(ds_id, study_uid)]
        siblings += [doc for (study, _), (_, doc) in plan.new_primaries.items() if study == study_uid]
        study_keys = keys[:5]
        consistent = all(doc_conflict_keys(doc)[:5] == study_keys for doc in siblings)
        self._create(plan, items, is_primary=consistent, series=(study_uid, series_uid))

    def _changing(self, doc: dict[str, Any], items: list[ProcessedInstance]) -> list[ProcessedInstance]:
        """The instances that go into a new version of the primary whose document is ``doc`` (import
        jobs: all of them; an instance imported again replaces the stored one, §7.3). The others are
        kept as they are stored (:attr:`unchanged`)."""
        return items

    def _load(self, head: ImageSet) -> dict[str, Any]:
        version = self.env.index.get_version(head.datastore_id, head.id, head.content_version)
        assert version is not None and version.metadata_key is not None
        doc: dict[str, Any] = decode_document(self.env.blobs.get(version.metadata_key))
        return doc

    def _create(
        self,
        plan: Plan,
        items: list[ProcessedInstance],
        *,
        is_primary: bool,
        series: tuple[str, str] | None = None,
    ) -> None:
        ds_id = self.datastore_id
        set_id = new_id()

        def build(chosen: list[ProcessedInstance]) -> dict[str, Any]:
            first = chosen[-1]
            doc = build_document(
                ds_id, set_id, first.patient, first.study, first.series_uid, first.series, {}
            )
            return merge_instances(doc, chosen)

        items, doc, blob = self._fit(plan, items, build)
        if not items:
            return
        key = metadata_key(ds_id, set_id, 1)  # a fresh set id: unique already
        self.env.blobs.put(key, blob)
        plan.metadata_keys.append(key)
        now = self.env.clock()
        head = ImageSet(
            datastore_id=ds_id,
            id=set_id,
            latest_version=1,
            content_version=1,
            state="ACTIVE",
            workflow_status="CREATED",
            is_primary=is_primary,
            created_at=now,
            updated_at=now,
            last_accessed_at=now,
            search=search_tags(doc),
            dicom=index_rows(doc),
        )
        version = ImageSetVersion(ds_id, set_id, 1, "ACTIVE", "CREATED", now, now, is_primary, key)
        plan.creations.append((head, version, self._frame_refs(items)))
        if is_primary and series is not None:
            plan.new_primaries[series] = (head, doc)
        record_placement(plan, set_id, 1, is_primary, items)

    def _merge(self, plan: Plan, head: ImageSet, doc: dict[str, Any], items: list[ProcessedInstance]) -> None:
        ds_id = self.datastore_id
        new_version = head.latest_version + 1
        items, merged, blob = self._fit(plan, items, partial(merge_instances, doc))
        if not items:
            return
        # a per-attempt nonce: a regrouped attempt or a re-run after a crash never rewrites a blob
        key = metadata_key(ds_id, head.id, new_version, nonce=new_id()[:8])
        self.env.blobs.put(key, blob)
        plan.metadata_keys.append(key)
        now = self.env.clock()
        row = ImageSetVersion(
            ds_id, head.id, new_version, "ACTIVE", "IMPORTED", head.created_at, now, True, key
        )
        commit = VersionCommit(
            image_set_id=head.id,
            version=row,
            head_state="ACTIVE",
            head_status="IMPORTED",
            updated_at=now,
            content_version=new_version,
            search=search_tags(merged),
            dicom=index_rows(merged),
            touch=True,
            frames=self._frame_refs(items),
        )
        plan.appends.append((commit, head.latest_version))
        record_placement(plan, head.id, new_version, True, items)

    def _fit(
        self,
        plan: Plan,
        items: list[ProcessedInstance],
        build: Callable[[list[ProcessedInstance]], dict[str, Any]],
    ) -> tuple[list[ProcessedInstance], dict[str, Any], bytes]:
        """The instances whose document stays within :meth:`max_metadata_bytes`, the document and its
        encoded blob; the last instances are refused (failure entries) until it fits."""
        limit = self.max_metadata_bytes()
        doc = build(items)
        blob = encode_document(doc)
        size = json_size(blob)
        while size > limit and items:
            keep, freed = list(items), 0
            while keep and freed < size - limit:
                freed += max(1, keep.pop().metadata_bytes)
            files = {p.sop_uid: key for key, p in self.outcome.success}
            for p in items[len(keep) :]:
                message = SET_TOO_LARGE.format(size, limit)
                plan.rejected.append(
                    failure_entry(files.get(p.sop_uid, p.sop_uid), "ValidationException", message)
                )
            items = keep
            if items:
                doc = build(items)
                blob = encode_document(doc)
                size = json_size(blob)
        return items, doc, blob

    def _frame_refs(self, items: list[ProcessedInstance]) -> list[FrameRef]:
        refs = []
        for p in items:
            ts = p.instance.get("StoredTransferSyntaxUID") or ""
            for frame in p.instance.get("ImageFrames", []):
                refs.append(FrameRef(frame["ID"], frame_key(self.datastore_id, frame["ID"]), ts))
        return refs


def json_size(gz: bytes) -> int:
    """The uncompressed size of a gzip member (its trailer's ISIZE: exact below 4 GiB)."""
    return int.from_bytes(gz[-4:], "little")
