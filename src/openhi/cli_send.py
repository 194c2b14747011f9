"""``openhi send``: push an image set, a study or a series from a server to a DICOM peer (C-STORE).

The instances are read over DICOMweb (QIDO-RS for the list, WADO-RS for each instance as Part 10 in
explicit VR little endian), so it works against any deployment without access to its storage.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterator
from typing import Any

from openhi.cli_client import FAILED, USAGE, CommandError, Connection, api_error, clean_exit, resolve_endpoint

ACCEPT_QUERY = "includefield=00080016"


def _instances(
    conn: Connection, ds: str, study: str, series: str | None, image_set: str | None
) -> list[dict[str, Any]]:
    """QIDO-RS instances of the study (or series) as (study, series, sop, class) dictionaries."""
    path = f"/datastore/{ds}/studies/{study}" + (f"/series/{series}" if series else "") + "/instances"
    query = ACCEPT_QUERY + (f"&imageSetId={image_set}" if image_set else "")
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        reply = conn.request("GET", path, query=f"{query}&limit=1000&offset={offset}")
        if reply.status == 204:
            break
        if reply.status != 200:
            raise CommandError(f"QIDO-RS {path}: HTTP {reply.status} {reply.error_message()}")
        page = reply.json()
        for item in page:

            def first(tag: str, item: dict[str, Any] = item) -> str:
                return str(item.get(tag, {}).get("Value", [""])[0])

            found.append(
                {
                    "study": first("0020000D") or study,
                    "series": first("0020000E"),
                    "sop": first("00080018"),
                    "class": first("00080016"),
                }
            )
        if len(page) < 1000:
            break
        offset += len(page)
    return found


def _targets(conn: Connection, args: argparse.Namespace) -> list[tuple[str, str | None, str | None]]:
    """(study, series or None, image set or None) to send."""
    if args.image_set:
        try:
            blob = conn.api().get_image_set_metadata(datastoreId=args.datastore, imageSetId=args.image_set)
        except Exception as exc:
            raise api_error(exc, conn.endpoint) from exc
        doc = json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
        study = doc["Study"]["DICOM"]["StudyInstanceUID"]
        return [(study, series, args.image_set) for series in doc["Study"]["Series"]]
    if args.series and not args.study:
        raise CommandError("--series needs --study")
    return [(args.study, args.series, None)]


def _fetch(
    conn: Connection, ds: str, items: list[dict[str, Any]], image_set: dict[str, str | None]
) -> Iterator[bytes]:
    for item in items:
        path = f"/datastore/{ds}/studies/{item['study']}/series/{item['series']}/instances/{item['sop']}"
        set_id = image_set.get(item["series"])
        reply = conn.request("GET", path, query=f"imageSetId={set_id}" if set_id else "")
        if reply.status != 200:
            raise CommandError(f"WADO-RS {path}: HTTP {reply.status} {reply.error_message()}")
        yield reply.body


def run_send(args: argparse.Namespace) -> int:
    from openhi.dimse.send import Peer, SendError, send

    try:
        peer = Peer.parse(args.to)
    except ValueError as exc:
        raise CommandError(f"--to {exc}") from None
    if not (args.image_set or args.study):
        raise CommandError("give --image-set ID or --study UID (and optionally --series UID)")
    conn = Connection.open(resolve_endpoint(args.endpoint))
    items: list[dict[str, Any]] = []
    sets: dict[str, str | None] = {}
    for study, series, image_set in _targets(conn, args):
        found = _instances(conn, args.datastore, study, series, image_set)
        items.extend(found)
        for item in found:
            sets[item["series"]] = image_set
    if not items:
        raise CommandError("no instances found to send", FAILED)
    classes = {(item["class"], "") for item in items if item["class"]}
    try:
        result = send(peer, args.calling_aet, sorted(classes), _fetch(conn, args.datastore, items, sets))
    except SendError as exc:
        raise CommandError(str(exc), FAILED) from None
    for uid, status in result.statuses.items():
        if status != 0:
            print(f"  {uid}: status 0x{status:04X}", file=sys.stderr)
    for uid, error in result.errors.items():
        print(f"  {uid}: {error}", file=sys.stderr)
    print(f"sent {result.sent} of {len(items)} instances to {peer.aet}; {result.failed} failed")
    return 0 if result.failed == 0 else FAILED


def add_parser(sub: Any) -> None:
    """Add ``send`` to the ``openhi`` subcommands."""
    cmd = sub.add_parser(
        "send",
        help="push an image set, study or series to a DICOM peer (C-STORE)",
        description="Read the instances over DICOMweb from the server and C-STORE them to a DICOM peer on "
        f"one association. Exit status: 0 when every instance was stored, {FAILED} when any failed, "
        f"{USAGE} for usage or connection errors.",
    )
    cmd.add_argument("--datastore", metavar="ID", required=True, help="the datastore to read from")
    what = cmd.add_mutually_exclusive_group()
    what.add_argument("--image-set", metavar="ID", default=None, help="send every instance of this image set")
    what.add_argument("--study", metavar="UID", default=None, help="send this study (its primary image sets)")
    cmd.add_argument("--series", metavar="UID", default=None, help="with --study: only this series")
    cmd.add_argument(
        "--to", metavar="AET=HOST:PORT", required=True, help="the peer (its AE title, host and port)"
    )
    cmd.add_argument("--calling-aet", metavar="AET", default="OPENHI", help="our AE title (default OPENHI)")
    cmd.add_argument(
        "--endpoint",
        metavar="URL",
        default=None,
        help="server URL (default $AWS_ENDPOINT_URL_MEDICAL_IMAGING, else http://127.0.0.1:8080)",
    )
    cmd.set_defaults(func=clean_exit("send", run_send))
