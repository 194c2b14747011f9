"""SeaweedFS for the test suite: the packaged harness (``openhi.testing.weed``) with buckets never
created implicitly, so a missing bucket is reported as the real S3 would."""

from __future__ import annotations

import os
from pathlib import Path

from openhi.testing.weed import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    WeedServer,
    WeedUnavailable,
    find_weed,
)

SeaweedUnavailable = WeedUnavailable

__all__ = ["ACCESS_KEY_ID", "REGION", "SECRET_ACCESS_KEY", "SeaweedServer", "SeaweedUnavailable", "find_weed"]


class SeaweedServer(WeedServer):
    """``weed mini`` on loopback with ``-s3.autoCreateBucket=false``; a context manager too."""

    def __init__(self, *, start_timeout: float = 60.0) -> None:
        super().__init__(auto_create_buckets=False, start_timeout=start_timeout)

    def start(self, tmpdir: str | os.PathLike[str]) -> str:  # type: ignore[override]
        return super().start(Path(tmpdir))

    def __enter__(self) -> SeaweedServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
