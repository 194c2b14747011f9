"""Unit tests: diff_documents between documents built from real DICOM."""

from __future__ import annotations

import copy
from typing import Any

from dicom_factory import make_ct_series
from openhi.core.diff import diff_documents
from openhi.dicom.document import document_from_instances
from openhi.dicom.instance import process_instance


def _doc(n: int) -> dict[str, Any]:
    processed = [process_instance(f) for f in make_ct_series(n, rows=8, cols=8, seed=6)]
    return document_from_instances("d" * 32, "i" * 32, processed)


def test_identical_documents_have_no_changes() -> None:
    doc = _doc(1)
    assert diff_documents(doc, copy.deepcopy(doc)) == []


def test_attribute_and_instance_changes() -> None:
    a = _doc(1)
    b = _doc(2)
    b["Patient"]["DICOM"]["PatientName"] = "NEW^NAME"
    b["Study"]["DICOM"]["StudyDescription"] = "ADDED"
    series_uid, series = next(iter(b["Study"]["Series"].items()))
    first = sorted(a["Study"]["Series"][series_uid]["Instances"])[0]
    del series["Instances"][first]["DICOM"]["InstanceNumber"]
    changes = diff_documents(a, b)
    by_path = {c["path"]: c for c in changes}
    old_name = a["Patient"]["DICOM"].get("PatientName")
    assert by_path["Patient.DICOM.PatientName"] == {
        "change": "added" if old_name is None else "changed", "level": "Patient", "path": "Patient.DICOM.PatientName",
        "to": "NEW^NAME", **({} if old_name is None else {"from": old_name}),
    }  # fmt: skip
    assert by_path["Study.DICOM.StudyDescription"]["change"] == "added"
    removed = by_path[f"Study.Series.{series_uid}.Instances.{first}.DICOM.InstanceNumber"]
    assert removed["change"] == "removed" and removed["level"] == "Instance" and "to" not in removed
    added = [
        c for c in changes if c["level"] == "Instance" and c["change"] == "added" and "DICOM" not in c["path"]
    ]
    assert len(added) == 1 and added[0]["path"].startswith(f"Study.Series.{series_uid}.Instances.")


def test_series_added_and_removed() -> None:
    a = _doc(1)
    b = copy.deepcopy(a)
    series_uid = next(iter(b["Study"]["Series"]))
    b["Study"]["Series"]["1.2.3"] = b["Study"]["Series"].pop(series_uid)
    changes = diff_documents(a, b)
    assert {(c["change"], c["path"]) for c in changes} == {
        ("added", "Study.Series.1.2.3"),
        ("removed", f"Study.Series.{series_uid}"),
    }
