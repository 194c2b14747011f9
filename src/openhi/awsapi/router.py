"""Matches raw HTTP method + path against URI patterns (``/a/{b}/c/{d+}``): the model's operations or any table."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

from botocore.model import OperationModel, ServiceModel

from openhi.awsapi.service import load_service_model

_LABEL = re.compile(r"\{([^{}]+)\}")
_MAX_CACHED_MATCHES = 4096
T = TypeVar("T")


class RouteNotFound(Exception):
    """No operation matches the request: ``status`` is 404 (unknown path) or 405 (known path, wrong method)."""

    def __init__(self, method: str, path: str, status: int, allowed: tuple[str, ...] = ()) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.allowed = allowed
        if status == 405:
            message = f"Method {method} is not allowed for path {path} (allowed: {', '.join(allowed)})"
        else:
            message = f"No operation matches {method} {path}"
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class _Route(Generic[T]):
    target: T
    regex: re.Pattern[str]
    labels: tuple[str, ...]
    literal_chars: int


def _compile(uri: str) -> tuple[re.Pattern[str], tuple[str, ...], int]:
    """Turn ``/a/{b}/c/{d+}`` into an anchored regex over the raw (percent-encoded) path."""
    path = uri.split("?", 1)[0]
    parts: list[str] = []
    labels: list[str] = []
    literal_chars = 0
    pos = 0
    for m in _LABEL.finditer(path):
        literal = path[pos : m.start()]
        parts.append(re.escape(literal))
        literal_chars += len(literal)
        name = m.group(1)
        if name.endswith("+"):
            name = name[:-1]
            parts.append(f"(?P<g{len(labels)}>.+)")
        else:
            parts.append(f"(?P<g{len(labels)}>[^/]+)")
        labels.append(name)
        pos = m.end()
    tail = path[pos:]
    parts.append(re.escape(tail))
    literal_chars += len(tail)
    return re.compile("".join(parts)), tuple(labels), literal_chars


class PatternTable(Generic[T]):
    """Matches ``(method, raw_path)`` against ``(method, uri pattern, target)`` entries; built once.

    Patterns use the model's ``requestUri`` syntax: ``{name}`` is one path segment, ``{name+}`` the rest of
    the path. Where two patterns match, the one with more literal text wins.
    """

    def __init__(self, entries: Iterable[tuple[str, str, T]]) -> None:
        by_method: dict[str, list[_Route[T]]] = {}
        for method, uri, target in entries:
            regex, labels, literal_chars = _compile(uri)
            by_method.setdefault(method.upper(), []).append(_Route(target, regex, labels, literal_chars))
        # Most literal text first, so a fixed segment wins over a label that could also match it.
        for routes in by_method.values():
            routes.sort(key=lambda r: (-r.literal_chars, len(r.labels)))
        self._by_method = by_method
        # (method, raw path) -> matched route: a client reads many frames of one image set through one path
        self._matches: dict[tuple[str, str], tuple[T, dict[str, str]]] = {}

    @staticmethod
    def _try(route: _Route[T], raw_path: str) -> dict[str, str] | None:
        m = route.regex.fullmatch(raw_path)
        if m is None:
            return None
        return {label: unquote(m.group(f"g{i}")) for i, label in enumerate(route.labels)}

    def match(self, method: str, raw_path: str) -> tuple[T, dict[str, str]]:
        """Return the target and its percent-decoded uri labels, or raise :class:`RouteNotFound`."""
        method = method.upper()
        hit = self._matches.get((method, raw_path))
        if hit is not None:
            return hit[0], dict(hit[1])
        for route in self._by_method.get(method, ()):
            params = self._try(route, raw_path)
            if params is not None:
                if len(self._matches) >= _MAX_CACHED_MATCHES:
                    self._matches.clear()
                self._matches[(method, raw_path)] = (route.target, params)
                return route.target, dict(params)
        allowed = tuple(
            sorted(
                other
                for other, routes in self._by_method.items()
                if other != method and any(r.regex.fullmatch(raw_path) for r in routes)
            )
        )
        raise RouteNotFound(method, raw_path, 405 if allowed else 404, allowed)


class Router(PatternTable[OperationModel]):
    """The operations of a service model, each at its ``http.requestUri``."""

    def __init__(self, service_model: ServiceModel | None = None) -> None:
        model = service_model if service_model is not None else load_service_model()
        ops = (model.operation_model(name) for name in model.operation_names)
        super().__init__((op.http.get("method", "POST"), op.http["requestUri"], op) for op in ops)
