"""``openhi viewer install|status``: the OHIF viewer (npm ``@ohif/app``, pinned) under ``<data-dir>/viewer``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from openhi.console.viewer_install import (
    INTEGRITY,
    PACKAGE,
    PREFIX,
    VERSION,
    InstallError,
    install,
    installed,
)


def _install(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    tarball = Path(args.tarball) if args.tarball else None
    if installed(data_dir) and not args.force and tarball is None:
        found = installed(data_dir) or {}
        if found.get("version") == VERSION and found.get("prefix") == PREFIX:
            print(f"{PACKAGE}@{VERSION} is already installed in {data_dir / 'viewer'} (--force reinstalls)")
            return 0
    print(f"fetching {PACKAGE}@{VERSION} ({INTEGRITY[:20]}…)" if tarball is None else f"using {tarball}")
    try:
        target = install(data_dir, tarball, npm=args.npm)
    except InstallError as exc:
        print(f"openhi viewer install: {exc}", file=sys.stderr)
        return 2
    print(f"installed in {target}; openhi serve --data-dir {data_dir} serves it at {PREFIX}")
    return 0


def _status(args: argparse.Namespace) -> int:
    found = installed(Path(args.data_dir))
    if found is None:
        print(
            f"not installed in {Path(args.data_dir) / 'viewer'}: openhi viewer install --data-dir {args.data_dir}"
        )
        return 1
    print(f"{found.get('package')}@{found.get('version')} installed, served at {found.get('prefix')}")
    return 0


def _run(args: argparse.Namespace) -> int:
    return _install(args) if args.action == "install" else _status(args)


def add_parser(sub: Any) -> None:
    """Add ``viewer ACTION`` (``install``, ``status``) to the ``openhi`` subcommands."""
    viewer = sub.add_parser(
        "viewer",
        help="install the OHIF viewer the server serves at /ohif/",
        description=f"The OHIF viewer ({PACKAGE}@{VERSION} from the npm registry, integrity-checked), "
        "unpacked into <data-dir>/viewer. Exit status: 0 on success, 1 when status finds none, 2 on errors.",
    )
    viewer.add_argument(
        "action",
        metavar="ACTION",
        choices=("install", "status"),
        help=f"install: fetch {PACKAGE}@{VERSION} with npm and unpack it; status: whether it is installed",
    )
    viewer.add_argument("--data-dir", default="./openhi-data", help="the server's data dir")
    viewer.add_argument(
        "--tarball", metavar="FILE", default=None, help="install an already fetched package (.tgz)"
    )
    viewer.add_argument("--npm", default="npm", help="the npm command (default npm)")
    viewer.add_argument("--force", action="store_true", help="reinstall over an installed viewer")
    viewer.set_defaults(func=_run)
