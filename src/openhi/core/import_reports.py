"""An import job's output: the manifest and the SUCCESS, FAILURE and WARNING ndjson reports."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from openhi.core.records import ImportJob
from openhi.ports.objects import ObjectStore, parse_s3_uri

if TYPE_CHECKING:
    from openhi.core.import_run import Outcome


def write_reports(
    objects: ObjectStore,
    job: ImportJob,
    o: Outcome,
    placed: dict[str, tuple[str, int, bool]],
    summaries: dict[str, dict[str, Any]],
) -> None:
    """Write the reports under the job's output prefix (a regrouped attempt overwrites them)."""
    out_bucket, out_prefix = parse_s3_uri(job.output_s3_uri)
    base = job.output_s3_uri
    success_lines, warning_lines = [], []
    for key, p in o.success:
        set_id, version, primary = placed[p.sop_uid]
        response: dict[str, Any] = {"imageSetId": set_id, "imageSetVersion": version, "isPrimary": primary}
        success_lines.append({"inputFile": key, "importResponse": response})
        if p.warnings:
            warning_lines.append({"inputFile": key, "importResponse": {**response, "warnings": p.warnings}})
    manifest = {
        "jobSummary": {
            "jobId": job.id,
            "datastoreId": job.datastore_id,
            "inputS3Uri": job.input_s3_uri,
            "outputS3Uri": base,
            "successOutputS3Uri": f"{base}SUCCESS/",
            "failureOutputS3Uri": f"{base}FAILURE/",
            "warningsOutputS3Uri": f"{base}WARNING/",
            "numberOfScannedFiles": o.scanned,
            "numberOfImportedFiles": len(o.success),
            "numberOfFilesWithCustomerError": len(o.failures) - o.server_errors,
            "numberOfFilesWithServerError": o.server_errors,
            "numberOfGeneratedImageSets": len(summaries),
            "imageSetsSummary": list(summaries.values()),
        }
    }
    put = objects.put
    put(out_bucket, f"{out_prefix}SUCCESS/success.ndjson", _ndjson(success_lines))
    put(out_bucket, f"{out_prefix}FAILURE/failure.ndjson", _ndjson(o.failures))
    put(out_bucket, f"{out_prefix}WARNING/warning.ndjson", _ndjson(warning_lines))
    put(out_bucket, f"{out_prefix}job-output-manifest.json", json.dumps(manifest, indent=2).encode())


def _ndjson(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
