"""Throttling profiles: AWS's published limits per operation, and the JSON file format for your own.

A profile answers one question, :meth:`Profile.limit`: what limit applies to this principal calling this
action (``medical-imaging:GetImageFrame``, ``openhi:GetImageSetDiff`` …), or None for no limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from openhi.core.errors import ValidationError
from openhi.throttle.buckets import Limit

#: AWS HealthImaging's throttling limits (rate, burst) per operation and account, as the Developer Guide
#: publishes them (https://docs.aws.amazon.com/healthimaging/latest/devguide/throttling-limits.html; spec
#: §15.2 and §§7–12). openhi applies them per principal (access key, bearer token subject).
AWS_LIMITS: dict[str, Limit] = {
    "CreateDatastore": Limit(0.085, 1),
    "GetDatastore": Limit(10, 20),
    "ListDatastores": Limit(5, 10),
    "DeleteDatastore": Limit(0.085, 1),
    "StartDICOMImportJob": Limit(0.25, 1),
    "GetDICOMImportJob": Limit(25, 50),
    "ListDICOMImportJobs": Limit(10, 20),
    "SearchImageSets": Limit(25, 50),
    "GetImageSet": Limit(25, 50),
    "GetImageSetMetadata": Limit(50, 100),
    "GetImageFrame": Limit(1000, 2000),
    "ListImageSetVersions": Limit(25, 50),
    "UpdateImageSetMetadata": Limit(0.25, 1),
    "CopyImageSet": Limit(0.25, 1),
    "DeleteImageSet": Limit(0.25, 1),
    "TagResource": Limit(10, 20),
    "ListTagsForResource": Limit(10, 20),
    "UntagResource": Limit(10, 20),
    "GetDICOMInstance": Limit(50, 100),
    "GetDICOMInstanceMetadata": Limit(50, 100),
    "GetDICOMInstanceFrames": Limit(50, 100),
    "GetDICOMSeriesMetadata": Limit(50, 100),
    # not published: the rate of the other WADO-RS reads (the guide's table could not be read for it)
    "GetDICOMBulkdata": Limit(50, 100),
}
#: AWS's table applies to the service's actions only; openhi's own routes are never limited by "aws"
AWS_PREFIX = "medical-imaging:"
PROFILE_KEYS = frozenset({"base", "default", "operations", "principals", "machines"})


class Profile:
    """Limits per action, optionally overridden per principal; the first that says something wins:
    the principal's own entry, the profile's ``operations``, the base table (``aws``), ``default``."""

    def __init__(
        self,
        operations: Mapping[str, Limit | None] | None = None,
        *,
        principals: Mapping[str, Mapping[str, Limit | None]] | None = None,
        base: Mapping[str, Limit] | None = None,
        default: Limit | None = None,
        machines: int = 1,
        name: str = "file",
    ) -> None:
        self.operations = dict(operations or {})
        self.principals = {k: dict(v) for k, v in (principals or {}).items()}
        self.base = dict(base or {})
        self.default = default
        self.machines = machines
        self.name = name

    def limit(self, principal: str, action: str) -> Limit | None:
        """The limit of ``principal`` calling ``action`` (a canonical action name), or None."""
        own = self.principals.get(principal)
        if own is not None:
            found, limit = _lookup(own, action)
            if found:
                return limit
        found, limit = _lookup(self.operations, action)
        if found:
            return limit
        if action.startswith(AWS_PREFIX):
            base = self.base.get(action[len(AWS_PREFIX) :])
            if base is not None:
                return base
        return self.default


def action_matches(pattern: str, action: str) -> bool:
    """Whether ``pattern`` names ``action`` (``medical-imaging:GetImageFrame``): the whole action or its name
    after the prefix (``GetImageFrame``), or a glob of either (``Get*``, ``openhi:*``, ``*``);
    case-insensitive, as IAM matches actions."""
    pattern = pattern.lower()
    subject = action.lower() if ":" in pattern else action.split(":", 1)[-1].lower()
    return fnmatchcase(subject, pattern)


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _lookup(table: Mapping[str, Limit | None], action: str) -> tuple[bool, Limit | None]:
    """(True, limit) when a key of ``table`` names ``action``: an exact key first, then the first glob
    in the file's order."""
    globs = []
    for key, limit in table.items():
        if not is_glob(key):
            if action_matches(key, action):
                return True, limit
        else:
            globs.append((key, limit))
    for key, limit in globs:
        if action_matches(key, action):
            return True, limit
    return False, None


def aws_profile() -> Profile:
    """AWS's published limits, per principal and operation."""
    return Profile(base=AWS_LIMITS, name="aws")


def load_profile(throttle: str) -> Profile | None:
    """The profile ``--throttle`` names: None for ``off``, AWS's table for ``aws``, else a JSON file.

    Raises:
        ValidationError: the file cannot be read or does not follow the format (the message says where).
    """
    value = throttle.strip()
    if value.lower() in ("", "off", "none"):
        return None
    if value.lower() == "aws":
        return aws_profile()
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(
            f"--throttle {value}: not off, aws, or a readable file ({exc.strerror})"
        ) from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"--throttle {value}: not JSON ({exc})") from None
    return parse_profile(doc, source=value)


def parse_profile(doc: Any, source: str = "profile") -> Profile:
    """A profile from its JSON document (see docs/configuration.md, "Throttling").

    Raises:
        ValidationError: an unknown member, a bad limit, an unknown base.
    """
    if not isinstance(doc, dict):
        raise ValidationError(f"{source}: a throttling profile is a JSON object")
    unknown = set(doc) - PROFILE_KEYS
    if unknown:
        raise ValidationError(
            f"{source}: unknown member(s) {sorted(unknown)}; allowed: {sorted(PROFILE_KEYS)}"
        )
    base_name = doc.get("base", "none")
    if base_name not in ("aws", "none"):
        raise ValidationError(f'{source}: base must be "aws" or "none", not {base_name!r}')
    principals = doc.get("principals", {})
    if not isinstance(principals, dict):
        raise ValidationError(f"{source}: principals must be an object (principal → operations)")
    machines = doc.get("machines", 1)
    if not isinstance(machines, int) or isinstance(machines, bool) or machines < 1:
        raise ValidationError(f"{source}: machines must be a whole number ≥ 1, not {machines!r}")
    default = doc.get("default")
    return Profile(
        _operations(doc.get("operations", {}), f"{source}: operations"),
        principals={
            str(who): _operations(table, f"{source}: principals.{who}") for who, table in principals.items()
        },
        base=AWS_LIMITS if base_name == "aws" else None,
        default=None if default is None else _limit(default, f"{source}: default"),
        machines=machines,
    )


def _operations(table: Any, where: str) -> dict[str, Limit | None]:
    if not isinstance(table, dict):
        raise ValidationError(f"{where} must be an object (operation or glob → limit)")
    return {str(k): None if v is None else _limit(v, f"{where}.{k}") for k, v in table.items()}


def _limit(value: Any, where: str) -> Limit:
    if not isinstance(value, dict) or set(value) - {"rate", "burst"} or "rate" not in value:
        raise ValidationError(f'{where}: a limit is {{"rate": per second, "burst": requests}} or null')
    rate, burst = value["rate"], value.get("burst", 1)
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (rate, burst)):
        raise ValidationError(f"{where}: rate and burst are numbers")
    if "burst" not in value:
        burst = max(1.0, float(rate))  # one second's worth
    try:
        return Limit(float(rate), float(burst))
    except ValueError as exc:
        raise ValidationError(f"{where}: {exc}") from None
