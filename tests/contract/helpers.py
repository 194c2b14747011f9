"""Helpers for contract tests: wait for asynchronous states through the public API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    fn: Callable[[], Any], predicate: Callable[[Any], bool], timeout: float = 60.0, step: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    value = fn()
    while not predicate(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s; last value: {value!r}")
        time.sleep(step)
        value = fn()
    return value


def active_datastore(client: Any, name: str = "test") -> str:
    ds_id: str = client.create_datastore(datastoreName=name)["datastoreId"]
    wait_for(
        lambda: client.get_datastore(datastoreId=ds_id)["datastoreProperties"]["datastoreStatus"],
        lambda s: s == "ACTIVE",
    )
    return ds_id
