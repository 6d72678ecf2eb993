"""Relay evidence beyond keystrokes: pointer arrival -> click, pointer onsets, arrival-clock stimuli, lazy text."""

import numpy as np
import pytest
from scoring_helpers import EPOCH0, feed

import scoring
from scoring import features as F
from scoring.events import Kind, Probe, Source, Stimulus, concat, make_batch
from scoring.lazysignal import LazySignal
from scoring.signals import Signal


def _approach(t0: float, settle_ms: float, rng, start=(100.0, 100.0), target=(400.0, 300.0)) -> np.ndarray:
    """Pointer moves from start to target in 20 samples (16 ms apart), rests, and is pressed settle_ms after arriving."""
    n = 20
    frac = np.linspace(0.0, 1.0, n) ** 0.6
    x = start[0] + (target[0] - start[0]) * frac + rng.normal(0, 0.3, n)
    y = start[1] + (target[1] - start[1]) * frac
    t = t0 + 16.0 * np.arange(n)
    press = t[-1] + settle_ms
    return concat([
        make_batch(t, t + EPOCH0, Kind.POINTER_MOVE, x=x, y=y),
        make_batch([press], [press + EPOCH0], Kind.POINTER_DOWN, x=target[0], y=target[1], detail=1),
        make_batch([press + 90], [press + 90 + EPOCH0], Kind.POINTER_UP, x=target[0], y=target[1]),
    ])


def _pointer_session(seed: int, added_ms: float, clicks: int, t0: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = []
    t = t0
    for _ in range(clicks):
        parts.append(make_batch([t], [t + EPOCH0], Kind.STIMULUS, detail=Stimulus.FIELD_APPEARED))
        onset = rng.lognormal(np.log(450), 0.3) + added_ms
        settle = rng.lognormal(np.log(120), 0.5) - F.SETTLE_OFFSET_MS + added_ms
        parts.append(_approach(t + onset, max(settle, 0.0), rng))
        t += onset + 20 * 16 + max(settle, 0.0) + 1500
    ev = concat(parts)
    return ev[np.argsort(ev["t_src"], kind="stable")]


def test_settle_is_arrival_to_press_and_needs_an_approach():
    rng = np.random.default_rng(1)
    b = _approach(0.0, 200.0, rng)
    m = b["kind"] != Kind.POINTER_UP
    lat, carry = F.extract_settle(b["t_src"][m], b["x"][m].astype(float), b["y"][m].astype(float),
                                  b["kind"][m] == Kind.POINTER_DOWN, F.new_settle_carry())
    assert lat == pytest.approx([200.0 + F.SETTLE_OFFSET_MS], abs=20.0)
    # a second press without a new approach is not a reaction
    again, _ = F.extract_settle(np.array([b["t_src"][-1] + 500.0]), np.array([400.0]), np.array([300.0]), np.array([True]), carry)
    assert len(again) == 0


def test_settle_survives_batch_boundaries():
    rng = np.random.default_rng(2)
    b = _approach(0.0, 300.0, rng)
    b = b[b["kind"] != Kind.POINTER_UP]
    carry = F.new_settle_carry()
    out = []
    for i in range(0, len(b), 6):
        part = b[i : i + 6]
        lat, carry = F.extract_settle(part["t_src"], part["x"].astype(float), part["y"].astype(float),
                                      part["kind"] == Kind.POINTER_DOWN, carry)
        out += lat.tolist()
    assert len(out) == 1 and out[0] == pytest.approx(300.0 + F.SETTLE_OFFSET_MS, abs=20.0)


@pytest.fixture(scope="module")
def pointer_profile():
    return scoring.enrol([_pointer_session(300 + i, 0.0, clicks=15, t0=1e7 * i) for i in range(4)])


def test_pointer_reactions_reach_the_profile_and_reveal_a_relay(pointer_profile):
    assert pointer_profile.stats.react_n[F.REACT_POINTER] >= 40
    assert pointer_profile.stats.react_n[F.REACT_PROMPT] >= 40  # movement onsets answer the display changes
    relayed = feed(scoring.SessionScorer(pointer_profile), _pointer_session(400, 150.0, clicks=25, t0=5e8))
    genuine = feed(scoring.SessionScorer(pointer_profile), _pointer_session(401, 0.0, clicks=25, t0=6e8))
    r, g = relayed.signals["relay"].details, genuine.signals["relay"].details
    assert r["pointer_reactions"] >= 20 and r["prompt_reactions"] >= 20
    assert r["added_latency_ci_low_ms"] >= 100 and r["added_latency_ms"] >= 120
    assert g["added_latency_ms"] < 50 and genuine.signals["relay"].score < 0.5
    assert "pointer" in relayed.signals["relay"].explanation


def test_arrival_clock_reactions_have_the_network_round_trip_taken_out():
    # a remote-desktop source: stimuli (FRAME) and inputs on the arrival clock, over a 300 ms TCP round trip
    def session(rtt: float) -> np.ndarray:
        rng = np.random.default_rng(7)
        parts, t = [], EPOCH0
        for i in range(30):
            parts.append(make_batch([t], [t], Kind.NET, source=Source.GATEWAY, value=rtt))
            parts.append(make_batch([t + 1], [t + 1], Kind.STIMULUS, detail=Stimulus.FRAME, source=Source.RFB))
            k = t + 1 + rng.lognormal(np.log(450), 0.2) + rtt
            parts.append(make_batch([k, k + 90], [k, k + 90], [Kind.KEY_DOWN, Kind.KEY_UP], key=3, source=Source.RFB))
            t = k + 2000
        ev = concat(parts)
        return ev[np.argsort(ev["t_src"], kind="stable")]

    near = feed(scoring.SessionScorer(None), session(5.0)).signals["relay"].details
    far = feed(scoring.SessionScorer(None), session(300.0)).signals["relay"].details
    assert near["prompt_reactions"] >= 25 and far["prompt_reactions"] >= 25
    assert abs(far["added_latency_ms"] - near["added_latency_ms"]) <= 20  # distance is not a relay


def _proxied_session(rtt: float, relay_ms: float, pong_delay_ms: float = 0.0) -> np.ndarray:
    """A remote-desktop source behind a trusted load balancer: no TCP RTT (the gateway sends none), page pings
    over the client's leg (plus the page's own answering delay, a few ms, and `pong_delay_ms` if the client slows
    its answers), and reactions that carry the leg and whatever relay sits behind the client."""
    rng = np.random.default_rng(8)
    parts, t = [], EPOCH0
    for _ in range(30):
        ping = rtt + rng.uniform(1.0, 15.0) + pong_delay_ms
        parts.append(make_batch([t], [t], Kind.PROBE, detail=Probe.SENSOR_PING, source=Source.SENSOR, value=ping))
        parts.append(make_batch([t + 1], [t + 1], Kind.STIMULUS, detail=Stimulus.FRAME, source=Source.RFB))
        k = t + 1 + rng.lognormal(np.log(450), 0.2) + rtt + relay_ms
        parts.append(make_batch([k, k + 90], [k, k + 90], [Kind.KEY_DOWN, Kind.KEY_UP], key=3, source=Source.RFB))
        t = k + 2000
    ev = concat(parts)
    return ev[np.argsort(ev["t_src"], kind="stable")]


def test_behind_a_proxy_the_fastest_page_ping_stands_for_the_network_round_trip():
    near = feed(scoring.SessionScorer(None), _proxied_session(5.0, 0.0)).signals["relay"].details
    far = feed(scoring.SessionScorer(None), _proxied_session(150.0, 0.0)).signals["relay"].details
    relayed = feed(scoring.SessionScorer(None), _proxied_session(150.0, 150.0)).signals["relay"].details
    assert far["prompt_reactions"] >= 25
    assert abs(far["added_latency_ms"] - near["added_latency_ms"]) <= 20  # distance is not a relay
    assert relayed["added_latency_ms"] - far["added_latency_ms"] >= 120  # a relay behind the client still is


def test_slowed_pongs_hide_no_relay_beyond_the_geography_alarm():
    # a client that slows its pongs by 200 ms to have that much taken off its reactions: the leg taken from pings is
    # capped at the site's expected RTT plus the geography alarm (20 + 40 ms here), so the 200 ms buy no more than
    # the 40 ms just under the cap, the relay behind the client still shows, and the geography signal fires
    def scored(pong_delay_ms):
        return feed(scoring.SessionScorer(None, expected_rtt_ms=20.0), _proxied_session(20.0, 150.0, pong_delay_ms))

    honest, at_cap, slowed = scored(0.0), scored(40.0), scored(200.0)
    assert honest.signals["network"].score < 0.5 and slowed.signals["network"].score > 0.9
    assert "no TCP RTT" in slowed.signals["network"].explanation
    latency = {name: a.signals["relay"].details["added_latency_ms"] for name, a in
               (("honest", honest), ("at_cap", at_cap), ("slowed", slowed))}
    assert latency["slowed"] == latency["at_cap"] >= 100, latency
