"""Webhooks without a server: the configuration file, signatures, backoff, and the deliverer over an index."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from openhi.core.env import Env
from openhi.core.records import Datastore
from openhi.core.settings import Settings
from openhi.core.webhooks import (
    Webhook,
    WebhookConfigError,
    WebhookDeliverer,
    load_webhooks,
    parse_webhooks,
    signature,
)
from openhi.storage.sqlite.index import SqliteIndex


def test_the_file_and_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "hooks.json"
    path.write_text(json.dumps({"webhooks": [{"url": "https://h/x", "types": "Image Set *", "from": "end"}]}))
    [hook] = load_webhooks(path)
    assert hook == Webhook("https://h/x", "https://h/x", ("Image Set *",), None, from_end=True)
    assert (hook.timeout_seconds, hook.lease_seconds) == (10.0, 25.0)
    assert [hook.backoff(n) for n in (1, 2, 3, 20)] == [1.0, 2.0, 4.0, 300.0]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"url": "x"}, "expected a JSON list"),
        ([{"url": "ftp://h"}], "http:// or https://"),
        ([{"url": "http://h", "secrets": "s"}], "unknown field 'secrets'"),
        ([{"url": "http://h", "types": [""]}], "types must be"),
        ([{"url": "http://h", "timeout_seconds": 0}], "timeout_seconds must be a positive number"),
        ([{"url": "http://h", "from": "now"}], "from must be"),
        ([{"url": "http://h"}, {"url": "http://h"}], "two webhooks are named"),
    ],
)
def test_bad_files_are_refused(doc: Any, message: str) -> None:
    with pytest.raises(WebhookConfigError, match=message):
        parse_webhooks(doc)


def test_unreadable_or_not_json(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigError, match="cannot read"):
        load_webhooks(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(WebhookConfigError, match="not JSON"):
        load_webhooks(tmp_path / "bad.json")


def test_the_signature_covers_timestamp_and_body() -> None:
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature("k", "1700000000", b"{}") == f"sha256={expected}"
    assert signature("k", "1700000001", b"{}") != signature("k", "1700000000", b"{}")


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]], list[int]]]:
    got: list[tuple[dict[str, str], bytes]] = []
    statuses: list[int] = []  # answers to give, in order (then 200)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(
                (
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(int(self.headers["Content-Length"])),
                )
            )
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", got, statuses
    finally:
        server.shutdown()
        server.server_close()


def test_delivery_filters_retries_with_backoff_and_keeps_order(receiver: Any) -> None:
    url, got, statuses = receiver
    index = SqliteIndex(":memory:")
    now = [1000.0]
    env = Env(Settings(), index, None, None, None, clock=lambda: now[0])  # type: ignore[arg-type]
    hook = Webhook(url, "h", ("Data Store Created", "Data Store Dele*"), "k", timeout_seconds=2)
    deliverer = WebhookDeliverer(env, [hook], owner="me")
    for i in range(2):
        index.insert_datastore(Datastore(f"{i:032x}", f"d{i}", "CREATING", "HTJ2K", 1.0, 1.0))
        index.set_datastore_status(f"{i:032x}", "ACTIVE", 2.0)
    index.set_datastore_status(f"{0:032x}", "DELETING", 3.0)
    statuses.extend([500, 502])
    assert deliverer.deliver(hook) is True  # skips seq 1 (Creating), fails at seq 2
    assert [json.loads(b)["seq"] for _, b in got] == [2]
    state = index.webhook_cursors()[0]
    assert (state.delivered_seq, state.attempts, state.next_attempt_at) == (1, 1, 1001.0)
    assert deliverer.deliver(hook) is False  # backing off: nothing sent
    now[0] = 1001.0
    deliverer.deliver(hook)  # the second failure: 2 s
    assert index.webhook_cursors()[0].next_attempt_at == 1003.0
    now[0] = 1003.0
    assert deliverer.deliver(hook) is True
    seqs = [json.loads(b)["seq"] for _, b in got]
    assert seqs == [2, 2, 2, 4, 5]  # Created (retried twice), Created, Deleting; Creating events skipped
    assert [h["x-openhi-delivery-attempt"] for h, _ in got] == ["1", "2", "3", "1", "1"]
    for headers, body in got:
        assert headers["x-openhi-signature"] == signature("k", headers["x-openhi-timestamp"], body)
    assert index.webhook_cursors()[0].delivered_seq == 5
    deliverer.stop()
    assert index.webhook_cursors()[0].lease_owner is None
    index.close()


class _KeepAliveReceiver:
    """An HTTP/1.1 receiver counting connections and POSTs; ``close_after`` answers close the connection
    from the receiver's side right after the answer (as an idle timeout would)."""

    def __init__(self, status: int = 200, close_after: bool = False) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                owner.connections += 1

            def do_POST(self) -> None:
                owner.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if close_after:
                    self.wfile.flush()
                    self.connection.shutdown(2)  # gone without a Connection: close header
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_poster_keeps_one_connection_for_many_posts() -> None:
    from openhi.core.webhooks import Poster

    receiver = _KeepAliveReceiver()
    poster = Poster(Webhook(receiver.url, "k"))
    try:
        for n in range(5):
            assert poster.post(f"{n}".encode(), {"Content-Type": "application/json"}) is None
    finally:
        poster.close()
        receiver.stop()
    assert receiver.bodies == [b"0", b"1", b"2", b"3", b"4"]
    assert receiver.connections == 1


def test_poster_sends_again_on_a_new_connection_when_the_kept_one_was_closed() -> None:
    import time

    from openhi.core.webhooks import Poster

    receiver = _KeepAliveReceiver(close_after=True)
    poster = Poster(Webhook(receiver.url, "k"))
    try:
        assert poster.post(b"a", {}) is None
        time.sleep(0.05)  # the receiver's close has reached us
        assert poster.post(b"b", {}) is None
    finally:
        poster.close()
        receiver.stop()
    assert receiver.bodies == [b"a", b"b"]
    assert receiver.connections == 2


def test_poster_reports_a_refusal_and_an_unreachable_receiver() -> None:
    from openhi.core.webhooks import Poster

    receiver = _KeepAliveReceiver(status=503)
    poster = Poster(Webhook(receiver.url, "k"))
    try:
        assert poster.post(b"x", {}) == "HTTP 503"
    finally:
        poster.close()
        receiver.stop()
    gone = Poster(Webhook(receiver.url, "k", timeout_seconds=2.0))
    error = gone.post(b"x", {})
    assert error is not None and "ConnectionRefused" in error


def test_the_cursor_is_written_at_intervals_and_before_a_failure(receiver: Any) -> None:
    """Within one round the cursor is written every ADVANCE_SECONDS (not per event), before a failure and
    at the round's end; a later round while the lease is held starts without taking it again."""
    from openhi.core import webhooks

    url, got, statuses = receiver
    index = SqliteIndex(":memory:")
    now = [1000.0]
    env = Env(Settings(), index, None, None, None, clock=lambda: now[0])  # type: ignore[arg-type]
    hook = Webhook(url, "h", timeout_seconds=2)
    deliverer = WebhookDeliverer(env, [hook], owner="me")
    for i in range(3):  # 6 events: Creating, Created per datastore
        index.insert_datastore(Datastore(f"{i:032x}", f"d{i}", "CREATING", "HTJ2K", 1.0, 1.0))
        index.set_datastore_status(f"{i:032x}", "ACTIVE", 2.0)
    writes: list[int] = []
    advance = index.advance_webhook

    def counted(name: str, owner: str, seq: int) -> bool:
        writes.append(seq)
        return advance(name, owner, seq)

    index.advance_webhook = counted  # type: ignore[method-assign]
    statuses.extend([200, 200, 200, 200, 503])  # the 5th event fails
    assert deliverer.deliver(hook) is True
    assert writes == [4]  # one write, the last event delivered, right before the failure was recorded
    state = index.webhook_cursors()[0]
    assert (state.delivered_seq, state.attempts) == (4, 1)
    now[0] += webhooks.ADVANCE_SECONDS + hook.backoff(1)
    claims: list[float] = []
    claim = index.claim_webhook

    def counted_claim(*args: Any) -> Any:
        claims.append(args[2])
        return claim(*args)

    index.claim_webhook = counted_claim  # type: ignore[method-assign]
    assert deliverer.deliver(hook) is True  # after the failure: the lease is taken again
    assert writes == [4, 6] and len(claims) == 1
    index.insert_datastore(Datastore(f"{9:032x}", "d9", "CREATING", "HTJ2K", 1.0, 1.0))
    assert deliverer.deliver(hook) is True  # the lease is still held: no claim, one write
    assert writes == [4, 6, 7] and len(claims) == 1
    assert [json.loads(b)["seq"] for _, b in got] == [1, 2, 3, 4, 5, 5, 6, 7]
    assert index.webhook_cursors()[0].delivered_seq == 7
    deliverer.stop()
    index.close()
