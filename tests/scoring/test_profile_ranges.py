"""Profile.from_bytes refuses finite but absurd statistics, and to_bytes never writes what from_bytes refuses."""

import numpy as np
import pytest

import scoring
from scoring import features as F
from scoring.profile import _ARRAY_SIZES, _HEADER, FEATURE_MEMORY, Profile, ProfileError, learn
from scoring_helpers import EPOCH0, feed, typing


@pytest.fixture(scope="module")
def blob():
    return scoring.enrol_session([typing(1500, seed=1, t0=EPOCH0)]).to_bytes()


def _offset(name: str, index: int) -> int:
    pos = 0
    for n, size in _ARRAY_SIZES:
        if n == name:
            return _HEADER.size + 4 * (pos + index)
        pos += size
    raise KeyError(name)


def _patched(blob: bytes, **values) -> bytes:
    """The blob with single float32 values replaced, as a hostile or corrupted store entry would hold them."""
    out = bytearray(blob)
    for key, value in values.items():
        name, index = key.rsplit("_", 1)
        out[_offset(name, int(index)) : _offset(name, int(index)) + 4] = np.float32(value).tobytes()
    return bytes(out)


def test_the_shipped_blob_loads(blob):
    p = Profile.from_bytes(blob)
    assert p.stats.key_n.max() <= FEATURE_MEMORY
    assert Profile.from_bytes(p.to_bytes()).keystrokes == p.keystrokes


@pytest.mark.parametrize(
    "values",
    [
        {"key_n_2": 3.0e38, "key_m2_2": 0.0},  # outvotes every observation: an impostor was never flagged
        {"key_n_2": FEATURE_MEMORY + 1},
        {"key_mean_2": 1.0e30},  # learning it overflowed float32: the profile written back no longer loaded
        {"key_mean_2": -5.0},
        {"react_mean_0": 50.0},
        {"pointer_mean_1": 1.0e6},
        {"key_m2_2": 1.0e30},
        {"react_n_1": 0.0, "react_m2_1": 3.0},  # spread without observations
        {"pointer_n_0": 1.0e9},
    ],
)
def test_absurd_statistics_are_refused(blob, values):
    with pytest.raises(ProfileError):
        Profile.from_bytes(_patched(blob, **values))


def test_to_bytes_refuses_what_from_bytes_would(blob):
    p = Profile.from_bytes(blob)
    p.stats.key_n[p.stats.key_n > 0] = 3.0e38
    with pytest.raises(ProfileError):
        p.to_bytes()
    q = Profile.from_bytes(blob)
    q.stats.key_mean[5] = 1.0e30
    with pytest.raises(ProfileError):
        q.to_bytes()


def test_a_learned_profile_always_loads_again(blob):
    p = Profile.from_bytes(blob)
    for j in range(3):
        s = scoring.SessionScorer(p)
        feed(s, typing(300, 7 + j, t0=EPOCH0 + 1e7 * (j + 1)), 8)
        p = learn(p, s.summary())
        p = Profile.from_bytes(p.to_bytes())
    assert p.sessions == Profile.from_bytes(blob).sessions + 3


def test_an_impostor_is_flagged_against_any_profile_that_loads(blob):
    """The largest counts and the smallest spread a profile can hold still let the cadence model see an impostor."""
    p = Profile.from_bytes(blob)
    used = p.stats.key_n > 0
    p.stats.key_m2[used] *= FEATURE_MEMORY / p.stats.key_n[used]
    p.stats.key_n[used] = FEATURE_MEMORY
    p = Profile.from_bytes(p.to_bytes())
    s = scoring.SessionScorer(p)
    feed(s, typing(300, 8, t0=EPOCH0 + 1e7, dwell=60, flight=260))
    assert s.flagged
