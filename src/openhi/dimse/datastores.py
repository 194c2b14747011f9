"""Which datastore an association works on: ``--dicom-datastore``, or the datastore named by the called AE."""

from __future__ import annotations

from typing import Any

from openhi.dimse.settings import DimseSettings


def resolve_datastore(services: Any, settings: DimseSettings, called_aet: str) -> str | None:
    """The datastore ID for an association to ``called_aet`` (None: none).

    The server's own AE title (``--dicom-aet``) means ``--dicom-datastore`` (None when not given); any
    other called AE title means the ACTIVE datastore whose name is exactly that title.
    """
    called = called_aet.strip()
    if called == settings.aet.strip():
        return settings.datastore
    after: tuple[float, str] | None = None
    while True:
        rows = services.env.index.list_datastores("ACTIVE", after, 200)
        for ds in rows:
            if ds.name == called:
                return str(ds.id)
        if len(rows) < 200:
            return None
        after = (float(rows[-1].created_at), str(rows[-1].id))


def known_called_aet(services: Any, settings: DimseSettings, called_aet: str) -> bool:
    """Whether an association may call ``called_aet``: the server's AE title or an ACTIVE datastore's name."""
    return (
        called_aet.strip() == settings.aet.strip()
        or resolve_datastore(services, settings, called_aet) is not None
    )
