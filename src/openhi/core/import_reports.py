"""An import job's output: what became of its files, the manifest and the SUCCESS/FAILURE/WARNING reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from openhi.core.records import ImportJob
from openhi.dicom.instance import ProcessedInstance
from openhi.ports.objects import ObjectStore, parse_s3_uri

#: The warning a file gets when it repeats, byte for byte, an instance the job imported already.
DUPLICATE_WARNING = "IDENTICAL_DUPLICATE"


@dataclass
class Outcome:
    """What became of the job's files, for the output reports."""

    scanned: int = 0
    success: list[tuple[str, ProcessedInstance]] = field(default_factory=list)
    # files identical to an instance imported from an earlier file: (file, instance, earlier file)
    duplicates: list[tuple[str, ProcessedInstance, str]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    server_errors: int = 0
    # warnings about the job's inputs rather than one imported file (unmatched metadata mappings)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, key: str, exception_type: str, message: str) -> None:
        self.failures.append(failure_entry(key, exception_type, message))


def failure_entry(key: str, exception_type: str, message: str) -> dict[str, Any]:
    return {"inputFile": key, "exception": {"exceptionType": exception_type, "message": message}}


def write_reports(
    objects: ObjectStore,
    job: ImportJob,
    o: Outcome,
    placed: dict[str, tuple[str, int, bool]],
    summaries: dict[str, dict[str, Any]],
    rejected: list[dict[str, Any]] | None = None,
) -> None:
    """Write the reports under the job's output prefix (a regrouped attempt overwrites them).

    ``placed`` maps each imported SOP Instance UID to (image set, version, primary); ``rejected`` are
    the failure entries of instances the grouping refused (an image set's metadata grew too large).
    """
    out_bucket, out_prefix = parse_s3_uri(job.output_s3_uri)
    base = job.output_s3_uri
    failures = o.failures + list(rejected or [])
    success_lines, warning_lines = [], []
    for key, p in o.success:
        if p.sop_uid not in placed:
            continue  # refused by the grouping: among ``rejected``
        set_id, version, primary = placed[p.sop_uid]
        response: dict[str, Any] = {"imageSetId": set_id, "imageSetVersion": version, "isPrimary": primary}
        success_lines.append({"inputFile": key, "importResponse": response})
        if p.warnings:
            warning_lines.append({"inputFile": key, "importResponse": {**response, "warnings": p.warnings}})
    for key, p, first in o.duplicates:
        if p.sop_uid not in placed:
            failures.append(
                failure_entry(
                    key,
                    "ValidationException",
                    f"Duplicate of {first} (SOPInstanceUID {p.sop_uid}), which was not imported",
                )
            )
            continue
        set_id, version, primary = placed[p.sop_uid]
        response = {"imageSetId": set_id, "imageSetVersion": version, "isPrimary": primary}
        success_lines.append({"inputFile": key, "importResponse": response})
        warning = {
            "type": DUPLICATE_WARNING,
            "message": f"Same bytes as {first} (SOPInstanceUID {p.sop_uid}): the instance is stored once",
        }
        warning_lines.append({"inputFile": key, "importResponse": {**response, "warnings": [warning]}})
    warning_lines.extend(o.warnings)
    server_errors = sum(1 for f in failures if f["exception"]["exceptionType"] == "InternalServerException")
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
            "numberOfImportedFiles": len(success_lines),
            "numberOfFilesWithCustomerError": len(failures) - server_errors,
            "numberOfFilesWithServerError": server_errors,
            "numberOfGeneratedImageSets": len(summaries),
            "imageSetsSummary": list(summaries.values()),
        }
    }
    put = objects.put
    put(out_bucket, f"{out_prefix}SUCCESS/success.ndjson", _ndjson(success_lines))
    put(out_bucket, f"{out_prefix}FAILURE/failure.ndjson", _ndjson(failures))
    put(out_bucket, f"{out_prefix}WARNING/warning.ndjson", _ndjson(warning_lines))
    put(out_bucket, f"{out_prefix}job-output-manifest.json", json.dumps(manifest, indent=2).encode())


def _ndjson(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
