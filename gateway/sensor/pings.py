"""Application-level RTT: the gateway pings the page's sensor and turns each pong into a PROBE event.

The browser answers `{"ping": id}` at once (sensor.js), so the time from sending the ping to receiving the pong is
the round trip through everything between the gateway and the page's JavaScript, relays included. Compared with
the kernel's TCP RTT of the same client (a NET event) it exposes remote-control chains.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np

from scoring.events import Kind, Probe, Source, make_batch

from .protocol import Pong


class PingTracker:
    """Outstanding pings of one sensor connection (bounded; unanswered pings are forgotten oldest first)."""

    def __init__(self, max_outstanding: int = 8, max_age_ms: float = 60_000.0) -> None:
        if max_outstanding < 1 or max_age_ms <= 0:
            raise ValueError("max_outstanding must be >= 1 and max_age_ms > 0")
        self.max_outstanding = max_outstanding
        self.max_age_ms = max_age_ms
        self._next_id = 1
        self._sent: OrderedDict[int, float] = OrderedDict()
        self.unanswered = 0
        self.unknown = 0

    def ping(self, now_ms: float) -> str:
        """The ping message to send now (text frame)."""
        ping_id = self._next_id
        self._next_id += 1
        self._sent[ping_id] = now_ms
        while len(self._sent) > self.max_outstanding:
            self._sent.popitem(last=False)
            self.unanswered += 1
        return json.dumps({"ping": ping_id}, separators=(",", ":"))

    def pong(self, pong: Pong, now_ms: float, *, time_origin: float | None = None) -> np.ndarray | None:
        """A one-event PROBE batch (value = RTT ms), or None for a pong to no ping of ours (counted in `unknown`).

        `t_src` is the page's clock (timeOrigin + performance.now()) when the page's time origin is known,
        otherwise the arrival time.
        """
        sent = self._sent.pop(pong.ping_id, None)
        if sent is None or now_ms - sent > self.max_age_ms or now_ms < sent:
            self.unknown += 1
            return None
        t_src = time_origin + pong.t_page_ms if time_origin is not None else now_ms
        return make_batch(
            t_src, now_ms, Kind.PROBE, detail=Probe.SENSOR_PING, source=Source.SENSOR, value=now_ms - sent
        )
