"""Image set reads: properties, versions, metadata, frames, search (placeholder until the read issue lands)."""

from __future__ import annotations

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.pagination import Paginator


class ImageSetReader:
    def __init__(self, env: Env, paginator: Paginator, datastores: DatastoreService) -> None:
        self.env = env
        self.paginator = paginator
        self.datastores = datastores
