"""The ``openhi`` command: serve, worker, migrate, import, diff and --version."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from openhi import __version__


def _config(args: argparse.Namespace, **extra: Any) -> Any:
    from openhi.core.settings import settings_from_env
    from openhi.server import load_keys
    from openhi.services import ServerConfig

    settings = settings_from_env(
        region=getattr(args, "region", None), account_id=getattr(args, "account_id", None)
    )
    credentials, policies = load_keys(getattr(args, "credentials", None), getattr(args, "policy_file", None))
    return ServerConfig(
        data_dir=Path(args.data_dir),
        index_url=args.index,
        blobs_url=args.blobs,
        s3_endpoint_url=args.s3_endpoint_url,
        credentials=credentials,
        policies=policies,
        settings=settings,
        **extra,
    )


def _clean_errors(run: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    """A bad URL or an unsafe setup ends with one line on stderr and exit status 2, not a traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        from openhi.server import StartupError
        from openhi.storage.registry import ConfigurationError

        try:
            run(args)
        except (StartupError, ConfigurationError) as exc:
            print(f"openhi: {exc}", file=sys.stderr)
            return 2
        return 0

    return wrapped


@_clean_errors
def _serve(args: argparse.Namespace) -> None:
    from openhi.server import serve

    if args.workers < 1:
        raise SystemExit("openhi serve: --workers must be at least 1")
    threads = 0 if args.no_workers else args.import_threads
    config = _config(
        args,
        import_threads=threads,
        dimse=_dimse_settings(args),
        throttle=args.throttle,
        faults=args.faults,
        log_format=args.log_format,
        metrics_public=args.metrics_public,
        webhooks=_webhooks(args, "serve"),
    )
    serve(config, args.host, args.port, args.log_level, args.workers, _web_access(args))


def _dimse_settings(args: argparse.Namespace) -> Any:
    """The DICOM port's settings from the ``--dicom-*`` flags (a bad peer is a usage error)."""
    from openhi.dimse.settings import DimseSettings

    peers: dict[str, str] = {}
    for spec in args.dicom_peer or ():
        aet, sep, address = spec.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not aet.strip() or not colon or not host or not port.isdigit():
            raise SystemExit(f"openhi serve: --dicom-peer {spec!r}: expected AET=HOST:PORT")
        peers[aet.strip()] = address
    return DimseSettings(
        port=args.dicom_port,
        aet=args.dicom_aet,
        datastore=args.dicom_datastore,
        peers=peers,
        allow=list(args.dicom_allow or ()),
        max_associations=args.dicom_max_associations,
        tls_cert=args.dicom_tls_cert,
        tls_key=args.dicom_tls_key,
    )


def _web_access(args: argparse.Namespace) -> Any:
    """OIDC and CORS from the flags, else from OPENHI_OIDC_ISSUER / _AUDIENCE / _JWKS and
    OPENHI_CORS_ORIGINS (comma-separated)."""
    from openhi.server import WebAccess, oidc_config

    env = os.environ
    oidc = oidc_config(
        args.oidc_issuer or env.get("OPENHI_OIDC_ISSUER") or None,
        args.oidc_audience or env.get("OPENHI_OIDC_AUDIENCE") or None,
        args.oidc_jwks or env.get("OPENHI_OIDC_JWKS") or None,
    )
    origins = args.cors_origin or [o for o in env.get("OPENHI_CORS_ORIGINS", "").split(",") if o.strip()]
    return WebAccess(oidc=oidc, cors_origins=tuple(o.strip() for o in origins))


@_clean_errors
def _worker(args: argparse.Namespace) -> None:
    from openhi.server import run_worker

    config = _config(args, import_threads=max(1, args.threads), api=False, webhooks=_webhooks(args, "worker"))
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise SystemExit("openhi worker: --metrics-port must be between 1 and 65535")
    metrics = (args.metrics_host, args.metrics_port) if args.metrics_port is not None else None
    run_worker(config, args.log_level, metrics)


def _webhooks(args: argparse.Namespace, command: str) -> str | None:
    """The --webhooks file, checked now: a bad file is a usage error, not a crash of every process."""
    from openhi.core.webhooks import WebhookConfigError, load_webhooks

    if args.webhooks:
        try:
            load_webhooks(args.webhooks)
        except WebhookConfigError as exc:
            raise SystemExit(f"openhi {command}: --webhooks: {exc}") from None
    return str(args.webhooks) if args.webhooks else None


@_clean_errors
def _migrate(args: argparse.Namespace) -> None:
    from openhi.storage.registry import open_index

    url = args.index or f"sqlite:///{Path(args.data_dir) / 'index.sqlite3'}"
    if url.startswith("sqlite:///"):
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    open_index(url).close()
    print("openhi: the index schema is up to date", file=sys.stderr)


def _backend_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--data-dir", default="./openhi-data")
    cmd.add_argument("--index", default=None, help="index URL (default sqlite:///<data-dir>/index.sqlite3)")
    cmd.add_argument("--blobs", default=None, help="blob store URL (default file://<data-dir>/blobs)")
    cmd.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get("OPENHI_S3_ENDPOINT_URL"),
        help="S3 endpoint for import inputs/outputs (instead of <data-dir>/buckets) and for s3:// --blobs",
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``openhi`` parser; ``only``: of the client commands, that one alone (``cli_tools.register``)."""
    parser = argparse.ArgumentParser(prog="openhi", description=__doc__)
    parser.add_argument("--version", action="version", version=f"openhi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HealthImaging-compatible server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    _backend_flags(serve)
    serve.add_argument(
        "--credentials", default=None, help="JSON {access_key_id: secret} or AWS credentials file"
    )
    serve.add_argument(
        "--policy-file",
        default=os.environ.get("OPENHI_POLICY_FILE") or None,
        help="JSON {principals: [{accessKeyId, secretAccessKey, policy}]}: keys limited by IAM-style policies",
    )
    serve.add_argument(
        "--oidc-issuer", default=None, help="accept OIDC bearer tokens of this issuer on DICOMweb routes"
    )
    serve.add_argument("--oidc-audience", default=None, help="the audience (aud) those tokens must name")
    serve.add_argument("--oidc-jwks", default=None, help="the issuer's keys: a JWKS file or https:// URL")
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        help="a browser origin allowed to call (scheme://host[:port], or *); repeatable",
    )
    dicom = serve.add_argument_group("DICOM networking (off unless --dicom-port is given; docs/dimse.md)")
    dicom.add_argument(
        "--dicom-port", type=int, default=None, help="listen for DICOM associations on this port"
    )
    dicom.add_argument("--dicom-aet", default="OPENHI", help="the server's AE title (default OPENHI)")
    dicom.add_argument(
        "--dicom-datastore",
        default=None,
        help="datastore that C-STORE writes to (default: see docs/dimse.md)",
    )
    dicom.add_argument(
        "--dicom-peer",
        action="append",
        default=None,
        metavar="AET=HOST:PORT",
        help="a C-MOVE destination; repeatable",
    )
    dicom.add_argument(
        "--dicom-allow",
        action="append",
        default=None,
        metavar="AET",
        help="a calling AE title allowed; repeatable",
    )
    dicom.add_argument(
        "--dicom-max-associations", type=int, default=32, help="concurrent associations (default 32)"
    )
    dicom.add_argument("--dicom-tls-cert", default=None, help="DICOM TLS: the server certificate (PEM)")
    dicom.add_argument("--dicom-tls-key", default=None, help="DICOM TLS: the certificate's private key (PEM)")
    serve.add_argument(
        "--throttle",
        default=os.environ.get("OPENHI_THROTTLE") or "off",
        metavar="off|aws|FILE",
        help="request rate limits per access key and operation: off (default), aws (AWS's quotas), or a file",
    )
    serve.add_argument(
        "--faults", default=None, metavar="FILE", help="fault-injection rules applied from the start"
    )
    serve.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log lines as text or JSON"
    )
    serve.add_argument("--metrics-public", action="store_true", help="serve /metrics without authentication")
    serve.add_argument(
        "--webhooks",
        default=os.environ.get("OPENHI_WEBHOOKS") or None,
        metavar="FILE",
        help="webhooks the event feed is POSTed to: a JSON file (docs/operations.md)",
    )
    serve.add_argument("--region", default=None, help="region in ARNs (default us-east-1)")
    serve.add_argument("--account-id", default=None, help="account id in ARNs (default 123456789012)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers", type=int, default=1, help="API processes listening on the port (default 1)"
    )
    serve.add_argument(
        "--no-workers", action="store_true", help="run no import worker here (API only; see openhi worker)"
    )
    serve.add_argument(
        "--import-threads", type=int, default=2, help="import jobs each process runs at a time (default 2)"
    )
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run import workers only (no API), sharing --index and --blobs")
    _backend_flags(worker)
    worker.add_argument("--threads", type=int, default=2, help="import jobs run at a time (default 2)")
    worker.add_argument("--log-level", default="info")
    worker.add_argument(
        "--webhooks",
        default=os.environ.get("OPENHI_WEBHOOKS") or None,
        metavar="FILE",
        help="webhooks the event feed is POSTed to: a JSON file (docs/operations.md)",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve this worker's Prometheus metrics at http://HOST:PORT/metrics (unauthenticated; off by default)",
    )
    worker.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address of --metrics-port (default 127.0.0.1; 0.0.0.0 for a scraper on another machine)",
    )
    worker.set_defaults(func=_worker)

    migrate = sub.add_parser("migrate", help="create or upgrade the index schema, then exit")
    migrate.add_argument("--data-dir", default="./openhi-data")
    migrate.add_argument(
        "--index", default=None, help="index URL (default sqlite:///<data-dir>/index.sqlite3)"
    )
    migrate.set_defaults(func=_migrate)

    try:
        from openhi import cli_tools
    except ModuleNotFoundError:
        pass
    else:
        cli_tools.register(sub, only)
    return parser


def _client_command(argv: Sequence[str]) -> str | None:
    """The client command ``argv`` runs (``openhi export …``), if it runs one: only it is loaded then.
    (``openhi``'s own options, ``--help`` and ``--version``, come before a command: then it is None.)"""
    try:
        from openhi.cli_tools import COMMANDS
    except ModuleNotFoundError:
        return None
    return argv[0] if argv and argv[0] in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_client_command(argv)).parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
