"""Every message the service writes into a modeled Message string obeys the model's pattern and length."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import openhi
from openhi.core import import_run, writes
from openhi.core.copies import merge_copy
from openhi.core.messages import (
    MESSAGE_MAX,
    MESSAGE_MIN,
    MESSAGE_PATTERN,
    is_modeled_message,
    modeled_message,
)

MODEL = Path(openhi.__file__).parent / "model" / "service-2.json"
STRICT = re.compile(
    r"[\w -:`]+", re.ASCII
)  # the model's pattern as a strict (Java, ASCII \w) client reads it


def _model_message_shape() -> dict[str, Any]:
    shapes = json.loads(MODEL.read_text())["shapes"]
    members = [
        shapes["DICOMImportJobProperties"]["members"]["message"],
        shapes["DICOMImportJobSummary"]["members"]["message"],
        shapes["ImageSetProperties"]["members"]["message"],
        shapes["GetImageSetResponse"]["members"]["message"],
        shapes["UpdateImageSetMetadataResponse"]["members"]["message"],
    ]
    assert {m["shape"] for m in members} == {"Message"}
    shape: dict[str, Any] = shapes["Message"]
    return shape


def test_the_core_constants_are_the_models() -> None:
    shape = _model_message_shape()
    assert shape["pattern"] == MESSAGE_PATTERN
    assert (shape["min"], shape["max"]) == (MESSAGE_MIN, MESSAGE_MAX)


def _valid(text: str) -> bool:
    return MESSAGE_MIN <= len(text) <= MESSAGE_MAX and STRICT.fullmatch(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "INVALID_REQUEST:  SOP Instance UID 1.2.3 already exists; SOP Instance UIDs must be unique",
        "Import job failed: KeyError: 'x' <not> [a] {b} = c? d@e | f\\g ~ h ^ i\nj\tk",
        "Übergröße: 東京 — naïve",
        "",
        "x" * 5000,
        ";" * 3000,
    ],
)
def test_modeled_message_makes_any_text_valid(text: str) -> None:
    out = modeled_message(text)
    assert _valid(out) and is_modeled_message(out), out
    assert modeled_message(out) == out  # a valid message stays as it is


def test_modeled_message_keeps_valid_text_and_reads_naturally() -> None:
    valid = "INVALID_REQUEST:  Patient of SourceImageSet and DestinationImageSet don't match."
    assert modeled_message(valid) == valid
    assert modeled_message("a; b [c]") == "a, b (c)"
    assert modeled_message("x" * 3000).endswith("...") and len(modeled_message("x" * 3000)) == MESSAGE_MAX


def _doc(
    patient: str = "P", study: str = "S", series_desc: str = "D", sops: tuple[str, ...] = ("1.1",)
) -> Any:
    return {
        "Patient": {"DICOM": {"PatientID": patient}},
        "Study": {
            "DICOM": {"StudyInstanceUID": "1.2", "StudyDescription": study},
            "Series": {
                "1.3": {"DICOM": {"SeriesDescription": series_desc}, "Instances": {s: {} for s in sops}}
            },
        },
    }


def test_every_copy_failure_message_is_valid_as_written() -> None:
    source = _doc(sops=("1.2.840.10008.5.1.4.1.1.2.1", "1.1.2"))
    selected = {"1.3": source["Study"]["Series"]["1.3"]["Instances"]}
    messages = [
        merge_copy(_doc(patient="Q"), source, selected, force=False)[1],
        merge_copy(_doc(study="T"), source, selected, force=False)[1],
        merge_copy(_doc(series_desc="E"), source, selected, force=False)[1],
        merge_copy(_doc(sops=("1.2.840.10008.5.1.4.1.1.2.1",)), source, selected, force=False)[1],
        merge_copy(_doc(sops=("1.2.840.10008.5.1.4.1.1.2.1",)), source, selected, force=True)[1],
    ]
    assert all(m is not None for m in messages)
    for message in messages:
        assert message is not None and _valid(message), message


def test_version_and_job_messages_are_valid() -> None:
    """The fixed texts are valid as written; texts carrying an exception's words are made valid."""
    assert _valid(writes.RESTART_MESSAGE)
    fixed = [
        import_run.BUCKET_MISSING.format("input-bucket"),
        import_run.TOO_MANY_FILES.format(5001, 5000),
        import_run.TOO_MANY_BYTES.format(11 * 1024**3, 10 * 1024**3),
        import_run.COMMIT_RACES.format(5),
    ]
    for message in fixed:
        assert _valid(message), message
    hostile = ValueError("bad; value <x> {y} [z] ünïcode\nnext line" + "!" * 3000)
    for template in (import_run.JOB_CRASHED, import_run.ACCESS_DENIED):
        args: tuple[Any, ...] = ("ValueError", hostile) if template.count("{}") == 2 else ("b", "", hostile)
        assert _valid(modeled_message(template.format(*args)))
    assert _valid(modeled_message(f"INTERNAL_ERROR:  ValueError: {hostile}"))
    assert set(import_run.JOB_MESSAGES) >= {import_run.JOB_CRASHED, import_run.ACCESS_DENIED}
