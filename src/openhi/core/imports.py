"""DICOM import jobs: start (idempotent), get, list, and run in the background."""

from __future__ import annotations

import threading
from typing import Any

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.errors import ConflictError, NotFoundError, QuotaExceededError
from openhi.core.ids import new_id
from openhi.core.pagination import Paginator
from openhi.core.records import ImportJob
from openhi.core.requests import request_hash
from openhi.ports.objects import parse_s3_uri

RUNNING = ("SUBMITTED", "IN_PROGRESS")


class ImportService:
    def __init__(self, env: Env, paginator: Paginator, datastores: DatastoreService) -> None:
        self.env = env
        self.paginator = paginator
        self.datastores = datastores
        # one import at a time per process commits image sets, so primary grouping sees a consistent store
        self._commit_lock = threading.Lock()

    def start(
        self,
        datastore_id: str,
        *,
        client_token: str,
        data_access_role_arn: str,
        input_s3_uri: str,
        output_s3_uri: str,
        job_name: str | None = None,
        input_owner_account_id: str | None = None,
        import_configuration: dict[str, Any] | None = None,
    ) -> ImportJob:
        """Record a SUBMITTED job and run it in the background.

        Raises:
            NotFoundError / ConflictError: the datastore is missing or not ACTIVE; the token was reused
                with different parameters.
            ValidationError: an S3 URI is malformed or escapes its bucket.
            QuotaExceededError: too many concurrent jobs in this datastore.
        """
        self.datastores.require_active(datastore_id)
        parse_s3_uri(input_s3_uri)
        parse_s3_uri(output_s3_uri)
        params = {
            "jobName": job_name,
            "role": data_access_role_arn,
            "in": input_s3_uri,
            "out": output_s3_uri,
            "owner": input_owner_account_id,
            "config": import_configuration,
        }
        digest = request_hash(params)
        limit = self.env.settings.max_concurrent_jobs_per_datastore
        if self.env.index.count_jobs(datastore_id, RUNNING) >= limit:
            raise QuotaExceededError(
                f"Datastore {datastore_id} already runs {limit} import jobs, the concurrent maximum; "
                "retry when one has finished."
            )
        job_id = new_id()
        out = output_s3_uri if output_s3_uri.endswith("/") else output_s3_uri + "/"
        job = ImportJob(
            id=job_id,
            datastore_id=datastore_id,
            name=job_name or f"import-{job_id[:8]}",
            status="SUBMITTED",
            data_access_role_arn=data_access_role_arn,
            input_s3_uri=input_s3_uri,
            output_s3_uri=f"{out}{datastore_id}-DicomImport-{job_id}/",
            submitted_at=self.env.clock(),
            input_owner_account_id=input_owner_account_id,
            import_configuration=import_configuration,
            client_token=client_token,
            request_hash=digest,
        )
        stored = self.env.index.insert_job(job)
        if stored.id != job.id:
            if stored.request_hash != digest:
                raise ConflictError(
                    f"clientToken {client_token} was already used for import job {stored.id} with different parameters."
                )
            return stored
        self._schedule(job)
        return job

    def _schedule(self, job: ImportJob) -> None:
        from openhi.core.import_run import ImportRun  # pixel stack loads with the first job, not at start

        self.env.tasks.submit(f"import-{job.id}", lambda: ImportRun(self.env, job, self._commit_lock).run())

    def get(self, datastore_id: str, job_id: str) -> ImportJob:
        self.datastores.get(datastore_id)
        job = self.env.index.get_job(datastore_id, job_id)
        if job is None:
            raise NotFoundError(f"Import job {job_id} does not exist in datastore {datastore_id}.")
        return job

    def list(
        self, datastore_id: str, *, status: str | None, max_results: int | None, next_token: str | None
    ) -> tuple[list[ImportJob], str | None]:
        self.datastores.get(datastore_id)
        query = {"datastoreId": datastore_id, "status": status}
        cursor = self.paginator.resolve(next_token, "ListDICOMImportJobs", query)
        before = (float(cursor[0]), str(cursor[1])) if cursor else None
        limit = max_results or 50
        rows = self.env.index.list_jobs(datastore_id, status, before, limit + 1)
        token = None
        if len(rows) > limit:
            rows = rows[:limit]
            token = self.paginator.issue("ListDICOMImportJobs", query, [rows[-1].submitted_at, rows[-1].id])
        return rows, token

    def recover(self) -> None:
        """At start: run SUBMITTED jobs; end jobs a dead process left IN_PROGRESS as FAILED."""
        for job in self.env.index.jobs_in_status(RUNNING):
            if job.status == "SUBMITTED":
                self._schedule(job)
                continue
            job.status = "FAILED"
            job.ended_at = self.env.clock()
            job.message = (
                "Import job interrupted by a server restart before it finished; no image set from it was "
                "committed partially. Start the job again."
            )
            self.env.index.update_job(job)
