"""Peer benchmark: openhi vs Orthanc (+ DICOMweb) and nginx — ingest, frames, series metadata, search."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import gzip
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import loadgen
import peers_dicomweb
from _common import ROOT, codec_limits, table, write_result
from loadgen import Request
from peers_systems import J2K_LOSSLESS, Nginx, Orthanc, assert_loopback_only, pin_tree
from peers_transcoding import orthanc_transcoding_ingest

USAGE = """Peer benchmark: openhi vs Orthanc (+ DICOMweb) and nginx (see docs/benchmarks.md).

Needs the Debian packages orthanc, orthanc-dicomweb, orthanc-gdcm (the JPEG 2000 ingest-transcoding peer;
without it that row reports the failure), nginx, a C compiler (wrk optional). Prints tables,
writes bench/results/peers-<stamp>.json, regenerates docs/benchmarks.md and the charts in docs/benchmarks/.
"""
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
CONNECTIONS = (8, 32)
LATENCY_CONNECTIONS = (1, 8)
SEED = 20240101
REGION = "us-east-1"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


# ---------------------------------------------------------------- dataset


def make_dataset(work: Path, instances: int, studies: int) -> dict[str, Any]:
    """The CT series (``instances`` 512 × 512 int16 slices) and ``studies`` one-slice 64 × 64 studies on disk."""
    import pydicom

    from dicom_factory import make_ct_series

    ct_dir, small_dir = work / "ct", work / "small"
    ct_dir.mkdir(parents=True)
    small_dir.mkdir(parents=True)
    ct: list[dict[str, str]] = []
    for i, data in enumerate(make_ct_series(instances, rows=512, cols=512, seed=SEED, patient_id="CT0001")):
        path = ct_dir / f"{i:05d}.dcm"
        path.write_bytes(data)
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        ct.append(
            {
                "path": str(path),
                "study": ds.StudyInstanceUID,
                "series": ds.SeriesInstanceUID,
                "sop": ds.SOPInstanceUID,
            }
        )
    patients: list[str] = []
    for i in range(studies):
        patient = f"P{i // 20:05d}"  # 20 studies per patient: a PatientID search returns 20 studies
        if not patients or patients[-1] != patient:
            patients.append(patient)
        (data,) = make_ct_series(1, rows=64, cols=64, seed=SEED + 1 + i, patient_id=patient)
        (small_dir / f"{i:06d}.dcm").write_bytes(data)
    return {"ct": ct, "ct_dir": ct_dir, "small_dir": small_dir, "patients": patients}


# ---------------------------------------------------------------- openhi requests


def sign(method: str, url: str, body: bytes) -> dict[str, str]:
    """SigV4 headers for one request (local mode accepts any well-formed signature; valid for 15 minutes)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("openhi-bench", "openhi-bench-secret"), "medical-imaging", REGION).add_auth(req)
    return dict(req.headers.items())


def signed(reqs: Sequence[tuple[str, bytes]]) -> list[Request]:
    """POST requests (url, JSON body) with fresh signatures: call right before each phase."""
    return [Request("POST", url, sign("POST", url, body), body) for url, body in reqs]


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def openhi_import(server: Any, client: Any, ds_id: str, folder: Path, timeout: float) -> dict[str, Any]:
    """Stage ``folder`` in the embedded bucket, run one import job through the API, time it (staging excluded)."""
    from contract.helpers import wait_for
    from contract.imaging import ROLE, read_reports, stage

    files = {p.name: p.read_bytes() for p in sorted(folder.glob("*.dcm"))}
    uri = stage(server, files)
    del files
    t0 = time.perf_counter()
    job = client.start_dicom_import_job(
        datastoreId=ds_id,
        dataAccessRoleArn=ROLE,
        inputS3Uri=uri,
        outputS3Uri=f"s3://bench-out/{folder.name}/",
    )
    props = wait_for(
        lambda: client.get_dicom_import_job(datastoreId=ds_id, jobId=job["jobId"])["jobProperties"],
        lambda p: p["jobStatus"] in ("COMPLETED", "FAILED"),
        timeout=timeout,
        step=0.05,
    )
    elapsed = time.perf_counter() - t0
    if props["jobStatus"] != "COMPLETED":
        raise RuntimeError(f"openhi import of {folder} failed: {props}")
    reports = read_reports(server, props["outputS3Uri"])
    count = len(list(folder.glob("*.dcm")))
    if reports["failure"]:
        raise RuntimeError(f"openhi import of {folder}: {len(reports['failure'])} failures")
    return {
        "instances": count,
        "seconds": elapsed,
        "instances_per_s": count / elapsed,
        "image_sets": sorted({s["importResponse"]["imageSetId"] for s in reports["success"]}),
    }


# ---------------------------------------------------------------- phases


class Bench:
    """Holds the running systems and the measured results of one run."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.seconds: float = args.seconds
        self.warmup = min(2.0, args.seconds / 3)
        cores = sorted(os.sched_getaffinity(0))
        self.all_cores = set(cores)
        self.pin = args.pin and len(cores) >= 2
        self.loadgen_cores = {cores[-1]} if self.pin else set(cores)
        self.server_cores = set(cores[:-1]) if self.pin else set(cores)
        self.result: dict[str, Any] = {}
        self.server_pids: list[int] = []

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def load(self, reqs: Sequence[Request], connections: int) -> dict[str, Any]:
        """One load phase; first checks that a few of the requests succeed, so no phase measures errors."""
        check = asyncio.run(loadgen.run_each(reqs[:3], 1, timeout=60))
        if check.errors:
            raise RuntimeError(
                f"pre-flight of {reqs[0].method} {reqs[0].url} failed: statuses {check.statuses}"
            )
        result = loadgen.run_sync(reqs, connections, self.seconds, self.warmup)
        return result.as_dict()

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Servers on all cores but one, the generator on the last one (when there are ≥ 2 cores)."""
        if not self.pin:
            yield
            return
        for pid in self.server_pids:
            pin_tree(pid, self.server_cores)
        previous = loadgen.pin_to(self.loadgen_cores)
        try:
            yield
        finally:
            os.sched_setaffinity(0, previous)
            for pid in self.server_pids:
                pin_tree(pid, self.all_cores)

    def wrk(self, url: str, connections: int) -> dict[str, Any] | None:
        """wrk (C, one thread, pinned like the generator) on one URL: what the hardware allows."""
        exe = shutil.which("wrk")
        if exe is None:
            return None
        cores = self.loadgen_cores
        out = subprocess.run(
            [exe, "-t1", f"-c{connections}", f"-d{max(1, round(self.seconds))}s", "--latency", url],
            capture_output=True,
            text=True,
            timeout=self.seconds + 60,
            preexec_fn=lambda: os.sched_setaffinity(0, cores),
            check=False,
        )
        match = re.search(r"Requests/sec:\s*([\d.]+)", out.stdout)
        if match is None:
            return {"error": out.stdout[-500:] + out.stderr[-500:]}
        return {"connections": connections, "requests_per_s": float(match.group(1))}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from openhi.testing import RunningServer

    b = Bench(args, work)
    b.log(f"dataset: {args.instances} CT instances 512x512, {args.studies} small studies")
    data = make_dataset(work / "dicom", args.instances, args.studies)
    ct = data["ct"]
    study, series = ct[0]["study"], ct[0]["series"]
    cores = len(b.all_cores)

    b.log(f"codec limit: HTJ2K encode + verification decode of the {len(ct)} frames on {cores} processes")
    codec = codec_limits([c["path"] for c in ct], cores)

    server = RunningServer(work / "openhi-data")
    atexit.register(server.stop)
    orthanc = Orthanc(work / "orthanc")
    nginx: Nginx | None = None
    try:
        server.start(timeout=60)
        assert server.proc is not None
        assert_loopback_only(server.proc.pid, "openhi")
        orthanc.start()
        b.server_pids = [server.proc.pid, *([orthanc.proc.pid] if orthanc.proc else [])]
        client = server.client()
        from contract.helpers import active_datastore

        ds_id = active_datastore(client, "bench")
        versions: dict[str, Any] = {**orthanc.version()}

        # ---- ingest
        ingest: dict[str, Any] = {
            "codec_limit_encode_decode_instances_per_s": codec["encode_decode_instances_per_s"],
            "codec_limit_instances_per_s": codec["encode_instances_per_s"],  # encode alone
            "codec": codec,
            "cores": cores,
        }
        uploads = [
            Request(
                "POST",
                f"{orthanc.endpoint}/instances",
                {"Content-Type": "application/dicom"},
                Path(c["path"]).read_bytes(),
            )
            for c in ct
        ]
        for conc in (1, 4):
            b.log(f"ingest: Orthanc POST /instances, {conc} client(s)")
            up = asyncio.run(loadgen.run_each(uploads, conc, timeout=args.timeout))
            stats = _orthanc_json(orthanc, "/statistics")
            if up.errors or stats["CountInstances"] != len(ct):
                raise RuntimeError(
                    f"Orthanc upload: {up.errors} errors, {stats['CountInstances']} instances stored"
                )
            ingest[f"orthanc_c{conc}"] = {
                "instances_per_s": len(ct) / up.seconds,
                "seconds": up.seconds,
                "p50_ms": up.p50_ms,
                "p99_ms": up.p99_ms,
            }
            if conc == 1:
                orthanc.delete_study(study)
        b.log("ingest: Orthanc with JPEG 2000 lossless ingest transcoding (GDCM plugin)")
        ingest["orthanc_j2k"] = orthanc_transcoding_ingest(work / "orthanc-j2k", uploads, study, args.timeout)
        versions.update(
            {k: v for k, v in ingest["orthanc_j2k"].pop("versions", {}).items() if k not in versions}
        )
        del uploads
        b.log("ingest: openhi import job through the API (HTJ2K transcoding)")
        imported = openhi_import(server, client, ds_id, data["ct_dir"], args.timeout)
        (image_set,) = imported.pop("image_sets")
        ingest["openhi"] = imported
        ingest["ratios"] = {
            "encode_decode_limit": imported["instances_per_s"] / codec["encode_decode_instances_per_s"],
            "encode_alone": imported["instances_per_s"] / codec["encode_instances_per_s"],
            "orthanc_j2k": _div(
                imported["instances_per_s"], ingest["orthanc_j2k"].get("instances_per_s", 0.0)
            ),
        }
        b.result["ingest"] = ingest

        b.log(f"load the {args.studies} small studies into both (untimed for targets)")
        small_files = sorted(data["small_dir"].glob("*.dcm"))
        small_up = asyncio.run(
            loadgen.run_each(
                [
                    Request(
                        "POST",
                        f"{orthanc.endpoint}/instances",
                        {"Content-Type": "application/dicom"},
                        p.read_bytes(),
                    )
                    for p in small_files
                ],
                4,
                timeout=args.timeout,
            )
        )
        if small_up.errors:
            raise RuntimeError(f"Orthanc small-study upload: {small_up.errors} errors")
        small_imported = openhi_import(server, client, ds_id, data["small_dir"], args.timeout)
        ingest["small_studies"] = {
            "orthanc_c4_instances_per_s": len(small_files) / small_up.seconds,
            "openhi_instances_per_s": small_imported["instances_per_s"],
        }

        # ---- frames: the same instances in all three systems
        doc = json.loads(
            gzip.decompress(
                client.get_image_set_metadata(datastoreId=ds_id, imageSetId=image_set)[
                    "imageSetMetadataBlob"
                ].read()
            )
        )
        instances_doc = doc["Study"]["Series"][series]["Instances"]
        frame_ids = [instances_doc[c["sop"]]["ImageFrames"][0]["ID"] for c in ct]
        www = work / "www" / "frames"
        www.mkdir(parents=True)
        for i, frame_id in enumerate(frame_ids):
            blob = client.get_image_frame(
                datastoreId=ds_id, imageSetId=image_set, imageFrameInformation={"imageFrameId": frame_id}
            )
            (www / f"{i:05d}.jph").write_bytes(blob["imageFrameBlob"].read())
        nginx = Nginx(work / "nginx", work / "www", workers=max(1, len(b.server_cores)))
        atexit.register(nginx.stop)
        nginx.start()
        assert nginx.proc is not None
        b.server_pids.append(nginx.proc.pid)
        versions["nginx"] = nginx.version()
        versions["openhi"] = _openhi_version()
        b.result["versions"] = versions

        base = f"{server.endpoint}/datastore/{ds_id}/imageSet/{image_set}"
        openhi_frames = [(f"{base}/getImageFrame", _json({"imageFrameId": f})) for f in frame_ids]
        orthanc_frames = [
            Request(
                "GET",
                f"{orthanc.endpoint}/dicom-web/studies/{study}/series/{series}/instances/{c['sop']}/frames/1",
                {"Accept": FRAME_ACCEPT},
            )
            for c in ct
        ]
        nginx_frames = [Request("GET", f"{nginx.endpoint}/frames/{i:05d}.jph") for i in range(len(ct))]
        frames: dict[str, Any] = {"orthanc": {}, "openhi": {}, "nginx": {}}
        ceiling: dict[str, Any] = {}
        with b.pinned():
            for conc in CONNECTIONS:
                b.log(f"frames at {conc} connections")
                frames["orthanc"][str(conc)] = b.load(orthanc_frames, conc)
                frames["openhi"][str(conc)] = b.load(signed(openhi_frames), conc)
                frames["nginx"][str(conc)] = b.load(nginx_frames, conc)
                one = nginx_frames[:1]
                ceiling[str(conc)] = {"loadgen": b.load(one, conc), "wrk": b.wrk(one[0].url, conc)}
            b.result["frames"] = frames
            b.result["generator_ceiling"] = ceiling

            # ---- series metadata
            metadata: dict[str, Any] = {"orthanc": {}, "openhi": {}}
            orthanc_meta = [
                Request(
                    "GET",
                    f"{orthanc.endpoint}/dicom-web/studies/{study}/series/{series}/metadata",
                    {"Accept": "application/dicom+json"},
                )
            ]
            openhi_meta = [(f"{base}/getImageSetMetadata", b"")]
            for conc in LATENCY_CONNECTIONS:
                b.log(f"series metadata at {conc} connection(s)")
                metadata["orthanc"][str(conc)] = b.load(orthanc_meta, conc)
                metadata["openhi"][str(conc)] = b.load(signed(openhi_meta), conc)
            b.result["metadata"] = metadata

            # ---- search
            patients: list[str] = data["patients"]
            orthanc_search = [
                Request(
                    "GET",
                    f"{orthanc.endpoint}/dicom-web/studies?PatientID={p}",
                    {"Accept": "application/dicom+json"},
                )
                for p in patients
            ]
            openhi_search = [
                (
                    f"{server.endpoint}/datastore/{ds_id}/searchImageSets",
                    # the body is the SearchCriteria structure itself (the model's payload member)
                    _json({"filters": [{"values": [{"DICOMPatientId": p}], "operator": "EQUAL"}]}),
                )
                for p in patients
            ]
            search: dict[str, Any] = {
                "orthanc": {},
                "openhi": {},
                "studies": args.studies,
                "patients": len(patients),
            }
            search["hits_per_query"] = {
                "orthanc": len(_orthanc_json(orthanc, f"/dicom-web/studies?PatientID={patients[0]}")),
                "openhi": len(
                    client.search_image_sets(
                        datastoreId=ds_id,
                        searchCriteria={
                            "filters": [{"values": [{"DICOMPatientId": patients[0]}], "operator": "EQUAL"}]
                        },
                    )["imageSetsMetadataSummaries"]
                ),
            }
            for conc in LATENCY_CONNECTIONS:
                b.log(f"search at {conc} connection(s)")
                search["orthanc"][str(conc)] = b.load(orthanc_search, conc)
                search["openhi"][str(conc)] = b.load(signed(openhi_search), conc)
            b.result["search"] = search

        b.log("DICOMweb: openhi's WADO-RS, QIDO-RS and STOW-RS (Orthanc's STOW-RS too)")
        b.result["dicomweb"] = peers_dicomweb.measure(
            b,
            server=server,
            client=client,
            orthanc=orthanc,
            ds_id=ds_id,
            ct=ct,
            patients=data["patients"],
            active_datastore=active_datastore,
            connections=CONNECTIONS,
            latency_connections=LATENCY_CONNECTIONS,
        )

        b.result["frame_bytes"] = {
            "openhi_mean": sum(p.stat().st_size for p in www.iterdir()) / len(ct),
            "orthanc_mean": frames["orthanc"][str(CONNECTIONS[0])]["body_bytes"]
            / max(1, frames["orthanc"][str(CONNECTIONS[0])]["requests"]),
        }
    finally:
        if nginx is not None:
            nginx.stop()
        orthanc.stop()
        server.stop()
    b.result["params"] = {
        "instances": args.instances,
        "studies": args.studies,
        "seconds": args.seconds,
        "warmup_seconds": b.warmup,
        "quick": args.quick,
        "pinned": b.pin,
        "loadgen_cores": sorted(b.loadgen_cores),
        "server_cores": sorted(b.server_cores),
    }
    b.result["targets"] = targets(b.result)
    return b.result


def _orthanc_json(orthanc: Orthanc, path: str) -> Any:
    import urllib.request

    req = urllib.request.Request(f"{orthanc.endpoint}{path}", headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _openhi_version() -> str:
    from openhi import __version__

    return str(__version__)


# ---------------------------------------------------------------- targets and report


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal: the measured ratio (or value), the goal, and whether it is met."""
    ing = r["ingest"]
    orthanc_best = max(ing["orthanc_c1"]["instances_per_s"], ing["orthanc_c4"]["instances_per_s"])
    openhi_ips = ing["openhi"]["instances_per_s"]
    j2k = ing.get("orthanc_j2k", {}).get("instances_per_s", 0.0)
    rows: list[dict[str, Any]] = [
        _goal("ingest vs Orthanc (best of 1/4 clients)", openhi_ips / orthanc_best, ">=", 1.0, "x"),
        _goal(
            "ingest vs HTJ2K encode + verification decode limit",
            _div(openhi_ips, ing["codec_limit_encode_decode_instances_per_s"]),
            ">=",
            0.8,
            "x",
        ),
        _goal("ingest vs Orthanc with JPEG 2000 ingest transcoding", _div(openhi_ips, j2k), ">=", 3.0, "x"),
    ]
    for conc in CONNECTIONS:
        f = {k: r["frames"][k][str(conc)]["requests_per_s"] for k in ("openhi", "orthanc", "nginx")}
        rows.append(
            _goal(f"frames/s vs Orthanc, {conc} conns", _div(f["openhi"], f["orthanc"]), ">=", 2.0, "x")
        )
        rows.append(_goal(f"frames/s vs nginx, {conc} conns", _div(f["openhi"], f["nginx"]), ">=", 0.5, "x"))
    for conc in LATENCY_CONNECTIONS:
        m = r["metadata"]
        rows.append(
            _goal(
                f"series metadata p50 speed-up vs Orthanc, {conc} conn",
                _div(m["orthanc"][str(conc)]["p50_ms"], m["openhi"][str(conc)]["p50_ms"]),
                ">=",
                5.0,
                "x",
            )
        )
    for conc in LATENCY_CONNECTIONS:
        rows.append(
            _goal(f"search p99, {conc} conn", r["search"]["openhi"][str(conc)]["p99_ms"], "<=", 20.0, "ms")
        )
    return rows + peers_dicomweb.targets(r, _goal)


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _goal(name: str, value: float, op: str, goal: float, unit: str) -> dict[str, Any]:
    met = value >= goal if op == ">=" else value <= goal
    return {
        "goal": name,
        "measured": value,
        "target": f"{op} {goal:g} {unit}",
        "met": bool(met and not math.isnan(value)),
    }


def result_rows(r: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The tables of one result, as rows of plain values (shared by the console and the Markdown)."""
    ing = r["ingest"]
    ingest = [
        {
            "system": "Orthanc POST /instances, 1 client",
            "instances/s": ing["orthanc_c1"]["instances_per_s"],
            "note": "stored as sent",
        },
        {
            "system": "Orthanc POST /instances, 4 clients",
            "instances/s": ing["orthanc_c4"]["instances_per_s"],
            "note": "stored as sent",
        },
    ]
    j2k = ing.get("orthanc_j2k")
    label = "Orthanc + JPEG 2000 lossless ingest transcoding (GDCM)"
    crashes = (j2k or {}).get("crashes", [])
    for conc in (1, 4):
        run = (j2k or {}).get(f"c{conc}")
        if run is not None:
            stored = run.get("stored_syntaxes", {}).get(J2K_LOSSLESS, 0)
            ingest.append(
                {
                    "system": f"{label}, {conc} client{'s' if conc > 1 else ''}",
                    "instances/s": run["instances_per_s"],
                    "note": f"{stored} of {r['params']['instances']} stored as JPEG 2000 lossless"
                    + (
                        f"; Orthanc crashed (SIGSEGV) in {len(crashes)} of {j2k['starts']} starts"
                        if crashes
                        else ""
                    ),
                }
            )
    if j2k is not None and "error" in j2k:
        error = " ".join(j2k["error"].replace("|", "/").split())
        ingest.append({"system": label, "instances/s": float("nan"), "note": f"**failed**: {error[:300]}"})
    ingest.append(
        {
            "system": "openhi import job (HTJ2K transcode + verification decode)",
            "instances/s": ing["openhi"]["instances_per_s"],
            "note": "",
        }
    )
    if "codec_limit_encode_decode_instances_per_s" in ing:
        ingest.append(
            {
                "system": f"HTJ2K encode + verification decode, {ing['cores']} cores (limit)",
                "instances/s": ing["codec_limit_encode_decode_instances_per_s"],
                "note": "the two codec calls of an import, nothing else",
            }
        )
    ingest.append(
        {
            "system": f"HTJ2K encode alone, {ing['cores']} cores",
            "instances/s": ing["codec_limit_instances_per_s"],
            "note": "for reference (the limit before)",
        }
    )
    frames = []
    for conc in CONNECTIONS:
        for name, label in (
            ("orthanc", "Orthanc WADO-RS frame"),
            ("openhi", "openhi GetImageFrame"),
            ("nginx", "nginx static file"),
        ):
            x = r["frames"][name][str(conc)]
            frames.append(
                {
                    "system": label,
                    "conns": conc,
                    "frames/s": x["requests_per_s"],
                    "p50 ms": x["p50_ms"],
                    "p99 ms": x["p99_ms"],
                    "MB/s": x["mb_per_s"],
                    "errors": x["errors"],
                }
            )
    ceiling = []
    for conc, c in r.get("generator_ceiling", {}).items():
        wrk = c.get("wrk") or {}
        ceiling.append(
            {
                "conns": int(conc),
                "loadgen req/s": c["loadgen"]["requests_per_s"],
                "wrk req/s": wrk.get("requests_per_s", float("nan")),
                "loadgen/wrk": _div(c["loadgen"]["requests_per_s"], wrk.get("requests_per_s", 0.0)),
            }
        )
    latency = []
    for phase, labels in (
        ("metadata", {"orthanc": "Orthanc WADO-RS series metadata", "openhi": "openhi GetImageSetMetadata"}),
        (
            "search",
            {"orthanc": "Orthanc QIDO-RS studies?PatientID=", "openhi": "openhi SearchImageSets PatientId"},
        ),
    ):
        for conc in LATENCY_CONNECTIONS:
            for name, label in labels.items():
                x = r[phase][name][str(conc)]
                latency.append(
                    {
                        "request": label,
                        "conns": conc,
                        "p50 ms": x["p50_ms"],
                        "p99 ms": x["p99_ms"],
                        "req/s": x["requests_per_s"],
                        "errors": x["errors"],
                    }
                )
    goals = [
        {
            "goal": t["goal"],
            "measured": t["measured"],
            "target": t["target"],
            "met": "yes" if t["met"] else "**no**",
        }
        for t in r["targets"]
    ]
    return {
        "ingest": ingest,
        "frames": frames,
        "ceiling": ceiling,
        "latency": latency,
        **peers_dicomweb.rows(r),
        "targets": goals,
    }


def _md_cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(not measured)"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_md_cell(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(out)


def markdown(r: dict[str, Any], result_path: Path, charts: list[Path]) -> str:
    m, p, v = r["machine"], r["params"], r["versions"]
    t = result_rows(r)
    short = [x for x in r["targets"] if not x["met"]]
    lines = [
        START,
        "",
        f"Generated by `bench/peers.py` on {m['date']} from `{result_path.relative_to(ROOT)}`"
        + (" — a **`--quick`** run (small sizes, short phases): indicative only." if p["quick"] else "."),
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, imagecodecs {m['imagecodecs']}, "
        f"pydicom {m['pydicom']}",
        f"- Peers: Orthanc {v.get('orthanc')} with DICOMweb plugin {v.get('dicomweb_plugin')}"
        + (f" (and GDCM plugin {v['gdcm_plugin']} for ingest transcoding)" if v.get("gdcm_plugin") else "")
        + f", nginx {str(v.get('nginx')).removeprefix('nginx/')}; "
        f"openhi {v.get('openhi')}",
        f"- Sizes: {p['instances']} CT instances 512 × 512 int16, {p['studies']} one-instance studies; "
        f"{p['seconds']:g} s per load phase after {p['warmup_seconds']:g} s warm-up",
        f"- Pinning: {'generator on core(s) ' + str(p['loadgen_cores']) + ', servers on ' + str(p['server_cores']) if p['pinned'] else 'off'}",
        f"- Mean frame body: openhi {r['frame_bytes']['openhi_mean'] / 1e3:.0f} kB (HTJ2K in a JPH file), "
        f"Orthanc {r['frame_bytes']['orthanc_mean'] / 1e3:.0f} kB (stored syntax in multipart/related)",
        f"- Search: {r['search']['patients']} PatientIDs queried round-robin, "
        f"{r['search']['hits_per_query']['openhi']} hits each in openhi, {r['search']['hits_per_query']['orthanc']} in Orthanc",
        "",
        "### Goals",
        "",
        md_table(t["targets"]),
        "",
    ]
    if short:
        lines += [
            "**Where openhi falls short in this run:** "
            + "; ".join(f"{x['goal']} ({_md_cell(x['measured'])}, goal {x['target']})" for x in short)
            + ".",
            "",
        ]
    else:
        lines += ["All goals met in this run.", ""]
    lines += [
        "### Ingest",
        "",
        md_table(t["ingest"]),
        "",
        "### Frame retrieval",
        "",
        md_table(t["frames"]),
        "",
        "Generator ceiling (one nginx frame URL, same core): the Python generator against `wrk`.",
        "",
        md_table(t["ceiling"]),
        "",
        "### Series metadata and search",
        "",
        md_table(t["latency"]),
        "",
    ]
    lines += peers_dicomweb.markdown(r, md_table)
    lines += [f"![{c.stem}](benchmarks/{c.name})" for c in charts]
    lines += ["", END]
    return "\n".join(lines)


def update_doc(block: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + block + tail)


def print_tables(r: dict[str, Any]) -> None:
    for name, rows in result_rows(r).items():
        print(f"\n== {name}")
        print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--instances", type=int, default=None, help="CT instances (default 300; 20 with --quick)"
    )
    parser.add_argument(
        "--studies", type=int, default=None, help="small studies (default 2000; 100 with --quick)"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="per load phase (default 10; 3 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short phases, to check the setup"
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin generator and servers")
    parser.add_argument(
        "--no-docs", dest="docs", action="store_false", help="do not rewrite docs/benchmarks.md"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="limit for each ingest step, seconds")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="measure nothing: redo tables, docs and charts from this JSON",
    )
    args = parser.parse_args()
    quick: dict[str, float] = {"instances": 20, "studies": 100, "seconds": 3.0}
    full: dict[str, float] = {"instances": 300, "studies": 2000, "seconds": 10.0}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, type(value)(value) if key == "seconds" else int(value))

    if args.render is not None:
        path = args.render.resolve()
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks and atexit hooks
        with tempfile.TemporaryDirectory(prefix="openhi-peers-") as tmp:
            measured = run(args, Path(tmp))
        path = write_result("peers", measured)
        print(f"wrote {path}")
    result = json.loads(path.read_text())  # with the machine facts
    print_tables(result)
    if args.docs:
        import charts

        drawn = charts.draw(result, DOC.parent / "benchmarks")
        update_doc(markdown(result, path, drawn))
        print(f"updated {DOC.relative_to(ROOT)} and {len(drawn)} charts")


if __name__ == "__main__":
    main()
