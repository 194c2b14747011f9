"""The ``openhi`` command: serve, import, diff and --version."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from openhi import __version__
from openhi.core.settings import settings_from_env


def _serve(args: argparse.Namespace) -> int:
    from openhi.server import StartupError, load_credentials, serve
    from openhi.services import ServerConfig
    from openhi.storage.registry import ConfigurationError

    settings = settings_from_env(region=args.region, account_id=args.account_id)
    try:
        config = ServerConfig(
            data_dir=Path(args.data_dir),
            index_url=args.index,
            blobs_url=args.blobs,
            s3_endpoint_url=args.s3_endpoint_url,
            credentials=load_credentials(args.credentials),
            settings=settings,
        )
        serve(config, args.host, args.port, log_level=args.log_level)
    except (StartupError, ConfigurationError) as exc:
        print(f"openhi: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openhi", description=__doc__)
    parser.add_argument("--version", action="version", version=f"openhi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HealthImaging-compatible server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--data-dir", default="./openhi-data")
    serve.add_argument("--index", default=None, help="index URL (default sqlite:///<data-dir>/index.sqlite3)")
    serve.add_argument("--blobs", default=None, help="blob store URL (default file://<data-dir>/blobs)")
    serve.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get("OPENHI_S3_ENDPOINT_URL"),
        help="S3 endpoint for import inputs/outputs (instead of <data-dir>/buckets) and for s3:// --blobs",
    )
    serve.add_argument(
        "--credentials", default=None, help="JSON {access_key_id: secret} or AWS credentials file"
    )
    serve.add_argument("--region", default=None, help="region in ARNs (default us-east-1)")
    serve.add_argument("--account-id", default=None, help="account id in ARNs (default 123456789012)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)

    try:
        from openhi import cli_tools
    except ModuleNotFoundError:
        pass
    else:
        cli_tools.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
