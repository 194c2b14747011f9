"""The composition root: builds ports from configuration and the core services on top of them."""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openhi.core.datastores import DatastoreService
from openhi.core.dicom_backfill import start_backfill
from openhi.core.dicom_reads import DicomReader
from openhi.core.env import Env
from openhi.core.event_retention import EventPruner
from openhi.core.import_worker import ImportWorker
from openhi.core.imports import ImportService
from openhi.core.pagination import Paginator
from openhi.core.reads import ImageSetReader
from openhi.core.settings import Settings
from openhi.core.stow import StowService
from openhi.core.tags import TagService
from openhi.core.webhooks import WebhookDeliverer, load_webhooks
from openhi.core.writes import ImageSetWriter
from openhi.dimse.settings import DimseSettings
from openhi.storage.registry import open_blobs, open_index, open_objects
from openhi.storage.tasks_threads import ThreadTaskRunner


@dataclass
class ServerConfig:
    data_dir: Path = Path("./openhi-data")
    index_url: str | None = None
    blobs_url: str | None = None
    s3_endpoint_url: str | None = None
    credentials: dict[str, str] = field(default_factory=dict)
    # access key id -> IAM policy document (keys from --policy-file; their secrets are in credentials)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    pixel_workers: int | None = None  # None: one per CPU; 0: encode in the calling thread
    api: bool = True  # serve the API: recover half-done writes at start, collect blobs
    import_threads: int = 2  # import jobs this process runs at a time; 0: no import worker here
    dimse: DimseSettings = field(default_factory=DimseSettings)  # the DICOM port (off unless a port is set)
    throttle: str = "off"  # request rate limits: "off", "aws" (AWS's quotas) or a limits file
    faults: str | None = None  # fault-injection rules file applied from the start
    log_format: str = "text"  # "text" or "json" (one object per line)
    metrics_public: bool = False  # /metrics without authentication
    webhooks: str | None = None  # webhooks file: processes with import workers deliver the event feed

    def resolved_index_url(self) -> str:
        return self.index_url or f"sqlite:///{self.data_dir / 'index.sqlite3'}"

    def resolved_blobs_url(self) -> str:
        return self.blobs_url or f"file://{self.data_dir / 'blobs'}"


class ResourceInfo:
    """What authorization reads about a request's resources: ARNs, tags, an image set's UIDs."""

    def __init__(self, env: Env) -> None:
        self.env = env

    def datastore_arn(self, datastore_id: str) -> str:
        return self.env.datastore_arn(datastore_id)

    def image_set_arn(self, datastore_id: str, image_set_id: str) -> str:
        return self.env.image_set_arn(datastore_id, image_set_id)

    def tags(self, arn: str) -> Mapping[str, str]:
        return self.env.index.get_tags(arn)

    def image_set_uids(self, datastore_id: str, image_set_id: str) -> tuple[str | None, str | None]:
        head = self.env.index.get_image_set(datastore_id, image_set_id)
        if head is None:
            return None, None
        return head.search.get("DICOMStudyInstanceUID"), head.search.get("DICOMSeriesInstanceUID")


@dataclass
class Services:
    env: Env
    paginator: Paginator
    datastores: DatastoreService
    tags: TagService
    imports: ImportService
    reads: ImageSetReader
    writes: ImageSetWriter
    dicom_reads: DicomReader
    stow: StowService
    worker: ImportWorker | None = None
    dimse: DimseSettings | None = None  # the DICOM port's settings (peers for openhi's send route)
    scratch_dir: Path | None = None  # request bodies streamed to disk (uploads); None: the system's
    resource_info: ResourceInfo = field(init=False)
    #: closed first when the services close (front doors beside HTTP: the DICOM listener)
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.resource_info = ResourceInfo(self.env)

    def ready(self) -> bool:
        """True when the index answers a trivial query (``/readyz``)."""
        try:
            self.env.index.get_meta("pagination_secret")
        except Exception:
            return False
        return True

    def close(self) -> None:
        for close in self.on_close:
            close()
        if self.worker is not None:
            self.worker.stop()  # a running job gives its lease back for another worker to resume
        self.reads.close()  # writes the last buffered touches while the index is still open
        self.writes.close()  # stops the heartbeat and the blob collector
        self.env.tasks.shutdown()
        if self.env.pixel_pool is not None:
            self.env.pixel_pool.shutdown(wait=True, cancel_futures=True)  # workers exit with the server
        self.env.index.close()


def _warm_worker() -> None:
    """Import the pixel stack in a pool process so the first import job doesn't pay for it."""
    import openhi.core.import_run  # noqa: F401
    from openhi.core import telemetry
    from openhi.dicom.warmup import warm_up

    telemetry.warm()  # the metrics sink (prometheus_client) loads now, not during the first job's files
    try:
        warm_up()  # the whole pixel path once: the first file of the first job costs what the others do
    except Exception:  # a warm-up is never worth a broken worker
        logging.getLogger("openhi.import").exception("warming up a pixel worker failed")


def _started() -> None:
    """A no-op task: submitting one per worker starts the pool's processes now."""


def build_services(config: ServerConfig) -> Services:
    """Open the backends, recover half-finished writes (API processes), start the import worker (unless
    ``import_threads`` is 0), and return ready services. Import jobs a dead process left running are
    taken over by any worker once their lease expires."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    index = open_index(config.resolved_index_url())
    workers = config.pixel_workers if config.pixel_workers is not None else (os.cpu_count() or 1)
    env = Env(
        settings=config.settings,
        index=index,
        blobs=open_blobs(config.resolved_blobs_url(), config.s3_endpoint_url),
        objects=open_objects(config.data_dir, config.s3_endpoint_url),
        tasks=ThreadTaskRunner(),
        # forkserver: children never inherit the parent's threads or obstore's runtime (not fork-safe)
        pixel_pool=(
            ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_warm_worker,  # every worker, whichever tasks it happens to take first
            )
            if workers > 0
            else None
        ),
    )
    if env.pixel_pool is not None:
        for _ in range(workers):
            env.pixel_pool.submit(_started)
    secret = index.set_meta_if_absent("pagination_secret", secrets.token_hex(32))
    paginator = Paginator(bytes.fromhex(secret))
    datastores = DatastoreService(env, paginator)
    reads = ImageSetReader(env, paginator, datastores)
    services = Services(
        env=env,
        paginator=paginator,
        datastores=datastores,
        tags=TagService(env),
        imports=ImportService(env, paginator, datastores),
        reads=reads,
        writes=ImageSetWriter(env, datastores),
        dicom_reads=DicomReader(env, datastores, touch=reads.touches.touch),
        stow=StowService(env, datastores),
        scratch_dir=config.data_dir,
    )
    if config.api:
        datastores.recover()
        services.writes.recover()
        start_backfill(env)  # image sets of an index older than the DICOM index get their rows
    if config.import_threads > 0:
        services.worker = ImportWorker(env, threads=config.import_threads).start()
        services.imports.on_submit = services.worker.nudge
        hooks = load_webhooks(config.webhooks) if config.webhooks else []
        if hooks:  # the event feed's webhooks are delivered where imports run
            services.on_close.append(WebhookDeliverer(env, hooks).start().stop)
        if env.settings.event_retention_seconds > 0:  # and old events removed there
            services.on_close.append(EventPruner(env, [hook.name for hook in hooks]).start().stop)
    return services
