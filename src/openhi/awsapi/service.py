"""Loads the pinned botocore ``medical-imaging`` service model shipped inside the package."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from botocore.model import ServiceModel

_MODEL_PACKAGE = "openhi.model"
_SERVICE_FILE = "service-2.json"
_PAGINATORS_FILE = "paginators-1.json"


def _load_json(name: str) -> dict[str, Any]:
    text = resources.files(_MODEL_PACKAGE).joinpath(name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@functools.cache
def load_service_model() -> ServiceModel:
    """Return the (cached) botocore ``ServiceModel`` for the pinned HealthImaging API."""
    return ServiceModel(_load_json(_SERVICE_FILE), service_name="medical-imaging")


@functools.cache
def load_paginators() -> dict[str, Any]:
    """Return the ``pagination`` section of the pinned paginators model (operation name → config)."""
    pagination: dict[str, Any] = _load_json(_PAGINATORS_FILE).get("pagination", {})
    return pagination
