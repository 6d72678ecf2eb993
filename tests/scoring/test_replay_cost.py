"""The replay check with many earlier runs of the same key classes gives the answers of the unbounded comparison.

Its cost is measured, not asserted here (no timing thresholds in unit tests): one class pair, 4096-event updates,
0.27-0.32 s of CPU per update before the numpy prefilter, about 0.04 s after (the audit's t14 script)."""

import math

import numpy as np
import pytest

import scoring
from scoring.detectors import automation as A
from scoring.events import Kind, concat, make_batch
from scoring_helpers import EPOCH0, feed, typing


def _unbounded_replays(self, start: int, head: int) -> int:
    """_RunIndex._replays as it was: every earlier run of the same classes compared in Python (the reference)."""
    earlier = [b for b in self.by_key.get(self.key, ()) if head <= b <= start - A.REPLAY_RUN]
    if not earlier:
        return 0
    cand = self.ms[start - head : start - head + A.REPLAY_RUN]
    mean = sum(cand) / A.REPLAY_RUN
    spread = math.sqrt(max(sum(v * v for v in cand) / A.REPLAY_RUN - mean * mean, 0.0))
    if spread < A.REPLAY_MIN_CV * max(mean, 1e-6):
        return 0
    for b in earlier:
        other = self.ms[b - head : b - head + A.REPLAY_RUN]
        if sum(abs(x - y) for x, y in zip(other, cand)) / A.REPLAY_RUN < A.REPLAY_TOLERANCE_MS:
            return 1
    return 0


def _keys(flights: np.ndarray, classes: np.ndarray, t0: float, dwell: float = 30.0) -> np.ndarray:
    downs = t0 + np.cumsum(flights)
    ups = downs + dwell
    b = concat([make_batch(downs, downs + EPOCH0, Kind.KEY_DOWN, key=classes),
                make_batch(ups, ups + EPOCH0, Kind.KEY_UP, key=classes)])
    return b[np.argsort(b["t_src"], kind="stable")]


def _one_class(n: int, seed: int, t0: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _keys(rng.uniform(60.0, 200.0, n), np.full(n, 2), t0)


def _replayed_recording(seed: int, classes_fn) -> np.ndarray:
    """A recording of 100 keys of human-like timing played back three times, each with up to 1 ms of jitter."""
    rng = np.random.default_rng(seed)
    flights = rng.lognormal(np.log(170.0), 0.4, 100)
    flights[flights > 1400] = 1400.0
    classes = classes_fn(rng, 100)
    parts, t0 = [], EPOCH0
    for _ in range(3):
        b = _keys(flights + rng.uniform(-1.0, 1.0, 100), classes, t0)
        parts.append(b)
        t0 = float(b["t_src"].max()) + 2000.0
    return concat(parts)


INPUTS = {
    "one class, varied timing": lambda: _one_class(4000, 0, 0.0),
    "keypad macro replayed": lambda: _replayed_recording(1, lambda rng, n: np.full(n, 3)),
    "text macro replayed": lambda: _replayed_recording(2, lambda rng, n: rng.integers(1, 8, n)),
    "genuine typing": lambda: typing(2000, seed=5, t0=1e6),
}


@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("size", [50, 4096])
def test_replay_answers_are_those_of_the_unbounded_comparison(monkeypatch, name, size):
    events = INPUTS[name]()

    def run():
        s = scoring.SessionScorer(None)
        a = feed(s, events, size)
        return a.signals["automation"].score, a.signals["automation"].details, s.automation.stat.tolist()

    now = run()
    monkeypatch.setattr(A._RunIndex, "_replays", _unbounded_replays)
    assert run() == now
    if "replayed" in name:
        assert now[2][1] >= 3  # and the replays are seen


@pytest.mark.parametrize("restored", [False, True])
def test_the_replay_index_holds_each_flight_once(restored):
    """The index is derived from the flight ring: built lazily after the first flights had already joined the ring,
    it took them twice (once from the ring, once as new), so the flight CV was judged on 16 flights doubled instead
    of 32 real ones."""
    events = typing(200, seed=7, t0=1e6)
    s = scoring.SessionScorer(None)
    feed(s, events[:60], 60)
    if restored:  # a scorer loaded from saved state rebuilds the index from the ring on its next update
        s = scoring.SessionScorer.from_bytes(s.to_bytes(), None)
    feed(s, events[60:], 40)
    det = s.automation
    assert len(det._index.ms) == det.flights.count
    positions = [start for start, _ in det._index.order]
    assert len(positions) == len(set(positions))
