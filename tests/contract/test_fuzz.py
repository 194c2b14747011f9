"""Contract test: thousands of model-driven hostile requests, signed, against a real server: never a 5xx,
every error a modeled JSON error, the server alive after, and no state change from what it rejected."""

from __future__ import annotations

import base64
import collections
import json
import os
import time
from typing import Any
from urllib.parse import parse_qsl

import pytest

from contract.fuzz_requests import LATEST, Case, Connection, Wire, all_cases, render, signed_headers
from contract.helpers import active_datastore, wait_for
from contract.imaging import ROLE, metadata, run_import, stage
from dicom_factory import make_ct_series
from openhi.awsapi.parser import parse_request
from openhi.awsapi.router import RouteNotFound, Router
from openhi.awsapi.service import load_service_model
from openhi.awsapi.validate import validate_params
from openhi.testing import RunningServer

#: cases per run (at least 5,000); OPENHI_FUZZ_CASES and OPENHI_FUZZ_SEED run a longer or another campaign
CASES = max(5000, int(os.environ.get("OPENHI_FUZZ_CASES", "6000")))
SEED = int(os.environ.get("OPENHI_FUZZ_SEED", "13"))
MISSING = "0" * 32
#: answered before any operation is known (no route for the method and path): not an operation's error
ROUTING_ERRORS = frozenset({"UnknownOperationException"})


class Target:
    """The fuzz target's real resources: a datastore with one imported image set, its job, its tags."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.client = server.client()
        self.ds = active_datastore(self.client, "fuzz")
        files = {f"ct/{i}.dcm": d for i, d in enumerate(make_ct_series(2, seed=31, patient_id="FUZZ"))}
        result = run_import(self.client, server, self.ds, files)
        assert result["job"]["jobStatus"] == "COMPLETED", result
        self.job_id = result["job"]["jobId"]
        self.set_id = result["manifest"]["imageSetsSummary"][0]["imageSetId"]
        doc = metadata(self.client, self.ds, self.set_id)
        series_uid, series = next(iter(doc["Study"]["Series"].items()))
        sop_uid, instance = next(iter(series["Instances"].items()))
        self.frame_id = instance["ImageFrames"][0]["ID"]
        self.copy_doc = json.dumps(
            {"SchemaVersion": "1.1", "Study": {"Series": {series_uid: {"Instances": {sop_uid: {}}}}}}
        )
        self.arn = self.client.get_datastore(datastoreId=self.ds)["datastoreProperties"]["datastoreArn"]
        self.client.tag_resource(resourceArn=self.arn, tags={"fuzz": "base"})
        self.input_uri = stage(server, {"not-dicom.txt": b"not a DICOM file"})
        self.latest = self.client.get_image_set(datastoreId=self.ds, imageSetId=self.set_id)["versionId"]

    def bases(self) -> dict[str, list[Wire]]:
        """Valid requests per operation, in wire terms (the first is the main one); deletes target ids
        that do not exist."""
        ds, image_set = {"datastoreId": self.ds}, {"datastoreId": self.ds, "imageSetId": self.set_id}
        update = base64.b64encode(
            json.dumps({"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "FUZZ BASE"}}}).encode()
        ).decode()
        copy_source = {"latestVersionId": LATEST, "DICOMCopies": {"copiableAttributes": self.copy_doc}}
        search = {
            "filters": [{"values": [{"DICOMPatientId": "FUZZ"}], "operator": "EQUAL"}],
            "sort": {"sortOrder": "ASC", "sortField": "updatedAt"},
        }
        between = {
            "filters": [
                {"values": [{"createdAt": 0}, {"createdAt": 4102444800}], "operator": "BETWEEN"},
                {
                    "values": [
                        {"DICOMStudyDateAndTime": {"DICOMStudyDate": "19000101", "DICOMStudyTime": "000000"}},
                        {"DICOMStudyDateAndTime": {"DICOMStudyDate": "21000101"}},
                    ],
                    "operator": "BETWEEN",
                },
            ]
        }
        bases = self._first_bases(ds, image_set, update, copy_source, search)
        extra = {
            "SearchImageSets": [
                Wire(ds, body=between),
                Wire(ds, body={"filters": [{"values": [{"isPrimary": True}], "operator": "EQUAL"}]}),
            ],
            "UpdateImageSetMetadata": [
                Wire(image_set, query=[("latestVersion", LATEST)], body={"revertToVersionId": "1"}),
                Wire(
                    image_set,
                    query=[("latestVersion", LATEST), ("force", "false"), ("includeStudyImageSets", "false")],
                    body={"DICOMUpdates": {"removableAttributes": update}},
                ),
            ],
            "CopyImageSet": [
                Wire(
                    {"datastoreId": self.ds, "sourceImageSetId": self.set_id},
                    query=[("force", "false"), ("promoteToPrimary", "false")],
                    body={
                        "sourceImageSet": {"latestVersionId": LATEST},
                        "destinationImageSet": {"imageSetId": MISSING, "latestVersionId": "1"},
                    },
                )
            ],
        }
        return {name: [wire, *extra.get(name, [])] for name, wire in bases.items()}

    def _first_bases(
        self, ds: dict[str, str], image_set: dict[str, str], update: str, copy_source: Any, search: Any
    ) -> dict[str, Wire]:
        return {
            "CreateDatastore": Wire(
                {},
                body={
                    "datastoreName": "fuzz-created",
                    "clientToken": "fuzz-create-token",
                    "tags": {"k": "v"},
                    "losslessStorageFormat": "HTJ2K",
                },
            ),
            "DeleteDatastore": Wire({"datastoreId": MISSING}),
            "GetDatastore": Wire(ds),
            "ListDatastores": Wire({}, query=[("datastoreStatus", "ACTIVE"), ("maxResults", "10")]),
            "StartDICOMImportJob": Wire(
                ds,
                body={
                    "jobName": "fuzz-job",
                    "dataAccessRoleArn": ROLE,
                    "clientToken": "fuzz-import-token",
                    "inputS3Uri": self.input_uri,
                    "outputS3Uri": "s3://output-bucket/fuzz/",
                },
            ),
            "GetDICOMImportJob": Wire({**ds, "jobId": self.job_id}),
            "ListDICOMImportJobs": Wire(ds, query=[("jobStatus", "COMPLETED"), ("maxResults", "10")]),
            "GetImageSet": Wire(image_set, query=[("version", "1")]),
            "GetImageSetMetadata": Wire(image_set, query=[("version", "1")]),
            "GetImageFrame": Wire(image_set, body={"imageFrameId": self.frame_id}),
            "ListImageSetVersions": Wire(image_set, query=[("maxResults", "5")]),
            "SearchImageSets": Wire(ds, query=[("maxResults", "5")], body=search),
            "UpdateImageSetMetadata": Wire(
                image_set,
                query=[("latestVersion", LATEST)],
                body={"DICOMUpdates": {"updatableAttributes": update}},
            ),
            "CopyImageSet": Wire(
                {"datastoreId": self.ds, "sourceImageSetId": self.set_id},
                body={"sourceImageSet": copy_source},
            ),
            "DeleteImageSet": Wire({"datastoreId": self.ds, "imageSetId": MISSING}),
            "ListTagsForResource": Wire({"resourceArn": self.arn}),
            "TagResource": Wire({"resourceArn": self.arn}, body={"tags": {"fuzz": "tagged"}}),
            "UntagResource": Wire({"resourceArn": self.arn}, query=[("tagKeys", "fuzz-absent")]),
        }

    def snapshot(self) -> dict[str, Any]:
        c = self.client
        datastores = {
            d["datastoreId"]: d["datastoreName"]
            for page in c.get_paginator("list_datastores").paginate()
            for d in page["datastoreSummaries"]
        }
        versions = [
            v["versionId"]
            for page in c.get_paginator("list_image_set_versions").paginate(
                datastoreId=self.ds, imageSetId=self.set_id
            )
            for v in page["imageSetPropertiesList"]
        ]
        image_sets = {
            s["imageSetId"]
            for page in c.get_paginator("search_image_sets").paginate(datastoreId=self.ds)
            for s in page["imageSetsMetadataSummaries"]
        }
        jobs = {
            j["jobId"]
            for page in c.get_paginator("list_dicom_import_jobs").paginate(datastoreId=self.ds)
            for j in page["jobSummaries"]
        }
        tags = c.list_tags_for_resource(resourceArn=self.arn)["tags"]
        return {
            "datastores": datastores,
            "versions": versions,
            "image_sets": image_sets,
            "jobs": jobs,
            "tags": tags,
        }

    def settle(self) -> dict[str, Any]:
        """Wait until the image set is not LOCKED; its current version's properties."""
        head = wait_for(
            lambda: self.client.get_image_set(datastoreId=self.ds, imageSetId=self.set_id),
            lambda r: r["imageSetState"] != "LOCKED",
            timeout=60,
        )
        self.latest = head["versionId"]
        return dict(head)


class Outcomes:
    """What the cases did: status histogram, problems, and the changes the accepted ones made."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.created_datastores: set[str] = set()
        self.created_image_sets: set[str] = set()
        self.started_jobs: set[str] = set()
        self.tags: dict[str, str] = {}
        self.updates = 0

    def problem(self, case: Case, text: str) -> None:
        self.problems.append(f"{case.op} [{case.label}]: {text}")

    def check_error(
        self, case: Case, allowed: frozenset[str], status: int, headers: dict[str, str], data: bytes
    ) -> None:
        code = headers.get("x-amzn-errortype", "").split(":")[0]
        self.errors[code or "(none)"] += 1
        if code not in allowed:
            self.problem(case, f"{status} x-amzn-ErrorType {code!r} is not an error of the operation")
        try:
            body = json.loads(data)
        except ValueError:
            self.problem(case, f"{status} body is not JSON: {data[:200]!r}")
            return
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            self.problem(case, f"{status} body has no message: {data[:200]!r}")

    def accepted(self, case: Case, op_name: str, query: str, body: bytes, data: bytes) -> None:
        """Account for the state change a 2xx request made (or flag one that must not succeed)."""
        t = self.target
        if op_name == "CreateDatastore":
            self.created_datastores.add(json.loads(data)["datastoreId"])
        elif op_name == "TagResource":
            self.tags.update({k: v for k, v in json.loads(body)["tags"].items() if v is not None})
        elif op_name == "UntagResource":
            for key, value in parse_qsl(query, keep_blank_values=True):
                if key == "tagKeys":
                    self.tags.pop(value, None)
        elif op_name == "StartDICOMImportJob":
            self.started_jobs.add(json.loads(data)["jobId"])
        elif op_name in ("UpdateImageSetMetadata", "CopyImageSet"):
            if op_name == "UpdateImageSetMetadata":
                self.updates += 1
            else:
                self.created_image_sets.add(json.loads(data)["destinationImageSetProperties"]["imageSetId"])
            head = t.settle()
            if head["imageSetState"] != "ACTIVE" or head["imageSetWorkflowStatus"].endswith("FAILED"):
                self.problem(
                    case, f"accepted, then the image set ended {head['imageSetWorkflowStatus']}: {head}"
                )
        elif op_name in ("DeleteDatastore", "DeleteImageSet"):
            self.problem(case, f"{op_name} of an id that does not exist succeeded")


def _run(target: Target, cases: list[Case]) -> Outcomes:
    model = load_service_model()
    router = Router(model)
    any_error = frozenset(
        e.name for n in model.operation_names for e in model.operation_model(n).error_shapes
    )
    allowed = {
        n: frozenset(e.name for e in model.operation_model(n).error_shapes) | ROUTING_ERRORS
        for n in model.operation_names
    }
    endpoint = target.server.endpoint
    outcomes = Outcomes(target)
    outcomes.tags = dict(target.client.list_tags_for_resource(resourceArn=target.arn)["tags"])
    conn = Connection(endpoint)
    try:
        for case in cases:
            op = model.operation_model(case.op)
            method, path, body, headers = render(op, case.wire, {LATEST: target.latest})
            signed = signed_headers(endpoint, method, path, body, headers)
            status, response_headers, data = conn.send(method, path, body, signed)
            outcomes.statuses[status] += 1
            if status >= 500:
                outcomes.problem(case, f"{status} {response_headers.get('x-amzn-errortype')} {data[:300]!r}")
            elif status >= 400:
                codes = any_error | ROUTING_ERRORS if case.wire.method else allowed[case.op]
                outcomes.check_error(case, codes, status, response_headers, data)
            else:
                try:
                    executed, _ = router.match(method, path.split("?", 1)[0])
                except RouteNotFound:
                    outcomes.problem(case, f"{status} for a request that matches no operation")
                    continue
                query = path.split("?", 1)[1] if "?" in path else ""
                outcomes.accepted(case, executed.name, query, body, data)
    finally:
        conn.close()
    return outcomes


def _check_bases(target: Target) -> None:
    """Every base request is valid for the model (so mutations start from a request that gets deep into
    the server), and the read-only ones succeed as sent."""
    model = load_service_model()
    router = Router(model)
    conn = Connection(target.server.endpoint)
    try:
        for name, wires in target.bases().items():
            op = model.operation_model(name)
            for wire in wires:
                method, path, body, headers = render(op, wire, {LATEST: target.latest})
                raw_path, _, query = path.partition("?")
                matched, labels = router.match(method, raw_path)
                assert matched.name == name
                params = parse_request(op, labels, query.encode(), {}, body)
                validate_params(op.input_shape, params)
                if name.startswith(("Get", "List", "Search")):
                    signed = signed_headers(target.server.endpoint, method, path, body, headers)
                    status, _, data = conn.send(method, path, body, signed)
                    assert status == 200, (name, status, data[:300])
    finally:
        conn.close()


@pytest.fixture(scope="module")
def target(openhi_server: RunningServer) -> Target:
    return Target(openhi_server)


def test_fuzzed_requests_never_fail_the_server(target: Target) -> None:
    model = load_service_model()
    cases = all_cases(model, target.bases(), {LATEST: target.latest}, total=CASES, seed=SEED)
    assert len(cases) >= 5000, f"only {len(cases)} cases"
    assert {c.op for c in cases} == set(model.operation_names)
    _check_bases(target)
    before = target.snapshot()
    started = time.monotonic()
    outcomes = _run(target, cases)
    elapsed = time.monotonic() - started
    target.settle()
    after = target.snapshot()

    summary = (
        f"{len(cases)} cases in {elapsed:.1f} s; statuses {dict(sorted(outcomes.statuses.items()))}; "
        f"error types {dict(outcomes.errors.most_common())}; accepted writes: "
        f"{len(outcomes.created_datastores)} datastores, {outcomes.updates} updates, "
        f"{len(outcomes.created_image_sets)} copies, {len(outcomes.started_jobs)} import jobs"
    )
    print("\nfuzz:", summary)
    assert not outcomes.problems, f"{len(outcomes.problems)} problems in {summary}:\n" + "\n".join(
        outcomes.problems[:200]
    )

    health = Connection(target.server.endpoint)
    status, _, body = health.send("GET", "/healthz", b"", {})
    health.close()
    assert status == 200 and json.loads(body)["status"] == "ok", body

    # no state change beyond what the accepted requests made
    assert {k: v for k, v in after["datastores"].items() if k not in outcomes.created_datastores} == before[
        "datastores"
    ]
    assert after["tags"] == outcomes.tags
    assert set(before["versions"]) <= set(after["versions"])
    assert len(after["versions"]) == len(before["versions"]) + outcomes.updates
    assert after["image_sets"] == before["image_sets"] | outcomes.created_image_sets
    assert after["jobs"] == before["jobs"] | outcomes.started_jobs


@pytest.mark.parametrize("version", [str(2**63), "9" * 4301])
def test_openhi_diff_with_out_of_range_versions(target: Target, version: str) -> None:
    path = f"/openhi/datastore/{target.ds}/imageSet/{target.set_id}/diff?from={version}&to=1"
    conn = Connection(target.server.endpoint)
    try:
        status, headers, body = conn.send(
            "GET", path, b"", signed_headers(target.server.endpoint, "GET", path, b"", {})
        )
    finally:
        conn.close()
    assert status < 500, body[:300]
    assert headers.get("x-amzn-errortype") in ("ValidationException", "ResourceNotFoundException")
