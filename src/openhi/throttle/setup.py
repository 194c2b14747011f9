"""The request guard of a server's configuration: ``--throttle`` and ``--faults``."""

from __future__ import annotations

import os

from openhi.core.errors import ValidationError
from openhi.storage.errors import ConfigurationError
from openhi.throttle.faults import load_faults
from openhi.throttle.guard import Guard, Limiter, activate
from openhi.throttle.profiles import load_profile

#: how many API processes share the limits on this machine (``serve --workers N`` sets it; default 1)
PROCESSES_ENV = "OPENHI_PROCESSES"


def process_count() -> int:
    """The API processes on this machine that split each limit (``$OPENHI_PROCESSES``, default 1)."""
    try:
        return max(1, int(os.environ.get(PROCESSES_ENV, "1")))
    except ValueError:
        return 1


def request_guard(throttle: str, faults: str | None) -> Guard | None:
    """The guard the app consults for every request, or None when nothing is configured (``--throttle
    off`` and no ``--faults``): then the app does not call anything.

    Each process enforces its share of every limit: the profile's limit divided by the processes on this
    machine (:func:`process_count`) and by the profile's ``machines``.

    Raises:
        ConfigurationError: the profile or the fault file cannot be used (the message names it).
    """
    try:
        profile = load_profile(throttle)
        rules = None if faults is None else load_faults(faults)
    except ValidationError as exc:
        raise ConfigurationError(exc.message) from None
    limiter = None if profile is None else Limiter(profile, process_count() * profile.machines)
    activate(limiter)
    if limiter is None and rules is None:
        return None
    return Guard(limiter, rules)
