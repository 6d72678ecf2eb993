"""What the scoring engine says about a session: named signals and the combined assessment."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Evidence:
    keystrokes: int = 0
    seconds: float = 0.0
    samples: int = 0  # detector-specific units: reactions, probes, pointer strokes...


@dataclass(frozen=True, slots=True)
class Signal:
    """One detector's verdict.

    `score` is calibrated: the probability-like belief in [0, 1] that the session is NOT the claimed local
    worker, according to this detector alone. `sufficient` is False while the evidence is too thin to say
    anything; the score is then 0 and `explanation` says what is missing. `details` holds numbers an analyst or
    a policy may use (for `relay`: added_latency_ms, added_latency_ci_low_ms, added_latency_ci_high_ms).
    """

    name: str
    score: float
    sufficient: bool
    evidence: Evidence
    explanation: str
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "score": round(float(self.score), 4),
            "sufficient": self.sufficient,
            "evidence": {
                "keystrokes": self.evidence.keystrokes,
                "seconds": round(self.evidence.seconds, 3),
                "samples": self.evidence.samples,
            },
            "explanation": self.explanation,
            "details": {k: round(float(v), 4) for k, v in self.details.items()},
        }


@dataclass(frozen=True, slots=True)
class Assessment:
    """The session's current trust, after the latest batch."""

    risk: float  # in [0, 1]
    signals: dict[str, Signal]
    contributions: dict[str, float]  # each signal's share of `risk`
    evidence: Evidence
    sufficient: bool  # False: too little evidence to judge; `risk` is then the prior

    def to_dict(self) -> dict:
        return {
            "risk": round(float(self.risk), 4),
            "sufficient": self.sufficient,
            "evidence": {
                "keystrokes": self.evidence.keystrokes,
                "seconds": round(self.evidence.seconds, 3),
                "samples": self.evidence.samples,
            },
            "contributions": {k: round(float(v), 4) for k, v in self.contributions.items()},
            "signals": {k: s.to_dict() for k, s in self.signals.items()},
        }
