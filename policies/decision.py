"""What a policy set decides about a session or a request."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Action


@dataclass(frozen=True, slots=True)
class NearMiss:
    """A rule more severe than the decision whose numeric comparisons all held or nearly held."""

    policy_id: str
    rule_id: str
    action: Action
    comparisons: tuple[tuple[str, float, bool], ...]  # (comparison text, value read, held)

    def to_dict(self) -> dict:
        return {
            "policy_id": self.policy_id,
            "rule_id": self.rule_id,
            "action": self.action.label,
            "comparisons": [{"comparison": text, "value": value, "held": held}
                            for text, value, held in self.comparisons],
        }


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action = Action.ALLOW
    params: dict = field(default_factory=dict)
    policy_file: str = ""
    policy_id: str = ""
    rule_id: str = ""
    reason: str = "no rule fired"
    shadow: bool = False
    signals: dict[str, float] = field(default_factory=dict)  # signals the firing condition read -> score
    shadow_decisions: tuple["Decision", ...] = ()
    near_misses: tuple[NearMiss, ...] = ()
    errors: tuple[str, ...] = ()
    policy_digest: str = ""

    @classmethod
    def allow(cls, reason: str = "no rule fired", **extra) -> "Decision":
        return cls(Action.ALLOW, {}, reason=reason, **extra)

    @property
    def enforced(self) -> bool:
        return not self.shadow and self.action is not Action.ALLOW

    def to_dict(self) -> dict:
        return {
            "action": self.action.label,
            "params": self.params,
            "policy_file": self.policy_file,
            "policy_id": self.policy_id,
            "rule_id": self.rule_id,
            "reason": self.reason,
            "shadow": self.shadow,
            "signals": {k: round(v, 4) for k, v in self.signals.items()},
            "shadow_decisions": [d.to_dict() for d in self.shadow_decisions],
            "near_misses": [n.to_dict() for n in self.near_misses],
            "errors": list(self.errors),
            "policy_digest": self.policy_digest,
        }


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the matching policies claim about the session: the scorer and the network checks use these."""

    site: str = ""
    rtt_budget_ms: float | None = None
    hours: object | None = None  # model.Hours of the first matching policy that sets them
    policies: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        hours = None
        if self.hours is not None:
            h = self.hours
            hours = {"days": list(h.days), "start_minute": h.start_minute, "end_minute": h.end_minute,
                     "timezone": h.timezone}
        return {"site": self.site, "rtt_budget_ms": self.rtt_budget_ms, "hours": hours, "policies": list(self.policies)}
