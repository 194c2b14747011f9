"""The dependency rule of docs/architecture.md, checked on the source: the core stays free of the edges."""

from __future__ import annotations

import ast
from pathlib import Path

import openhi

SRC = Path(openhi.__file__).parent
FORBIDDEN_IN_CORE = (
    "openhi.awsapi",
    "openhi.handlers",
    "openhi.storage",
    "openhi.asgi",
    "openhi.server",
    "openhi.services",
    "openhi.dicomweb",
    "openhi.dimse",
    "openhi.console",
    "openhi.throttle",
    "openhi.metrics",
    "openhi.observability",
    "starlette",
    "uvicorn",
    "botocore",
    "boto3",
    "sqlite3",
    "psycopg",
    "obstore",
    "pynetdicom",
    "jinja2",
    "prometheus_client",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(SRC)} imports {name}")
    return found


def test_core_imports_nothing_from_the_edges() -> None:
    assert _violations("core", FORBIDDEN_IN_CORE) == []


def test_ports_import_only_core() -> None:
    assert _violations("ports", FORBIDDEN_IN_CORE) == []


def test_codec_and_dicom_know_no_server() -> None:
    edges = ("openhi.awsapi", "openhi.handlers", "openhi.storage", "openhi.asgi", "starlette", "botocore")
    assert _violations("codec", edges) == []
    assert _violations("dicom", edges) == []


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(p.relative_to(SRC))
        for p in sorted(SRC.rglob("*.py"))
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []
