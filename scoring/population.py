"""Population baselines: what typing and reacting look like across many people.

The cadence detector compares a session with the claimed user's profile *and* with the population (a likelihood
ratio, as in speaker verification with a universal background model); the relay detector falls back to the
population's reaction times when the user has no profile. The shipped `data/population.npz` is built from the
training half of the Aalto users only (`ztgate eval freetext --data PATH --write-population
scoring/data/population.npz`), so no evaluation test user is ever seen by it. Without that file, conservative built-in defaults apply.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from . import features as F

POPULATION_VERSION = 2  # 2: up-up flights in the key feature space


@dataclass(frozen=True, slots=True)
class Population:
    key_mean: np.ndarray  # log ms per key feature, pooled over users
    key_var: np.ndarray  # total variance (between + within users)
    key_within_var: np.ndarray  # mean within-user variance: the spread a profile is shrunk towards
    key_users: np.ndarray  # users contributing to each feature (features seen by few users are not used)
    react_median_ms: np.ndarray  # per reaction type
    react_sd_log: np.ndarray  # within-user sd of log reaction time
    react_between_sd_log: np.ndarray  # sd of users' median log reaction time
    coalesced_rate: float  # fraction of flights below COALESCED_MS in genuine typing
    collapsed_dwell_rate: float  # fraction of dwells below COLLAPSED_DWELL_MS
    flight_cv_floor: float  # a low quantile over genuine users of the lowest CV of their 32-flight windows
    cadence_alarm: float  # CUSUM level at which the cadence score reaches 0.5 (calibrated on training users)
    cadence_gain: float  # scale on per-observation log-likelihood ratios (naive-Bayes overcount correction)
    source: str = "defaults"

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            version=np.array([POPULATION_VERSION]),
            key_mean=self.key_mean,
            key_var=self.key_var,
            key_within_var=self.key_within_var,
            key_users=self.key_users,
            react_median_ms=self.react_median_ms,
            react_sd_log=self.react_sd_log,
            react_between_sd_log=self.react_between_sd_log,
            scalars=np.array(
                [self.coalesced_rate, self.collapsed_dwell_rate, self.flight_cv_floor, self.cadence_alarm, self.cadence_gain]
            ),
        )
        return buf.getvalue()

    @classmethod
    def from_npz(cls, data: bytes, source: str) -> "Population":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            version = int(z["version"][0])
            if version != POPULATION_VERSION:
                raise ValueError(
                    f"population file version {version} is not supported (expected {POPULATION_VERSION}): rebuild it "
                    "with `ztgate eval freetext --write-population`"
                )
            for name in ("key_mean", "key_var", "key_within_var", "key_users"):
                if z[name].shape != (F.N_KEY_FEATURES,):
                    raise ValueError(f"population file {name}: expected shape ({F.N_KEY_FEATURES},)")
            s = z["scalars"]
            return cls(
                key_mean=z["key_mean"],
                key_var=z["key_var"],
                key_within_var=z["key_within_var"],
                key_users=z["key_users"],
                react_median_ms=z["react_median_ms"],
                react_sd_log=z["react_sd_log"],
                react_between_sd_log=z["react_between_sd_log"],
                coalesced_rate=float(s[0]),
                collapsed_dwell_rate=float(s[1]),
                flight_cv_floor=float(s[2]),
                cadence_alarm=float(s[3]),
                cadence_gain=float(s[4]),
                source=source,
            )

    def with_calibration(self, cadence_alarm: float, cadence_gain: float) -> "Population":
        from dataclasses import replace

        return replace(self, cadence_alarm=float(cadence_alarm), cadence_gain=float(cadence_gain))


def default_population() -> Population:
    """Rough literature values (dwell ~100 ms, flight ~170 ms, reactions of a few hundred ms)."""
    key_mean = np.full(F.N_KEY_FEATURES, np.log(170.0))
    key_mean[: F.N_DWELL] = np.log(100.0)
    key_var = np.full(F.N_KEY_FEATURES, 0.5**2)
    key_var[: F.N_DWELL] = 0.35**2
    return Population(
        key_mean=key_mean,
        key_var=key_var,
        key_within_var=key_var * 0.5,
        key_users=np.zeros(F.N_KEY_FEATURES),  # unknown: cadence relies on the profile alone
        react_median_ms=np.array([450.0, 300.0]),
        react_sd_log=np.array([0.35, 0.4]),
        react_between_sd_log=np.array([0.2, 0.25]),
        coalesced_rate=0.005,
        collapsed_dwell_rate=0.005,
        flight_cv_floor=0.2,
        cadence_alarm=10.0,
        cadence_gain=0.5,
    )


@cache
def shipped_population() -> Population:
    """The population shipped with the package (read once; immutable)."""
    try:
        data = resources.files("scoring").joinpath("data/population.npz").read_bytes()
    except (FileNotFoundError, OSError):
        return default_population()
    return Population.from_npz(data, source="scoring/data/population.npz")
