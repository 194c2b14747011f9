"""A client of ``/openhi/faults`` for tests: inject a fault, list the rules, clear them (every process)."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

FAULTS_PATH = "/openhi/faults"
#: fresh connections tried to reach every API process of a ``--workers N`` server (SO_REUSEPORT spreads
#: new connections by their source port)
MAX_ATTEMPTS_PER_PROCESS = 24


class FaultClient:
    """Signs its requests with SigV4 (any key works against a local-mode server)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str = "openhi-test",
        secret_key: str = "openhi-test-secret",
        region: str = "us-east-1",
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.access_key, self.secret_key, self.region = access_key, secret_key, region

    def rules(self) -> dict[str, Any]:
        """The rule set of the process that answers: ``{"seed", "rules": [… "calls", "fired"], "process",
        "processes"}``. Raises RuntimeError when the server refuses."""
        return self._call("GET")

    def put(self, rules: list[dict[str, Any]], seed: int | None = None) -> dict[str, Any]:
        """Replace the rules of every API process (counters start at 0). Raises RuntimeError (refused:
        a bad rule, with the server's message)."""
        body = json.dumps({"seed": seed, "rules": rules}).encode()
        return self._everywhere("PUT", body)

    def clear(self) -> None:
        """No rules in any API process."""
        self._everywhere("DELETE", b"")

    def inject(
        self,
        operation: str,
        *,
        error: str | None = None,
        message: str | None = None,
        delay: float | None = None,
        drop: bool = False,
        every: int | None = None,
        probability: float | None = None,
        times: int | None = None,
    ) -> Injection:
        """Add one rule to those in force (see docs/clients.md). The result removes it again, by
        ``remove()`` or as a context manager. Raises RuntimeError (the server refused the rule)."""
        rule: dict[str, Any] = {"operation": operation}
        for key, value in (
            ("error", error),
            ("message", message),
            ("delay", delay),
            ("every", every),
            ("probability", probability),
            ("times", times),
        ):
            if value is not None:
                rule[key] = value
        if drop:
            rule["drop"] = True
        current = self.rules()
        self.put([*_definitions(current), rule], current.get("seed"))
        return Injection(self, rule)

    def each_process(self) -> list[dict[str, Any]]:
        """:meth:`rules` of every API process of this machine's server (one answer per process)."""
        answers: dict[int, dict[str, Any]] = {}
        attempts = 0
        while True:
            answer = self._call("GET")
            answers.setdefault(int(answer.get("process", 0)), answer)
            attempts += 1
            wanted = int(answer.get("processes", 1))
            if len(answers) >= wanted or attempts >= MAX_ATTEMPTS_PER_PROCESS * wanted:
                return list(answers.values())

    def _everywhere(self, method: str, body: bytes) -> dict[str, Any]:
        """Send to fresh connections until every process of this machine's server has answered."""
        seen: set[int] = set()
        answer: dict[str, Any] = {}
        attempts = 0
        while True:
            answer = self._call(method, body)
            seen.add(int(answer.get("process", 0)))
            attempts += 1
            wanted = int(answer.get("processes", 1))
            if len(seen) >= wanted or attempts >= MAX_ATTEMPTS_PER_PROCESS * wanted:
                return answer

    def _call(self, method: str, body: bytes = b"") -> dict[str, Any]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = self.endpoint + FAULTS_PATH
        request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
        SigV4Auth(Credentials(self.access_key, self.secret_key), "medical-imaging", self.region).add_auth(
            request
        )
        parts = urlsplit(self.endpoint)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(parts.netloc, timeout=30)
        try:
            connection.request(method, FAULTS_PATH, body=body, headers=dict(request.headers.items()))
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"{method} {FAULTS_PATH}: {response.status} {data.decode(errors='replace')}")
        answer: dict[str, Any] = json.loads(data)
        return answer


class Injection:
    """One injected rule; ``remove()`` (or leaving its ``with`` block) takes it out again."""

    def __init__(self, client: FaultClient, rule: dict[str, Any]) -> None:
        self.client = client
        self.rule = rule

    def remove(self) -> None:
        current = self.client.rules()
        rules = _definitions(current)
        if self.rule in rules:
            rules.remove(self.rule)
        self.client.put(rules, current.get("seed"))

    def stats(self) -> dict[str, int]:
        """``{"calls", "fired"}`` of this rule, summed over the server's API processes (each counts its
        own calls: ``every=N`` fires on every Nth call a process sees); 0 when it is gone."""
        total = {"calls": 0, "fired": 0}
        for answer in self.client.each_process():
            for rule in answer["rules"]:
                if _definition(rule) == self.rule:
                    total["calls"] += int(rule["calls"])
                    total["fired"] += int(rule["fired"])
        return total

    def __enter__(self) -> Injection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _definition(rule: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if k not in ("calls", "fired")}


def _definitions(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [_definition(r) for r in doc.get("rules", [])]
