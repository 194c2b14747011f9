"""S3 BlobStore: immutable blobs under ``s3://BUCKET/PREFIX`` on any S3-compatible endpoint, through obstore."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from openhi.core.errors import ValidationError
from openhi.ports.blobs import BlobConflict, BlobNotFound
from openhi.ports.objects import parse_s3_uri
from openhi.storage.buckets_s3 import _CLIENT, _RETRY, _env_credentials
from openhi.storage.errors import ConfigurationError

if TYPE_CHECKING:
    from obstore.store import RetryConfig

MULTIPART_THRESHOLD = 8 * 1024 * 1024
"""Blobs larger than this go up as a multipart upload (boto3's default threshold)."""
PART_SIZE = 8 * 1024 * 1024
"""Multipart part size (S3's minimum is 5 MiB for every part but the last)."""

# The start-up check should fail in seconds on a dead endpoint, not after the data path's 60 s.
_CHECK_RETRY: RetryConfig = {
    "max_retries": 2,
    "retry_timeout": timedelta(seconds=10),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1), "base": 2},
}


# obstore runs every call on one process-wide tokio runtime whose threads do not survive fork():
# a child forked after the parent made a call hangs on its first call. Fail loudly instead.
_runtime_pid: int | None = None


def _guard_fork() -> None:
    global _runtime_pid
    pid = os.getpid()
    if _runtime_pid is None:
        _runtime_pid = pid
    elif _runtime_pid != pid:
        raise RuntimeError(
            "S3BlobStore used in a process forked after its parent used obstore: obstore's runtime "
            "does not survive fork() and the call would hang; start pool processes with the "
            "'forkserver' or 'spawn' method (or fork them before any S3 call)"
        )


def _validate_key(key: str) -> str:
    """The FsBlobStore key rules: non-empty, '/'-separated, no empty, '.' or '..' segment, no backslash."""
    if not key or any(p in ("", ".", "..") for p in key.split("/")) or "\\" in key:
        raise ValueError(f"invalid blob key {key!r}")
    return key


def _s3_code(exc: BaseException) -> str | None:
    """The S3 error code quoted in an obstore error's message (HEAD responses carry none)."""
    text = str(exc)
    for code in (
        "NoSuchBucket",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidRange",
        "ExpiredToken",
        "InvalidToken",
    ):
        if f"<Code>{code}</Code>" in text:
            return code
    return None


class S3BlobStore:
    """Blob ``key`` lives at ``s3://BUCKET/PREFIX/key``; path-style requests against ``endpoint_url``.

    Writes are create-only: blobs up to :data:`MULTIPART_THRESHOLD` use one conditional PUT
    (``If-None-Match: *``), larger ones a multipart upload after a HEAD (obstore cannot send a
    condition with a multipart upload, so there a concurrent writer of the same key could win
    the race; keys are unique ids, so only a retry of the same write ever meets an existing blob).
    A put that finds the key taken succeeds when the stored bytes are the same and raises
    :class:`BlobConflict` otherwise.

    Credentials come from the arguments, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (with
    AWS_SESSION_TOKEN), else OPENHI_S3_ACCESS_KEY_ID/OPENHI_S3_SECRET_ACCESS_KEY; with none,
    requests go unsigned. Throttling (429/503), 5xx and transport errors are retried by obstore
    (5 retries within 60 s, exponential backoff from 100 ms). Picklable: the connection pool is
    dropped and re-made lazily on the other side.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
    ) -> None:
        try:
            bucket, prefix = parse_s3_uri(url)
        except ValidationError as exc:
            raise ConfigurationError(f"Invalid --blobs URL: {exc}") from None
        session_token: str | None = None
        if access_key_id is None and secret_access_key is None:
            access_key_id, secret_access_key, session_token = _env_credentials()
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigurationError("access_key_id and secret_access_key must be given together")
        if part_size < 5 * 1024 * 1024:
            raise ValueError("part_size must be at least 5 MiB (the S3 minimum)")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.rstrip("/")
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.region = region
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._session_token = session_token
        self._store: S3Store | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        """Picklable for the pixel process pool: the store is re-made on the other side."""
        state = dict(self.__dict__)
        state["_store"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3BlobStore({self.url!r}, endpoint_url={self.endpoint_url!r}, region={self.region!r})"

    def _where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint_url or 'AWS S3'}"

    def _make_store(self, retry: RetryConfig) -> S3Store:
        config: dict[str, Any] = {"region": self.region}
        if self.endpoint_url:
            config["endpoint"] = self.endpoint_url
            config["virtual_hosted_style_request"] = False
        if self._access_key_id is not None:
            config["access_key_id"] = self._access_key_id
            config["secret_access_key"] = self._secret_access_key
            if self._session_token:
                config["token"] = self._session_token
        else:
            config["skip_signature"] = True
        return S3Store(
            self.bucket, prefix=self.prefix or None, client_options=_CLIENT, retry_config=retry, **config
        )

    def _s3(self) -> S3Store:
        _guard_fork()
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._make_store(_RETRY)
                store = self._store
        return store

    def _missing(self, key: str, exc: BaseException) -> Exception:
        """The error for a 404: the bucket itself gone is a configuration problem, not a missing blob."""
        if _s3_code(exc) == "NoSuchBucket":
            return ConfigurationError(f"S3 bucket {self.bucket!r} does not exist ({self._where()})")
        return BlobNotFound(key)

    # -- BlobStore -------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        _validate_key(key)
        store = self._s3()
        if len(data) > self.multipart_threshold:
            if self._already_stored(key, data):
                return
            try:
                obstore.put(store, key, data, use_multipart=True, chunk_size=self.part_size)
            except FileNotFoundError as exc:
                raise self._missing(key, exc) from None
            return
        for _attempt in range(3):  # the taken key can be collected between the PUT and the HEAD
            try:
                obstore.put(store, key, data, mode="create", use_multipart=False)
                return
            except AlreadyExistsError:
                if self._already_stored(key, data):
                    return
            except FileNotFoundError as exc:
                raise self._missing(key, exc) from None
        raise BlobConflict(f"blob {key!r} keeps appearing and vanishing in {self._where()}")

    def _already_stored(self, key: str, data: bytes) -> bool:
        """True when ``key`` holds exactly ``data``; False when free; BlobConflict when it differs."""
        try:
            meta = obstore.head(self._s3(), key)
        except FileNotFoundError:
            return False
        if int(meta["size"]) == len(data):
            etag = (meta.get("e_tag") or "").strip('"')
            if etag == hashlib.md5(data, usedforsecurity=False).hexdigest():
                return True  # a single-part upload's ETag is the MD5 of its bytes
            try:
                if self.get(key) == data:  # multipart or encrypted: the ETag says nothing, compare
                    return True
            except BlobNotFound:
                return False
        raise BlobConflict(
            f"blob {key!r} already exists in {self._where()} with different content "
            f"({meta['size']} bytes stored, {len(data)} offered); blobs are never rewritten"
        )

    def flush(self) -> None:
        """Nothing to do: S3 acknowledges a put only once it is durable."""

    def get(self, key: str) -> bytes:
        _validate_key(key)
        try:
            return bytes(obstore.get(self._s3(), key).bytes())
        except FileNotFoundError as exc:
            raise self._missing(key, exc) from None

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, cut short at the blob's end (empty past it), as a file read would."""
        _validate_key(key)
        if start < 0 or end < 0:
            raise ValueError(f"negative byte range {start}-{end}")
        store = self._s3()
        try:
            if end <= start:  # S3 cannot express an empty range; still report a missing blob
                obstore.head(store, key)
                return b""
            return bytes(obstore.get_range(store, key, start=start, end=end))
        except FileNotFoundError as exc:
            raise self._missing(key, exc) from None
        except ObstoreError as exc:
            if _s3_code(exc) == "InvalidRange" or "416 Range Not Satisfiable" in str(
                exc
            ):  # start at or past the end
                if self.exists(key):
                    return b""
                raise BlobNotFound(key) from None
            raise

    def delete(self, key: str) -> None:
        _validate_key(key)
        try:
            obstore.delete(self._s3(), key)  # S3 DELETE of a missing key succeeds
        except FileNotFoundError as exc:
            if _s3_code(exc) == "NoSuchBucket":
                raise self._missing(key, exc) from None

    def exists(self, key: str) -> bool:
        _validate_key(key)
        try:
            obstore.head(self._s3(), key)
        except FileNotFoundError:
            return False
        return True

    def local_path(self, key: str) -> Path | None:
        return None

    # -- start-up --------------------------------------------------------------------------------

    def check(self) -> None:
        """List one key under the prefix: the endpoint answers, the bucket exists, the credentials work.

        Raises:
            ConfigurationError: naming the endpoint, the bucket and what is wrong.
        """
        where = self._where()
        _guard_fork()
        try:
            for _batch in obstore.list(self._make_store(_CHECK_RETRY), chunk_size=1):
                break
        except (OSError, ObstoreError) as exc:
            code = _s3_code(exc)
            if code == "NoSuchBucket":
                problem = f"bucket {self.bucket!r} does not exist (create it first)"
            elif code == "InvalidAccessKeyId":
                problem = f"the access key id {self._access_key_id!r} is not known to the endpoint"
            elif code == "SignatureDoesNotMatch":
                problem = "the secret access key is wrong for that access key id (signature mismatch)"
            elif code in ("ExpiredToken", "InvalidToken"):
                problem = "the session token is expired or invalid"
            elif code == "AccessDenied" or "403 Forbidden" in str(exc):
                problem = (
                    "access denied: the credentials may not list the bucket (s3:ListBucket)"
                    if self._access_key_id is not None
                    else "access denied to unsigned requests: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
                )
            elif "error sending request" in str(exc):
                problem = "the endpoint cannot be reached (is it running, is the URL right?)"
            else:
                problem = str(exc).split("\n", 1)[0]
            raise ConfigurationError(f"Blob store {where} is not usable: {problem}") from None
