"""IAM-style policy documents: parsing with clear errors, and the compiled statements they hold."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openhi.auth.actions import KNOWN_ACTIONS, OPENHI_PREFIX, SERVICE_PREFIX
from openhi.auth.conditions import Condition, parse_conditions

VERSIONS = ("2012-10-17", "2008-10-17")
_KNOWN_LOWER = {a.lower() for a in KNOWN_ACTIONS}
_OUR_PREFIXES = (SERVICE_PREFIX, OPENHI_PREFIX)


class PolicyError(ValueError):
    """A policy document that cannot be used; the message says where and why."""


def wildcard(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters (``/`` and ``:`` included), ``?`` exactly one."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@dataclass(frozen=True)
class Statement:
    """One statement: its effect, what it matches (``not_*``: everything but), and its conditions."""

    effect: str  # "Allow" | "Deny"
    actions: tuple[re.Pattern[str], ...]
    not_actions: bool
    resources: tuple[re.Pattern[str], ...]
    not_resources: bool
    conditions: tuple[Condition, ...]
    sid: str | None = None

    def matches_action(self, action: str) -> bool:
        hit = any(p.fullmatch(action) for p in self.actions)
        return hit != self.not_actions

    def matches_resource(self, resource: str) -> bool:
        hit = any(p.fullmatch(resource) for p in self.resources)
        return hit != self.not_resources


@dataclass(frozen=True)
class Policy:
    """A parsed identity policy: its statements, in document order."""

    statements: tuple[Statement, ...]


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise PolicyError(f"{where} must be a string or a non-empty list of strings")


def _action_pattern(text: str, where: str) -> re.Pattern[str]:
    if text != "*":
        prefix, colon, name = text.partition(":")
        if not colon or not prefix or not name:
            raise PolicyError(f"{where}: {text!r} is not an action (expected service:Action or *)")
        exact = "*" not in text and "?" not in text
        if exact and prefix.lower() in _OUR_PREFIXES and text.lower() not in _KNOWN_LOWER:
            raise PolicyError(f"{where}: unknown action {text!r}")
    return wildcard(text, ignore_case=True)


def _resource_pattern(text: str, where: str) -> re.Pattern[str]:
    if text != "*" and not text.startswith("arn:"):
        raise PolicyError(f"{where}: {text!r} is not a resource (expected an ARN or *)")
    return wildcard(text, ignore_case=False)


def _pick(stmt: Mapping[str, Any], name: str, where: str) -> tuple[list[str], bool]:
    has, has_not = name in stmt, f"Not{name}" in stmt
    if has == has_not:
        raise PolicyError(f"{where} needs exactly one of {name} and Not{name}")
    key = name if has else f"Not{name}"
    return _strings(stmt[key], f"{where}.{key}"), has_not


_STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}


def parse_statement(stmt: Any, where: str) -> Statement:
    if not isinstance(stmt, dict):
        raise PolicyError(f"{where} must be a JSON object")
    unknown = sorted(set(stmt) - _STATEMENT_KEYS)
    if unknown:
        raise PolicyError(f"{where} has unsupported member(s) {', '.join(unknown)}")
    effect = stmt.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f'{where}.Effect must be "Allow" or "Deny", got {effect!r}')
    sid = stmt.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise PolicyError(f"{where}.Sid must be a string")
    actions, not_actions = _pick(stmt, "Action", where)
    resources, not_resources = _pick(stmt, "Resource", where)
    return Statement(
        effect=effect,
        actions=tuple(_action_pattern(a, f"{where}.Action") for a in actions),
        not_actions=not_actions,
        resources=tuple(_resource_pattern(r, f"{where}.Resource") for r in resources),
        not_resources=not_resources,
        conditions=parse_conditions(stmt.get("Condition", {}), f"{where}.Condition", PolicyError),
        sid=sid,
    )


def parse_policy(doc: Any, where: str = "policy") -> Policy:
    """A policy document (``{"Version": …, "Statement": […]}``) parsed; :class:`PolicyError` if invalid."""
    if not isinstance(doc, dict):
        raise PolicyError(f"{where} must be a JSON object")
    unknown = sorted(set(doc) - {"Version", "Id", "Statement"})
    if unknown:
        raise PolicyError(f"{where} has unsupported member(s) {', '.join(unknown)}")
    version = doc.get("Version", VERSIONS[0])
    if version not in VERSIONS:
        raise PolicyError(f"{where}.Version must be one of {', '.join(VERSIONS)}, got {version!r}")
    raw = doc.get("Statement")
    statements: Sequence[Any] = [raw] if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    if not statements:
        raise PolicyError(f"{where}.Statement must be a statement or a non-empty list of statements")
    return Policy(tuple(parse_statement(s, f"{where}.Statement[{i}]") for i, s in enumerate(statements)))
