"""Why a policy set decided what it did: the firing rule, the values it read, and what nearly fired."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .decision import Decision, NearMiss
from .policyset import PolicySet, RuleOutcome, comparison_readings, near_miss, reference_value


@dataclass(frozen=True, slots=True)
class RuleExplanation:
    policy_id: str
    policy_file: str
    rule_id: str
    action: str
    shadow: bool
    status: str  # fired | not fired | error | skipped (no request) | policy did not match
    when: str
    values: dict[str, Any]  # every name the condition read -> its value in this context
    comparisons: tuple[tuple[str, float, bool], ...]  # (comparison, value, held)
    error: str = ""

    def to_dict(self) -> dict:
        return {
            "policy_id": self.policy_id, "policy_file": self.policy_file, "rule_id": self.rule_id,
            "action": self.action, "shadow": self.shadow, "status": self.status, "when": self.when,
            "values": self.values,
            "comparisons": [{"comparison": c, "value": v, "held": h} for c, v, h in self.comparisons],
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    fired: RuleExplanation | None
    rules: tuple[RuleExplanation, ...]
    almost: tuple[NearMiss, ...]  # rules (any action) that did not fire but whose thresholds were within 20%

    def to_dict(self) -> dict:
        return {
            "decision": self.decision.to_dict(),
            "fired": self.fired.to_dict() if self.fired else None,
            "rules": [r.to_dict() for r in self.rules],
            "almost": [n.to_dict() for n in self.almost],
        }

    def to_text(self) -> str:
        d = self.decision
        lines = [f"decision: {d.action.label}" + (f" {d.params}" if d.params else "")]
        lines.append(f"  because: {d.reason}")
        if self.fired is not None:
            lines.append(f"  file: {self.fired.policy_file}")
            for name, value in self.fired.values.items():
                lines.append(f"  read {name} = {_show(value)}")
        for shadow in d.shadow_decisions:
            lines.append(f"shadow (not enforced): {shadow.action.label} by {shadow.policy_id}/{shadow.rule_id}")
        if self.almost:
            lines.append("almost fired:")
            for near in self.almost:
                parts = ", ".join(f"{c} (read {_show(v)}{'' if held else ', missed'})" for c, v, held in near.comparisons)
                lines.append(f"  {near.policy_id}/{near.rule_id} -> {near.action.label}: {parts}")
        for error in d.errors:
            lines.append(f"error: {error}")
        lines.append("rules:")
        for rule in self.rules:
            tag = " [shadow]" if rule.shadow else ""
            lines.append(f"  {rule.policy_id}/{rule.rule_id} ({rule.action}){tag}: {rule.status}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


def explain(policy_set: PolicySet, context: Mapping[str, Any], *, now: float | None = None) -> Explanation:
    decision, flat, trace = policy_set.trace(context, now)
    rules = tuple(_explain_rule(outcome, flat) for outcome in trace)
    fired = None
    if decision.rule_id:
        fired = next((r for r in rules if r.policy_id == decision.policy_id and r.rule_id == decision.rule_id), None)
    almost = tuple(n for o in trace if o.status == "not fired" and not o.compiled.rule.shadow
                   for n in [near_miss(o.compiled, flat)] if n is not None)
    return Explanation(decision, fired, rules, almost)


def _explain_rule(outcome: RuleOutcome, flat) -> RuleExplanation:
    compiled = outcome.compiled
    values = {ref.text: reference_value(flat, ref) for ref in compiled.condition.references
              if not ref.leaf.startswith("expect.")}
    readings = tuple((c.text, v, c.holds(v)) for c, v in comparison_readings(compiled.condition.comparisons, flat))
    return RuleExplanation(compiled.policy.id, compiled.policy.file, compiled.rule.id, compiled.rule.action.label,
                           compiled.rule.shadow, outcome.status, compiled.rule.when, values, readings, outcome.error)
