"""pynetdicom set-up: the server's presentation contexts, TCP_NODELAY sockets, TLS and association checks.

Every socket openhi opens or accepts for DICOM has ``TCP_NODELAY`` (with Nagle on, small PDUs such as
C-STORE responses wait for the peer's delayed ACK: tens of instances per second instead of hundreds).
The acceptor refuses an association in its A-ASSOCIATE-RJ with PS3.8 Table 9-21's reasons: a calling
AE title or address outside ``--dicom-allow`` (permanent, service-user, "calling-AE-title not
recognized"), a called AE title that is neither ``--dicom-aet`` nor the name of an ACTIVE datastore
(permanent, service-user, "called-AE-title not recognized").
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.acse import ACSE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from openhi.codec import transfer_syntax as tsx
from openhi.dimse.settings import DimseSettings
from openhi.throttle.guard import admit

#: the operation name under which --throttle limits a calling AE title's associations
ASSOCIATION_ACTION = "openhi:DicomAssociation"
log = logging.getLogger("openhi.dimse")

#: The syntaxes a Storage SCP accepts: the uncompressed ones first (preferred when a context offers
#: several), then every one the import core stores as-is or transcodes (spec §7.4).
_NATIVE_FIRST = [tsx.EXPLICIT_VR_LE, tsx.IMPLICIT_VR_LE, tsx.DEFLATED_EXPLICIT_VR_LE, tsx.EXPLICIT_VR_BE]
STORAGE_SYNTAXES = _NATIVE_FIRST + sorted((tsx.AS_IS | tsx.TRANSCODED) - set(_NATIVE_FIRST))
VERIFICATION = "1.2.840.10008.1.1"
VERIFICATION_SYNTAXES = [tsx.EXPLICIT_VR_LE, tsx.IMPLICIT_VR_LE, tsx.EXPLICIT_VR_BE]

# A-ASSOCIATE-RJ (result, source, reason): PS3.8 Table 9-21
REJECT_CALLING = (0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling-AE-title-not-recognized
REJECT_CALLED = (0x01, 0x01, 0x07)  # rejected-permanent, service-user, called-AE-title-not-recognized

#: Decides an association request: (calling AE, called AE, peer address) -> a rejection or None.
Gate = Callable[[str, str, str], "tuple[int, int, int] | None"]


def nodelay(sock: socket.socket) -> socket.socket:
    """Set ``TCP_NODELAY`` on ``sock`` (a socket that is not TCP is left as it is)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _NoDelayAssociationSocket(AssociationSocket):
    """An outgoing association's socket, with ``TCP_NODELAY``."""

    def _create_socket(self, address: Any) -> socket.socket:
        return nodelay(super()._create_socket(address))


class OpenhiAE(AE):
    """pynetdicom's AE whose requested associations (Storage SCU, C-MOVE sub-operations) use TCP_NODELAY."""

    def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> AssociationSocket:
        sock = _NoDelayAssociationSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


class _GatedAcse(ACSE):
    """The acceptor's ACSE with openhi's allow-list and called-AE check before pynetdicom's own."""

    def __init__(self, assoc: Any, gate: Gate) -> None:
        super().__init__(assoc)
        self._gate = gate

    def _negotiate_as_acceptor(self) -> None:
        rq = cast(Any, self.requestor.primitive)
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        address = str(self.assoc.requestor.address)
        try:
            refusal = self._gate(calling, called, address)
        except Exception:  # the index is down, say: a transient refusal, no reason given
            log.exception("DICOM association check failed")
            refusal = (0x02, 0x01, 0x01)
        if refusal is None and admit(f"dicom:{calling or address}", ASSOCIATION_ACTION) is not None:
            refusal = (0x02, 0x03, 0x02)  # rate limit (--throttle): transient, local limit exceeded
        if refusal is not None:
            log.info("refused association %s -> %s from %s: %s", calling, called, address, refusal)
            self.requestor.ae_title = calling
            self.send_reject(*refusal)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        super()._negotiate_as_acceptor()


class _Handler(RequestHandler):
    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assoc.acse = _GatedAcse(assoc, cast(OpenhiServer, self.server).gate)
        return assoc


class OpenhiServer(ThreadedAssociationServer):
    """pynetdicom's threaded server (one thread per association) with TCP_NODELAY on accepted sockets,
    the TLS handshake in the association's thread (never in the accept loop, where a client that never
    handshakes would block every other connection) and an association gate."""

    daemon_threads = True

    def __init__(self, *args: Any, gate: Gate, **kwargs: Any) -> None:
        self.gate = gate
        kwargs["request_handler"] = _Handler
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        client, address = self.socket.accept()
        nodelay(client)
        if self.ae.network_timeout is not None:
            client.settimeout(self.ae.network_timeout)  # a TLS handshake that never comes ends too
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("DICOM connection from %s failed", client_address, exc_info=True)


def tls_context(settings: DimseSettings) -> ssl.SSLContext | None:
    """The server's TLS context (PS3.15 B.1/B.9: TLS 1.2 or later) when a certificate is configured.

    Raises:
        ValueError: only one of the certificate and the key is given.
        OSError, ssl.SSLError: they cannot be read or do not match.
    """
    if not settings.tls_cert and not settings.tls_key:
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("DICOM TLS needs both --dicom-tls-cert and --dicom-tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def allow_check(allow: Iterable[str]) -> Callable[[str, str], bool]:
    """Whether (calling AE, address) may associate: entries are AE titles or IP addresses / networks
    (``10.0.0.0/8``); an empty list allows everyone. With both kinds listed, both must match."""
    titles: set[str] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in allow:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            titles.add(entry)

    def allowed(calling: str, address: str) -> bool:
        if titles and calling not in titles:
            return False
        if networks:
            try:
                ip = ipaddress.ip_address(address.split("%")[0])
            except ValueError:
                return False
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            return any(ip in net for net in networks)
        return True

    return allowed


def make_ae(
    settings: DimseSettings, sop_classes: Iterable[str], query_classes: Iterable[str] = ()
) -> OpenhiAE:
    """The server AE: Verification, the storage SOP classes and the Q/R classes as SCP, with the
    configured timeouts and association limit."""
    ae = OpenhiAE(ae_title=settings.aet)
    ae.maximum_associations = settings.max_associations
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.maximum_pdu_size = 0  # no limit: the peer's own maximum
    ae.require_called_aet = False  # the gate checks it (a datastore's name is a valid called AE too)
    ae.add_supported_context(VERIFICATION, VERIFICATION_SYNTAXES)
    seen = {VERIFICATION}
    for uid in sop_classes:
        if uid not in seen:
            seen.add(uid)
            # both roles accepted when the requestor selects roles: a C-GET SCU takes the SCP role
            ae.add_supported_context(uid, STORAGE_SYNTAXES, scu_role=True, scp_role=True)
    for uid in query_classes:
        if uid not in seen:
            seen.add(uid)
            ae.add_supported_context(uid, VERIFICATION_SYNTAXES)
    return ae


def scu_ae(calling_aet: str, settings: DimseSettings | None = None) -> OpenhiAE:
    """An AE that requests associations (Storage SCU) with TCP_NODELAY and the configured timeouts."""
    ae = OpenhiAE(ae_title=calling_aet)
    if settings is not None:
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
    return ae
