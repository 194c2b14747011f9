"""S3 ObjectStore: buckets on any S3-compatible endpoint (AWS, SeaweedFS, MinIO), through obstore."""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.exceptions import PermissionDeniedError
from obstore.store import S3Store

from openhi.ports.objects import (
    BucketNotFound,
    ObjectInfo,
    ObjectNotFound,
    validate_bucket,
    validate_key,
    validate_prefix,
)

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

_RETRY: RetryConfig = {
    "max_retries": 5,
    "retry_timeout": timedelta(seconds=60),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2},
}
_CLIENT: ClientConfig = {
    "allow_http": True,
    "connect_timeout": timedelta(seconds=10),
    "timeout": timedelta(minutes=5),
}


def _env_credentials() -> tuple[str | None, str | None, str | None]:
    """(access key, secret key, session token): AWS_* when both set, else OPENHI_S3_*, else none."""
    aws_id, aws_secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if aws_id and aws_secret:
        return aws_id, aws_secret, os.environ.get("AWS_SESSION_TOKEN") or None
    own_id = os.environ.get("OPENHI_S3_ACCESS_KEY_ID")
    own_secret = os.environ.get("OPENHI_S3_SECRET_ACCESS_KEY")
    if own_id and own_secret:
        return own_id, own_secret, None
    return None, None, None


def _missing_bucket(exc: BaseException) -> bool:
    return "NoSuchBucket" in str(exc)


def _denied(exc: BaseException) -> bool:
    """S3 answered 403 (e.g. ``x-amz-expected-bucket-owner`` names another account)."""
    return isinstance(exc, PermissionDeniedError) or "403 Forbidden" in str(exc)


class S3ObjectStore:
    """One obstore ``S3Store`` per bucket (cached), path-style requests against ``endpoint_url``.

    Credentials come from the arguments, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (with
    AWS_SESSION_TOKEN), else OPENHI_S3_ACCESS_KEY_ID/OPENHI_S3_SECRET_ACCESS_KEY; with none at
    all, requests go unsigned (never to an instance-metadata endpoint). Transient failures are
    retried by obstore (5 retries within 60 s, exponential backoff).
    """

    def __init__(
        self,
        endpoint_url: str,
        *,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        session_token: str | None = None
        if access_key_id is None and secret_access_key is None:
            access_key_id, secret_access_key, session_token = _env_credentials()
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together")
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._session_token = session_token
        self._expected_owner: str | None = None
        self._stores: dict[str, S3Store] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        """Picklable for the pixel process pool: connections are re-made on the other side."""
        state = dict(self.__dict__)
        state["_stores"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.endpoint_url!r}, region={self.region!r})"

    def _store(self, bucket: str, *, owned: bool = True) -> S3Store:
        """The bucket's store; ``owned``: with the expected-bucket-owner header, if this view has one."""
        validate_bucket(bucket)
        owner = self._expected_owner if owned else None
        with self._lock:
            store = self._stores.get(f"{bucket}/{owner or ''}")
            if store is None:
                config: dict[str, Any] = {
                    "endpoint": self.endpoint_url,
                    "region": self.region,
                    "virtual_hosted_style_request": False,
                }
                if self._access_key_id is not None:
                    config["access_key_id"] = self._access_key_id
                    config["secret_access_key"] = self._secret_access_key
                    if self._session_token:
                        config["token"] = self._session_token
                else:
                    config["skip_signature"] = True
                client: ClientConfig = _CLIENT
                if owner is not None:
                    client = {**_CLIENT, "default_headers": {"x-amz-expected-bucket-owner": owner}}
                store = S3Store(bucket, client_options=client, retry_config=_RETRY, **config)
                self._stores[f"{bucket}/{owner or ''}"] = store
            return store

    # -- ObjectStore -----------------------------------------------------------------------------

    def expecting_owner(self, account_id: str) -> S3ObjectStore:
        """A copy whose object reads (GET) carry ``x-amz-expected-bucket-owner: account_id``.

        obstore signs this default header on GET requests but not on LIST requests, and S3 refuses
        unsigned ``x-amz-*`` headers: listings go without it, every object read checks the owner.
        """
        view = copy.copy(self)  # through __getstate__: no cached stores, a lock of its own
        view._expected_owner = account_id
        return view

    def exists_bucket(self, bucket: str) -> bool:
        store = self._store(bucket)
        try:
            for _batch in obstore.list(store, chunk_size=1):
                break
        except (FileNotFoundError, ObstoreError) as exc:
            if _missing_bucket(exc):
                return False
            raise
        return True

    def get(self, bucket: str, key: str) -> bytes:
        validate_key(key)
        store = self._store(bucket)
        try:
            return bytes(obstore.get(store, key).bytes())
        except FileNotFoundError as exc:
            if _missing_bucket(exc):
                raise BucketNotFound(f"bucket {bucket!r} does not exist") from None
            raise ObjectNotFound(f"s3://{bucket}/{key} does not exist") from None
        except ObstoreError as exc:
            if _denied(exc):
                raise PermissionError(f"S3 refused reading s3://{bucket}/{key} (403)") from None
            raise

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self._put(bucket, key, data)

    def put_file(self, bucket: str, key: str, file: IO[bytes]) -> None:
        """Streamed: obstore sends a large file as a multipart upload."""
        self._put(bucket, key, file)

    def _put(self, bucket: str, key: str, body: bytes | IO[bytes]) -> None:
        validate_key(key)
        store = self._store(bucket)
        try:
            obstore.put(store, key, body)
        except (FileNotFoundError, ObstoreError) as exc:
            if _missing_bucket(exc):
                raise BucketNotFound(f"bucket {bucket!r} does not exist") from None
            raise

    def delete(self, bucket: str, key: str) -> None:
        validate_key(key)
        store = self._store(bucket)
        try:
            obstore.delete(store, key)
        except FileNotFoundError:
            return
        except ObstoreError as exc:
            if _missing_bucket(exc):
                return
            raise

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        store = self._store(bucket, owned=False)  # see expecting_owner
        # obstore matches prefixes per path segment: ask for the deepest folder, filter the rest.
        folder = prefix.rpartition("/")[0]
        found: list[ObjectInfo] = []
        try:
            for batch in obstore.list(store, prefix=folder or None, chunk_size=1000):
                for meta in batch:
                    key = meta["path"]
                    if key.startswith(prefix):
                        found.append(ObjectInfo(key=key, size=int(meta["size"])))
        except (FileNotFoundError, ObstoreError) as exc:
            if _missing_bucket(exc):
                raise BucketNotFound(f"bucket {bucket!r} does not exist") from None
            if _denied(exc):
                raise PermissionError(f"S3 refused listing s3://{bucket}/{prefix} (403)") from None
            raise
        found.sort(key=lambda info: info.key)
        return iter(found)
