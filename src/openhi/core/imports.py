"""DICOM import jobs: start (idempotent: a SUBMITTED row in the queue), get and list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.errors import ConflictError, NotFoundError, QuotaExceededError
from openhi.core.ids import new_id
from openhi.core.import_overrides import check_mappings
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
        # wakes this process's import worker, if it runs one; workers elsewhere poll the queue
        self.on_submit: Callable[[], None] | None = None

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
        """Record a SUBMITTED job; an import worker (in any process sharing the index) runs it.

        Raises:
            NotFoundError / ConflictError: the datastore is missing or not ACTIVE; the token was reused
                with different parameters.
            ValidationError: an S3 URI is malformed or escapes its bucket; a metadataFilePath is not a
                safe key under the input prefix.
            QuotaExceededError: too many concurrent jobs in this datastore.
        """
        self.datastores.require_active(datastore_id)
        _, input_prefix = parse_s3_uri(input_s3_uri)
        parse_s3_uri(output_s3_uri)
        check_mappings(input_prefix, import_configuration)
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
        if self.on_submit is not None:
            self.on_submit()
        return job

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
