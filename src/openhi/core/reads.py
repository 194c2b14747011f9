"""Image set reads: properties, versions, metadata documents, frames (with Accept negotiation) and search."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from typing import Any

from openhi.codec.jph import SOC_SIZ, wrap_jph
from openhi.codec.transfer_syntax import HTJ2K_RPCL, content_type
from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.errors import ConflictError, NotAcceptableError, NotFoundError
from openhi.core.file_body import FileBody
from openhi.core.pagination import Paginator
from openhi.core.records import ImageSet, ImageSetVersion
from openhi.core.search import parse_criteria, query_fingerprint, sort_echo, study_datetime_key
from openhi.core.touches import TouchBuffer
from openhi.dicom.document import current_body
from openhi.ports.blobs import BlobNotFound

MAX_PAGE = 50
JPH = "image/jph"
JPHC = "image/jphc"
#: bytes read from the start of a frame file: SOC and a SIZ segment of up to 100 components
HEAD_BYTES = 4 + 38 + 3 * 100
_HTJ2K_OFFERED = [JPH, JPHC]


@dataclass
class ImageSetView:
    """What GetImageSet answers: the head for the latest version, the version row for an older one."""

    datastore_id: str
    image_set_id: str
    version: int
    state: str
    workflow_status: str
    created_at: float
    updated_at: float
    deleted_at: float | None
    message: str | None
    forced: bool
    is_primary: bool
    last_accessed_at: float | None
    storage_tier: str


@dataclass
class Frame:
    """A frame's answer: the bytes, or an open local file with the JPH boxes as its prefix."""

    data: bytes | FileBody
    content_type: str


@dataclass
class SearchPage:
    image_sets: list[ImageSet]
    sort: dict[str, str]
    next_token: str | None


def _media_ranges(accept: str) -> list[tuple[float, str]]:
    """``(q, media-range)`` pairs of an Accept header, best first (stable for equal q)."""
    ranges: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            ranges.append((-q, i, media.lower()))
    return [(-q, media) for q, _, media in sorted(ranges)]


def negotiate(accept: str | None, offered: list[str]) -> str:
    """The media type to answer with: ``offered[0]`` is the default (the stored type).

    Raises:
        NotAcceptableError: the Accept header allows none of ``offered``.
    """
    if accept is None or not accept.strip():
        return offered[0]
    for _q, media in _media_ranges(accept):
        if media in ("*/*", "*"):
            return offered[0]
        if media.endswith("/*"):
            prefix = media[:-1]
            for candidate in offered:
                if candidate.lower().startswith(prefix):
                    return candidate
            continue
        for candidate in offered:
            if candidate.lower() == media:
                return candidate
    raise NotAcceptableError(
        f"Accept header {accept!r} matches no available representation of this frame; "
        f"acceptable types: {', '.join([*offered, '*/*'])}."
    )


class ImageSetReader:
    def __init__(self, env: Env, paginator: Paginator, datastores: DatastoreService) -> None:
        self.env = env
        self.paginator = paginator
        self.datastores = datastores
        self.touches = TouchBuffer(env)
        self._frames_inline: bool | None = None
        # blob key -> local file (a pure function of the key): saves building the path for every frame
        self._local_path = functools.lru_cache(maxsize=4096)(self._local_path_uncached)

    def close(self) -> None:
        self.touches.close()

    # -- lookups
    def _head(self, datastore_id: str, image_set_id: str) -> ImageSet:
        head = self.env.index.get_image_set(datastore_id, image_set_id)
        if head is None:
            self.datastores.get(datastore_id)  # names the datastore when that is what is missing
            raise NotFoundError(f"Image set {image_set_id} does not exist in datastore {datastore_id}.")
        pending = self.touches.pending(datastore_id, image_set_id)
        if pending is not None:
            head = replace(head, last_accessed_at=pending, storage_tier="FREQUENT_ACCESS")
        return head

    def _live_head(self, datastore_id: str, image_set_id: str) -> ImageSet:
        head = self._head(datastore_id, image_set_id)
        if head.state == "DELETED":
            raise NotFoundError(f"Image set {image_set_id} was deleted from datastore {datastore_id}.")
        return head

    def _version(self, head: ImageSet, version_id: str | int) -> ImageSetVersion:
        number = int(version_id)
        row = self.env.index.get_version(head.datastore_id, head.id, number) if number > 0 else None
        if row is None:
            raise NotFoundError(f"Version {version_id} of image set {head.id} does not exist.")
        return row

    # -- GetImageSet / ListImageSetVersions
    def get_image_set(
        self, datastore_id: str, image_set_id: str, version_id: str | None = None
    ) -> ImageSetView:
        head = self._head(datastore_id, image_set_id)
        number = head.latest_version if version_id is None else int(version_id)
        row = self._version(head, number)
        latest = number == head.latest_version
        src: ImageSet | ImageSetVersion = head if latest else row
        return ImageSetView(
            datastore_id=datastore_id,
            image_set_id=head.id,
            version=number,
            state=src.state,
            workflow_status=src.workflow_status,
            created_at=head.created_at,
            updated_at=src.updated_at,
            deleted_at=src.deleted_at,
            message=row.message,
            forced=row.forced,
            is_primary=src.is_primary,
            last_accessed_at=head.last_accessed_at,
            storage_tier=head.storage_tier,
        )

    def list_versions(
        self, datastore_id: str, image_set_id: str, *, max_results: int | None, next_token: str | None
    ) -> tuple[list[ImageSetVersion], str | None]:
        self._head(datastore_id, image_set_id)
        query = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        cursor = self.paginator.resolve(next_token, "ListImageSetVersions", query)
        before = int(cursor[0]) if cursor else None
        limit = max_results or MAX_PAGE
        rows = self.env.index.list_versions(datastore_id, image_set_id, before, limit + 1)
        token = None
        if len(rows) > limit:
            rows = rows[:limit]
            token = self.paginator.issue("ListImageSetVersions", query, [rows[-1].version])
        return rows, token

    # -- GetImageSetMetadata
    def metadata(self, datastore_id: str, image_set_id: str, version_id: str | None = None) -> bytes:
        """The stored gzip JSON document, byte for byte (not decompressed), unless it was written by an
        earlier version with padded text values: then the normalised document. Counts as a touch.

        Raises:
            NotFoundError: unknown datastore, image set or version; the set was deleted.
            ConflictError: the requested version's operation is still running.
        """
        head = self._live_head(datastore_id, image_set_id)
        row = self._version(head, head.content_version if version_id is None else version_id)
        if row.state == "LOCKED":
            raise ConflictError(
                f"Version {row.version} of image set {image_set_id} is still being processed "
                f"({row.workflow_status}); retry when it has finished."
            )
        if row.metadata_key is None:
            raise NotFoundError(f"Version {row.version} of image set {image_set_id} has no metadata.")
        try:
            data = self.env.blobs.get(row.metadata_key)
        except BlobNotFound:
            raise NotFoundError(f"The metadata of image set {image_set_id} is no longer stored.") from None
        self.touches.touch(datastore_id, image_set_id)
        return current_body(data)  # a header check; only documents of earlier versions are re-encoded

    # -- GetImageFrame
    @property
    def frames_inline(self) -> bool:
        """Whether :meth:`frame` is short enough to run on the server's event loop: an in-process index
        (SQLite) and blobs that are local files, so a frame costs tens of microseconds and no network wait."""
        inline = self._frames_inline
        if inline is None:
            inline = self._frames_inline = (
                self.env.index.local_reads
                and self.env.blobs.local_path("frames/inline-probe/inline-probe") is not None
            )
        return inline

    def _frame_blob(self, blob_key: str) -> bytes | FileBody:
        """``blobs.get``; a blob that is a local file comes back open, as a :class:`FileBody` the server
        can send with sendfile (:meth:`frame` reads its first :data:`HEAD_BYTES` for its checks)."""
        path = self._local_path(blob_key)
        if path is None:
            return self.env.blobs.get(blob_key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(blob_key) from None
        try:
            body = FileBody(fd, os.fstat(fd).st_size)
        except BaseException:
            os.close(fd)
            raise
        return body

    def _local_path_uncached(self, blob_key: str) -> str | None:
        path = self.env.blobs.local_path(blob_key)
        return None if path is None else str(path)

    def frame(self, datastore_id: str, image_set_id: str, frame_id: str, accept: str | None = None) -> Frame:
        """A frame in its stored syntax (HTJ2K RPCL as a JPH file, or bare as image/jphc). A touch.

        Raises:
            NotFoundError: unknown datastore, image set or frame; the set was deleted.
            NotAcceptableError: ``accept`` allows none of the frame's representations.
        """
        found = self.env.index.get_frame_for_read(datastore_id, image_set_id, frame_id)
        if found is None:
            self.datastores.get(datastore_id)  # names the datastore when that is what is missing
            raise NotFoundError(f"Image set {image_set_id} does not exist in datastore {datastore_id}.")
        state, ref = found
        if state == "DELETED":
            raise NotFoundError(f"Image set {image_set_id} was deleted from datastore {datastore_id}.")
        if ref is None:
            raise NotFoundError(f"Image frame {frame_id} does not exist in image set {image_set_id}.")
        try:
            data = self._frame_blob(ref.blob_key)
        except BlobNotFound:
            raise NotFoundError(
                f"Image frame {frame_id} of image set {image_set_id} is not stored."
            ) from None
        try:
            head = os.pread(data.fileno(), HEAD_BYTES, 0) if isinstance(data, FileBody) else data
            htj2k_rpcl = ref.stored_ts == HTJ2K_RPCL or (not ref.stored_ts and head[:4] == SOC_SIZ)
            offered = _HTJ2K_OFFERED if htj2k_rpcl else [content_type(ref.stored_ts or None)]
            chosen = offered[0] if accept is None else negotiate(accept, offered)
            if htj2k_rpcl and chosen == JPH:
                data = _as_jph(data, head)
        except BaseException:
            if isinstance(data, FileBody):
                data.close()
            raise
        self.touches.touch(datastore_id, image_set_id)
        return Frame(data, chosen)

    # -- SearchImageSets
    def search(
        self,
        datastore_id: str,
        criteria: dict[str, Any] | None,
        *,
        max_results: int | None,
        next_token: str | None,
    ) -> SearchPage:
        self.datastores.get(datastore_id)
        query = parse_criteria(criteria)
        fingerprint = query_fingerprint(datastore_id, query)
        cursor = self.paginator.resolve(next_token, "SearchImageSets", fingerprint)
        after = (cursor[0], str(cursor[1])) if cursor else None
        limit = max_results or MAX_PAGE
        rows = self.env.index.search_image_sets(datastore_id, query, after, limit + 1)
        token = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            token = self.paginator.issue(
                "SearchImageSets", fingerprint, [cursor_value(last, query.sort_field), last.id]
            )
        for i, row in enumerate(rows):
            pending = self.touches.pending(datastore_id, row.id)
            if pending is not None:
                rows[i] = replace(row, last_accessed_at=pending, storage_tier="FREQUENT_ACCESS")
        return SearchPage(rows, sort_echo(query), token)


@functools.lru_cache(maxsize=256)
def _jph_prefix(siz: bytes) -> bytes:
    """The JPH boxes that come before the codestream box, for a codestream that starts with ``siz`` (SOC and
    the SIZ segment, all that ``wrap_jph`` reads). Frames of one geometry share it, so it is cached."""
    wrapped = wrap_jph(siz)
    return wrapped[: len(wrapped) - len(siz) - 8]


def _as_jph(data: bytes | FileBody, head: bytes) -> bytes | FileBody:
    """``wrap_jph(codestream)``, byte for byte: the JPH boxes are a prefix (cached per SIZ segment) before
    the unchanged codestream, which an open file keeps as it is (``head``: the codestream's first bytes)."""
    size = len(data)
    siz_end = 4 + int.from_bytes(head[4:6], "big") if len(head) >= 6 else size + 1
    if siz_end > len(head):  # no complete SIZ in the head (tiny or odd codestream): the plain way
        codestream = data.read() if isinstance(data, FileBody) else data
        return wrap_jph(codestream)  # fails exactly as wrap_jph does when there is no SIZ at all
    prefix = _jph_prefix(head[:siz_end]) + (8 + size).to_bytes(4, "big") + b"jp2c"
    if isinstance(data, FileBody):
        data.prefix = prefix
        return data
    return b"".join((prefix, data))


def cursor_value(row: ImageSet, column: str) -> Any:
    """The value of sort column ``column`` for ``row``, as a SearchImageSets page cursor carries it."""
    if column == "study_datetime":
        return study_datetime_key(row.search.get("DICOMStudyDate"), row.search.get("DICOMStudyTime"))
    return row.updated_at if column == "updated_at" else row.created_at
