"""What a DICOMweb route acts on: its datastore, with the StudyInstanceUID / SeriesInstanceUID of its path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from openhi.auth.conditions import SERIES_KEY, STUDY_KEY
from openhi.auth.evaluate import Target
from openhi.auth.resources import RequestContext
from openhi.auth.routes import Request

#: the uri labels of every DICOMweb pattern
DATASTORE = "datastoreId"
STUDY = "StudyInstanceUID"
SERIES = "SeriesInstanceUID"
INSTANCE = "SOPInstanceUID"


def dicomweb_targets(services: Any, request: Request) -> Sequence[Target]:
    """The datastore ARN; the condition keys ``medical-imaging:StudyInstanceUID`` / ``SeriesInstanceUID``
    carry the UIDs the path names (AWS's condition keys of the DICOMweb actions)."""
    labels = request.labels
    lookup = services.resource_info
    keys: dict[str, list[str]] = {}
    if labels.get(STUDY):
        keys[STUDY_KEY] = [labels[STUDY]]
    if labels.get(SERIES):
        keys[SERIES_KEY] = [labels[SERIES]]
    arn = lookup.datastore_arn(labels.get(DATASTORE, ""))
    return (Target(arn, RequestContext(lambda: keys, lambda: lookup.tags(arn))),)
