"""Backends chosen by URL scheme: an explicit registry for the index, the blob store and buckets."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from openhi.ports.blobs import BlobStore
from openhi.ports.index import MetadataIndex
from openhi.ports.objects import ObjectStore
from openhi.storage.errors import ConfigurationError

__all__ = ["ConfigurationError", "open_blobs", "open_index", "open_objects"]


def open_index(url: str) -> MetadataIndex:
    """``sqlite:///path`` or ``sqlite:///:memory:`` (``memory://`` is an alias for the latter), or
    ``postgresql://user:password@host:port/db?schema=NAME&pool_max=N`` (``postgres://`` too)."""
    if url == "memory://":
        url = "sqlite:///:memory:"
    if url.startswith("sqlite:///"):
        from openhi.storage.sqlite.index import SqliteIndex

        return SqliteIndex(url[len("sqlite:///") :])
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        try:
            from openhi.storage.postgres.index import PostgresIndex
        except ImportError as exc:
            raise ConfigurationError(
                f"The PostgreSQL index needs psycopg 3 and psycopg-pool ({exc}); install them"
                " (pip install 'psycopg[binary]' psycopg-pool)."
            ) from None
        return PostgresIndex(url)
    raise ConfigurationError(
        f"Unsupported --index URL scheme {scheme!r}; use sqlite:///PATH or postgresql://HOST/DB."
    )


def open_blobs(url: str, s3_endpoint_url: str | None = None) -> BlobStore:
    """``file:///abs/path``, ``file://relative``, ``memory://`` or ``s3://BUCKET/PREFIX``.

    An s3:// store goes through ``s3_endpoint_url`` (AWS S3 when None) and is checked here: the bucket
    exists, the credentials work and the endpoint answers; otherwise ConfigurationError.
    """
    if url == "memory://":
        from openhi.storage.blobs_memory import MemoryBlobStore

        return MemoryBlobStore()
    if url.startswith("file://"):
        from openhi.storage.blobs_fs import FsBlobStore

        return FsBlobStore(Path(url[len("file://") :]))
    if url.startswith("s3://"):
        try:
            from openhi.storage.blobs_s3 import S3BlobStore
        except ImportError as exc:
            raise ConfigurationError(f"s3:// blobs need obstore ({exc}); pip install 'openhi[s3]'.") from None
        store = S3BlobStore(url, endpoint_url=s3_endpoint_url)
        store.check()
        return store
    scheme = urlsplit(url).scheme
    raise ConfigurationError(
        f"Unsupported --blobs URL scheme {scheme!r} in {url!r}; use file://PATH or s3://BUCKET/PREFIX."
    )


def open_objects(data_dir: Path, s3_endpoint_url: str | None) -> ObjectStore:
    """Import input/output buckets: ``<data-dir>/buckets`` unless an S3 endpoint is configured."""
    if s3_endpoint_url:
        from openhi.storage.buckets_s3 import S3ObjectStore

        return S3ObjectStore(s3_endpoint_url)
    from openhi.storage.buckets_fs import FsObjectStore

    root = data_dir / "buckets"
    root.mkdir(parents=True, exist_ok=True)
    return FsObjectStore(root)
