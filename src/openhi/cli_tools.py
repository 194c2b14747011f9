"""The client commands of ``openhi``: ``import`` (see cli_import) and ``diff``, registered on the parser."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any
from urllib.parse import urlencode

from openhi.cli_client import CommandError, Connection, clean_exit, resolve_endpoint

#: client command -> the module whose ``add_parser(sub)`` defines it (loaded only when needed)
COMMANDS = {
    "import": "openhi.cli_import",
    "export": "openhi.cli_export",
    "send": "openhi.cli_send",
    "viewer": "openhi.cli_viewer",
}
ENDPOINT_HELP = "server URL (default $AWS_ENDPOINT_URL_MEDICAL_IMAGING, else http://127.0.0.1:8080)"


def _diff(args: argparse.Namespace) -> int:
    conn = Connection.open(resolve_endpoint(args.endpoint))
    path = f"/openhi/datastore/{args.datastore}/imageSet/{args.image_set}/diff"
    reply = conn.request("GET", path, query=urlencode({"from": args.from_version, "to": args.to_version}))
    if reply.status != 200:
        raise CommandError(reply.error_message())
    changes = reply.json()
    if args.json:
        print(json.dumps(changes, indent=2))
        return 0
    for change in changes["changes"]:
        old = json.dumps(change.get("from")) if "from" in change else ""
        new = json.dumps(change.get("to")) if "to" in change else ""
        print(f"{change['change']:<8} {change['level']:<9} {change['path']}  {old} -> {new}".rstrip(" ->"))
    if not changes["changes"]:
        print("no differences")
    return 0


def register(sub: Any, only: str | None = None) -> None:
    """Add ``import``, ``export``, ``send``, ``viewer`` and ``diff`` to the ``openhi`` subcommands; with
    ``only`` (one of :data:`COMMANDS`), that command alone: a client command starts without loading the
    others' modules."""
    for name, module in COMMANDS.items():
        if only is None or only == name:
            importlib.import_module(module).add_parser(sub)
    if only is not None:
        return

    diff = sub.add_parser(
        "diff",
        help="attributes added, removed or changed between two image set versions",
        description="Print the attribute changes between two versions of an image set. Exit status: 0 on "
        "success, 2 for usage or connection errors or an unknown datastore, image set or version.",
    )
    diff.add_argument("--datastore", metavar="ID", required=True, help="datastore id")
    diff.add_argument("--image-set", metavar="ID", required=True, help="image set id")
    diff.add_argument(
        "--from", dest="from_version", metavar="VERSION", required=True, help="the older version id"
    )
    diff.add_argument(
        "--to", dest="to_version", metavar="VERSION", required=True, help="the newer version id"
    )
    diff.add_argument("--endpoint", metavar="URL", default=None, help=ENDPOINT_HELP)
    diff.add_argument("--json", action="store_true", help="print the changes as JSON")
    diff.set_defaults(func=clean_exit("diff", _diff))
