"""What the DICOM front doors read: primary image sets by study / series / instance, documents, frames."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.errors import NotFoundError
from openhi.core.records import ImageSet
from openhi.dicom.document import decode_document

#: decoded documents kept in memory (LRU, by metadata blob key: a key's content never changes)
DOCUMENT_CACHE = 64


class DicomReader:
    """Lookups of the DICOMweb / DIMSE / export front doors on the primary (or a named) image set."""

    def __init__(self, env: Env, datastores: DatastoreService) -> None:
        self.env = env
        self.datastores = datastores
        self._docs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def live_datastore(self, datastore_id: str) -> None:
        """Raises NotFoundError unless the datastore exists and is ACTIVE."""
        self.datastores.get(datastore_id)

    def head(self, datastore_id: str, image_set_id: str) -> ImageSet:
        """A live image set's head. Raises NotFoundError (unknown or deleted)."""
        head = self.env.index.get_image_set(datastore_id, image_set_id)
        if head is None or head.state == "DELETED":
            self.live_datastore(datastore_id)
            raise NotFoundError(f"Image set {image_set_id} does not exist in datastore {datastore_id}.")
        return head

    def document(self, head: ImageSet) -> dict[str, Any]:
        """The decoded metadata document of the head's current content (cached; do not modify it).

        Raises NotFoundError when the set has no content (a copy still running into a new set).
        """
        version = self.env.index.get_version(head.datastore_id, head.id, head.content_version)
        if version is None or version.metadata_key is None:
            raise NotFoundError(f"Image set {head.id} has no metadata yet.")
        key = version.metadata_key
        with self._lock:
            doc = self._docs.get(key)
            if doc is not None:
                self._docs.move_to_end(key)
                return doc
        doc = decode_document(self.env.blobs.get(key))
        with self._lock:
            self._docs[key] = doc
            while len(self._docs) > DOCUMENT_CACHE:
                self._docs.popitem(last=False)
        return doc
