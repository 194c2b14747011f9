"""DICOM JSON metadata files (importConfiguration): what is accepted, the precedence, and the set size limit."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset

from openhi.core import import_run
from openhi.core.errors import ValidationError
from openhi.core.import_overrides import check_mappings, load_overrides, unmatched_warnings
from openhi.core.import_plan import Plan
from openhi.core.records import ImportJob
from openhi.dicom.instance import ProcessedInstance
from openhi.dicom.json_dataset import (
    MetadataFileError,
    MetadataOverride,
    apply_overrides,
    parse_metadata_file,
)


def _pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{not json", "not a JSON document"),
        (b"[]", "exactly one dataset, it holds 0"),
        (json.dumps([{"00100010": _pn("A")}] * 2).encode(), "exactly one dataset, it holds 2"),
        (b'"text"', "not a DICOM JSON dataset"),
        (b"{}", "not a DICOM JSON dataset"),
        (json.dumps({"PatientName": _pn("A")}).encode(), "is not a tag of 8 hex digits"),
        (json.dumps({"00100010": {"Value": ["A"]}}).encode(), 'has no valid "vr"'),
        (json.dumps({"00100010": {"vr": "PN", "BulkDataURI": "http://x"}}).encode(), "BulkDataURI"),
        (json.dumps({"0020000D": {"vr": "UI", "Value": ["1.2"]}}).encode(), "StudyInstanceUID cannot be"),
        (json.dumps({"00280010": {"vr": "US", "Value": [8]}}).encode(), "Rows cannot be overridden"),
        (json.dumps({"00020010": {"vr": "UI", "Value": ["1.2"]}}).encode(), "file meta information"),
        (json.dumps({"00100020": {"vr": "LO", "Value": [{"a": 1}]}}).encode(), "value is not valid"),
        (json.dumps({"00100020": {"vr": "LO", "Value": "A"}}).encode(), '"Value" must be an array'),
        (json.dumps({"00100020": {"vr": "LO", "Extra": 1}}).encode(), "unknown members"),
        ('{"00100010": "\u00e9"}'.encode("latin-1"), "not a JSON document"),
    ],
)
def test_malformed_metadata_files_are_refused_with_the_reason(data: bytes, problem: str) -> None:
    with pytest.raises(MetadataFileError) as info:
        parse_metadata_file(data)
    assert problem in str(info.value)


def test_a_dataset_or_an_array_of_one_is_accepted() -> None:
    doc = {"00100010": _pn("DOE^JANE"), "00081110": {"vr": "SQ", "Value": [{"00081150": {"vr": "UI"}}]}}
    assert parse_metadata_file(json.dumps(doc).encode()) == doc
    assert parse_metadata_file(json.dumps([doc]).encode()) == doc


def _ds() -> Dataset:
    ds = Dataset()
    ds.PatientName = "FILE^NAME"
    ds.PatientID = "P1"
    return ds


def test_most_specific_mapping_wins_and_all_matching_mappings_apply() -> None:
    overrides = [
        MetadataOverride(0, "1.2", "1.2.3", "series.json", {"00100010": _pn("SERIES^WINS")}),
        MetadataOverride(1, "1.2", None, "study.json", {"00100010": _pn("STUDY"), "00204000": {"vr": "LT", "Value": ["C"]}}),
        MetadataOverride(2, "1.2", "9.9", "other.json", {"00100010": _pn("OTHER^SERIES")}),
        MetadataOverride(3, "7.7", None, "other-study.json", {"00100010": _pn("OTHER^STUDY")}),
    ]  # fmt: skip
    ds = _ds()
    assert apply_overrides(ds, overrides, "1.2", "1.2.3") == (1, 0)  # applied: study first, then series
    assert str(ds.PatientName) == "SERIES^WINS" and ds.ImageComments == "C" and ds.PatientID == "P1"
    ds = _ds()
    assert apply_overrides(ds, overrides, "1.2", "5.5") == (1,)
    assert str(ds.PatientName) == "STUDY"
    ds = _ds()
    assert apply_overrides(ds, overrides, "3.3", "5.5") == ()
    assert str(ds.PatientName) == "FILE^NAME"


def test_a_broken_matching_mapping_refuses_the_instance_naming_it() -> None:
    broken = MetadataOverride(4, "1.2", None, "m/broken.json", None, "the file is not JSON")
    with pytest.raises(MetadataFileError) as info:
        apply_overrides(_ds(), [broken], "1.2", "1.2.3")
    assert (
        str(info.value)
        == "dicomMetadataMappings[4] (metadataFilePath m/broken.json) cannot be applied: the file is not JSON"
    )


class _Objects:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def get(self, bucket: str, key: str) -> bytes:
        return self.files[key]


def test_loading_reads_each_file_once_through_the_store_and_names_problems() -> None:
    files = {"in/ok.json": json.dumps({"00100010": _pn("A")}).encode(), "in/bad.json": b"["}
    config = {
        "dicomJsonMetadataImportConfiguration": {
            "dicomMetadataMappings": [
                {"studyInstanceUID": "1.2", "metadataFilePath": "ok.json"},
                {"studyInstanceUID": "1.2", "seriesInstanceUID": "1.3", "metadataFilePath": "bad.json"},
                {"studyInstanceUID": "1.4", "metadataFilePath": "absent.json"},
            ]
        }
    }
    sizes = {key: len(data) for key, data in files.items()}
    overrides, keys = load_overrides(_Objects(files), "b", "in/", config, sizes)  # type: ignore[arg-type]
    assert keys == {"in/ok.json", "in/bad.json", "in/absent.json"}
    ok, bad, absent = overrides
    assert ok.dataset == {"00100010": _pn("A")} and ok.error is None
    assert bad.series_uid == "1.3" and bad.error is not None and "not a JSON document" in bad.error
    assert absent.error == "the file s3://b/in/absent.json does not exist"
    [warning] = unmatched_warnings(overrides, {0, 1}, "in/")
    assert warning["inputFile"] == "in/absent.json" and warning["metadataMapping"] == 2
    assert "matches no instance of the job (StudyInstanceUID 1.4)" in warning["warnings"][0]["message"]
    assert "does not exist" in warning["warnings"][0]["message"]


@pytest.mark.parametrize("path", ["../x.json", "a//x.json", "./x.json", "a\\x.json"])
def test_unsafe_metadata_paths_are_refused_at_start(path: str) -> None:
    config = {
        "dicomJsonMetadataImportConfiguration": {
            "dicomMetadataMappings": [{"studyInstanceUID": "1", "metadataFilePath": path}]
        }
    }
    with pytest.raises(ValidationError) as info:
        check_mappings("in/", config)
    assert info.value.message.startswith("dicomMetadataMappings[0]: metadataFilePath")
    check_mappings("in/", None)


def _instance(n: int, size: int) -> ProcessedInstance:
    return ProcessedInstance(
        "1.2", "1.3", f"1.4.{n}", {}, {}, {}, {"pad": "x" * size}, [], metadata_bytes=size
    )


def test_an_image_set_over_the_metadata_limit_refuses_its_last_instances(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(import_run, "MAX_IMAGE_SET_METADATA_BYTES", 25_000)
    job = ImportJob("job", "ds", "name", "IN_PROGRESS", "role", "s3://in/", "s3://out/x/", 0.0)
    run = import_run.ImportRun(SimpleNamespace(), job, "worker")  # type: ignore[arg-type]
    items = [_instance(n, 10_000) for n in range(4)]
    run.outcome.success = [(f"f{n}.dcm", p) for n, p in enumerate(items)]
    plan = Plan()
    kept, doc, blob = run._fit(plan, items, lambda chosen: {"instances": [p.instance for p in chosen]})
    assert [p.sop_uid for p in kept] == ["1.4.0", "1.4.1"]
    assert len(doc["instances"]) == 2 and import_run._json_size(blob) <= 25_000
    assert [f["inputFile"] for f in plan.rejected] == ["f2.dcm", "f3.dcm"]
    assert "over the maximum of 25000 bytes" in plan.rejected[0]["exception"]["message"]
