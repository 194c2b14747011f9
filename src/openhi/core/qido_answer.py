"""QIDO-RS results (PS3.18 §10.6.3, F.2): index rows, parent rows and documents as DICOM JSON objects."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from openhi.core.dicom_query import ATTRIBUTES, BY_KEYWORD, Attribute, DicomQuery, Kind, Level, Match
from openhi.core.errors import NotFoundError
from openhi.core.qido_parse import QidoRequest, level_order
from openhi.dicom.dicom_json import instance_dicom_json
from openhi.dicom.instance_view import InstanceView, key_tag

if TYPE_CHECKING:
    from openhi.core.dicom_reads import DicomReader
    from openhi.ports.index import MetadataIndex

RETRIEVE_URL = "00081190"
INSTANCE_AVAILABILITY = "00080056"
SPECIFIC_CHARACTER_SET = "00080005"
UTF8 = "ISO_IR 192"
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_NUMBER_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})
_STUDY_UID = BY_KEYWORD[(Level.STUDY, "StudyInstanceUID")]
_SERIES_UID = BY_KEYWORD[(Level.SERIES, "SeriesInstanceUID")]
#: the document nodes an entity's own (and inherited) attributes come from
_NODES = {Level.STUDY: 2, Level.SERIES: 3, Level.INSTANCE: 4}

#: (level, study, series, sop) -> RetrieveURL of that resource
UrlFor = Callable[[Level, str, str, str], str]


def _pn(text: str) -> dict[str, str] | None:
    groups = {name: g for name, g in zip(_PN_GROUPS, text.split("="), strict=False) if g}
    return groups or None


def _number(value: Any) -> Any:
    if isinstance(value, int) or value is None:
        return value
    text = str(value).strip(" ")
    try:
        return int(text)
    except ValueError:
        return text or None


def index_element(attr: Attribute, value: Any) -> dict[str, Any]:
    """The DICOM JSON element of an index column value: ``None`` / empty → no ``Value``; a string with
    backslashes (or a list) → several values; PN → person name objects; integer VRs → numbers."""
    element: dict[str, Any] = {"vr": attr.vr}
    if value is None or value == "" or value == [] or value == ():
        return element
    if isinstance(value, list | tuple):
        items: list[Any] = list(value)
    elif isinstance(value, str):
        items = value.split("\\")
    else:
        items = [value]
    converted: list[Any]
    if attr.vr == "PN":
        converted = [_pn(str(v)) if v not in (None, "") else None for v in items]
    elif attr.vr in _NUMBER_VRS:
        converted = [_number(v) for v in items]
    else:
        converted = [str(v) if v not in (None, "") else None for v in items]
    if any(v is not None for v in converted):
        element["Value"] = converted
    return element


def _has_non_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return not value.isascii()
    if isinstance(value, dict):
        return any(_has_non_ascii(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_ascii(v) for v in value)
    return False


def result_levels(q: DicomQuery) -> list[Level]:
    """The levels whose default attributes a result carries (PS3.18 Table 10.6.3-2): the query's level,
    and the levels above it that the path does not fix (series of all studies also carry the study's)."""
    if q.level is Level.STUDY:
        return [Level.STUDY]
    if q.level is Level.SERIES:
        return [Level.SERIES] if q.study_uid else [Level.STUDY, Level.SERIES]
    if q.series_uid:
        return [Level.INSTANCE]
    return [Level.SERIES, Level.INSTANCE] if q.study_uid else [Level.STUDY, Level.SERIES, Level.INSTANCE]


class QidoAnswer:
    """Turns a parsed request into its result objects, reading the index (and documents when asked)."""

    def __init__(self, index: MetadataIndex, reader: DicomReader) -> None:
        self.index = index
        self.reader = reader

    def rows(self, q: DicomQuery) -> list[dict[str, Any]]:
        if q.level is Level.STUDY:
            return self.index.dicom_studies(q)
        if q.level is Level.SERIES:
            return self.index.dicom_series(q)
        return self.index.dicom_instances(q)

    def results(self, request: QidoRequest, url_for: UrlFor) -> list[dict[str, Any]]:
        """The DICOM JSON objects of the request's page (keys ascending).

        Raises nothing of its own (an image set deleted meanwhile only loses its document attributes).
        """
        if request.empty:
            return []
        q = request.query
        rows = self.rows(q)
        if not rows:
            return []
        levels = result_levels(q)
        included = [a for a in ATTRIBUTES if a.tag in request.include]
        if request.include_all:
            included = [a for a in ATTRIBUTES if level_order(a.level) <= level_order(q.level)]
        wanted = {*levels, *(a.level for a in included)}
        studies = (
            self._parents(q, Level.STUDY, rows)
            if Level.STUDY in wanted and q.level is not Level.STUDY
            else {}
        )
        series = (
            self._parents(q, Level.SERIES, rows)
            if Level.SERIES in wanted and q.level is Level.INSTANCE
            else {}
        )
        extra = [t for t in request.include if key_tag_in_index(t) is None]
        documents = request.include_all or bool(extra)
        out = []
        for row in rows:
            study_uid = str(row.get("study_uid") or q.study_uid or "")
            series_uid = str(row.get("series_uid") or q.series_uid or "")
            sop_uid = str(row.get("sop_uid") or "")
            sources: dict[Level, Mapping[str, Any]] = {
                Level.STUDY: studies.get(study_uid, row),
                Level.SERIES: series.get((study_uid, series_uid), row),
                Level.INSTANCE: row,
            }
            obj: dict[str, Any] = {}
            if documents:
                obj.update(self._document_attributes(q, row, request.include_all, extra))
            for attr in ATTRIBUTES:
                if attr.level in levels or attr in included:
                    obj[attr.tag] = index_element(attr, sources[attr.level].get(attr.column))
            if q.level is not Level.STUDY:
                obj[_STUDY_UID.tag] = index_element(_STUDY_UID, study_uid)
            if q.level is Level.INSTANCE:
                obj[_SERIES_UID.tag] = index_element(_SERIES_UID, series_uid)
            obj[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
            obj[RETRIEVE_URL] = {"vr": "UR", "Value": [url_for(q.level, study_uid, series_uid, sop_uid)]}
            if SPECIFIC_CHARACTER_SET in obj or _has_non_ascii(obj):
                obj[SPECIFIC_CHARACTER_SET] = {"vr": "CS", "Value": [UTF8]}
            out.append(dict(sorted(obj.items())))
        return out

    def _parents(
        self, q: DicomQuery, level: Level, rows: list[dict[str, Any]]
    ) -> dict[Any, Mapping[str, Any]]:
        """The study (by UID) or series (by study and series UID) rows of the page's rows: one index query."""
        if level is Level.STUDY:
            uids = list(dict.fromkeys(str(r.get("study_uid") or q.study_uid or "") for r in rows))
            attr = _STUDY_UID
        else:
            uids = list(dict.fromkeys(str(r.get("series_uid") or q.series_uid or "") for r in rows))
            attr = _SERIES_UID
        uids = [u for u in uids if u]
        if not uids:
            return {}
        kind = Kind.SINGLE if len(uids) == 1 else Kind.LIST
        parent = DicomQuery(
            level,
            q.datastore_id,
            study_uid=q.study_uid,
            matches=[Match(attr, kind, tuple(uids))],
            limit=len(uids) * 2,
        )
        found = self.rows(parent)
        if level is Level.STUDY:
            return {str(r.get("study_uid")): r for r in found}
        return {(str(r.get("study_uid") or q.study_uid or ""), str(r.get("series_uid"))): r for r in found}

    def _representative(self, q: DicomQuery, row: Mapping[str, Any]) -> tuple[str, str, str] | None:
        """(image set id, series UID, SOP UID) of an instance of the row's entity: the first of its index."""
        if q.level is Level.INSTANCE:
            return (
                str(row.get("image_set_id") or ""),
                str(row.get("series_uid") or q.series_uid),
                str(row.get("sop_uid")),
            )
        study = str(row.get("study_uid") or q.study_uid or "")
        series = str(row.get("series_uid") or q.series_uid or "") if q.level is Level.SERIES else None
        if series is not None and row.get("image_set_id"):
            return str(row["image_set_id"]), series, ""  # the series' image set: its first instance
        first = self.index.dicom_instances(
            DicomQuery(Level.INSTANCE, q.datastore_id, study_uid=study, series_uid=series, limit=1)
        )
        if not first:
            return None
        inst = first[0]
        return (
            str(inst.get("image_set_id") or ""),
            str(inst.get("series_uid") or series),
            str(inst.get("sop_uid")),
        )

    def _document_attributes(
        self, q: DicomQuery, row: Mapping[str, Any], everything: bool, tags: Iterable[str]
    ) -> dict[str, Any]:
        """DICOM JSON of the entity's attributes (its own document nodes and those above) from the document
        of one of its instances: every one with ``everything``, else those of ``tags``."""
        found = self._representative(q, row)
        if found is None or not found[0]:
            return {}
        image_set_id, series_uid, sop_uid = found
        try:
            doc = self.reader.document(self.reader.head(q.datastore_id, image_set_id))
        except NotFoundError:
            return {}  # deleted (or replaced) since the index answered: the index's values still stand
        view = entity_view(doc, q.level, series_uid, sop_uid)
        if view is None:
            return {}
        values = instance_dicom_json(view)
        if everything:
            return values
        wanted = set(tags)
        return {tag: element for tag, element in values.items() if tag in wanted}


def key_tag_in_index(tag: str) -> Attribute | None:
    """The index attribute of ``tag`` (any level), if the index holds it."""
    for attr in ATTRIBUTES:
        if attr.tag == tag:
            return attr
    return None


def _node_dicom(node: Any) -> dict[str, Any]:
    value = node.get("DICOM") if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def entity_view(doc: Mapping[str, Any], level: Level, series_uid: str, sop_uid: str) -> InstanceView | None:
    """An InstanceView of the attributes a ``level`` entity owns in ``doc``: Patient and Study for a study,
    plus the series' for a series, plus the instance's for an instance (VRs from the instance node
    ``sop_uid``, or the series' first when it is "")."""
    study = doc.get("Study") if isinstance(doc.get("Study"), dict) else {}
    series_node = (study.get("Series") or {}).get(series_uid) if isinstance(study, dict) else None
    instances = (series_node.get("Instances") or {}) if isinstance(series_node, dict) else {}
    if not sop_uid:
        sop_uid = next(iter(instances), "")
    instance_node = instances.get(sop_uid)
    if not isinstance(instance_node, dict):
        return None
    nodes = [doc.get("Patient"), study, series_node, instance_node][: _NODES[level]]
    attributes: dict[str, Any] = {}
    for node in nodes:
        attributes.update(_node_dicom(node))
    attributes = {k: v for k, v in attributes.items() if key_tag(k) is not None}
    vrs = instance_node.get("DICOMVRs")
    return InstanceView(
        study_uid=str(_node_dicom(study).get("StudyInstanceUID") or ""),
        series_uid=series_uid,
        sop_uid=sop_uid,
        attributes=attributes,
        vrs=dict(vrs) if isinstance(vrs, dict) else {},
        stored_transfer_syntax=str(instance_node.get("StoredTransferSyntaxUID") or ""),
        frame_ids=(),
    )
