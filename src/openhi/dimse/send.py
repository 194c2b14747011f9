"""Storage SCU: push Part 10 instances to a DICOM peer over one association (C-STORE, TCP_NODELAY)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydicom import dcmread

from openhi.codec import transfer_syntax as tsx
from openhi.dimse.ae import scu_ae

_PEER = re.compile(r"^([^=]{1,16})=(.+):(\d{1,5})$")
#: Syntaxes proposed for every SOP class besides the instance's own.
PROPOSED = [tsx.EXPLICIT_VR_LE, tsx.IMPLICIT_VR_LE]


class SendError(Exception):
    """The peer could not be reached or refused the association."""


@dataclass(frozen=True)
class Peer:
    """A DICOM peer: its AE title, host and port."""

    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, spec: str) -> Peer:
        """``AET=HOST:PORT``.

        Raises:
            ValueError: not of that form.
        """
        match = _PEER.match(spec.strip())
        if match is None:
            raise ValueError(f"{spec!r}: expected AET=HOST:PORT")
        return cls(match.group(1).strip(), match.group(2), int(match.group(3)))


@dataclass
class SendResult:
    """What became of each instance: SOP Instance UID -> the peer's status (or a local error)."""

    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return sum(1 for s in self.statuses.values() if s == 0 or (s & 0xF000) == 0xB000)

    @property
    def failed(self) -> int:
        return len(self.statuses) + len(self.errors) - self.sent


def send(
    peer: Peer,
    calling_aet: str,
    sop_classes: Iterable[tuple[str, str]],
    instances: Iterable[bytes],
    progress: Callable[[str, int], None] | None = None,
) -> SendResult:
    """C-STORE every Part 10 instance of ``instances`` to ``peer`` on one association.

    ``sop_classes`` are the (SOP Class UID, transfer syntax UID) pairs to propose (at most 128
    SOP classes: the association's limit), each also with explicit and implicit VR little endian.

    Raises:
        SendError: the association is rejected, aborted or cannot be opened.
    """
    ae = scu_ae(calling_aet)
    wanted: dict[str, list[str]] = {}
    for sop_class, syntax in sop_classes:
        syntaxes = wanted.setdefault(sop_class, list(PROPOSED))
        if syntax and syntax not in syntaxes:
            syntaxes.insert(0, syntax)
    if len(wanted) > 128:
        raise SendError(f"{len(wanted)} SOP classes: one association proposes 128 at most")
    for sop_class, syntaxes in wanted.items():
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet)
    if not assoc.is_established:
        raise SendError(f"association with {peer.aet} at {peer.host}:{peer.port} was not established")
    result = SendResult()
    try:
        for data in instances:
            ds = dcmread(io.BytesIO(data))
            uid = str(ds.SOPInstanceUID)
            try:
                answer = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:  # no accepted context for its class / syntax
                result.errors[uid] = str(exc)
                continue
            if "Status" not in answer:
                raise SendError(f"{peer.aet} answered no status (association aborted or timed out)")
            result.statuses[uid] = int(answer.Status)
            if progress is not None:
                progress(uid, int(answer.Status))
    finally:
        if assoc.is_established:
            assoc.release()
    return result
