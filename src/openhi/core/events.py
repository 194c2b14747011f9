"""Events as the feed and webhooks show them: AWS's EventBridge shape of an outbox row, and type filters."""

from __future__ import annotations

import fnmatch
import time
import uuid
from collections.abc import Sequence
from typing import Any

from openhi.core.env import Env
from openhi.ports.index import StoredEvent

SOURCE = "aws.medical-imaging"
#: the event types (detail-type) openhi emits, in the order of AWS's table
DETAIL_TYPES = (
    "Data Store Creating",
    "Data Store Creation Failed",
    "Data Store Created",
    "Data Store Deleting",
    "Data Store Deleted",
    "Import Job Submitted",
    "Import Job In Progress",
    "Import Job Completed",
    "Import Job Failed",
    "Image Set Created",
    "Image Set Copying",
    "Image Set Copying With Read Only Access",
    "Image Set Copied",
    "Image Set Copy Failed",
    "Image Set Updating",
    "Image Set Updated",
    "Image Set Update Failed",
    "Image Set Deleting",
    "Image Set Deleted",
)


def iso_time(seconds: float) -> str:
    """EventBridge's time: ISO 8601 in UTC to the second, ``2024-03-14T00:01:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def feed_item(env: Env, event: StoredEvent) -> dict[str, Any]:
    """One event of ``GET /openhi/events``: seq, time, source, detail-type, resources (ARNs), detail."""
    if event.image_set_id is not None:
        arn = env.image_set_arn(event.datastore_id, event.image_set_id)
    else:
        arn = env.datastore_arn(event.datastore_id)
    return {
        "seq": event.seq,
        "time": iso_time(event.time),
        "source": SOURCE,
        "detail-type": event.detail_type,
        "resources": [arn],
        "detail": event.detail,
    }


def envelope(env: Env, event: StoredEvent) -> dict[str, Any]:
    """A webhook's body: the feed item inside EventBridge's envelope (version, id, account, region)."""
    item = feed_item(env, event)
    return {
        "version": "0",
        "id": str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{env.datastore_arn(event.datastore_id)}#event-{event.seq}")
        ),
        "detail-type": item["detail-type"],
        "source": SOURCE,
        "account": env.settings.account_id,
        "time": item["time"],
        "region": env.settings.region,
        "resources": item["resources"],
        "detail": item["detail"],
        "seq": event.seq,
    }


def matches(patterns: Sequence[str], detail_type: str) -> bool:
    """Whether a webhook's type filter (shell-style globs, case-sensitive; empty: every type) selects it."""
    return not patterns or any(fnmatch.fnmatchcase(detail_type, p) for p in patterns)
