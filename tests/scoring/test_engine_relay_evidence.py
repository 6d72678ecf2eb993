"""Relay evidence beyond keystrokes: pointer arrival -> click, pointer onsets, arrival-clock stimuli, lazy text."""

import numpy as np
import pytest
from scoring_helpers import EPOCH0, feed

import scoring
from scoring import features as F
from scoring.events import Kind, Source, Stimulus, concat, make_batch
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


def test_explanations_are_written_only_when_read():
    calls = []

    def explain():
        calls.append(1)
        return "why"

    s = LazySignal("relay", 0.2, True, scoring.Evidence(3, 1.0, 2), explain, {"added_latency_ms": 0.0})
    assert isinstance(s, Signal) and s.score == 0.2 and not calls
    moved = s.with_evidence(scoring.Evidence(5, 2.0, 2))
    assert moved.evidence.keystrokes == 5 and not calls
    assert s.to_dict()["explanation"] == "why" and s.explanation == "why" and len(calls) == 1
    with pytest.raises(AttributeError):
        s.score = 1.0  # still frozen


def test_assessment_serialises_lazy_explanations(pointer_profile):
    a = feed(scoring.SessionScorer(pointer_profile), _pointer_session(402, 0.0, clicks=6, t0=7e8))
    d = a.to_dict()
    assert all(isinstance(v["explanation"], str) and v["explanation"] for v in d["signals"].values())


def test_eval_model_delays_reactions_and_presses_only_under_a_relay():
    from scoring.eval import relay as ev
    from scoring.eval.aalto import Sentence
    from scoring.eval.balabit import ClickAction

    rng = np.random.default_rng(0)
    press = np.cumsum(rng.lognormal(np.log(170), 0.3, 30))
    sentence = Sentence(press, press + 90.0, np.full(30, 3, dtype=np.uint8))
    t = np.arange(12) * 16.0 - 11 * 16.0
    x = np.linspace(0, 300, 12)
    x[-1] = x[-2]  # pressed where the pointer came to rest
    action = ClickAction(t, x, np.full(12, 50.0))
    local = ev.Condition("local", "genuine", clicks=2)
    relayed = ev.Condition("relay", "relay", 110, clicks=2)
    a = ev.session_events([sentence] * 3, np.random.default_rng(1), np.log(450), local, [action])
    b = ev.session_events([sentence] * 3, np.random.default_rng(1), np.log(450), relayed, [action])
    for events in (a, b):
        assert (events["kind"] == Kind.POINTER_DOWN).sum() == 6
        downs = events["t_src"][events["kind"] == Kind.KEY_DOWN]
        echoes = events["t_src"][(events["kind"] == Kind.STIMULUS) & (events["detail"] == Stimulus.ECHO)]
        assert np.allclose(np.sort(echoes), np.sort(downs) + ev.ECHO_MS)  # the endpoint echoes what it received
    # scored as the detector sees them: the relayed session's reactions are later by about the loop latency
    ra = feed(scoring.SessionScorer(None), a).signals["relay"].details
    rb = feed(scoring.SessionScorer(None), b).signals["relay"].details
    assert ra["pointer_reactions"] == rb["pointer_reactions"] == 6
    assert rb["relay_probability"] > 5 * ra["relay_probability"]


def test_eval_scores_in_batches_shaped_like_the_sensors():
    from scoring.eval.relay import sensor_batches

    t = np.array([0.0, 100.0, 249.0, 250.0, 260.0, 900.0] + [1200.0 + i for i in range(60)])
    batches = sensor_batches(t)
    # 250 ms after a batch's first event, at most 50 events, every event exactly once and in order
    assert [(b.start, b.stop) for b in batches[:3]] == [(0, 3), (3, 5), (5, 6)]
    assert [b.stop - b.start for b in batches[3:]] == [50, 10]
    assert sensor_batches(np.zeros(0)) == [] and sensor_batches(np.zeros(120)) == [slice(0, 50), slice(50, 100), slice(100, 120)]
