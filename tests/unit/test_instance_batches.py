"""Import files in batches per pixel-pool task: every file comes back once, with its own result or error."""

from __future__ import annotations

import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from openhi.core.import_files import FileJob, import_batch, picklable, process_files
from openhi.dicom.instance import InstanceRejected, ProcessedInstance
from openhi.ports.objects import ObjectInfo, ObjectNotFound
from openhi.storage.blobs_fs import FsBlobStore
from openhi.storage.buckets_fs import FsObjectStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_factory as factory

BUCKET = "batch-in"


@pytest.fixture
def stores(tmp_path: Path) -> tuple[FsObjectStore, FsBlobStore]:
    return FsObjectStore(tmp_path / "buckets"), FsBlobStore(tmp_path / "blobs")


def test_import_batch_returns_one_result_per_key_in_order(stores: tuple[FsObjectStore, FsBlobStore]) -> None:
    objects, blobs = stores
    good = factory.make_ct_series(2, rows=16, cols=16)
    objects.put(BUCKET, "a.dcm", good[0])
    objects.put(BUCKET, "b.dcm", factory.garbage_file())
    objects.put(BUCKET, "c.dcm", good[1])
    keys = ["a.dcm", "b.dcm", "missing.dcm", "c.dcm"]
    results = import_batch(FileJob(objects, BUCKET, blobs, "ds", "HTJ2K"), keys)
    assert len(results) == 4
    first, garbage, missing, last = results
    assert isinstance(first, ProcessedInstance) and isinstance(last, ProcessedInstance)
    assert first.frames == [] and last.frames == []  # frames stay in the blob store
    for p in (first, last):
        for frame in p.instance["ImageFrames"]:
            assert blobs.exists(f"frames/ds/{frame['ID']}")
    assert isinstance(garbage, InstanceRejected)
    assert isinstance(missing, ObjectNotFound)
    # what travels back to the server process survives pickling
    again = pickle.loads(pickle.dumps(results))
    assert isinstance(again[1], InstanceRejected) and again[1].message == garbage.message


class _Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.callback = lambda: None


def test_unpicklable_errors_come_back_as_their_message() -> None:
    exc = _Unpicklable("the codec broke")
    portable = picklable(exc)
    assert isinstance(portable, RuntimeError) and str(portable) == "the codec broke"
    pickle.dumps(portable)
    plain = ValueError("fine")
    assert picklable(plain) is plain


def _work(objects: FsObjectStore, blobs: FsBlobStore) -> FileJob:
    return FileJob(objects, BUCKET, blobs, "ds", "HTJ2K")


@pytest.mark.parametrize("count", [1, 3, 37])
def test_process_yields_every_file_once(stores: tuple[FsObjectStore, FsBlobStore], count: int) -> None:
    """Batches (shrinking at the end) cover the input exactly; too-big files are rejected unsent."""
    objects, blobs = stores
    files = factory.make_ct_series(count, rows=8, cols=8)
    infos = []
    for i, data in enumerate(files):
        key = f"f{i:03d}.dcm"
        objects.put(BUCKET, key, data)
        infos.append(ObjectInfo(key=key, size=len(data) if i % 5 else 10**9))  # every 5th is "too big"
    with ThreadPoolExecutor(max_workers=2) as pool:
        seen = list(process_files(_work(objects, blobs), infos, pool, max_file=10**6))
    assert sorted(info.key for info, _ in seen) == [info.key for info in infos]
    for info, result in seen:
        if info.size > 10**6:
            assert isinstance(result, InstanceRejected) and "exceeds the per-file maximum" in result.message
        else:
            assert isinstance(result, ProcessedInstance)


def test_a_failed_batch_fails_each_of_its_files(stores: tuple[FsObjectStore, FsBlobStore]) -> None:
    """A batch that could not run at all (the worker died) reports its error for every file in it."""

    class Broken(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            def boom() -> None:
                raise RuntimeError("worker died")

            return super().submit(boom)

    objects, blobs = stores
    infos = [ObjectInfo(key=f"k{i}", size=1) for i in range(9)]
    with Broken(max_workers=2) as pool:
        seen = list(process_files(_work(objects, blobs), infos, pool, max_file=10**6))
    assert sorted(info.key for info, _ in seen) == [info.key for info in infos]
    assert all(isinstance(r, RuntimeError) and str(r) == "worker died" for _, r in seen)
