"""Image set documents for the console: decoded once per stored metadata blob (blobs are immutable, so
a small LRU keyed by blob key is always right), the metadata tree as HTML, and version diffs."""

from __future__ import annotations

import collections
import json
import threading
from html import escape
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from openhi.core.diff import diff_documents
from openhi.core.errors import ConflictError, NotFoundError, ValidationError
from openhi.dicom.document import decode_document
from openhi.ports.blobs import BlobNotFound

if TYPE_CHECKING:
    from openhi.services import Services

#: the levels opened when the tree is shown
_OPEN = frozenset({"Patient", "Study", "DICOM", "Series"})


_CACHE_SIZE = 16
_cache: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
_cache_lock = threading.Lock()


def _decoded(blobs: Any, key: str) -> dict[str, Any]:
    """The decoded document of metadata blob ``key`` (blob keys never name other bytes later)."""
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    document = decode_document(blobs.get(key))
    with _cache_lock:
        _cache[key] = document
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return document


def version_document(services: Services, datastore_id: str, image_set_id: str, number: int) -> dict[str, Any]:
    """The decoded document of one version (callers must not change it: it is shared).

    Raises:
        NotFoundError: no such image set or version, or its metadata is no longer stored.
        ConflictError: the version's operation is still running.
    """
    row = services.env.index.get_version(datastore_id, image_set_id, number)
    if row is None:
        raise NotFoundError(f"ImageSet {image_set_id} has no version {number}.")
    if row.state == "LOCKED" or row.metadata_key is None:
        raise ConflictError(f"Version {number} of ImageSet {image_set_id} has no metadata yet.")
    try:
        return _decoded(services.env.blobs, row.metadata_key)
    except BlobNotFound:
        raise NotFoundError(f"The metadata of version {number} of {image_set_id} is not stored.") from None


def version_number(text: str | None, name: str) -> int:
    """Raises ValidationError unless ``text`` is a version number."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) < 1:
        raise ValidationError(f"The {name} version must be a version number (1, 2, ...).")
    return int(text)


def diff(services: Services, datastore_id: str, image_set_id: str, frm: str, to: str) -> dict[str, Any]:
    """The changes between two versions (the ``/openhi/.../diff`` answer's shape).

    Raises:
        ValidationError, NotFoundError, ConflictError: see :func:`version_number`, :func:`version_document`.
    """
    start, end = version_number(frm, "first"), version_number(to, "second")
    changes = diff_documents(
        version_document(services, datastore_id, image_set_id, start),
        version_document(services, datastore_id, image_set_id, end),
    )
    return {"from": str(start), "to": str(end), "changes": changes}


def _value(value: Any) -> str:
    return escape(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def _node(out: list[str], name: str, value: Any, opened: bool) -> None:
    if isinstance(value, dict):
        out.append(
            f"<details{' open' if opened else ''}><summary>{escape(name)} "
            f'<span class="count">{len(value)}</span></summary><ul class="tree">'
        )
        for key, child in value.items():
            out.append("<li>")
            _node(out, str(key), child, key in _OPEN)
            out.append("</li>")
        out.append("</ul></details>")
    else:
        out.append(f'<span class="key">{escape(name)}</span> <span class="val">{_value(value)}</span>')


def tree_html(name: str, document: dict[str, Any]) -> Markup:
    """The document as nested ``<details>`` (Patient, Study, DICOM and Series levels open), escaped."""
    out: list[str] = []
    _node(out, name, document, True)
    return Markup("".join(out))
