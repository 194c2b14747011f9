"""Backends chosen by URL scheme: an explicit registry for the index, the blob store and buckets."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from openhi.ports.blobs import BlobStore
from openhi.ports.index import MetadataIndex
from openhi.ports.objects import ObjectStore


class ConfigurationError(Exception):
    """A backend URL that cannot be used; the message says why."""


def open_index(url: str) -> MetadataIndex:
    """``sqlite:///path`` or ``sqlite:///:memory:`` (``memory://`` is an alias for the latter)."""
    if url == "memory://":
        url = "sqlite:///:memory:"
    if url.startswith("sqlite:///"):
        from openhi.storage.sqlite.index import SqliteIndex

        return SqliteIndex(url[len("sqlite:///") :])
    scheme = urlsplit(url).scheme
    raise ConfigurationError(f"Unsupported --index URL scheme {scheme!r} in {url!r}; use sqlite:///PATH.")


def open_blobs(url: str) -> BlobStore:
    """``file:///abs/path``, ``file://relative`` or ``memory://``."""
    if url == "memory://":
        from openhi.storage.blobs_memory import MemoryBlobStore

        return MemoryBlobStore()
    if url.startswith("file://"):
        from openhi.storage.blobs_fs import FsBlobStore

        return FsBlobStore(Path(url[len("file://") :]))
    scheme = urlsplit(url).scheme
    raise ConfigurationError(f"Unsupported --blobs URL scheme {scheme!r} in {url!r}; use file://PATH.")


def open_objects(data_dir: Path, s3_endpoint_url: str | None) -> ObjectStore:
    """Import input/output buckets: ``<data-dir>/buckets`` unless an S3 endpoint is configured."""
    if s3_endpoint_url:
        from openhi.storage.buckets_s3 import S3ObjectStore

        return S3ObjectStore(s3_endpoint_url)
    from openhi.storage.buckets_fs import FsObjectStore

    root = data_dir / "buckets"
    root.mkdir(parents=True, exist_ok=True)
    return FsObjectStore(root)
