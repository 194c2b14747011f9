"""One import job's run: scan the input prefix, transcode in the pixel pool, group, commit, report."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

from openhi.core import import_group, telemetry
from openhi.core.env import Env
from openhi.core.import_files import FileJob, process_files
from openhi.core.import_group import InstanceGrouper, json_size
from openhi.core.import_overrides import load_overrides, unmatched_warnings
from openhi.core.import_reports import write_reports
from openhi.core.messages import modeled_message
from openhi.core.records import ImportJob
from openhi.dicom.instance import ProcessedInstance
from openhi.ports.objects import BucketNotFound, ObjectInfo, parse_s3_uri

log = logging.getLogger("openhi.import")

# Job messages (``DICOMImportJobProperties.message``: modeled, see core.messages).
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


class LeaseLost(Exception):
    """Another worker owns the job now (this worker stalled past its lease, or is shutting down)."""


COMMIT_ATTEMPTS = 5
#: The metadata document of one image set may be at most this large (JSON, before compression).
MAX_IMAGE_SET_METADATA_BYTES = import_group.MAX_IMAGE_SET_METADATA_BYTES


class ImportRun(InstanceGrouper):
    """Run one claimed job to its end; the job's status is written only while ``worker_id`` owns it."""

    def __init__(self, env: Env, job: ImportJob, worker_id: str, lost: threading.Event | None = None) -> None:
        super().__init__(env, job.datastore_id, f"import job {job.id}")
        self.job = job
        self.worker_id = worker_id
        self.lost = lost or threading.Event()

    def max_metadata_bytes(self) -> int:
        return MAX_IMAGE_SET_METADATA_BYTES  # read at each call: tests lower it

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
        telemetry.import_job("FAILED" if message else "COMPLETED", self.outcome)
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

    # -- commit
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


_json_size = json_size  # the name the unit tests know
