"""StowService (STOW-RS's core) on real embedded services: SQLite index, file blobs, the import core."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from dicom_factory import garbage_file, make_ct_series, make_instance, uid
from openhi.codec.j2k import decode_htj2k
from openhi.core import stow
from openhi.core.errors import NotFoundError
from openhi.core.keys import frame_key
from openhi.core.stow import StowPart, StowResult
from openhi.services import ServerConfig, Services, build_services


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(ServerConfig(data_dir=tmp_path / "data", pixel_workers=0, import_threads=0))
    try:
        yield svc
    finally:
        svc.close()


def _datastore(svc: Services) -> str:
    ds = svc.datastores.create(client_token=uuid.uuid4().hex, name="stow")
    svc.env.index.set_datastore_status(ds.id, "ACTIVE", svc.env.clock())  # without the activation delay
    return ds.id


def _parts(tmp: Path, files: list[bytes], media: list[str | None] | None = None) -> list[StowPart]:
    tmp.mkdir(parents=True, exist_ok=True)
    parts = []
    for n, data in enumerate(files):
        path = tmp / f"p{n}-{len(list(tmp.iterdir()))}"
        path.write_bytes(data)
        parts.append(StowPart(path, len(data), media[n] if media else None))
    return parts


def _versions(svc: Services, ds_id: str, set_id: str) -> list[int]:
    return [v.version for v in svc.env.index.list_versions(ds_id, set_id, None, 100)]


def _document(svc: Services, ds_id: str, set_id: str) -> dict[str, Any]:
    head = svc.env.index.get_image_set(ds_id, set_id)
    assert head is not None
    version = svc.env.index.get_version(ds_id, set_id, head.content_version)
    assert version is not None and version.metadata_key is not None
    doc: dict[str, Any] = json.loads(gzip.decompress(svc.env.blobs.get(version.metadata_key)))
    return doc


def _one_set(result: StowResult) -> str:
    sets = {s.image_set_id for s in result.stored}
    assert len(sets) == 1, sets
    return sets.pop()


def test_a_series_is_one_primary_image_set_with_its_pixels(services: Services, tmp_path: Path) -> None:
    ds_id = _datastore(services)
    files = make_ct_series(5, rows=32, cols=32, seed=7)
    result = services.stow.store(ds_id, _parts(tmp_path / "a", files))
    assert result.failed == [] and not result.warned
    assert [s.part for s in result.stored] == [0, 1, 2, 3, 4]
    set_id = _one_set(result)
    assert all(s.is_primary and s.version == 1 for s in result.stored)
    source = [pydicom.dcmread(io.BytesIO(f)) for f in files]
    assert [s.sop_instance_uid for s in result.stored] == [str(d.SOPInstanceUID) for d in source]
    assert {s.sop_class_uid for s in result.stored} == {"1.2.840.10008.5.1.4.1.1.2"}
    doc = _document(services, ds_id, set_id)
    [(series_uid, series)] = doc["Study"]["Series"].items()
    assert series_uid == str(source[0].SeriesInstanceUID) and len(series["Instances"]) == 5
    for d in source:  # every frame stored lossless: pixel-exact after decoding
        node = series["Instances"][str(d.SOPInstanceUID)]
        [frame] = node["ImageFrames"]
        stored = decode_htj2k(services.env.blobs.get(frame_key(ds_id, frame["ID"])))
        assert np.array_equal(stored, d.pixel_array)
    head = services.env.index.find_primary(ds_id, str(source[0].StudyInstanceUID), series_uid)
    assert head is not None and head.id == set_id and _versions(services, ds_id, set_id) == [1]


def test_a_second_request_adds_one_version_and_a_repeat_changes_nothing(
    services: Services, tmp_path: Path
) -> None:
    ds_id = _datastore(services)
    files = make_ct_series(6, rows=16, cols=16, seed=8)
    first = services.stow.store(ds_id, _parts(tmp_path / "a", files[:3]))
    set_id = _one_set(first)
    second = services.stow.store(ds_id, _parts(tmp_path / "b", files[3:]))
    assert _one_set(second) == set_id and {s.version for s in second.stored} == {2}
    assert _versions(services, ds_id, set_id) == [2, 1]
    # the same instances again: success, no new version, no new frame reference
    frames = sorted(f.frame_id for f in services.env.index.list_frames(ds_id, set_id))
    again = services.stow.store(ds_id, _parts(tmp_path / "c", files))
    assert again.failed == [] and len(again.stored) == 6 and not again.warned
    assert {(s.image_set_id, s.version) for s in again.stored} == {(set_id, 2)}
    assert _versions(services, ds_id, set_id) == [2, 1]
    assert sorted(f.frame_id for f in services.env.index.list_frames(ds_id, set_id)) == frames
    # one changed instance among repeats: one new version holding the change, the rest as they were
    changed = make_ct_series(6, rows=16, cols=16, seed=8, SeriesDescription="changed")[0]
    mixed = services.stow.store(ds_id, _parts(tmp_path / "d", [changed, *files[1:]]))
    assert {(s.image_set_id, s.version) for s in mixed.stored} == {(set_id, 3)}
    assert _versions(services, ds_id, set_id) == [3, 2, 1]
    series = next(iter(_document(services, ds_id, set_id)["Study"]["Series"].values()))
    assert series["DICOM"]["SeriesDescription"] == "changed" and len(series["Instances"]) == 6


def test_a_garbage_part_fails_alone(services: Services, tmp_path: Path) -> None:
    ds_id = _datastore(services)
    good = make_ct_series(2, rows=16, cols=16, seed=9)
    result = services.stow.store(ds_id, _parts(tmp_path / "a", [good[0], garbage_file(), good[1]]))
    assert [s.part for s in result.stored] == [0, 2]
    [failed] = result.failed
    assert failed.part == 1 and failed.reason == stow.CANNOT_UNDERSTAND
    assert failed.sop_class_uid is None and failed.sop_instance_uid is None
    assert "not a valid DICOM" in failed.message


def test_a_refused_instance_keeps_its_uids(services: Services, tmp_path: Path) -> None:
    ds_id = _datastore(services)
    no_study = make_instance(seed=3, StudyInstanceUID=None)
    result = services.stow.store(ds_id, _parts(tmp_path / "a", [no_study]))
    assert result.stored == []
    [failed] = result.failed
    assert failed.reason == stow.CANNOT_UNDERSTAND and "StudyInstanceUID" in failed.message
    source = pydicom.dcmread(io.BytesIO(no_study))
    assert failed.sop_instance_uid == str(source.SOPInstanceUID)
    assert failed.sop_class_uid == str(source.SOPClassUID)


def test_an_unsupported_transfer_syntax_is_c122(services: Services, tmp_path: Path) -> None:
    ds_id = _datastore(services)
    ds = pydicom.dcmread(io.BytesIO(make_instance(seed=4)))
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.10.1234.99"  # a private syntax: not taken
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    result = services.stow.store(ds_id, _parts(tmp_path / "a", [out.getvalue()]))
    [failed] = result.failed
    assert failed.reason == stow.TRANSFER_SYNTAX_NOT_SUPPORTED, failed
    assert failed.sop_instance_uid == str(ds.SOPInstanceUID)


def test_other_media_types_and_other_studies_fail(services: Services, tmp_path: Path) -> None:
    ds_id = _datastore(services)
    study = uid("stow-study", 1)
    mine = make_instance(seed=10, study_uid=study)
    other = make_instance(seed=11)
    parts = _parts(tmp_path / "a", [mine, other, mine], [None, "application/dicom", "text/plain"])
    result = services.stow.store(ds_id, parts, study_uid=study)
    assert [s.part for s in result.stored] == [0]
    assert [(f.part, f.reason) for f in result.failed] == [
        (1, stow.STUDY_MISMATCH),
        (2, stow.CANNOT_UNDERSTAND),
    ]
    assert result.failed[0].sop_instance_uid == str(pydicom.dcmread(io.BytesIO(other)).SOPInstanceUID)
    assert result.failed[1].sop_instance_uid is None  # never read: its media type is not DICOM
    # the mismatched instance left nothing behind
    other_study = str(pydicom.dcmread(io.BytesIO(other)).StudyInstanceUID)
    assert services.env.index.list_primary_in_study(ds_id, other_study) == []


def test_conflicting_patient_goes_non_primary(services: Services, tmp_path: Path) -> None:
    ds_id = _datastore(services)
    files = make_ct_series(2, rows=16, cols=16, seed=12)
    first = services.stow.store(ds_id, _parts(tmp_path / "a", files[:1]))
    assert first.stored[0].is_primary
    conflicting = make_ct_series(2, rows=16, cols=16, seed=12, patient_id="PAT1")[1]
    ds = pydicom.dcmread(io.BytesIO(conflicting))
    ds.PatientID = "SOMEONE-ELSE"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    second = services.stow.store(ds_id, _parts(tmp_path / "b", [out.getvalue()]))
    [stored] = second.stored
    assert not stored.is_primary and stored.image_set_id != first.stored[0].image_set_id


def test_identical_repeats_in_one_request_are_stored_once(services: Services, tmp_path: Path) -> None:
    ds_id = _datastore(services)
    one = make_instance(seed=13)
    result = services.stow.store(ds_id, _parts(tmp_path / "a", [one, one]))
    assert [s.part for s in result.stored] == [0, 1] and result.failed == []
    set_id = _one_set(result)
    assert len(services.env.index.list_frames(ds_id, set_id)) == 1


def test_an_unknown_datastore_is_not_found(services: Services, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        services.stow.store("0" * 32, _parts(tmp_path / "a", [make_instance()]))


def test_the_pixel_pool_reads_the_parts(tmp_path: Path) -> None:
    svc = build_services(ServerConfig(data_dir=tmp_path / "data", pixel_workers=2, import_threads=0))
    try:
        ds_id = _datastore(svc)
        files = make_ct_series(12, rows=16, cols=16, seed=14)
        result = svc.stow.store(ds_id, _parts(tmp_path / "a", [*files[:6], garbage_file(), *files[6:]]))
        assert [f.part for f in result.failed] == [6]
        assert len(result.stored) == 12 and len({s.image_set_id for s in result.stored}) == 1
        assert {s.version for s in result.stored} == {1}
    finally:
        svc.close()


def test_concurrent_requests_for_one_new_series_meet_in_one_primary(
    services: Services, tmp_path: Path
) -> None:
    import threading

    ds_id = _datastore(services)
    files = make_ct_series(8, rows=16, cols=16, seed=15)
    results: list[StowResult] = []

    def send(name: str, chunk: list[bytes]) -> None:
        results.append(services.stow.store(ds_id, _parts(tmp_path / name, chunk)))

    threads = [threading.Thread(target=send, args=(f"t{n}", files[n::2])) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.failed == [] for r in results)
    set_ids = {s.image_set_id for r in results for s in r.stored}
    assert len(set_ids) == 1  # the loser of the race regrouped and merged into the winner's primary
    set_id = set_ids.pop()
    assert _versions(services, ds_id, set_id) == [2, 1]
    series = next(iter(_document(services, ds_id, set_id)["Study"]["Series"].values()))
    assert len(series["Instances"]) == 8
