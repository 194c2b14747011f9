"""C-STORE SCP: instances spooled durably, processed by the import core one by one, committed in batches.

A Storage SCU waits for each C-STORE response before it sends the next instance, so batching cannot
hold responses back. A success status still means the instance survives a ``kill -9``:

1. the received data set is written to the association's spool directory as a Part 10 file and
   fsynced (file and directory) — from then on it is durable;
2. it goes through the import core at once (:func:`process_files`: verification, transcoding, frames
   written), so a bad data set fails its own C-STORE with a status (and the association goes on);
3. the response is sent; the processed instance waits in the association's batch;
4. the batch is committed as one store (``commit_store``: grouping, one new version of the series'
   primary image set) on A-RELEASE (before the A-RELEASE-RP), when it holds :data:`BATCH_INSTANCES`
   instances or :data:`BATCH_BYTES` bytes, after :data:`IDLE_SECONDS` without a C-STORE, or when the
   association ends otherwise (A-ABORT, lost connection: the instances it acknowledged are promised);
   then its spool files are removed.

A process killed between 1 and 4 leaves spool directories: :func:`recover` stores them through
:meth:`StowService.store` when the listener starts again (storing an instance twice changes nothing).
An instance whose transfer was cut off mid-way was never handed to the handler: nothing of it remains.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread

from openhi.core.errors import ConflictError, NotFoundError
from openhi.core.import_files import FileJob, process_files
from openhi.core.stow import FailedInstance, PartFiles, StowBatch, StowPart, StowResult
from openhi.dimse.statuses import (
    CANNOT_UNDERSTAND,
    DATA_SET_MISMATCH,
    OUT_OF_RESOURCES,
    SUCCESS,
    failure_status,
    warning_status,
)
from openhi.ports.objects import ObjectInfo

log = logging.getLogger("openhi.dimse")

#: A batch is committed once it holds this many instances ...
BATCH_INSTANCES = 1000
#: ... or this many bytes of received data sets ...
BATCH_BYTES = 2 * 1024**3
#: ... or when no C-STORE arrived on its association for this long (seconds).
IDLE_SECONDS = 2.0
#: Spool files per store when a restart recovers a spool directory.
RECOVERY_CHUNK = 500


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolDir:
    """One association's spool: durable Part 10 files and the datastore they go to."""

    def __init__(self, root: Path, datastore_id: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        self.path.mkdir()
        (self.path / "datastore").write_text(datastore_id)
        _fsync_dir(self.path)
        _fsync_dir(root)
        self._n = 0

    def write(self, data: bytes) -> Path:
        """Write ``data`` durably (file and directory entry fsynced) and return its path."""
        self._n += 1
        final = self.path / f"{self._n:07d}.dcm"
        tmp = final.with_suffix(".part")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(final)
        _fsync_dir(self.path)
        return final

    def remove(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the directory when nothing is left in it (files a failed commit kept are recovered)."""
        if not any(self.path.glob("*.dcm")):
            shutil.rmtree(self.path, ignore_errors=True)


class _Batch(StowBatch):
    """A store batch filled one instance at a time (each processed as it arrives), committed at once."""

    def __init__(self, env: Any, ds: Any) -> None:
        super().__init__(env, ds, None)
        self._input = (PartFiles(), "")
        self._matched: set[int] = set()
        self._seen: dict[str, Any] = {}
        self.paths: list[Path] = []
        self.bytes = 0
        self.refused: set[int] = set()  # parts whose C-STORE already answered a failure

    def add(self, path: Path, size: int) -> tuple[FailedInstance | None, tuple[int, ...]]:
        """Process one file: its failure (None when accepted) and the warning codes of its processing."""
        n = self.count
        self.count += 1
        info = ObjectInfo(str(path), size)
        self.part_of[info.key] = n
        self.paths.append(path)
        self.bytes += size
        work = FileJob(PartFiles(), "", self.env.blobs, self.datastore_id, self.storage_format)
        max_file = self.env.settings.max_file_bytes
        for done, result in process_files(work, [info], self.env.pixel_pool, max_file):
            self._record(done, result, self._matched, self._seen)
        failure = self.failed.get(n)
        if failure is not None:
            self.refused.add(n)
        processed = self.processed.get(info.key)
        codes: tuple[int, ...] = ()
        if failure is None and processed is not None:
            codes = tuple(
                int(w["warning_reason_code"]) for w in processed.warnings if "warning_reason_code" in w
            )
        return failure, codes

    def finish(self) -> StowResult:
        """Group and commit everything accepted so far (one ``commit_store``)."""
        return self._result(self._commit())


class StoreSession:
    """The C-STORE state of one association: its spool, its open batch, its datastore."""

    def __init__(self, storage: Storage, datastore_id: str | None) -> None:
        self.storage = storage
        self.datastore_id = datastore_id
        self.lock = threading.Lock()
        self.spool: SpoolDir | None = None
        self.batch: _Batch | None = None
        self.last = time.monotonic()
        self.commits = 0

    def store(self, data: bytes, sop_class: str, sop_instance: str) -> Dataset:
        """Store one received Part 10 data set; the response status (success only once durable)."""
        with self.lock:
            self.last = time.monotonic()
            mismatch = _mismatch(data, sop_class, sop_instance)
            if mismatch is not None:
                return status(mismatch[0], mismatch[1])
            if self.datastore_id is None:
                return status(
                    OUT_OF_RESOURCES, "no datastore for this called AE title (see --dicom-datastore)"
                )
            if self.batch is None:
                try:
                    ds = self.storage.services.datastores.require_active(self.datastore_id)
                except (NotFoundError, ConflictError) as exc:
                    return status(OUT_OF_RESOURCES, str(exc))
                self.batch = _Batch(self.storage.services.env, ds)
            if self.spool is None:
                self.spool = SpoolDir(self.storage.spool_root, self.datastore_id)
            path = self.spool.write(data)
            failure, warnings = self.batch.add(path, len(data))
            if failure is not None:
                self.spool.remove([path])
                self.batch.paths.remove(path)
                return status(failure_status(failure.reason), failure.message)
            if (
                len(self.batch.paths) >= self.storage.batch_instances
                or self.batch.bytes >= self.storage.batch_bytes
            ):
                self._commit("size")
            return status(warning_status(warnings) if warnings else SUCCESS)

    def commit(self, reason: str) -> None:
        with self.lock:
            self._commit(reason)

    def idle_commit(self, now: float) -> None:
        """Commit an open batch when no C-STORE came for the idle time (skipped while one is running)."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            if self.batch is not None and now - self.last >= self.storage.idle_seconds:
                self._commit("idle")
        finally:
            self.lock.release()

    def _commit(self, reason: str) -> None:
        batch, self.batch = self.batch, None
        if batch is None or not batch.paths:
            return
        assert self.spool is not None
        try:
            result = batch.finish()
        except Exception:  # the files stay in the spool: the next start stores them
            log.exception(
                "C-STORE batch of %d instances into %s not committed", len(batch.paths), self.datastore_id
            )
            return
        self.commits += 1
        for failed in (
            f for f in result.failed if f.part not in batch.refused
        ):  # acknowledged, then refused by the grouping (rare): say so loudly
            log.error(
                "C-STORE instance %s acknowledged but not stored: %s", failed.sop_instance_uid, failed.message
            )
        log.info(
            "C-STORE batch into %s committed (%s): %d stored, %d failed",
            self.datastore_id,
            reason,
            len(result.stored),
            len(result.failed),
        )
        self.spool.remove(batch.paths)

    def end(self) -> None:
        """The association is over: commit what it acknowledged and drop its spool directory."""
        with self.lock:
            self._commit("end")
            if self.spool is not None:
                self.spool.close()
                self.spool = None


class Storage:
    """The Storage SCP of a listener: one :class:`StoreSession` per association, an idle-commit thread."""

    def __init__(
        self,
        services: Any,
        resolve: Callable[[str], str | None],
        *,
        batch_instances: int = BATCH_INSTANCES,
        batch_bytes: int = BATCH_BYTES,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.services = services
        self.resolve = resolve  # called AE title -> datastore ID (None: none)
        self.spool_root = spool_root(services)
        self.batch_instances = batch_instances
        self.batch_bytes = batch_bytes
        self.idle_seconds = idle_seconds
        self.sessions: dict[int, StoreSession] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._idle_loop, name="openhi-dimse-idle", daemon=True)
        self._thread.start()

    def session(self, assoc: Any) -> StoreSession:
        with self._lock:
            found = self.sessions.get(id(assoc))
            if found is None:
                called = called_aet(assoc)
                found = self.sessions[id(assoc)] = StoreSession(self, self.resolve(called))
            return found

    # -- event handlers (bound by the listener)
    def on_store(self, event: Any) -> Dataset:
        rq = event.request
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # no data set, or file meta that cannot be written
            return status(CANNOT_UNDERSTAND, f"data set unreadable: {exc}"[:64])
        try:
            return self.session(event.assoc).store(
                data, str(rq.AffectedSOPClassUID), str(rq.AffectedSOPInstanceUID)
            )
        except OSError as exc:  # the spool's disk is full or gone
            log.exception("C-STORE spool write failed")
            return status(OUT_OF_RESOURCES, f"spool: {exc.strerror or exc}")

    def on_acse(self, event: Any) -> None:
        """A-RELEASE-RQ received: commit before the A-RELEASE-RP goes out (the SCU then finds its data)."""
        primitive = event.primitive
        if type(primitive).__name__ == "A_RELEASE" and primitive.result is None:
            with self._lock:
                found = self.sessions.get(id(event.assoc))
            if found is not None:
                found.commit("release")

    def on_close(self, event: Any) -> None:
        with self._lock:
            found = self.sessions.pop(id(event.assoc), None)
        if found is not None:
            found.end()

    def _idle_loop(self) -> None:
        while not self._stop.wait(min(0.5, self.idle_seconds / 2)):
            with self._lock:
                sessions = list(self.sessions.values())
            now = time.monotonic()
            for found in sessions:
                try:
                    found.idle_commit(now)
                except Exception:
                    log.exception("idle C-STORE commit failed")

    def close(self) -> None:
        """Stop the idle thread and commit every open batch."""
        self._stop.set()
        with self._lock:
            sessions = list(self.sessions.values())
            self.sessions.clear()
        for found in sessions:
            found.end()


def called_aet(assoc: Any) -> str:
    """The AE title the peer called (the server's own title is ``assoc.acceptor.ae_title``)."""
    primitive = assoc.requestor.primitive
    return str(primitive.called_ae_title).strip() if primitive is not None else ""


def status(code: int, comment: str | None = None) -> Dataset:
    """A C-STORE response's status data set (Error Comment: 64 characters at most)."""
    ds = Dataset()
    ds.Status = code
    if comment and code != SUCCESS:
        ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds


def _mismatch(data: bytes, sop_class: str, sop_instance: str) -> tuple[int, str] | None:
    """0xA900 when the data set's SOP Class / Instance UIDs are not the request's (PS3.4 B.2.3)."""
    try:
        ds = dcmread(
            io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"]
        )
    except Exception:  # the import core reports what it cannot read
        return None
    found_class = str(ds.get("SOPClassUID", "")).strip("\x00 ")
    found_uid = str(ds.get("SOPInstanceUID", "")).strip("\x00 ")
    if found_class and found_class != sop_class.strip("\x00 "):
        return DATA_SET_MISMATCH, f"SOP Class UID {found_class} is not the request's"
    if found_uid and found_uid != sop_instance.strip("\x00 "):
        return DATA_SET_MISMATCH, f"SOP Instance UID {found_uid} is not the request's"
    return None


def spool_root(services: Any) -> Path:
    """Where associations spool received instances (under the data directory)."""
    base = services.scratch_dir if services.scratch_dir is not None else Path(".")
    return Path(base) / "dimse-spool"


def recover(services: Any) -> int:
    """Store what killed processes left in the spool (acknowledged, not committed); the files stored.

    A spool whose datastore is gone is dropped (logged); one that fails otherwise stays for next time.
    """
    root = spool_root(services)
    if not root.is_dir():
        return 0
    stored = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            ds_id = (folder / "datastore").read_text().strip()
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)  # created and killed before it held anything
            continue
        files = sorted(folder.glob("*.dcm"))
        try:
            for start in range(0, len(files), RECOVERY_CHUNK):
                chunk = files[start : start + RECOVERY_CHUNK]
                parts = [StowPart(path, path.stat().st_size) for path in chunk]
                result = services.stow.store(ds_id, parts)
                stored += len(result.stored)
                for failed in result.failed:
                    log.error("spooled instance %s not stored: %s", failed.sop_instance_uid, failed.message)
        except (NotFoundError, ConflictError) as exc:
            log.error("dropping spooled C-STORE instances of %s: %s", ds_id, exc)
        except Exception:
            log.exception("spooled C-STORE instances of %s not recovered; kept for the next start", ds_id)
            continue
        shutil.rmtree(folder, ignore_errors=True)
    if stored:
        log.warning("stored %d acknowledged C-STORE instances a previous process left uncommitted", stored)
    return stored
