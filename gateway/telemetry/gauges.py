"""The gateway's state read as observable gauges: sessions by state, security-event backlog and delivery lag.

Session counts need the store (async), so a background loop refreshes a snapshot that the exporters read; the
events service answers `status()` synchronously and is read at export time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily

from ..store import SessionState, StoreUnavailable
from .metrics import Observations

if TYPE_CHECKING:
    from ..runtime import Gateway

log = logging.getLogger("ztgate.telemetry")

REFRESH_EVERY = 5.0  # seconds between session counts


class GatewayGauges:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        self.by_state: dict[str, int] = {}

    def register(self) -> None:
        t = self.gw.telemetry
        t.observable_gauge("ztgate_sessions", ("state",), self.sessions, "sessions by state")
        t.observable_gauge("ztgate_events_backlog", ("sink",), self.backlog, "security events not yet delivered")
        t.observable_gauge("ztgate_events_lag_seconds", ("sink",), self.lag,
                           "age of the oldest undelivered security event")
        t.registry.register(_DeadLettered(self))

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_EVERY)

    async def refresh(self) -> None:
        try:
            records = await self.gw.sessions.list()
        except StoreUnavailable:
            return
        counts = {str(s): 0 for s in SessionState}
        for r in records:
            counts[r.state] = counts.get(r.state, 0) + 1
        self.by_state = counts

    def sessions(self) -> Observations:
        return [(n, {"state": state}) for state, n in self.by_state.items()]

    def _sinks(self) -> list[dict]:
        events = self.gw.events
        return events.status().get("sinks", []) if events is not None else []

    def backlog(self) -> Observations:
        return [(s.get("backlog", 0), {"sink": str(s.get("name", ""))}) for s in self._sinks()]

    def lag(self) -> Observations:
        return [(s.get("lag_seconds", 0.0), {"sink": str(s.get("name", ""))}) for s in self._sinks()]


class _DeadLettered:
    """ztgate_events_dead_lettered_total{sink}: events this process moved to a sink's dead letters, read from the
    events service's status() like the gauges above, but typed as a counter so that rate() and OTLP (a Sum) fit."""

    def __init__(self, gauges: GatewayGauges) -> None:
        self.gauges = gauges

    def collect(self):
        family = CounterMetricFamily("ztgate_events_dead_lettered", "security events moved to a sink's dead letters",
                                     labels=("sink",))
        try:
            for s in self.gauges._sinks():
                family.add_metric([str(s.get("name", ""))], float(s.get("dead_lettered", 0)))
        except Exception:  # a broken reading must not break the scrape
            log.exception("reading ztgate_events_dead_lettered_total failed")
        yield family

    def describe(self):
        return []
