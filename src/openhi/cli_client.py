"""What every openhi client command shares: the endpoint, credentials, SigV4-signed requests, clean errors."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_MEDICAL_IMAGING"
SERVICE = "medical-imaging"
DEFAULT_REGION = "us-east-1"
#: signs requests when no AWS credentials are configured (a local-mode server accepts any signature)
LOCAL_KEY = ("openhi-local", "openhi-local")
USAGE = 2  # exit status: bad arguments, unreachable endpoint, refused request
FAILED = 1  # exit status: the command ran, and some of its work failed


class CommandError(Exception):
    """Ends a client command with one line on stderr and an exit status."""

    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def resolve_endpoint(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--endpoint``, else ``$AWS_ENDPOINT_URL_MEDICAL_IMAGING``, else the local default; checked."""
    env = os.environ if environ is None else environ
    value = flag or env.get(ENDPOINT_VARIABLE) or DEFAULT_ENDPOINT
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        source = "--endpoint" if flag else ENDPOINT_VARIABLE
        raise CommandError(f"{source} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


@dataclass(frozen=True)
class Reply:
    """An answer to a signed request: status and body."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_message(self) -> str:
        """The ``message`` of an error body (openhi or AWS JSON), else the body's first line."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            message = doc.get("message") or doc.get("Message")
            code = str(doc.get("code") or doc.get("__type") or "").rsplit("#", 1)[-1]
            if message:
                return f"{code}: {message}" if code else str(message)
        text = self.body.decode("utf-8", "replace").strip().splitlines()
        return f"HTTP {self.status}" + (f": {text[0][:200]}" if text else "")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Connection:
    """An endpoint with the caller's AWS credentials and region (or the local defaults)."""

    endpoint: str
    region: str
    access_key: str
    secret_key: str
    token: str | None = None
    _api: Any = field(default=None, repr=False)
    _http: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, endpoint: str) -> Connection:
        """Credentials and region from the standard AWS environment and config files."""
        import botocore.exceptions
        import botocore.session

        try:
            session = botocore.session.get_session()
            credentials = session.get_credentials()
            region = session.get_config_variable("region") or DEFAULT_REGION
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except botocore.exceptions.BotoCoreError as exc:  # a missing profile, a broken config file
            raise CommandError(f"AWS configuration: {exc}") from exc
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            return cls(endpoint, region, *LOCAL_KEY)
        return cls(endpoint, region, frozen.access_key, frozen.secret_key, frozen.token)

    def api(self) -> Any:
        """A botocore ``medical-imaging`` client for this endpoint (no host prefixes)."""
        if self._api is None:
            import botocore.session
            from botocore.config import Config

            config = Config(
                inject_host_prefix=False,
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
            )
            self._api = botocore.session.get_session().create_client(
                SERVICE,
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                aws_session_token=self.token,
                config=config,
            )
        return self._api

    def request(
        self, method: str, path: str, *, query: str = "", file: Path | None = None, body: bytes = b""
    ) -> Reply:
        """Send a SigV4-signed request for ``path`` (segments are percent-encoded); a file body streams.

        Raises ``CommandError`` when the endpoint cannot be reached.
        """
        import botocore.exceptions
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = self.endpoint + quote(path, safe="/-_.~") + (f"?{query}" if query else "")
        digest = file_sha256(file) if file is not None else hashlib.sha256(body).hexdigest()
        handle = file.open("rb") if file is not None else None
        try:
            request = AWSRequest(
                method=method,
                url=url,
                data=handle if handle is not None else body,
                headers={"X-Amz-Content-SHA256": digest},
            )
            credentials = Credentials(self.access_key, self.secret_key, self.token)
            SigV4Auth(credentials, SERVICE, self.region).add_auth(request)
            response = self._session().send(request.prepare())
            return Reply(response.status_code, response.content)
        except botocore.exceptions.BotoCoreError as exc:
            raise CommandError(f"cannot reach {self.endpoint}: {exc}") from exc
        finally:
            if handle is not None:
                handle.close()

    def _session(self) -> Any:
        if self._http is None:
            from botocore.httpsession import URLLib3Session

            self._http = URLLib3Session(timeout=(10, 300))
        return self._http


def api_error(exc: BaseException, endpoint: str) -> CommandError:
    """A botocore exception as one line: the service's code and message, or why the endpoint is unreachable."""
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Error")
        return CommandError(f"{code}: {error.get('Message') or exc}")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.HTTPClientError):
        return CommandError(f"cannot reach {endpoint}: {exc}")
    return CommandError(str(exc))


def clean_exit(name: str, run: Callable[[Any], int]) -> Callable[[Any], int]:
    """Wrap a command: any error ends as one ``openhi <name>: …`` line on stderr, never a traceback."""

    def wrapped(args: Any) -> int:
        import botocore.exceptions

        try:
            return run(args)
        except CommandError as exc:
            print(f"openhi {name}: {exc.message}", file=sys.stderr)
            return exc.status
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            error = api_error(exc, "the endpoint")
            print(f"openhi {name}: {error.message}", file=sys.stderr)
            return error.status
        except KeyboardInterrupt:
            print(f"openhi {name}: interrupted", file=sys.stderr)
            return 130
        except OSError as exc:  # a file that cannot be read, a closed pipe
            print(f"openhi {name}: {exc}", file=sys.stderr)
            return USAGE

    return wrapped
