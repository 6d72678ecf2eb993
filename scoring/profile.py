"""Per-user timing profile: statistics, serialisation and learning from clean sessions (enrolment: scoring.enrolment).

A profile is a set of running statistics (count, mean, M2) per timing feature, in log milliseconds: dwell per key
class, flight per class pair, reaction latency per reaction type, and pointer stroke shape. It never holds events,
characters or key sequences: only these aggregates. Serialised it is a few kilobytes (the gateway keeps it in Redis).

The profile also keeps one number from enrolment, the cadence self-consistency (scoring.cadence_model.
self_consistency: how well parts of the enrolment predict each other), which normalises the cadence evidence per
user. It is a property of the enrolment and stays as it is when sessions are learned.

Drift control: `learn()` merges a session's statistics only when the session raised nothing (`summary.flagged` is
False), and counts per feature are capped so that old behaviour fades instead of outvoting recent behaviour.
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
# `learn` refuses sessions with less evidence than this: a handful of keystrokes would only add noise
MIN_LEARN_KEYSTROKES = 20

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
        return cls(stats=stats, sessions=int(sessions), version=PROFILE_VERSION, cadence_self=float(cadence_self))


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What `learn()` needs from a finished session: timing statistics only, no characters, no sequences."""

    stats: TimingStats
    flagged: bool
    keystrokes: int
    seconds: float

    def to_dict(self) -> dict:
        return {
            "flagged": self.flagged,
            "keystrokes": self.keystrokes,
            "seconds": round(self.seconds, 3),
            "stats": {name: getattr(self.stats, name).round(5).tolist() for name, _ in _ARRAY_SIZES},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SessionSummary":
        try:
            stats = TimingStats(*(np.asarray(d["stats"][name], dtype=np.float64) for name, _ in _ARRAY_SIZES))
            summary = cls(stats, bool(d["flagged"]), int(d["keystrokes"]), float(d["seconds"]))
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
    """Merges a clean session into the profile. A flagged session, or one with too little evidence, changes nothing."""
    if not isinstance(summary, SessionSummary):
        raise TypeError("learn() needs a SessionSummary from SessionScorer.summary()")
    summary.stats.validate()
    if summary.flagged or summary.keystrokes < MIN_LEARN_KEYSTROKES:
        return profile
    stats = merged_capped(profile.stats, summary.stats)
    return Profile(stats=stats, sessions=profile.sessions + 1, version=profile.version, cadence_self=profile.cadence_self)
