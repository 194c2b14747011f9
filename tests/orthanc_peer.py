"""Orthanc (+ DICOMweb plugin) as a side-by-side peer for tests: a session fixture and its store/client helpers.

The starter is bench/peers_systems.py's ``Orthanc`` (loopback only through an LD_PRELOAD bind shim, own
config, storage and index in a temp dir, no DICOM port, no GDCM plugin); ``orthanc_dicom`` is another one
with its DICOM port on (loopback), for the DIMSE comparisons. Use it in a test module with
``from orthanc_peer import orthanc  # noqa: F401`` (the fixture) and the helpers below.

Outside CI a missing Orthanc (or C compiler for the shim) skips the tests that need it; with ``CI=true`` it
fails them, since CI installs the Debian packages (``make install-test``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@cache
def peers_systems() -> ModuleType:
    """bench/peers_systems.py, loaded by path (``bench`` is not a package; its folder is not put on sys.path)."""
    spec = importlib.util.spec_from_file_location("bench_peers_systems", BENCH / "peers_systems.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Orthanc 1.10 + DICOMweb 1.7 for the session (``.endpoint``; DICOMweb root ``/dicom-web``).

    Skipped with a reason when it cannot start outside CI; in CI (CI=true) that is a failure.
    """
    server = peers_systems().Orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        server.start(timeout=60)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        server.stop()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Orthanc (+ orthanc-dicomweb) is required in CI but could not start: {exc}")
        pytest.skip(f"Orthanc could not start (apt-get install orthanc orthanc-dicomweb gcc): {exc}")
    try:
        yield server
    finally:
        server.stop()


#: The AE title of :func:`orthanc_dicom`'s Orthanc
ORTHANC_AET = "ORTHANC"


@pytest.fixture(scope="session")
def orthanc_dicom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second Orthanc for the session like :func:`orthanc`, with its DICOM port on (loopback only, AE title
    :data:`ORTHANC_AET`, any calling or called AE accepted): ``.dicom_port``. Skipped / failed as ``orthanc``."""
    base = peers_systems().Orthanc

    class DicomOrthanc(base):  # type: ignore[misc, valid-type]
        def __init__(self, work: Path) -> None:
            super().__init__(work)
            self.dicom_port = peers_systems().free_port()

        def config(self) -> dict[str, Any]:
            config: dict[str, Any] = super().config()
            config.update(
                DicomServerEnabled=True,
                DicomPort=self.dicom_port,
                DicomAet=ORTHANC_AET,
                DicomCheckCalledAet=False,
                DicomAlwaysAllowEcho=True,
                DicomAlwaysAllowFind=True,
                DicomAlwaysAllowGet=True,
                DicomAlwaysAllowMove=True,
                DicomAlwaysAllowStore=True,
                UnknownSopClassAccepted=True,
            )
            return config

    server = DicomOrthanc(tmp_path_factory.mktemp("orthanc-dicom"))
    try:
        server.start(timeout=60)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        server.stop()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Orthanc is required in CI but could not start with a DICOM port: {exc}")
        pytest.skip(f"Orthanc could not start (apt-get install orthanc orthanc-dicomweb gcc): {exc}")
    try:
        yield server
    finally:
        server.stop()


def dicomweb_url(server: Any) -> str:
    """The DICOMweb base URL of a started ``Orthanc``."""
    return f"{server.endpoint}/dicom-web"


def store(server: Any, files: Iterable[bytes]) -> list[str]:
    """POST each P10 file to Orthanc's REST ``/instances``; the Orthanc IDs.

    Raises urllib.error.HTTPError when Orthanc refuses one.
    """
    ids = []
    for data in files:
        req = urllib.request.Request(
            f"{server.endpoint}/instances", data=data, headers={"Content-Type": "application/dicom"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            ids.append(str(json.loads(resp.read())["ID"]))
    return ids


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP exchange: (status, headers with lower-case names, body); HTTP errors are answers too.

    Raises OSError when the server cannot be reached.
    """
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
