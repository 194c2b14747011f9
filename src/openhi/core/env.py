"""The environment every core service receives: settings, ports, clock and pools."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from openhi.core.settings import Settings
from openhi.ports.blobs import BlobStore
from openhi.ports.index import MetadataIndex
from openhi.ports.objects import ObjectStore
from openhi.ports.tasks import TaskRunner


@dataclass
class Env:
    settings: Settings
    index: MetadataIndex
    blobs: BlobStore
    objects: ObjectStore
    tasks: TaskRunner
    pixel_pool: Executor | None = None
    clock: Callable[[], float] = field(default=time.time)

    def datastore_arn(self, datastore_id: str) -> str:
        s = self.settings
        return f"arn:aws:medical-imaging:{s.region}:{s.account_id}:datastore/{datastore_id}"

    def image_set_arn(self, datastore_id: str, image_set_id: str) -> str:
        return f"{self.datastore_arn(datastore_id)}/imageset/{image_set_id}"
