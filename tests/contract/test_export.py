"""Contract tests: ``openhi export`` against a real server: round trips of real files (import → export →
import gives the same documents and pixels), zip and s3:// outputs, resuming, exit statuses, --version."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from contract.helpers import active_datastore
from contract.imaging import metadata, run_import, wait_active
from contract.test_part10_roundtrip import BATCHES, _file, _pixels, differences, expected_photometric
from dicom_factory import make_ct_series
from openhi import cli_export
from openhi.cli import main
from openhi.dicom.instance_view import iter_instance_views
from openhi.dicom.part10 import IMPLEMENTATION_CLASS_UID
from openhi.testing import RunningServer

ELE = "1.2.840.10008.1.2.1"
#: document keys a re-import may change: the file meta group of the file read (the exported file's is
#: openhi's: Implementation Class UID / Version Name, its own transfer syntax, group length and the
#: Media Storage UIDs of the data set)
FILE_META_KEYS = frozenset(
    {
        "FileMetaInformationGroupLength",
        "FileMetaInformationVersion",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "ImplementationVersionName",
        "SourceApplicationEntityTitle",
        "MediaStorageSOPClassUID",  # the writer sets them from SOP Class / Instance UID (rtplan.dcm's
        "MediaStorageSOPInstanceUID",  # source file names another instance there)
    }
)
#: not carried into a Part 10 file openhi writes (docs/dicomweb.md): trailing padding; and the attributes
#: the stored syntax decides (RGB in HTJ2K is YBR_RCT, YBR_FULL_422 is stored full resolution): the
#: re-imported document has the exported file's values (checked apart)
NOT_COMPARED = FILE_META_KEYS | {"DataSetTrailingPadding", "PhotometricInterpretation", "PlanarConfiguration"}


#: stored exports the import refuses today (a server bug, not an export one: kept here so that the test
#: fails once it is fixed): HTJ2K of 32-bit samples is decoded with OpenJPEG, which cannot read it
KNOWN_REIMPORT_FAILURES = {"rtdose.dcm": "the import cannot decode 32-bit HTJ2K (OpenJPEG)"}


def export(server: RunningServer, capsys: Any, *args: str) -> tuple[int, str, str]:
    """``openhi export --endpoint … ARGS`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = main(["export", "--endpoint", server.endpoint, *args])
    except SystemExit as exc:  # argparse usage errors
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def _count(out: str, label: str) -> int:
    for line in out.splitlines():
        if line.startswith(label):
            return int(line[len(label) :].strip())
    raise AssertionError(f"{label!r} not in {out!r}")


def _views(doc: dict[str, Any]) -> dict[str, Any]:
    return {v.sop_uid: v for v in iter_instance_views(doc)}


def _check_file(name: str, source: pydicom.Dataset, path: Path, syntax: str) -> None:
    out = pydicom.dcmread(path)
    meta = out.file_meta
    assert meta.TransferSyntaxUID == syntax, name
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert not differences(source, out), (name, syntax, differences(source, out))
    if "PixelData" in source:
        assert out.PhotometricInterpretation == expected_photometric(source, syntax), (name, syntax)
        expected, got = np.asarray(source.pixel_array), _pixels(out)
        assert got.shape == expected.shape and np.array_equal(got, expected), (name, syntax)


def _renamed_set(client: Any, server: RunningServer, name: str, seed: int) -> tuple[str, str, Any]:
    """A datastore with one image set of 3 CT slices whose version 2 renames the study; (datastore id,
    image set id, the first slice as imported)."""
    ds_id = active_datastore(client, name)
    files = {f"{name}-{i}.dcm": d for i, d in enumerate(make_ct_series(3, seed=seed))}
    result = run_import(client, server, ds_id, files)
    image_set = result["success"][0]["importResponse"]["imageSetId"]
    first = pydicom.dcmread(io.BytesIO(files[f"{name}-0.dcm"]))
    client.update_image_set_metadata(
        datastoreId=ds_id,
        imageSetId=image_set,
        latestVersionId="1",
        updateImageSetMetadataUpdates={
            "DICOMUpdates": {
                "updatableAttributes": json.dumps(
                    {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "Renamed"}}}
                ).encode()
            }
        },
    )
    assert wait_active(client, ds_id, image_set)["versionId"] == "2"
    return ds_id, image_set, first


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: b[0].removesuffix(".dcm"))
def test_round_trip(
    batch: tuple[str, ...], medical_imaging: Any, openhi_server: RunningServer, tmp_path: Path, capsys: Any
) -> None:
    files = {name: data for name in batch if (data := _file(name)) is not None}
    if not files:
        pytest.skip("none of these pydicom test files is bundled")
    client = medical_imaging
    first = active_datastore(client, "export-rt")
    result = run_import(client, openhi_server, first, files)
    assert result["job"]["jobStatus"] == "COMPLETED" and not result["failure"], result["failure"]
    stored, ele = tmp_path / "stored", tmp_path / "ele"
    rc, out, err = export(openhi_server, capsys, "--datastore", first, "--all", "--out", str(stored))
    assert rc == 0, (out, err)
    assert _count(out, "instances exported") == len(files)
    rc, out, err = export(
        openhi_server, capsys, "--datastore", first, "--all", "--out", str(ele), "--transfer-syntax", ELE
    )
    assert rc == 0, (out, err)
    sets = {s["inputFile"].rsplit("/", 1)[-1]: s["importResponse"]["imageSetId"] for s in result["success"]}
    before: dict[str, Any] = {}
    for name, data in files.items():
        source = pydicom.dcmread(io.BytesIO(data))
        sop = str(source.SOPInstanceUID)
        view = _views(metadata(client, first, sets[name]))[sop]
        before[sop] = view
        _check_file(name, source, stored / f"{sop}.dcm", view.stored_transfer_syntax or ELE)
        _check_file(name, source, ele / f"{sop}.dcm", ELE)
    assert sorted(p.name for p in stored.iterdir()) == sorted(f"{s}.dcm" for s in before)

    # the stored export imported again: the same documents (file meta of the file read aside), the same
    # frames as stored, the same Explicit VR Little Endian files
    second = active_datastore(client, "export-rt2")
    again = run_import(client, openhi_server, second, {p.name: p.read_bytes() for p in stored.iterdir()})
    assert again["job"]["jobStatus"] == "COMPLETED", again["job"]
    refused = {f["inputFile"].rsplit("/", 1)[-1].removesuffix(".dcm") for f in again["failure"]}
    by_sop = {
        sop: name for name in files if (sop := str(pydicom.dcmread(io.BytesIO(files[name])).SOPInstanceUID))
    }
    assert {by_sop[sop] for sop in refused} == {n for n in KNOWN_REIMPORT_FAILURES if n in files}, again[
        "failure"
    ]
    for sop in refused:
        del before[sop]
    after: dict[str, Any] = {}
    for s in again["success"]:
        after.update(_views(metadata(client, second, s["importResponse"]["imageSetId"])))
    assert sorted(after) == sorted(before)
    for sop, view in before.items():
        other = after[sop]
        strip = {k: v for k, v in view.attributes.items() if k not in NOT_COMPARED}
        assert {k: v for k, v in other.attributes.items() if k not in NOT_COMPARED} == strip, sop
        exported = pydicom.dcmread(stored / f"{sop}.dcm", stop_before_pixels=True)
        for key in ("PhotometricInterpretation", "PlanarConfiguration"):
            assert other.attributes.get(key) == exported.get(key), (sop, key)
        assert other.stored_transfer_syntax == view.stored_transfer_syntax, sop
        assert len(other.frame_ids) == len(view.frame_ids), sop
    ele2 = tmp_path / "ele2"
    rc, out, err = export(
        openhi_server, capsys, "--datastore", second, "--all", "--out", str(ele2), "--transfer-syntax", ELE
    )
    assert rc == 0, (out, err)
    for sop in before:
        a, b = pydicom.dcmread(ele / f"{sop}.dcm"), pydicom.dcmread(ele2 / f"{sop}.dcm")
        assert not differences(a, b), (sop, differences(a, b))
        if "PixelData" in a:
            assert a.PixelData == b.PixelData, sop


@pytest.fixture(scope="module")
def series(openhi_server: RunningServer) -> dict[str, Any]:
    """A datastore with one imported 12-instance CT series."""
    client = openhi_server.client()
    ds_id = active_datastore(client, "export")
    files = {f"ct-{i}.dcm": data for i, data in enumerate(make_ct_series(12, seed=77))}
    result = run_import(client, openhi_server, ds_id, files)
    assert result["job"]["jobStatus"] == "COMPLETED" and not result["failure"], result["failure"]
    source = pydicom.dcmread(io.BytesIO(next(iter(files.values()))))
    image_set = result["success"][0]["importResponse"]["imageSetId"]
    return {
        "ds": ds_id,
        "image_set": image_set,
        "study": str(source.StudyInstanceUID),
        "series": str(source.SeriesInstanceUID),
        "sops": sorted(str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID) for d in files.values()),
    }


def test_series_study_and_image_set_select_the_same_files(
    series: dict[str, Any], openhi_server: RunningServer, tmp_path: Path, capsys: Any
) -> None:
    names = sorted(f"{s}.dcm" for s in series["sops"])
    contents: list[dict[str, bytes]] = []
    for flag, value in (
        ("--series", series["series"]),
        ("--study", series["study"]),
        ("--image-set", series["image_set"]),
    ):
        out_dir = tmp_path / flag.strip("-")
        rc, out, err = export(
            openhi_server, capsys, "--datastore", series["ds"], flag, value, "--out", str(out_dir)
        )
        assert rc == 0, (out, err)
        assert sorted(p.name for p in out_dir.iterdir()) == names
        contents.append({p.name: p.read_bytes() for p in out_dir.iterdir()})
    assert contents[0] == contents[1] == contents[2]  # the same rebuild, byte for byte


def test_resume_skips_verified_files_and_rewrites_broken_ones(
    series: dict[str, Any], openhi_server: RunningServer, tmp_path: Path, capsys: Any
) -> None:
    out_dir = tmp_path / "out"
    args = ("--datastore", series["ds"], "--series", series["series"], "--out", str(out_dir))
    rc, out, _ = export(openhi_server, capsys, *args)
    assert rc == 0 and _count(out, "instances exported") == 12 and _count(out, "already exported") == 0
    good = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    rc, out, _ = export(openhi_server, capsys, *args)
    assert rc == 0 and _count(out, "instances exported") == 0 and _count(out, "already exported") == 12
    a, b, c = sorted(good)[:3]
    (out_dir / a).write_bytes(good[a][:-10])  # truncated
    (out_dir / b).write_bytes(good[c])  # another instance under this name
    (out_dir / c).write_bytes(good[c][:128] + b"XXXX" + good[c][132:])  # no DICM
    rc, out, _ = export(openhi_server, capsys, *args)
    assert rc == 0 and _count(out, "instances exported") == 3 and _count(out, "already exported") == 9
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == good
    # an Explicit VR Little Endian export over the stored one rewrites every file in that syntax
    rc, out, _ = export(openhi_server, capsys, *args, "--transfer-syntax", ELE)
    assert rc == 0 and _count(out, "instances exported") == 12
    assert all(pydicom.dcmread(p).file_meta.TransferSyntaxUID == ELE for p in out_dir.iterdir())


def test_zip_output_and_resume(
    series: dict[str, Any], openhi_server: RunningServer, tmp_path: Path, capsys: Any
) -> None:
    folder, archive = tmp_path / "folder", tmp_path / "series.zip"
    base = ("--datastore", series["ds"], "--image-set", series["image_set"])
    assert export(openhi_server, capsys, *base, "--out", str(folder))[0] == 0
    rc, out, err = export(openhi_server, capsys, *base, "--out", str(archive))
    assert rc == 0, (out, err)
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == {p.name: p.read_bytes() for p in folder.iterdir()}
    assert not (tmp_path / "series.zip.partial").exists()
    rc, out, _ = export(openhi_server, capsys, *base, "--out", str(archive))
    assert rc == 0 and _count(out, "already exported") == 12 and _count(out, "instances exported") == 0
    # an interrupted run left files in the .partial folder: they count, the zip gets them
    with zipfile.ZipFile(archive) as zf:
        keep = zf.namelist()[:5]
        kept = {n: zf.read(n) for n in keep}
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in kept.items():
            zf.writestr(name, data)
    partial = tmp_path / "series.zip.partial"
    partial.mkdir()
    extra = sorted(set(p.name for p in folder.iterdir()) - set(keep))[0]
    (partial / extra).write_bytes((folder / extra).read_bytes())
    rc, out, _ = export(openhi_server, capsys, *base, "--out", str(archive))
    assert rc == 0 and _count(out, "already exported") == 6 and _count(out, "instances exported") == 6
    with zipfile.ZipFile(archive) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {p.name: p.read_bytes() for p in folder.iterdir()}
    assert not partial.exists()


def test_s3_output_goes_to_the_servers_buckets(
    series: dict[str, Any], openhi_server: RunningServer, tmp_path: Path, capsys: Any
) -> None:
    folder = tmp_path / "folder"
    base = ("--datastore", series["ds"], "--series", series["series"])
    assert export(openhi_server, capsys, *base, "--out", str(folder))[0] == 0
    openhi_server.stage_object("export-out", "made", b"the bucket exists")
    rc, out, err = export(openhi_server, capsys, *base, "--out", "s3://export-out/run/1/")
    assert rc == 0, (out, err)
    for path in folder.iterdir():
        assert openhi_server.read_object("export-out", f"run/1/{path.name}") == path.read_bytes()
    rc, out, _ = export(openhi_server, capsys, *base, "--out", "s3://export-out/run/1")
    assert rc == 0 and _count(out, "already exported") == 12


def test_version_exports_the_older_attributes(
    openhi_server: RunningServer, tmp_path: Path, capsys: Any
) -> None:
    client = openhi_server.client()
    ds_id, image_set, source = _renamed_set(client, openhi_server, "export-versions", 78)
    old = source.get("StudyDescription")
    base = ("--datastore", ds_id, "--image-set", image_set)
    for version, want in (("1", old), ("2", "Renamed"), (None, "Renamed")):
        out_dir = tmp_path / f"v{version}"
        extra = ("--version", version) if version else ()
        rc, out, err = export(openhi_server, capsys, *base, *extra, "--out", str(out_dir))
        assert rc == 0, (out, err)
        files_out = list(out_dir.iterdir())
        assert len(files_out) == 3
        assert {pydicom.dcmread(p).get("StudyDescription") for p in files_out} == {want}, version
    rc, _, err = export(openhi_server, capsys, *base, "--version", "9", "--out", str(tmp_path / "v9"))
    assert rc == 2 and "ResourceNotFoundException" in err
    # the WADO-RS parameter itself
    url = (
        f"{openhi_server.endpoint}/datastore/{ds_id}/studies/{source.StudyInstanceUID}/series/"
        f"{source.SeriesInstanceUID}/instances/{source.SOPInstanceUID}"
    )
    for query, status in (
        (f"imageSetId={image_set}&version=1", 200),
        ("version=1", 400),
        (f"imageSetId={image_set}&version=0", 400),
        (f"imageSetId={image_set}&version=x", 400),
        (f"imageSetId={image_set}&version=9", 404),
    ):
        try:
            with urllib.request.urlopen(f"{url}?{query}", timeout=30) as resp:
                got, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            got, body = exc.code, b""
        assert got == status, (query, got)
        if status == 200:
            assert pydicom.dcmread(io.BytesIO(body)).get("StudyDescription") == old


def test_exit_statuses(
    series: dict[str, Any], openhi_server: RunningServer, tmp_path: Path, capsys: Any
) -> None:
    out_dir = str(tmp_path / "out")
    rc, _, err = export(openhi_server, capsys, "--datastore", "0" * 32, "--all", "--out", out_dir)
    assert rc == 2 and "ResourceNotFoundException" in err
    rc, _, err = export(
        openhi_server, capsys, "--datastore", series["ds"], "--study", "1.2.3.999", "--out", out_dir
    )
    assert rc == 2 and "not in datastore" in err
    rc, _, err = export(
        openhi_server, capsys, "--datastore", series["ds"], "--all", "--version", "1", "--out", out_dir
    )
    assert rc == 2 and "--version needs --image-set" in err
    rc, _, _ = export(openhi_server, capsys, "--datastore", series["ds"], "--out", out_dir)
    assert rc == 2  # no selection: argparse usage error
    rc, _, err = export(openhi_server, capsys, "--datastore", series["ds"], "--all", "--out", "ftp://x/y")
    assert rc == 2 and "only folders" in err
    capsys.readouterr()
    assert (
        main(
            [
                "export",
                "--endpoint",
                "http://127.0.0.1:9",
                "--datastore",
                series["ds"],
                "--all",
                "--out",
                out_dir,
            ]
        )
        == 2
    )
    assert "cannot reach" in capsys.readouterr().err
    # the image set's streamed answer fails: its instances are fetched one by one (times=1 is per API
    # process: in a deployment of several, the others may refuse one instance each)
    selection = ("--datastore", series["ds"], "--series", series["series"])
    with openhi_server.inject("GetDICOMInstance", error="InternalServerException", times=1):
        rc, out, _ = export(openhi_server, capsys, *selection, "--out", str(tmp_path / "fallback"))
    failed = _count(out, "instances failed")
    assert _count(out, "instances exported") == 12 - failed and failed <= 3 and rc == (1 if failed else 0)
    # one instance refused by the server (after the image set's answer): status 1, the instance named; a
    # second run exports just it
    args = (*selection, "--out", out_dir)
    with openhi_server.inject("GetDICOMInstance", error="InternalServerException", times=2):
        rc, out, _ = export(openhi_server, capsys, *args)
    failed = _count(out, "instances failed")
    assert rc == 1 and 1 <= failed <= 7 and out.count("FAILED  ") == failed and "HTTP 500" in out
    assert _count(out, "instances exported") == 12 - failed
    rc, out, _ = export(openhi_server, capsys, *args)
    assert (
        rc == 0
        and _count(out, "instances exported") == failed
        and _count(out, "already exported") == 12 - failed
    )


def test_streamed_answers_give_the_files_of_instance_requests(
    openhi_server: RunningServer, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    """An image set's instances come in one streamed WADO-RS answer (the server writes them directly, or
    with pydicom when its writer does not write them: Cyrillic text here); the files are those of one
    request per instance, byte for byte."""
    client = openhi_server.client()
    ds_id = active_datastore(client, "export-stream")
    files = {f"s-{i}.dcm": d for i, d in enumerate(make_ct_series(6, seed=79))}
    cyrillic = make_ct_series(4, seed=80, SpecificCharacterSet="ISO_IR 144", ImageComments="Привет")
    files.update({f"c-{i}.dcm": d for i, d in enumerate(cyrillic)})
    result = run_import(client, openhi_server, ds_id, files)
    assert result["job"]["jobStatus"] == "COMPLETED" and not result["failure"], result["failure"]
    streamed, alone = tmp_path / "streamed", tmp_path / "alone"
    rc, out, err = export(openhi_server, capsys, "--datastore", ds_id, "--all", "--out", str(streamed))
    assert rc == 0 and _count(out, "instances exported") == 10, (out, err)
    monkeypatch.setattr(cli_export, "STREAM_MIN", 10**9)  # one request per instance
    rc, out, err = export(openhi_server, capsys, "--datastore", ds_id, "--all", "--out", str(alone))
    assert rc == 0 and _count(out, "instances exported") == 10, (out, err)
    assert {p.name: p.read_bytes() for p in streamed.iterdir()} == {
        p.name: p.read_bytes() for p in alone.iterdir()
    }
    comments = {pydicom.dcmread(p).get("ImageComments") for p in streamed.iterdir()}
    assert "Привет" in comments


def test_series_and_study_answers_of_an_image_set_version(
    openhi_server: RunningServer, tmp_path: Path, capsys: Any
) -> None:
    """WADO-RS series and study retrieval take ``version`` next to ``imageSetId`` (beyond AWS), as the
    instance route does: the instances as that version holds them."""
    client = openhi_server.client()
    ds_id, image_set, source = _renamed_set(client, openhi_server, "export-version-stream", 81)
    study = f"{openhi_server.endpoint}/datastore/{ds_id}/studies/{source.StudyInstanceUID}"
    for url in (study, f"{study}/series/{source.SeriesInstanceUID}"):
        for query, status, want in (
            (f"imageSetId={image_set}&version=1", 200, source.get("StudyDescription")),
            (f"imageSetId={image_set}&version=2", 200, "Renamed"),
            (f"imageSetId={image_set}", 200, "Renamed"),
            ("version=1", 400, None),
            (f"imageSetId={image_set}&version=0", 400, None),
            (f"imageSetId={image_set}&version=9", 404, None),
        ):
            request = urllib.request.Request(
                f"{url}?{query}",
                headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    got, body, ctype = resp.status, resp.read(), resp.headers["Content-Type"]
            except urllib.error.HTTPError as exc:
                got, body, ctype = exc.code, b"", ""
            assert got == status, (url, query, got)
            if status == 200:
                boundary = ctype.split("boundary=")[1].encode()
                found = [
                    pydicom.dcmread(io.BytesIO(part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")))
                    for part in body.split(b"--" + boundary)[1:-1]
                ]
                assert len(found) == 3 and {d.get("StudyDescription") for d in found} == {want}, (url, query)
