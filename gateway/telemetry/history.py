"""A bounded ring of each live session's risk and signal scores over time, for the dashboard's plots.

Kept by the process that scores the session (others answer with an empty history and the browser keeps what it
polls). Bounded: 240 points (one per second at most) for each of the last 1,000 sessions scored, a few tens of MB
at worst. Numbers only: risk, per-signal scores, the relay's estimated added latency and which input sources fed
the scorer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from scoring.events import Source

SOURCE_NAMES = {int(s): s.name.lower() for s in Source}


@dataclass(slots=True)
class Point:
    t: float
    risk: float
    signals: dict[str, float]
    added_latency_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "risk": self.risk, "signals": self.signals,
                "added_latency_ms": self.added_latency_ms}


@dataclass(slots=True)
class _Track:
    points: deque[Point]
    sources: dict[str, int] = field(default_factory=dict)


class SessionHistory:
    def __init__(self, points_per_session: int = 240, max_sessions: int = 1000, min_interval: float = 1.0) -> None:
        self.points_per_session = points_per_session
        self.max_sessions = max_sessions
        self.min_interval = min_interval  # closer updates replace the last point: a burst is one point
        self._tracks: dict[str, _Track] = {}

    def record(self, sid: str, t: float, assessment: Any, source_codes: Iterable[int] = ()) -> None:
        track = self._tracks.get(sid)
        if track is None:
            if len(self._tracks) >= self.max_sessions:
                self._tracks.pop(next(iter(self._tracks)))  # the oldest tracked session
            track = self._tracks[sid] = _Track(deque(maxlen=self.points_per_session))
        for code in source_codes:
            name = SOURCE_NAMES.get(int(code), "other")
            track.sources[name] = track.sources.get(name, 0) + 1
        relay = assessment.signals.get("relay")
        added = relay.details.get("added_latency_ms") if relay is not None and relay.sufficient else None
        point = Point(t, round(float(assessment.risk), 4),
                      {name: round(float(s.score), 4) for name, s in assessment.signals.items()},
                      round(float(added), 1) if added is not None else None)
        if track.points and t - track.points[-1].t < self.min_interval:
            track.points[-1] = point
        else:
            track.points.append(point)

    def points(self, sid: str, since: float = 0.0) -> list[dict[str, Any]]:
        track = self._tracks.get(sid)
        return [p.to_dict() for p in track.points if p.t > since] if track else []

    def sources(self, sid: str) -> dict[str, int]:
        """How many scorer updates each input source fed (sensor, guacamole, rfb, terminal, gateway)."""
        track = self._tracks.get(sid)
        return dict(track.sources) if track else {}

    def forget(self, sid: str) -> None:
        self._tracks.pop(sid, None)

    def __len__(self) -> int:
        return len(self._tracks)
