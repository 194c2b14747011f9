"""Fault injection rules: which calls (operation or glob, every Nth or with a probability) get a modeled
error, a delay or a dropped connection instead of their answer."""

from __future__ import annotations

import functools
import json
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openhi.auth.actions import KNOWN_ACTIONS, OPENHI_PREFIX
from openhi.core.errors import ValidationError
from openhi.throttle.profiles import action_matches

#: the routes that manage the rules are never faulted (a rule for ``*`` must not lock its owner out)
FAULT_ACTIONS = frozenset(
    {f"{OPENHI_PREFIX}:GetFaults", f"{OPENHI_PREFIX}:PutFaults", f"{OPENHI_PREFIX}:DeleteFaults"}
)
RULE_KEYS = frozenset({"operation", "error", "message", "delay", "drop", "every", "probability", "times"})
#: the longest delay a rule may ask for (seconds)
MAX_DELAY = 600.0
#: errors the DICOMweb routes answer besides the service's modeled ones
DICOMWEB_ERRORS = {"UnsupportedMediaTypeException": 415}
DICOMWEB_ACTIONS_PREFIX = "medical-imaging:"


@functools.cache
def _service_errors() -> tuple[dict[str, int], dict[str, str], dict[str, frozenset[str]]]:
    """(status per error, documentation per error, errors per API operation) from the service model."""
    from openhi.awsapi.service import load_service_model

    model = load_service_model()
    status: dict[str, int] = {}
    docs: dict[str, str] = {}
    per_operation: dict[str, frozenset[str]] = {}
    for name in model.operation_names:
        shapes = model.operation_model(name).error_shapes
        per_operation[f"medical-imaging:{name}"] = frozenset(s.name for s in shapes)
        for shape in shapes:
            status[shape.name] = int(shape.metadata.get("error", {}).get("httpStatusCode", 400))
            docs[shape.name] = _plain(shape.documentation) or shape.name
    return status, docs, per_operation


def _plain(html: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", html or "").strip()


def modeled_errors(action: str) -> dict[str, int]:
    """The errors ``action`` may answer, with their HTTP status: an API operation's modeled errors; for
    DICOMweb and openhi's own actions, every error of the service (and 415 on DICOMweb)."""
    status, _, per_operation = _service_errors()
    declared = per_operation.get(action)
    if declared is not None:
        return {name: status[name] for name in declared}
    errors = dict(status)
    if action.startswith(DICOMWEB_ACTIONS_PREFIX):
        errors.update(DICOMWEB_ERRORS)
    return errors


def default_message(error: str) -> str:
    """The message an injected error carries unless its rule says one: the model's description."""
    if error == "ThrottlingException":
        return "Rate exceeded"
    return _service_errors()[1].get(error, "The request failed.")


@dataclass
class FaultRule:
    """One rule. ``every`` N: the Nth, 2Nth … matching call; ``probability`` p: each matching call with
    probability p; neither: every matching call. ``times``: at most this many faults, then the rule rests."""

    operation: str
    error: str | None = None
    message: str | None = None
    delay: float = 0.0
    drop: bool = False
    every: int | None = None
    probability: float | None = None
    times: int | None = None
    calls: int = field(default=0, compare=False)  # matching calls seen
    fired: int = field(default=0, compare=False)  # faults injected

    def applies_to(self, action: str) -> bool:
        if not action_matches(self.operation, action):
            return False
        return self.error is None or self.error in modeled_errors(action)

    def status(self, action: str) -> int:
        assert self.error is not None
        return modeled_errors(action)[self.error]

    def text(self) -> str:
        assert self.error is not None
        return self.message if self.message is not None else default_message(self.error)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"operation": self.operation}
        for key in ("error", "message", "every", "probability", "times"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        if self.delay:
            doc["delay"] = self.delay
        if self.drop:
            doc["drop"] = True
        doc["calls"], doc["fired"] = self.calls, self.fired
        return doc


class FaultSet:
    """The rules in force, in order: the first rule that matches a call and fires decides its fault.

    A call is counted by every rule that matches it (``calls``), so ``every`` counts the operation's calls
    whatever the other rules did. Thread-safe.
    """

    def __init__(self, rules: list[FaultRule], seed: int | None = None) -> None:
        self.rules = rules
        self.seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[FaultRule, ...]] = {}

    def pick(self, action: str) -> FaultRule | None:
        """The rule whose fault this call of ``action`` gets, or None (answer it normally)."""
        rules = self._cache.get(action)
        if rules is None:
            rules = () if action in FAULT_ACTIONS else tuple(r for r in self.rules if r.applies_to(action))
            self._cache[action] = rules
        if not rules:
            return None
        chosen = None
        with self._lock:
            for rule in rules:
                rule.calls += 1
                if chosen is not None or (rule.times is not None and rule.fired >= rule.times):
                    continue
                if rule.every is not None:
                    fires = rule.calls % rule.every == 0
                elif rule.probability is not None:
                    fires = self._rng.random() < rule.probability
                else:
                    fires = True
                if fires:
                    rule.fired += 1
                    chosen = rule
        return chosen

    def to_doc(self) -> dict[str, Any]:
        with self._lock:
            return {"seed": self.seed, "rules": [r.to_doc() for r in self.rules]}


def load_faults(path: str) -> FaultSet:
    """The rules of a ``--faults`` file. Raises ValidationError (unreadable, not JSON, a bad rule)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValidationError(f"--faults {path}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise ValidationError(f"--faults {path}: not JSON ({exc})") from None
    return parse_faults(doc, source=path)


def parse_faults(doc: Any, source: str = "faults") -> FaultSet:
    """A rule set from its JSON document: ``{"seed": int, "rules": [rule, …]}`` or a bare list of rules.

    Raises:
        ValidationError: an unknown member, an operation that names no action, an error the operation
            does not declare, no fault (error, delay or drop), both ``every`` and ``probability`` …
    """
    if isinstance(doc, list):
        doc = {"rules": doc}
    if (
        not isinstance(doc, dict)
        or set(doc) - {"seed", "rules"}
        or not isinstance(doc.get("rules", []), list)
    ):
        raise ValidationError(
            f'{source}: fault rules are {{"seed": int, "rules": [rule, …]}} or a list of rules'
        )
    seed = doc.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValidationError(f"{source}: seed must be an integer")
    rules = [_rule(item, f"{source}: rules[{i}]") for i, item in enumerate(doc.get("rules", []))]
    return FaultSet(rules, seed)


def _rule(item: Any, where: str) -> FaultRule:
    if not isinstance(item, dict):
        raise ValidationError(f"{where}: a rule is an object")
    unknown = set(item) - RULE_KEYS
    if unknown:
        raise ValidationError(f"{where}: unknown member(s) {sorted(unknown)}; allowed: {sorted(RULE_KEYS)}")
    operation = item.get("operation")
    if not isinstance(operation, str) or not operation:
        raise ValidationError(f"{where}: operation (an operation name, an action or a glob) is required")
    actions = [a for a in KNOWN_ACTIONS if a not in FAULT_ACTIONS and action_matches(operation, a)]
    if not actions:
        raise ValidationError(f"{where}: operation {operation!r} names no operation")
    error = item.get("error")
    if error is not None and (
        not isinstance(error, str) or not any(error in modeled_errors(a) for a in actions)
    ):
        declared = sorted({e for a in actions for e in modeled_errors(a)})
        raise ValidationError(f"{where}: {operation} does not declare {error!r}; it may answer {declared}")
    message = item.get("message")
    if message is not None and (not isinstance(message, str) or error is None):
        raise ValidationError(f"{where}: message is a string, for a rule with an error")
    delay = item.get("delay", 0)
    if not _number(delay) or not 0 <= delay <= MAX_DELAY:
        raise ValidationError(f"{where}: delay is seconds between 0 and {MAX_DELAY:g}")
    drop = item.get("drop", False)
    if not isinstance(drop, bool):
        raise ValidationError(f"{where}: drop is true or false")
    if drop and error is not None:
        raise ValidationError(f"{where}: a dropped connection answers nothing: drop or error, not both")
    if error is None and not drop and not delay:
        raise ValidationError(f"{where}: a rule injects an error, a delay or a dropped connection")
    every, probability, times = item.get("every"), item.get("probability"), item.get("times")
    if every is not None and probability is not None:
        raise ValidationError(f"{where}: every or probability, not both")
    if every is not None and (not _whole(every) or every < 1):
        raise ValidationError(f"{where}: every is a whole number ≥ 1")
    if probability is not None and (not _number(probability) or not 0 <= probability <= 1):
        raise ValidationError(f"{where}: probability is between 0 and 1")
    if times is not None and (not _whole(times) or times < 0):
        raise ValidationError(f"{where}: times is a whole number ≥ 0")
    return FaultRule(operation, error, message, float(delay), drop, every, probability, times)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
