"""``/openhi/faults``: read (GET), replace (PUT) and clear (DELETE) the fault-injection rules at run time."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.core.errors import ValidationError
from openhi.throttle.faults import FaultSet, parse_faults
from openhi.throttle.guard import Guard
from openhi.throttle.setup import process_count

FAULTS_PATH = "/openhi/faults"


class FaultControl:
    """Reads and swaps the app's guard (``get``/``put`` are the app's attribute accessors): a rule set on
    a server without a guard gives it one; clearing the last rule of a guard without limits removes it."""

    def __init__(self, get: Callable[[], Guard | None], put: Callable[[Guard | None], None]) -> None:
        self._get = get
        self._put = put

    def rules(self) -> dict[str, Any]:
        """The rules in force in this process (with their ``calls`` and ``fired`` counts), the process's
        id and how many API processes this machine runs (each keeps its own rules: see the docs)."""
        guard = self._get()
        doc = {"seed": None, "rules": []} if guard is None or guard.faults is None else guard.faults.to_doc()
        doc["process"], doc["processes"] = os.getpid(), process_count()
        return doc

    def replace(self, faults: FaultSet | None) -> None:
        guard = self._get()
        if guard is None:
            guard = Guard(None, None)
        guard.faults = faults if faults is not None and faults.rules else None
        self._put(None if guard.idle else guard)


def _json(status: int, doc: dict[str, Any]) -> WireResponse:
    return WireResponse(status, [("content-type", "application/json")], json.dumps(doc).encode())


def fault_routes(control: FaultControl) -> list[Route]:
    """The three routes, each with its ``openhi:`` action (GetFaults, PutFaults, DeleteFaults)."""

    def get(services: Any, request: Request) -> WireResponse:
        return _json(200, control.rules())

    def put(services: Any, request: Request) -> WireResponse:
        """Raises ValidationError: the body is not JSON or not a valid rule set."""
        try:
            doc = json.loads(request.body or b"null")
        except ValueError as exc:
            raise ValidationError(f"the fault rules are not JSON: {exc}") from None
        control.replace(parse_faults(doc, source="body"))
        return _json(200, control.rules())

    def delete(services: Any, request: Request) -> WireResponse:
        control.replace(None)
        return _json(200, control.rules())

    return [
        Route("GET", FAULTS_PATH, "openhi:GetFaults", get, name="faults", front="openhi"),
        Route("PUT", FAULTS_PATH, "openhi:PutFaults", put, name="faults", front="openhi"),
        Route("DELETE", FAULTS_PATH, "openhi:DeleteFaults", delete, name="faults", front="openhi"),
    ]


def detached_control() -> FaultControl:
    """A control that belongs to no app (route listings)."""
    holder: list[Guard | None] = [None]
    return FaultControl(lambda: holder[0], lambda guard: holder.__setitem__(0, guard))
