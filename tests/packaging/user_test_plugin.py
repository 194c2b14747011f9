"""A user's first test with openhi's pytest plugin; tests/packaging/run.sh copies it into a fresh venv's
project as test_openhi_plugin.py (it is not part of openhi's own suite)."""

from __future__ import annotations

from typing import Any


def test_create_and_list_a_datastore(medical_imaging: Any) -> None:
    created = medical_imaging.create_datastore(datastoreName="my-first-datastore")
    listed = medical_imaging.list_datastores()["datastoreSummaries"]
    assert [d["datastoreId"] for d in listed] == [created["datastoreId"]]
    assert listed[0]["datastoreName"] == "my-first-datastore"
