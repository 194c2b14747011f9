"""What the DICOM front doors read: primary image sets by study / series / instance, documents, frames."""

from __future__ import annotations

import functools
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.errors import ConflictError, NotFoundError, ValidationError
from openhi.core.file_body import FileBody
from openhi.core.keys import frame_key
from openhi.core.records import ImageSet
from openhi.dicom.document import decode_document
from openhi.dicom.instance_view import InstanceNotFound, InstanceView, iter_instance_views
from openhi.dicom.instance_view import instance_view as find_instance
from openhi.dicom.stored_frames import J2K_FAMILY, codestream
from openhi.ports.blobs import BlobNotFound

#: decoded documents kept in memory (LRU, by metadata blob key: a key's content never changes)
DOCUMENT_CACHE = 64
#: built answers (DICOM JSON bytes) kept in memory, by the metadata keys they were built from
ANSWER_CACHE = 32
#: a DICOM UID (PS3.5 §9.1): dot-separated numbers, at most 64 characters
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
#: bytes read from the start of a JPEG 2000 family frame file to see whether it is wrapped (JP2/JPH box)
_BOX_HEAD = 12


def require_uid(value: str, name: str) -> str:
    """``value`` when it is a well-formed UID (digits and dots, at most 64 characters).

    Raises ValidationError otherwise (a DICOMweb path names a malformed UID: 400).
    """
    if len(value) > 64 or not _UID.fullmatch(value):
        raise ValidationError(f"{name} {value[:80]!r} is not a valid DICOM UID.")
    return value


@dataclass(frozen=True)
class InstanceFrames:
    """What serving an instance's frames in their stored syntax needs: the frame ids in frame order
    (frame N is ``frame_ids[N - 1]``) and the transfer syntax they are stored in ("" when unknown)."""

    frame_ids: tuple[str, ...]
    stored_ts: str


class DicomReader:
    """Lookups of the DICOMweb / DIMSE / export front doors on the primary (or a named) image set."""

    def __init__(
        self,
        env: Env,
        datastores: DatastoreService,
        touch: Callable[[str, str], object] | None = None,
    ) -> None:
        self.env = env
        self.datastores = datastores
        #: records a retrieval of an image set (its last access and storage tier), as the API's reads do
        self._touch: Callable[[str, str], object] = touch or (lambda datastore_id, image_set_id: None)
        self._docs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._answers: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._instance_rows = True  # False once the index says it has no dicom_instance (adapter stub)
        self._frames_inline: bool | None = None
        # blob key -> local file (a pure function of the key): saves building the path for every frame
        self._local_path = functools.lru_cache(maxsize=4096)(self._local_path_uncached)

    def live_datastore(self, datastore_id: str) -> None:
        """Raises NotFoundError unless the datastore exists and is not being deleted or deleted."""
        ds = self.datastores.get(datastore_id)
        if ds.status in ("DELETING", "DELETED"):
            raise NotFoundError(f"Datastore {datastore_id} does not exist.")

    def head(self, datastore_id: str, image_set_id: str) -> ImageSet:
        """A live image set's head. Raises NotFoundError (unknown or deleted)."""
        head = self.env.index.get_image_set(datastore_id, image_set_id)
        if head is None or head.state == "DELETED":
            self.live_datastore(datastore_id)
            raise NotFoundError(f"Image set {image_set_id} does not exist in datastore {datastore_id}.")
        return head

    def metadata_key(self, head: ImageSet) -> str:
        """The blob key of the head's current metadata document (its content never changes).

        Raises NotFoundError when the set has no content (a copy still running into a new set).
        """
        version = self.env.index.get_version(head.datastore_id, head.id, head.content_version)
        if version is None or version.metadata_key is None:
            raise NotFoundError(f"Image set {head.id} has no metadata yet.")
        return version.metadata_key

    def document(self, head: ImageSet) -> dict[str, Any]:
        """The decoded metadata document of the head's current content (cached; do not modify it).

        Raises NotFoundError when the set has no content (a copy still running into a new set).
        """
        return self.document_at(self.metadata_key(head))

    def document_at(self, key: str) -> dict[str, Any]:
        """The decoded document stored at metadata blob ``key`` (cached; do not modify it).

        Raises NotFoundError when the blob is gone (the image set was deleted meanwhile).
        """
        with self._lock:
            doc = self._docs.get(key)
            if doc is not None:
                self._docs.move_to_end(key)
                return doc
        try:
            doc = decode_document(self.env.blobs.get(key))
        except BlobNotFound:
            raise NotFoundError("The image set's metadata is no longer stored.") from None
        with self._lock:
            self._docs[key] = doc
            while len(self._docs) > DOCUMENT_CACHE:
                self._docs.popitem(last=False)
        return doc

    def cached_answer(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """``build()``, kept (LRU, :data:`ANSWER_CACHE` entries) under ``key``, which must name every
        input of the answer (metadata blob keys are immutable, so they make such keys safe)."""
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None:
                self._answers.move_to_end(key)
                return hit
        data = build()
        with self._lock:
            self._answers[key] = data
            while len(self._answers) > ANSWER_CACHE:
                self._answers.popitem(last=False)
        return data

    # -- locating image sets and instances
    def series_set(
        self, datastore_id: str, study_uid: str, series_uid: str, image_set_id: str | None = None
    ) -> ImageSet:
        """The live primary image set of the series, or the image set ``image_set_id`` (primary or not),
        which must hold that study and series.

        Raises NotFoundError (unknown datastore, study, series, image set, or a set without them).
        """
        if image_set_id is not None:
            head = self.head(datastore_id, image_set_id)
            doc = self.document(head)
            if _study_uid(doc) != study_uid or series_uid not in _series_of(doc):
                raise NotFoundError(
                    f"Series {series_uid} of study {study_uid} is not in image set {image_set_id}."
                )
            self._touch(datastore_id, head.id)
            return head
        primary = self.env.index.find_primary(datastore_id, study_uid, series_uid)
        if primary is None:
            self.live_datastore(datastore_id)
            raise NotFoundError(
                f"Series {series_uid} of study {study_uid} does not exist in datastore {datastore_id}."
            )
        self._touch(datastore_id, primary.id)
        return primary

    def study_sets(
        self, datastore_id: str, study_uid: str, image_set_id: str | None = None
    ) -> list[ImageSet]:
        """The live primary image sets of the study, or just ``image_set_id`` (which must hold it).

        Raises NotFoundError (unknown datastore, study or image set, or a set of another study).
        """
        if image_set_id is not None:
            head = self.head(datastore_id, image_set_id)
            if _study_uid(self.document(head)) != study_uid:
                raise NotFoundError(f"Study {study_uid} is not in image set {image_set_id}.")
            self._touch(datastore_id, head.id)
            return [head]
        heads = self.env.index.list_primary_in_study(datastore_id, study_uid)
        if not heads:
            self.live_datastore(datastore_id)
            raise NotFoundError(f"Study {study_uid} does not exist in datastore {datastore_id}.")
        for head in heads:
            self._touch(datastore_id, head.id)
        return heads

    def series_views(
        self, datastore_id: str, study_uid: str, series_uid: str, image_set_id: str | None = None
    ) -> list[InstanceView]:
        """Every instance of the series (in the document's order). Raises NotFoundError."""
        head = self.series_set(datastore_id, study_uid, series_uid, image_set_id)
        return [v for v in iter_instance_views(self.document(head)) if v.series_uid == series_uid]

    def study_views(
        self, datastore_id: str, study_uid: str, image_set_id: str | None = None
    ) -> list[InstanceView]:
        """Every instance of the study, image set by image set. Raises NotFoundError."""
        views: list[InstanceView] = []
        for head in self.study_sets(datastore_id, study_uid, image_set_id):
            views.extend(iter_instance_views(self.document(head)))
        return views

    def instance_view(
        self,
        datastore_id: str,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        image_set_id: str | None = None,
    ) -> InstanceView:
        """The instance ``sop_uid`` of the series' primary image set (or of ``image_set_id``).

        Raises NotFoundError (unknown datastore, study, series or instance).
        """
        head = self.series_set(datastore_id, study_uid, series_uid, image_set_id)
        try:
            return find_instance(self.document(head), sop_uid, series_uid)
        except InstanceNotFound:
            raise NotFoundError(
                f"Instance {sop_uid} does not exist in series {series_uid} of study {study_uid}."
            ) from None

    def version_document(self, datastore_id: str, image_set_id: str, version: int) -> dict[str, Any]:
        """The metadata document of version ``version`` of image set ``image_set_id`` (cached; do not
        modify it): what ``openhi export`` reads, the version it listed or an older one.

        Raises NotFoundError (unknown datastore, image set or version) and ConflictError (the
        version's operation is still running).
        """
        head = self.head(datastore_id, image_set_id)
        row = self.env.index.get_version(datastore_id, head.id, version) if version > 0 else None
        if row is None:
            raise NotFoundError(f"Version {version} of image set {image_set_id} does not exist.")
        if row.state == "LOCKED":
            raise ConflictError(
                f"Version {version} of image set {image_set_id} is still being processed; retry later."
            )
        if row.metadata_key is None:
            raise NotFoundError(f"Version {version} of image set {image_set_id} has no metadata.")
        doc = self.document_at(row.metadata_key)
        self._touch(datastore_id, head.id)
        return doc

    def version_view(
        self,
        datastore_id: str,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        image_set_id: str,
        version: int,
    ) -> InstanceView:
        """The instance ``sop_uid`` as version ``version`` of image set ``image_set_id`` holds it;
        found without a view of every instance of the document.

        Raises NotFoundError (unknown datastore, image set, version, or an instance not in that version)
        and ConflictError (the version's operation is still running).
        """
        doc = self.version_document(datastore_id, image_set_id, version)
        series = _series_of(doc).get(series_uid)
        instances = series.get("Instances") if isinstance(series, dict) else None
        node = instances.get(sop_uid) if isinstance(instances, dict) else None
        if isinstance(series, dict) and isinstance(node, dict) and _study_uid(doc) == study_uid:
            alone = {**series, "Instances": {sop_uid: node}}  # one view, not one per instance
            one = {"Patient": doc.get("Patient"), "Study": {**doc["Study"], "Series": {series_uid: alone}}}
            return next(iter_instance_views(one))
        raise NotFoundError(
            f"Instance {sop_uid} of series {series_uid} is not in version {version} of image set {image_set_id}."
        )

    def version_views(
        self, datastore_id: str, study_uid: str, series_uid: str | None, image_set_id: str, version: int
    ) -> list[InstanceView]:
        """Every instance of the study (or of its series ``series_uid``) as version ``version`` of image
        set ``image_set_id`` holds it, in the document's order.

        Raises NotFoundError (unknown datastore, image set or version, or a study / series not in that
        version) and ConflictError (the version's operation is still running).
        """
        doc = self.version_document(datastore_id, image_set_id, version)
        if _study_uid(doc) != study_uid or (series_uid is not None and series_uid not in _series_of(doc)):
            what = f"Study {study_uid}" if series_uid is None else f"Series {series_uid} of study {study_uid}"
            raise NotFoundError(f"{what} is not in version {version} of image set {image_set_id}.")
        views = iter_instance_views(doc)
        return [v for v in views if series_uid is None or v.series_uid == series_uid]

    def instance_frames(
        self,
        datastore_id: str,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        image_set_id: str | None = None,
    ) -> InstanceFrames:
        """The frame ids and stored syntax of an instance: one index query for a primary image set
        (``dicom_instance``), else (a named image set, or an index without DICOM rows) the document.

        Raises NotFoundError.
        """
        if image_set_id is None and self._instance_rows:
            try:
                found = self.env.index.dicom_instance_frames(datastore_id, study_uid, series_uid, sop_uid)
            except NotImplementedError:
                self._instance_rows = False
            else:
                if found is None:
                    self.series_set(datastore_id, study_uid, series_uid)  # names what is missing
                    raise NotFoundError(
                        f"Instance {sop_uid} does not exist in series {series_uid} of study {study_uid}."
                    )
                self._touch(datastore_id, found[2])
                return InstanceFrames(tuple(found[0]), found[1] or "")
        view = self.instance_view(datastore_id, study_uid, series_uid, sop_uid, image_set_id)
        return InstanceFrames(view.frame_ids, view.stored_transfer_syntax)

    # -- frames
    @property
    def frames_inline(self) -> bool:
        """Whether serving stored frames is short enough for the server's event loop: an in-process index
        (SQLite) that answers ``dicom_instance`` and blobs that are local files."""
        inline = self._frames_inline
        if inline is None:
            inline = self._frames_inline = bool(
                self.env.index.local_reads
                and self.env.blobs.local_path("frames/inline-probe/inline-probe") is not None
            )
        return inline and self._instance_rows

    def _local_path_uncached(self, blob_key: str) -> str | None:
        path = self.env.blobs.local_path(blob_key)
        return None if path is None else str(path)

    def frame_blob(self, datastore_id: str, frame_id: str, stored_ts: str = "") -> bytes | FileBody:
        """A frame's stored bytes, or (a local file) an open :class:`FileBody` the server can sendfile.
        A JPEG 2000 family frame stored wrapped (JP2/JPH boxes) comes back as bytes, unwrapped.

        Raises NotFoundError when the frame is not stored.
        """
        key = frame_key(datastore_id, frame_id)
        path = self._local_path(key)
        try:
            if path is None:
                data = self.env.blobs.get(key)
                return codestream(data) if stored_ts in J2K_FAMILY else data
            fd = os.open(path, os.O_RDONLY)
        except (BlobNotFound, FileNotFoundError):
            raise NotFoundError(f"Frame {frame_id} is not stored.") from None
        body = FileBody(fd, os.fstat(fd).st_size)
        try:
            if stored_ts in J2K_FAMILY and os.pread(fd, _BOX_HEAD, 0)[4:8] in (b"jP  ", b"ftyp"):
                return codestream(body.read())
        except BaseException:
            body.close()
            raise
        return body

    def local_size(self, datastore_id: str, frame_id: str) -> int | None:
        """The size of a frame's stored file, when frames are local files (None otherwise, or when it
        is not stored)."""
        path = self._local_path(frame_key(datastore_id, frame_id))
        if path is None:
            return None
        try:
            return os.stat(path).st_size
        except OSError:
            return None

    def stored_frame(self, datastore_id: str, frame_id: str, stored_ts: str = "") -> bytes:
        """A frame's stored bytes (a JPEG 2000 family frame as a bare codestream). Raises NotFoundError."""
        data = self.frame_blob(datastore_id, frame_id, stored_ts)
        return data.read() if isinstance(data, FileBody) else data

    def frame_bytes(self, datastore_id: str, view: InstanceView, frame_number: int) -> bytes:
        """The stored bytes of 1-based frame ``frame_number`` of ``view`` (JPH/JP2 wrapper removed).

        Raises NotFoundError (no such frame, or not stored).
        """
        if not 1 <= frame_number <= len(view.frame_ids):
            raise NotFoundError(
                f"Frame {frame_number} does not exist in instance {view.sop_uid} "
                f"({len(view.frame_ids)} frames)."
            )
        return self.stored_frame(datastore_id, view.frame_ids[frame_number - 1], view.stored_transfer_syntax)


def _study_uid(doc: dict[str, Any]) -> str:
    study = doc.get("Study")
    tags = study.get("DICOM") if isinstance(study, dict) else None
    return str(tags.get("StudyInstanceUID") or "") if isinstance(tags, dict) else ""


def _series_of(doc: dict[str, Any]) -> dict[str, Any]:
    study = doc.get("Study")
    series = study.get("Series") if isinstance(study, dict) else None
    return series if isinstance(series, dict) else {}
