"""Run inside a venv holding only openhi's core install: serve, import pydicom's lossless MR files, verify frames.

Started by tests/packaging/run.sh, not collected by pytest. It checks what a plain ``pip install`` gives:
every transcoding decoder is present, ``openhi serve`` starts (its codec check passes), and a JPEG-LS
lossless and a JPEG 2000 lossless file come back from GetImageFrame as HTJ2K that decodes to the source
pixels. Clients are plain botocore (a core dependency); files are staged in the embedded bucket layout
(``<data-dir>/buckets/<bucket>/<key>``).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

FILES = {
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",
}
# HTJ2K lossless, and HTJ2K lossless with RPCL progression (what AWS HealthImaging stores)
HTJ2K_LOSSLESS = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202")
ROLE = "arn:aws:iam::123456789012:role/ImportRole"


def fail(message: str) -> None:
    print(f"core-import: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait(what: str, probe: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    fail(f"{what} not reached within {timeout:.0f}s")


def check_decoders() -> None:
    from openhi.codec.decoders import decoder_status, missing_decoders

    missing = missing_decoders()
    if missing:
        fail(f"the core install lacks decoders: {missing}")
    print(f"core-import: decoders {sorted(set(decoder_status().values()))}")


def serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    openhi = shutil.which("openhi", path=str(Path(sys.executable).parent))
    if openhi is None:
        fail("the wheel installed no `openhi` command")
    cmd = [str(openhi), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=data_dir.parent,
        start_new_session=True,
    )

    def healthy() -> bool:
        if proc.poll() is not None:
            fail(f"openhi serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    wait("openhi serve answering /healthz", healthy, timeout=60)
    return proc


def client(port: int) -> Any:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client(
        "medical-imaging",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="fresh-venv",
        aws_secret_access_key="fresh-venv-secret",
        config=Config(inject_host_prefix=False, retries={"max_attempts": 1}),
    )


def import_one(mi: Any, data_dir: Path, name: str, source: Path) -> None:
    import imagecodecs
    import numpy as np
    import pydicom

    from openhi.codec.jph import unwrap

    ds_id = mi.create_datastore(datastoreName=name.replace(".dcm", ""))["datastoreId"]
    wait(
        "ACTIVE datastore",
        lambda: mi.get_datastore(datastoreId=ds_id)["datastoreProperties"]["datastoreStatus"] == "ACTIVE",
    )
    staged = data_dir / "buckets" / "input" / ds_id / name
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, staged)
    job_id = mi.start_dicom_import_job(
        datastoreId=ds_id,
        dataAccessRoleArn=ROLE,
        inputS3Uri=f"s3://input/{ds_id}/",
        outputS3Uri=f"s3://output/{ds_id}/",
    )["jobId"]

    def finished() -> Any:
        props = mi.get_dicom_import_job(datastoreId=ds_id, jobId=job_id)["jobProperties"]
        return props if props["jobStatus"] in ("COMPLETED", "FAILED") else None

    props = wait(f"import job of {name} finished", finished)
    if props["jobStatus"] != "COMPLETED":
        fail(f"{name}: import job {props['jobStatus']}: {props.get('message')}")
    sets = mi.search_image_sets(datastoreId=ds_id)["imageSetsMetadataSummaries"]
    if len(sets) != 1:
        fail(f"{name}: expected 1 image set, found {len(sets)}")
    set_id = sets[0]["imageSetId"]
    body = mi.get_image_set_metadata(datastoreId=ds_id, imageSetId=set_id)["imageSetMetadataBlob"].read()
    document = json.loads(gzip.decompress(body))
    instances = [
        inst for series in document["Study"]["Series"].values() for inst in series["Instances"].values()
    ]
    if len(instances) != 1:
        fail(f"{name}: expected 1 instance in the metadata, found {len(instances)}")
    instance = instances[0]
    syntax = instance["StoredTransferSyntaxUID"]
    if syntax not in HTJ2K_LOSSLESS:
        fail(
            f"{name}: stored as {syntax}, not HTJ2K lossless ({' or '.join(HTJ2K_LOSSLESS)}): not transcoded"
        )
    frames = instance["ImageFrames"]
    expected = pydicom.dcmread(source).pixel_array
    for index, frame in enumerate(frames):
        resp = mi.get_image_frame(
            datastoreId=ds_id, imageSetId=set_id, imageFrameInformation={"imageFrameId": frame["ID"]}
        )
        if resp["contentType"] != "image/jph":
            fail(f"{name}: frame {index} served as {resp['contentType']}, not image/jph")
        pixels = np.asarray(imagecodecs.htj2k_decode(unwrap(resp["imageFrameBlob"].read())))
        source_frame = expected if len(frames) == 1 else expected[index]
        if pixels.shape != source_frame.shape or not np.array_equal(pixels, source_frame):
            fail(f"{name}: frame {index} does not decode to the source pixels")
    print(f"core-import: {name} ({FILES[name]}) -> HTJ2K, {len(frames)} frame(s) pixel-exact")


def main() -> None:
    from pydicom.data import get_testdata_file

    check_decoders()
    sources: dict[str, Path] = {}
    for name, syntax in FILES.items():
        found = get_testdata_file(name, download=False)
        if found is None:
            fail(f"pydicom's test file {name} is not installed")
        sources[name] = Path(str(found))
        import pydicom

        actual = pydicom.dcmread(sources[name], stop_before_pixels=True).file_meta.TransferSyntaxUID
        if actual != syntax:
            fail(f"{name} is {actual}, expected {syntax}")
    with tempfile.TemporaryDirectory(prefix="openhi-core-") as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        log = Path(tmp) / "serve.log"
        proc = serve(data_dir, port, log)
        try:
            mi = client(port)
            for name, source in sources.items():
                import_one(mi, data_dir, name, source)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    main()
