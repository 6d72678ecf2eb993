"""The online fast paths compute exactly what the vectorised extractors compute (the offline evals use the latter)."""

import numpy as np
import pytest
from scoring_helpers import feed, typing

import scoring
from scoring import features as F
from scoring.detectors.automation import AutomationDetector
from scoring.events import Stimulus
from scoring.population import shipped_population


def _vectorised(monkeypatch):
    monkeypatch.setattr(F, "SMALL_BATCH", -1)


@pytest.mark.parametrize("seed", range(6))
def test_small_batch_keystrokes_equal_the_vectorised_ones(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n = 120
    cls = rng.integers(0, 16 if seed % 2 else 3, n)
    downs = np.cumsum(rng.lognormal(np.log(150), 0.8, n))
    if seed % 3 == 0:
        downs = np.round(downs / 50) * 50  # coalesced: ties everywhere
    ups = downs + rng.lognormal(np.log(100), 0.7, n)
    lost = rng.random(n) < 0.05  # lost key-ups
    t = np.concatenate((downs, ups[~lost]))
    kind = np.concatenate((np.full(n, 1), np.full(int((~lost).sum()), 2))).astype(np.uint8)
    c = np.concatenate((cls, cls[~lost])).astype(np.uint8)
    order = np.lexsort((kind, t))
    t, kind, c = t[order], kind[order], c[order]
    step = int(rng.integers(3, 60))
    fast, slow = [], []
    carry_a, carry_b = F.new_key_carry(), F.new_key_carry()
    for i in range(0, len(t), step):
        a, carry_a = F.extract_keystrokes(t[i : i + step], kind[i : i + step], c[i : i + step], carry_a)
        fast.append((a, carry_a))
    _vectorised(monkeypatch)
    for i in range(0, len(t), step):
        b, carry_b = F.extract_keystrokes(t[i : i + step], kind[i : i + step], c[i : i + step], carry_b)
        slow.append((b, carry_b))
    for (a, ca), (b, cb) in zip(fast, slow):
        for name in F.Keystrokes.__slots__:
            assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name
        assert np.array_equal(ca, cb, equal_nan=True)


@pytest.mark.parametrize("local_echo", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_small_batch_reactions_equal_the_vectorised_ones(seed, local_echo, monkeypatch):
    rng = np.random.default_rng(100 + seed)
    inputs = np.sort(rng.uniform(0, 20000, 50))
    stims = np.sort(np.concatenate((rng.uniform(0, 20000, 20), inputs[:20] + 8)))
    kinds = [Stimulus.PAGE_READY, Stimulus.ECHO, Stimulus.FRAME] if seed % 2 or not local_echo else [Stimulus.FIELD_APPEARED]
    detail = rng.choice(kinds, len(stims)).astype(np.uint8)
    corr = rng.random(len(inputs)) < 0.3
    cut = 10000.0

    def run():
        carry, out = F.new_react_carry(), []
        for m_in, m_st in ((inputs < cut, stims < cut), (inputs >= cut, stims >= cut)):
            lat, typ, carry = F.extract_reactions(stims[m_st], detail[m_st], inputs[m_in], corr[m_in], carry, local_echo)
            out.append((lat, typ, carry))
        return out

    fast = run()
    _vectorised(monkeypatch)
    for (la, ta, ca), (lb, tb, cb) in zip(fast, run()):
        assert np.array_equal(la, lb) and np.array_equal(ta, tb) and np.array_equal(ca, cb, equal_nan=True)


def test_browser_corrections_are_timed_from_the_key_before_without_echo_stimuli():
    # a browser field paints a key at once: press -> BackSpace is the correction latency (local echo)
    inputs = np.array([1000.0, 1180.0, 1700.0, 1820.0, 2300.0])
    corr = np.array([False, False, True, True, True])
    none = np.empty(0)
    lat, typ, _ = F.extract_reactions(none, none.astype(np.uint8), inputs, corr, F.new_react_carry(), True)
    assert lat.tolist() == [520.0] and typ.tolist() == [F.REACT_CORRECTION]  # a run of BackSpaces counts once
    lat, _, _ = F.extract_reactions(none, none.astype(np.uint8), inputs, corr, F.new_react_carry())
    assert len(lat) == 0  # elsewhere (terminals, remote desktops) only a real echo times a correction


def test_replayed_runs_are_found_by_the_run_index():
    rng = np.random.default_rng(3)
    base = rng.lognormal(np.log(170), 0.4, 400)
    cls = rng.integers(1, 6, 400)
    base[200:260] = base[20:80] + rng.normal(0, 1, 60)  # a recording played back
    cls[200:260] = cls[20:80]
    det = AutomationDetector(shipped_population())
    empty = F.PointerStrokes(np.empty(0), np.empty(0), np.empty(0), np.empty(0))
    for i in range(0, 400, 9):
        prev = np.concatenate(([cls[i - 1] if i else 0], cls[i : i + 9][:-1]))
        ks = F.Keystrokes(*([np.empty(0)] * 5), base[i : i + 9], prev, cls[i : i + 9], np.empty(0), np.empty(0), 0)
        det.update(ks, empty)
    assert det.stat[1] >= 40  # almost every window inside the replayed stretch
    restored = AutomationDetector(shipped_population())
    restored.load(det.state())
    assert restored._index.ms == det._index.ms  # derived index rebuilt from the saved ring


def test_state_roundtrip_keeps_pending_statistics():
    s = scoring.SessionScorer(None)
    feed(s, typing(300, seed=31))
    back = scoring.SessionScorer.from_bytes(s.to_bytes(), None)
    assert back.summary().keystrokes == s.summary().keystrokes > 250


def test_a_fast_steady_script_is_automation_and_a_fast_irregular_typist_is_not():
    from scoring.detectors.automation import AutomationDetector
    from scoring.signals import Evidence

    rng = np.random.default_rng(7)
    empty = F.PointerStrokes(np.empty(0), np.empty(0), np.empty(0), np.empty(0))

    def component(flights):
        det = AutomationDetector(shipped_population())
        t = np.cumsum(flights)
        cls = rng.integers(1, 8, len(t))
        ks, _ = F.extract_keystrokes(
            np.repeat(t, 2) + np.tile([0.0, 30.0], len(t)), np.tile([1, 2], len(t)), np.repeat(cls, 2).astype(np.uint8),
            F.new_key_carry(),
        )
        det.update(ks, empty)
        return det.signal(Evidence(len(t), 10.0, len(t))).details["component_fast_steady"]

    script = 50.0 + rng.normal(0, 12, 40)  # a 50 ms script jittered by a loaded machine
    typist = rng.lognormal(np.log(45), 0.7, 40)  # the one 39-45 ms Aalto typist shape: fast, irregular
    assert component(script) > 0.8
    assert component(typist) < 0.2

    # a script typing short lines: the wait between Enter and the next field (0.4-0.9 s) sits in every 32-flight
    # window; it is a pause, not rhythm, and must not hide the steady typing around it
    short_lines = 50.0 + rng.normal(0, 12, 40)
    short_lines[12::12] = rng.uniform(400, 900, len(short_lines[12::12]))
    assert component(short_lines) > 0.8
    # ... while a fast typist's own pauses leave them as irregular as before
    typist[15] = 700.0
    assert component(typist) < 0.2


def test_typing_cv_leaves_out_pauses_only():
    from scoring.detectors.automation import typing_cv

    steady = [50.0, 52.0, 48.0, 50.0] * 8
    assert typing_cv(steady + [600.0]) == pytest.approx(typing_cv(steady))
    assert typing_cv([40.0, 120.0] * 16) == pytest.approx(0.5)  # 3x the median is typing, not a pause
    assert typing_cv([]) == 0.0
