"""Versioned writes: update, copy, delete (placeholder until the writes issue lands)."""

from __future__ import annotations

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env


class ImageSetWriter:
    def __init__(self, env: Env, datastores: DatastoreService) -> None:
        self.env = env
        self.datastores = datastores

    def recover(self) -> None:
        """At start: fail writes a previous process left half-done and unlock their image sets."""
