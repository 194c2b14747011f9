"""Every DICOMweb route, for the one route table."""

from __future__ import annotations

from openhi.auth.routes import Route
from openhi.dicomweb import qido, rendered, stow, wado

#: a client's DICOMweb base URL is ``http://HOST:PORT/datastore/{datastoreId}``
BASE = "/datastore/{datastoreId}"


def dicomweb_routes() -> list[Route]:
    return [*wado.ROUTES, *rendered.ROUTES, *qido.ROUTES, *stow.ROUTES]
