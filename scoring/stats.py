"""Small numerical helpers shared by profiles and detectors (pure numpy)."""

from __future__ import annotations

import math

import numpy as np


def accumulate(n: np.ndarray, mean: np.ndarray, m2: np.ndarray, ids: np.ndarray, values: np.ndarray) -> None:
    """Adds observations `values` of features `ids` to running (n, mean, M2) arrays in place.

    Batched Chan et al. merge: per feature, the batch's own count/mean/M2 are merged with the running ones, so the
    result equals a one-pass Welford update without a Python loop per observation.
    """
    if len(ids) == 0:
        return
    size = len(n)
    bn = np.bincount(ids, minlength=size).astype(np.float64)
    bmean = np.bincount(ids, weights=values, minlength=size)
    bmean /= np.maximum(bn, 1.0)  # 0 where the batch has no observation of a feature
    dev = values - bmean[ids]
    bm2 = np.bincount(ids, weights=dev * dev, minlength=size)
    merge(n, mean, m2, bn, bmean, bm2)


def merge(n, mean, m2, bn, bmean, bm2) -> None:
    """Merges (bn, bmean, bm2) into (n, mean, m2) in place."""
    total = n + bn
    frac = bn / np.maximum(total, 1e-300)  # 0 where neither side has observations (and never 0/0)
    delta = bmean - mean
    mean += delta * frac
    delta *= delta
    delta *= n
    delta *= frac
    m2 += bm2
    m2 += delta
    n[...] = total


def cap_counts(n: np.ndarray, m2: np.ndarray, cap: float) -> None:
    """Exponential forgetting: features with more than `cap` observations keep their mean and variance but weigh
    as `cap` observations, so a profile follows slow drift instead of freezing."""
    over = n > cap
    if np.any(over):
        scale = cap / n[over]
        m2[over] *= scale
        n[over] = cap


def variance(n: np.ndarray, m2: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 1, m2 / np.maximum(n - 1, 1), np.nan)


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def median_ci(values: np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """Median with a distribution-free confidence interval from order statistics (binomial normal approximation)."""
    v = np.sort(values)
    n = len(v)
    med = float(np.median(v))
    half = z * math.sqrt(n) / 2.0
    lo = max(int(math.floor(n / 2.0 - half)), 0)
    hi = min(int(math.ceil(n / 2.0 + half)), n - 1)
    return med, float(v[lo]), float(v[hi])
