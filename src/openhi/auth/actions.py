"""The action names a policy may use: the AWS API operations, the DICOMweb actions, and openhi's own routes."""

from __future__ import annotations

from openhi.core.errors import ValidationError

SERVICE_PREFIX = "medical-imaging"
OPENHI_PREFIX = "openhi"

#: the operations of the HealthImaging API (one action each, ``medical-imaging:<Operation>``)
API_OPERATIONS = (
    "CopyImageSet",
    "CreateDatastore",
    "DeleteDatastore",
    "DeleteImageSet",
    "GetDICOMImportJob",
    "GetDatastore",
    "GetImageFrame",
    "GetImageSet",
    "GetImageSetMetadata",
    "ListDICOMImportJobs",
    "ListDatastores",
    "ListImageSetVersions",
    "ListTagsForResource",
    "SearchImageSets",
    "StartDICOMImportJob",
    "TagResource",
    "UntagResource",
    "UpdateImageSetMetadata",
)

#: the DICOMweb actions of the service (valid in policies; openhi serves DICOMweb routes under them)
DICOMWEB_ACTIONS = (
    "GetDICOMInstance",
    "GetDICOMInstanceMetadata",
    "GetDICOMInstanceFrames",
    "GetDICOMSeriesMetadata",
    "GetDICOMBulkdata",
    "SearchDICOMStudies",
    "SearchDICOMSeries",
    "SearchDICOMInstances",
    "StoreDICOM",
    "StoreDICOMStudy",
)

#: openhi's own routes under /openhi/ (not part of the AWS service)
OPENHI_ACTIONS = (
    "GetImageSetDiff",
    "PutImportInput",
    "GetImportOutput",
    "DeleteImportInput",
    "GetFaults",  # GET /openhi/faults: the fault-injection rules in force
    "PutFaults",  # PUT /openhi/faults: replace them
    "DeleteFaults",  # DELETE /openhi/faults: clear them
    "GetEvents",  # GET /openhi/events: the event feed
    "GetMetrics",  # GET /metrics: the Prometheus metrics (open instead with serve --metrics-public)
    "SendDICOM",  # POST /openhi/datastore/{id}/send: push a study or series to a --dicom-peer (C-STORE)
)

KNOWN_ACTIONS: frozenset[str] = frozenset(
    [f"{SERVICE_PREFIX}:{name}" for name in API_OPERATIONS + DICOMWEB_ACTIONS]
    + [f"{OPENHI_PREFIX}:{name}" for name in OPENHI_ACTIONS]
)
_KNOWN_LOWER = {a.lower(): a for a in KNOWN_ACTIONS}


def api_action(operation: str) -> str:
    """``medical-imaging:<operation>`` for a model operation."""
    return canonical_action(f"{SERVICE_PREFIX}:{operation}")


def canonical_action(name: str) -> str:
    """The known action ``name`` names (case-insensitive, as IAM matches actions); ValidationError if none."""
    found = _KNOWN_LOWER.get(name.lower())
    if found is None:
        raise ValidationError(f"unknown action {name!r}")
    return found
