"""The Query/Retrieve SCP (PS3.4 Annex C): C-FIND, C-MOVE and C-GET for the Patient Root and Study Root
information models, as pynetdicom event handlers over the DICOM index and the Part 10 rebuild.

Statuses: C-FIND 0xFF00 per match, 0x0000 at the end, 0xFE00 cancelled, 0xA900 an identifier that does not
fit the SOP class (no / bad Query/Retrieve Level, a malformed value), 0xC000 unable to process (no
datastore for the called AE title, the index failed). C-MOVE 0xA801 for a destination that is not a
``--dicom-peer`` (or that refuses the association), 0xFF00 per sub-operation with its counts, then 0x0000,
0xB000 (some failed), 0xA702 (all failed) or 0xFE00 (cancelled). C-GET the same on the requesting
association: an instance whose SOP class the SCU gave no context for is a failed sub-operation and the
others still go (PS3.4 C.4.3.3.1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.presentation import build_context

from openhi.core.errors import ValidationError
from openhi.core.find_query import PATIENT_ROOT, STUDY_ROOT, IdentifierError, parse_find, parse_retrieve
from openhi.core.qido_answer import QidoAnswer
from openhi.dimse import find as find_answers
from openhi.dimse import retrieve
from openhi.dimse.datastores import resolve_datastore
from openhi.dimse.settings import DimseSettings

log = logging.getLogger("openhi.dimse")

FIND = {"1.2.840.10008.5.1.4.1.2.1.1": PATIENT_ROOT, "1.2.840.10008.5.1.4.1.2.2.1": STUDY_ROOT}
MOVE = {"1.2.840.10008.5.1.4.1.2.1.2": PATIENT_ROOT, "1.2.840.10008.5.1.4.1.2.2.2": STUDY_ROOT}
GET = {"1.2.840.10008.5.1.4.1.2.1.3": PATIENT_ROOT, "1.2.840.10008.5.1.4.1.2.2.3": STUDY_ROOT}
VERIFICATION = "1.2.840.10008.1.1"
#: CT Image and Secondary Capture Image Storage
_COMMON_STORAGE = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.7")

PENDING = 0xFF00
CANCELLED = 0xFE00
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000


def contexts() -> list[str]:
    """The Query/Retrieve SOP classes the listener supports as SCP (C-GET's storage sub-operations use the
    storage contexts the listener already accepts with the SCU's SCP role)."""
    return [*FIND, *MOVE, *GET]


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def _called_aet(event: Any) -> str:
    try:
        return str(event.assoc.requestor.primitive.called_ae_title).strip()
    except AttributeError:
        return ""


class Cancel:
    """Whether the SCU sent a C-CANCEL for the request: pynetdicom's ``event.is_cancelled`` is true only
    once (it consumes the C-CANCEL); this stays true."""

    def __init__(self, event: Any) -> None:
        self.event = event
        self.seen = False

    def __call__(self) -> bool:
        if not self.seen:
            self.seen = bool(self.event.is_cancelled)
        return self.seen


class QueryRetrieve:
    """The C-FIND / C-MOVE / C-GET handlers of one listener."""

    def __init__(self, services: Any, settings: DimseSettings) -> None:
        self.services = services
        self.settings = settings
        self.answer = QidoAnswer(services.env.index, services.dicom_reads)

    def datastore(self, event: Any) -> str:
        """The datastore of the association. Raises ValidationError when the called AE has none."""
        ds = resolve_datastore(self.services, self.settings, _called_aet(event))
        if ds is None:
            raise ValidationError(
                "No datastore: start openhi with --dicom-datastore or call a datastore's name."
            )
        return ds

    # -- C-FIND
    def on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        model = FIND.get(str(event.request.AffectedSOPClassUID), STUDY_ROOT)
        try:
            identifier = event.identifier
            request = parse_find(identifier, model, self.datastore(event))
        except IdentifierError as exc:
            yield _status(IDENTIFIER_MISMATCH, exc.message), None
            return
        except ValidationError as exc:
            yield _status(UNABLE_TO_PROCESS, exc.message), None
            return
        except Exception:
            log.exception("C-FIND identifier")
            yield _status(UNABLE_TO_PROCESS, "The identifier cannot be decoded."), None
            return
        cancelled = Cancel(event)
        try:
            for ds in find_answers.find(self.answer, request, self.settings.aet, cancelled):
                if cancelled():
                    break
                yield PENDING, ds
        except Exception:
            log.exception("C-FIND failed")
            yield _status(UNABLE_TO_PROCESS, "The query failed."), None
            return
        if cancelled():
            yield CANCELLED, None

    # -- C-MOVE / C-GET
    def _targets(self, event: Any, model: str) -> tuple[str, list[retrieve.Target]]:
        """(datastore, instances). Raises IdentifierError, ValidationError, whatever the index raises."""
        ds = self.datastore(event)
        query = parse_retrieve(event.identifier, model, ds)
        return ds, retrieve.targets(self.services.env.index, query)

    def on_move(self, event: Any) -> Iterator[Any]:
        model = MOVE.get(str(event.request.AffectedSOPClassUID), STUDY_ROOT)
        destination = str(event.move_destination or "").strip()
        peer = self.settings.peers.get(destination)
        if peer is None:
            log.info("C-MOVE to unknown destination %r", destination)
            yield None, None  # pynetdicom answers 0xA801
            return
        host, _, port_text = peer.rpartition(":")
        failure: Dataset | None = None
        found: list[retrieve.Target] = []
        ds = ""
        try:
            ds, found = self._targets(event, model)
        except IdentifierError as exc:
            failure = _status(IDENTIFIER_MISMATCH, exc.message)
        except ValidationError as exc:
            failure = _status(UNABLE_TO_PROCESS, exc.message)
        except Exception:
            log.exception("C-MOVE identifier")
            failure = _status(UNABLE_TO_PROCESS, "The retrieve cannot be processed.")
        holder: dict[str, Any] = {}

        def established(ev: Any) -> None:
            holder["assoc"] = ev.assoc

        # pynetdicom reports a failure only once associated: propose what any Storage SCP takes
        proposed = [(uid, list(retrieve.FALLBACK_SYNTAXES)) for uid in (VERIFICATION, *_COMMON_STORAGE)]
        if failure is None:
            proposed = retrieve.proposed_contexts(found) or proposed
        options = {
            "contexts": [build_context(uid, syntaxes) for uid, syntaxes in proposed],
            "evt_handlers": [(evt.EVT_ACCEPTED, established)],
        }
        yield host.strip("[]"), int(port_text), options
        if failure is not None:
            yield 1  # pynetdicom reports a failure status only after associating
            yield failure, None
            return
        yield len(found)
        store_assoc = holder.get("assoc")
        accepted = retrieve.accepted_syntaxes(store_assoc.accepted_contexts if store_assoc else [])
        source = retrieve.InstanceSource(self.services.dicom_reads, ds)
        yield from retrieve.sub_operations(source, found, accepted, Cancel(event))

    def on_get(self, event: Any) -> Iterator[Any]:
        model = GET.get(str(event.request.AffectedSOPClassUID), STUDY_ROOT)
        try:
            ds, found = self._targets(event, model)
        except IdentifierError as exc:
            yield 1
            yield _status(IDENTIFIER_MISMATCH, exc.message), None
            return
        except ValidationError as exc:
            yield 1
            yield _status(UNABLE_TO_PROCESS, exc.message), None
            return
        except Exception:
            log.exception("C-GET identifier")
            yield 1
            yield _status(UNABLE_TO_PROCESS, "The retrieve cannot be processed."), None
            return
        yield len(found)
        accepted = retrieve.accepted_syntaxes(event.assoc.accepted_contexts)
        source = retrieve.InstanceSource(self.services.dicom_reads, ds)
        yield from retrieve.sub_operations(source, found, accepted, Cancel(event))


def handlers(services: Any, settings: DimseSettings) -> list[tuple[Any, Callable[..., Any]]]:
    """pynetdicom event bindings of the Query/Retrieve SCP: EVT_C_FIND, EVT_C_MOVE and EVT_C_GET (the
    listener's storage contexts accept the SCP role a C-GET SCU selects: openhi.dimse.ae)."""
    qr = QueryRetrieve(services, settings)
    return [
        (evt.EVT_C_FIND, qr.on_find),
        (evt.EVT_C_MOVE, qr.on_move),
        (evt.EVT_C_GET, qr.on_get),
    ]
