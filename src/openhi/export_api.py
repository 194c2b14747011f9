"""The HealthImaging API calls ``openhi export`` makes, over its signed HTTP client instead of botocore's.

The methods take botocore's arguments and answer what botocore's ``medical-imaging`` client answers
(the fields export reads), so :mod:`openhi.export_plan` reads either; an error is a CommandError
``Code: message``, as botocore's ClientError is printed. Like the botocore client of the other
commands, a throttled or failed (5xx) call is tried once more.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any
from urllib.parse import quote

from openhi.cli_client import CommandError
from openhi.export_http import Answer, Client

#: statuses a call is retried on once (throttling, a server error), after this many seconds
_RETRIED = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER = 0.2


class Api:
    """GetDatastore, GetImageSet, GetImageSetMetadata and SearchImageSets on an openhi endpoint."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _call(self, method: str, path: str, query: str = "", body: Any = None) -> Answer:
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        answer = self.client.send(method, path, query=query, headers=headers, body=data)
        if answer.status in _RETRIED:
            time.sleep(RETRY_AFTER)
            answer = self.client.send(method, path, query=query, headers=headers, body=data)
        if not 200 <= answer.status < 300:
            raise CommandError(answer.error_message())
        return answer

    @staticmethod
    def _version(version: str | None) -> str:
        return "" if version is None else f"version={quote(str(version), safe='')}"

    def get_datastore(self, *, datastoreId: str) -> dict[str, Any]:  # botocore's argument names
        out: dict[str, Any] = json.loads(self._call("GET", f"/datastore/{datastoreId}").body)
        return out

    def get_image_set(
        self,
        *,
        datastoreId: str,
        imageSetId: str,
        versionId: str | None = None,
    ) -> dict[str, Any]:
        path = f"/datastore/{datastoreId}/imageSet/{imageSetId}/getImageSet"
        out: dict[str, Any] = json.loads(self._call("POST", path, self._version(versionId)).body)
        return out

    def get_image_set_metadata(
        self,
        *,
        datastoreId: str,
        imageSetId: str,
        versionId: str | None = None,
    ) -> dict[str, Any]:
        path = f"/datastore/{datastoreId}/imageSet/{imageSetId}/getImageSetMetadata"
        answer = self._call("POST", path, self._version(versionId))
        return {
            "imageSetMetadataBlob": io.BytesIO(answer.body),
            "contentType": answer.content_type,
            "contentEncoding": answer.content_encoding,
        }

    def search_image_sets(
        self,
        *,
        datastoreId: str,
        searchCriteria: dict[str, Any],
        maxResults: int,
        nextToken: str | None = None,
    ) -> dict[str, Any]:
        query = f"maxResults={maxResults}"
        if nextToken is not None:
            query += f"&nextToken={quote(nextToken, safe='')}"
        path = f"/datastore/{datastoreId}/searchImageSets"
        out: dict[str, Any] = json.loads(self._call("POST", path, query, searchCriteria).body)
        return out
