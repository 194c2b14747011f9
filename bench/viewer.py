"""Viewer benchmark: time to the first image and to all slices of a CT series in OHIF (headless Chromium),
served by openhi and by Orthanc's DICOMweb to the same OHIF build.

Usage: .venv/bin/python bench/viewer.py [--small] [--instances 300] [--repeat 3]

The 300-instance 512 x 512 CT series of bench/peers.py (``make_dataset``) goes into openhi (an import
job: stored as HTJ2K) and into Orthanc (POST /instances: stored as sent, Explicit VR Little Endian).
openhi serves the viewer itself (``openhi viewer install`` from the cached ``@ohif/app`` tarball, deep link
``/viewer?StudyInstanceUIDs=…&datastore=…``). For Orthanc, the same installed dist is served by a small
static server of this script under the same ``/ohif/`` prefix, with a same-origin reverse proxy
``/dicom-web/`` -> Orthanc's DICOMweb and an ``app-config.js`` made by openhi's own generator
(``openhi.console.viewer.app_config``: the same OHIF options, only the DICOMweb root differs).

Each run opens the study in a fresh browser context (no HTTP cache) and measures, from just before the
navigation: the first image (the viewport's screenshot shows the bright body of the CT slice; polled) and
all slices loaded (the last of the N ``/frames/`` responses to finish, from Chromium's request timing).
One untimed warm-up run per system, then ``--repeat`` runs alternating between the systems; medians.
Writes bench/results/viewer-<stamp>.json. Needs /usr/bin/chromium, Playwright, Orthanc + orthanc-dicomweb.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import io
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

from _common import table, write_result
from peers import make_dataset, openhi_import
from peers_systems import Orthanc, assert_loopback_only

from openhi.console.render import content_type
from openhi.console.viewer import app_config
from openhi.console.viewer_install import PREFIX, VERSION, install

CHROMIUM = "/usr/bin/chromium"
TARBALL = Path.home() / ".cache" / "openhi" / f"ohif-app-{VERSION}.tgz"
GOAL_FIRST_IMAGE_S = 2.0
ORTHANC_SOURCE = "orthanc"
#: a viewport is showing the slice when this fraction of its pixels is bright (the body is ~45% of the
#: image; the overlay text alone stays well below)
BRIGHT_FRACTION = 0.05
_OPENHI_ROOT = "window.location.origin + '/datastore/' + s.configuration.datastore"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------ OHIF for Orthanc
def orthanc_app_config() -> str:
    """openhi's generated ``app-config.js`` for one data source named ``orthanc`` rooted at ``/dicom-web``.

    Raises:
        RuntimeError: the generator no longer has the line that sets the DICOMweb roots.
    """
    source = SimpleNamespace(id=ORTHANC_SOURCE, name="Orthanc")
    services = SimpleNamespace(datastores=SimpleNamespace(list=lambda **_: ([source], None)))
    js = app_config(cast(Any, services))
    if _OPENHI_ROOT not in js:
        raise RuntimeError("openhi's app-config.js changed: cannot point it at /dicom-web")
    return js.replace(_OPENHI_ROOT, "window.location.origin + '/dicom-web'")


class OhifForOrthanc:
    """A loopback HTTP server: the OHIF dist under ``/ohif/`` and ``/dicom-web/`` proxied to Orthanc."""

    def __init__(self, dist: Path, orthanc_port: int) -> None:
        config = orthanc_app_config().encode()
        local = threading.local()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path.startswith("/dicom-web/"):
                    self._proxy()
                elif path == PREFIX + "app-config.js":
                    self._send(200, [("Content-Type", "text/javascript; charset=utf-8")], config)
                elif path.startswith(PREFIX) or path == PREFIX.rstrip("/"):
                    self._file(path[len(PREFIX) :])
                else:
                    self._send(404, [("Content-Type", "text/plain")], b"not found")

            do_HEAD = do_GET

            def _file(self, relative: str) -> None:
                if relative in ("", "index.html") or "." not in relative.rsplit("/", 1)[-1]:
                    relative = "index.html"  # the viewer's own routes
                target = (dist / relative).resolve()
                if not target.is_relative_to(dist.resolve()) or not target.is_file():
                    self._send(404, [("Content-Type", "text/plain")], b"not found")
                    return
                self._send(
                    200,
                    [("Content-Type", content_type(target)), ("Cache-Control", "no-cache")],
                    target.read_bytes(),
                )

            def _proxy(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
                resp, body = None, b""
                for _ in range(2):  # a kept-alive connection Orthanc has closed: once more on a new one
                    conn = getattr(local, "conn", None)
                    if conn is None:
                        conn = local.conn = http.client.HTTPConnection("127.0.0.1", orthanc_port, timeout=120)
                    try:
                        conn.request("GET", self.path, headers=headers)
                        resp = conn.getresponse()
                        body = resp.read()
                        break
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        local.conn = resp = None
                if resp is None:
                    self._send(502, [("Content-Type", "text/plain")], b"Orthanc did not answer")
                    return
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
                self._send(resp.status, out, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OhifForOrthanc:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


# ------------------------------------------------------------------ one browser run
def bright_fraction(png: bytes) -> float:
    import numpy as np
    from PIL import Image

    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    return float((grey > 128).mean())


#: in the page before OHIF loads: the wall-clock time (ms) of every Cornerstone render of a viewport (the
#: event is dispatched on the viewport element without bubbling: caught in the capture phase)
_RENDER_LISTENER = """
window.__renders = [];
document.addEventListener('CORNERSTONE_IMAGE_RENDERED', function () { window.__renders.push(Date.now()); }, true);
"""


def open_study(browser: Any, url: str, frames: int, timeout: float) -> dict[str, Any]:
    """Open ``url`` in a fresh context; seconds to the first image and to the last of ``frames`` frames.

    ``first_image_s``: the first Cornerstone render after the first frame response has arrived (an image
    cannot be drawn before its frame is there), provided the viewport's screenshot then shows the slice;
    ``first_image_seen_s``: when the polled screenshot first showed it (an upper bound: one screenshot
    takes a while on a busy machine). ``all_slices_s``: the end of the last of the ``frames`` frame responses.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(_RENDER_LISTENER)
    page = context.new_page()
    done: dict[str, float] = {}
    ends: dict[str, float] = {}
    accepts: set[str] = set()
    syntaxes: set[str] = set()
    failed: list[str] = []
    errors: list[str] = []

    def finished(request: Any) -> None:
        timing = request.timing
        end = timing.get("responseEnd", -1)
        at = (timing["startTime"] + end) / 1000 if end >= 0 else time.time()
        if "/frames/" in request.url:
            done[request.url] = at
            accepts.add(request.headers.get("accept", ""))
        elif "/metadata" in request.url:
            ends.setdefault("series_metadata", at)

    def response(resp: Any) -> None:
        if resp.status >= 400:
            failed.append(f"{resp.status} {resp.url}")
        elif "/frames/" in resp.url:
            syntaxes.add(re.sub(r";\s*boundary=[^;]*", "", resp.headers.get("content-type", "")))

    page.on("requestfinished", finished)
    page.on("response", response)
    page.on("requestfailed", lambda r: failed.append(f"{r.failure} {r.url}"))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        t0 = time.time()
        page.goto(url, timeout=timeout * 1000)
        loaded = time.time() - t0
        deadline = t0 + timeout
        seen: float | None = None
        fraction = 0.0
        while seen is None and time.time() < deadline:
            viewport = page.query_selector("[data-viewport-uid]")
            if viewport is None:
                page.wait_for_timeout(20)
                continue
            try:
                fraction = bright_fraction(viewport.screenshot(timeout=5000))
            except Exception:  # the element was replaced while OHIF lays out: look again
                continue
            if fraction >= BRIGHT_FRACTION:
                seen = time.time() - t0
        while len(done) < frames and time.time() < deadline:
            page.wait_for_timeout(100)
        renders = [r / 1000 for r in page.evaluate("() => window.__renders")]
        first_frame = min(done.values()) if done else None
        first: float | None = None
        if seen is not None and first_frame is not None:
            after = [r for r in renders if r >= first_frame]
            first = min(after) - t0 if after and min(after) - t0 <= seen else seen
        return {
            "first_image_s": first,
            "first_image_seen_s": seen,
            "all_slices_s": max(done.values()) - t0 if len(done) >= frames else None,
            "page_load_s": loaded,
            "series_metadata_s": ends["series_metadata"] - t0 if "series_metadata" in ends else None,
            "first_frame_response_s": first_frame - t0 if first_frame is not None else None,
            "frames_loaded": len(done),
            "renders": len(renders),
            "bright_fraction": fraction,
            "frame_accept": sorted(accepts),
            "frame_type": sorted(syntaxes),
            "failed_requests": failed[:10],
            "page_errors": errors[:10],
        }
    finally:
        context.close()


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if len(values) == len(runs) else None

    return {"first_image_s": median("first_image_s"), "all_slices_s": median("all_slices_s")}


# ------------------------------------------------------------------ main
def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from contract.helpers import active_datastore
    from openhi.testing import RunningServer

    log(f"dataset: {args.instances} CT instances 512x512")
    data = make_dataset(work / "dicom", args.instances, 0)
    ct = data["ct"]
    study = ct[0]["study"]
    data_dir = work / "openhi-data"
    dist = install(data_dir, TARBALL)
    server = RunningServer(data_dir)
    orthanc = Orthanc(work / "orthanc")
    try:
        server.start(timeout=60)
        assert server.proc is not None
        assert_loopback_only(server.proc.pid, "openhi")
        orthanc.start()
        client = server.client()
        ds_id = active_datastore(client, "viewer-bench")
        log("store: openhi import job (HTJ2K)")
        imported = openhi_import(server, client, ds_id, data["ct_dir"], args.timeout)
        log(f"store: Orthanc POST /instances ({imported['seconds']:.1f} s for openhi's import)")
        for c in ct:
            req = urllib.request.Request(
                f"{orthanc.endpoint}/instances",
                data=Path(c["path"]).read_bytes(),
                headers={"Content-Type": "application/dicom"},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
        stored = orthanc.get_json("/statistics")["CountInstances"]
        if stored != len(ct):
            raise RuntimeError(f"Orthanc stored {stored} of {len(ct)} instances")
        urls = {
            "openhi": f"{server.endpoint}/viewer?StudyInstanceUIDs={study}&datastore={ds_id}",
            "orthanc": "",
        }
        results: dict[str, list[dict[str, Any]]] = {"openhi": [], "orthanc": []}
        warmups: dict[str, dict[str, Any]] = {}
        with OhifForOrthanc(dist, orthanc.port) as proxy, sync_playwright() as p:
            urls["orthanc"] = f"{proxy.endpoint}{PREFIX}viewer/{ORTHANC_SOURCE}?StudyInstanceUIDs={study}"
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                for name, url in urls.items():
                    log(f"warm-up: {name}")
                    warmups[name] = open_study(browser, url, len(ct), args.timeout)
                    log(f"  {warmups[name]}")
                for i in range(args.repeat):
                    for name, url in urls.items():
                        run_result = open_study(browser, url, len(ct), args.timeout)
                        log(
                            f"run {i + 1} {name}: first image {run_result['first_image_s']}, "
                            f"all slices {run_result['all_slices_s']} ({run_result['frames_loaded']} frames)"
                        )
                        results[name].append(run_result)
            finally:
                browser.close()
        versions = orthanc.version()
    finally:
        orthanc.stop()
        server.stop()
    return {
        "instances": len(ct),
        "rows": 512,
        "cols": 512,
        "ohif": VERSION,
        "peers": versions,
        "repeat": args.repeat,
        "goal_first_image_s": GOAL_FIRST_IMAGE_S,
        "openhi_import_s": imported["seconds"],
        "summary": {name: summary(runs) for name, runs in results.items()},
        "warmup": warmups,
        "runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="a quick run: 30 instances, 1 repeat")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per page / import")
    args = parser.parse_args()
    if args.small:
        args.instances, args.repeat = min(args.instances, 30), 1
    if not Path(CHROMIUM).exists() or not TARBALL.is_file():
        parser.error(f"needs {CHROMIUM} and the @ohif/app tarball at {TARBALL}")
    with tempfile.TemporaryDirectory(prefix="openhi-viewer-bench-") as work:
        result = run(args, Path(work))
    rows = []
    for name, s in result["summary"].items():
        first = s["first_image_s"]
        rows.append(
            {
                "system": name,
                "first image s (median)": first,
                "all slices s (median)": s["all_slices_s"],
                f"first image <= {GOAL_FIRST_IMAGE_S:g} s": "n/a"
                if first is None
                else first <= GOAL_FIRST_IMAGE_S,
            }
        )
    print(table(rows))
    first = result["summary"]["openhi"]["first_image_s"]
    met = first is not None and first <= GOAL_FIRST_IMAGE_S
    result["goal_met"] = met
    print(
        f"goal: openhi shows the first image within {GOAL_FIRST_IMAGE_S:g} s: {'met' if met else 'NOT met'}"
    )
    if not args.small:
        print(f"wrote {write_result('viewer', result)}")
    else:
        print(f"wrote {write_result('viewer-small', result)}")


if __name__ == "__main__":
    main()
