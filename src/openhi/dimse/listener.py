"""The DICOM port beside the HTTP server: one pynetdicom server, a thread per association.

Verification (C-ECHO) and the Storage SCP (:mod:`openhi.dimse.storage`) are built here; the
Query/Retrieve SCP comes from :mod:`openhi.dimse.query_retrieve` when that module is present
(``handlers(services, settings)`` and ``contexts()``).

With ``openhi serve --workers N`` every API process calls :func:`start_listener`; the first to bind the
port serves it and the others stand by, trying again every :data:`STANDBY_SECONDS`, so that the port
comes back when uvicorn replaces a dead process. A single-process server whose DICOM port is taken
fails to start (:class:`DicomPortInUse`).
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import AllStoragePresentationContexts, StoragePresentationContexts, evt

from openhi.dimse.ae import REJECT_CALLED, REJECT_CALLING, OpenhiServer, allow_check, make_ae, tls_context
from openhi.dimse.datastores import known_called_aet, resolve_datastore
from openhi.dimse.settings import DimseSettings
from openhi.dimse.storage import Storage, recover

log = logging.getLogger("openhi.dimse")

#: Set by ``openhi serve --workers N`` in every API process (openhi.server.CONFIG_ENV).
MULTI_PROCESS_ENV = "OPENHI_SERVE_CONFIG"
#: How often a standby API process tries to take the DICOM port over.
STANDBY_SECONDS = 2.0


class DicomPortInUse(RuntimeError):
    """The DICOM port cannot be bound (another program holds it, or the address is wrong)."""


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pynetdicom knows (the 128 of StoragePresentationContexts and the rest)."""
    seen: dict[str, None] = {}
    for cx in [*StoragePresentationContexts, *AllStoragePresentationContexts]:
        seen.setdefault(str(cx.abstract_syntax), None)
    return list(seen)


def _query_retrieve(services: Any, settings: DimseSettings) -> tuple[list[Any], list[str]]:
    """H9's Query/Retrieve handlers and SOP classes, or none while that module is absent."""
    try:
        query_retrieve: Any = importlib.import_module("openhi.dimse.query_retrieve")
    except ModuleNotFoundError as exc:
        if exc.name != "openhi.dimse.query_retrieve":
            raise
        return [], []
    return list(query_retrieve.handlers(services, settings)), [str(u) for u in query_retrieve.contexts()]


def _echo(event: Any) -> int:
    return 0x0000


class Listener:
    """The DICOM port of one process: serving, or standing by until the port is free."""

    def __init__(self, settings: DimseSettings, services: Any, host: str) -> None:
        self.settings = settings
        self.services = services
        self.address = (settings.host or host, int(settings.port or 0))
        allowed = allow_check(settings.allow)

        def gate(calling: str, called: str, address: str) -> tuple[int, int, int] | None:
            if not allowed(calling, address):
                return REJECT_CALLING
            if not known_called_aet(services, settings, called):
                return REJECT_CALLED
            return None

        self.gate: Callable[[str, str, str], tuple[int, int, int] | None] = gate
        self.storage = Storage(services, lambda called: resolve_datastore(services, settings, called))
        qr_handlers, qr_classes = _query_retrieve(services, settings)
        self.ae = make_ae(settings, storage_sop_classes(), qr_classes)
        self.handlers = [
            (evt.EVT_C_ECHO, _echo),
            (evt.EVT_C_STORE, self.storage.on_store),
            (evt.EVT_ACSE_RECV, self.storage.on_acse),
            (evt.EVT_CONN_CLOSE, self.storage.on_close),
            *qr_handlers,
        ]
        self.ssl = tls_context(settings)
        self.server: OpenhiServer | None = None
        self._stop = threading.Event()
        self._standby: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the system chose for port 0)."""
        if self.server is not None:
            return int(self.server.server_address[1])
        return self.address[1]

    def bind(self) -> None:
        """Bind and serve in a background thread.

        Raises:
            OSError: the port cannot be bound.
        """
        server = cast(Any, self.ae).make_server(
            self.address,
            ssl_context=self.ssl,
            evt_handlers=self.handlers,
            server_class=OpenhiServer,
            gate=self.gate,
        )
        self.ae._servers.append(server)
        self.server = server
        threading.Thread(target=server.serve_forever, name="openhi-dimse-accept", daemon=True).start()
        threading.Thread(target=self._recover, name="openhi-dimse-recover", daemon=True).start()
        log.info("DICOM listener %s on %s:%d", self.settings.aet, self.address[0], self.port)

    def _recover(self) -> None:
        try:
            recover(self.services)
        except Exception:
            log.exception("recovering the C-STORE spool failed")

    def stand_by(self) -> None:
        """Try to bind every STANDBY_SECONDS until it works or the listener closes."""

        def loop() -> None:
            while not self._stop.wait(STANDBY_SECONDS):
                try:
                    self.bind()
                    return
                except OSError:
                    continue

        self._standby = threading.Thread(target=loop, name="openhi-dimse-standby", daemon=True)
        self._standby.start()

    def close(self) -> None:
        """Stop accepting, end the associations (their acknowledged instances are committed)."""
        self._stop.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for assoc in list(self.ae.active_associations):
            assoc.abort()
        self.storage.close()


def start_listener(settings: DimseSettings, services: Any, host: str) -> Listener | None:
    """Start listening when ``settings.port`` is set; the listener (``close()`` stops it) or None.

    Raises:
        DicomPortInUse: a single-process server cannot bind the port.
        ValueError, OSError, ssl.SSLError: the TLS certificate or key cannot be used.
    """
    if settings.port is None:
        return None
    listener = Listener(settings, services, host)
    try:
        listener.bind()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and os.environ.get(MULTI_PROCESS_ENV):
            log.info("DICOM port %d is served by another API process; standing by", settings.port)
            listener.stand_by()
            return listener
        listener.storage.close()
        raise DicomPortInUse(
            f"cannot listen for DICOM on {listener.address[0]}:{settings.port}: {exc}"
        ) from None
    return listener
