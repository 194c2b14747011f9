"""A write's background half: the LOCKED version it finishes, and the writer interface copies use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.dicom.index_rows import DicomRows
from openhi.ports.index import LockRequest, VersionCommit


@dataclass
class Pending:
    """One LOCKED version and what its background half commits."""

    row: ImageSetVersion
    prev_key: str | None  # the content before this version (what a failure keeps)
    doc: dict[str, Any] | None = None  # new content to write
    reuse_key: str | None = None  # revert: the target version's blob, reused as is
    search: dict[str, Any] | None = None
    dicom: DicomRows | None = None  # the DICOM index rows of ``doc`` (or of the reverted-to content)
    frames: list[FrameRef] = field(default_factory=list)
    fail_message: str | None = None  # decided up front: the version ends *_FAILED with this message


class VersionWriter(Protocol):
    """What a versioned write (a copy) needs from :class:`openhi.core.writes.ImageSetWriter`."""

    env: Env
    datastores: DatastoreService

    def head(self, datastore_id: str, image_set_id: str) -> ImageSet: ...

    def writable(self, head: ImageSet, expected: int | None) -> None: ...

    def content_key(self, head: ImageSet) -> str | None: ...

    def load(self, head: ImageSet) -> dict[str, Any]: ...

    def new_row(self, head: ImageSet, status: str, *, forced: bool = False) -> ImageSetVersion: ...

    def lock(
        self,
        datastore_id: str,
        locks: list[LockRequest],
        creates: Sequence[tuple[ImageSet, ImageSetVersion]] = (),
    ) -> None: ...

    def finish_later(
        self, datastore_id: str, pendings: list[Pending], extra: list[VersionCommit]
    ) -> None: ...
