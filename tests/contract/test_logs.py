"""Log lines of a real server: one JSON object per line with the request id of the response, no patient names."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from contract.helpers import active_datastore
from contract.imaging import run_import
from dicom_factory import make_instance, uid
from openhi.testing import RunningServer

PATIENT = "Zyxwvut^Quorra"  # a name found nowhere else, searched for in the log afterwards


def read_log(server: RunningServer, wanted: Any, timeout: float = 10.0) -> str:
    """The server's log once ``wanted(text)`` holds (lines are written after the response is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        text = server.log_path.read_text()
        if wanted(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_json_lines_carry_the_request_id_and_no_patient_name(tmp_path: Path) -> None:
    args = ["--log-format", "json", "--log-level", "info"]
    with RunningServer(tmp_path / "data", extra_args=args) as server:
        client = server.client()
        ds = active_datastore(client, "logs")
        study = uid("logs-study")
        files = {"a.dcm": make_instance(study_uid=study, PatientName=PATIENT, PatientID="LOG-1")}
        assert run_import(client, server, ds, files)["job"]["jobStatus"] == "COMPLETED"
        search = httpx.get(
            f"{server.endpoint}/datastore/{ds}/studies",
            params={"PatientName": PATIENT, "includefield": "PatientName"},
            timeout=30,
        )
        assert search.status_code == 200 and PATIENT in search.text  # the name is in the answer, not the log
        request_id = search.headers["x-amzn-RequestId"]
        with pytest.raises(client.exceptions.ResourceNotFoundException) as missing:  # an error is logged too
            client.get_datastore(datastoreId="0" * 32)
        missing_id = missing.value.response["ResponseMetadata"]["RequestId"]
        text = read_log(server, lambda t: missing_id in t)

    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    access = {entry["request_id"]: entry for entry in lines if entry["logger"] == "openhi.access"}
    qido = access[request_id]
    assert qido["level"] == "INFO"
    assert qido["operation"] == "qido-studies" and qido["front"] == "dicomweb"
    assert qido["datastore"] == ds and qido["status"] == 200
    assert qido["path"] == f"/datastore/{ds}/studies"  # no query string
    assert isinstance(qido["latency_ms"], float) and qido["latency_ms"] > 0
    assert qido["time"].endswith("Z")
    error = access[missing_id]
    assert error["operation"] == "GetDatastore" and error["status"] == 404 and error["front"] == "api"
    assert "Zyxwvut" not in text and "Quorra" not in text and "Zyxwvut".lower() not in text.lower()
    assert sum(1 for e in access.values() if e["operation"] == "StartDICOMImportJob") == 1


def test_text_logs_have_no_access_lines_unless_debug(tmp_path: Path) -> None:
    with RunningServer(tmp_path / "quiet", extra_args=["--log-level", "info"]) as server:
        response = httpx.get(f"{server.endpoint}/readyz", timeout=30)
        assert response.status_code == 200
        time.sleep(0.5)
        quiet = server.log_path.read_text()
    assert response.headers["x-amzn-RequestId"] not in quiet
    assert "Application startup complete" in quiet  # uvicorn's own lines, as before
    with RunningServer(tmp_path / "debug", extra_args=["--log-level", "debug"]) as server:
        response = httpx.get(f"{server.endpoint}/readyz", timeout=30)
        request_id = response.headers["x-amzn-RequestId"]
        text = read_log(server, lambda t: request_id in t)
    line = next(line for line in text.splitlines() if request_id in line)
    assert "DEBUG openhi.access: GET /readyz 200" in line and "operation=readyz" in line
    assert not line.lstrip().startswith("{")
