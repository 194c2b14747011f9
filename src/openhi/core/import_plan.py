"""Grouping an import job's instances into image sets: the conflict keys and the plan of one attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.dicom.instance import ProcessedInstance
from openhi.ports.index import VersionCommit


def _norm(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def conflict_keys(p: ProcessedInstance) -> tuple[Any, ...]:
    """Grouping keys that must agree inside a primary image set (§7.3)."""
    return (
        _norm(p.patient.get("PatientID")),
        _norm(p.study.get("StudyDate")),
        _norm(p.study.get("AccessionNumber")),
        _norm(p.study.get("StudyID")),
        p.study_uid,
        p.series_uid,
        _norm(p.series.get("SeriesNumber")),
    )


def doc_conflict_keys(doc: dict[str, Any]) -> tuple[Any, ...]:
    series_uid, series = next(iter(doc["Study"]["Series"].items()))
    patient, study = doc["Patient"]["DICOM"], doc["Study"]["DICOM"]
    return (
        _norm(patient.get("PatientID")),
        _norm(study.get("StudyDate")),
        _norm(study.get("AccessionNumber")),
        _norm(study.get("StudyID")),
        _norm(study.get("StudyInstanceUID")),
        series_uid,
        _norm(series["DICOM"].get("SeriesNumber")),
    )


@dataclass
class Plan:
    """One attempt at placing the job's instances: the index changes and where each instance went."""

    creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]] = field(default_factory=list)
    appends: list[tuple[VersionCommit, int]] = field(default_factory=list)
    metadata_keys: list[str] = field(default_factory=list)
    placed: dict[str, tuple[str, int, bool]] = field(
        default_factory=dict
    )  # sop uid -> (set id, version, primary)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # primary sets this plan creates: (study, series) -> (head, document)
    new_primaries: dict[tuple[str, str], tuple[ImageSet, dict[str, Any]]] = field(default_factory=dict)
    # failure entries of instances refused because their image set's metadata would be too large
    rejected: list[dict[str, Any]] = field(default_factory=list)


def record_placement(
    plan: Plan, set_id: str, version: int, is_primary: bool, items: list[ProcessedInstance]
) -> None:
    for p in items:
        plan.placed[p.sop_uid] = (set_id, version, is_primary)
    summary = plan.summaries.setdefault(
        set_id,
        {
            "imageSetId": set_id,
            "imageSetVersion": version,
            "isPrimary": is_primary,
            "numberOfMatchedSOPInstances": 0,
        },
    )
    summary["numberOfMatchedSOPInstances"] += len(items)
