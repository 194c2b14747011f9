"""Contract-suite fixtures: every medical-imaging client here checks each response against the model.

The switch is the plugin's own ``openhi_validate_responses`` ini option (pyproject.toml), so the clients
of ``medical_imaging``, ``openhi_server.client()`` and ``RunningServer(...).client()`` are all checked;
a test that needs a client with botocore's request-side validation off uses ``raw_medical_imaging``.
"""

from __future__ import annotations

from typing import Any

import pytest

from openhi.testing import model_check


@pytest.fixture(scope="session", autouse=True)
def _responses_checked(pytestconfig: pytest.Config) -> None:
    """The contract suite never runs without the response check (it guards the wire contract)."""
    if not model_check.default_enabled():
        pytest.fail(
            "the contract suite runs with openhi_validate_responses = true "
            "([tool.pytest.ini_options] in pyproject.toml) or --openhi-validate-responses"
        )


@pytest.fixture()
def raw_medical_imaging(openhi_server: Any) -> Any:
    """A client of the session's server that sends what it is given (no request-side parameter
    validation), to reach the server's own validation; its responses are checked like any other."""
    from botocore.config import Config

    config = Config(inject_host_prefix=False, parameter_validation=False, retries={"max_attempts": 1})
    return openhi_server.client(config=config, validate_responses=True)
