"""Fault rules: parsing, matching (globs, every Nth, seeded probability), and injected errors answered
byte for byte like the same error raised by a handler."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from openhi.asgi import OpenHIApp, probe_routes
from openhi.auth.routes import Request, Route, RouteTable
from openhi.awsapi.serializer import WireResponse
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.core.errors import ConflictError, ValidationError
from openhi.services import ServerConfig, Services, build_services
from openhi.throttle.faults import FaultSet, modeled_errors, parse_faults
from openhi.throttle.guard import Guard
from openhi.throttle.routes import fault_routes
from openhi.throttle.setup import request_guard

FRAME = "medical-imaging:GetImageFrame"


def fired(rules: FaultSet, action: str, calls: int) -> list[int]:
    """The 1-based calls of ``action`` that got a fault."""
    return [i for i in range(1, calls + 1) if rules.pick(action) is not None]


def test_every_nth_call_of_the_operation_gets_the_fault() -> None:
    rules = parse_faults([{"operation": "GetImageFrame", "error": "ThrottlingException", "every": 3}])
    assert fired(rules, FRAME, 10) == [3, 6, 9]
    assert fired(rules, "medical-imaging:GetImageSet", 5) == []
    assert rules.to_doc()["rules"][0] | {} == {
        "operation": "GetImageFrame",
        "error": "ThrottlingException",
        "every": 3,
        "calls": 10,
        "fired": 3,
    }


def test_globs_match_names_and_prefixed_actions() -> None:
    rules = parse_faults([{"operation": "Get*", "delay": 0.1}, {"operation": "openhi:*", "delay": 0.2}])
    assert rules.pick("medical-imaging:GetDatastore") is rules.rules[0]
    assert rules.pick("medical-imaging:GetDICOMInstanceFrames") is rules.rules[0]
    assert rules.pick("openhi:GetImageSetDiff") is rules.rules[0]  # "Get*" names the name after the prefix
    assert rules.pick("openhi:PutImportInput") is rules.rules[1]
    assert rules.pick("medical-imaging:ListDatastores") is None
    assert rules.pick("openhi:PutFaults") is None  # the rules' own routes are never faulted


def test_a_glob_only_injects_errors_the_matched_operation_declares() -> None:
    rules = parse_faults([{"operation": "*", "error": "BadRequestException"}])  # GetImageFrame only
    assert rules.pick(FRAME) is not None
    assert rules.pick("medical-imaging:CreateDatastore") is None


def test_probability_follows_the_seed_and_times_caps_the_faults() -> None:
    doc = {
        "seed": 42,
        "rules": [{"operation": "GetImageFrame", "error": "InternalServerException", "probability": 0.3}],
    }
    first, second = fired(parse_faults(doc), FRAME, 200), fired(parse_faults(doc), FRAME, 200)
    assert first == second and 40 <= len(first) <= 80
    capped = parse_faults([{"operation": "GetImageFrame", "drop": True, "times": 2}])
    assert fired(capped, FRAME, 6) == [1, 2]


def test_the_first_matching_rule_that_fires_wins_and_every_rule_counts_the_call() -> None:
    rules = parse_faults(
        [
            {"operation": "GetImageFrame", "error": "ConflictException", "every": 2},
            {"operation": "Get*", "error": "InternalServerException"},
        ]
    )
    picked = [rules.pick(FRAME) for _ in range(4)]
    assert [r.error if r else None for r in picked] == [
        "InternalServerException",
        "ConflictException",
        "InternalServerException",
        "ConflictException",
    ]
    assert [r["calls"] for r in rules.to_doc()["rules"]] == [4, 4]


def test_errors_come_from_the_model_per_operation() -> None:
    assert modeled_errors(FRAME)["BadRequestException"] == 400
    assert modeled_errors("medical-imaging:CopyImageSet")["ServiceQuotaExceededException"] == 402
    assert "BadRequestException" not in modeled_errors("medical-imaging:CopyImageSet")
    assert modeled_errors("medical-imaging:StoreDICOM")["UnsupportedMediaTypeException"] == 415


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ({"operation": "GetImageFrame"}, "an error, a delay or a dropped connection"),
        ({"operation": "NoSuchThing", "delay": 1}, "names no operation"),
        ({"operation": "CreateDatastore", "error": "BadRequestException"}, "does not declare"),
        ({"operation": "GetImageFrame", "error": "ConflictException", "drop": True}, "drop or error"),
        ({"operation": "GetImageFrame", "delay": 1, "every": 2, "probability": 0.5}, "not both"),
        ({"operation": "GetImageFrame", "delay": 1, "every": 0}, "every is"),
        ({"operation": "GetImageFrame", "delay": 1, "probability": 1.5}, "probability is"),
        ({"operation": "GetImageFrame", "delay": -1}, "delay is"),
        ({"operation": "GetImageFrame", "delay": 1, "message": "x"}, "message"),
        ({"operation": "GetImageFrame", "delay": 1, "when": "now"}, "unknown member"),
        ({"operation": "GetFaults", "delay": 1}, "names no operation"),
    ],
)
def test_a_bad_rule_is_refused_with_where_and_why(rule: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        parse_faults({"rules": [rule]})


def test_a_faults_file_gives_a_guard_without_limits(tmp_path: Any) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps([{"operation": "GetImageFrame", "delay": 0.5}]))
    guard = request_guard("off", str(path))
    assert guard is not None and guard.limiter is None and guard.faults is not None
    assert guard.faults.rules[0].delay == 0.5


# -- through the app ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    built = build_services(
        ServerConfig(data_dir=tmp_path_factory.mktemp("faults"), pixel_workers=0, import_threads=0)
    )
    yield built
    built.close()


class _AnySignature(SigV4Verifier):
    def verify(self, *args: Any, **kwargs: Any) -> str:
        return "ANY"


def call(app: OpenHIApp, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"] if k != b"x-amzn-requestid"}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_an_injected_error_is_the_handlers_own_error_byte_for_byte_and_the_handler_never_runs(
    services: Services,
) -> None:
    ran: list[str] = []

    def conflict(services: Any, request: Request) -> WireResponse:
        ran.append(request.path)
        raise ConflictError("Updating or deleting a resource can cause an inconsistent state.")

    routes = [
        Route(
            "POST",
            "/datastore/{datastoreId}/imageSet/{imageSetId}/deleteImageSet",
            "medical-imaging:DeleteImageSet",
            conflict,
        ),
        Route("POST", "/openhi/real", "openhi:PutImportInput", conflict, front="openhi"),
    ]
    app = OpenHIApp(services, _AnySignature(None), routes=RouteTable([*probe_routes(), *routes]))
    path = "/datastore/d/imageSet/s/deleteImageSet"
    real = call(app, "POST", path)
    assert ran == [path] and real[0] == 409
    app.guard = Guard(None, parse_faults([{"operation": "DeleteImageSet", "error": "ConflictException"}]))
    assert call(app, "POST", path) == real
    assert ran == [path]  # the handler did not run
    # openhi's own routes: the body carries the code, as for a real error there
    real_openhi = call(app, "POST", "/openhi/real")
    app.guard = Guard(None, parse_faults([{"operation": "PutImportInput", "error": "ConflictException"}]))
    assert call(app, "POST", "/openhi/real") == real_openhi


def test_the_fault_routes_replace_list_and_clear_the_rules_of_the_app(services: Services) -> None:
    app = OpenHIApp(services, _AnySignature(None))
    assert app.guard is None
    status, _, body = call(
        app, "PUT", "/openhi/faults", json.dumps([{"operation": "GetImageFrame", "delay": 1}]).encode()
    )
    assert status == 200 and json.loads(body)["rules"][0]["delay"] == 1.0
    assert app.guard is not None and app.guard.faults is not None
    status, _, body = call(app, "GET", "/openhi/faults")
    assert json.loads(body)["rules"] == [{"operation": "GetImageFrame", "delay": 1.0, "calls": 0, "fired": 0}]
    status, _, body = call(app, "PUT", "/openhi/faults", b'[{"operation": "GetImageFrame"}]')
    assert status == 400 and json.loads(body)["code"] == "ValidationException"
    assert call(app, "DELETE", "/openhi/faults")[0] == 200
    assert app.guard is None  # no rules and no limits: the app consults nothing again
    assert [r.action for r in fault_routes((app.routes and None) or _control(app))] == [
        "openhi:GetFaults",
        "openhi:PutFaults",
        "openhi:DeleteFaults",
    ]


def _control(app: OpenHIApp) -> Any:
    from openhi.throttle.routes import FaultControl

    return FaultControl(lambda: app.guard, lambda g: setattr(app, "guard", g))
