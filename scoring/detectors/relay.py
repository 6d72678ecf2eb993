"""`relay`: is a remote operator behind the endpoint?

A relayed operator reacts to what the endpoint shows one round trip (plus a remote-desktop frame pipeline) late.
Each reaction latency (display change -> first input; typo echo -> BackSpace; pointer arrival on its target -> the
click, whose homing phase is closed-loop) is evidence about the added control-loop latency `delta` (ms), which is
estimated by a small Bayesian model on a grid:

- a local reaction of type t is lognormal with the user's log-median mu_t and within-user sd s_t, mixed with a small
  uniform outlier share (one distracted reaction cannot decide);
- the user's log-median is not known exactly: it is integrated out over a normal prior whose centre and width come
  from the profile (normal-normal posterior of the profile's reactions, shrunk towards the population, plus a
  day-to-day drift term) or, without a profile, from the population's between-user spread (measured on training
  users only). A slow user is therefore not mistaken for a relay: their offset is absorbed here, not in delta;
- a click is late by delta only if the operator waited to see the pointer arrive: the pointer type's alternative is
  an even mixture of "late by delta" and "not late" (identical under delta = 0, so genuine sessions are unaffected);
- reactions timed on the gateway's arrival clock (remote-desktop frames, terminal output) have the kernel TCP RTT
  taken out by the scorer first: distance to the client is not a relay (a relay *behind* the endpoint is not in it);
- delta has a spike-and-slab prior: P(delta = 0) = PRIOR_LOCAL (sessions are local unless shown otherwise), the rest
  spread evenly over 10..500 ms.

Published details are quantiles of the posterior of delta: `added_latency_ms` is its median, the CI its 2.5% and
97.5% quantiles. Because the prior puts most mass on "local", the median only leaves 0 once the likelihood ratio
for a relay beats the prior odds; that ratio is a martingale under the local model, so the chance that a genuine
session *ever* crosses (Ville's inequality) is bounded by roughly (1 - PRIOR_LOCAL) / PRIOR_LOCAL however often the
policy looks. The score is P(delta >= SCORE_DELTA_MS | reactions) (0.5 where the median reaches SCORE_DELTA_MS).
Old evidence fades geometrically (FORGET per reaction), so a hand-over to a remote operator mid-session is seen.
Relay artefacts are accumulated separately by a CUSUM of binomial log-likelihood ratios: coalesced inputs
(intervals of a few ms, rare in human typing) and collapsed dwells (down and up delivered together).
"""

from __future__ import annotations

import math

import numpy as np

from .. import features as F
from ..lazysignal import LazySignal
from ..population import Population
from ..profile import Profile
from ..signals import Evidence, Signal
from .cadence import cusum, level_to_score

NAME = "relay"
# artefact CUSUM alarm: users differ in how often they roll keys over or tap very short, so Wald's log(100) fired on
# ~11% of genuine training users' 15-sentence sessions; 15 fired on ~1% (measured on training users only)
ALARM_LEVEL = 15.0
MIN_PROFILE_REACTIONS = 3
MIN_REACTIONS = 3
MIN_ARTEFACT_SAMPLES = 50
COALESCED_MS = 4.0
COLLAPSED_DWELL_MS = 8.0
TYPE_NAMES = F.REACT_TYPE_NAMES

# the latency model
DELTA_MS = np.arange(0.0, 501.0, 10.0)  # grid of added loop latency; index 0 is "local"
USER_Z = np.linspace(-3.0, 3.0, 13)  # the user's unknown log-median offset, in units of its uncertainty
_USER_LOGW = -0.5 * USER_Z**2 - np.log(np.exp(-0.5 * USER_Z**2).sum())
# P(local) before any reaction: with 0.99 no genuine training-user session (0 of 200) reached the step-up level; 0.97
# gave 1% and 0.9 gave 4.5% (relay eval model, training users only, checked every 50 events). Checked at every batch
# as the sensor sends them, as the gateway does, up to 1.5% of the test users' sessions reach it in the worst
# workflows (docs/results.md): about the (1 - PRIOR_LOCAL) / PRIOR_LOCAL that Ville's inequality allows
PRIOR_LOCAL = 0.99
OUTLIER_SHARE = 0.03
DRIFT_SD_LOG = 0.05  # day-to-day drift of a user's reaction median beyond what the profile's own noise says
FORGET = 1.0 - 1.0 / 64.0  # evidence weight kept per new reaction: an effective memory of ~64 reactions
SCORE_DELTA_MS = 50.0
# share of a relayed operator's clicks assumed to wait for the pointer's arrival on screen (the rest are ballistic and
# carry no loop latency); a hedge, not a measurement: with it, clicks that are not late cannot veto the prompts
CONFIRMED_CLICKS = 0.5
# share of a relayed operator's corrections made after seeing the typo on screen (the rest are felt and fixed blind,
# as fast typists do, and carry no loop latency); a hedge like CONFIRMED_CLICKS
SEEN_CORRECTIONS = 0.5
_RANGES = (F.PROMPT_RANGE_MS, F.CORRECTION_RANGE_MS, F.SETTLE_RANGE_MS)
# Baseline for reaction types the population file does not carry yet (pointer arrival -> click, + SETTLE_OFFSET_MS):
# median, within-user sd and between-user sd of log latency, measured on the Balabit training users (eval/relay.py
# rebuilds them from its own training users; these are the values it printed)
POINTER_BASELINE = (175.0, 0.75, 0.27)
_LOG_PRIOR = np.concatenate(([math.log(PRIOR_LOCAL)], np.full(len(DELTA_MS) - 1, math.log((1 - PRIOR_LOCAL) / (len(DELTA_MS) - 1)))))
_GRID = (len(DELTA_MS), len(USER_Z))
_JITTER_MEMORY = 1.0 / 32.0  # weight of a new arrival-offset step in the running jitter estimate
_QUANTILES = (0.025, 0.5, 0.975)


def _population_reactions(population: Population) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per reaction type (median ms, within sd, between sd), padding types an older population file lacks."""
    med = np.asarray(population.react_median_ms, dtype=np.float64)
    within = np.asarray(population.react_sd_log, dtype=np.float64)
    between = np.asarray(population.react_between_sd_log, dtype=np.float64)
    if len(med) < F.N_REACT_TYPES:
        pad = np.array([POINTER_BASELINE])[:, :].repeat(F.N_REACT_TYPES - len(med), axis=0)
        med = np.concatenate((med, pad[:, 0]))
        within = np.concatenate((within, pad[:, 1]))
        between = np.concatenate((between, pad[:, 2]))
    return med[: F.N_REACT_TYPES], within[: F.N_REACT_TYPES], between[: F.N_REACT_TYPES]


class ReactionBaseline:
    """Per reaction type: the log-median of a local reaction (best guess), its uncertainty, and the within-user sd."""

    __slots__ = ("mu", "mu_se", "sd", "source")

    def __init__(self, profile: Profile | None, population: Population):
        med, within, between = _population_reactions(population)
        pop_mu = np.log(med)
        self.mu = pop_mu.astype(np.float64).copy()
        self.sd = within.astype(np.float64).copy()
        self.mu_se = np.sqrt(between**2 + DRIFT_SD_LOG**2)
        self.source = ["population"] * F.N_REACT_TYPES
        if profile is not None:
            st = profile.stats
            for t in range(F.N_REACT_TYPES):
                n = float(st.react_n[t])
                if n < MIN_PROFILE_REACTIONS:
                    continue
                var = st.react_m2[t] / max(n - 1.0, 1.0)
                shrink = 4.0  # pseudo-observations of the population's within-user spread
                self.sd[t] = math.sqrt(((n - 1) * var + shrink * within[t] ** 2) / (n - 1 + shrink))
                precision = 1.0 / between[t] ** 2 + n / self.sd[t] ** 2
                self.mu[t] = (pop_mu[t] / between[t] ** 2 + n * st.react_mean[t] / self.sd[t] ** 2) / precision
                self.mu_se[t] = math.sqrt(1.0 / precision + DRIFT_SD_LOG**2)
                self.source[t] = "profile"

    def loglik(self, latency: np.ndarray, t: int) -> np.ndarray:
        """Summed log-likelihood of reactions of type t over the (delta, user offset) grid."""
        mu = self.mu[t] + USER_Z * self.mu_se[t]
        sd = self.sd[t]
        y = latency[:, None] - DELTA_MS[None, :]
        ok = y > 1.0
        ly = np.log(np.where(ok, y, 1.0))
        lo, hi = _RANGES[t]
        log_in = math.log(1.0 - OUTLIER_SHARE) - math.log(sd * math.sqrt(2.0 * math.pi))
        log_out = math.log(OUTLIER_SHARE / (hi - lo))
        z = (ly[:, :, None] - mu[None, None, :]) * (1.0 / (sd * math.sqrt(2.0)))
        log_ln = (log_in - ly)[:, :, None] - z * z
        log_ln = np.where(ok[:, :, None], log_ln, -np.inf)
        if t != F.REACT_PROMPT:
            # a relayed operator may also click without waiting to see the pointer arrive, or fix a typo felt in the
            # fingers before it shows: such inputs are not late. Under "local" (delta = 0) both parts are the same
            # density, so this changes only the alternative (blind corrections cannot veto late prompts)
            share = CONFIRMED_CLICKS if t == F.REACT_POINTER else SEEN_CORRECTIONS
            log_ln = np.logaddexp(log_ln + math.log(share), log_ln[:, :1, :] + math.log(1.0 - share))
        return np.logaddexp(log_ln, log_out).sum(axis=0)


def _marginal(table: np.ndarray) -> np.ndarray:
    """log P(reactions of one type | delta): the user's offset integrated out."""
    a = table + _USER_LOGW
    m = a.max(axis=1)
    return m + np.log(np.exp(a - m[:, None]).sum(axis=1))


def posterior(loglik: np.ndarray) -> np.ndarray:
    """Posterior over DELTA_MS from the per-type (delta, offset) log-likelihood tables."""
    return _normalise(_LOG_PRIOR + sum(_marginal(loglik[t]) for t in range(loglik.shape[0])))


def _normalise(log_post: np.ndarray) -> np.ndarray:
    p = np.exp(log_post - log_post.max())
    return p / p.sum()


def quantile(post: np.ndarray, q: float) -> float:
    return float(DELTA_MS[min(int(np.searchsorted(np.cumsum(post), q - 1e-12)), len(DELTA_MS) - 1)])


class RelayDetector:
    def __init__(self, profile: Profile | None, population: Population):
        self.population = population
        self.baseline = ReactionBaseline(profile, population)
        self.loglik = np.zeros((F.N_REACT_TYPES, *_GRID))
        self._marg = np.zeros((F.N_REACT_TYPES, len(DELTA_MS)))  # cache: _marginal(loglik[t]) per type
        # CUSUM level, peak, reactions, flights, coalesced, dwells, collapsed, strokes, straightness sum,
        # reactions per type (prompt, correction, pointer), last arrival offset, running |offset step|
        self.stat = np.zeros(9 + F.N_REACT_TYPES + 2)
        self.stat[-2] = math.nan
        self._estimate: tuple[float, float, float, float] | None = None  # cache: the posterior changes only with reactions
        self._coalesced_llr = _binomial_pair(population.coalesced_rate)
        self._collapsed_llr = _binomial_pair(population.collapsed_dwell_rate)

    def update(self, ks: F.Keystrokes, latency: np.ndarray, types: np.ndarray, strokes: F.PointerStrokes) -> None:
        stat = self.stat
        if len(latency):
            for t in (np.unique(types).tolist() if len(latency) > 1 else [int(types[0])]):
                mine = latency if len(latency) == 1 else latency[types == t]
                table = self.loglik[t]
                table *= FORGET ** len(mine)
                table += self.baseline.loglik(mine, t)
                table -= table.max()  # only differences across the grid matter
                self._marg[t] = _marginal(table)
                stat[9 + t] += len(mine)
            stat[2] += len(latency)
            self._estimate = None
        parts = []
        any_hit = False
        misses = 0.0  # summed increments while nothing looked like an artefact
        # coalesced inputs among flights (counted in stat[3], hits in stat[4]), collapsed dwells (stat[5], stat[6])
        for values, limit, (llr_hit, llr_miss), at in (
            (ks.flight_ms, COALESCED_MS, self._coalesced_llr, 3),
            (ks.dwell_ms, COLLAPSED_DWELL_MS, self._collapsed_llr, 5),
        ):
            n = len(values)
            if not n:
                continue
            hit = values < limit
            n_hit = int(np.count_nonzero(hit))
            any_hit |= n_hit > 0
            parts.append(np.where(hit, llr_hit, llr_miss) if n_hit else np.full(n, llr_miss))
            misses += n * llr_miss
            stat[at] += n
            stat[at + 1] += n_hit
        if parts and not any_hit:
            # every increment is negative: the CUSUM only falls (to no lower than 0) and its peak cannot rise
            stat[0] = max(0.0, stat[0] + misses)
            parts = []
        n_st = len(strokes.straightness)
        if n_st:
            stat[7] += n_st
            stat[8] += float(strokes.straightness.sum())
        if parts:
            path = cusum(np.concatenate(parts) if len(parts) > 1 else parts[0], stat[0])
            stat[0] = path[-1]
            stat[1] = max(stat[1], float(path.max()))

    def add_arrival_offset(self, offset_ms: float) -> None:
        """Arrival minus source time of the latest input: its step-to-step spread is the path's jitter (a detail for
        analysts: a relay *behind* the endpoint leaves the endpoint -> gateway path, and so this, untouched)."""
        last = self.stat[-2]
        if math.isfinite(last):
            step = abs(offset_ms - last)
            self.stat[-1] += _JITTER_MEMORY * (step - self.stat[-1])
        self.stat[-2] = offset_ms

    def new_input_clock(self) -> None:
        """The session's keys now come from another source: its arrival offsets are on another footing."""
        self.stat[-2] = math.nan

    def reset(self) -> None:
        self.stat[:] = 0.0
        self.stat[-2] = math.nan
        self.loglik[:] = 0.0
        self._marg[:] = 0.0
        self._estimate = None

    def estimate(self) -> tuple[float, float, float, float]:
        """(posterior median, 2.5% quantile, 97.5% quantile, P(delta >= SCORE_DELTA_MS)) of the added latency."""
        if self._estimate is None:
            post = _normalise(_LOG_PRIOR + self._marg.sum(axis=0))
            cdf = np.cumsum(post)
            lo, med, hi = (float(DELTA_MS[i]) for i in np.minimum(np.searchsorted(cdf, np.array(_QUANTILES) - 1e-12), len(DELTA_MS) - 1))
            self._estimate = (med, lo, hi, float(1.0 - cdf[int(SCORE_DELTA_MS // 10) - 1]))
        return self._estimate

    def signal(self, evidence: Evidence) -> Signal:
        stat = self.stat
        n_react = int(stat[2])
        n_flights = int(stat[3])
        n_dwells = int(stat[5])
        ev = Evidence(evidence.keystrokes, evidence.seconds, n_react)
        coalesced = stat[4] / n_flights if n_flights else 0.0
        collapsed = stat[6] / n_dwells if n_dwells else 0.0
        details = {
            "evidence_level": float(stat[0]),
            "alarm_level": ALARM_LEVEL,
            "reactions": float(n_react),
            "prompt_reactions": float(stat[9]),
            "correction_reactions": float(stat[10]),
            "pointer_reactions": float(stat[11]),
            "coalesced_fraction": float(coalesced),
            "collapsed_dwell_fraction": float(collapsed),
            # mean |step| of a stationary offset, scaled to the sd of the steps (normal: sd = mean|x| * sqrt(pi/2))
            "arrival_jitter_ms": float(stat[-1]) * 1.2533,
        }
        if stat[7]:
            details["pointer_straightness"] = float(stat[8] / stat[7])
        sufficient = n_react >= MIN_REACTIONS or n_flights >= MIN_ARTEFACT_SAMPLES
        if not sufficient:
            return LazySignal(
                NAME,
                0.0,
                False,
                ev,
                lambda: f"{n_react} reactions and {n_flights} flights so far; needs {MIN_REACTIONS} reactions or "
                f"{MIN_ARTEFACT_SAMPLES} flights: insufficient",
                details,
            )
        added, lo, hi, p_relay = self.estimate()
        details["added_latency_ms"] = added
        details["added_latency_ci_low_ms"] = lo
        details["added_latency_ci_high_ms"] = hi
        details["relay_probability"] = p_relay
        artefact_score = level_to_score(float(stat[0]), ALARM_LEVEL)
        reaction_score = p_relay if n_react >= MIN_REACTIONS else 0.0
        details["component_reactions"] = reaction_score
        details["component_artefacts"] = artefact_score
        score = max(reaction_score, artefact_score)
        counts = stat[9 : 9 + F.N_REACT_TYPES].astype(int).tolist()
        level = float(stat[0])
        base = "/".join(sorted(set(self.baseline.source)))

        def explain() -> str:
            if n_react:
                kinds = ", ".join(f"{n} {name}" for n, name in zip(counts, TYPE_NAMES))
                lat = (
                    f"added loop latency {added:.0f} ms (95% interval {lo:.0f} to {hi:.0f}; P(>= {SCORE_DELTA_MS:.0f} ms) "
                    f"{p_relay:.2f}) from {kinds} reactions against the {base} baseline"
                )
            else:
                lat = "no reactions to displayed changes yet"
            verdict = "remote operator likely" if score >= 0.5 else "no relay evident"
            return (
                f"{verdict}: {lat}; coalesced inputs {100 * coalesced:.1f}% of {n_flights} flights, "
                f"collapsed dwells {100 * collapsed:.1f}% of {n_dwells}; evidence level {level:.1f} (alarm at {ALARM_LEVEL:.1f})"
            )

        return LazySignal(NAME, score, True, ev, explain, details)

    def state(self) -> dict[str, np.ndarray]:
        return {"relay.stat": self.stat, "relay.loglik": self.loglik}

    def load(self, state: dict[str, np.ndarray]) -> None:
        stat = state["relay.stat"].astype(np.float64)
        loglik = state["relay.loglik"].astype(np.float64)
        if stat.shape != self.stat.shape or loglik.shape != self.loglik.shape or not np.all(np.isfinite(loglik)):
            raise ValueError("relay: wrong shape or non-finite values in saved state")
        self.stat = stat.copy()
        self.loglik = loglik.copy()
        self._marg = np.stack([_marginal(self.loglik[t]) for t in range(F.N_REACT_TYPES)])
        self._estimate = None


def _binomial_pair(p0: float) -> tuple[float, float]:
    """(LLR of a hit, LLR of a miss) for an artefact with genuine rate p0 against a modest alternative 4 * p0:
    absence of artefacts must not outweigh slow reactions."""
    p0 = min(max(p0, 0.002), 0.2)
    p1 = 4.0 * p0
    return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
