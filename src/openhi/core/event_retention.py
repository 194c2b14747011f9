"""Event retention: a thread that removes events older than ``event_retention_seconds`` from the feed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from openhi.core.env import Env
from openhi.core.periodic import PeriodicWork

log = logging.getLogger("openhi.events")

#: events removed per transaction (a long backlog goes in several short ones)
BATCH = 5000
#: how often a process looks for events to remove (at most; sooner for short retentions)
EVERY_SECONDS = 3600.0


class EventPruner(PeriodicWork):
    """Every :data:`EVERY_SECONDS` (or a tenth of the retention, when shorter), removes the events older
    than the retention that every webhook of ``webhooks`` (names) has delivered: a configured receiver
    never loses an event to retention. A webhook not registered yet keeps everything until it is. The
    feed's last event always stays (its ``seq`` numbers the next one)."""

    thread_name = "openhi-event-retention"
    failure = "removing old events failed"
    join_seconds = 15.0

    def __init__(self, env: Env, webhooks: Sequence[str] = ()) -> None:
        self.retention = env.settings.event_retention_seconds
        super().__init__(min(EVERY_SECONDS, max(1.0, self.retention / 10)), log)
        self.env = env
        self.webhooks = tuple(webhooks)

    def start(self) -> EventPruner:
        return super().start() if self.retention > 0 else self

    def run_once(self) -> int:
        """Remove what is due now; how many events went."""
        index = self.env.index
        through = index.last_event_seq()
        if self.webhooks:
            cursors = {c.name: c.delivered_seq for c in index.webhook_cursors()}
            if any(name not in cursors for name in self.webhooks):
                return 0  # a webhook that has not started yet gets the feed from its first event
            through = min([through, *(cursors[name] for name in self.webhooks)])
        before = self.env.clock() - self.retention
        removed = 0
        while not self.stopping:
            n = index.prune_events(before, through, BATCH)
            removed += n
            if n < BATCH:
                break
        if removed:
            log.info("removed %d events older than %.0f s from the feed", removed, self.retention)
        return removed
