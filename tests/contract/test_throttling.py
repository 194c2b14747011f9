"""Contract tests: ``serve --throttle aws`` answers AWS's limits with the modeled ThrottlingException, and
boto3's standard retry mode, the AWS CLI and the JS SDK recover from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from openhi.testing import RunningServer

RETRYING = Config(inject_host_prefix=False, retries={"mode": "standard", "max_attempts": 10})
ONCE = Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture(scope="module")
def aws_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = RunningServer(tmp_path_factory.mktemp("throttle") / "data", extra_args=["--throttle", "aws"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_burst_of_create_datastore_ends_with_every_datastore_created_after_retries(
    aws_limits: RunningServer,
) -> None:
    client = aws_limits.client(config=RETRYING, aws_access_key_id="burst-key")
    started = time.monotonic()
    answers = [client.create_datastore(datastoreName=f"burst-{i}") for i in range(3)]
    elapsed = time.monotonic() - started
    retries = [a["ResponseMetadata"]["RetryAttempts"] for a in answers]
    assert retries[0] == 0 and retries[1] > 0 and retries[2] > 0, retries  # 0.085 per second, burst 1
    assert elapsed >= 2 / 0.085 - 0.5  # two refills of one token each
    names = {d["datastoreName"] for d in client.list_datastores()["datastoreSummaries"]}
    assert {f"burst-{i}" for i in range(3)} <= names


def test_a_throttled_call_is_the_modeled_exception_naming_the_operation_and_its_limit(
    aws_limits: RunningServer,
) -> None:
    client = aws_limits.client(config=ONCE, aws_access_key_id="impatient-key")
    client.create_datastore(datastoreName="first")
    with pytest.raises(client.exceptions.ThrottlingException) as info:
        client.create_datastore(datastoreName="second")
    response = info.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ThrottlingException"
    assert "CreateDatastore" in response["Error"]["Message"]
    assert "0.085 requests per second (burst 1)" in response["Error"]["Message"]
    # another access key has buckets of its own
    other = aws_limits.client(config=ONCE, aws_access_key_id="patient-key")
    assert other.create_datastore(datastoreName="other")["datastoreStatus"] == "CREATING"


def test_reads_are_limited_at_their_own_rate(aws_limits: RunningServer) -> None:
    client = aws_limits.client(config=ONCE, aws_access_key_id="lister")

    def one(_: int) -> str:
        try:
            client.list_datastores()
            return "ok"
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(60)))  # ListDatastores: 5 per second, burst 10
    elapsed = time.monotonic() - started
    assert set(outcomes) == {"ok", "ThrottlingException"}
    assert 10 <= outcomes.count("ok") <= 10 + 5 * elapsed + 1


def test_dicomweb_answers_429_with_retry_after(aws_limits: RunningServer) -> None:
    path = "/datastore/" + "0" * 32 + "/studies/1.2/series/1.3/instances/1.4/metadata"
    statuses = []
    with httpx.Client(base_url=aws_limits.endpoint, timeout=30) as http:  # unsigned: anonymous-local
        for _ in range(400):  # GetDICOMInstanceMetadata: 50 per second, burst 100
            response = http.get(path)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
    assert statuses[:100] == [404] * 100  # counted before the handler answers
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-amzn-errortype"] == "ThrottlingException"
    assert "GetDICOMInstanceMetadata" in response.json()["message"]


def test_the_aws_cli_recovers_with_standard_retries(aws_limits: RunningServer, tmp_path: Path) -> None:
    aws = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).parents[2] / ".venv")) / "bin" / "aws"
    if not aws.exists():
        found = shutil.which("aws")
        if found is None:
            pytest.skip("the AWS CLI is not installed")
        aws = Path(found)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "cli-key",
        "AWS_SECRET_ACCESS_KEY": "cli-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_RETRY_MODE": "standard",
        "AWS_MAX_ATTEMPTS": "10",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    client = aws_limits.client(config=ONCE, aws_access_key_id="cli-key")
    client.create_datastore(datastoreName="cli-first")  # the key's one token is gone: ~11.8 s to the next
    time.sleep(6)
    cmd = [str(aws), "--endpoint-url", aws_limits.endpoint, "--debug", "medical-imaging", "create-datastore"]
    done = subprocess.run([*cmd, "--datastore-name", "cli-second"], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert json.loads(done.stdout)["datastoreStatus"] == "CREATING"
    log = done.stderr.decode()
    assert "ThrottlingException" in log and "Retry needed" in log


JS_BURST = r"""
const { MedicalImagingClient, ListDatastoresCommand } = require("@aws-sdk/client-medical-imaging");
const client = new MedicalImagingClient({
  endpoint: process.argv[2], region: "us-east-1", maxAttempts: 10,
  credentials: { accessKeyId: "js-key", secretAccessKey: "js-secret" },
});
Promise.all(Array.from({ length: 30 }, () => client.send(new ListDatastoresCommand({}))))
  .then((all) => console.log(JSON.stringify(all.map((r) => r.$metadata.attempts))))
  .catch((e) => { console.error(e.name, e.message); process.exit(1); });
"""


JS_SDK_PACKAGE = "@aws-sdk/client-medical-imaging@3"
JS_SDK_CACHE = Path.home() / ".cache/openhi/js-sdk"


def _js_sdk() -> Path | None:
    """The JS SDK v3 client: given, cached, or (in CI, or with OPENHI_JS_SDK_INSTALL=1) installed with npm
    from the registry into the cache; a CI that cannot install it fails rather than skips."""
    for candidate in (os.environ.get("OPENHI_JS_SDK_DIR"), str(JS_SDK_CACHE)):
        if candidate and (Path(candidate) / "node_modules/@aws-sdk/client-medical-imaging").is_dir():
            return Path(candidate)
    if os.environ.get("CI") != "true" and os.environ.get("OPENHI_JS_SDK_INSTALL") != "1":
        return None
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("CI runs the JS SDK retry test: npm is needed to install @aws-sdk/client-medical-imaging")
    JS_SDK_CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(JS_SDK_CACHE), JS_SDK_PACKAGE],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"npm cannot install {JS_SDK_PACKAGE} for the JS SDK retry test: {done.stderr[-500:]}")
    return JS_SDK_CACHE


def test_the_js_sdk_recovers_from_a_burst(aws_limits: RunningServer) -> None:
    node = shutil.which("node")
    if node is None and os.environ.get("CI") == "true":
        pytest.fail("CI runs the JS SDK retry test: node is needed")
    sdk = _js_sdk() if node is not None else None
    if sdk is None or node is None:
        pytest.skip(
            "node and @aws-sdk/client-medical-imaging are needed (installed automatically in CI or with "
            "OPENHI_JS_SDK_INSTALL=1): npm install --prefix ~/.cache/openhi/js-sdk @aws-sdk/client-medical-imaging"
        )
    script = sdk / "openhi-burst.js"
    script.write_text(JS_BURST)
    done = subprocess.run([node, str(script), aws_limits.endpoint], capture_output=True, timeout=180, cwd=sdk)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    attempts = json.loads(done.stdout)
    assert len(attempts) == 30 and all(a >= 1 for a in attempts)
    assert sum(1 for a in attempts if a > 1) >= 10  # ListDatastores: burst 10; the rest waited and retried


def test_many_threads_share_one_limit(aws_limits: RunningServer) -> None:
    """A burst from 8 threads at GetDatastore (10 per second, burst 20): every call succeeds after
    retries, and the run lasts at least as long as the limit allows."""
    client = aws_limits.client(config=RETRYING, aws_access_key_id="threads")
    ds = client.create_datastore(datastoreName="threads")["datastoreId"]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers: list[Any] = list(pool.map(lambda _: client.get_datastore(datastoreId=ds), range(60)))
    elapsed = time.monotonic() - started
    assert all(a["datastoreProperties"]["datastoreId"] == ds for a in answers)
    assert sum(a["ResponseMetadata"]["RetryAttempts"] for a in answers) > 0
    assert elapsed >= (60 - 20) / 10 - 0.5


@pytest.mark.embedded_only("starts a server of its own with the DICOM port")
def test_dicom_associations_are_limited_per_calling_ae(tmp_path: Path) -> None:
    """A profile limiting ``openhi:DicomAssociation``: a calling AE title over its rate is refused
    (A-ASSOCIATE-RJ, rejected-transient, local limit exceeded); another AE title is not."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from openhi.testing.server import free_port

    profile = tmp_path / "limits.json"
    profile.write_text(json.dumps({"operations": {"openhi:DicomAssociation": {"rate": 0.01, "burst": 1}}}))
    port = free_port()
    args = ["--throttle", str(profile), "--dicom-port", str(port)]
    with RunningServer(tmp_path / "data", extra_args=args) as server:
        assert server.client().list_datastores()["datastoreSummaries"] == []  # the API is not limited

        def echo(calling: str) -> Any:
            ae = AE(ae_title=calling)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", port, ae_title="OPENHI")
            if assoc.is_established:
                status = assoc.send_c_echo()
                assoc.release()
                return int(status.Status)
            return assoc.acceptor.primitive

        deadline = time.monotonic() + 20
        first = echo("LIMITED")
        while first != 0x0000 and time.monotonic() < deadline:  # the listener may still be starting
            time.sleep(0.2)
            first = echo("LIMITED")
        assert first == 0x0000
        refused = echo("LIMITED")
        assert refused is not None and not isinstance(refused, int)
        assert (refused.result, refused.result_source, refused.diagnostic) == (0x02, 0x03, 0x02)
        assert echo("OTHER") == 0x0000
