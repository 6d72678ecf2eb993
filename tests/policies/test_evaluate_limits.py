"""Limits at the edges of evaluation: policies too big to combine into one CEL program, and context numbers that
CEL cannot represent. Loading and evaluating still never raise."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

import policies
from policies import Action


def load(tmp_path: Path, text: str) -> policies.PolicySet:
    (tmp_path / "a.yaml").write_text(textwrap.dedent(text))
    return policies.load_directory(tmp_path)


def nested(depth: int) -> str:
    return "(" * depth + "risk >= 0.5" + ")" * depth


def test_rules_nested_just_under_the_limit_load_although_their_combination_is_too_deep(tmp_path):
    # Alone, 31 parentheses fit CEL's recursion limit; wrapped into the policy's list program they do not.
    ps = load(tmp_path, f"""
        policies:
          - id: p
            rules:
              - {{id: deep, when: "{nested(31)}", action: step_up}}
              - {{id: kill, when: "risk >= 0.9", action: terminate}}
        """)
    assert policies.check_directory(tmp_path) == []
    assert ps.evaluate({"risk": 0.6}).rule_id == "deep"
    assert ps.evaluate({"risk": 0.95}).action is Action.TERMINATE
    assert ps.evaluate({"risk": 0.1}).action is Action.ALLOW


def test_rules_whose_combined_size_exceeds_the_cel_limit_still_load(tmp_path):
    condition = " || ".join(f"risk >= 0.{i:05d}" for i in range(1, 2501))  # about 47,000 characters alone
    rules = "".join(f'      - {{id: r{i}, when: "{condition} || session.step_up_count == {i}", action: step_up}}\n'
                    for i in range(3))
    (tmp_path / "a.yaml").write_text("policies:\n  - id: p\n    rules:\n" + rules)
    assert [d for d in policies.check_directory(tmp_path) if d.severity == "error"] == []
    ps = policies.load_directory(tmp_path)
    decision = ps.evaluate({"risk": 0.0, "session": {"step_up_count": 2}})
    assert (decision.action, decision.rule_id, decision.errors) == (Action.STEP_UP, "r2", ())
    # with a request the other (all-rules) program is used: same fallback
    assert ps.evaluate({"risk": 0.0, "session": {"step_up_count": 1}, "request": {"method": "GET"}}).rule_id == "r1"


POLICY = """
    policies:
      - id: p
        rules:
          - {id: risky, when: "risk >= 0.5", action: step_up}
          - {id: fails, when: "session.step_up_failures >= 3", action: terminate}
          - {id: relay, when: "signals.relay.sufficient && signals.relay.details.added_latency_ms >= 100.0",
             action: terminate}
          - {id: flagged, when: "signals.cadence.sufficient", action: restrict, params: {read_only: true}}
    """


@pytest.mark.parametrize("context,leaf", [
    ({"risk": 10**400}, "risk"),
    ({"risk": float("nan")}, "risk"),
    ({"risk": float("inf")}, "risk"),
    ({"risk": -math.inf}, "risk"),
    ({"session": {"step_up_failures": 10**400}}, "session.step_up_failures"),
    ({"session": {"step_up_failures": 2**70}}, "session.step_up_failures"),
    ({"session": {"step_up_failures": float("inf")}}, "session.step_up_failures"),
    ({"signals": {"relay": {"sufficient": True, "details": {"added_latency_ms": 10**400}}}}, "signals.relay.details"),
    ({"signals": {"relay": {"sufficient": True, "details": {"added_latency_ms": float("nan")}}}}, "signals.relay.details"),
    ({"signals": {"relay": {"sufficient": True, "details": {"added_latency_ms": float("inf")}}}}, "signals.relay.details"),
])
def test_numbers_cel_cannot_hold_are_reported_and_never_raise(tmp_path, context, leaf):
    ps = load(tmp_path, POLICY)
    decision = ps.evaluate(context)
    assert decision.action is Action.ALLOW
    assert any(e.startswith(f"context value {leaf}") for e in decision.errors), decision.errors
    assert all(len(e) < 300 for e in decision.errors)
    ps.trace(context)  # explain's path too


def test_an_unread_score_of_a_firing_signal_does_not_break_the_decision(tmp_path):
    ps = load(tmp_path, POLICY)
    decision = ps.evaluate({"signals": {"cadence": {"sufficient": True, "score": 10**400}}})
    assert decision.action is Action.RESTRICT and decision.signals == {"cadence": 0.0}


def test_finite_numbers_still_pass(tmp_path):
    ps = load(tmp_path, POLICY)
    assert ps.evaluate({"risk": 1}).action is Action.STEP_UP
    assert ps.evaluate({"session": {"step_up_failures": 3}}).action is Action.TERMINATE
    relay = {"sufficient": True, "details": {"added_latency_ms": 150}}
    decision = ps.evaluate({"signals": {"relay": relay}})
    assert decision.action is Action.TERMINATE and decision.errors == ()
