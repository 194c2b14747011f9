"""One import job's run: scan the input prefix, transcode in the pixel pool, group, commit, report."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

from openhi.core.env import Env
from openhi.core.ids import new_id
from openhi.core.import_files import FileJob, process_files
from openhi.core.import_overrides import load_overrides, unmatched_warnings
from openhi.core.import_plan import Plan, conflict_keys, doc_conflict_keys, record_placement
from openhi.core.import_reports import Outcome, failure_entry, write_reports
from openhi.core.keys import frame_key, metadata_key
from openhi.core.messages import modeled_message
from openhi.core.records import FrameRef, ImageSet, ImageSetVersion, ImportJob
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
from openhi.ports.objects import BucketNotFound, ObjectInfo, ObjectNotFound, ObjectStore, parse_s3_uri

log = logging.getLogger("openhi.import")

# Job messages (``DICOMImportJobProperties.message``: modeled, see core.messages) and report messages.
BUCKET_MISSING = "Input bucket {} does not exist."
ACCESS_DENIED = "Access to input bucket {}{} was denied: {}"
TOO_MANY_FILES = "The input holds {} files, an import job accepts at most {}."
TOO_MANY_BYTES = "The input holds {} bytes, an import job accepts at most {} bytes."
COMMIT_RACES = (
    "The image sets of this job could not be committed after {} attempts: other writers kept changing "
    "the same primary image sets. Start the job again."
)
JOB_CRASHED = "Import job failed: {}: {}"
JOB_MESSAGES = (BUCKET_MISSING, ACCESS_DENIED, TOO_MANY_FILES, TOO_MANY_BYTES, COMMIT_RACES, JOB_CRASHED)
UNEXPECTED = "Unexpected error while importing the file: {}"
DENIED = "Reading the file was refused: {}"
DUPLICATE = (
    "Duplicate SOPInstanceUID {} of {}, which is imported: the first file of a SOP Instance in key "
    "order wins, a later file with different content is not imported"
)
SET_TOO_LARGE = "The image set's metadata would be {} bytes as JSON, over the maximum of {} bytes"


class LeaseLost(Exception):
    """Another worker owns the job now (this worker stalled past its lease, or is shutting down)."""


COMMIT_ATTEMPTS = 5
#: The metadata document of one image set may be at most this large (JSON, before compression).
MAX_IMAGE_SET_METADATA_BYTES = 50 * 1024 * 1024
#: How often frames written so far are flushed in the background while a job transcodes.
FLUSH_SECONDS = 0.5


class ImportRun:
    """Run one claimed job to its end; the job's status is written only while ``worker_id`` owns it."""

    def __init__(self, env: Env, job: ImportJob, worker_id: str, lost: threading.Event | None = None) -> None:
        self.env = env
        self.job = job
        self.worker_id = worker_id
        self.lost = lost or threading.Event()
        self.outcome = Outcome()
        self._input: tuple[ObjectStore, str] | None = None  # (store, bucket) the job reads

    def run(self) -> None:
        job = self.job
        try:
            message = self._run()
        except LeaseLost:
            log.info("import job %s: lease lost by %s; another worker finishes it", job.id, self.worker_id)
            return
        except Exception as exc:  # the job itself failed: report, never crash the worker
            log.exception("import job %s failed", job.id)
            message = JOB_CRASHED.format(type(exc).__name__, exc)
        if message is None:
            return  # COMPLETED together with its image sets
        failed = replace(job, status="FAILED", message=modeled_message(message), ended_at=self.env.clock())
        self.env.index.finish_job(failed, self.worker_id)

    def check_lease(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(self.job.id)

    def _run(self) -> str | None:
        s = self.env.settings
        bucket, prefix = parse_s3_uri(self.job.input_s3_uri)
        owner = self.job.input_owner_account_id
        source = self.env.objects if not owner else self.env.objects.expecting_owner(owner)
        try:
            objects = list(source.list(bucket, prefix))
        except BucketNotFound:
            return BUCKET_MISSING.format(bucket)
        except PermissionError as exc:
            return ACCESS_DENIED.format(bucket, f" (expected owner {owner})" if owner else "", exc)
        self._input = (source, bucket)
        sizes = {o.key: o.size for o in objects}
        overrides, metadata_files = load_overrides(
            source, bucket, prefix, self.job.import_configuration, sizes
        )
        objects = [o for o in objects if o.key not in metadata_files]
        if len(objects) > s.max_files_per_job:
            return TOO_MANY_FILES.format(len(objects), s.max_files_per_job)
        total = sum(o.size for o in objects)
        if total > s.max_job_bytes:
            return TOO_MANY_BYTES.format(total, s.max_job_bytes)
        ds = self.env.index.get_datastore(self.job.datastore_id)
        storage_format = ds.lossless_storage_format if ds else "HTJ2K"
        self.outcome.scanned = len(objects)
        work = FileJob(
            source, bucket, self.env.blobs, self.job.datastore_id, storage_format, tuple(overrides)
        )
        order = {info.key: n for n, info in enumerate(objects)}
        results: list[tuple[int, ObjectInfo, ProcessedInstance | BaseException]] = []
        with self._flushing():
            for info, result in self._process(objects, work):
                self.check_lease()
                results.append((order[info.key], info, result))
        matched: set[int] = set()
        seen: dict[str, tuple[str, ProcessedInstance]] = {}
        for _, info, result in sorted(results, key=lambda r: r[0]):  # input order decides duplicates
            self._record(info, result, matched, seen)
        self.outcome.warnings.extend(unmatched_warnings(overrides, matched, prefix))
        return self._commit()

    def _process(
        self, objects: list[ObjectInfo], work: FileJob
    ) -> Iterator[tuple[ObjectInfo, ProcessedInstance | BaseException]]:
        return process_files(work, objects, self.env.pixel_pool, self.env.settings.max_file_bytes)

    @contextlib.contextmanager
    def _flushing(self) -> Iterator[None]:
        """While pixel workers write frames, flush the blob store every ``FLUSH_SECONDS`` in the background.

        Durability is unchanged (``_commit`` flushes before any row points at a frame); the flush it
        waits for then finds only the last moments' frames still to write instead of the whole job's.
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
                    log.warning("import job %s: background flush failed", self.job.id, exc_info=True)

        threading.Thread(target=loop, name="openhi-import-flush", daemon=True).start()
        try:
            yield
        finally:
            stop.set()  # a flush in progress ends by itself; the commit's flush covers everything

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
            log.warning("import %s: %s failed: %r", self.job.id, info.key, result)
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
        keys = [frame_key(self.job.datastore_id, f["ID"]) for f in p.instance.get("ImageFrames", [])]
        if keys:
            self.env.index.enqueue_gc(keys, self.env.clock())

    # -- grouping and commit
    def _commit(self) -> str | None:
        """Group against the primaries of the moment and commit atomically; regroup after a race."""
        self.env.blobs.flush()  # the frames the pixel workers wrote are durable before any row points at them
        for attempt in range(COMMIT_ATTEMPTS):
            self.check_lease()
            plan = self._plan()
            write_reports(
                self.env.objects, self.job, self.outcome, plan.placed, plan.summaries, plan.rejected
            )
            done = replace(self.job, status="COMPLETED", message=None, ended_at=self.env.clock())
            result = self.env.index.commit_import(
                self.job.datastore_id, done, self.worker_id, plan.creations, plan.appends
            )
            if result == "ok":
                self.job.status, self.job.ended_at = done.status, done.ended_at
                return None
            self.env.index.enqueue_gc(plan.metadata_keys, self.env.clock())  # this attempt's documents
            if result == "lease_lost":
                raise LeaseLost(self.job.id)
            log.info(
                "import job %s: commit attempt %d raced another writer; regrouping", self.job.id, attempt
            )
            time.sleep(0.05 * (attempt + 1))
        return COMMIT_RACES.format(COMMIT_ATTEMPTS)

    def _plan(self) -> Plan:
        plan = Plan()
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
        ds_id = self.job.datastore_id
        if (study_uid, series_uid) in plan.new_primaries:  # created by this job with other keys
            self._create(plan, items, is_primary=False)
            return
        primary = self.env.index.find_primary(ds_id, study_uid, series_uid)
        if primary is not None:
            doc = self._load(primary)
            if primary.state == "ACTIVE" and doc_conflict_keys(doc) == keys:
                self._merge(plan, primary, doc, items)
            else:
                self._create(plan, items, is_primary=False)
            return
        siblings = [self._load(s) for s in self.env.index.list_primary_in_study(ds_id, study_uid)]
        siblings += [doc for (study, _), (_, doc) in plan.new_primaries.items() if study == study_uid]
        study_keys = keys[:5]
        consistent = all(doc_conflict_keys(doc)[:5] == study_keys for doc in siblings)
        self._create(plan, items, is_primary=consistent, series=(study_uid, series_uid))

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
        ds_id = self.job.datastore_id
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
        ds_id = self.job.datastore_id
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
        """The instances whose document stays within ``MAX_IMAGE_SET_METADATA_BYTES``, the document and
        its encoded blob; the last instances are refused (failure entries) until it fits."""
        doc = build(items)
        blob = encode_document(doc)
        size = _json_size(blob)
        while size > MAX_IMAGE_SET_METADATA_BYTES and items:
            keep, freed = list(items), 0
            while keep and freed < size - MAX_IMAGE_SET_METADATA_BYTES:
                freed += max(1, keep.pop().metadata_bytes)
            files = {p.sop_uid: key for key, p in self.outcome.success}
            for p in items[len(keep) :]:
                message = SET_TOO_LARGE.format(size, MAX_IMAGE_SET_METADATA_BYTES)
                plan.rejected.append(
                    failure_entry(files.get(p.sop_uid, p.sop_uid), "ValidationException", message)
                )
            items = keep
            if items:
                doc = build(items)
                blob = encode_document(doc)
                size = _json_size(blob)
        return items, doc, blob

    def _frame_refs(self, items: list[ProcessedInstance]) -> list[FrameRef]:
        refs = []
        for p in items:
            ts = p.instance.get("StoredTransferSyntaxUID") or ""
            for frame in p.instance.get("ImageFrames", []):
                refs.append(FrameRef(frame["ID"], frame_key(self.job.datastore_id, frame["ID"]), ts))
        return refs


def _json_size(gz: bytes) -> int:
    """The uncompressed size of a gzip member (its trailer's ISIZE: exact below 4 GiB)."""
    return int.from_bytes(gz[-4:], "little")
