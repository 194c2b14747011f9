"""Blob keys: where frames and per-version metadata documents live in the blob store."""

from __future__ import annotations


def frame_key(datastore_id: str, frame_id: str) -> str:
    """Frames are immutable and shared by every version and copy that references them."""
    return f"frames/{datastore_id}/{frame_id}"


def metadata_key(datastore_id: str, image_set_id: str, version: int) -> str:
    """One gzip JSON document per version, never rewritten."""
    return f"metadata/{datastore_id}/{image_set_id}/{version}.json.gz"
