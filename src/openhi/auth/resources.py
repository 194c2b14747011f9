"""What each API operation acts on (datastore / image set ARNs) and the condition keys of its request."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from openhi.auth.conditions import REQUEST_TAG, RESOURCE_TAG, SERIES_KEY, STUDY_KEY, TAG_KEYS
from openhi.auth.evaluate import Target
from openhi.auth.routes import Request

#: operations without a resource of their own: the resource is ``*``
NO_RESOURCE = frozenset({"CreateDatastore", "ListDatastores"})
#: operations on a datastore
DATASTORE = frozenset(
    {
        "GetDatastore",
        "DeleteDatastore",
        "SearchImageSets",
        "StartDICOMImportJob",
        "GetDICOMImportJob",
        "ListDICOMImportJobs",
    }
)
#: operations on an image set: the datastore and the image set must both be allowed
IMAGE_SET = frozenset(
    {
        "CopyImageSet",
        "DeleteImageSet",
        "GetImageFrame",
        "GetImageSet",
        "GetImageSetMetadata",
        "ListImageSetVersions",
        "UpdateImageSetMetadata",
    }
)
#: operations on the resource named by ``resourceArn``
TAGGING = frozenset({"TagResource", "UntagResource", "ListTagsForResource"})


class ResourceLookup(Protocol):
    """What authorization reads from the server: ARNs, tags, and the UIDs of an image set."""

    def datastore_arn(self, datastore_id: str) -> str: ...

    def image_set_arn(self, datastore_id: str, image_set_id: str) -> str: ...

    def tags(self, arn: str) -> Mapping[str, str]: ...

    def image_set_uids(self, datastore_id: str, image_set_id: str) -> tuple[str | None, str | None]:
        """(StudyInstanceUID, SeriesInstanceUID) of the image set's current content."""
        ...


class RequestContext:
    """Condition keys of one target: request-level keys (computed lazily) plus the target's tags."""

    def __init__(
        self,
        request_keys: Callable[[], dict[str, list[str]]],
        tags: Callable[[], Mapping[str, str]] | None,
    ) -> None:
        self._request_keys = request_keys
        self._tags = tags
        self._tag_cache: dict[str, str] | None = None

    def get(self, key: str) -> Sequence[str] | None:
        if key.startswith(RESOURCE_TAG):
            if self._tags is None:
                return None
            if self._tag_cache is None:
                self._tag_cache = {k.lower(): v for k, v in self._tags().items()}
            value = self._tag_cache.get(key[len(RESOURCE_TAG) :])
            return None if value is None else [value]
        return self._request_keys().get(key)


def _once(fn: Callable[[], dict[str, list[str]]]) -> Callable[[], dict[str, list[str]]]:
    cache: list[dict[str, list[str]]] = []

    def get() -> dict[str, list[str]]:
        if not cache:
            cache.append(fn())
        return cache[0]

    return get


def _tag_keys(params: Mapping[str, Any]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    tags = params.get("tags")
    if isinstance(tags, dict):
        for k, v in tags.items():
            keys[f"{REQUEST_TAG}{str(k).lower()}"] = [str(v)]
        keys[TAG_KEYS] = [str(k) for k in tags]
    tag_keys = params.get("tagKeys")
    if isinstance(tag_keys, list):
        keys[TAG_KEYS] = [str(k) for k in tag_keys]
    return keys


def _uid_keys(study: str | None, series: str | None) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    if study:
        keys[STUDY_KEY] = [study]
    if series:
        keys[SERIES_KEY] = [series]
    return keys


def targets_for(op: str, lookup: ResourceLookup, params: Mapping[str, Any]) -> Sequence[Target]:
    """The targets of a parsed API request (``params`` as the wire parser made them)."""
    request_keys: Callable[[], dict[str, list[str]]] = _once(lambda: _tag_keys(params))
    if op in NO_RESOURCE:
        return (Target("*", RequestContext(request_keys, None)),)
    if op in TAGGING:
        arn = str(params.get("resourceArn", ""))
        return (Target(arn, RequestContext(request_keys, lambda: lookup.tags(arn))),)
    ds = str(params.get("datastoreId", ""))
    ds_arn = lookup.datastore_arn(ds)
    if op in DATASTORE:
        return (Target(ds_arn, RequestContext(request_keys, lambda: lookup.tags(ds_arn))),)
    if op not in IMAGE_SET:
        raise KeyError(f"no resources are defined for operation {op}")
    set_ids = [str(params.get("imageSetId") or params.get("sourceImageSetId") or "")]
    destination = (params.get("copyImageSetInformation") or {}).get("destinationImageSet") or {}
    if op == "CopyImageSet" and destination.get("imageSetId"):
        set_ids.append(str(destination["imageSetId"]))
    return image_set_targets(lookup, ds, set_ids, request_keys)


def image_set_targets(
    lookup: ResourceLookup,
    ds: str,
    set_ids: Sequence[str],
    extra_keys: Callable[[], dict[str, list[str]]] | None = None,
) -> Sequence[Target]:
    """The datastore and each image set; StudyInstanceUID / SeriesInstanceUID from the first set's head."""

    def keys() -> dict[str, list[str]]:
        found = _uid_keys(*lookup.image_set_uids(ds, set_ids[0]))
        return {**(extra_keys() if extra_keys else {}), **found}

    request_keys = _once(keys)
    ds_arn = lookup.datastore_arn(ds)
    targets = [Target(ds_arn, RequestContext(request_keys, lambda: lookup.tags(ds_arn)))]
    for set_id in set_ids:
        arn = lookup.image_set_arn(ds, set_id)
        targets.append(Target(arn, RequestContext(request_keys, _tags_of(lookup, arn))))
    return tuple(targets)


def _tags_of(lookup: ResourceLookup, arn: str) -> Callable[[], Mapping[str, str]]:
    return lambda: lookup.tags(arn)


def request_targets(op: str) -> Callable[[Any, Request], Sequence[Target]]:
    """A route's resources function for API operation ``op`` (reads ``services.resource_info``)."""

    def resources(services: Any, request: Request) -> Sequence[Target]:
        return targets_for(op, services.resource_info, request.params)

    return resources
