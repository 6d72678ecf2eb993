"""`cadence`: is this the claimed user's typing rhythm?

The judgement is scoring.cadence_model's: a hierarchical model of the user's log timings (group offsets such as
"letter-to-letter flights 15% slower than most people", plus per-feature residuals shrunk by their counts) against
"someone else" from the population, whose unknown group offsets are integrated out over the observations judged.
In a session the model's sufficient statistics decay per observation, so the evidence always covers roughly the
last 1/(1 - decay) observations: a change of person mid-session shows as soon as the new typing dominates, genuine
typing pulls the evidence back down, and the state is a fixed handful of numbers plus a ring for the explanation.
After a step-up the user passed, the model takes in the session's typing so far (for this session only), so that
a user whose typing drifted from their profile is not stepped up again and again. A session that starts without
a profile (none could be read) holds its latest observations; a profile that arrives mid-session judges them first.
The evidence is normalised per user by the profile's self-consistency (how well the enrolment predicted itself), so
that users whose genuine typing fits their own model less well do not raise most of the false alarms. The alarm level (score 0.5), the decay and the
normalisation's weight are set on training users only (scoring/eval/freetext.py).

`UserModel` and `cusum` are the earlier per-observation Gaussian ratio and Page's CUSUM, kept for the benchmark
and the relay detector.
"""

from __future__ import annotations

import math

import numpy as np

from .. import features as F
from ..keys import KeyClass
from ..cadence_model import (N_GROUPS, STATE_SIZE, CadencePrior, UserCadenceModel, decayed_paths, decayed_sums,
                             default_prior, impostor_evidence, shipped_prior)
from ..population import Population
from ..profile import Profile, TimingStats, merged_capped
from ..ring import Ring
from ..lazysignal import LazySignal
from ..signals import Evidence, Signal
from ..stats import sigmoid

NAME = "cadence"
MIN_PROFILE_KEYSTROKES = 100
MIN_SESSION_OBSERVATIONS = 20
MIN_FEATURE_COUNT = 3  # profile observations a feature needs before it is used
MIN_POPULATION_USERS = 20
SHRINK = 8.0  # pseudo-observations of population spread in each user feature
LLR_CLIP = 4.0
EXPLAIN_WINDOW = 256
# Without a profile: the latest observations, held so that a profile arriving mid-session can judge them. The
# evidence decays per observation (the shipped decay is 0.99): the oldest of 1024 would weigh 0.99^1024 = 3e-5 in it,
# so holding more would change nothing a policy reads. 10 KB per session.
HELD_OBSERVATIONS = 1024


class UserModel:
    """Per-feature Gaussian parameters (log ms) for the claimed user and for the population."""

    __slots__ = ("usable", "mu", "var", "pop_mu", "pop_var", "const")

    def __init__(self, profile: Profile, population: Population):
        st = profile.stats
        n = st.key_n
        dof = np.maximum(n - 1.0, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            user_var = np.where(dof > 0, st.key_m2 / np.maximum(dof, 1.0), 0.0)
        within = population.key_within_var
        self.mu = (n * st.key_mean + SHRINK * population.key_mean) / (n + SHRINK)
        self.var = (dof * user_var + SHRINK * within) / (dof + SHRINK)
        self.pop_mu = population.key_mean
        self.pop_var = population.key_var
        pop_ok = population.key_users >= MIN_POPULATION_USERS
        if not np.any(pop_ok):  # built-in defaults: no per-feature population, use every feature the user has
            pop_ok = np.ones_like(pop_ok, dtype=bool)
        self.usable = (n >= MIN_FEATURE_COUNT) & pop_ok & (self.var > 0) & (self.pop_var > 0)
        self.const = 0.5 * (np.log(np.where(self.pop_var > 0, self.pop_var, 1.0)) - np.log(np.where(self.var > 0, self.var, 1.0)))

    def llr(self, ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(usable mask, clipped log-likelihood ratio user/population, z-score against the user) per observation."""
        ok = self.usable[ids]
        ids, values = ids[ok], values[ok]
        d_user = values - self.mu[ids]
        d_pop = values - self.pop_mu[ids]
        llr = self.const[ids] - 0.5 * d_user * d_user / self.var[ids] + 0.5 * d_pop * d_pop / self.pop_var[ids]
        z = d_user / np.sqrt(self.var[ids])
        return ok, np.clip(llr, -LLR_CLIP, LLR_CLIP), z


def cusum(increments: np.ndarray, start: float) -> np.ndarray:
    """Page's CUSUM S_k = max(0, S_{k-1} + x_k), vectorised: S_k = C_k - min(-start, min_{j<=k} C_j)."""
    c = np.cumsum(increments)
    return c - np.minimum(np.minimum.accumulate(c), -start)


def evidence_level(sums: list[float], offset_var: list[float]) -> float:
    """impostor_evidence() of one state in plain Python: eight groups are too few for numpy's per-call overhead."""
    llr = sums[0]
    for a, s0, s1 in zip(offset_var, sums[1 : 1 + N_GROUPS], sums[1 + N_GROUPS :]):
        llr -= 0.5 * s1 * s1 / (s0 + 1.0 / a) - 0.5 * math.log1p(a * s0)
    return -llr


def level_to_score(level: float, alarm: float) -> float:
    """Evidence level -> score in [0, 1]: 0.5 exactly at the alarm level, ~0 with no evidence."""
    return sigmoid(8.0 * (level / max(alarm, 1e-6) - 1.0))


def feature_name(fid: int) -> str:
    if fid < F.N_DWELL:
        return f"dwell {KeyClass(fid).name}"
    if fid < F.RELEASE_BASE:
        p, c = divmod(fid - F.FLIGHT_BASE, F.N_KEY_CLASSES)
        return f"flight {KeyClass(p).name}->{KeyClass(c).name}"
    p, c = divmod(fid - F.RELEASE_BASE, F.N_KEY_CLASSES)
    return f"release flight {KeyClass(p).name}->{KeyClass(c).name}"


def adapted_statistics(profile: TimingStats, session: TimingStats) -> np.ndarray:
    """The key statistics (n, mean, M2; float32, as the session state keeps them) of the profile with the session's
    typing merged in, as learning would merge it."""
    stats = merged_capped(profile, session)
    return np.stack((stats.key_n, stats.key_mean, stats.key_m2)).astype(np.float32)


def adapted_model(adapted: np.ndarray, prior: CadencePrior, self_llr: float) -> UserCadenceModel:
    n, mean, m2 = adapted.astype(np.float64)
    return UserCadenceModel(n, mean, m2, prior, self_llr)


class CadenceDetector:
    def __init__(self, profile: Profile | None, population: Population, prior: CadencePrior | None = None):
        self.population = population
        self.prior = prior or shipped_prior() or default_prior(population)
        self.profile = profile
        self.profile_keystrokes = profile.keystrokes if profile is not None else 0
        self.model = (
            UserCadenceModel.from_stats(profile.stats, self.prior, profile.cadence_self) if profile is not None else None
        )
        # the key statistics the model was rebuilt from after a passed step-up (float32 n, mean, M2), else empty
        self.adapted = np.empty(0, dtype=np.float32)
        self.ring = Ring(EXPLAIN_WINDOW, {"fid": "i2", "z": "f4", "llr": "f4"})
        self.stat = np.zeros(3)  # impostor evidence now, observations, peak evidence at a batch end (once sufficient)
        self.sums = np.zeros(STATE_SIZE)  # the model's decayed sufficient statistics
        self._offset_var = self.prior.offset_var.tolist()
        # without a profile: the latest observations, judged if one arrives (adopt); made on first use
        self.held: Ring | None = None
        # observations since the start that were never judged against a profile: dropped from the hold, or
        # answered by a step-up before a profile arrived (they must not train it)
        self.unjudged = 0

    def update(self, ks: F.Keystrokes) -> None:
        if len(ks.feature_ids) == 0:
            return
        if self.model is None:
            self._hold(ks.feature_ids, ks.feature_values)
            return
        obs = self.model.observe(ks.feature_ids, ks.feature_values)
        n = len(obs.llr)
        if n == 0:
            return
        # the evidence is judged where a policy can see it, at the end of each batch: only the final sums are needed
        self.sums = decayed_sums(obs, self.sums, self.prior.decay)
        level = evidence_level(self.sums.tolist(), self._offset_var)
        stat = self.stat
        stat[0] = level
        stat[1] += n
        if stat[1] >= MIN_SESSION_OBSERVATIONS:
            stat[2] = max(stat[2], level)
        fid = ks.feature_ids if self.model.all_usable else ks.feature_ids[obs.ok]
        self.ring.push(fid=fid, z=obs.z, llr=obs.llr)

    def reset(self) -> None:
        self.stat[:] = 0.0
        self.sums[:] = 0.0
        self.ring.clear()
        if self.held is not None:  # answered by the step-up: not judged later, and so never judged
            self.unjudged += self.held.count
            self.held.clear()

    def _hold(self, ids: np.ndarray, values: np.ndarray) -> None:
        if self.held is None:
            self.held = Ring(HELD_OBSERVATIONS, {"fid": "i2", "value": "f8"})
        self.unjudged += max(0, self.held.count + len(ids) - self.held.size)
        self.held.push(fid=ids, value=values)

    def adopt(self, profile: Profile) -> int:
        """A profile that arrived after the session started: judges the held observations against it, in typing
        order, then everything that follows. Returns how many observations of the session were never judged
        against it (see `unjudged`).

        Judged one observation at a time, as decayed_paths() gives them, so the peak is at least the one that
        batch-by-batch judging would have recorded: the peak decides whether the session may train the profile."""
        self.profile = profile
        self.profile_keystrokes = profile.keystrokes
        self.model = UserCadenceModel.from_stats(profile.stats, self.prior, profile.cadence_self)
        if self.held is not None and self.held.count:
            self._judge_held(self.held.get("fid").astype(np.int64), self.held.get("value"))
        self.held = None
        return self.unjudged

    def _judge_held(self, ids: np.ndarray, values: np.ndarray) -> None:
        obs = self.model.observe(ids, values)
        n = len(obs.llr)
        if n == 0:
            return
        paths = decayed_paths(obs, self.sums, self.prior.decay)
        levels = impostor_evidence(paths, self.prior.offset_var)
        self.sums = paths[-1].copy()
        stat = self.stat
        seen_before = int(stat[1])
        stat[0] = float(levels[-1])
        stat[1] += n
        # the peak counts from the observation that made the session sufficient, as update() does
        first_sufficient = max(0, MIN_SESSION_OBSERVATIONS - seen_before - 1)
        if first_sufficient < n:
            stat[2] = max(stat[2], float(levels[first_sufficient:].max()))
        fid = ids if self.model.all_usable else ids[obs.ok]
        self.ring.push(fid=fid, z=obs.z, llr=obs.llr)

    def adapt(self, session: TimingStats) -> None:
        """After a step-up the user passed: the model takes in this session's typing so far (merged into the
        profile's statistics as learning would, for this session only; the session stays flagged and never trains
        the profile). People drift within a session (warming up, tiring, another keyboard); without this a drifting
        user who has just proved who they are would be stepped up again every few dozen keystrokes, and those
        repeats were most of the false alarms on the Aalto training users. The cost: someone who can pass the
        step-up is no longer flagged by cadence for the rest of the session (the step-up is their security event)."""
        if self.profile is None:
            return
        self._use_adapted(adapted_statistics(self.profile.stats, session))

    def _use_adapted(self, adapted: np.ndarray) -> None:
        self.adapted = adapted
        self.model = adapted_model(adapted, self.prior, self.profile.cadence_self)

    def signal(self, evidence: Evidence) -> Signal:
        if self.model is None:
            return Signal(NAME, 0.0, False, evidence, "no profile for this user: cadence cannot be judged (insufficient)")
        if self.profile_keystrokes < MIN_PROFILE_KEYSTROKES:
            return Signal(
                NAME,
                0.0,
                False,
                evidence,
                f"profile has {self.profile_keystrokes} keystrokes, needs {MIN_PROFILE_KEYSTROKES}: insufficient",
            )
        n_obs = int(self.stat[1])
        if n_obs < MIN_SESSION_OBSERVATIONS:
            return Signal(
                NAME, 0.0, False, evidence, f"{n_obs} timing observations so far, needs {MIN_SESSION_OBSERVATIONS}: insufficient"
            )
        level = float(self.stat[0])
        alarm = self.prior.alarm
        score = level_to_score(max(level, 0.0), alarm)
        # means over the ring do not depend on its order: the held columns are read in place
        held = self.ring.count
        fid = self.ring.columns["fid"][:held]
        z = self.ring.columns["z"][:held].astype(np.float64)
        llr = self.ring.columns["llr"][:held]
        is_dwell = fid < F.N_DWELL
        n_dwell = int(np.count_nonzero(is_dwell))
        z_dwell = float(z[is_dwell].sum())
        z_all = float(z.sum())
        dwell_z = z_dwell / n_dwell if n_dwell else 0.0
        flight_z = (z_all - z_dwell) / (held - n_dwell) if held > n_dwell else 0.0
        details = {
            "evidence_level": level,
            "alarm_level": alarm,
            "peak_level": float(self.stat[2]),
            "observations": float(n_obs),
            "mean_llr_recent": float(llr.mean()) if held else 0.0,
            "dwell_z_recent": dwell_z,
            "flight_z_recent": flight_z,
            "profile_keystrokes": float(self.profile_keystrokes),
            "adapted_after_step_up": float(self.adapted.size > 0),
        }
        memory = int(round(1.0 / (1.0 - self.prior.decay)))
        # the text is written only when read (LazySignal): it works on copies of the ring as it is now
        fid_now, z_now = fid.astype(np.int64), z
        against = "the profile as adapted to this session after a passed step-up" if self.adapted.size else "the profile"

        def explain() -> str:
            counts = np.bincount(fid_now, minlength=F.N_KEY_FEATURES)
            sums = np.bincount(fid_now, weights=z_now, minlength=F.N_KEY_FEATURES)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_z = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
            strength = np.abs(mean_z) * np.sqrt(counts)
            top = [int(i) for i in np.argsort(-strength, kind="stable")[:3] if counts[i] >= 3]
            parts = ", ".join(f"{feature_name(i)} {mean_z[i]:+.1f} sd (n={counts[i]})" for i in top)
            verdict = "unlike the claimed user" if score >= 0.5 else "consistent with the claimed user"
            return (
                f"typing rhythm {verdict}: impostor evidence {level:.1f} (alarm at {alarm:.1f}) over about the last "
                f"{min(memory, n_obs)} of {n_obs} timing observations; recent dwell {dwell_z:+.1f} sd, flight "
                f"{flight_z:+.1f} sd from {against}; largest: {parts or 'none'}"
            )

        return LazySignal(NAME, score, True, evidence, explain, details)

    def state(self) -> dict[str, np.ndarray]:
        return {
            "cadence.stat": self.stat,
            "cadence.sums": self.sums,
            "cadence.adapted": self.adapted,
            **self.ring.state("cadence.ring"),
        }

    def load(self, state: dict[str, np.ndarray]) -> None:
        stat = np.asarray(state["cadence.stat"], dtype=np.float64)
        sums = np.asarray(state["cadence.sums"], dtype=np.float64)
        if stat.shape != (3,) or sums.shape != (STATE_SIZE,) or not (np.all(np.isfinite(stat)) and np.all(np.isfinite(sums))):
            raise ValueError("cadence state: wrong shape or non-finite values (state from another version?)")
        self.stat = stat.copy()
        self.sums = sums.copy()
        adapted = np.asarray(state["cadence.adapted"], dtype=np.float32)
        if adapted.size:
            if adapted.shape != (3, F.N_KEY_FEATURES) or not np.all(np.isfinite(adapted)) or self.profile is None:
                raise ValueError("cadence state: adapted statistics of the wrong shape, non-finite, or without a profile")
            self._use_adapted(adapted.copy())
        self.ring.load("cadence.ring", state)
