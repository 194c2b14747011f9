"""Datastores: create (idempotent by client token), get, list, delete; status transitions."""

from __future__ import annotations

from typing import Any

from openhi.core.env import Env
from openhi.core.errors import ConflictError, NotFoundError, QuotaExceededError
from openhi.core.ids import new_id
from openhi.core.pagination import Paginator
from openhi.core.records import Datastore
from openhi.core.requests import request_hash

LIVE_STATUSES = ("CREATING", "ACTIVE")


class DatastoreService:
    def __init__(self, env: Env, paginator: Paginator) -> None:
        self.env = env
        self.paginator = paginator

    def create(
        self,
        *,
        client_token: str,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        kms_key_arn: str | None = None,
        lambda_authorizer_arn: str | None = None,
        lossless_storage_format: str | None = None,
    ) -> Datastore:
        """Create a datastore, or return the one created earlier with the same token and parameters.

        Raises:
            ConflictError: the token was used before with different parameters.
            QuotaExceededError: the number of active datastores is at its quota.
        """
        fmt = lossless_storage_format or "HTJ2K"
        digest = request_hash(
            {"name": name, "tags": tags, "kms": kms_key_arn, "lambda": lambda_authorizer_arn, "format": fmt}
        )
        index = self.env.index
        if index.count_datastores(LIVE_STATUSES) >= self.env.settings.max_active_datastores:
            raise QuotaExceededError(
                f"Maximum number of active datastores ({self.env.settings.max_active_datastores}) reached; "
                "delete a datastore or raise the quota."
            )
        now = self.env.clock()
        candidate = Datastore(
            id=new_id(),
            name=name,
            status="CREATING",
            lossless_storage_format=fmt,
            created_at=now,
            updated_at=now,
            kms_key_arn=kms_key_arn,
            lambda_authorizer_arn=lambda_authorizer_arn,
            client_token=client_token,
            request_hash=digest,
        )
        stored = index.insert_datastore(candidate)
        if stored.id != candidate.id:
            if stored.request_hash != digest:
                raise ConflictError(
                    f"clientToken {client_token} was already used to create datastore {stored.id} "
                    "with different parameters."
                )
            return stored
        if tags:
            index.put_tags(self.env.datastore_arn(stored.id), tags)
        self.env.tasks.submit(f"activate-{stored.id}", lambda: self._activate(stored.id))
        return stored

    def _activate(self, datastore_id: str) -> None:
        import time

        time.sleep(self.env.settings.datastore_transition_seconds)
        ds = self.env.index.get_datastore(datastore_id)
        if ds is not None and ds.status == "CREATING":
            self.env.index.set_datastore_status(datastore_id, "ACTIVE", self.env.clock())

    def get(self, datastore_id: str) -> Datastore:
        ds = self.env.index.get_datastore(datastore_id)
        if ds is None:
            raise NotFoundError(f"Datastore {datastore_id} does not exist.")
        return ds

    def require_active(self, datastore_id: str) -> Datastore:
        """The datastore, if it accepts writes.

        Raises:
            NotFoundError: no such datastore.
            ConflictError: it is not ACTIVE (creating, deleting or deleted).
        """
        ds = self.get(datastore_id)
        if ds.status != "ACTIVE":
            raise ConflictError(
                f"Datastore {datastore_id} is {ds.status}; it must be ACTIVE for this operation."
            )
        return ds

    def list(
        self, *, status: str | None, max_results: int | None, next_token: str | None
    ) -> tuple[list[Datastore], str | None]:
        query: dict[str, Any] = {"status": status}
        cursor = self.paginator.resolve(next_token, "ListDatastores", query)
        limit = max_results or 50
        after = (float(cursor[0]), str(cursor[1])) if cursor else None
        rows = self.env.index.list_datastores(status, after, limit + 1)
        token = None
        if len(rows) > limit:
            rows = rows[:limit]
            token = self.paginator.issue("ListDatastores", query, [rows[-1].created_at, rows[-1].id])
        return rows, token

    def delete(self, datastore_id: str) -> Datastore:
        """Start deleting an empty datastore (DELETING, then DELETED in the background).

        Raises:
            NotFoundError: no such datastore.
            ConflictError: it still holds image sets, or is still being created.
        """
        ds = self.get(datastore_id)
        if ds.status in ("DELETING", "DELETED"):
            return ds
        if ds.status == "CREATING":
            raise ConflictError(f"Datastore {datastore_id} is still being created; retry when it is ACTIVE.")
        remaining = self.env.index.count_image_sets(datastore_id)
        if remaining:
            raise ConflictError(
                f"Datastore {datastore_id} still holds {remaining} image set(s); delete them before the datastore."
            )
        if self.env.index.count_jobs(datastore_id, ("SUBMITTED", "IN_PROGRESS")):
            raise ConflictError(
                f"Datastore {datastore_id} has import jobs in progress; wait for them to finish."
            )
        now = self.env.clock()
        self.env.index.set_datastore_status(datastore_id, "DELETING", now)
        ds.status = "DELETING"
        ds.updated_at = now
        self.env.tasks.submit(f"delete-{datastore_id}", lambda: self._finish_delete(datastore_id))
        return ds

    def _finish_delete(self, datastore_id: str) -> None:
        import time

        time.sleep(self.env.settings.datastore_transition_seconds)
        self.env.index.set_datastore_status(datastore_id, "DELETED", self.env.clock())

    def recover(self) -> None:
        """At start: finish transitions a previous process left half-done."""
        for status, target in (("CREATING", "ACTIVE"), ("DELETING", "DELETED")):
            after = None
            while True:
                rows = self.env.index.list_datastores(status, after, 200)
                for ds in rows:
                    self.env.index.set_datastore_status(ds.id, target, self.env.clock())
                if len(rows) < 200:
                    break
                after = (rows[-1].created_at, rows[-1].id)
