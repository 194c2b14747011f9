"""Running the server: credentials, the loopback rule for local mode, uvicorn with graceful shutdown."""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import socket
from pathlib import Path

import uvicorn

from openhi.asgi import OpenHIApp
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.services import ServerConfig, build_services


class StartupError(Exception):
    """The server refuses to start; the message says why and what to do."""


def load_credentials(path: str | None) -> dict[str, str]:
    """Access key id → secret, from ``--credentials FILE`` (JSON object or AWS credentials INI) or the env."""
    creds: dict[str, str] = {}
    if path:
        text = Path(path).read_text()
        try:
            data = json.loads(text)
        except ValueError:
            parser = configparser.ConfigParser()
            parser.read_string(text)
            for section in parser.sections():
                key = parser.get(section, "aws_access_key_id", fallback=None)
                secret = parser.get(section, "aws_secret_access_key", fallback=None)
                if key and secret:
                    creds[key] = secret
        else:
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise StartupError(f"{path}: expected a JSON object mapping access key ids to secrets")
            creds.update(data)
    key, secret = os.environ.get("OPENHI_ACCESS_KEY_ID"), os.environ.get("OPENHI_SECRET_ACCESS_KEY")
    if key and secret:
        creds[key] = secret
    return creds


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def build_app(config: ServerConfig, host: str) -> OpenHIApp:
    """The ready ASGI app for this configuration.

    Raises:
        StartupError: no credentials are configured and ``host`` is not a loopback address.
    """
    if not config.credentials and not is_loopback(host):
        raise StartupError(
            f"Refusing to listen on {host} without credentials: local mode (any signature accepted) is only "
            "allowed on a loopback address. Pass --credentials FILE or set OPENHI_ACCESS_KEY_ID and "
            "OPENHI_SECRET_ACCESS_KEY, or bind to 127.0.0.1."
        )
    services = build_services(config)
    return OpenHIApp(services, SigV4Verifier(config.credentials or None))


def serve(config: ServerConfig, host: str, port: int, log_level: str = "info") -> None:
    """Serve until SIGTERM/SIGINT; uvicorn drains connections and the lifespan closes the services."""
    app = build_app(config, host)
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(uv_config).run()
