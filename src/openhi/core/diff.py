"""Version diff: the attributes, instances and series added, removed or changed between two documents."""

from __future__ import annotations

from typing import Any

from openhi.core.env import Env
from openhi.core.errors import ConflictError, NotFoundError, ValidationError
from openhi.dicom.document import decode_document

Change = dict[str, Any]


def _attributes(changes: list[Change], level: str, path: str, a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in sorted(set(a) | set(b)):
        where = f"{path}.DICOM.{key}"
        if key not in b:
            changes.append({"change": "removed", "level": level, "path": where, "from": a[key]})
        elif key not in a:
            changes.append({"change": "added", "level": level, "path": where, "to": b[key]})
        elif a[key] != b[key]:
            changes.append({"change": "changed", "level": level, "path": where, "from": a[key], "to": b[key]})


def _nodes(
    changes: list[Change], level: str, path: str, a: dict[str, Any], b: dict[str, Any]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Report keys only one side has; return the (key, a, b) pairs both sides have."""
    both = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            changes.append({"change": "removed", "level": level, "path": f"{path}.{key}"})
        elif key not in a:
            changes.append({"change": "added", "level": level, "path": f"{path}.{key}"})
        else:
            both.append((key, a[key], b[key]))
    return both


def diff_documents(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    """Changes from document ``a`` to ``b``, Patient → Study → Series → Instance, keys sorted.

    A series or instance only one side has is one ``added``/``removed`` change (path
    ``Study.Series.<uid>`` / ``Study.Series.<uid>.Instances.<uid>``); attributes are compared in the
    ``DICOM`` maps of nodes both sides have (path ``….DICOM.<Keyword>``) with ``from``/``to`` values.
    """
    changes: list[Change] = []
    _attributes(changes, "Patient", "Patient", a["Patient"]["DICOM"], b["Patient"]["DICOM"])
    _attributes(changes, "Study", "Study", a["Study"]["DICOM"], b["Study"]["DICOM"])
    series_pairs = _nodes(changes, "Series", "Study.Series", a["Study"]["Series"], b["Study"]["Series"])
    for uid, sa, sb in series_pairs:
        path = f"Study.Series.{uid}"
        _attributes(changes, "Series", path, sa["DICOM"], sb["DICOM"])
        for sop, ia, ib in _nodes(changes, "Instance", f"{path}.Instances", sa["Instances"], sb["Instances"]):
            _attributes(changes, "Instance", f"{path}.Instances.{sop}", ia["DICOM"], ib["DICOM"])
    return changes


#: the largest version number an index can hold (a signed 64-bit integer)
_MAX_VERSION = 2**63 - 1


def _version(text: str | None, name: str) -> int:
    if text is None or not text.isascii() or not text.isdigit():
        raise ValidationError(f"Query parameter '{name}' must be a version number (1, 2, ...).")
    digits = text.lstrip("0")
    if not digits:
        raise ValidationError(f"Query parameter '{name}' must be a version number (1, 2, ...).")
    if len(digits) > 19 or int(digits) > _MAX_VERSION:
        raise NotFoundError(f"Version {digits[:24]}{'...' if len(digits) > 24 else ''} does not exist.")
    return int(digits)


def diff_versions(
    env: Env, datastore_id: str, image_set_id: str, from_text: str | None, to_text: str | None
) -> dict[str, Any]:
    """The ``/openhi/.../diff`` answer for two versions of one image set.

    Raises:
        ValidationError: ``from``/``to`` missing or not version numbers.
        NotFoundError: no such datastore, image set or version, or its metadata was collected (deleted set).
        ConflictError: a version's operation is still running.
    """
    start, end = _version(from_text, "from"), _version(to_text, "to")
    if env.index.get_datastore(datastore_id) is None:
        raise NotFoundError(f"Datastore {datastore_id} does not exist.")
    head = env.index.get_image_set(datastore_id, image_set_id)
    if head is None:
        raise NotFoundError(f"Image set {image_set_id} does not exist in datastore {datastore_id}.")
    if head.state == "DELETED":
        raise NotFoundError(f"ImageSet {image_set_id} has been deleted; its metadata is gone.")
    docs = []
    for number in (start, end):
        row = env.index.get_version(datastore_id, image_set_id, number)
        if row is None:
            raise NotFoundError(f"ImageSet {image_set_id} has no version {number}.")
        if row.state == "LOCKED" or row.metadata_key is None:
            raise ConflictError(f"Version {number} of ImageSet {image_set_id} has no metadata yet.")
        docs.append(decode_document(env.blobs.get(row.metadata_key)))
    return {
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "from": str(start),
        "to": str(end),
        "changes": diff_documents(docs[0], docs[1]),
    }
