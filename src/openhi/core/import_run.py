"""One import job's run: scan the input prefix, transcode in the pixel pool, group, commit, report."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from openhi.core.env import Env
from openhi.core.ids import new_id
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
        blobs.put(frame_key(datastore_id, frame.frame_id), frame.data)
    return replace(processed, frames=[])


@dataclass
class Outcome:
    """What became of the job's files, for the output reports."""

    scanned: int = 0
    success: list[tuple[str, ProcessedInstance]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    server_errors: int = 0
    placed: dict[str, tuple[str, int, bool]] = field(
        default_factory=dict
    )  # sop uid -> (set id, version, primary)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)


class ImportRun:
    def __init__(self, env: Env, job: ImportJob, commit_lock: threading.Lock) -> None:
        self.env = env
        self.job = job
        self.commit_lock = commit_lock
        self.outcome = Outcome()

    def run(self) -> None:
        job = self.job
        job.status = "IN_PROGRESS"
        self.env.index.update_job(job)
        try:
            message = self._run()
        except Exception as exc:  # the job itself failed: report, never crash the worker
            log.exception("import job %s failed", job.id)
            message = f"Import job failed: {type(exc).__name__}: {exc}"
        job.status = "FAILED" if message else "COMPLETED"
        job.message = message
        job.ended_at = self.env.clock()
        self.env.index.update_job(job)

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
        for info, result in self._process(objects, bucket, storage_format):
            self._record(info, result)
        with self.commit_lock:
            self._commit()
        self._write_reports()
        return None

    def _process(
        self, objects: list[ObjectInfo], bucket: str, storage_format: str
    ) -> Iterator[tuple[ObjectInfo, ProcessedInstance | BaseException]]:
        pool = self.env.pixel_pool
        max_file = self.env.settings.max_file_bytes
        work = partial(
            import_one, self.env.objects, bucket, self.env.blobs, self.job.datastore_id, storage_format
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
        in_flight: dict[Future[ProcessedInstance], ObjectInfo] = {}
        limit = 4 * max(1, getattr(pool, "_max_workers", 2))
        pending = iter(objects)
        exhausted = False
        while in_flight or not exhausted:
            while not exhausted and len(in_flight) < limit:
                nxt = next(pending, None)
                if nxt is None:
                    exhausted = True
                    break
                if nxt.size > max_file:
                    yield nxt, InstanceRejected("ValidationException", too_big.format(nxt.size, max_file))
                    continue
                in_flight[pool.submit(work, nxt.key)] = nxt
            if not in_flight:
                continue
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for fut in done:
                finished = in_flight.pop(fut)
                error = fut.exception()
                yield finished, (error if error is not None else fut.result())

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
    def _commit(self) -> None:
        groups: dict[tuple[str, str], dict[tuple[Any, ...], list[ProcessedInstance]]] = {}
        for _key, p in self.outcome.success:
            groups.setdefault((p.study_uid, p.series_uid), {}).setdefault(conflict_keys(p), []).append(p)
        for (study_uid, series_uid), subgroups in groups.items():
            for keys, items in subgroups.items():
                self._place(study_uid, series_uid, keys, items)

    def _place(
        self, study_uid: str, series_uid: str, keys: tuple[Any, ...], items: list[ProcessedInstance]
    ) -> None:
        ds_id = self.job.datastore_id
        primary = self.env.index.find_primary(ds_id, study_uid, series_uid)
        if primary is not None:
            doc = self._load(primary)
            if doc_conflict_keys(doc) == keys and self._merge(primary, doc, items):
                return
            self._create(items, is_primary=False)
            return
        siblings = self.env.index.list_primary_in_study(ds_id, study_uid)
        study_keys = keys[:5]
        consistent = all(doc_conflict_keys(self._load(s))[:5] == study_keys for s in siblings)
        self._create(items, is_primary=consistent)

    def _load(self, head: ImageSet) -> dict[str, Any]:
        version = self.env.index.get_version(head.datastore_id, head.id, head.content_version)
        assert version is not None and version.metadata_key is not None
        doc: dict[str, Any] = decode_document(self.env.blobs.get(version.metadata_key))
        return doc

    def _create(self, items: list[ProcessedInstance], *, is_primary: bool) -> None:
        ds_id = self.job.datastore_id
        set_id = new_id()
        first = items[-1]
        doc = build_document(ds_id, set_id, first.patient, first.study, first.series_uid, first.series, {})
        doc = merge_instances(doc, items)
        key = metadata_key(ds_id, set_id, 1)
        self.env.blobs.put(key, encode_document(doc))
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
        self.env.index.create_image_set(head, version, self._frame_refs(items))
        self._placed(set_id, 1, is_primary, items)

    def _merge(self, head: ImageSet, doc: dict[str, Any], items: list[ProcessedInstance]) -> bool:
        ds_id = self.job.datastore_id
        new_version = head.latest_version + 1
        merged = merge_instances(doc, items)
        key = metadata_key(ds_id, head.id, new_version)
        self.env.blobs.put(key, encode_document(merged))
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
        if not self.env.index.append_version(ds_id, commit, head.latest_version):
            self.env.index.enqueue_gc([key], now)  # the set was locked or moved on: this blob is unused
            return False
        self._placed(head.id, new_version, True, items)
        return True

    def _frame_refs(self, items: list[ProcessedInstance]) -> list[FrameRef]:
        refs = []
        for p in items:
            ts = p.instance.get("StoredTransferSyntaxUID") or ""
            for frame in p.instance.get("ImageFrames", []):
                refs.append(FrameRef(frame["ID"], frame_key(self.job.datastore_id, frame["ID"]), ts))
        return refs

    def _placed(self, set_id: str, version: int, is_primary: bool, items: list[ProcessedInstance]) -> None:
        for p in items:
            self.outcome.placed[p.sop_uid] = (set_id, version, is_primary)
        summary = self.outcome.summaries.setdefault(
            set_id,
            {
                "imageSetId": set_id,
                "imageSetVersion": version,
                "isPrimary": is_primary,
                "numberOfMatchedSOPInstances": 0,
            },
        )
        summary["numberOfMatchedSOPInstances"] += len(items)

    # -- reports
    def _write_reports(self) -> None:
        out_bucket, out_prefix = parse_s3_uri(self.job.output_s3_uri)
        base = self.job.output_s3_uri
        success_lines, warning_lines = [], []
        for key, p in self.outcome.success:
            set_id, version, primary = self.outcome.placed[p.sop_uid]
            response: dict[str, Any] = {
                "imageSetId": set_id,
                "imageSetVersion": version,
                "isPrimary": primary,
            }
            success_lines.append({"inputFile": key, "importResponse": response})
            if p.warnings:
                warning_lines.append(
                    {"inputFile": key, "importResponse": {**response, "warnings": p.warnings}}
                )
        o = self.outcome
        manifest = {
            "jobSummary": {
                "jobId": self.job.id,
                "datastoreId": self.job.datastore_id,
                "inputS3Uri": self.job.input_s3_uri,
                "outputS3Uri": base,
                "successOutputS3Uri": f"{base}SUCCESS/",
                "failureOutputS3Uri": f"{base}FAILURE/",
                "warningsOutputS3Uri": f"{base}WARNING/",
                "numberOfScannedFiles": o.scanned,
                "numberOfImportedFiles": len(o.success),
                "numberOfFilesWithCustomerError": len(o.failures) - o.server_errors,
                "numberOfFilesWithServerError": o.server_errors,
                "numberOfGeneratedImageSets": len(o.summaries),
                "imageSetsSummary": list(o.summaries.values()),
            }
        }
        put = self.env.objects.put
        put(out_bucket, f"{out_prefix}SUCCESS/success.ndjson", _ndjson(success_lines))
        put(out_bucket, f"{out_prefix}FAILURE/failure.ndjson", _ndjson(o.failures))
        put(out_bucket, f"{out_prefix}WARNING/warning.ndjson", _ndjson(warning_lines))
        put(out_bucket, f"{out_prefix}job-output-manifest.json", json.dumps(manifest, indent=2).encode())


def _ndjson(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
