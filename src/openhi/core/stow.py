"""STOW-RS (and C-STORE): store uploaded instances synchronously through the import core (placeholder)."""

from __future__ import annotations

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env


class StowService:
    """Synchronous stores of DICOM files into a datastore's primary image sets."""

    def __init__(self, env: Env, datastores: DatastoreService) -> None:
        self.env = env
        self.datastores = datastores
