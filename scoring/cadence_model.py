"""The cadence model: is a stretch of typing the claimed user's, or someone else's?

A hierarchical Gaussian model of log timings (dwell per key class, down-down and up-up flight per class pair), fitted from
the profile's per-feature statistics and a population prior built from training users only:

- A person's timings sit at the population mean plus a per-person offset shared by a whole group of features (a
  fast typist is fast on every letter-to-letter flight), plus a per-feature residual. Enrolment estimates the user's
  group offsets from everything typed in the group (precise even with few samples per feature) and each feature's
  residual shrunk towards zero by its count (Bayesian: the user mean is a mix of the user's sample and the prior).
- The alternative ("someone else") is the population: per observation the within-user spread plus the residual
  between-user spread, and, per group, an unknown offset with the population's between-user variance that is
  integrated out over the observations being judged. That integral is what makes consistent deviations (every
  flight 20% slower) count as evidence of another person while scattered noise does not.
- Residuals are clipped at CLIP_SD (a pause or a lost key-up cannot decide) and pauses over 1.5 s never enter
  (features.PAUSE_MS).

The evidence over a stretch of observations is the log-likelihood ratio: sum of per-observation log ratios minus,
per group, the impostor's offset term, a closed form in two running sums (S0 = sum 1/v, S1 = sum r/v). In a session
these sums decay exponentially (DECAY per observation), so the statistic always judges about the last
1/(1 - DECAY) observations: a change of person mid-session shows as soon as the new typing dominates, and state is
a fixed handful of numbers. Pure numpy, no I/O; the prior is fitted offline by `fit_prior` (scoring/eval/).

Per-user normalisation: how well a user's enrolment predicts itself (`self_consistency`, kept in the profile)
foretells how well their later genuine typing fits their model (correlation 0.83 on Aalto training users). Each
observation's log ratio moves by -self_weight * (consistency - the training users' mean), a constant folded into the
model's table: an erratic typist no longer raises most of the false alarms, and a very steady one is watched more
closely.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

import numpy as np

from . import features as F
from .keys import KeyClass
from .stats import accumulate, cap_counts, merge

PRIOR_VERSION = 3  # 2: the self-consistency normalisation (self_ref, self_weight); 3: up-up flights
CLIP_SD = 3.0
MIN_POPULATION_USERS = 20
# 8 stays: a larger VAR_SHRINK (100) lowered the verification EER at 50 keystrokes a little (training users 5.3% ->
# 5.1%, test users 5.13% -> 5.03%) but made continuous detection worse, and so did clipping below 3 sd
VAR_SHRINK = 8.0  # pseudo-observations of the (user-scaled) population spread in each user feature's variance
VAR_SCALE_PRIOR = 20.0  # pseudo-observations behind a user's group variance scale of 1
DEFAULT_DECAY = 0.98  # per observation: the session statistic remembers ~50 observations (~25 keystrokes)
DEFAULT_ALARM = 10.0
BETWEEN_VAR_FLOOR = 0.002
# self-consistency normalisation (see self_consistency): the enrolment is cut into SELF_CHUNKS contiguous parts; with
# fewer than SELF_MIN_OBSERVATIONS per part the estimate is too noisy and the user is not normalised
SELF_CHUNKS = 5
SELF_MIN_OBSERVATIONS = 30
SELF_SHIFT_MAX = 0.5  # per observation: a freak enrolment must not switch the detector off (or on) for a user

_LETTERS = (
    KeyClass.LEFT_TOP, KeyClass.LEFT_HOME, KeyClass.LEFT_BOTTOM, KeyClass.RIGHT_TOP, KeyClass.RIGHT_HOME, KeyClass.RIGHT_BOTTOM
)
_LEFT = (KeyClass.LEFT_TOP, KeyClass.LEFT_HOME, KeyClass.LEFT_BOTTOM)
GROUP_NAMES = (
    "letter dwell",
    "space dwell",
    "other dwell",
    "letter->letter flight, alternating hands",
    "letter->letter flight, same hand",
    "letter->space flight",
    "space->letter flight",
    "other flight",
    "letter->letter release, alternating hands",
    "letter->letter release, same hand",
    "letter->space release",
    "space->letter release",
    "other release",
)
N_GROUPS = len(GROUP_NAMES)


def _pair_group(p: int, c: int, first: int) -> int:
    """The group of a flight between classes p and c, counted from the block's first group."""
    if p in _LETTERS and c in _LETTERS:
        return first + (1 if (p in _LEFT) == (c in _LEFT) else 0)
    if p in _LETTERS and c == KeyClass.SPACE:
        return first + 2
    if p == KeyClass.SPACE and c in _LETTERS:
        return first + 3
    return first + 4


def _feature_groups() -> np.ndarray:
    g = np.zeros(F.N_KEY_FEATURES, dtype=np.int64)
    for c in range(F.N_DWELL):
        g[c] = 0 if c in _LETTERS else (1 if c == KeyClass.SPACE else 2)
    for p in range(F.N_KEY_CLASSES):
        for c in range(F.N_KEY_CLASSES):
            g[F.FLIGHT_BASE + p * F.N_KEY_CLASSES + c] = _pair_group(p, c, 3)
            g[F.RELEASE_BASE + p * F.N_KEY_CLASSES + c] = _pair_group(p, c, 8)
    return g


FEATURE_GROUP = _feature_groups()


@dataclass(frozen=True, slots=True)
class CadencePrior:
    """What typing looks like across people (training users only), and the session statistic's calibration."""

    mean: np.ndarray  # log ms per key feature, pooled over users
    within_var: np.ndarray  # mean within-user variance per feature
    between_var: np.ndarray  # between-user variance of feature means left after the group offsets
    offset_var: np.ndarray  # between-user variance of the group offsets (N_GROUPS)
    usable: np.ndarray  # bool: enough population users for the feature
    decay: float = DEFAULT_DECAY
    alarm: float = DEFAULT_ALARM  # impostor evidence at which the cadence score is 0.5
    # per-user normalisation: each observation's log ratio moves by -self_weight * (user's self-consistency -
    # self_ref), self_ref being the training users' mean; weight 0 turns it off
    self_ref: float = 0.0
    self_weight: float = 0.0
    source: str = "defaults"

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            version=np.array([PRIOR_VERSION]),
            mean=self.mean,
            within_var=self.within_var,
            between_var=self.between_var,
            offset_var=self.offset_var,
            usable=self.usable.astype(np.uint8),
            scalars=np.array([self.decay, self.alarm, self.self_ref, self.self_weight]),
        )
        return buf.getvalue()

    @classmethod
    def from_npz(cls, data: bytes, source: str) -> "CadencePrior":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            version = int(z["version"][0])
            if version != PRIOR_VERSION:
                # older priors have no up-up flights: their arrays do not fit the feature space any more
                raise ValueError(
                    f"cadence prior version {version} is not supported (expected {PRIOR_VERSION}): refit it with "
                    "`python -m scoring.eval.build_cadence_prior`"
                )
            s = z["scalars"]
            if len(s) != 4:
                raise ValueError(f"cadence prior version {version}: {len(s)} scalars")
            ref, weight = float(s[2]), float(s[3])
            prior = cls(
                mean=z["mean"].astype(np.float64),
                within_var=z["within_var"].astype(np.float64),
                between_var=z["between_var"].astype(np.float64),
                offset_var=z["offset_var"].astype(np.float64),
                usable=z["usable"].astype(bool),
                decay=float(s[0]),
                alarm=float(s[1]),
                self_ref=ref,
                self_weight=weight,
                source=source,
            )
        prior.validate()
        return prior

    def validate(self) -> None:
        for name in ("mean", "within_var", "between_var", "usable"):
            if getattr(self, name).shape != (F.N_KEY_FEATURES,):
                raise ValueError(f"cadence prior {name}: expected shape ({F.N_KEY_FEATURES},)")
        if self.offset_var.shape != (N_GROUPS,):
            raise ValueError(f"cadence prior offset_var: expected shape ({N_GROUPS},)")
        arrays = (self.mean, self.within_var, self.between_var, self.offset_var)
        if not all(np.all(np.isfinite(a)) for a in arrays) or np.any(self.within_var <= 0) or np.any(self.between_var <= 0):
            raise ValueError("cadence prior: non-finite or non-positive variances")
        if not (0.0 < self.decay < 1.0) or not self.alarm > 0:
            raise ValueError("cadence prior: decay must be in (0, 1) and alarm > 0")
        if not (math.isfinite(self.self_ref) and 0.0 <= self.self_weight <= 1.0):
            raise ValueError("cadence prior: self_ref must be finite and self_weight in [0, 1]")

    def with_calibration(self, decay: float, alarm: float) -> "CadencePrior":
        return replace(self, decay=float(decay), alarm=float(alarm))

    def with_self_norm(self, ref: float, weight: float) -> "CadencePrior":
        return replace(self, self_ref=float(ref), self_weight=float(weight))

    def self_shift(self, self_llr: float) -> float:
        """The per-observation log-ratio shift for a user whose enrolment scored `self_llr` (NaN: unknown, 0)."""
        if not (self.self_weight > 0 and math.isfinite(self_llr)):
            return 0.0
        return min(max(-self.self_weight * (self_llr - self.self_ref), -SELF_SHIFT_MAX), SELF_SHIFT_MAX)


def fit_prior(user_stats: list[tuple[np.ndarray, np.ndarray, np.ndarray]], source: str) -> CadencePrior:
    """The population prior from per-user (n, mean, M2) arrays over the key feature space (training users only)."""
    n = np.array([s[0] for s in user_stats], dtype=np.float64)
    m = np.array([s[1] for s in user_stats], dtype=np.float64)
    m2 = np.array([s[2] for s in user_stats], dtype=np.float64)
    has = n >= 3
    users = has.sum(axis=0)
    total_n = n.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled_mean = np.where(total_n > 0, (n * m).sum(axis=0) / np.maximum(total_n, 1), np.nan)
        dev = m - pooled_mean[None, :]
        pooled_var = ((m2 + n * dev * dev).sum(axis=0)) / np.maximum(total_n - 1, 1)
        v = np.where(has, m2 / np.maximum(n - 1, 1), np.nan)
        within = np.nansum(v, axis=0) / np.maximum(users, 1)
    usable = (users >= MIN_POPULATION_USERS) & np.isfinite(pooled_var) & (within > 0)
    within = np.where(usable, np.minimum(within, pooled_var), 1.0)
    mean = np.where(np.isfinite(pooled_mean), pooled_mean, 0.0)

    use = has & usable[None, :]
    resid = np.where(use, m - mean[None, :], 0.0)
    weight = np.where(use, n, 0.0)
    offsets = np.zeros((len(n), N_GROUPS))
    counts = np.zeros((len(n), N_GROUPS))
    for g in range(N_GROUPS):
        sel = FEATURE_GROUP == g
        counts[:, g] = weight[:, sel].sum(axis=1)
        offsets[:, g] = (weight[:, sel] * resid[:, sel]).sum(axis=1) / np.maximum(counts[:, g], 1.0)
    offset_var = np.array([offsets[counts[:, g] > 0, g].var() if np.any(counts[:, g] > 0) else 0.01 for g in range(N_GROUPS)])
    offset_var = np.maximum(offset_var, BETWEEN_VAR_FLOOR)
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.where(use, resid - offsets[:, FEATURE_GROUP], np.nan)
        k = np.maximum(np.count_nonzero(use, axis=0), 1)
        noise = np.nansum(np.where(use, v / np.maximum(n, 1), np.nan), axis=0) / k
        between = np.nansum(left * left, axis=0) / k - noise
    between = np.where(usable & np.isfinite(between), np.maximum(between, BETWEEN_VAR_FLOOR), 0.01)
    return CadencePrior(mean, within, between, offset_var, usable, source=source)


def default_prior(population) -> CadencePrior:
    """A prior from a `Population` alone (no fitted file): residual between-user spread taken as a third of the
    between-user variance, group offsets as the rest."""
    between = np.maximum(population.key_var - population.key_within_var, BETWEEN_VAR_FLOOR)
    offset_var = np.array([np.median(between[FEATURE_GROUP == g]) for g in range(N_GROUPS)]) * (2.0 / 3.0)
    usable = population.key_users >= MIN_POPULATION_USERS
    if not np.any(usable):
        usable = np.ones(F.N_KEY_FEATURES, dtype=bool)
    return CadencePrior(
        population.key_mean.astype(np.float64),
        np.maximum(population.key_within_var.astype(np.float64), 1e-4),
        np.maximum(between / 3.0, BETWEEN_VAR_FLOOR),
        np.maximum(offset_var, BETWEEN_VAR_FLOOR),
        usable,
        source="derived from the population",
    )


@cache
def shipped_prior() -> CadencePrior | None:
    """`scoring/data/cadence_prior.npz` (fitted on Aalto training users), or None when not shipped."""
    try:
        data = resources.files("scoring").joinpath("data/cadence_prior.npz").read_bytes()
    except (FileNotFoundError, OSError):
        return None
    return CadencePrior.from_npz(data, source="scoring/data/cadence_prior.npz")


@dataclass(frozen=True, slots=True)
class Observations:
    """Per-observation terms of one stretch of typing against one user model."""

    ok: np.ndarray  # mask over the input observations that the model can judge
    llr: np.ndarray  # log N(x; user) - log N(x; population residual), clipped residuals
    group: np.ndarray
    inv_var: np.ndarray  # 1 / v under the "someone else" hypothesis
    res_over_var: np.ndarray  # r / v under the "someone else" hypothesis
    z: np.ndarray  # deviation from the user's mean in the user's sd (for explanations)


class UserCadenceModel:
    """The claimed user's per-feature model (log ms), derived from profile statistics and the prior."""

    __slots__ = ("prior", "mu", "var", "alt_var", "usable", "offsets", "all_usable", "shift", "_table")

    def __init__(self, n: np.ndarray, mean: np.ndarray, m2: np.ndarray, prior: CadencePrior, self_llr: float = math.nan):
        self.prior = prior
        pm, w, bp = prior.mean, prior.within_var, prior.between_var
        n = np.asarray(n, dtype=np.float64)
        r = np.where(n > 0, np.asarray(mean, dtype=np.float64) - pm, 0.0)
        alt_var = w + bp
        offsets = np.zeros(N_GROUPS)
        scale = np.ones(N_GROUPS)
        dof = np.maximum(n - 1.0, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            user_var = np.where(dof > 0, np.asarray(m2, dtype=np.float64) / np.maximum(dof, 1.0), 0.0)
        for g in range(N_GROUPS):
            sel = (FEATURE_GROUP == g) & prior.usable
            precision = (n[sel] / alt_var[sel]).sum()
            offsets[g] = (n[sel] * r[sel] / alt_var[sel]).sum() / (precision + 1.0 / prior.offset_var[g])
            d = sel & (dof > 0)
            scale[g] = ((dof[d] * user_var[d] / w[d]).sum() + VAR_SCALE_PRIOR) / (dof[d].sum() + VAR_SCALE_PRIOR)
        off = offsets[FEATURE_GROUP]
        keep = n / (n + w / bp)  # how much of the feature's own residual the user's sample earns
        self.offsets = offsets
        self.mu = pm + off + keep * (r - off)
        self.var = (dof * user_var + VAR_SHRINK * w * scale[FEATURE_GROUP]) / (dof + VAR_SHRINK) + w / (n + w / bp)
        self.alt_var = alt_var
        self.usable = prior.usable & (self.var > 0)
        self.all_usable = bool(self.usable.all())
        # everything observe() needs per feature in one row: an online batch of ~50 observations costs a handful of
        # numpy calls instead of one per derived array (the per-call overhead dominates at that size)
        var_u = np.where(self.var > 0, self.var, 1.0)
        t = np.empty((F.N_KEY_FEATURES, _T_COLS))
        t[:, _T_MU] = self.mu
        t[:, _T_PM] = pm
        t[:, _T_INV_SD_U] = 1.0 / np.sqrt(var_u)
        t[:, _T_INV_SD_A] = 1.0 / np.sqrt(alt_var)
        # the user's normalisation is a constant per observation: folded in here, it costs nothing online
        self.shift = prior.self_shift(self_llr)
        t[:, _T_CONST] = 0.5 * (np.log(alt_var) - np.log(var_u)) + self.shift
        t[:, _T_INV_VAR_A] = 1.0 / alt_var
        t[:, _T_GROUP] = FEATURE_GROUP
        self._table = t

    @classmethod
    def from_stats(cls, stats, prior: CadencePrior, self_llr: float = math.nan) -> "UserCadenceModel":
        return cls(stats.key_n, stats.key_mean, stats.key_m2, prior, self_llr)

    def observe(self, ids: np.ndarray, values: np.ndarray) -> Observations:
        ids = np.asarray(ids, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if self.all_usable:
            ok = np.ones(len(ids), dtype=bool)
        else:
            ok = self.usable[ids]
            ids, values = ids[ok], values[ok]
        rows = self._table[ids]
        # deviations in sd units under the user (column 0) and under "someone else" (column 1); clipping them at
        # CLIP_SD is clipping the residuals at CLIP_SD standard deviations
        zz = (values[:, None] - rows[:, _T_MU : _T_PM + 1]) * rows[:, _T_INV_SD_U : _T_INV_SD_A + 1]
        z = zz[:, 0].copy()
        np.clip(zz, -CLIP_SD, CLIP_SD, out=zz)
        sq = zz * zz
        llr = rows[:, _T_CONST] - 0.5 * (sq[:, 0] - sq[:, 1])
        return Observations(ok, llr, rows[:, _T_GROUP].astype(np.int64), rows[:, _T_INV_VAR_A], zz[:, 1] * rows[:, _T_INV_SD_A], z)


def self_consistency(ids: np.ndarray, values: np.ndarray, prior: CadencePrior, memory: float, chunks: int = SELF_CHUNKS) -> float:
    """How well a user's enrolment predicts itself: the enrolment's key observations (in typing order) are cut into
    `chunks` contiguous parts, and each part is judged by the model fitted on the others (without any
    normalisation); the result is the mean log ratio per observation, offset terms included. A consistent typist
    who is far from the population scores high, someone whose rhythm wanders scores low: the same spread shows in
    their later genuine sessions, and a common alarm level would otherwise alarm on the second far more often.
    NaN when the enrolment is too short to tell."""
    ids = np.asarray(ids, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if len(ids) < chunks * SELF_MIN_OBSERVATIONS or chunks < 2:
        return math.nan
    plain = replace(prior, self_weight=0.0)
    bounds = np.linspace(0, len(ids), chunks + 1).round().astype(np.int64)
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        st = (np.zeros(F.N_KEY_FEATURES), np.zeros(F.N_KEY_FEATURES), np.zeros(F.N_KEY_FEATURES))
        accumulate(*st, ids[a:b], values[a:b])
        parts.append(st)
    total, count = 0.0, 0
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        n, mean, m2 = np.zeros(F.N_KEY_FEATURES), np.zeros(F.N_KEY_FEATURES), np.zeros(F.N_KEY_FEATURES)
        for j, part in enumerate(parts):
            if j != i:
                merge(n, mean, m2, *part)
        cap_counts(n, m2, memory)
        obs = UserCadenceModel(n, mean, m2, plain).observe(ids[a:b], values[a:b])
        k = len(obs.llr)
        if k:
            total += float(window_llr(obs, np.zeros(k, dtype=np.int64), 1, prior.offset_var)[0])
            count += k
    return total / count if count >= chunks * SELF_MIN_OBSERVATIONS else math.nan


_T_MU, _T_PM, _T_INV_SD_U, _T_INV_SD_A, _T_CONST, _T_INV_VAR_A, _T_GROUP = range(7)
_T_COLS = 7


def offset_term(s0: np.ndarray, s1: np.ndarray, offset_var: np.ndarray) -> np.ndarray:
    """log of the "someone else" likelihood gained by integrating out a group offset a ~ N(0, A), given
    S0 = sum 1/v and S1 = sum r/v over the observations: S1^2 / (2 (S0 + 1/A)) - log(1 + A S0) / 2, summed over
    groups (last axis)."""
    return (0.5 * s1 * s1 / (s0 + 1.0 / offset_var) - 0.5 * np.log1p(offset_var * s0)).sum(axis=-1)


def window_llr(obs: Observations, window: np.ndarray, n_windows: int, offset_var: np.ndarray) -> np.ndarray:
    """Log-likelihood ratio (user vs someone else) per window; `window` gives each judged observation's window."""
    idx = window * N_GROUPS + obs.group
    s0 = np.bincount(idx, weights=obs.inv_var, minlength=n_windows * N_GROUPS).reshape(n_windows, N_GROUPS)
    s1 = np.bincount(idx, weights=obs.res_over_var, minlength=n_windows * N_GROUPS).reshape(n_windows, N_GROUPS)
    return np.bincount(window, weights=obs.llr, minlength=n_windows) - offset_term(s0, s1, offset_var)


# session state: decayed sum of llr, then S0 and S1 per group
STATE_SIZE = 1 + 2 * N_GROUPS
_CHUNK = 256  # decay^-CHUNK stays far from overflow for any sane decay


@cache
def _powers(decay: float) -> tuple[np.ndarray, np.ndarray]:
    """(decay^-j, decay^j) for j < _CHUNK, read-only: every batch of a session reuses them."""
    j = np.arange(_CHUNK, dtype=np.float64)
    up, down = decay ** (-j), decay**j
    up.flags.writeable = False
    down.flags.writeable = False
    return up, down


def decayed_paths(obs: Observations, state: np.ndarray, decay: float) -> np.ndarray:
    """The decayed sums after each observation: rows are observations, columns the STATE_SIZE sums."""
    k = len(obs.llr)
    up, down = _powers(float(decay))
    x = np.zeros((k, STATE_SIZE))
    x[:, 0] = obs.llr
    rows = np.arange(k)
    x[rows, 1 + obs.group] = obs.inv_var
    x[rows, 1 + N_GROUPS + obs.group] = obs.res_over_var
    carry = np.asarray(state, dtype=np.float64)
    if k <= _CHUNK:  # an online batch: one chunk
        # s_j = decay^(j+1) * carry + sum_{i<=j} decay^(j-i) x_i
        x *= up[:k, None]
        np.cumsum(x, axis=0, out=x)
        x += decay * carry
        x *= down[:k, None]
        return x
    out = np.empty_like(x)
    for start in range(0, k, _CHUNK):
        part = x[start : start + _CHUNK]
        n = len(part)
        acc = np.cumsum(part * up[:n, None], axis=0)
        path = down[:n, None] * (decay * carry[None, :] + acc)
        out[start : start + n] = path
        carry = path[-1]
    return out


def decayed_sums(obs: Observations, state: np.ndarray, decay: float) -> np.ndarray:
    """The decayed sums after the last observation only (decayed_paths(...)[-1] without the path): what an online
    batch needs, in a handful of small numpy calls."""
    k = len(obs.llr)
    if k > _CHUNK:
        return decayed_paths(obs, state, decay)[-1]
    _, down = _powers(float(decay))
    w = down[k - 1 :: -1] if k else down[:0]  # decay^(k-1-i): the last observation weighs 1
    out = np.empty(STATE_SIZE)
    out[0] = np.dot(w, obs.llr)
    out[1 : 1 + N_GROUPS] = np.bincount(obs.group, weights=w * obs.inv_var, minlength=N_GROUPS)
    out[1 + N_GROUPS :] = np.bincount(obs.group, weights=w * obs.res_over_var, minlength=N_GROUPS)
    out += (decay * down[k - 1] if k else 1.0) * np.asarray(state, dtype=np.float64)
    return out


def impostor_evidence(paths: np.ndarray, offset_var: np.ndarray) -> np.ndarray:
    """Evidence that someone else is typing (the negated log-likelihood ratio) from decayed sums."""
    paths = np.atleast_2d(paths)
    return -(paths[:, 0] - offset_term(paths[:, 1 : 1 + N_GROUPS], paths[:, 1 + N_GROUPS :], offset_var))
