"""Webhooks: the configuration file, signed POSTs, and the delivery thread (at least once, one at a time).

Each webhook has a cursor in the index (the last event delivered or filtered out). A delivery thread runs in
every process that runs import workers; before each round it takes the webhook's lease in the index, so one
process at a time delivers to a webhook, in ``seq`` order. A failed POST (no answer, or not 2xx) is retried
after ``retry_base_seconds × 2^(attempts-1)`` (at most ``retry_max_seconds``); the cursor moves only after a
2xx answer, so an event is delivered at least once, also across a crash (kill -9) and a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from openhi.core.env import Env
from openhi.core.events import envelope, matches
from openhi.core.http_wire import Dropped, WireConnection
from openhi.core.ids import new_id
from openhi.ports.index import StoredEvent

log = logging.getLogger("openhi.webhooks")

SIGNATURE_HEADER = "X-OpenHI-Signature"
TIMESTAMP_HEADER = "X-OpenHI-Timestamp"
_BATCH = 100
#: a receiver's answer body longer than this is not read (the connection is closed instead)
_ANSWER_LIMIT = 65536
#: while events go out, the cursor is written at least this often (and after a failure, and at a round's end)
ADVANCE_SECONDS = 0.2
_FIELDS = {
    "url",
    "name",
    "types",
    "secret",
    "from",
    "timeout_seconds",
    "retry_base_seconds",
    "retry_max_seconds",
}


class WebhookConfigError(ValueError):
    """The webhooks file cannot be used (message says why)."""


@dataclass(frozen=True)
class Webhook:
    """One configured receiver. ``name`` keys its cursor (default: the URL); ``types`` are globs over
    detail-types (empty: every event); without ``secret`` the POSTs are not signed; a new webhook gets the
    feed from its first event, or with ``from_end`` only what follows its registration."""

    url: str
    name: str
    types: tuple[str, ...] = ()
    secret: str | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    from_end: bool = False

    @property
    def lease_seconds(self) -> float:
        """How long a delivery round may hold the webhook (an attempt lasts at most ``timeout_seconds``)."""
        return 2 * self.timeout_seconds + 5.0

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure in a row."""
        return float(min(self.retry_max_seconds, self.retry_base_seconds * 2 ** max(0, attempts - 1)))


def parse_webhooks(doc: Any, source: str = "webhooks") -> list[Webhook]:
    """The webhooks of a parsed JSON document: a list of objects, or ``{"webhooks": [...]}``.

    Raises:
        WebhookConfigError: not that shape, an unknown field, a URL that is not http(s), a bad number,
            or two webhooks with one name.
    """
    items = doc.get("webhooks") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise WebhookConfigError(f'{source}: expected a JSON list of webhooks (or {{"webhooks": [...]}})')
    hooks: list[Webhook] = []
    for n, item in enumerate(items):
        where = f"{source}: webhook {n + 1}"
        if not isinstance(item, dict):
            raise WebhookConfigError(f"{where}: expected an object")
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise WebhookConfigError(
                f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})"
            )
        url = item.get("url")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise WebhookConfigError(f"{where}: url must be an http:// or https:// URL")
        types = item.get("types", [])
        if isinstance(types, str):
            types = [types]
        if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
            raise WebhookConfigError(f"{where}: types must be a list of detail-type globs")
        secret = item.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise WebhookConfigError(f"{where}: secret must be a non-empty string")
        numbers: dict[str, float] = {}
        for key in ("timeout_seconds", "retry_base_seconds", "retry_max_seconds"):
            if key in item:
                value = item[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise WebhookConfigError(f"{where}: {key} must be a positive number")
                numbers[key] = float(value)
        name = item.get("name", url)
        if not isinstance(name, str) or not name:
            raise WebhookConfigError(f"{where}: name must be a non-empty string")
        start = item.get("from", "start")
        if start not in ("start", "end"):
            raise WebhookConfigError(f'{where}: from must be "start" (the whole feed) or "end"')
        hooks.append(Webhook(url, name, tuple(types), secret, from_end=start == "end", **numbers))
    names = [h.name for h in hooks]
    duplicate = next((x for x in names if names.count(x) > 1), None)
    if duplicate is not None:
        raise WebhookConfigError(f"{source}: two webhooks are named {duplicate!r}; give each a distinct name")
    return hooks


def load_webhooks(path: str | Path) -> list[Webhook]:
    """The webhooks of a JSON file (see :func:`parse_webhooks`).

    Raises:
        WebhookConfigError: the file cannot be read, is not JSON, or is not a valid list of webhooks.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise WebhookConfigError(f"cannot read the webhooks file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise WebhookConfigError(f"the webhooks file {path} is not JSON: {exc}") from None
    return parse_webhooks(doc, str(path))


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``secret`` over ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Poster:
    """POSTs to one webhook on a keep-alive HTTP/1.1 connection (one thread uses it at a time)."""

    def __init__(self, hook: Webhook) -> None:
        self.hook = hook
        parts = urlsplit(hook.url)
        https = parts.scheme == "https"
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._host = parts.netloc.rpartition("@")[2]  # the Host header: no user information
        self._conn = WireConnection(parts.hostname or "", parts.port or (443 if https else 80), https,
                                    hook.timeout_seconds)  # fmt: skip

    def close(self) -> None:
        self._conn.close()

    def post(self, body: bytes, headers: dict[str, str]) -> str | None:
        """POST ``body``; None on a 2xx answer, else why not (the attempt failed)."""
        for attempt in (0, 1):
            kept = self._conn.used
            try:
                resp = self._conn.request("POST", self._target, {"Host": self._host, **headers}, body)
                length = resp.getheader("content-length") or ""
                if length.isdigit() and int(length) <= _ANSWER_LIMIT:
                    resp.read()  # the answer's body is not used: read to keep the connection
                else:  # chunked, until the end of the connection, or long: not worth reading
                    self.close()
            except (Dropped, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if attempt == 0 and kept:
                    continue  # a kept connection the receiver had closed: one more try on a new one
                return f"{type(exc).__name__}: {exc}"
            except (OSError, ValueError) as exc:  # refused, timed out, not HTTP (ProtocolError), bad TLS
                self.close()
                return f"{type(exc).__name__}: {exc}"
            if resp.will_close:
                self.close()
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        raise AssertionError("unreachable")


def post(hook: Webhook, body: bytes, headers: dict[str, str]) -> str | None:
    """POST ``body`` to the webhook on a new connection; None on a 2xx answer, else why not."""
    poster = Poster(hook)
    try:
        return poster.post(body, headers)
    finally:
        poster.close()


class WebhookDeliverer:
    """A daemon thread delivering the feed to every configured webhook (see the module's docstring)."""

    def __init__(
        self, env: Env, hooks: Sequence[Webhook], owner: str | None = None, *, poll_seconds: float = 0.5
    ) -> None:
        self.env = env
        self.hooks = tuple(hooks)
        self.owner = owner or f"webhooks-{new_id()[:12]}"
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held: dict[str, tuple[float, int]] = {}
        self._posters = {hook.name: Poster(hook) for hook in self.hooks}

    def start(self) -> WebhookDeliverer:
        if self.hooks and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="openhi-webhooks", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after the attempt in flight, and give the leases back for another process to take over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for poster in self._posters.values():
            poster.close()
        for hook in self.hooks:
            try:
                self.env.index.release_webhook(hook.name, self.owner)
            except Exception:
                log.exception("releasing the lease of webhook %s failed", hook.name)

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = False
            for hook in self.hooks:
                try:
                    busy = self.deliver(hook) or busy
                except Exception:  # the index may be closing or unreachable: the next round retries
                    log.exception("webhook %s: delivery round failed", hook.name)
            if not busy:
                self._stop.wait(self.poll_seconds)

    def deliver(self, hook: Webhook) -> bool:
        """One round for ``hook``: deliver what follows its cursor until a failure, the end of the feed or
        a lost lease. True when it delivered (or skipped) something.

        The cursor is written after a failure, at the end of the round and otherwise at most every
        :data:`ADVANCE_SECONDS` while events go out (not once per event): a crash redelivers at most
        that much. While this process holds the lease for more than half its length, a round starts
        without taking it again (no other process moves the cursor meanwhile)."""
        index, now = self.env.index, self.env.clock()
        held = self._held.pop(hook.name, None)  # (lease until, cursor) while this process holds the lease
        if held is not None and held[0] - now > hook.lease_seconds / 2:
            if index.last_event_seq() <= held[1]:
                self._held[hook.name] = held
                return False  # nothing new: no write to the index while idle
            start, attempts, claimed = held[1], 0, held[0] - hook.lease_seconds
        else:
            cursor = index.claim_webhook(hook.name, self.owner, now, now + hook.lease_seconds, hook.from_end)
            if cursor is None or cursor.next_attempt_at > now:
                return False
            start, attempts, claimed = cursor.delivered_seq, cursor.attempts, now
        done = written = start  # delivered or passed over; as the index has it
        written_at = now
        for event in index.list_events(start, _BATCH):
            if self._stop.is_set():
                break
            if not matches(hook.types, event.detail_type):
                done = event.seq
                continue
            if self.env.clock() - claimed > hook.lease_seconds / 2:  # renew before a long batch outlives it
                claimed = self.env.clock()
                until = claimed + hook.lease_seconds
                if index.claim_webhook(hook.name, self.owner, claimed, until, hook.from_end) is None:
                    return done > start
            error = self._posters[hook.name].post(*self._request(hook, event, attempts + 1))
            if error is not None:
                attempts += 1
                wait = hook.backoff(attempts)
                log.warning("webhook %s: event %d attempt %d failed (%s); retry in %.1fs",
                            hook.name, event.seq, attempts, error, wait)  # fmt: skip
                if done > written:
                    index.advance_webhook(hook.name, self.owner, done)
                index.fail_webhook(hook.name, self.owner, attempts, self.env.clock() + wait, error)
                return done > start
            done, attempts = event.seq, 0
            if self.env.clock() - written_at >= ADVANCE_SECONDS:
                if not index.advance_webhook(hook.name, self.owner, done):
                    return True  # the lease went to another process: it resumes after its own cursor
                written, written_at = done, self.env.clock()
        if done > written and not index.advance_webhook(hook.name, self.owner, done):
            return True
        if not self._stop.is_set():
            self._held[hook.name] = (claimed + hook.lease_seconds, done)
        return done > start

    def _request(self, hook: Webhook, event: StoredEvent, attempt: int) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(envelope(self.env, event), separators=(",", ":")).encode()
        timestamp = str(int(self.env.clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "openhi-webhooks",
            "X-OpenHI-Event-Seq": str(event.seq),
            "X-OpenHI-Event-Type": event.detail_type,
            "X-OpenHI-Delivery-Attempt": str(attempt),
            TIMESTAMP_HEADER: timestamp,
        }
        if hook.secret is not None:
            headers[SIGNATURE_HEADER] = signature(hook.secret, timestamp, body)
        return body, headers
