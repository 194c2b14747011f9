"""C-MOVE / C-GET sub-operations (PS3.4 C.4.2, C.4.3): the instances of a retrieve, each as the Part 10
rebuild in a transfer syntax the receiving side accepted.

Syntax choice for one instance, given what the peer accepted for its SOP class: the stored syntax (frames
as stored, HTJ2K included); else Explicit VR Little Endian (decoded; pynetdicom converts it for an
Implicit VR or Deflated context); else JPEG 2000 lossless when the stored frames are lossless; else none:
the sub-operation fails (counted, the retrieve goes on).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from openhi.codec import transfer_syntax as tsx
from openhi.core.dicom_query import DicomQuery
from openhi.core.dicom_reads import DicomReader
from openhi.core.errors import NotFoundError
from openhi.dicom.instance_view import InstanceView, iter_instance_views
from openhi.dicom.part10 import DocumentValueError, TranscodeUnavailable, available_syntaxes, rebuild_dataset

#: instance rows read per index query
PAGE = 1000
#: the most presentation contexts one association may propose (PS3.8 9.3.2.2: odd ids 1-255)
MAX_CONTEXTS = 128
UNCOMPRESSED_LE = (tsx.EXPLICIT_VR_LE, tsx.IMPLICIT_VR_LE)
#: what a C-MOVE proposes besides the stored syntax: the uncompressed little-endian ones
FALLBACK_SYNTAXES = [tsx.EXPLICIT_VR_LE, tsx.IMPLICIT_VR_LE]


@dataclass(frozen=True)
class Target:
    """One instance to send: its index row's identity and stored syntax."""

    image_set_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    stored_ts: str


def targets(index: Any, query: DicomQuery) -> list[Target]:
    """Every instance the retrieve query matches (all pages), in the index's order.

    Raises whatever the index raises.
    """
    out: list[Target] = []
    offset = 0
    while True:
        page = DicomQuery(
            query.level, query.datastore_id, matches=list(query.matches), limit=PAGE, offset=offset
        )
        rows = index.dicom_instances(page)
        for row in rows:
            out.append(
                Target(
                    str(row.get("image_set_id") or ""),
                    str(row.get("study_uid") or ""),
                    str(row.get("series_uid") or ""),
                    str(row.get("sop_uid") or ""),
                    str(row.get("sop_class_uid") or ""),
                    str(row.get("stored_ts") or tsx.EXPLICIT_VR_LE),
                )
            )
        if len(rows) < PAGE:
            return out
        offset += PAGE


def proposed_contexts(found: Iterable[Target]) -> list[tuple[str, list[str]]]:
    """A C-MOVE association's contexts (abstract syntax, transfer syntaxes): per SOP class one context for
    each stored syntax other than the uncompressed ones, and one for Explicit / Implicit VR LE, so that
    the destination can accept both and the stored syntax is used where it is accepted. Past
    :data:`MAX_CONTEXTS`, stored-syntax contexts are dropped (the instances go uncompressed)."""
    stored: dict[str, list[str]] = {}
    for target in found:
        syntaxes = stored.setdefault(target.sop_class_uid, [])
        if target.stored_ts not in UNCOMPRESSED_LE and target.stored_ts not in syntaxes:
            syntaxes.append(target.stored_ts)
    base = [(sop_class, list(FALLBACK_SYNTAXES)) for sop_class in stored]
    extra = [(sop_class, [ts]) for sop_class, syntaxes in stored.items() for ts in syntaxes]
    return (base + extra)[:MAX_CONTEXTS] if len(base) <= MAX_CONTEXTS else base[:MAX_CONTEXTS]


def accepted_syntaxes(contexts: Iterable[Any]) -> dict[str, set[str]]:
    """SOP class -> the transfer syntaxes of the accepted contexts on which this side may send C-STOREs."""
    out: dict[str, set[str]] = {}
    for cx in contexts:
        if getattr(cx, "as_scu", False) and cx.transfer_syntax:
            out.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return out


def choose_syntax(view: InstanceView, accepted: set[str]) -> str | None:
    """The syntax to send ``view`` in, given the syntaxes accepted for its SOP class (None: none fits)."""
    stored = view.stored_transfer_syntax or tsx.EXPLICIT_VR_LE
    if stored in accepted:
        return stored
    available = available_syntaxes(view)
    if tsx.EXPLICIT_VR_LE in available and any(_uncompressed_le(ts) for ts in accepted):
        return tsx.EXPLICIT_VR_LE
    if tsx.J2K_LOSSLESS in available and tsx.J2K_LOSSLESS in accepted:
        return tsx.J2K_LOSSLESS
    return None


def _uncompressed_le(ts: str) -> bool:
    uid = UID(ts)
    return bool(uid.is_transfer_syntax and uid.is_little_endian and not uid.is_compressed)


def unsendable(target: Target) -> Dataset:
    """What a sub-operation that cannot be done yields: no SOP Class UID, so pynetdicom's C-STORE fails
    before anything is sent, counts it failed and lists its SOP Instance UID."""
    ds = Dataset()
    ds.SOPInstanceUID = target.sop_uid
    return ds


class InstanceSource:
    """Instance views of the retrieve's image sets (each document read once) and their Part 10 datasets."""

    def __init__(self, reader: DicomReader, datastore_id: str) -> None:
        self.reader = reader
        self.datastore_id = datastore_id
        self._views: dict[str, Mapping[str, InstanceView]] = {}

    def view(self, target: Target) -> InstanceView | None:
        """The instance's view (None: its image set or the instance is gone)."""
        views = self._views.get(target.image_set_id)
        if views is None:
            try:
                doc = self.reader.document(self.reader.head(self.datastore_id, target.image_set_id))
            except NotFoundError:
                doc = {}
            views = {v.sop_uid: v for v in iter_instance_views(doc)}
            self._views = {target.image_set_id: views}  # one set at a time: targets come set by set
        return views.get(target.sop_uid)

    def dataset(self, view: InstanceView, syntax: str) -> Dataset:
        """The Part 10 rebuild of ``view`` in ``syntax`` (with file meta).

        Raises TranscodeUnavailable, DocumentValueError, NotFoundError (a frame is gone).
        """
        stored = view.stored_transfer_syntax

        def frames(frame_id: str) -> bytes:
            return self.reader.stored_frame(self.datastore_id, frame_id, stored)

        return rebuild_dataset(view, frames, syntax)


def sub_operations(
    source: InstanceSource,
    found: list[Target],
    accepted: Mapping[str, set[str]],
    cancelled: Any,
) -> Iterator[tuple[int, Dataset | None]]:
    """The (status, dataset) pairs pynetdicom's C-MOVE / C-GET loop sends: 0xFF00 with each instance's
    dataset (or with :func:`unsendable`'s, counted failed), 0xFE00 once ``cancelled()``."""
    for target in found:
        if cancelled():
            yield 0xFE00, None
            return
        view = source.view(target)
        syntax = None if view is None else choose_syntax(view, accepted.get(target.sop_class_uid, set()))
        if view is None or syntax is None:
            yield 0xFF00, unsendable(target)
            continue
        try:
            ds = source.dataset(view, syntax)
        except (TranscodeUnavailable, DocumentValueError, NotFoundError):
            yield 0xFF00, unsendable(target)
            continue
        yield 0xFF00, ds
