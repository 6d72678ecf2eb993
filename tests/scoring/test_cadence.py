"""The cadence model (scoring/cadence_model.py) and the cadence detector built on it."""

import numpy as np
import pytest

import scoring
from scoring import features as F
from scoring.cadence_model import (
    N_GROUPS,
    STATE_SIZE,
    CadencePrior,
    UserCadenceModel,
    decayed_paths,
    default_prior,
    fit_prior,
    impostor_evidence,
    window_llr,
)
from scoring.detectors.cadence import CadenceDetector
from scoring.keys import KeyClass

from scoring_helpers import feed, typing

LETTERS = [1, 2, 3, 4, 5, 6]


def _synthetic_user(rng, speed: float, n: int = 400):
    """(ids, log values) of one person: every feature at the population mean plus a personal speed offset."""
    cls = rng.choice(LETTERS + [KeyClass.SPACE], n)
    dwell_ids = cls.astype(np.int64)
    flight_ids = F.flight_id(cls[:-1], cls[1:])
    ids = np.concatenate((dwell_ids, flight_ids))
    base = np.where(ids < F.N_DWELL, np.log(100.0), np.log(170.0))
    values = base + speed + rng.normal(0.0, 0.25, len(ids))
    return ids, values


def _stats(ids, values):
    n = np.bincount(ids, minlength=F.N_KEY_FEATURES).astype(float)
    s = np.bincount(ids, weights=values, minlength=F.N_KEY_FEATURES)
    mean = np.where(n > 0, s / np.maximum(n, 1), 0.0)
    d = values - mean[ids]
    return n, mean, np.bincount(ids, weights=d * d, minlength=F.N_KEY_FEATURES)


@pytest.fixture(scope="module")
def prior():
    rng = np.random.default_rng(0)
    users = [_stats(*_synthetic_user(rng, rng.normal(0.0, 0.2))) for _ in range(60)]
    return fit_prior(users, source="synthetic")


def test_fit_prior_recovers_the_offset_spread(prior):
    assert prior.usable[KeyClass.LEFT_TOP] and prior.usable[F.flight_id(1, 4)]
    assert 0.02 < prior.offset_var[0] < 0.08  # speed offsets drawn with sd 0.2
    assert np.all(prior.within_var[prior.usable] == pytest.approx(0.0625, rel=0.35))
    assert np.all(prior.between_var > 0)


def test_prior_roundtrip_and_refuses_other_versions(prior):
    back = CadencePrior.from_npz(prior.to_npz(), source="test")
    assert np.allclose(back.mean, prior.mean) and np.array_equal(back.usable, prior.usable)
    assert back.decay == prior.decay and back.alarm == prior.alarm
    import io

    with np.load(io.BytesIO(prior.to_npz())) as z:
        arrays = dict(z)
    arrays["version"] = np.array([99])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(ValueError, match="version 99"):
        CadencePrior.from_npz(buf.getvalue(), source="test")


def test_decayed_paths_match_a_plain_loop_across_chunks(prior):
    rng = np.random.default_rng(1)
    ids, values = _synthetic_user(rng, 0.1, n=400)
    model = UserCadenceModel(*_stats(*_synthetic_user(rng, 0.1)), prior)
    obs = model.observe(ids, values)
    start = rng.normal(size=STATE_SIZE)
    paths = decayed_paths(obs, start, 0.97)
    s = start.copy()
    for i in range(len(obs.llr)):
        x = np.zeros(STATE_SIZE)
        x[0] = obs.llr[i]
        x[1 + obs.group[i]] = obs.inv_var[i]
        x[1 + N_GROUPS + obs.group[i]] = obs.res_over_var[i]
        s = 0.97 * s + x
    assert np.allclose(paths[-1], s)
    # with (almost) no decay the session statistic is the window's log-likelihood ratio
    whole = decayed_paths(obs, np.zeros(STATE_SIZE), 1.0 - 1e-12)[-1]
    llr = window_llr(obs, np.zeros(len(obs.llr), dtype=np.int64), 1, prior.offset_var)[0]
    assert -impostor_evidence(whole, prior.offset_var)[0] == pytest.approx(llr, rel=1e-6)


def test_a_consistently_slower_person_is_told_apart_from_the_user(prior):
    rng = np.random.default_rng(2)
    model = UserCadenceModel(*_stats(*_synthetic_user(rng, 0.0)), prior)
    scores = {}
    for name, speed in (("genuine", 0.0), ("impostor", 0.25)):
        ids, values = _synthetic_user(rng, speed, n=50)
        obs = model.observe(ids, values)
        scores[name] = window_llr(obs, np.zeros(len(obs.llr), dtype=np.int64), 1, prior.offset_var)[0]
    assert scores["genuine"] > 0 > scores["impostor"]


def test_detector_state_roundtrip_and_wrong_shapes_refused(prior):
    profile = scoring.enrol([typing(300, seed=1), typing(300, seed=2, t0=1e6)])
    det = CadenceDetector(profile, scoring.shipped_population(), prior=prior)
    s = scoring.SessionScorer(profile)
    feed(s, typing(200, seed=3, t0=2e6))
    state = s.cadence.state()
    assert state["cadence.sums"].shape == (STATE_SIZE,)
    det.load(state)
    assert np.allclose(det.sums, s.cadence.sums)
    bad = dict(state)
    bad["cadence.sums"] = np.zeros(3)
    with pytest.raises(ValueError, match="cadence state"):
        det.load(bad)


def test_impostor_in_a_session_alarms_and_genuine_recovers_after_reset():
    profile = scoring.enrol([typing(300, seed=1), typing(300, seed=2, t0=1e6)])
    s = scoring.SessionScorer(profile)
    a = feed(s, typing(200, seed=4, t0=2e6))
    assert a.signals["cadence"].sufficient and a.signals["cadence"].score < 0.5
    a = feed(s, typing(200, seed=5, t0=3e6, dwell=70, flight=260))
    cad = a.signals["cadence"]
    assert cad.score >= 0.5
    assert "unlike the claimed user" in cad.explanation and "alarm at" in cad.explanation
    s.reset_evidence()
    a = feed(s, typing(200, seed=6, t0=4e6))
    assert a.signals["cadence"].score < 0.5


def test_after_a_passed_step_up_a_drifted_user_is_not_stepped_up_again():
    profile = scoring.enrol([typing(300, seed=1), typing(300, seed=2, t0=1e6)])
    drifted = dict(dwell=65, flight=280)  # the same person, much slower today and with shorter presses
    adapted, plain = scoring.SessionScorer(profile), scoring.SessionScorer(profile)
    for s in (adapted, plain):
        assert feed(s, typing(300, seed=21, t0=2e6, **drifted)).signals["cadence"].score >= 0.5
    adapted.reset_evidence()  # what the gateway does once the user passed the step-up
    plain.cadence.reset()  # evidence cleared, model as it was: the behaviour before adaptation
    later = typing(300, seed=22, t0=3e6, **drifted)
    assert feed(adapted, later).signals["cadence"].score < 0.5
    assert feed(plain, later).signals["cadence"].score >= 0.5
    assert adapted.flagged  # adapted for this session only: a flagged session never trains the profile
    # the adapted model survives the session state's round trip
    back = scoring.SessionScorer.from_bytes(adapted.to_bytes(), profile)
    assert np.array_equal(back.cadence.model.mu, adapted.cadence.model.mu)
    more = typing(100, seed=23, t0=4e6, **drifted)
    assert feed(back, more).signals["cadence"].score == pytest.approx(feed(adapted, more).signals["cadence"].score)
    # a session without a profile has nothing to adapt
    none = scoring.SessionScorer(None)
    none.reset_evidence()
    assert none.cadence.model is None and none.cadence.adapted.size == 0


def test_adapted_statistics_in_a_state_are_checked(prior):
    profile = scoring.enrol([typing(300, seed=1)])
    det = CadenceDetector(profile, scoring.population.default_population(), prior)
    state = det.state()
    state["cadence.adapted"] = np.full((3, 5), 1.0, dtype=np.float32)
    with pytest.raises(ValueError, match="adapted"):
        CadenceDetector(profile, scoring.population.default_population(), prior).load(state)
    state["cadence.adapted"] = np.ones((3, F.N_KEY_FEATURES), dtype=np.float32)
    with pytest.raises(ValueError, match="adapted"):
        CadenceDetector(None, scoring.population.default_population(), prior).load(state)


def test_default_prior_from_a_population_is_usable():
    p = default_prior(scoring.shipped_population())
    p.validate()
    assert p.offset_var.shape == (N_GROUPS,)


def _wandering_user(rng, n: int = 400):
    """A person whose speed changes from one part of the typing to the next (an inconsistent enrolment)."""
    parts = [_synthetic_user(rng, speed, n // 5) for speed in (-0.3, 0.3, -0.3, 0.3, 0.0)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_self_consistency_is_high_for_a_steady_typist_and_nan_when_too_short(prior):
    from scoring.cadence_model import self_consistency

    rng = np.random.default_rng(3)
    steady = self_consistency(*_synthetic_user(rng, 0.2), prior, 400.0)
    wandering = self_consistency(*_wandering_user(rng), prior, 400.0)
    assert np.isfinite(steady) and np.isfinite(wandering)
    assert steady > wandering
    ids, values = _synthetic_user(rng, 0.2, n=20)
    assert np.isnan(self_consistency(ids, values, prior, 400.0))


def test_self_normalisation_shifts_each_log_ratio_by_a_bounded_constant(prior):
    from scoring.cadence_model import SELF_SHIFT_MAX

    rng = np.random.default_rng(4)
    stats = _stats(*_synthetic_user(rng, 0.0))
    ids, values = _synthetic_user(rng, 0.0, n=50)
    plain = UserCadenceModel(*stats, prior.with_self_norm(0.3, 0.5), np.nan).observe(ids, values)  # unknown: none
    assert np.allclose(plain.llr, UserCadenceModel(*stats, prior).observe(ids, values).llr)
    low = UserCadenceModel(*stats, prior.with_self_norm(0.3, 0.5), 0.1).observe(ids, values)
    assert np.allclose(low.llr - plain.llr, 0.1)  # -0.5 * (0.1 - 0.3): less evidence against this user
    far = UserCadenceModel(*stats, prior.with_self_norm(0.3, 1.0), 50.0).observe(ids, values)
    assert np.allclose(far.llr - plain.llr, -SELF_SHIFT_MAX)
    assert np.allclose(low.res_over_var, plain.res_over_var)  # the offset terms are untouched


def test_prior_of_an_older_version_is_refused_with_the_command_that_refits_it(prior):
    import io

    normed = prior.with_self_norm(0.25, 0.5)
    back = CadencePrior.from_npz(normed.to_npz(), source="test")
    assert (back.self_ref, back.self_weight) == (0.25, 0.5)
    with np.load(io.BytesIO(normed.to_npz())) as z:
        arrays = dict(z)
    arrays["version"] = np.array([2])  # before up-up flights: its arrays do not fit the feature space
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(ValueError, match="version 2 .*build_cadence_prior"):
        CadencePrior.from_npz(buf.getvalue(), source="test")


def test_profile_keeps_its_self_consistency_and_older_profiles_migrate():
    from scoring.profile import _HEADER, PROFILE_VERSION

    profile = scoring.enrol([typing(300, seed=1), typing(300, seed=2, t0=1e6)])
    assert np.isfinite(profile.cadence_self)
    back = scoring.Profile.from_bytes(profile.to_bytes())
    assert back.cadence_self == pytest.approx(profile.cadence_self, abs=1e-6)
    summary = scoring.SessionScorer(back)
    feed(summary, typing(200, seed=3, t0=2e6))
    learned = scoring.learn(back, summary.summary())
    assert learned.sessions == back.sessions + 1 and learned.cadence_self == back.cadence_self
    # profiles of versions 2 (no trailer) and 3 have no up-up flights: they are read with those empty and an unknown
    # self-consistency (measured without them), and written back as the current version
    import struct

    import scoring.features as F

    n_old = F.N_DWELL + F.N_FLIGHT
    arrays = profile.stats.arrays()
    old_body = np.concatenate([a[:n_old] if i < 3 else a for i, a in enumerate(arrays)]).astype("<f4").tobytes()
    for version, trailer in ((2, b""), (3, struct.pack("<f", 0.7))):
        old = scoring.Profile.from_bytes(_HEADER.pack(b"ZTPF", version, 0, 2) + old_body + trailer)
        assert np.isnan(old.cadence_self)
        assert np.allclose(old.stats.key_mean[:n_old], back.stats.key_mean[:n_old])
        assert not old.stats.key_n[F.RELEASE_BASE :].any()
        assert scoring.Profile.from_bytes(old.to_bytes()).version == PROFILE_VERSION
        assert scoring.SessionScorer(old).cadence.model.shift == 0.0
    assert back.stats.key_n[F.RELEASE_BASE :].sum() > 0  # enrolment fills them
    body = profile.to_bytes()[_HEADER.size : -4]
    with pytest.raises(scoring.ProfileError, match="version 1"):
        scoring.Profile.from_bytes(_HEADER.pack(b"ZTPF", 1, 0, 2) + body)
    with pytest.raises(scoring.ProfileError, match="bytes"):
        scoring.Profile.from_bytes(_HEADER.pack(b"ZTPF", PROFILE_VERSION, 0, 2) + body)  # trailer missing


def test_population_file_of_another_version_or_shape_is_refused():
    import io

    from scoring.population import Population, default_population

    data = default_population().to_npz()
    assert Population.from_npz(data, source="test").key_mean.shape == (F.N_KEY_FEATURES,)
    with np.load(io.BytesIO(data)) as z:
        arrays = dict(z)
    for change, message in (({"version": np.array([1])}, "version 1 .*--write-population"),
                            ({"key_mean": arrays["key_mean"][: F.RELEASE_BASE]}, "key_mean")):
        buf = io.BytesIO()
        np.savez(buf, **{**arrays, **change})
        with pytest.raises(ValueError, match=message):
            Population.from_npz(buf.getvalue(), source="test")
