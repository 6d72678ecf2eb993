"""Learning only from sessions the cadence model judged and found clearly genuine, each moving the profile a bounded
amount: short unflagged sessions (a logout counts as clean) used to hand a victim's profile over to an impostor."""

import re
from pathlib import Path

import numpy as np
import pytest

import scoring
from scoring import features as F
from scoring.profile import (
    FEATURE_MEMORY,
    LEARN_MAX_SHARE,
    LEARN_MIN_COUNT,
    MIN_LEARN_KEYSTROKES,
    Profile,
    SessionSummary,
    TimingStats,
    learn,
    learnable,
)
from scoring_helpers import EPOCH0, feed, typing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def victim():
    return scoring.enrol_session([typing(1500, seed=1, t0=EPOCH0)])


def _impostor(profile, n, seed):
    s = scoring.SessionScorer(profile)
    feed(s, typing(n, seed, t0=EPOCH0 + 1e7 * (seed % 1000), dwell=60, flight=260), 8)
    return s


def test_many_short_impostor_sessions_do_not_take_over_the_profile(victim):
    p = victim
    unflagged = 0
    for i in range(80):  # sessions of 21 keystrokes: too short to be judged, so often unflagged
        s = _impostor(p, 21, 200 + i)
        unflagged += not s.flagged
        if not s.flagged:
            p = learn(p, s.summary())
    assert unflagged >= 20  # the attack is really tried
    assert p is victim  # none of them was learned
    assert sum(_impostor(p, 40, 5000 + i).flagged for i in range(20)) == 20


def test_judged_impostor_sessions_are_never_learned(victim):
    for n in (40, 60, 100):
        for i in range(5):
            s = _impostor(victim, n, 700 + 10 * n + i)
            assert not learnable(s.summary())
            assert learn(victim, s.summary()) is victim


def test_genuine_sessions_still_learn(victim):
    p = victim
    for j in range(5):
        s = scoring.SessionScorer(p)
        feed(s, typing(300, 9000 + j, t0=EPOCH0 + 1e9), 8)
        summary = s.summary()
        assert not summary.flagged and summary.cadence_keystrokes == 300 and summary.cadence_peak < 0.5
        p = learn(p, summary)
    assert p.sessions == victim.sessions + 5
    assert not np.array_equal(p.stats.key_mean, victim.stats.key_mean)
    assert Profile.from_bytes(p.to_bytes()).sessions == p.sessions


def test_unjudged_or_near_alarm_sessions_are_not_learned(victim):
    s = scoring.SessionScorer(victim)
    feed(s, typing(300, 9100, t0=EPOCH0 + 1e9), 8)
    good = s.summary()
    fields = dict(stats=good.stats, flagged=False, keystrokes=good.keystrokes, seconds=good.seconds)
    assert learnable(SessionSummary(**fields, cadence_keystrokes=300, cadence_peak=0.1))
    assert not learnable(SessionSummary(**fields, cadence_keystrokes=MIN_LEARN_KEYSTROKES - 1, cadence_peak=0.1))
    assert not learnable(SessionSummary(**fields, cadence_keystrokes=300, cadence_peak=0.5))
    assert not learnable(SessionSummary(**fields))  # a summary that says nothing of the cadence (never judged)
    assert not learnable(SessionSummary(**{**fields, "flagged": True}, cadence_keystrokes=300, cadence_peak=0.1))
    # no profile worth judging against (too few keystrokes): the cadence was never sufficient
    small = scoring.enrol_session([typing(60, seed=2, t0=EPOCH0)])
    s = scoring.SessionScorer(small)
    feed(s, typing(300, 9101, t0=EPOCH0 + 1e9), 8)
    assert s.summary().cadence_keystrokes == 0 and learn(small, s.summary()) is small
    back = SessionSummary.from_dict(good.to_dict())
    assert (back.cadence_keystrokes, back.cadence_peak) == (good.cadence_keystrokes, pytest.approx(good.cadence_peak))


def test_one_session_moves_a_feature_a_bounded_share():
    base = TimingStats()
    base.key_n[:] = 40.0
    base.key_mean[:] = np.log(100.0)
    base.key_m2[:] = 0.05 * 39
    profile = Profile(stats=base, sessions=1)
    session = TimingStats()
    ids = np.repeat(np.arange(F.N_KEY_FEATURES), 400)
    values = np.full(len(ids), np.log(60.0)) + np.tile(np.linspace(-0.1, 0.1, 400), F.N_KEY_FEATURES)
    session.add_keystrokes(F.Keystrokes(ids, values, *([np.empty(0)] * 8), 0))
    summary = SessionSummary(session, False, session.keystrokes, 100.0, 1000, 0.0)
    learned = learn(profile, summary)
    share = LEARN_MAX_SHARE * 40.0
    assert learned.stats.key_n == pytest.approx(np.full(F.N_KEY_FEATURES, 40.0 + share))
    expected = np.log(100.0) + (np.log(60.0) - np.log(100.0)) * share / (40.0 + share)
    assert learned.stats.key_mean == pytest.approx(np.full(F.N_KEY_FEATURES, expected))
    # a feature the profile lacks can still be learned, from a few observations
    base.key_n[0] = 0.0
    base.key_m2[0] = 0.0
    assert learn(profile, summary).stats.key_n[0] == pytest.approx(LEARN_MIN_COUNT)
    assert learn(profile, summary).stats.key_n.max() <= FEATURE_MEMORY


def test_the_learning_threshold_covers_the_shipped_impostor_rule():
    text = (ROOT / "policies" / "defaults" / "behaviour.yaml").read_text()
    rule = text[text.index("id: impostor-typing") :]
    rule = rule[: rule.index("action:")]
    needed = int(re.search(r"signals\.cadence\.evidence\.keystrokes\s*>=\s*(\d+)", rule).group(1))
    assert MIN_LEARN_KEYSTROKES >= needed
