"""IAM condition operators (String*, Null, ...IfExists, ForAnyValue:/ForAllValues:) over a request context."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: condition keys openhi fills in (lower-case; keys are matched case-insensitively)
STUDY_KEY = "medical-imaging:studyinstanceuid"
SERIES_KEY = "medical-imaging:seriesinstanceuid"
RESOURCE_TAG = "aws:resourcetag/"
REQUEST_TAG = "aws:requesttag/"
TAG_KEYS = "aws:tagkeys"
_KNOWN_PREFIXES = ("aws:", "medical-imaging:", "openhi:")


class Context(Protocol):
    """The values of the condition keys of one request and resource; ``None`` when a key is absent."""

    def get(self, key: str) -> Sequence[str] | None:
        """Values of ``key`` (given lower-case)."""
        ...


class DictContext:
    """A context from a plain mapping (keys compared case-insensitively)."""

    def __init__(self, values: dict[str, Sequence[str] | str] | None = None) -> None:
        self._values = {k.lower(): [v] if isinstance(v, str) else list(v) for k, v in (values or {}).items()}

    def get(self, key: str) -> Sequence[str] | None:
        return self._values.get(key)


def _like(pattern: str) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL)


Matcher = Callable[[str, str], bool]
_MATCHERS: dict[str, tuple[Matcher, bool]] = {  # base operator -> (match one value, negated)
    "stringequals": (lambda v, c: v == c, False),
    "stringnotequals": (lambda v, c: v == c, True),
    "stringequalsignorecase": (lambda v, c: v.casefold() == c.casefold(), False),
    "stringnotequalsignorecase": (lambda v, c: v.casefold() == c.casefold(), True),
    "stringlike": (lambda v, c: _like(c).fullmatch(v) is not None, False),
    "stringnotlike": (lambda v, c: _like(c).fullmatch(v) is not None, True),
}
OPERATORS = (*sorted(_MATCHERS), "null")


@dataclass(frozen=True)
class Condition:
    """One ``operator: {key: values}`` entry of a statement's Condition block (one key)."""

    operator: str  # as written
    base: str  # lower-case operator without set prefix and IfExists
    key: str  # lower-case
    values: tuple[str, ...]
    if_exists: bool
    set_op: str | None  # "foranyvalue" | "forallvalues" | None

    def holds(self, context: Context) -> bool:
        found = context.get(self.key)
        if self.base == "null":
            want_absent = self.values[0].lower() == "true"
            return (not found) == want_absent
        matcher, negated = _MATCHERS[self.base]

        def one(value: str) -> bool:  # this value satisfies the operator against the condition's values
            hit = any(matcher(value, c) for c in self.values)
            return not hit if negated else hit

        if self.set_op == "forallvalues":
            return all(one(v) for v in found or ())
        if self.set_op == "foranyvalue":
            return any(one(v) for v in found or ())
        if found is None:
            return self.if_exists or negated
        if negated:
            return all(one(v) for v in found)
        return any(one(v) for v in found)


def _split_operator(operator: str) -> tuple[str | None, str, bool]:
    lower = operator.lower()
    set_op = None
    for prefix in ("foranyvalue:", "forallvalues:"):
        if lower.startswith(prefix):
            set_op, lower = prefix[:-1], lower[len(prefix) :]
    if_exists = lower.endswith("ifexists") and lower != "null"
    if if_exists:
        lower = lower[: -len("ifexists")]
    return set_op, lower, if_exists


def parse_conditions(block: Any, where: str, error: type[Exception]) -> tuple[Condition, ...]:
    """A statement's ``Condition`` object as a flat tuple of conditions (all must hold)."""
    if not isinstance(block, dict):
        raise error(f"{where} must be a JSON object")
    out: list[Condition] = []
    for operator, entries in block.items():
        set_op, base, if_exists = _split_operator(operator)
        if base not in OPERATORS or (base == "null" and (set_op or if_exists)):
            raise error(f"{where}: unsupported condition operator {operator!r}")
        if not isinstance(entries, dict) or not entries:
            raise error(f"{where}.{operator} must be a non-empty JSON object of condition keys")
        for key, raw in entries.items():
            if not isinstance(key, str) or not key.lower().startswith(_KNOWN_PREFIXES):
                raise error(f"{where}.{operator}: unsupported condition key {key!r}")
            values = [raw] if isinstance(raw, str | bool) else raw
            if not isinstance(values, list) or not values:
                raise error(f"{where}.{operator}.{key} must be a string or a non-empty list of strings")
            texts = [("true" if v else "false") if isinstance(v, bool) else v for v in values]
            if not all(isinstance(v, str) for v in texts):
                raise error(f"{where}.{operator}.{key} must be a string or a non-empty list of strings")
            if base == "null" and (len(texts) != 1 or texts[0].lower() not in ("true", "false")):
                raise error(f'{where}.{operator}.{key} must be "true" or "false"')
            out.append(Condition(operator, base, key.lower(), tuple(texts), if_exists, set_op))
    return tuple(out)
