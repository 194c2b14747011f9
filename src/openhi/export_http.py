"""SigV4-signed HTTP requests on keep-alive connections, one per thread (``openhi export``'s transfers)."""

from __future__ import annotations

import hashlib
import http.client
import threading
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from openhi.cli_client import SERVICE, CommandError, Connection, Reply

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: what a dropped keep-alive connection raises; the request is sent again once on a new connection
_DROPPED = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionError, BrokenPipeError)


@dataclass(frozen=True)
class Answer:
    """A reply with the headers ``openhi export`` reads."""

    status: int
    content_type: str
    body: bytes

    def error_message(self) -> str:
        """The error body's message (openhi's JSON ``{"message"}``), else the status and first line."""
        return Reply(self.status, self.body).error_message()


class Client:
    """Signed requests to an openhi endpoint; each thread keeps its own HTTP/1.1 connection.

    Raises CommandError (from :meth:`send`) when the endpoint cannot be reached.
    """

    def __init__(self, conn: Connection, timeout: float = 300.0) -> None:
        from botocore.credentials import Credentials

        self.conn = conn
        parts = urlsplit(conn.endpoint)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._base = parts.path.rstrip("/")
        self._timeout = timeout
        self._local = threading.local()
        self._credentials = Credentials(conn.access_key, conn.secret_key, conn.token)

    def _http(self, fresh: bool = False) -> http.client.HTTPConnection:
        held: http.client.HTTPConnection | None = getattr(self._local, "http", None)
        if held is not None and not fresh:
            return held
        if held is not None:
            held.close()
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        made = cls(self._netloc, timeout=self._timeout)
        self._local.http = made
        return made

    def _signed(self, method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        digest = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
        scheme = "https" if self._https else "http"
        request = AWSRequest(
            method=method,
            url=f"{scheme}://{self._netloc}{target}",
            data=body,
            headers={**headers, "X-Amz-Content-SHA256": digest},
        )
        SigV4Auth(self._credentials, SERVICE, self.conn.region).add_auth(request)
        return dict(request.headers.items())

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
        target = self._base + quote(path, safe="/-_.~") + (f"?{query}" if query else "")
        signed = self._signed(method, target, headers or {}, body)
        for attempt in (0, 1):
            http_conn = self._http(fresh=attempt == 1)
            try:
                http_conn.request(method, target, body=body or None, headers=signed)
                resp = http_conn.getresponse()
                data = resp.read()
            except _DROPPED as exc:
                if attempt == 0:
                    continue
                raise CommandError(f"cannot reach {self.conn.endpoint}: {exc}") from exc
            except OSError as exc:  # refused, timed out, unreachable: no point sending again
                http_conn.close()
                raise CommandError(f"cannot reach {self.conn.endpoint}: {exc}") from exc
            if resp.will_close:
                http_conn.close()
                self._local.http = None
            return Answer(resp.status, resp.getheader("content-type") or "", data)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close this thread's connection (the others close when their threads end)."""
        held = getattr(self._local, "http", None)
        if held is not None:
            held.close()
            self._local.http = None
