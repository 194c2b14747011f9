"""The keys the server accepts: from --credentials (full access) and --policy-file (their policy)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openhi.auth.evaluate import Decision, Target, decide
from openhi.auth.policy import Policy, PolicyError, parse_policy
from openhi.core.errors import AccessDeniedError

_AKID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class PolicyFile:
    """A policy file read and checked: secrets and the raw policy document of each principal."""

    secrets: dict[str, str]
    policies: dict[str, dict[str, Any]]


def read_policy_file(path: str | Path) -> PolicyFile:
    """``{"principals": [{"accessKeyId", "secretAccessKey", "policy"}, …]}``; :class:`PolicyError` if bad."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise PolicyError(f"{path}: not valid JSON ({exc})") from None
    return check_policy_document(doc, str(path))


def check_policy_document(doc: Any, where: str) -> PolicyFile:
    if not isinstance(doc, dict) or set(doc) != {"principals"} or not isinstance(doc["principals"], list):
        raise PolicyError(f'{where}: expected a JSON object {{"principals": [...]}}')
    if not doc["principals"]:
        raise PolicyError(f"{where}: principals is empty")
    secrets: dict[str, str] = {}
    policies: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(doc["principals"]):
        at = f"{where}: principals[{i}]"
        if not isinstance(entry, dict):
            raise PolicyError(f"{at} must be a JSON object")
        unknown = sorted(set(entry) - {"accessKeyId", "secretAccessKey", "policy"})
        if unknown:
            raise PolicyError(f"{at} has unsupported member(s) {', '.join(unknown)}")
        key, secret, policy = entry.get("accessKeyId"), entry.get("secretAccessKey"), entry.get("policy")
        if not isinstance(key, str) or not key or not set(key) <= _AKID_CHARS:
            raise PolicyError(
                f"{at}.accessKeyId must be a non-empty string of letters, digits, '-', '_', '.'"
            )
        if not isinstance(secret, str) or not secret:
            raise PolicyError(f"{at}.secretAccessKey must be a non-empty string")
        if key in secrets:
            raise PolicyError(f"{at}: access key {key} is listed twice")
        parse_policy(policy, f"{at}.policy")  # raises on any problem: a JSON object from here on
        secrets[key] = secret
        policies[key] = policy if isinstance(policy, dict) else {}
    return PolicyFile(secrets, policies)


class Authorizer:
    """Decides whether a signed-in key may perform an action on the request's resources.

    Keys without a policy (from --credentials, or any key in local mode) may do everything.
    """

    def __init__(self, policies: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._policies: dict[str, tuple[Policy, ...]] = {
            key: (parse_policy(doc, f"policy of {key}"),) for key, doc in (policies or {}).items()
        }

    @property
    def enforcing(self) -> bool:
        """Whether any key has a policy (else every authenticated request is allowed)."""
        return bool(self._policies)

    def restricted(self, access_key_id: str) -> bool:
        return access_key_id in self._policies

    def authorize(self, access_key_id: str, action: str, targets: Sequence[Target]) -> None:
        """Return when allowed; raise :class:`AccessDeniedError` naming the action and resource otherwise."""
        policies = self._policies.get(access_key_id)
        if policies is None:
            return
        decision, arn = decide(policies, action, targets)
        if decision is Decision.ALLOW:
            return
        why = "an explicit deny" if decision is Decision.EXPLICIT_DENY else "no policy statement allows it"
        raise AccessDeniedError(
            f"User {access_key_id} is not authorized to perform: {action} on resource: {arn or '*'} ({why})"
        )
