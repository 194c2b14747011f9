"""Every page of a search through an index adapter, each cursor made from the last set of the page before."""

from __future__ import annotations

import itertools
from typing import Any

from openhi.core.reads import cursor_value
from openhi.core.records import ImageSet
from openhi.ports.index import SearchQuery


def page_rows(
    index: Any, datastore_id: str, query: SearchQuery, limit: int, pages: int | None = None
) -> list[ImageSet]:
    """The sets of every page (or of the first ``pages``), as SearchImageSets pages through them."""
    out: list[ImageSet] = []
    after: tuple[Any, str] | None = None
    for _ in itertools.count() if pages is None else range(pages):
        rows = index.search_image_sets(datastore_id, query, after, limit)
        out += rows
        if len(rows) < limit:
            break
        after = (cursor_value(rows[-1], query.sort_field), rows[-1].id)
    return out
