import json

import pytest

from gateway.sensor.pings import PingTracker
from gateway.sensor.protocol import Pong
from scoring.events import Kind, Probe, Source


def test_ping_pong_gives_a_probe_event():
    tracker = PingTracker()
    message = json.loads(tracker.ping(1000.0))
    probe = tracker.pong(Pong(message["ping"], 250.0), 1042.5, time_origin=5e12)
    assert len(probe) == 1
    assert probe["kind"][0] == Kind.PROBE and probe["detail"][0] == Probe.SENSOR_PING
    assert probe["source"][0] == Source.SENSOR
    assert probe["value"][0] == pytest.approx(42.5)
    assert probe["t_src"][0] == 5e12 + 250.0 and probe["t_arr"][0] == 1042.5


def test_unknown_duplicate_and_stale_pongs():
    tracker = PingTracker(max_outstanding=2, max_age_ms=1000)
    ids = [json.loads(tracker.ping(t))["ping"] for t in (0.0, 1.0, 2.0)]
    assert tracker.unanswered == 1  # the first was forgotten
    assert tracker.pong(Pong(ids[0], 0), 5.0) is None
    assert tracker.pong(Pong(ids[1], 0), 5.0) is not None
    assert tracker.pong(Pong(ids[1], 0), 6.0) is None  # answered twice
    assert tracker.pong(Pong(ids[2], 0), 5000.0) is None  # too late to be a measurement
    assert tracker.pong(Pong(999, 0), 5.0) is None
    assert tracker.unknown == 4
