"""Per-user timing profile: statistics, serialisation and learning from clean sessions (enrolment: scoring.enrolment).

A profile is a set of running statistics (count, mean, M2) per timing feature, in log milliseconds: dwell per key
class, flight per class pair, reaction latency per reaction type, and pointer stroke shape. It never holds events,
characters or key sequences: only these aggregates. Serialised it is a few kilobytes (the gateway keeps it in Redis).

The profile also keeps one number from enrolment, the cadence self-consistency (scoring.cadence_model.
self_consistency: how well parts of the enrolment predict each other), which normalises the cadence evidence per
user. It is a property of the enrolment and stays as it is when sessions are learned.

Drift control: `learn()` merges a session's statistics only when the session raised nothing (`summary.flagged` is
False) and its typing was judged by the cadence model over as many keystrokes as the impostor policy needs, with the
evidence never past half its alarm level; a session can add at most a fraction of what the profile already holds
per feature, and counts per feature are capped so that old behaviour fades instead of outvoting recent behaviour.
Without the first two, dozens of short sessions too short to be judged (a logout counts as clean) handed a victim's
profile over to an impostor; without the share, one long session that barely passed could move it most of the way.

A stored profile is range-checked when loaded and before it is written (`check_ranges`): counts within the feature
memory, means within the log-millisecond range the scorer measures, variances within what such values can spread.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from . import features as F
from .stats import accumulate, cap_counts, merge

PROFILE_MAGIC = b"ZTPF"
# 2: a third reaction type (pointer arrival -> click); 3: cadence self-consistency; 4: up-up flights
PROFILE_VERSION = 4
# versions 2 and 3 are read (migrated): their key arrays have no up-up flights (the model leans on the population
# there until sessions are learned) and their self-consistency, if any, was measured without them and is dropped,
# so their users are not normalised until they enrol again; everything else is as it was
_MIGRATES = (2, 3)
_OLD_KEY_FEATURES = F.N_DWELL + F.N_FLIGHT
PROFILE_MAX_BYTES = 64 * 1024
# a feature never weighs more than this many observations: learning keeps following slow drift
FEATURE_MEMORY = 400.0
# `learn` refuses sessions whose cadence was judged over fewer keystrokes than the shipped impostor rule needs before
# it may act (policies/defaults/behaviour.yaml, impostor-typing: evidence.keystrokes >= 40): a session shorter than
# that can never be stepped up for its rhythm, so it cannot vouch for it either
MIN_LEARN_KEYSTROKES = 40
# ... and sessions whose peak cadence evidence reached this fraction of the alarm level (score ~0.02 there): a session
# that came anywhere near the alarm is not evidence of the user's own typing
LEARN_MAX_PEAK = 0.5
# one session adds at most this share of the profile's own count per feature (at least LEARN_MIN_COUNT observations,
# so that features the profile lacks can still be learned): a learned session moves a mean at most 1/5 of the way
LEARN_MAX_SHARE = 0.25
LEARN_MIN_COUNT = 4.0

# Plausible values of a stored profile. Key and reaction features are log(ms) of intervals clamped at 1 ms and below
# 1.5 s (keys) or ~3 s (reactions): 0 .. 8.1; pointer features are a straightness in 0..1 and logs of px/ms and Hz,
# which stay well within +-100 for any float32 input. Values in range cannot spread more than (range / 2)^2 per
# observation (16 for log ms). Anything beyond was not written by enrol/learn, and either silences the model (a count
# of 3e38 outvotes every session observation) or breaks the profile later (a mean of 1e30 squares past float32 when
# learned, and the profile written back no longer loads).
LOG_MS_RANGE = (-1.0, 10.0)
POINTER_RANGE = (-100.0, 100.0)
LOG_MS_VAR_MAX = 25.0
POINTER_VAR_MAX = 1.0e4
_SLACK = 1.0 + 1e-5  # float32 rounding of values at a bound

N_POINTER_FEATURES = 3  # straightness, log speed (px/ms), log sampling rate (Hz)

_HEADER = struct.Struct("<4sHHI")  # magic, version, reserved, sessions
_TRAILER = struct.Struct("<f")  # since version 3: cadence self-consistency (NaN: unknown)
_ARRAY_SIZES = (
    ("key_n", F.N_KEY_FEATURES),
    ("key_mean", F.N_KEY_FEATURES),
    ("key_m2", F.N_KEY_FEATURES),
    ("react_n", F.N_REACT_TYPES),
    ("react_mean", F.N_REACT_TYPES),
    ("react_m2", F.N_REACT_TYPES),
    ("pointer_n", N_POINTER_FEATURES),
    ("pointer_mean", N_POINTER_FEATURES),
    ("pointer_m2", N_POINTER_FEATURES),
)


class ProfileError(ValueError):
    """A serialised profile or a summary that cannot be used (corrupt, wrong version, non-finite)."""


def _zeros(size: int) -> np.ndarray:
    return np.zeros(size, dtype=np.float64)


@dataclass(slots=True)
class TimingStats:
    """Running statistics over the profile's feature spaces. Used for profiles and session summaries alike."""

    key_n: np.ndarray = field(default_factory=lambda: _zeros(F.N_KEY_FEATURES))
    key_mean: np.ndarray = field(default_factory=lambda: _zeros(F.N_KEY_FEATURES))
    key_m2: np.ndarray = field(default_factory=lambda: _zeros(F.N_KEY_FEATURES))
    react_n: np.ndarray = field(default_factory=lambda: _zeros(F.N_REACT_TYPES))
    react_mean: np.ndarray = field(default_factory=lambda: _zeros(F.N_REACT_TYPES))
    react_m2: np.ndarray = field(default_factory=lambda: _zeros(F.N_REACT_TYPES))
    pointer_n: np.ndarray = field(default_factory=lambda: _zeros(N_POINTER_FEATURES))
    pointer_mean: np.ndarray = field(default_factory=lambda: _zeros(N_POINTER_FEATURES))
    pointer_m2: np.ndarray = field(default_factory=lambda: _zeros(N_POINTER_FEATURES))

    @property
    def keystrokes(self) -> int:
        return int(self.key_n[: F.N_DWELL].sum())

    def add_keystrokes(self, ks: F.Keystrokes) -> None:
        accumulate(self.key_n, self.key_mean, self.key_m2, ks.feature_ids, ks.feature_values)

    def add_reactions(self, latency_ms: np.ndarray, types: np.ndarray) -> None:
        accumulate(self.react_n, self.react_mean, self.react_m2, types, np.log(np.maximum(latency_ms, 1.0)))

    def add_pointer(self, strokes: F.PointerStrokes) -> None:
        n = len(strokes.straightness)
        if n == 0:
            return
        ids = np.repeat(np.arange(N_POINTER_FEATURES), n)
        values = np.concatenate(
            (strokes.straightness, np.log(np.maximum(strokes.speed, 1e-3)), np.log(np.maximum(strokes.rate_hz, 0.1)))
        )
        accumulate(self.pointer_n, self.pointer_mean, self.pointer_m2, ids, values)

    def merge_from(self, other: "TimingStats") -> None:
        merge(self.key_n, self.key_mean, self.key_m2, other.key_n, other.key_mean, other.key_m2)
        merge(self.react_n, self.react_mean, self.react_m2, other.react_n, other.react_mean, other.react_m2)
        merge(self.pointer_n, self.pointer_mean, self.pointer_m2, other.pointer_n, other.pointer_mean, other.pointer_m2)

    def cap(self, memory: float) -> None:
        cap_counts(self.key_n, self.key_m2, memory)
        cap_counts(self.react_n, self.react_m2, memory)
        cap_counts(self.pointer_n, self.pointer_m2, memory)

    def copy(self) -> "TimingStats":
        return TimingStats(*(getattr(self, name).copy() for name, _ in _ARRAY_SIZES))

    def arrays(self) -> list[np.ndarray]:
        return [getattr(self, name) for name, _ in _ARRAY_SIZES]

    def validate(self) -> None:
        for name, size in _ARRAY_SIZES:
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.shape != (size,):
                raise ProfileError(f"{name}: expected shape ({size},)")
            if not np.all(np.isfinite(a)):
                raise ProfileError(f"{name}: non-finite values")
            if name.endswith("_n") or name.endswith("_m2"):
                if np.any(a < 0):
                    raise ProfileError(f"{name}: negative values")


@dataclass(slots=True)
class Profile:
    """A user's timing profile (versioned, serialisable, a few KB)."""

    stats: TimingStats = field(default_factory=TimingStats)
    sessions: int = 0
    version: int = PROFILE_VERSION
    cadence_self: float = math.nan  # mean log ratio per observation of the enrolment judged by its own other parts

    @property
    def keystrokes(self) -> int:
        return self.stats.keystrokes

    @property
    def reactions(self) -> int:
        return int(self.stats.react_n.sum())

    def to_bytes(self) -> bytes:
        # never write what from_bytes would refuse: a stored profile that does not load is a lost profile
        self.stats.validate()
        check_ranges(self.stats)
        if math.isinf(self.cadence_self):
            raise ProfileError("cadence self-consistency: infinite")
        head = _HEADER.pack(PROFILE_MAGIC, PROFILE_VERSION, 0, min(self.sessions, 2**32 - 1))
        body = np.concatenate(self.stats.arrays()).astype("<f4").tobytes()
        return head + body + _TRAILER.pack(self.cadence_self)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Profile":
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProfileError("profile must be bytes")
        data = bytes(data)
        if len(data) < _HEADER.size:
            raise ProfileError("profile too short")
        magic, version, _, sessions = _HEADER.unpack_from(data)
        if magic != PROFILE_MAGIC:
            raise ProfileError("not a ztgate profile")
        if version != PROFILE_VERSION and version not in _MIGRATES:
            raise ProfileError(f"profile version {version} is not supported (expected {PROFILE_VERSION}): "
                               "reset it (`ztgate profiles reset USER`) and let the user enrol again")
        key_size = F.N_KEY_FEATURES if version == PROFILE_VERSION else _OLD_KEY_FEATURES
        sizes = [key_size if name.startswith("key_") else size for name, size in _ARRAY_SIZES]
        total = sum(sizes)
        expected = 4 * total + (_TRAILER.size if version >= 3 else 0)
        if len(data) != _HEADER.size + expected:
            raise ProfileError(f"profile body has {len(data) - _HEADER.size} bytes, expected {expected}")
        cadence_self = math.nan
        if version == PROFILE_VERSION:
            (cadence_self,) = _TRAILER.unpack_from(data, _HEADER.size + 4 * total)
            if math.isinf(cadence_self):
                raise ProfileError("cadence self-consistency: infinite")
        flat = np.frombuffer(data, dtype="<f4", offset=_HEADER.size, count=total).astype(np.float64)
        arrays = []
        pos = 0
        for (_, size), stored in zip(_ARRAY_SIZES, sizes):
            a = np.zeros(size)
            a[:stored] = flat[pos : pos + stored]
            arrays.append(a)
            pos += stored
        stats = TimingStats(*arrays)
        stats.validate()
        check_ranges(stats)
        return cls(stats=stats, sessions=int(sessions), version=PROFILE_VERSION, cadence_self=float(cadence_self))


def check_ranges(stats: TimingStats) -> None:
    """Raises ProfileError unless `stats` (finite, non-negative counts and M2: TimingStats.validate) hold what enrol
    and learn can produce: counts at most FEATURE_MEMORY, means and variances within the bounds above. For profiles
    only: a session's own statistics are not capped."""
    for prefix, (lo, hi), var_max in (
        ("key", LOG_MS_RANGE, LOG_MS_VAR_MAX),
        ("react", LOG_MS_RANGE, LOG_MS_VAR_MAX),
        ("pointer", POINTER_RANGE, POINTER_VAR_MAX),
    ):
        n = getattr(stats, f"{prefix}_n")
        mean = getattr(stats, f"{prefix}_mean")
        m2 = getattr(stats, f"{prefix}_m2")
        if np.any(n > FEATURE_MEMORY * _SLACK):
            raise ProfileError(f"{prefix}_n: counts over the feature memory ({FEATURE_MEMORY:g})")
        if np.any(mean < lo * _SLACK) or np.any(mean > hi * _SLACK):
            raise ProfileError(f"{prefix}_mean: values outside {lo:g} .. {hi:g}")
        if np.any(m2 > var_max * n * _SLACK):
            raise ProfileError(f"{prefix}_m2: spread beyond {var_max:g} per observation")


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What `learn()` needs from a finished session: timing statistics only, no characters, no sequences."""

    stats: TimingStats
    flagged: bool
    keystrokes: int
    seconds: float
    # keystrokes over which the cadence signal was sufficient (0: never judged), and the peak cadence evidence as a
    # fraction of its alarm level (inf: never judged); the defaults make a summary that says nothing unlearnable
    cadence_keystrokes: int = 0
    cadence_peak: float = math.inf

    def to_dict(self) -> dict:
        return {
            "flagged": self.flagged,
            "keystrokes": self.keystrokes,
            "seconds": round(self.seconds, 3),
            "cadence_keystrokes": self.cadence_keystrokes,
            "cadence_peak": self.cadence_peak if math.isfinite(self.cadence_peak) else None,
            "stats": {name: getattr(self.stats, name).round(5).tolist() for name, _ in _ARRAY_SIZES},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SessionSummary":
        try:
            stats = TimingStats(*(np.asarray(d["stats"][name], dtype=np.float64) for name, _ in _ARRAY_SIZES))
            peak = d.get("cadence_peak")
            summary = cls(stats, bool(d["flagged"]), int(d["keystrokes"]), float(d["seconds"]),
                          int(d.get("cadence_keystrokes", 0)), math.inf if peak is None else float(peak))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"invalid session summary: {exc}") from exc
        stats.validate()
        return summary


def merged_capped(base: TimingStats, extra: TimingStats) -> TimingStats:
    """`base` with `extra` merged in, counts capped at FEATURE_MEMORY: how a profile takes in newer typing."""
    stats = base.copy()
    stats.merge_from(extra)
    stats.cap(FEATURE_MEMORY)
    return stats


def learn(profile: Profile, summary: SessionSummary) -> Profile:
    """Merges a clean session into the profile. A session that was flagged, that the cadence model did not judge over
    MIN_LEARN_KEYSTROKES, or whose cadence evidence reached LEARN_MAX_PEAK of the alarm, changes nothing."""
    if not isinstance(summary, SessionSummary):
        raise TypeError("learn() needs a SessionSummary from SessionScorer.summary()")
    summary.stats.validate()
    if not learnable(summary):
        return profile
    stats = merged_capped(profile.stats, bounded_share(profile.stats, summary.stats))
    return Profile(stats=stats, sessions=profile.sessions + 1, version=profile.version, cadence_self=profile.cadence_self)


def learnable(summary: SessionSummary) -> bool:
    """Whether `learn` would take the session in (see MIN_LEARN_KEYSTROKES and LEARN_MAX_PEAK)."""
    return (
        not summary.flagged
        and summary.cadence_keystrokes >= MIN_LEARN_KEYSTROKES
        and summary.cadence_peak < LEARN_MAX_PEAK  # False for NaN too
    )


def bounded_share(profile: TimingStats, session: TimingStats) -> TimingStats:
    """The session's statistics with each feature's count cut to LEARN_MAX_SHARE of the profile's (at least
    LEARN_MIN_COUNT): means and variances are kept, only the weight the session gets when merged shrinks."""
    out = session.copy()
    for prefix in ("key", "react", "pointer"):
        n = getattr(out, f"{prefix}_n")
        m2 = getattr(out, f"{prefix}_m2")
        limit = np.maximum(LEARN_MAX_SHARE * getattr(profile, f"{prefix}_n"), LEARN_MIN_COUNT)
        over = n > limit
        if np.any(over):
            m2[over] *= limit[over] / n[over]
            n[over] = limit[over]
    return out
