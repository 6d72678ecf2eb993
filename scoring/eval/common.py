"""Shared pieces of the offline evaluations: EER, progress, the population built from training users."""

from __future__ import annotations

import sys
import time

import numpy as np

from .. import features as F
from ..detectors.automation import CV_WINDOW, flight_cv
from ..population import Population, default_population
from ..profile import TimingStats
from ..stats import variance
from .aalto import Sentence, User

SPLIT_SEED = 20240917


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate; higher scores mean "more genuine". Linear interpolation on the ROC where the miss rate
    equals the false-alarm rate (as in Killourhy & Maxion's evaluation script)."""
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    thresholds = np.unique(np.concatenate((genuine, impostor, [-np.inf, np.inf])))
    g = np.sort(genuine)
    i = np.sort(impostor)
    # accept when score >= threshold
    miss = np.searchsorted(g, thresholds, side="left") / len(g)
    fa = 1.0 - np.searchsorted(i, thresholds, side="left") / len(i)
    d = miss - fa  # rises from -1 to +1
    k = int(np.argmax(d >= 0))
    if k == 0:
        return float(miss[0])
    d0, d1 = d[k - 1], d[k]
    w = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    return float((1 - w) * miss[k - 1] + w * miss[k] + (1 - w) * fa[k - 1] + w * fa[k]) / 2.0


class Progress:
    """A one-line progress bar on stderr (silent when stderr is not a terminal or when disabled)."""

    def __init__(self, label: str, enabled: bool = True):
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or (done % max(total // 50, 1) and done != total):
            return
        width = 30
        fill = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} {time.monotonic() - self.start:.0f}s")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def sentence_keystrokes(s: Sentence) -> F.Keystrokes:
    t = np.concatenate((s.press, s.release))
    kind = np.concatenate((np.full(len(s.press), 1, np.uint8), np.full(len(s.release), 2, np.uint8)))
    cls = np.concatenate((s.cls, s.cls))
    order = np.lexsort((kind, t))
    ks, _ = F.extract_keystrokes(t[order], kind[order], cls[order], F.new_key_carry())
    return ks


def stats_from_sentences(sentences: list[Sentence]) -> TimingStats:
    st = TimingStats()
    for s in sentences:
        st.add_keystrokes(sentence_keystrokes(s))
    return st


def correction_latencies(s: Sentence) -> np.ndarray:
    """Key -> BackSpace press intervals (a BackSpace not inside a run of them): the typo-correction reaction."""
    from ..keys import KeyClass

    bs = s.cls == KeyClass.BACKSPACE
    first = bs[1:] & ~bs[:-1]
    lat = (s.press[1:] - s.press[:-1])[first]
    return lat[(lat >= F.CORRECTION_RANGE_MS[0]) & (lat <= F.CORRECTION_RANGE_MS[1])]


# The automation detector keeps the lowest flight CV of a session, so its floor is a quantile over users of the lowest
# window CV each reaches in their typing (about 400 windows of 15 sentences), not a quantile over windows: the 0.1%
# quantile over windows (0.25) was below the lowest window of 9% of training users, and 2.5% of them (CV < 0.22)
# reached the step-up level in 15 sentences.
REGULAR_FLOOR_QUANTILE = 0.001


def lowest_window_cv(flights: np.ndarray) -> float:
    """The lowest flight CV of any CV_WINDOW consecutive flights: what the automation detector's `regular` component
    keeps over a session when its batches are small enough to see every window (the gateway's sensor batches)."""
    return min(flight_cv(flights[i : i + CV_WINDOW]) for i in range(len(flights) - CV_WINDOW + 1))


def build_population(
    train: list[User],
    prompt_median_ms: float = 450.0,
    prompt_sd_log: float = 0.35,
    pointer: tuple[float, float, float] | None = None,
) -> Population:
    """Population statistics from training users only. Prompt reactions are not in Aalto: their baseline comes from
    the reaction model stated in docs/results.md; correction latencies are measured; `pointer` is the arrival ->
    click baseline (median ms, within sd, between sd of the log) measured on pointer training users, if any."""
    n_f = F.N_KEY_FEATURES
    pooled = TimingStats()
    within_sum = np.zeros(n_f)
    users = np.zeros(n_f)
    coalesced = flights = collapsed = dwells = 0
    lowest_cvs = []  # per user: the lowest CV of any 32-flight window of their typing
    corr_medians, corr_within = [], []
    for u in train:
        st = stats_from_sentences(u.sentences)
        pooled.merge_from(st)
        v = variance(st.key_n, st.key_m2)
        has = st.key_n >= 3
        within_sum[has] += v[has]
        users[has] += 1
        for s in u.sentences:
            ks = sentence_keystrokes(s)
            flights += len(ks.flight_ms)
            coalesced += int(np.count_nonzero(ks.flight_ms < 4.0))
            dwells += len(ks.dwell_ms)
            collapsed += int(np.count_nonzero(ks.dwell_ms < 8.0))
        all_flights = np.concatenate([sentence_keystrokes(s).flight_ms for s in u.sentences])
        if len(all_flights) >= 2 * CV_WINDOW:
            lowest_cvs.append(lowest_window_cv(all_flights))
        corr = np.concatenate([correction_latencies(s) for s in u.sentences])
        if len(corr) >= 3:
            lc = np.log(corr)
            corr_medians.append(np.median(lc))
            corr_within.append(lc.std(ddof=1))
    d = default_population()
    total_var = variance(pooled.key_n, pooled.key_m2)
    with np.errstate(invalid="ignore", divide="ignore"):
        within = np.where(users > 0, within_sum / np.maximum(users, 1), np.nan)
    ok = np.isfinite(total_var) & np.isfinite(within) & (within > 0)
    key_mean = np.where(pooled.key_n > 0, pooled.key_mean, d.key_mean)
    key_var = np.where(ok, total_var, d.key_var)
    key_within = np.where(ok, np.minimum(within, key_var), d.key_within_var)
    corr_med = float(np.exp(np.median(corr_medians))) if corr_medians else d.react_median_ms[1]
    corr_sd = float(np.median(corr_within)) if corr_within else d.react_sd_log[1]
    corr_between = float(np.std(corr_medians)) if corr_medians else d.react_between_sd_log[1]
    pointer_part = tuple(pointer) if pointer is not None else ()
    return Population(
        key_mean=key_mean,
        key_var=key_var,
        key_within_var=key_within,
        key_users=np.where(ok, users, 0.0),
        react_median_ms=np.array([prompt_median_ms, corr_med, *pointer_part[:1]]),
        react_sd_log=np.array([prompt_sd_log, corr_sd, *pointer_part[1:2]]),
        react_between_sd_log=np.array([0.2, corr_between, *pointer_part[2:]]),
        coalesced_rate=coalesced / max(flights, 1),
        collapsed_dwell_rate=collapsed / max(dwells, 1),
        flight_cv_floor=float(np.quantile(lowest_cvs, REGULAR_FLOOR_QUANTILE)) if lowest_cvs else d.flight_cv_floor,
        cadence_alarm=d.cadence_alarm,
        cadence_gain=1.0,
        source="aalto training users",
    )
