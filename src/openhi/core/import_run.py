"""One import job's run: scan the input prefix, transcode in the pixel pool, group, commit, report."""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from openhi.core.env import Env
from openhi.core.ids import new_id
from openhi.core.import_reports import write_reports
from openhi.core.keys import frame_key, metadata_key
from openhi.core.records import FrameRef, ImageSet, ImageSetVersion, ImportJob
from openhi.dicom.document import (
    build_document,
    decode_document,
    encode_document,
    merge_instances,
    search_tags,
)
from openhi.dicom.instance import InstanceRejected, ProcessedInstance, process_instance
from openhi.ports.blobs import BlobStore
from openhi.ports.index import VersionCommit
from openhi.ports.objects import BucketNotFound, ObjectInfo, ObjectStore, parse_s3_uri

log = logging.getLogger("openhi.import")


def _norm(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def conflict_keys(p: ProcessedInstance) -> tuple[Any, ...]:
    """Grouping keys that must agree inside a primary image set (§7.3)."""
    return (
        _norm(p.patient.get("PatientID")),
        _norm(p.study.get("StudyDate")),
        _norm(p.study.get("AccessionNumber")),
        _norm(p.study.get("StudyID")),
        p.study_uid,
        p.series_uid,
        _norm(p.series.get("SeriesNumber")),
    )


def doc_conflict_keys(doc: dict[str, Any]) -> tuple[Any, ...]:
    series_uid, series = next(iter(doc["Study"]["Series"].items()))
    patient, study = doc["Patient"]["DICOM"], doc["Study"]["DICOM"]
    return (
        _norm(patient.get("PatientID")),
        _norm(study.get("StudyDate")),
        _norm(study.get("AccessionNumber")),
        _norm(study.get("StudyID")),
        _norm(study.get("StudyInstanceUID")),
        series_uid,
        _norm(series["DICOM"].get("SeriesNumber")),
    )


def import_one(
    objects: ObjectStore, bucket: str, blobs: BlobStore, datastore_id: str, storage_format: str, key: str
) -> ProcessedInstance:
    """Read, verify and transcode one file, then store its frames; runs in a pixel-pool process.

    Frames are written here, before any metadata or index row refers to them, and only the small
    metadata crosses back to the server process.

    Raises:
        InstanceRejected: the file is not acceptable DICOM (reported as a failure entry).
    """
    processed = process_instance(objects.get(bucket, key), storage_format)
    for frame in processed.frames:
        blobs.put(frame_key(datastore_id, frame.frame_id), frame.data, durable=False)  # flushed before commit
    return replace(processed, frames=[])


def import_batch(
    objects: ObjectStore,
    bucket: str,
    blobs: BlobStore,
    datastore_id: str,
    storage_format: str,
    keys: list[str],
) -> list[ProcessedInstance | Exception]:
    """``import_one`` for each key, in order; a file's exception is its result (one pool task, many files).

    Batching divides the per-task cost of the process pool (pickling the stores, queue hops, the
    executor's bookkeeping on both sides) by the batch size.
    """
    out: list[ProcessedInstance | Exception] = []
    for key in keys:
        try:
            out.append(import_one(objects, bucket, blobs, datastore_id, storage_format, key))
        except Exception as exc:
            out.append(_picklable(exc))
    return out


def _picklable(exc: Exception) -> Exception:
    """The exception itself when it survives the trip back to the server process, else its message."""
    if isinstance(exc, InstanceRejected):
        return exc
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(str(exc))
    return exc


@dataclass
class Outcome:
    """What became of the job's files, for the output reports."""

    scanned: int = 0
    success: list[tuple[str, ProcessedInstance]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    server_errors: int = 0


@dataclass
class Plan:
    """One attempt at placing the job's instances: the index changes and where each instance went."""

    creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]] = field(default_factory=list)
    appends: list[tuple[VersionCommit, int]] = field(default_factory=list)
    metadata_keys: list[str] = field(default_factory=list)
    placed: dict[str, tuple[str, int, bool]] = field(
        default_factory=dict
    )  # sop uid -> (set id, version, primary)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # primary sets this plan creates: (study, series) -> (head, document)
    new_primaries: dict[tuple[str, str], tuple[ImageSet, dict[str, Any]]] = field(default_factory=dict)


class LeaseLost(Exception):
    """Another worker owns the job now (this worker stalled past its lease, or is shutting down)."""


COMMIT_ATTEMPTS = 5
#: Files per pixel-pool task at most (smaller for small jobs and at a job's end).
MAX_BATCH = 8
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

    def run(self) -> None:
        job = self.job
        try:
            message = self._run()
        except LeaseLost:
            log.info("import job %s: lease lost by %s; another worker finishes it", job.id, self.worker_id)
            return
        except Exception as exc:  # the job itself failed: report, never crash the worker
            log.exception("import job %s failed", job.id)
            message = f"Import job failed: {type(exc).__name__}: {exc}"
        if message is None:
            return  # COMPLETED together with its image sets
        failed = replace(job, status="FAILED", message=message, ended_at=self.env.clock())
        self.env.index.finish_job(failed, self.worker_id)

    def check_lease(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(self.job.id)

    def _run(self) -> str | None:
        s = self.env.settings
        bucket, prefix = parse_s3_uri(self.job.input_s3_uri)
        try:
            objects = list(self.env.objects.list(bucket, prefix))
        except BucketNotFound:
            return f"Input bucket {bucket} does not exist."
        if len(objects) > s.max_files_per_job:
            return (
                f"The input holds {len(objects)} files; an import job accepts at most {s.max_files_per_job}."
            )
        total = sum(o.size for o in objects)
        if total > s.max_job_bytes:
            return f"The input holds {total} bytes; an import job accepts at most {s.max_job_bytes} bytes."
        ds = self.env.index.get_datastore(self.job.datastore_id)
        storage_format = ds.lossless_storage_format if ds else "HTJ2K"
        self.outcome.scanned = len(objects)
        with self._flushing():
            for info, result in self._process(objects, bucket, storage_format):
                self.check_lease()
                self._record(info, result)
        return self._commit()

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

    def _process(
        self, objects: list[ObjectInfo], bucket: str, storage_format: str
    ) -> Iterator[tuple[ObjectInfo, ProcessedInstance | BaseException]]:
        pool = self.env.pixel_pool
        max_file = self.env.settings.max_file_bytes
        work = partial(
            import_one, self.env.objects, bucket, self.env.blobs, self.job.datastore_id, storage_format
        )
        batch_work = partial(
            import_batch, self.env.objects, bucket, self.env.blobs, self.job.datastore_id, storage_format
        )
        too_big = "File of {} bytes exceeds the per-file maximum of {} bytes."
        if pool is None:
            for info in objects:
                result: ProcessedInstance | Exception
                try:
                    if info.size > max_file:
                        raise InstanceRejected("ValidationException", too_big.format(info.size, max_file))
                    result = work(info.key)
                except Exception as exc:
                    result = exc
                yield info, result
            return
        workers = max(1, getattr(pool, "_max_workers", 2))
        in_flight: dict[Future[list[ProcessedInstance | Exception]], list[ObjectInfo]] = {}
        limit = 2 * workers  # batches: one running and one queued per worker keep every worker busy
        position = 0
        try:
            while in_flight or position < len(objects):
                while position < len(objects) and len(in_flight) < limit:
                    # batches shrink towards the end so that the workers finish together
                    size = max(1, min(MAX_BATCH, (len(objects) - position) // (2 * workers)))
                    batch: list[ObjectInfo] = []
                    while position < len(objects) and len(batch) < size:
                        nxt = objects[position]
                        position += 1
                        if nxt.size > max_file:
                            yield (
                                nxt,
                                InstanceRejected("ValidationException", too_big.format(nxt.size, max_file)),
                            )
                        else:
                            batch.append(nxt)
                    if batch:
                        in_flight[pool.submit(batch_work, [info.key for info in batch])] = batch
                if not in_flight:
                    continue
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in done:
                    infos = in_flight.pop(fut)
                    error = fut.exception()
                    if error is not None:  # the worker died (BrokenProcessPool) or the batch could not run
                        for info in infos:
                            yield info, error
                        continue
                    yield from zip(infos, fut.result(), strict=True)
        finally:
            for fut in in_flight:  # abandoned (lease lost): don't let queued files run for nothing
                fut.cancel()

    def _record(self, info: ObjectInfo, result: ProcessedInstance | BaseException) -> None:
        if isinstance(result, InstanceRejected):
            self._fail(info.key, result.exception_type, result.message)
            return
        if isinstance(result, BaseException):
            log.warning("import %s: %s failed: %r", self.job.id, info.key, result)
            self.outcome.server_errors += 1
            self._fail(
                info.key, "InternalServerException", f"Unexpected error while importing the file: {result}"
            )
            return
        self.outcome.success.append((info.key, result))

    def _fail(self, key: str, exception_type: str, message: str) -> None:
        self.outcome.failures.append(
            {"inputFile": key, "exception": {"exceptionType": exception_type, "message": message}}
        )

    # -- grouping and commit
    def _commit(self) -> str | None:
        """Group against the primaries of the moment and commit atomically; regroup after a race."""
        self.env.blobs.flush()  # the frames the pixel workers wrote are durable before any row points at them
        for attempt in range(COMMIT_ATTEMPTS):
            self.check_lease()
            plan = self._plan()
            write_reports(self.env.objects, self.job, self.outcome, plan.placed, plan.summaries)
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
        return (
            f"The image sets of this job could not be committed after {COMMIT_ATTEMPTS} attempts: other "
            "writers kept changing the same primary image sets. Start the job again."
        )

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
        first = items[-1]
        doc = build_document(ds_id, set_id, first.patient, first.study, first.series_uid, first.series, {})
        doc = merge_instances(doc, items)
        key = metadata_key(ds_id, set_id, 1)  # a fresh set id: unique already
        self.env.blobs.put(key, encode_document(doc))
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
        )
        version = ImageSetVersion(ds_id, set_id, 1, "ACTIVE", "CREATED", now, now, is_primary, key)
        plan.creations.append((head, version, self._frame_refs(items)))
        if is_primary and series is not None:
            plan.new_primaries[series] = (head, doc)
        _placed(plan, set_id, 1, is_primary, items)

    def _merge(self, plan: Plan, head: ImageSet, doc: dict[str, Any], items: list[ProcessedInstance]) -> None:
        ds_id = self.job.datastore_id
        new_version = head.latest_version + 1
        merged = merge_instances(doc, items)
        # a per-attempt nonce: a regrouped attempt or a re-run after a crash never rewrites a blob
        key = metadata_key(ds_id, head.id, new_version, nonce=new_id()[:8])
        self.env.blobs.put(key, encode_document(merged))
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
            touch=True,
            frames=self._frame_refs(items),
        )
        plan.appends.append((commit, head.latest_version))
        _placed(plan, head.id, new_version, True, items)

    def _frame_refs(self, items: list[ProcessedInstance]) -> list[FrameRef]:
        refs = []
        for p in items:
            ts = p.instance.get("StoredTransferSyntaxUID") or ""
            for frame in p.instance.get("ImageFrames", []):
                refs.append(FrameRef(frame["ID"], frame_key(self.job.datastore_id, frame["ID"]), ts))
        return refs


def _placed(plan: Plan, set_id: str, version: int, is_primary: bool, items: list[ProcessedInstance]) -> None:
    for p in items:
        plan.placed[p.sop_uid] = (set_id, version, is_primary)
    summary = plan.summaries.setdefault(
        set_id,
        {
            "imageSetId": set_id,
            "imageSetVersion": version,
            "isPrimary": is_primary,
            "numberOfMatchedSOPInstances": 0,
        },
    )
    summary["numberOfMatchedSOPInstances"] += len(items)
