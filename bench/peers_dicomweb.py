"""The DICOMweb scenarios of the peer benchmark: WADO-RS frames, series metadata, QIDO-RS, STOW-RS vs Orthanc.

Called by bench/peers.py inside its run, on the same data and the same running systems: the CT series and
the small studies already imported into openhi (one data store) and stored in Orthanc, nginx serving the
same HTJ2K frame bytes openhi stores. Orthanc's and nginx's frame, metadata and search numbers are the ones
peers.py measured in this run (their requests are the same: Orthanc's WADO-RS and QIDO-RS); this module
adds openhi's DICOMweb requests and the STOW-RS comparison, with the same load generator and pinning.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import loadgen
from loadgen import Request

ELE = "1.2.840.10008.1.2.1"
FRAMES_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
FRAMES_ELE = f'multipart/related; type="application/octet-stream"; transfer-syntax={ELE}'
DICOM_JSON = "application/dicom+json"
BOUNDARY = "openhi-bench-stow-boundary"
REGION = "us-east-1"


def _sign(method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` plus a SigV4 signature (local mode accepts any well-formed one; valid 15 minutes)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(Credentials("openhi-bench", "openhi-bench-secret"), "medical-imaging", REGION).add_auth(req)
    return dict(req.headers.items())


def unsigned_accepted(url: str) -> bool:
    """Whether openhi answers a DICOMweb GET without a signature (local mode once DICOMweb auth allows it)."""
    req = urllib.request.Request(url, headers={"Accept": DICOM_JSON})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False


class Requests:
    """openhi's DICOMweb requests, signed at build time unless the server takes unsigned ones."""

    def __init__(self, base: str, sign: bool) -> None:
        self.base = base
        self.sign = sign

    def get(self, paths: Sequence[str], accept: str) -> list[Request]:
        out = []
        for path in paths:
            url = self.base + path
            headers = {"Accept": accept}
            out.append(Request("GET", url, _sign("GET", url, b"", headers) if self.sign else headers))
        return out

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Request:
        url = self.base + path
        return Request("POST", url, _sign("POST", url, body, headers) if self.sign else headers, body)


def multipart(files: Sequence[Path]) -> bytes:
    """A STOW-RS body: every file as one ``application/dicom`` part."""
    parts = []
    for path in files:
        parts.append(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        parts.append(path.read_bytes())
        parts.append(b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def stow_once(request: Request, instances: int, timeout: float) -> dict[str, Any]:
    """One STOW-RS request (all instances in one body), timed; raises RuntimeError unless it answers 200."""
    result = asyncio.run(loadgen.run_each([request], 1, timeout=timeout))
    if result.errors or result.statuses.get(200) != 1:
        raise RuntimeError(f"STOW-RS to {request.url}: statuses {result.statuses}")
    return {
        "instances": instances,
        "seconds": result.seconds,
        "instances_per_s": instances / result.seconds,
        "mb_per_s": len(request.body) / result.seconds / 1e6,
    }


def measure(
    b: Any,
    *,
    server: Any,
    client: Any,
    orthanc: Any,
    ds_id: str,
    ct: list[dict[str, str]],
    patients: list[str],
    active_datastore: Callable[[Any, str], str],
    connections: Sequence[int],
    latency_connections: Sequence[int],
) -> dict[str, Any]:
    """openhi's DICOMweb phases (frames at ``connections``, metadata and QIDO at ``latency_connections``),
    then STOW-RS of the CT series into openhi (a new data store) and into Orthanc (after deleting it there).

    Raises RuntimeError when a pre-flight request or a STOW-RS upload fails.
    """
    base = f"{server.endpoint}/datastore/{ds_id}"
    study, series = ct[0]["study"], ct[0]["series"]
    sign = not unsigned_accepted(f"{base}/studies?limit=1")
    ours = Requests(base, sign)
    instance_paths = [f"/studies/{study}/series/{series}/instances/{c['sop']}" for c in ct]
    frame_paths = [f"{p}/frames/1" for p in instance_paths]
    orthanc_ele = [
        Request("GET", f"{orthanc.endpoint}/dicom-web{p}", {"Accept": FRAMES_ELE}) for p in frame_paths
    ]
    out: dict[str, Any] = {
        "signed": sign,
        "frames_stored": {},
        "frames_ele": {},
        "metadata": {},
        "search": {},
    }
    out["frames_ele"] = {"openhi": {}, "orthanc": {}}
    with b.pinned():
        for conc in connections:
            b.log(f"DICOMweb frames (transfer-syntax=*) at {conc} connections")
            out["frames_stored"][str(conc)] = b.load(ours.get(frame_paths, FRAMES_STORED), conc)
            b.log(f"DICOMweb frames (ELE, decoded per request) at {conc} connections")
            out["frames_ele"]["openhi"][str(conc)] = b.load(ours.get(frame_paths, FRAMES_ELE), conc)
            out["frames_ele"]["orthanc"][str(conc)] = b.load(orthanc_ele, conc)
        meta = ours.get([f"/studies/{study}/series/{series}/metadata"], DICOM_JSON)
        search = ours.get([f"/studies?PatientID={p}" for p in patients], DICOM_JSON)
        for conc in latency_connections:
            b.log(f"DICOMweb series metadata and QIDO studies?PatientID= at {conc} connection(s)")
            out["metadata"][str(conc)] = b.load(meta, conc)
            out["search"][str(conc)] = b.load(search, conc)
    out["search_hits"] = len(_get_json(search[0]))
    out["metadata_instances"] = len(_get_json(meta[0]))

    files = [Path(c["path"]) for c in ct]
    body = multipart(files)
    b.log(f"STOW-RS of the {len(files)}-instance CT series ({len(body) / 1e6:.0f} MB in one request)")
    orthanc.delete_study(study)
    orthanc_req = Request(
        "POST",
        f"{orthanc.endpoint}/dicom-web/studies",
        {"Content-Type": STOW_TYPE, "Accept": DICOM_JSON},
        body,
    )
    stow: dict[str, Any] = {"orthanc": stow_once(orthanc_req, len(files), b.args.timeout)}
    stow_ds = active_datastore(client, "bench-stow")
    stow_req = Requests(f"{server.endpoint}/datastore/{stow_ds}", sign).post(
        "/studies", body, {"Content-Type": STOW_TYPE, "Accept": DICOM_JSON}
    )
    stow["openhi"] = stow_once(stow_req, len(files), b.args.timeout)
    out["stow"] = stow
    return out


def _get_json(req: Request) -> Any:
    with urllib.request.urlopen(urllib.request.Request(req.url, headers=dict(req.headers)), timeout=60) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------- goals and tables


def _connections(d: dict[str, Any]) -> tuple[list[int], list[int]]:
    """The connection counts a result was measured at (its keys)."""
    return sorted(int(c) for c in d["frames_stored"]), sorted(int(c) for c in d["metadata"])


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def targets(
    r: dict[str, Any], goal: Callable[[str, float, str, float, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The DICOMweb goals (issue text): rows in peers.py's targets table, made by its ``_goal``."""
    d = r.get("dicomweb")
    if d is None:
        return []
    conns, latency_conns = _connections(d)
    rows = []
    for conc in conns:
        mine = d["frames_stored"][str(conc)]
        orthanc = r["frames"]["orthanc"][str(conc)]["requests_per_s"]
        nginx = r["frames"]["nginx"][str(conc)]["requests_per_s"]
        rows += [
            goal(
                f"WADO-RS frames (*) vs Orthanc, {conc} conns",
                _div(mine["requests_per_s"], orthanc),
                ">=",
                10.0,
                "x",
            ),
            goal(
                f"WADO-RS frames (*) vs nginx, {conc} conns",
                _div(mine["requests_per_s"], nginx),
                ">=",
                0.5,
                "x",
            ),
            goal(f"WADO-RS frames (*) p99, {conc} conns", mine["p99_ms"], "<=", 20.0, "ms"),
        ]
    for conc in conns:
        ele = d["frames_ele"]
        rows.append(
            goal(
                f"WADO-RS frames ELE vs Orthanc, {conc} conns",
                _div(ele["openhi"][str(conc)]["requests_per_s"], ele["orthanc"][str(conc)]["requests_per_s"]),
                ">=",
                2.0,
                "x",
            )
        )
    for conc in latency_conns:
        rows.append(
            goal(
                f"WADO-RS series metadata p50 speed-up vs Orthanc, {conc} conn",
                _div(r["metadata"]["orthanc"][str(conc)]["p50_ms"], d["metadata"][str(conc)]["p50_ms"]),
                ">=",
                20.0,
                "x",
            )
        )
    for conc in latency_conns:
        rows.append(
            goal(
                f"QIDO-RS studies?PatientID= p99, {conc} conn",
                d["search"][str(conc)]["p99_ms"],
                "<=",
                20.0,
                "ms",
            )
        )
    stow = d["stow"]
    limit = r["ingest"]["codec_limit_encode_decode_instances_per_s"]
    rows += [
        goal(
            "STOW-RS vs HTJ2K encode + verification decode limit",
            _div(stow["openhi"]["instances_per_s"], limit),
            ">=",
            0.8,
            "x",
        ),
        goal(
            "STOW-RS vs Orthanc STOW-RS",
            _div(stow["openhi"]["instances_per_s"], stow["orthanc"]["instances_per_s"]),
            ">=",
            1.0,
            "x",
        ),
    ]
    return rows


def rows(r: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The DICOMweb tables of one result (frames, latency, STOW), as plain rows."""
    d = r.get("dicomweb")
    if d is None:
        return {}
    conns, latency_conns = _connections(d)
    frames = []
    for conc in conns:
        for label, x in (
            ("openhi WADO-RS frame, transfer-syntax=* (HTJ2K)", d["frames_stored"][str(conc)]),
            ("Orthanc WADO-RS frame, transfer-syntax=* (stored ELE)", r["frames"]["orthanc"][str(conc)]),
            ("nginx, the same HTJ2K bytes", r["frames"]["nginx"][str(conc)]),
            ("openhi WADO-RS frame, ELE (HTJ2K decoded per request)", d["frames_ele"]["openhi"][str(conc)]),
            ("Orthanc WADO-RS frame, ELE", d["frames_ele"]["orthanc"][str(conc)]),
        ):
            frames.append(
                {
                    "request": label,
                    "conns": conc,
                    "frames/s": x["requests_per_s"],
                    "p50 ms": x["p50_ms"],
                    "p99 ms": x["p99_ms"],
                    "MB/s": x["mb_per_s"],
                    "errors": x["errors"],
                }
            )
    latency = []
    for conc in latency_conns:
        for label, x in (
            (
                f"openhi WADO-RS series metadata ({d['metadata_instances']} instances)",
                d["metadata"][str(conc)],
            ),
            ("Orthanc WADO-RS series metadata", r["metadata"]["orthanc"][str(conc)]),
            (f"openhi QIDO-RS studies?PatientID= ({d['search_hits']} hits)", d["search"][str(conc)]),
            ("Orthanc QIDO-RS studies?PatientID=", r["search"]["orthanc"][str(conc)]),
        ):
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
    stow = d["stow"]
    ing = r["ingest"]
    stow_rows = [
        {"system": "openhi STOW-RS (HTJ2K transcode + verification decode)", **_stow_cells(stow["openhi"])},
        {"system": "Orthanc STOW-RS (stored as sent)", **_stow_cells(stow["orthanc"])},
        {
            "system": f"HTJ2K encode + verification decode, {ing['cores']} cores (limit)",
            "instances/s": ing["codec_limit_encode_decode_instances_per_s"],
            "MB/s": math.nan,
            "seconds": math.nan,
        },
    ]
    return {"dicomweb_frames": frames, "dicomweb_latency": latency, "dicomweb_stow": stow_rows}


def _stow_cells(x: dict[str, Any]) -> dict[str, float]:
    return {"instances/s": x["instances_per_s"], "MB/s": x["mb_per_s"], "seconds": x["seconds"]}


def markdown(r: dict[str, Any], md_table: Callable[[list[dict[str, Any]]], str]) -> list[str]:
    """The DICOMweb part of the results block (empty for results measured before it existed)."""
    t = rows(r)
    if not t:
        return []
    d = r["dicomweb"]
    return [
        "### DICOMweb",
        "",
        f"Requests {'signed (SigV4)' if d['signed'] else 'unsigned (local mode)'}; Orthanc and nginx rows are "
        "the ones measured above in the same run.",
        "",
        md_table(t["dicomweb_frames"]),
        "",
        md_table(t["dicomweb_latency"]),
        "",
        f"STOW-RS of the {r['params']['instances']}-instance CT series, one request each, into an empty "
        "store (Orthanc: after deleting the study).",
        "",
        md_table(t["dicomweb_stow"]),
        "",
    ]
