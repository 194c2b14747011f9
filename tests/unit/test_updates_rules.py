"""Unit tests: DICOMUpdates parsing and the §4.3 constraints applied to a document built from real DICOM."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dicom_factory import make_ct_series
from openhi.core.errors import QuotaExceededError, ValidationError
from openhi.core.updates import (
    Updates,
    apply_updates,
    parse_attribute_document,
    parse_updates,
    sibling_updates,
    study_level_changed,
)
from openhi.dicom.document import document_from_instances
from openhi.dicom.instance import process_instance


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    processed = [process_instance(f) for f in make_ct_series(2, rows=8, cols=8, seed=5)]
    return document_from_instances("d" * 32, "i" * 32, processed)


def _inst(doc: dict[str, Any], **dicom: Any) -> dict[str, Any]:
    series_uid, series = next(iter(doc["Study"]["Series"].items()))
    sop = sorted(series["Instances"])[0]
    return {"Study": {"Series": {series_uid: {"Instances": {sop: {"DICOM": dicom}}}}}}


def _u(updatable: dict[str, Any] | None = None, removable: dict[str, Any] | None = None) -> Updates:
    return Updates(updatable or {}, removable or {})


def test_parse_rejects_malformed_documents() -> None:
    for raw, fragment in [
        (b"[1]", "JSON object"),
        (b"{", "not a valid JSON"),
        (b"{}", "SchemaVersion"),
        (b'{"SchemaVersion": 1.1, "Patient": {"Series": {}}}', "unknown key Patient.Series"),
        (b'{"SchemaVersion": 1.1, "ImageSetID": "x"}', "generated"),
        (b'{"SchemaVersion": 1.1, "Study": {"Series": []}}', "keyed by UID"),
    ]:
        with pytest.raises(ValidationError, match=fragment):
            parse_attribute_document(raw, "updatableAttributes")
    assert parse_attribute_document(b'{"SchemaVersion": "1.1"}', "x") == {"SchemaVersion": "1.1"}


def test_parse_updates_quota_and_union() -> None:
    with pytest.raises(ValidationError):
        parse_updates(None, None, 100)
    with pytest.raises(QuotaExceededError):
        parse_updates(b"x" * 60, b"y" * 60, 100)
    u = parse_updates(
        json.dumps({"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyID": "1"}}}).encode(), None, 100
    )
    assert study_level_changed(u) and u.removable == {}


def test_input_document_is_not_modified(doc: dict[str, Any]) -> None:
    before = json.dumps(doc, sort_keys=True)
    new = apply_updates(doc, _u({"Study": {"DICOM": {"StudyDescription": "X"}}}), force=False, primary=True)
    assert new["Study"]["DICOM"]["StudyDescription"] == "X"
    assert json.dumps(doc, sort_keys=True) == before


@pytest.mark.parametrize(
    ("updatable", "force_ok"),
    [
        ({"ImageType": ["A", "B"]}, True),  # 5
        ({"InstanceNumber": "x1"}, True),  # 6
        ({"Foo": 1}, True),  # 7
        ({"SOPInstanceUID": "1.2.3.4"}, True),  # 3 (non-primary)
        ({"PixelData": None}, False),  # 2
        ({"PatientName": "X"}, False),  # 8
    ],
)
def test_instance_rules(doc: dict[str, Any], updatable: dict[str, Any], force_ok: bool) -> None:
    with pytest.raises(ValidationError):
        apply_updates(doc, _u(_inst(doc, **updatable)), force=False, primary=False)
    if force_ok:
        apply_updates(doc, _u(_inst(doc, **updatable)), force=True, primary=False)
    else:
        with pytest.raises(ValidationError):
            apply_updates(doc, _u(_inst(doc, **updatable)), force=True, primary=False)


def test_sop_rename_rekeys_and_checks_uniqueness(doc: dict[str, Any]) -> None:
    new = apply_updates(doc, _u(_inst(doc, SOPInstanceUID="1.2.3.4")), force=True, primary=False)
    series = next(iter(new["Study"]["Series"].values()))
    assert "1.2.3.4" in series["Instances"]
    other = sorted(next(iter(doc["Study"]["Series"].values()))["Instances"])[1]
    with pytest.raises(ValidationError, match="already exists"):
        apply_updates(doc, _u(_inst(doc, SOPInstanceUID=other)), force=True, primary=False)
    with pytest.raises(ValidationError, match="primary"):
        apply_updates(doc, _u(_inst(doc, SOPInstanceUID="1.2.3.4")), force=True, primary=True)


def test_primary_levels(doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="primary"):
        apply_updates(doc, _u({"Patient": {"DICOM": {"PatientName": "A^B"}}}), force=True, primary=True)
    new = apply_updates(doc, _u({"Patient": {"DICOM": {"PatientName": "A^B"}}}), force=False, primary=False)
    assert new["Patient"]["DICOM"]["PatientName"] == "A^B"


def test_removals_then_updates(doc: dict[str, Any]) -> None:
    u = _u({"Study": {"DICOM": {"StudyDescription": "NEW"}}}, {"Study": {"DICOM": {"StudyDate": None}}})
    new = apply_updates(doc, u, force=False, primary=False)
    assert "StudyDate" not in new["Study"]["DICOM"] and new["Study"]["DICOM"]["StudyDescription"] == "NEW"
    with pytest.raises(ValidationError, match="not present"):
        apply_updates(
            new, _u(removable={"Study": {"DICOM": {"StudyDate": None}}}), force=False, primary=False
        )


def test_sibling_updates_keep_only_study_level(doc: dict[str, Any]) -> None:
    updatable = _inst(doc, ImageComments="c")
    updatable["Study"]["DICOM"] = {"StudyDescription": "S"}
    u = _u(updatable, {"Study": {"DICOM": {"NotThere": None, "StudyDate": None}}})
    part = sibling_updates(u, doc)
    assert part.updatable == {"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDescription": "S"}}}
    assert part.removable == {"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDate": None}}}
    empty = sibling_updates(_u(removable={"Study": {"DICOM": {"NotThere": None}}}), doc)
    assert apply_updates(doc, empty, force=False, primary=True, allow_empty=True) == doc
