"""C-STORE throughput: dcmtk's storescu of a CT series into openhi's DICOM port and into Orthanc's.

Usage: .venv/bin/python bench/dimse_store.py [--n 300] [--size 512] [--no-orthanc]
The series is bench/import.py's (``make_files``), written to a folder and sent by one ``storescu``
run (one association), as a modality would. Prints a table and writes bench/results/dimse-store-<stamp>.json.

(a) is bench/import.py's limit (``_common.codec_limits``: HTJ2K lossless encode + the verification
decode, one process per core, same frames, same run). (b) is openhi: instances/s from storescu's start
to its exit (association, every C-STORE, the release that commits the batch), the whole series then
in one image set version. (c) is Orthanc (Debian package) storing the same files as they are, with
its DICOM server on a loopback port. Goal: (b) >= 0.8 x (a).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import codec_limits, process_tree_cpu, table, write_result

GOAL = 0.8


def storescu(aet: str, port: int, folder: Path, nodelay: bool) -> float:
    """Seconds for one storescu run of every file in ``folder`` (raises when it fails)."""
    env = {**os.environ, "TCP_NODELAY": "1" if nodelay else "0"}
    files = sorted(str(p) for p in folder.iterdir())
    t0 = time.perf_counter()
    done = subprocess.run(
        ["storescu", "-aec", aet, "127.0.0.1", str(port), *files], capture_output=True, env=env
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr.decode(errors='replace')[-1000:]}")
    return elapsed


def into_openhi(folder: Path, n: int, work: Path, nodelay: bool) -> dict[str, Any]:
    from contract.helpers import active_datastore
    from openhi.testing import RunningServer
    from openhi.testing.server import free_port

    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    with RunningServer(work / "data", extra_args=["--dicom-port", str(port)]) as server:
        client = server.client()
        ds_id = active_datastore(client, "BENCH")
        assert server.proc is not None
        pid = server.proc.pid
        cpu0 = process_tree_cpu(pid)
        elapsed = storescu("BENCH", port, folder, nodelay)
        cpu1 = process_tree_cpu(pid)
        sets = client.search_image_sets(datastoreId=ds_id)["imageSetsMetadataSummaries"]
        versions = [
            len(
                client.list_image_set_versions(datastoreId=ds_id, imageSetId=s["imageSetId"])[
                    "imageSetPropertiesList"
                ]
            )
            for s in sets
        ]
    return {
        "instances_per_s": n / elapsed,
        "seconds": elapsed,
        "image_sets": len(sets),
        "versions": versions,
        "cpu_ms_per_instance": sum(v - cpu0.get(k, 0.0) for k, v in cpu1.items()) * 1e3 / n,
    }


def into_orthanc(folder: Path, n: int, work: Path, nodelay: bool) -> dict[str, Any]:
    from peers_systems import Orthanc

    from openhi.testing.server import free_port

    class DicomOrthanc(Orthanc):
        """bench/peers_systems.py's Orthanc with its DICOM server on (loopback, any AE may store)."""

        dicom_port = free_port()

        def config(self) -> dict[str, Any]:
            config = super().config()
            config.update(
                {
                    "DicomServerEnabled": True,
                    "DicomPort": self.dicom_port,
                    "DicomAet": "ORTHANC",
                    "DicomCheckCalledAet": False,
                    "DicomAlwaysAllowStore": True,
                    "DicomTlsEnabled": False,
                }
            )
            return config

    orthanc = DicomOrthanc(work / "orthanc").start()
    try:
        elapsed = storescu("ORTHANC", orthanc.dicom_port, folder, nodelay)
        stored = len(orthanc.get_json("/instances"))
    finally:
        orthanc.stop()
    return {"instances_per_s": n / elapsed, "seconds": elapsed, "stored": stored}


def into_null_scp(folder: Path, n: int, nodelay: bool) -> dict[str, Any]:
    """storescu into a pynetdicom SCP that answers success without storing: the protocol's ceiling here."""
    from pynetdicom import AllStoragePresentationContexts, evt

    from openhi.dimse.ae import OpenhiAE, OpenhiServer
    from openhi.testing.server import free_port

    ae = OpenhiAE(ae_title="NULL")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    handlers = [(evt.EVT_C_STORE, lambda event: (event.encoded_dataset(), 0)[1])]
    server = ae.make_server(
        ("127.0.0.1", port), evt_handlers=handlers, server_class=OpenhiServer, gate=lambda *_: None
    )
    import threading

    ae._servers.append(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        elapsed = storescu("NULL", port, folder, nodelay)
    finally:
        server.shutdown()
    return {"instances_per_s": n / elapsed, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--nagle", action="store_true", help="storescu with Nagle on (TCP_NODELAY=0)")
    args = parser.parse_args()
    make_files = importlib.import_module("import").make_files
    nodelay = not args.nagle
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        folder.mkdir()
        files = make_files(args.n, args.size)
        for name, data in files.items():
            (folder / Path(name).name).write_bytes(data)
        limit = codec_limits(list(files.values()))
        del files
        ceiling = into_null_scp(folder, args.n, nodelay)
        openhi = into_openhi(folder, args.n, Path(tmp) / "openhi", nodelay)
        orthanc = None if args.no_orthanc else into_orthanc(folder, args.n, Path(tmp), nodelay)
    both = limit["encode_decode_instances_per_s"]
    ratio = openhi["instances_per_s"] / both
    rows = [
        {
            "measure": f"(a) HTJ2K encode + verification decode, {int(limit['cores'])} cores: the limit",
            "value": both,
        },
        {
            "measure": "(b) openhi C-STORE (storescu, one association), instances/s",
            "value": openhi["instances_per_s"],
        },
        {"measure": f"ratio (b)/(a) (goal >= {GOAL:g})", "value": ratio},
        {
            "measure": "openhi image sets / versions of the series",
            "value": f"{openhi['image_sets']} / {openhi['versions']}",
        },
    ]
    rows.append(
        {
            "measure": "(d) storescu into a do-nothing SCP (protocol ceiling), instances/s",
            "value": ceiling["instances_per_s"],
        }
    )
    rows.append({"measure": "ratio (b)/(d)", "value": openhi["instances_per_s"] / ceiling["instances_per_s"]})
    if orthanc is not None:
        rows.append(
            {
                "measure": "(c) Orthanc C-STORE (stored as-is), instances/s",
                "value": orthanc["instances_per_s"],
            }
        )
    print(table(rows))
    print(f"goal (b) >= {GOAL:g} x (a): {'met' if ratio >= GOAL else 'NOT met'}")
    path = write_result(
        "dimse-store",
        {
            "n": args.n,
            "size": args.size,
            "storescu_tcp_nodelay": nodelay,
            "goal": f"C-STORE >= {GOAL:g} x (HTJ2K encode + verification decode, all cores)",
            "codec_limit_encode_decode": both,
            "codec_run": limit,
            "openhi": openhi,
            "orthanc": orthanc,
            "null_scp": ceiling,
            "ratio_encode_decode": ratio,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
