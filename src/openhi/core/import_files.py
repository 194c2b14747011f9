"""An import job's files through the pixel pool: read, verify, transcode, store frames; results in order."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, replace
from functools import partial

from openhi.core import telemetry
from openhi.core.keys import frame_key
from openhi.dicom.instance import InstanceRejected, ProcessedInstance, process_instance
from openhi.dicom.json_dataset import MetadataOverride
from openhi.ports.blobs import BlobStore
from openhi.ports.objects import ObjectInfo, ObjectStore

#: Files per pixel-pool task at most (smaller for small jobs and at a job's end).
MAX_BATCH = 8
TOO_BIG = "File of {} bytes exceeds the per-file maximum of {} bytes."


@dataclass(frozen=True)
class FileJob:
    """What every file of one job is imported with (pickled once per pool task)."""

    objects: ObjectStore
    bucket: str
    blobs: BlobStore
    datastore_id: str
    storage_format: str
    overrides: tuple[MetadataOverride, ...] = ()


def import_one(work: FileJob, key: str) -> ProcessedInstance:
    """Read, verify and transcode one file, then store its frames; runs in a pixel-pool process.

    Frames are written here, before any metadata or index row refers to them, and only the small
    metadata crosses back to the server process.

    Raises:
        InstanceRejected: the file is not acceptable DICOM (reported as a failure entry).
    """
    processed = telemetry.transcoded(
        process_instance, work.objects.get(work.bucket, key), work.storage_format, work.overrides
    )
    for frame in processed.frames:  # flushed before commit
        work.blobs.put(frame_key(work.datastore_id, frame.frame_id), frame.data, durable=False)
    return replace(processed, frames=[])


def import_batch(work: FileJob, keys: list[str]) -> list[ProcessedInstance | Exception]:
    """``import_one`` for each key, in order; a file's exception is its result (one pool task, many files).

    Batching divides the per-task cost of the process pool (pickling the stores, queue hops, the
    executor's bookkeeping on both sides) by the batch size.
    """
    out: list[ProcessedInstance | Exception] = []
    for key in keys:
        try:
            out.append(import_one(work, key))
        except Exception as exc:
            out.append(picklable(exc))
    return out


def picklable(exc: Exception) -> Exception:
    """The exception itself when it survives the trip back to the server process, else its message."""
    if isinstance(exc, InstanceRejected):
        return exc
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(str(exc))
    return exc


def too_big(info: ObjectInfo, max_file: int) -> InstanceRejected:
    return InstanceRejected("ValidationException", TOO_BIG.format(info.size, max_file))


def process_files(
    work: FileJob, objects: Sequence[ObjectInfo], pool: Executor | None, max_file: int
) -> Iterator[tuple[ObjectInfo, ProcessedInstance | BaseException]]:
    """Each file with its result (a processed instance or the exception), in the pool when there is one.

    Results come back as batches finish, not in input order. Leaving the iterator early cancels the
    batches not started yet.
    """
    if pool is None:
        for info in objects:
            result: ProcessedInstance | Exception
            try:
                result = too_big(info, max_file) if info.size > max_file else import_one(work, info.key)
            except Exception as exc:
                result = exc
            yield info, result
        return
    batch_work = partial(import_batch, work)
    workers = max(1, getattr(pool, "_max_workers", 2))
    in_flight: dict[Future[list[ProcessedInstance | Exception]], list[ObjectInfo]] = {}
    limit = 2 * workers  # batches: one running and one queued per worker keep every worker busy
    position = 0
    try:
        while in_flight or position < len(objects):
            while position < len(objects) and len(in_flight) < limit:
                # batches shrink towards the end so that the workers finish together
                size = max(1, min(MAX_BATCH, (len(objects) - position) // (2 * workers)))
                batch: list[ObjectInfo] = []
                while position < len(objects) and len(batch) < size:
                    nxt = objects[position]
                    position += 1
                    if nxt.size > max_file:
                        yield nxt, too_big(nxt, max_file)
                    else:
                        batch.append(nxt)
                if batch:
                    in_flight[pool.submit(batch_work, [info.key for info in batch])] = batch
            if not in_flight:
                continue
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for fut in done:
                infos = in_flight.pop(fut)
                error = fut.exception()
                if error is not None:  # the worker died (BrokenProcessPool) or the batch could not run
                    for info in infos:
                        yield info, error
                    continue
                yield from zip(infos, fut.result(), strict=True)
    finally:
        for fut in in_flight:  # abandoned (lease lost): don't let queued files run for nothing
            fut.cancel()
