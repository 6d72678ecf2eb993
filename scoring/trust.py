"""Combining detector signals into one session risk.

Each detector already accumulates its own evidence sequentially (a CUSUM of log-likelihood ratios, so its score
rises as soon as the evidence suffices and falls back while genuine input keeps coming). The session risk is their
noisy-OR: the belief that at least one of the independent ways of not being the claimed local worker holds. Each
signal's contribution is its share of the combined log-odds of trust, so the contributions add up to the risk.
"""

from __future__ import annotations

import math

from .signals import Signal

ALARM_SCORE = 0.5  # every detector's score is 0.5 exactly at its alarm level


def combine(signals: dict[str, Signal]) -> tuple[float, dict[str, float], bool]:
    """(risk in [0, 1], contribution per signal, whether any signal had sufficient evidence)."""
    used = {name: s for name, s in signals.items() if s.sufficient}
    if not used:
        return 0.0, {name: 0.0 for name in signals}, False
    weights = {name: -math.log1p(-min(max(s.score, 0.0), 1.0 - 1e-12)) for name, s in used.items()}
    total = sum(weights.values())
    risk = 1.0 - math.exp(-total)
    contributions = {name: (risk * weights[name] / total if total > 0 else 0.0) if name in used else 0.0 for name in signals}
    return risk, contributions, True


def over_alarm(signals: dict[str, Signal]) -> list[str]:
    return [name for name, s in signals.items() if s.sufficient and s.score >= ALARM_SCORE]
