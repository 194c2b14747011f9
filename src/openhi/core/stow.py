"""STOW-RS (and C-STORE): store uploaded DICOM files synchronously through the import core.

One request is one batch, processed exactly like an import job's files (:func:`process_files` in the
pixel pool: verification, transcoding, frames written before any row points at them) and grouped by
the same rules (:class:`InstanceGrouper`: merge into the series' primary image set, create a primary,
or a non-primary set on a conflict), then committed in one transaction without a job
(``commit_store``). Nothing is acknowledged before the blob store is flushed and the commit is done.

Failure reasons are PS3.18 Table I.2-2's ("Store Instances Response Failure Reason Values"):
``A7xx`` refused out of resources, ``A9xx`` data set does not match SOP class, ``Cxxx`` cannot
understand, ``C122`` transfer syntax not supported, ``0110`` processing failure, ``0122`` SOP class not
supported; "additional codes may be used". The standard has none for an instance outside the study
the request names; ``0xC409`` is dcm4chee-arc's (``DIFF_STUDY_INSTANCE_UID`` in its StowRS), where
microsoft/dicom-server answers ``0xA901`` (``MismatchStudyInstanceUid``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from openhi.codec import transfer_syntax as tsx
from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.import_files import FileJob, process_files
from openhi.core.import_group import InstanceGrouper
from openhi.core.records import Datastore
from openhi.dicom.instance import InstanceRejected, ProcessedInstance
from openhi.ports.objects import ObjectInfo, ObjectNotFound, ObjectStore

log = logging.getLogger("openhi.stow")

DICOM_MEDIA_TYPE = "application/dicom"

# PS3.18 Table I.2-2 failure reasons (and 0xC409: see the module docstring)
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
PROCESSING_FAILURE = 0x0110
STUDY_MISMATCH = 0xC409

COMMIT_ATTEMPTS = 5
NOT_DICOM_PART = "The part's media type is {}, not application/dicom."
OTHER_STUDY = "The instance belongs to study {}, not to study {} of the request."
NOT_COMMITTED = (
    "The instance could not be committed after {} attempts: other writers kept changing the same "
    "primary image sets. Store it again."
)
NOT_STORED = "The instance was not stored."
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@dataclass(frozen=True)
class StowPart:
    """One uploaded file: its local path (readable by the pixel pool's processes), its size, and its
    media type as the request declared it (``None``: not declared, taken as ``application/dicom``)."""

    path: Path
    size: int
    media_type: str | None = None


@dataclass(frozen=True)
class StoredInstance:
    """A part stored: the instance, where it went and its warnings (PS3.18 Table I.2-1 codes)."""

    part: int
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    image_set_id: str
    version: int
    is_primary: bool
    warnings: tuple[int, ...] = ()


@dataclass(frozen=True)
class FailedInstance:
    """A part not stored: why (a Failure Reason code and a message), and its UIDs when it could be read."""

    part: int
    reason: int
    message: str
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None


@dataclass
class StowResult:
    """What became of every part of one store request, in part order."""

    stored: list[StoredInstance] = field(default_factory=list)
    failed: list[FailedInstance] = field(default_factory=list)

    @property
    def warned(self) -> bool:
        return any(s.warnings for s in self.stored)


class PartFiles:
    """Local files as a read-only :class:`ObjectStore`: the key is the file's path, the bucket is ignored.

    Picklable, so that pixel-pool processes read the uploaded parts themselves.
    """

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        return iter(())

    def get(self, bucket: str, key: str) -> bytes:
        try:
            return Path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def put(self, bucket: str, key: str, data: bytes) -> None:
        raise PermissionError("uploaded parts are read-only")

    def put_file(self, bucket: str, key: str, file: IO[bytes]) -> None:
        raise PermissionError("uploaded parts are read-only")

    def delete(self, bucket: str, key: str) -> None:
        raise PermissionError("uploaded parts are read-only")

    def exists_bucket(self, bucket: str) -> bool:
        return True

    def expecting_owner(self, account_id: str) -> ObjectStore:
        return self


class StowService:
    """Synchronous stores of DICOM files into a datastore's primary image sets."""

    def __init__(self, env: Env, datastores: DatastoreService) -> None:
        self.env = env
        self.datastores = datastores

    def store(self, datastore_id: str, parts: Sequence[StowPart], study_uid: str | None = None) -> StowResult:
        """Store ``parts`` as one batch; with ``study_uid``, instances of other studies fail.

        The caller owns the part files (and removes them afterwards). Every part ends up in the result,
        stored or failed; a request whose instances all fail still returns normally.

        Raises:
            NotFoundError: no such datastore.
            ConflictError: the datastore is not ACTIVE.
        """
        ds = self.datastores.require_active(datastore_id)
        return StowBatch(self.env, ds, study_uid).run(parts)


class StowBatch(InstanceGrouper):
    def __init__(self, env: Env, ds: Datastore, study_uid: str | None) -> None:
        super().__init__(env, ds.id, f"STOW-RS into {ds.id}")
        self.storage_format = ds.lossless_storage_format
        self.study_uid = study_uid
        self.failed: dict[int, FailedInstance] = {}
        self.part_of: dict[str, int] = {}  # file key -> part index
        self.processed: dict[str, ProcessedInstance] = {}  # file key -> its processed instance
        self.count = 0  # parts in the request

    def run(self, parts: Sequence[StowPart]) -> StowResult:
        self.count = len(parts)
        infos: list[ObjectInfo] = []
        for n, part in enumerate(parts):
            if part.media_type not in (None, DICOM_MEDIA_TYPE):
                self.failed[n] = FailedInstance(n, CANNOT_UNDERSTAND, NOT_DICOM_PART.format(part.media_type))
                continue
            info = ObjectInfo(str(part.path), part.size)
            self.part_of[info.key] = n
            infos.append(info)
        store = PartFiles()
        self._input = (store, "")
        work = FileJob(store, "", self.env.blobs, self.datastore_id, self.storage_format)
        results: list[tuple[int, ObjectInfo, ProcessedInstance | BaseException]] = []
        with self._flushing():
            for info, result in process_files(
                work, infos, self.env.pixel_pool, self.env.settings.max_file_bytes
            ):
                results.append((self.part_of[info.key], info, result))
        matched: set[int] = set()
        seen: dict[str, tuple[str, ProcessedInstance]] = {}
        for _, info, result in sorted(results, key=lambda r: r[0]):  # part order decides duplicates
            self._record(info, result, matched, seen)
        placed = self._commit()
        return self._result(placed)

    def _record(
        self,
        info: ObjectInfo,
        result: ProcessedInstance | BaseException,
        matched: set[int],
        seen: dict[str, tuple[str, ProcessedInstance]],
    ) -> None:
        n = self.part_of[info.key]
        if isinstance(result, ProcessedInstance):
            self.processed[info.key] = result
            if self.study_uid is not None and result.study_uid != self.study_uid:
                self._drop_frames(result)
                message = OTHER_STUDY.format(result.study_uid, self.study_uid)
                self.failed[n] = _failure(n, STUDY_MISMATCH, message, result)
                return
        before = len(self.outcome.failures)
        super()._record(info, result, matched, seen)
        if len(self.outcome.failures) == before:
            return
        message = self.outcome.failures[-1]["exception"]["message"]
        if isinstance(result, ProcessedInstance):  # another part with this SOP Instance UID and other bytes
            self.failed[n] = _failure(n, PROCESSING_FAILURE, message, result)
            return
        sop_class, sop_uid, ts = _peek(info.key)
        if isinstance(result, InstanceRejected):
            if info.size > self.env.settings.max_file_bytes:  # import_files.too_big
                reason = OUT_OF_RESOURCES
            elif ts and ts not in tsx.AS_IS and ts not in tsx.TRANSCODED:
                reason = TRANSFER_SYNTAX_NOT_SUPPORTED
            else:
                reason = CANNOT_UNDERSTAND
        else:
            reason = PROCESSING_FAILURE
        self.failed[n] = FailedInstance(n, reason, message, sop_class, sop_uid)

    def _changing(self, doc: dict[str, Any], items: list[ProcessedInstance]) -> list[ProcessedInstance]:
        """Only instances the primary does not hold as they are: storing the same instance again changes
        nothing (no new version), so a retried request is idempotent."""
        series = doc["Study"]["Series"]
        patient, study = doc["Patient"]["DICOM"], doc["Study"]["DICOM"]
        out = []
        for p in items:
            node = series.get(p.series_uid)
            stored = node["Instances"].get(p.sop_uid) if node is not None else None
            if (
                stored is None
                or not _same_instance(stored, p.instance)
                or not _holds(patient, p.patient)
                or not _holds(study, p.study)
                or not _holds(node["DICOM"], p.series)
            ):
                out.append(p)
        return out

    def _commit(self) -> dict[str, tuple[str, int, bool]]:
        """Group and commit (regrouping after a race); the placement of every stored SOP Instance UID."""
        if not self.outcome.success:
            return {}
        self.env.blobs.flush()  # the frames the pixel workers wrote are durable before any row points at them
        for attempt in range(COMMIT_ATTEMPTS):
            plan = self._plan()
            if plan.creations or plan.appends:
                outcome = self.env.index.commit_store(self.datastore_id, plan.creations, plan.appends)
            else:
                outcome = "ok"  # every instance is stored already, as it is
            if outcome == "ok":
                for p in self.unchanged:  # their new frames: the stored instance keeps its own
                    self._drop_frames(p)
                for entry in plan.rejected:  # refused by the grouping (the set's metadata too large)
                    key = entry["inputFile"]
                    n = self.part_of[key]
                    self._drop_frames(self.processed[key])
                    message = entry["exception"]["message"]
                    self.failed[n] = _failure(n, OUT_OF_RESOURCES, message, self.processed[key])
                return plan.placed
            self.env.index.enqueue_gc(plan.metadata_keys, self.env.clock())  # this attempt's documents
            log.info("%s: commit attempt %d raced another writer; regrouping", self.label, attempt)
            time.sleep(0.05 * (attempt + 1))
        for _key, p in self.outcome.success:
            self._drop_frames(p)
        for key, p in [*self.outcome.success, *((k, q) for k, q, _ in self.outcome.duplicates)]:
            n = self.part_of[key]
            self.failed[n] = _failure(n, PROCESSING_FAILURE, NOT_COMMITTED.format(COMMIT_ATTEMPTS), p)
        return {}

    def _result(self, placed: dict[str, tuple[str, int, bool]]) -> StowResult:
        result = StowResult()
        stored = [*self.outcome.success, *((key, p) for key, p, _ in self.outcome.duplicates)]
        for key, p in stored:
            n = self.part_of[key]
            if n in self.failed or p.sop_uid not in placed:
                continue
            set_id, version, primary = placed[p.sop_uid]
            codes = tuple(int(w["warning_reason_code"]) for w in p.warnings if "warning_reason_code" in w)
            result.stored.append(
                StoredInstance(
                    n,
                    _sop_class(p),
                    p.sop_uid,
                    p.study_uid,
                    p.series_uid,
                    set_id,
                    version,
                    primary,
                    codes,
                )
            )
        result.stored.sort(key=lambda s: s.part)
        done = {s.part for s in result.stored}
        for n in range(self.count):  # a duplicate of an instance the grouping refused, say
            if n not in done and n not in self.failed:
                self.failed[n] = FailedInstance(n, PROCESSING_FAILURE, NOT_STORED)
        result.failed = [self.failed[n] for n in sorted(self.failed)]
        return result


def _failure(n: int, reason: int, message: str, p: ProcessedInstance) -> FailedInstance:
    return FailedInstance(n, reason, message, _sop_class(p) or None, p.sop_uid)


def _sop_class(p: ProcessedInstance) -> str:
    value = p.instance.get("DICOM", {}).get("SOPClassUID")
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value).strip("\x00 ") if value else ""


def _same_instance(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two instance nodes of a document hold the same content (frame IDs aside)."""
    if stored.keys() != new.keys():
        return False
    for key, value in new.items():
        if key != "ImageFrames":
            if stored[key] != value:
                return False
            continue
        old = stored[key]
        if len(old) != len(value):
            return False
        for a, b in zip(old, value, strict=True):
            if {k: v for k, v in a.items() if k != "ID"} != {k: v for k, v in b.items() if k != "ID"}:
                return False
    return True


def _holds(level: dict[str, Any], values: dict[str, Any]) -> bool:
    """Whether a document level already has every attribute of ``values`` with the same value."""
    return all(key in level and level[key] == value for key, value in values.items())


def _peek(path: str) -> tuple[str | None, str | None, str | None]:
    """(SOP Class UID, SOP Instance UID, Transfer Syntax UID) of a refused file, each when readable."""
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        meta = getattr(ds, "file_meta", None)
        ts = meta.get("TransferSyntaxUID") if meta is not None else None
        return _uid(ds.get("SOPClassUID")), _uid(ds.get("SOPInstanceUID")), _uid(ts)
    except Exception:  # not DICOM, or not that far: the failure item goes without its UIDs
        return None, None, None


def _uid(value: Any) -> str | None:
    text = str(value).strip("\x00 ") if value is not None else ""
    return text if len(text) <= 64 and _UID.fullmatch(text) else None
