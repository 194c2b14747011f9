"""What ``openhi serve --dicom-*`` configures: the DIMSE listener, its peers and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DimseSettings:
    """The DICOM port of a server (off unless ``port`` is set)."""

    port: int | None = None
    aet: str = "OPENHI"
    host: str | None = None  # default: the HTTP --host
    datastore: str | None = None  # where incoming instances go (None: one datastore named like the called AE)
    peers: dict[str, str] = field(default_factory=dict)  # AE title -> "host:port" (C-MOVE destinations)
    allow: list[str] = field(default_factory=list)  # calling AE titles / addresses allowed (empty: any)
    max_associations: int = 32
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    tls_cert: str | None = None
    tls_key: str | None = None
