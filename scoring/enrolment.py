"""Enrolment: a profile from a user's genuine input, extracted by the scorer's own pipeline (so that enrolment and
scoring can never measure a dwell or a flight differently)."""

from __future__ import annotations

import math

import numpy as np

from .cadence_model import default_prior, self_consistency, shipped_prior
from .events import MAX_BATCH, sanitize
from .population import shipped_population
from .profile import FEATURE_MEMORY, Profile, TimingStats
from .scorer import SessionScorer


def enrol(batches) -> Profile:
    """A profile from a user's genuine input: each batch is one continuous recording (timings are not joined across
    batches). Events that cannot be used (bad timestamps, unknown kinds) are skipped, never guessed."""

    class _Recording(SessionScorer):
        """Also keeps the key observations in typing order, for the self-consistency (enrolment only)."""

        def _stage_keys(self, ids: np.ndarray, values: np.ndarray) -> None:
            seen.append((ids.astype(np.int64), values.copy()))
            super()._stage_keys(ids, values)

    stats = TimingStats()
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    for batch in batches:
        clean, _ = sanitize(np.asarray(batch))
        scorer = _Recording(None)
        for start in range(0, len(clean), MAX_BATCH):
            scorer.update(clean[start : start + MAX_BATCH])
        stats.merge_from(scorer.session_stats())
    stats.cap(FEATURE_MEMORY)
    consistency = math.nan
    if seen:
        ids = np.concatenate([i for i, _ in seen])
        values = np.concatenate([v for _, v in seen])
        prior = shipped_prior() or default_prior(shipped_population())
        consistency = self_consistency(ids, values, prior, FEATURE_MEMORY)
    return Profile(stats=stats, sessions=len(batches), cadence_self=consistency)


def enrol_session(batches) -> Profile:
    """A profile from the batches one live session delivered, in order. They are pieces of one continuous recording
    (the browser sensor sends a message every 250 ms), so they are joined before enrolling: enrolled one by one,
    every dwell and flight that spans two messages would be lost, the longer ones the most often, and the profile
    would be biased fast (its user then looks slow to it)."""
    batches = [np.asarray(b) for b in batches if len(b)]
    return enrol([np.concatenate(batches)] if batches else [])
