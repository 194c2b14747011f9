"""pytest plugin (auto-registered): ``openhi_server`` (shared per session) and ``openhi_fresh`` fixtures.

``OPENHI_TEST_DEPLOYMENT=distributed`` (or ``--openhi-deployment=distributed``) makes them start a
:class:`~openhi.testing.distributed.DistributedDeployment` (PostgreSQL + SeaweedFS, 2 API processes,
2 import workers) instead of an embedded server, so one contract suite runs against both.

``--openhi-validate-responses`` (or the ini option ``openhi_validate_responses = true``) makes every
``medical-imaging`` client these fixtures hand out (``medical_imaging``, ``server.client()``) check each
response against the service model (:mod:`openhi.testing.model_check`); a violation fails the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openhi.testing import model_check
from openhi.testing.server import RunningServer

_VALIDATE_HELP = (
    "check every response of the medical-imaging clients the openhi fixtures create against the "
    "service model (pattern, length, enum, range, required and unknown members); a violation fails the test"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--openhi-deployment",
        choices=("embedded", "distributed"),
        default=None,
        help="what the openhi_server/openhi_fresh fixtures start (default $OPENHI_TEST_DEPLOYMENT or embedded)",
    )
    parser.addoption("--openhi-validate-responses", action="store_true", default=False, help=_VALIDATE_HELP)
    parser.addini("openhi_validate_responses", _VALIDATE_HELP, type="bool", default=False)


def validating(config: pytest.Config) -> bool:
    """Whether the response check is on (the command-line flag or the ini option)."""
    return bool(config.getoption("--openhi-validate-responses", default=False)) or bool(
        config.getini("openhi_validate_responses")
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "openhi_env(**env): environment variables for the server openhi_fresh starts"
    )
    config.addinivalue_line(
        "markers", "distributed: starts a distributed deployment (PostgreSQL + SeaweedFS) of its own"
    )
    config.addinivalue_line(
        "markers", "embedded_only(reason): the test needs the embedded deployment (skipped when distributed)"
    )
    config.addinivalue_line(
        "markers",
        "deployment_aware: the test's own fixtures start the selected deployment (kept in distributed runs)",
    )
    if validating(config):
        model_check.set_default(True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A violation the test swallowed (a client call in a thread, a broad ``except``) still fails it."""
    model_check.take_recorded()
    result = yield
    missed = model_check.take_recorded()
    if missed:
        raise model_check.ResponseViolation(missed)
    return result


def deployment(config: pytest.Config) -> str:
    chosen = config.getoption("--openhi-deployment", default=None)
    return str(chosen or os.environ.get("OPENHI_TEST_DEPLOYMENT") or "embedded")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Distributed runs: only tests that go through the deployment fixtures (the others start embedded
    servers of their own and already ran in the embedded run), and tests marked deployment_aware (their
    own fixtures start the selected deployment); embedded_only tests are skipped."""
    if deployment(config) != "distributed":
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        own = item.get_closest_marker("deployment_aware") is not None  # starts the selected deployment itself
        (kept if own or names & {"openhi_server", "openhi_fresh", "medical_imaging"} else dropped).append(
            item
        )
        marker = item.get_closest_marker("embedded_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "embedded only")
            item.add_marker(pytest.mark.skip(reason=f"embedded deployment only: {reason}"))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _start(config: pytest.Config, workdir: Path, env: dict[str, str] | None = None, weed: Any = None) -> Any:
    if deployment(config) != "distributed":
        return RunningServer(workdir / "data", env=env).start()
    from openhi.testing.distributed import DistributedDeployment, unavailable

    reason = unavailable()
    if reason is not None:
        pytest.fail(f"OPENHI_TEST_DEPLOYMENT=distributed, but: {reason}")
    return DistributedDeployment(workdir, weed=weed, env=env).start()


@pytest.fixture(scope="session")
def _openhi_weed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One SeaweedFS server for every distributed deployment of the session (None when embedded)."""
    if deployment(request.config) != "distributed":
        yield None
        return
    from openhi.testing.weed import WeedServer

    weed = WeedServer()
    weed.start(tmp_path_factory.mktemp("openhi-weed"))
    try:
        yield weed
    finally:
        weed.stop()


@pytest.fixture(scope="session")
def openhi_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, _openhi_weed: Any
) -> Iterator[Any]:
    """One real openhi deployment for the whole test session (embedded storage in a temp dir)."""
    server = _start(request.config, tmp_path_factory.mktemp("openhi"), weed=_openhi_weed)
    try:
        yield server
    finally:
        server.stop()
        server.close()


@pytest.fixture()
def openhi_fresh(request: pytest.FixtureRequest, tmp_path: Path, _openhi_weed: Any) -> Iterator[Any]:
    """A real openhi deployment of its own, for tests that restart or kill it.

    ``@pytest.mark.openhi_env(NAME="value")`` sets environment variables of its processes.
    """
    marker = request.node.get_closest_marker("openhi_env")
    env = {k: str(v) for k, v in marker.kwargs.items()} if marker is not None else None
    server = _start(request.config, tmp_path, env=env, weed=_openhi_weed)
    try:
        yield server
    finally:
        server.kill()
        server.close()


@pytest.fixture()
def medical_imaging(openhi_server: Any) -> Any:
    """A boto3 ``medical-imaging`` client bound to the session's openhi server."""
    return openhi_server.client()
