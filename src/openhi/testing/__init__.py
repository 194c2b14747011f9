"""Test helpers for users and for openhi itself: real openhi servers (embedded or distributed), boto3 clients."""

from __future__ import annotations

from openhi.testing.distributed import DistributedDeployment
from openhi.testing.model_check import ResponseViolation, validate_responses
from openhi.testing.server import RunningServer, free_port

__all__ = ["DistributedDeployment", "ResponseViolation", "RunningServer", "free_port", "validate_responses"]
