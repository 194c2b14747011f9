"""Blob keys: where frames and per-version metadata documents live in the blob store."""

from __future__ import annotations


def frame_key(datastore_id: str, frame_id: str) -> str:
    """Frames are immutable and shared by every version and copy that references them."""
    return f"frames/{datastore_id}/{frame_id}"


def metadata_key(datastore_id: str, image_set_id: str, version: int, nonce: str | None = None) -> str:
    """One gzip JSON document per version, never rewritten.

    ``nonce`` makes the key unique per attempt where a version number can be attempted twice with
    different content (an import re-run after a crash): blobs are write-once, so a retry needs a new key.
    """
    suffix = f"-{nonce}" if nonce else ""
    return f"metadata/{datastore_id}/{image_set_id}/{version}{suffix}.json.gz"
