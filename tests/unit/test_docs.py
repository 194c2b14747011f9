"""Docs that must stay true: the compatibility table matches the handler registry and the model."""

from __future__ import annotations

import re
from pathlib import Path

from openhi.awsapi.service import load_service_model
from openhi.handlers.loader import load_all

ROOT = Path(__file__).resolve().parents[2]


def _table() -> dict[str, str]:
    text = (ROOT / "docs" / "compatibility.md").read_text()
    return {
        m[1]: m[2]
        for m in re.finditer(r"^\| (\w+) \| (\w[\w ]*?) \|", text, re.MULTILINE)
        if m[1] != "operation"
    }


def test_compatibility_table_lists_every_operation_once() -> None:
    assert sorted(_table()) == sorted(load_service_model().operation_names)


def test_compatibility_status_matches_the_registry() -> None:
    handlers = load_all()
    table = _table()
    implemented = {op for op, status in table.items() if status == "implemented"}
    assert implemented == set(handlers), "docs/compatibility.md disagrees with the handlers"


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```")[1]
    assert "make serve" in first_block and "make test" in first_block
    assert "AWS_ENDPOINT_URL_MEDICAL_IMAGING" in text and "AWS_DISABLE_HOST_PREFIX_INJECTION=true" in text


def test_docs_link_targets_exist() -> None:
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(((?!http)[^)#]+)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
