"""The request guard: rate limits per principal and action (token buckets), then injected faults.

The app consults :meth:`Guard.check` after a request is authenticated and authorized and before its
handler runs; with neither limits nor faults configured there is no guard and nothing is consulted.
Other front doors (the DIMSE listener) ask :func:`admit`.
"""

from __future__ import annotations

import math
import threading
import time

from openhi.core.errors import OpenHIError, ThrottlingError
from openhi.throttle.buckets import Limit, TokenBucket
from openhi.throttle.faults import FAULT_ACTIONS, FaultRule, FaultSet
from openhi.throttle.profiles import Profile

#: front doors whose clients read a Retry-After header on a 429 (DICOMweb viewers, the console)
RETRY_AFTER_FRONTS = frozenset({"dicomweb", "console"})
#: distinct (principal, action) pairs kept before the buckets start over (a bound on memory)
MAX_BUCKETS = 100_000


class Throttled(ThrottlingError):
    """A request over its rate limit: 429 ThrottlingException (with Retry-After on DICOMweb)."""

    status = 429

    def __init__(self, message: str, retry_after: float, front: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers: list[tuple[str, str]] = (
            [("Retry-After", str(max(1, math.ceil(retry_after))))] if front in RETRY_AFTER_FRONTS else []
        )


class InjectedError(OpenHIError):
    """A fault rule's modeled error, answered exactly as the same error raised by a handler."""

    def __init__(self, code: str, message: str, status: int, front: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.headers: list[tuple[str, str]] = (
            [("Retry-After", "1")] if code == "ThrottlingException" and front in RETRY_AFTER_FRONTS else []
        )


class DropConnection(Exception):
    """A fault rule's dropped connection: the app closes it without answering."""


class Limiter:
    """One token bucket per (principal, action), sized by the profile's limit divided by ``parts`` (the
    processes that share the limit, each enforcing its share). Thread-safe."""

    def __init__(self, profile: Profile, parts: int = 1) -> None:
        self.profile = profile
        self.parts = max(1, parts)
        #: (principal, action) → its bucket, or None when it is not limited
        self._buckets: dict[tuple[str, str], TokenBucket | None] = {}
        self._lock = threading.Lock()

    def wait(self, principal: str, action: str) -> float:
        """Take a token for this call: 0.0 when admitted, else the seconds until one is there."""
        bucket = self.bucket(principal, action)
        if bucket is None:
            return 0.0
        with self._lock:
            return bucket.take(time.monotonic())

    def bucket(self, principal: str, action: str) -> TokenBucket | None:
        """The bucket of this principal and action (made on first use), or None: not limited."""
        key = (principal, action)
        try:
            return self._buckets[key]
        except KeyError:
            pass
        limit = self.profile.limit(principal, action)
        bucket = (
            None if limit is None else TokenBucket(limit.shared(self.parts), time.monotonic(), shown=limit)
        )
        with self._lock:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            return self._buckets.setdefault(key, bucket)

    def limit(self, principal: str, action: str) -> Limit | None:
        bucket = self.bucket(principal, action)
        return None if bucket is None else bucket.limit


class Guard:
    """Rate limits (``limiter``) and injected faults (``faults``), either of which may be absent."""

    def __init__(self, limiter: Limiter | None = None, faults: FaultSet | None = None) -> None:
        self.limiter = limiter
        self.faults = faults

    @property
    def idle(self) -> bool:
        """Nothing to check: the app may drop the guard."""
        return self.limiter is None and (self.faults is None or not self.faults.rules)

    def check(self, action: str, principal: str, front: str) -> FaultRule | None:
        """The fault rule this call gets (None: answer it normally).

        Raises:
            Throttled: the principal is over its limit for ``action``.
        """
        if action in FAULT_ACTIONS:
            return None
        if self.limiter is not None:
            wait = self.limiter.wait(principal, action)
            if wait:
                raise Throttled(_message(self.limiter, principal, action, wait), wait, front)
        if self.faults is not None:
            return self.faults.pick(action)
        return None


def _message(limiter: Limiter, principal: str, action: str, wait: float) -> str:
    limit = limiter.limit(principal, action)
    described = limit.describe() if limit is not None else "its limit"
    name = action.split(":", 1)[-1]
    return f"Rate exceeded for {name}: {described} per principal; retry in {wait:.3f} s"


def injected(rule: FaultRule, action: str, front: str) -> InjectedError:
    """The exception a rule's error is raised as (the rule has an error)."""
    assert rule.error is not None
    return InjectedError(rule.error, rule.text(), rule.status(action), front)


_active: Limiter | None = None


def activate(limiter: Limiter | None) -> None:
    """Make ``limiter`` the one :func:`admit` asks (the server's, set when its guard is built)."""
    global _active
    _active = limiter


def admit(principal: str, action: str) -> float | None:
    """For front doors outside the HTTP app (DIMSE associations): None when ``principal`` may call
    ``action`` now (a token is taken), else the seconds to wait. No rate limits configured: always None."""
    limiter = _active
    if limiter is None:
        return None
    wait = limiter.wait(principal, action)
    return wait or None
