"""SigV4-signed HTTP requests on keep-alive connections, one per thread (``openhi export``'s transfers).

The signature is botocore's (``SigV4Auth``) computed here with hashlib and hmac: importing botocore
costs a tenth of a second, more than a small export takes. Credentials come from the environment
when it holds them (``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``: botocore's first provider);
anything else (profiles, SSO, containers, instance roles, or none: local mode) is botocore's chain.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from openhi.auth.sigv4_keys import remove_dot_segments, signing_key
from openhi.cli_client import DEFAULT_REGION, SERVICE, CommandError, Connection, Reply
from openhi.core.http_wire import Response, WireConnection

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: headers botocore leaves out of the signature
_UNSIGNED = frozenset({"expect", "transfer-encoding", "user-agent", "x-amzn-trace-id"})


@dataclass(frozen=True)
class Answer:
    """A reply with the headers ``openhi export`` reads."""

    status: int
    content_type: str
    body: bytes
    error_type: str = ""  # x-amzn-ErrorType (the API's error code)
    content_encoding: str = ""

    def error_message(self) -> str:
        """The error's code and message (``Code: message``), else the status and first line."""
        message = Reply(self.status, self.body).error_message()
        code = self.error_type.split(":", 1)[0]
        return f"{code}: {message}" if code and not message.startswith(f"{code}:") else message


def connection(endpoint: str, environ: Mapping[str, str] | None = None) -> Connection:
    """The endpoint with the caller's credentials: from the environment without botocore when they
    are there (and the region is known without reading the AWS config file), else botocore's chain."""
    env = os.environ if environ is None else environ
    key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    token = env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None
    region = env.get("AWS_DEFAULT_REGION", "")
    config = Path(env.get("AWS_CONFIG_FILE") or Path("~/.aws/config")).expanduser()
    if key and secret and (region or not config.exists()):
        return Connection(endpoint, region or DEFAULT_REGION, key, secret, token)
    return Connection.open(endpoint)


class Signer:
    """SigV4 (AWS4-HMAC-SHA256) as botocore's ``SigV4Auth`` signs a request with a hashed payload."""

    def __init__(self, conn: Connection, host: str) -> None:
        self.access_key, self.secret_key, self.token = conn.access_key, conn.secret_key, conn.token
        self.region = conn.region
        self.host = host

    def sign(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        payload_sha256: str,
        now: float | None = None,
    ) -> dict[str, str]:
        """``headers`` with X-Amz-Date, X-Amz-Content-SHA256, (the token) and Authorization added, for
        ``method`` on ``target`` (the percent-encoded path and query, as sent)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        out = dict(headers)
        out["X-Amz-Content-SHA256"] = payload_sha256
        out["X-Amz-Date"] = stamp
        if self.token:
            out["X-Amz-Security-Token"] = self.token
        signed: dict[str, list[str]] = {}
        for name, value in out.items():
            if name.lower() not in _UNSIGNED:
                signed.setdefault(name.lower(), []).append(value)
        signed.setdefault("host", [self.host])
        names = sorted(signed)
        canonical_headers = "".join(
            f"{n}:{','.join(' '.join(v.split()) for v in signed[n])}\n" for n in names
        )
        path, _, query = target.partition("?")
        pairs = sorted(tuple(pair.partition("=")[::2]) for pair in query.split("&")) if query else []
        canonical = "\n".join(
            (
                method.upper(),
                quote(remove_dot_segments(path) or "/", safe="/~"),
                "&".join(f"{k}={v}" for k, v in pairs),
                canonical_headers,
                ";".join(names),
                payload_sha256,
            )
        )
        scope = f"{stamp[:8]}/{self.region}/{SERVICE}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(
            signing_key(self.secret_key, stamp[:8], self.region, SERVICE), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        out["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, SignedHeaders={';'.join(names)}, "
            f"Signature={signature}"
        )
        return out


def _host(scheme: str, netloc: str) -> str:
    """The Host value botocore signs: the netloc without a default port."""
    default = ":443" if scheme == "https" else ":80"
    return netloc[: -len(default)] if netloc.endswith(default) else netloc


class Client:
    """Signed requests to an openhi endpoint; each thread keeps its own HTTP/1.1 connection.

    Raises CommandError (from :meth:`send` and :meth:`stream`) when the endpoint cannot be reached.
    """

    def __init__(self, conn: Connection, timeout: float = 300.0) -> None:
        self.conn = conn
        parts = urlsplit(conn.endpoint)
        self._https = parts.scheme == "https"
        self._address = (parts.hostname or "", parts.port or (443 if self._https else 80))
        self._base = parts.path.rstrip("/")
        self._timeout = timeout
        self._local = threading.local()
        self.signer = Signer(conn, _host(parts.scheme, parts.netloc))

    def _wire(self) -> WireConnection:
        held: WireConnection | None = getattr(self._local, "wire", None)
        if held is None:
            held = self._local.wire = WireConnection(*self._address, self._https, self._timeout)
        return held

    def target(self, path: str, query: str = "") -> str:
        """The request target of ``path`` (segments percent-encoded) and ``query`` (already encoded)."""
        return self._base + quote(path, safe="/-_.~") + (f"?{query}" if query else "")

    def _unreachable(self, exc: OSError) -> CommandError:
        return CommandError(f"cannot reach {self.conn.endpoint}: {exc}")

    def _response(
        self, method: str, target: str, headers: dict[str, str], body: bytes, wire: WireConnection
    ) -> Response:
        """The answer's head (a dropped keep-alive connection is replaced once). Raises CommandError."""
        digest = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        signed = {"Host": self.signer.host, **self.signer.sign(method, target, headers, digest)}
        for attempt in (0, 1):
            reused = wire.used
            try:
                return wire.request(method, target, signed, body)
            except ConnectionError as exc:  # a keep-alive connection the server had closed
                wire.close()
                if attempt == 0 and reused:
                    continue
                raise self._unreachable(exc) from exc
            except OSError as exc:  # refused, timed out, unreachable: no point sending again
                wire.close()
                raise self._unreachable(exc) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _done(wire: WireConnection, resp: Response) -> None:
        """Keep the connection for the next request when the answer was read to its end."""
        if resp.will_close or not resp.complete:
            wire.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Answer:
        """``method`` on ``path`` (segments percent-encoded), signed; the whole reply.

        Raises CommandError when the endpoint cannot be reached (after one retry on a new connection).
        """
        target = self.target(path, query)
        wire = self._wire()
        for attempt in (0, 1):
            resp = self._response(method, target, headers or {}, body, wire)
            try:
                data = resp.read()
            except OSError as exc:
                wire.close()
                if attempt == 0:
                    continue
                raise self._unreachable(exc) from exc
            self._done(wire, resp)
            return Answer(
                resp.status,
                resp.getheader("content-type") or "",
                data,
                resp.getheader("x-amzn-errortype") or "",
                resp.getheader("content-encoding") or "",
            )
        raise AssertionError("unreachable")

    @contextmanager
    def stream(
        self, path: str, *, query: str = "", headers: dict[str, str] | None = None
    ) -> Iterator[Response]:
        """A signed GET whose reply is read by the caller as it arrives (meanwhile the thread's other
        requests go on another connection); the connection is kept for the next request only when the
        reply was read to its end.

        Raises CommandError when the endpoint cannot be reached.
        """
        wire = self._wire()
        self._local.wire = None  # the thread's requests during the stream take another connection
        try:
            resp = self._response("GET", self.target(path, query), headers or {}, b"", wire)
            try:
                yield resp
            finally:
                self._done(wire, resp)
        finally:
            if getattr(self._local, "wire", None) is None:
                self._local.wire = wire
            else:
                wire.close()

    def close(self) -> None:
        """Close this thread's connection (the others close when their threads end)."""
        held: WireConnection | None = getattr(self._local, "wire", None)
        if held is not None:
            held.close()
