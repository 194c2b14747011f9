"""Token buckets: a rate (tokens per second) and a burst (the bucket's size), refilled continuously."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """A rate limit: ``rate`` requests per second on average, at most ``burst`` at once.

    Raises ValueError on construction when the rate is not positive or the burst is below 1.
    """

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"a rate limit needs a positive rate, not {self.rate!r}")
        if not self.burst >= 1:
            raise ValueError(f"a rate limit needs a burst of at least 1, not {self.burst!r}")

    def shared(self, parts: int) -> Limit:
        """This limit split between ``parts`` processes that each enforce their share: the rate is
        divided, the burst too but never below 1 (a bucket smaller than one request admits nothing)."""
        if parts <= 1:
            return self
        return Limit(self.rate / parts, max(1.0, self.burst / parts))

    def describe(self) -> str:
        return f"{_number(self.rate)} requests per second (burst {_number(self.burst)})"


def _number(value: float) -> str:
    return f"{value:g}"


class TokenBucket:
    """A bucket that starts full (``burst`` tokens) and gains ``rate`` tokens a second up to ``burst``;
    each admitted request takes one token. Not thread-safe: the caller holds its lock."""

    __slots__ = ("burst", "limit", "rate", "stamp", "tokens")

    def __init__(self, limit: Limit, now: float, *, shown: Limit | None = None) -> None:
        self.rate = limit.rate
        self.burst = limit.burst
        self.tokens = limit.burst
        self.stamp = now
        #: the limit a refusal names (the whole limit, when this bucket holds one process's share)
        self.limit = shown or limit

    def take(self, now: float) -> float:
        """Take one token at time ``now`` (seconds, monotonic): 0.0 when admitted, else the seconds until
        a token will be there (nothing is taken then)."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate
