"""Running the server: credentials, policies, OIDC and CORS, start-up checks, uvicorn, import workers."""

from __future__ import annotations

import configparser
import dataclasses
import errno
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from openhi.asgi import OpenHIApp
from openhi.auth.bearer import BearerVerifier, OidcConfig
from openhi.auth.cors import CorsPolicy
from openhi.auth.policy import PolicyError
from openhi.auth.principals import Authorizer, read_policy_file
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.console.session import configure as configure_sessions
from openhi.core.settings import Settings
from openhi.dimse.listener import DicomPortInUse, start_listener
from openhi.dimse.settings import DimseSettings
from openhi.listeners import ReusePortSocket, reuse_port_supported
from openhi.observability import prepare_serve, request_observer
from openhi.services import ServerConfig, build_services
from openhi.storage.registry import open_blobs, open_index
from openhi.throttle.setup import request_guard
from openhi.zerocopy import ZeroCopyHttpToolsProtocol

# `serve --workers N`: the parent hands each API process its configuration in this variable
CONFIG_ENV = "OPENHI_SERVE_CONFIG"


class StartupError(Exception):
    """The server refuses to start; the message says why and what to do."""


@dataclass(frozen=True)
class WebAccess:
    """How browsers and DICOMweb viewers get in: OIDC bearer tokens and CORS origins (both off by default)."""

    oidc: OidcConfig | None = None
    cors_origins: tuple[str, ...] = ()


def oidc_config(issuer: str | None, audience: str | None, jwks: str | None) -> OidcConfig | None:
    """The OIDC settings, or None when none is given.

    Raises:
        StartupError: some but not all of issuer, audience and JWKS are given.
    """
    given = {"--oidc-issuer": issuer, "--oidc-audience": audience, "--oidc-jwks": jwks}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise StartupError(
            f"OIDC needs an issuer, an audience and a JWKS: {', '.join(missing)} (or the OPENHI_OIDC_* "
            "variable) is missing"
        )
    assert issuer and audience and jwks
    return OidcConfig(issuer=issuer, audience=audience, jwks=jwks)


def web_access_parts(web: WebAccess | None) -> tuple[BearerVerifier | None, CorsPolicy | None]:
    """The bearer verifier and CORS policy of ``web``.

    Raises:
        StartupError: the JWKS file cannot be used or an origin is malformed.
    """
    if web is None:
        return None, None
    try:
        oidc = BearerVerifier(web.oidc) if web.oidc is not None else None
        cors = CorsPolicy(web.cors_origins) if web.cors_origins else None
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    return oidc, cors


def load_credentials(path: str | None) -> dict[str, str]:
    """Access key id → secret, from ``--credentials FILE`` (JSON object or AWS credentials INI) or the env."""
    creds: dict[str, str] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise StartupError(f"{path}: cannot read the credentials file ({exc.strerror or exc})") from None
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


def load_keys(
    credentials_path: str | None, policy_path: str | None
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """(access key id → secret, access key id → policy) from ``--credentials`` and ``--policy-file``.

    Raises:
        StartupError: a file cannot be used, or a key is listed in both.
    """
    credentials = load_credentials(credentials_path)
    if not policy_path:
        return credentials, {}
    try:
        policy_file = read_policy_file(policy_path)
    except PolicyError as exc:
        raise StartupError(str(exc)) from None
    both = sorted(set(credentials) & set(policy_file.secrets))
    if both:
        raise StartupError(
            f"{policy_path}: access key {both[0]} is also given by --credentials or the environment; "
            "list each key once"
        )
    return {**credentials, **policy_file.secrets}, policy_file.policies


def check_codecs() -> None:
    """Raises StartupError naming the packages to install when a transcoded input syntax has no decoder."""
    from openhi.codec.decoders import missing_decoders

    missing = missing_decoders()
    if missing:
        packages = sorted(set(missing.values()))
        raise StartupError(
            f"no decoder for transfer syntax(es) {', '.join(sorted(missing))}: install {', '.join(packages)} "
            "(pip install " + " ".join(packages) + ")"
        )


def bind_port(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is created; StartupError when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(port_problem(host, port, exc)) from None
    sock.set_inheritable(True)
    return sock


def port_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use (another server holds it): stop it or pick another --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


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


def check_exposure(config: ServerConfig, host: str) -> None:
    """Raises StartupError: no credentials are configured and ``host`` is not a loopback address."""
    if not config.credentials and not is_loopback(host):
        raise StartupError(
            f"Refusing to listen on {host} without credentials: local mode (any signature accepted) is only "
            "allowed on a loopback address. Pass --credentials FILE or set OPENHI_ACCESS_KEY_ID and "
            "OPENHI_SECRET_ACCESS_KEY, or bind to 127.0.0.1."
        )


def build_app(config: ServerConfig, host: str, web: WebAccess | None = None) -> OpenHIApp:
    """The ready ASGI app for this configuration.

    Raises:
        StartupError: no credentials are configured and ``host`` is not a loopback address; a policy,
            the JWKS file or a CORS origin cannot be used.
    """
    check_exposure(config, host)
    try:
        authorizer = Authorizer(config.policies)
    except PolicyError as exc:
        raise StartupError(str(exc)) from None
    oidc, cors = web_access_parts(web)
    guard = request_guard(config.throttle, config.faults)
    observer = request_observer(config.log_format, config.metrics_public)
    services = build_services(config)
    services.dimse = config.dimse
    sessions = configure_sessions(services, config.credentials)  # the console's sign-in cookies
    if config.dimse.port is not None:
        try:
            listener = start_listener(config.dimse, services, host)
        except (DicomPortInUse, ValueError, OSError, ssl.SSLError) as exc:  # taken port, unusable TLS files
            services.close()
            raise StartupError(f"DICOM port: {exc}") from None
        if listener is not None:
            services.on_close.append(listener.close)
    return OpenHIApp(
        services,
        SigV4Verifier(config.credentials or None),
        authorizer,
        oidc=oidc,
        cors=cors,
        guard=guard,
        observer=observer,
        sessions=sessions,
    )


def serve(
    config: ServerConfig,
    host: str,
    port: int,
    log_level: str = "info",
    processes: int = 1,
    web: WebAccess | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn drains connections and the lifespan closes the services.

    With ``processes`` > 1, uvicorn's supervisor runs that many API processes on one port, each with its
    own SO_REUSEPORT listener (:mod:`openhi.listeners`); each builds its own services from the
    configuration this process checked (backends reachable, migrations applied).
    """
    common: dict[str, object] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "lifespan": "on",
        "access_log": False,
        # openhi never reads the client address, so uvicorn's X-Forwarded-For rewriting layer is skipped
        "proxy_headers": False,
        # httptools plus the ASGI zero-copy extension: frames go from their file to the socket by sendfile
        "http": ZeroCopyHttpToolsProtocol,
        "timeout_graceful_shutdown": 10,
    }
    common.update(prepare_serve(config.log_format, log_level))  # metrics folder of every process, logging
    check_codecs()
    check_exposure(config, host)
    web_access_parts(web)  # a bad JWKS file or origin stops the start before the port is taken
    # every process enforces its share of the rate limits (openhi.throttle): the limit / the process count
    os.environ["OPENHI_PROCESSES"] = str(max(1, processes))
    if processes <= 1:
        sock = bind_port(host, port)  # before the data dir or anything else exists
        try:
            app = build_app(config, host, web)
            uvicorn.Server(uvicorn.Config(app, **common)).run(sockets=[sock])  # type: ignore[arg-type]
        finally:
            sock.close()
        return
    if not reuse_port_supported():  # one shared socket, as uvicorn --workers does it
        bind_port(host, port).close()
        _prepare_processes(config, host, web)
        uvicorn.run("openhi.server:create_app", factory=True, workers=processes, **common)  # type: ignore[arg-type]
        return
    # Each API process listens on its own SO_REUSEPORT socket (openhi.listeners), under uvicorn's supervisor
    # (restarts, health checks, signals).
    try:
        holder = ReusePortSocket.holding(host, port)
    except OSError as exc:
        raise StartupError(port_problem(host, port, exc)) from None
    try:
        _prepare_processes(config, host, web)
    except BaseException:
        holder.close()
        raise
    multi = uvicorn.Config("openhi.server:create_app", factory=True, workers=processes, **common)  # type: ignore[arg-type]
    try:
        Multiprocess(multi, sockets=[holder]).run()
    except KeyboardInterrupt:
        pass
    finally:
        holder.close()


def _prepare_processes(config: ServerConfig, host: str, web: WebAccess | None = None) -> None:
    """Check what every API process will need once, and hand them the configuration."""
    try:
        Authorizer(config.policies)
    except PolicyError as exc:
        raise StartupError(str(exc)) from None
    request_guard(config.throttle, config.faults)  # a bad limits or rules file stops the start here
    check_backends(config)
    raw = _config_dict(config, host)
    if web is not None:
        raw["web"] = {
            "oidc": dataclasses.asdict(web.oidc) if web.oidc is not None else None,
            "cors_origins": list(web.cors_origins),
        }
    os.environ[CONFIG_ENV] = json.dumps(raw)


def check_backends(config: ServerConfig) -> None:
    """Open the index (applying migrations) and the blob store once, so that a bad URL stops the start
    here with a ConfigurationError instead of in every API process."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    open_index(config.resolved_index_url()).close()
    open_blobs(config.resolved_blobs_url(), config.s3_endpoint_url)


def _config_dict(config: ServerConfig, host: str) -> dict[str, object]:
    return {
        "host": host,
        "data_dir": str(config.data_dir),
        "index_url": config.index_url,
        "blobs_url": config.blobs_url,
        "s3_endpoint_url": config.s3_endpoint_url,
        "credentials": config.credentials,
        "policies": config.policies,
        "settings": dataclasses.asdict(config.settings),
        "pixel_workers": config.pixel_workers,
        "api": config.api,
        "import_threads": config.import_threads,
        "dimse": dataclasses.asdict(config.dimse),
        "throttle": config.throttle,
        "faults": config.faults,
        "log_format": config.log_format,
        "metrics_public": config.metrics_public,
        "webhooks": config.webhooks,
    }


def create_app() -> OpenHIApp:
    """App factory for uvicorn's import string (``openhi serve --workers N``): configuration from the
    environment the parent process prepared."""
    return app_from_environment()


def app_from_environment() -> OpenHIApp:
    """The app of one API process started by ``serve --workers N`` (see :data:`CONFIG_ENV`)."""
    raw = json.loads(os.environ[CONFIG_ENV])
    host = raw.pop("host")
    web_raw = raw.pop("web", None)
    web = None
    if web_raw is not None:
        oidc = OidcConfig(**web_raw["oidc"]) if web_raw["oidc"] is not None else None
        web = WebAccess(oidc=oidc, cors_origins=tuple(web_raw["cors_origins"]))
    raw["data_dir"] = Path(raw["data_dir"])
    raw["settings"] = Settings(**raw["settings"])
    raw["dimse"] = DimseSettings(**raw["dimse"])
    return build_app(ServerConfig(**raw), host, web)


def run_worker(
    config: ServerConfig, log_level: str = "info", metrics_address: tuple[str, int] | None = None
) -> None:
    """Run import workers only (no API) until SIGTERM/SIGINT; a running job gives its lease back.
    ``metrics_address`` (host, port): serve ``/metrics`` there (its own HTTP server, unauthenticated).

    Raises:
        StartupError: the metrics address cannot be bound.
    """
    check_codecs()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if metrics_address is not None:
        from openhi.observability import prepare_worker

        prepare_worker()  # before the pixel pool starts: its processes write to the same folder
    services = build_services(dataclasses.replace(config, api=False))
    metrics_server = None
    try:
        if metrics_address is not None:
            from openhi.metrics import serve_worker_metrics

            host, port = metrics_address
            try:
                metrics_server = serve_worker_metrics(services, host, port)
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        worker = services.worker
        logging.getLogger("openhi.worker").info(
            "openhi worker %s ready (%d threads)%s",
            worker.worker_id if worker else "-",
            config.import_threads,
            f"; metrics on http://{metrics_address[0]}:{metrics_address[1]}/metrics"
            if metrics_address
            else "",
        )
        while not stop.wait(1.0):
            pass
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        services.close()
