"""IAM evaluation of identity policies: default deny, an explicit Deny wins, every resource must be allowed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from openhi.auth.conditions import Context
from openhi.auth.policy import Policy


class Decision(Enum):
    ALLOW = "Allow"
    EXPLICIT_DENY = "ExplicitDeny"
    IMPLICIT_DENY = "ImplicitDeny"


def evaluate(policies: Sequence[Policy], action: str, resource: str, context: Context) -> Decision:
    """The decision for ``action`` on one ``resource`` (an ARN, or ``*`` for actions without one)."""
    allowed = False
    for policy in policies:
        for stmt in policy.statements:
            if not stmt.matches_action(action) or not stmt.matches_resource(resource):
                continue
            if not all(c.holds(context) for c in stmt.conditions):
                continue
            if stmt.effect == "Deny":
                return Decision.EXPLICIT_DENY
            allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


@dataclass(frozen=True)
class Target:
    """One resource a request acts on, with the condition keys that apply to it."""

    arn: str
    context: Context


def decide(policies: Sequence[Policy], action: str, targets: Sequence[Target]) -> tuple[Decision, str]:
    """Allowed only when every target is allowed; else the first denial and the ARN it concerns."""
    for target in targets:
        decision = evaluate(policies, action, target.arn, target.context)
        if decision is not Decision.ALLOW:
            return decision, target.arn
    return Decision.ALLOW, ""
