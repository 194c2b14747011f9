"""The ObjectStore port: the S3-style buckets import jobs read DICOM from and write reports to."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Protocol

from openhi.core.errors import ValidationError

# The bucket part of the modeled S3Uri pattern: s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?
_BUCKET_RE = re.compile(r"[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_S3_URI_MAX = 1024  # the modeled S3Uri length limit
_KEY_MAX = 1024  # S3's own key length limit (UTF-8 bytes)


@dataclass(frozen=True)
class ObjectInfo:
    """One object found by :meth:`ObjectStore.list`: its full key and its size in bytes."""

    key: str
    size: int


class ObjectNotFound(Exception):
    """The bucket exists but holds no object under the key."""


class BucketNotFound(Exception):
    """The bucket does not exist."""


class ObjectStore(Protocol):
    """S3-style buckets of objects; keys are '/'-separated and validated by every adapter."""

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive), sorted by key.

        ``prefix`` is a plain string prefix: ``"in/"`` lists a folder, ``"in"`` would also match
        ``"input/x"``. Raises :class:`BucketNotFound` when the bucket is missing.
        """
        ...

    def get(self, bucket: str, key: str) -> bytes:
        """The object's bytes; :class:`ObjectNotFound` / :class:`BucketNotFound` when missing."""
        ...

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any object already there."""
        ...

    def put_file(self, bucket: str, key: str, file: IO[bytes]) -> None:
        """Store the rest of ``file`` (read in chunks, any size) under ``key``, replacing any object there."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Remove the object under ``key``; nothing happens when there is none."""
        ...

    def exists_bucket(self, bucket: str) -> bool:
        """Whether the bucket exists."""
        ...

    def expecting_owner(self, account_id: str) -> ObjectStore:
        """A view of this store whose reads ask the bucket's owner to be ``account_id``.

        On S3 every ``get`` carries ``x-amz-expected-bucket-owner`` (S3 refuses it with 403 when
        another account owns the bucket: ``get`` raises ``PermissionError``); stores without account
        owners return themselves.
        """
        ...


def _key_problem(text: str, *, object_key: bool) -> str | None:
    """Why ``text`` is not a safe key (``object_key``) or key prefix; ``None`` when it is."""
    if object_key and not text:
        return "the object key is empty"
    if len(text.encode("utf-8", "surrogatepass")) > _KEY_MAX:
        return f"the key is longer than {_KEY_MAX} bytes"
    if text.startswith("/"):
        return "the key starts with '/'"
    if "\\" in text:
        return "the key contains a backslash"
    if "\x00" in text:
        return "the key contains a NUL character"
    if _CONTROL_RE.search(text):
        return "the key contains a control character"
    segments = text.split("/")
    if "" in segments[:-1]:
        return "the key contains an empty path segment ('//')"
    if object_key and segments[-1] == "":
        return "the object key ends with '/'"
    if ".." in segments:
        return "the key contains a '..' segment"
    if "." in segments:
        return "the key contains a '.' segment"
    return None


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` when it matches the modeled bucket pattern, else raise ValidationError."""
    if not _BUCKET_RE.fullmatch(bucket):
        raise ValidationError(
            f"Invalid bucket name {bucket!r}: must match [a-z0-9][.-a-z0-9]{{1,61}}[a-z0-9]"
        )
    return bucket


def validate_key(key: str) -> str:
    """Return ``key`` when it is a safe object key, else raise ValidationError naming the problem."""
    problem = _key_problem(key, object_key=True)
    if problem is not None:
        raise ValidationError(f"Invalid object key {key!r}: {problem}")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` when it is a safe key prefix ('' and a trailing '/' allowed), else raise."""
    problem = _key_problem(prefix, object_key=False)
    if problem is not None:
        raise ValidationError(f"Invalid key prefix {prefix!r}: {problem}")
    return prefix


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix/`` into ``("bucket", "some/prefix/")``.

    The prefix names a folder: a non-empty prefix always comes back ending in ``/`` (so
    ``s3://b/in`` gives ``("b", "in/")``) and the bare bucket (``s3://b`` or ``s3://b/``) gives
    ``""``. Anything outside the modeled pattern, or a prefix that could escape or alias a
    folder (``..``, ``.``, ``//``, a leading ``/``, a backslash, NUL or other control
    characters), raises :class:`~openhi.core.errors.ValidationError` naming the URI.
    """

    def bad(problem: str) -> ValidationError:
        return ValidationError(f"Invalid S3 URI {uri!r}: {problem}")

    if not isinstance(uri, str) or not uri:
        raise bad("must be a non-empty string")
    if len(uri) > _S3_URI_MAX:
        raise bad(f"longer than {_S3_URI_MAX} characters")
    if not uri.startswith("s3://"):
        raise bad("the scheme must be s3://")
    bucket, sep, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET_RE.fullmatch(bucket):
        raise bad(f"bucket name {bucket!r} must match [a-z0-9][.-a-z0-9]{{1,61}}[a-z0-9]")
    if not sep:
        return bucket, ""
    problem = _key_problem(prefix, object_key=False)
    if problem is not None:
        raise bad(problem.replace("the key", "the key prefix"))
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix
