"""Decision semantics: severity order, ties, merging, shadow, safety with missing data, matching, explain."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

import policies
from policies import Action
from scoring.signals import Assessment, Evidence, Signal


def load(tmp_path: Path, **files: str) -> policies.PolicySet:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(text))
    return policies.load_directory(tmp_path)


def context(**parts) -> dict:
    base = {"signals": {}, "risk": 0.0, "session": {"route": "app", "route_kind": "http"},
            "user": {"name": "alice", "email": "alice@example.test", "groups": ["eng"]}}
    base.update(parts)
    return base


SEVERITIES = """
policies:
  - id: p
    rules:
      - {id: allow-low, when: "risk >= 0.1", action: allow}
      - {id: restrict-mid, when: "risk >= 0.3", action: restrict, params: {read_only: true}}
      - {id: step-high, when: "risk >= 0.5", action: step_up, params: {method: totp, max_age: 10m}}
      - {id: kill-top, when: "risk >= 0.9", action: terminate, params: {lock_user_for: 1h}}
"""


@pytest.mark.parametrize("risk,action,rule", [
    (0.0, Action.ALLOW, ""), (0.2, Action.ALLOW, "allow-low"), (0.4, Action.RESTRICT, "restrict-mid"),
    (0.6, Action.STEP_UP, "step-high"), (0.95, Action.TERMINATE, "kill-top"),
])
def test_most_severe_firing_rule_wins(tmp_path, risk, action, rule):
    decision = load(tmp_path, a=SEVERITIES).evaluate(context(risk=risk))
    assert (decision.action, decision.rule_id) == (action, rule)
    if action is Action.TERMINATE:
        assert decision.params == {"lock_user_for": 3600}
    if action is Action.STEP_UP:
        assert decision.params == {"method": "totp", "max_age": 600, "grace": 0, "acr_values": []}


def test_severity_order():
    assert Action.ALLOW < Action.RESTRICT < Action.STEP_UP < Action.TERMINATE
    assert Decision_default().action is Action.ALLOW


def Decision_default():
    return policies.Decision.allow()


def test_ties_go_to_file_name_order_then_rule_order(tmp_path):
    rule = "policies:\n  - id: {pid}\n    rules:\n" \
           "      - {{id: first, when: 'risk >= 0.5', action: step_up, params: {{method: {m1}}}}}\n" \
           "      - {{id: second, when: 'risk >= 0.4', action: step_up, params: {{method: {m2}}}}}\n"
    ps = load(tmp_path, b=rule.format(pid="pb", m1="oidc", m2="oidc"), a=rule.format(pid="pa", m1="totp", m2="webauthn"))
    decision = ps.evaluate(context(risk=0.7))
    assert (decision.policy_id, decision.rule_id, decision.params["method"]) == ("pa", "first", "totp")
    assert Path(decision.policy_file).name == "a.yaml"


def test_firing_restrictions_are_merged(tmp_path):
    ps = load(tmp_path, a="""
        policies:
          - id: p
            rules:
              - {id: r1, when: "risk >= 0.3", action: restrict, params: {deny_methods: [post, DELETE], block_clipboard: true}}
              - {id: r2, when: "risk >= 0.4", action: restrict, params: {deny_methods: [PUT, POST], deny_paths: [/admin/]}}
              - {id: r3, when: "risk >= 0.9", action: restrict, params: {hold_input: true}}
        """)
    decision = ps.evaluate(context(risk=0.5))
    assert decision.action is Action.RESTRICT and decision.rule_id == "r1"
    assert decision.params == {"deny_methods": ["POST", "DELETE", "PUT"], "deny_paths": ["/admin/"], "read_only": False,
                               "block_clipboard": True, "block_file_transfer": False, "hold_input": False}


def test_shadow_rules_are_reported_never_enforced(tmp_path):
    ps = load(tmp_path, a="""
        policies:
          - id: trial
            shadow: true
            rules:
              - {id: would-kill, when: "risk >= 0.5", action: terminate}
          - id: live
            rules:
              - {id: ask, when: "risk >= 0.5", action: step_up}
              - {id: would-restrict, when: "risk >= 0.5", action: restrict, params: {read_only: true}, shadow: true}
        """)
    decision = ps.evaluate(context(risk=0.6))
    assert (decision.action, decision.rule_id, decision.shadow) == (Action.STEP_UP, "ask", False)
    assert [(d.policy_id, d.rule_id, d.action, d.shadow) for d in decision.shadow_decisions] == [
        ("trial", "would-kill", Action.TERMINATE, True), ("live", "would-restrict", Action.RESTRICT, True)]


def test_missing_signals_evaluate_as_absent_not_errors(tmp_path):
    ps = load(tmp_path, a="""
        policies:
          - id: p
            rules:
              - {id: relay, when: "signals.relay.score > 0.9", action: terminate}
              - {id: thin, when: "!signals.cadence.sufficient && signals.cadence.evidence.keystrokes == 0", action: restrict,
                 params: {block_file_transfer: true}}
        """)
    decision = ps.evaluate({})  # nothing at all
    assert decision.action is Action.RESTRICT and decision.errors == ()


def test_runtime_error_in_one_rule_does_not_stop_the_others(tmp_path):
    ps = load(tmp_path, a="""
        policies:
          - id: p
            rules:
              - {id: broken, when: "signals.relay.details.added_latency_ms >= 100.0", action: terminate}
              - {id: fine, when: "risk >= 0.5", action: step_up}
        """)
    decision = ps.evaluate(context(risk=0.7, signals={"relay": {"score": 0.5, "sufficient": True, "details": {}}}))
    assert decision.action is Action.STEP_UP and decision.rule_id == "fine"
    assert len(decision.errors) == 1 and decision.errors[0].startswith("p/broken: ")
    assert "added_latency_ms" in decision.errors[0]


def test_bad_context_values_are_reported_and_defaulted(tmp_path):
    ps = load(tmp_path, a="""
        policies:
          - id: p
            rules:
              - {id: fails, when: "session.step_up_failures >= 3", action: terminate}
        """)
    decision = ps.evaluate(context(session={"step_up_failures": "many"}))
    assert decision.action is Action.ALLOW
    assert any("session.step_up_failures" in e for e in decision.errors)
    # ints where doubles are declared are fine
    assert ps.evaluate(context(session={"step_up_failures": 3.0})).action is Action.TERMINATE


def test_assessment_objects_and_build_context(tmp_path):
    ps = policies.load_directory(policies.DEFAULTS_DIR)
    relay = Signal("relay", 0.97, True, Evidence(0, 30.0, 40), "relay",
                   {"added_latency_ms": 150.0, "added_latency_ci_low_ms": 120.0})
    assessment = Assessment(0.9, {"relay": relay}, {"relay": 0.9}, Evidence(0, 30.0, 40), True)
    ctx = policies.build_context(assessment=assessment, session={"route": "app", "route_kind": "vnc"},
                                 user={"name": "bob", "groups": []})
    decision = ps.evaluate(ctx)
    assert (decision.action, decision.rule_id) == (Action.TERMINATE, "relay-confirmed")
    assert decision.signals == {"relay": pytest.approx(0.97)}
    assert "request" not in ctx


MATCHING = """
policies:
  - id: admin-paths
    match: {routes: [wiki], paths: ["/admin/", "/api/*/delete"], groups: [contractors]}
    rules:
      - {id: ro, when: "true", action: restrict, params: {read_only: true}}
  - id: posts
    match: {route_kinds: [http]}
    rules:
      - {id: no-post-when-risky, when: 'request.method == "POST" && risk >= 0.5', action: step_up}
  - id: terminals
    match: {route_kinds: [terminal], users: [alice@example.test]}
    expect: {site: lyon, rtt_budget_ms: 40}
    rules:
      - {id: t, when: "risk >= 0.8", action: terminate}
"""


def test_match_and_per_request_rules(tmp_path):
    ps = load(tmp_path, a=MATCHING)
    contractor = {"name": "carol", "groups": ["contractors"]}
    wiki = {"route": "wiki", "route_kind": "http"}
    assert ps.evaluate(context(user=contractor, session=wiki)).action is Action.ALLOW  # no request: path policy idle
    for path, want in (("/admin/users", Action.RESTRICT), ("/api/v1/delete", Action.RESTRICT), ("/docs", Action.ALLOW)):
        request = {"method": "GET", "path": path + "?q=1", "host": "wiki.example.test"}
        assert ps.evaluate(context(user=contractor, session=wiki, request=request)).action is want, path
    post = {"method": "POST", "path": "/", "host": "x"}
    assert ps.evaluate(context(risk=0.6, request=post)).action is Action.STEP_UP
    assert ps.evaluate(context(risk=0.6)).action is Action.ALLOW  # request rules skipped without a request
    assert ps.uses_request("wiki") and ps.uses_request("anything")  # `posts` matches every route


def test_expectations_and_users(tmp_path):
    ps = load(tmp_path, a=MATCHING)
    term = {"route": "shell", "route_kind": "terminal"}
    e = ps.expectations(context(session=term))
    assert (e.site, e.rtt_budget_ms, e.policies) == ("lyon", 40.0, ("terminals",))
    assert ps.evaluate(context(session=term, risk=0.9)).action is Action.TERMINATE
    other = context(session=term, risk=0.9, user={"name": "dave", "email": "dave@example.test", "groups": []})
    assert ps.evaluate(other).action is Action.ALLOW
    assert ps.expectations(other).site == ""


def test_uses_request_false_without_request_rules(tmp_path):
    ps = load(tmp_path, a=SEVERITIES)
    assert not ps.uses_request("app")


def test_working_hours(tmp_path):
    ps = load(tmp_path, a="""
        policies:
          - id: office
            expect:
              site: paris
              hours: {days: [mon-fri], start: "08:00", end: "19:00", timezone: Europe/Paris}
            rules:
              - {id: after-hours, when: "!expect.in_hours && expect.site == 'paris'", action: step_up}
        """)
    paris = dt.timezone(dt.timedelta(hours=1))  # January: CET
    tuesday_10 = dt.datetime(2025, 1, 7, 10, 0, tzinfo=paris).timestamp()
    tuesday_22 = dt.datetime(2025, 1, 7, 22, 0, tzinfo=paris).timestamp()
    sunday_10 = dt.datetime(2025, 1, 5, 10, 0, tzinfo=paris).timestamp()
    assert ps.evaluate(context(), now=tuesday_10).action is Action.ALLOW
    assert ps.evaluate(context(), now=tuesday_22).action is Action.STEP_UP
    assert ps.evaluate(context(), now=sunday_10).action is Action.STEP_UP
    assert ps.expectations(context()).hours.timezone == "Europe/Paris"


def test_near_misses_and_explain(tmp_path):
    ps = policies.load_directory(policies.DEFAULTS_DIR)
    ctx = context(signals={"relay": {"score": 0.8, "sufficient": True,
                                     "details": {"added_latency_ms": 130.0, "added_latency_ci_low_ms": 88.0}}})
    decision = ps.evaluate(ctx)
    assert decision.action is Action.STEP_UP and decision.rule_id == "relay-suspected"
    [near] = decision.near_misses
    assert (near.rule_id, near.action) == ("relay-confirmed", Action.TERMINATE)
    assert near.comparisons == (("signals.relay.details.added_latency_ci_low_ms >= 100", 88.0, False),)
    explanation = policies.explain(ps, ctx)
    assert explanation.fired.values == {"signals.relay.sufficient": True, "signals.relay.details.added_latency_ms": 130.0}
    text = explanation.to_text()
    assert "relay/relay-confirmed -> terminate" in text and "read 88" in text
    as_dict = explanation.to_dict()
    assert as_dict["decision"]["rule_id"] == "relay-suspected"
    assert {r["status"] for r in as_dict["rules"]} >= {"fired", "not fired"}
    far = context(signals={"relay": {"score": 0.8, "sufficient": True,
                                     "details": {"added_latency_ms": 130.0, "added_latency_ci_low_ms": 60.0}}})
    assert ps.evaluate(far).near_misses == ()


def test_digest_changes_with_content(tmp_path):
    first = load(tmp_path, a=SEVERITIES).digest
    assert load(tmp_path, a=SEVERITIES).digest == first
    second = load(tmp_path, a=SEVERITIES.replace("0.9", "0.8")).digest
    assert second != first and len(second) == 64


def test_decision_to_dict_round_trips_through_json(tmp_path):
    import json
    decision = load(tmp_path, a=SEVERITIES).evaluate(context(risk=0.95))
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["action"] == "terminate" and data["params"] == {"lock_user_for": 3600}
    assert data["policy_id"] == "p" and data["rule_id"] == "kill-top" and "kill-top" in data["reason"]
    with pytest.raises(Exception):
        decision.action = Action.ALLOW  # frozen
