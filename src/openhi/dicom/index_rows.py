"""The DICOM index rows of one image set's document: its series row and one row per instance."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from openhi.core.dicom_query import ATTRIBUTES, COUNTS, INTEGER_COLUMNS, Level
from openhi.dicom.document import search_string

_LEVEL_NODE = {Level.STUDY: ("Patient", "Study"), Level.SERIES: ("Series",), Level.INSTANCE: ("Instance",)}


@dataclass
class DicomRows:
    """``series``: the columns of the study and series levels (column → value) and ``num_instances``;
    ``instances``: per instance, the instance columns plus ``frame_ids`` (list, frame order) and
    ``stored_ts``. Values are the document's (padding removed, several values joined by backslashes)."""

    study_uid: str
    series_uid: str
    series: dict[str, Any] = field(default_factory=dict)
    instances: list[dict[str, Any]] = field(default_factory=list)


def _value(keyword: str, column: str, value: Any) -> Any:
    if column in INTEGER_COLUMNS:  # US values are numbers in the document; IS values are strings
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    text = search_string(keyword, value)
    if text is None or column not in INTEGER_COLUMNS:
        return text
    with contextlib.suppress(ValueError):
        return int(text.split("\\")[0].strip())
    return None


def _columns(level: Level, attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in ATTRIBUTES:
        if a.level is level and a.keyword not in COUNTS and a.keyword != "ModalitiesInStudy":
            out[a.column] = _value(a.keyword, a.column, attrs.get(a.keyword))
    return out


def index_rows(doc: dict[str, Any]) -> DicomRows:
    """The rows of ``doc`` (a §2.2 metadata document holding one series)."""
    study = {**doc["Patient"]["DICOM"], **doc["Study"]["DICOM"]}
    series_map: dict[str, Any] = doc["Study"]["Series"]
    series_uid, series_node = next(iter(series_map.items()), ("", {"DICOM": {}, "Instances": {}}))
    series_attrs: dict[str, Any] = series_node.get("DICOM") or {}
    row = {**_columns(Level.STUDY, study), **_columns(Level.SERIES, series_attrs)}
    row["study_uid"] = row.get("study_uid") or search_string(
        "StudyInstanceUID", study.get("StudyInstanceUID")
    )
    row["series_uid"] = series_uid
    instances: list[dict[str, Any]] = []
    for sop_uid, node in (series_node.get("Instances") or {}).items():
        attrs = node.get("DICOM") or {}
        inst = _columns(Level.INSTANCE, attrs)
        inst["sop_uid"] = sop_uid
        inst["frame_ids"] = [f["ID"] for f in node.get("ImageFrames") or ()]
        inst["stored_ts"] = node.get("StoredTransferSyntaxUID")
        instances.append(inst)
    row["num_instances"] = len(instances)
    return DicomRows(str(row["study_uid"] or ""), series_uid, row, instances)
