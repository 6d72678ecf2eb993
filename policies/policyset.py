"""A loaded, immutable set of policies: evaluate a context into a Decision."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

from .conditions import Comparison, Condition, Reference
from .decision import Decision, Expectations, NearMiss
from .matching import could_match_route, expect_values, matches
from .model import Action, Policy, Rule
from .schema import flatten, in_cel_range, lookup


@dataclass(frozen=True, slots=True)
class CompiledRule:
    policy: Policy
    rule: Rule
    condition: Condition
    order: int  # global order: file name, then policy, then rule
    reads_expect: bool
    reads_request: bool


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """One rule's evaluation, as explain() reports it."""

    compiled: CompiledRule
    status: str  # "fired" | "not fired" | "error" | "skipped (no request)" | "policy did not match"
    error: str = ""


@dataclass(frozen=True, slots=True)
class _PolicyPrograms:
    """A policy's conditions compiled into one CEL list program: one engine call per policy and decision."""

    policy: Policy
    rules: tuple[CompiledRule, ...]
    session_rules: tuple[CompiledRule, ...]  # the rules that do not read `request`
    all_program: Any  # None: evaluate rule by rule
    session_program: Any
    reads_expect: bool

    @staticmethod
    def _combine(env, rules: tuple[CompiledRule, ...]):
        if not rules:
            return None
        # Newlines end any `//` comment inside a condition; each condition was type-checked alone at load.
        try:
            return env.compile("[" + ",\n".join(f"(\n{c.condition.source}\n)" for c in rules) + "]")
        except RuntimeError:
            # Together the conditions can exceed CEL's size or nesting limits although each compiled alone:
            # the set still loads, and this policy's rules run one program each (slower, same decisions).
            return None

    @classmethod
    def build(cls, env, policy: Policy, rules: tuple[CompiledRule, ...]) -> "_PolicyPrograms":
        session_rules = tuple(c for c in rules if not c.reads_request)
        return cls(policy, rules, session_rules, cls._combine(env, rules), cls._combine(env, session_rules),
                   any(c.reads_expect for c in rules))


def reference_value(flat: Mapping[str, Any], reference: Reference) -> Any:
    value = flat.get(reference.leaf)
    if reference.key is not None:
        return value.get(reference.key) if type(value) is dict else None  # noqa: E721
    return value


class PolicySet:
    """Immutable after construction; share it freely between tasks and threads."""

    def __init__(self, env, policies: list[Policy], conditions: dict[tuple[str, str], Condition], digest: str,
                 files: tuple[str, ...], warnings: tuple = ()):
        self._env = env
        self.warnings = tuple(warnings)  # Diagnostic(severity="warning") found at load
        self.policies: tuple[Policy, ...] = tuple(policies)
        self.digest = digest
        self.files = files
        compiled: list[CompiledRule] = []
        for policy in self.policies:
            for rule in policy.rules:
                condition = conditions[(policy.id, rule.id)]
                compiled.append(CompiledRule(
                    policy, rule, condition, len(compiled),
                    any(leaf.startswith("expect.") for leaf in condition.leaves),
                    condition.reads_request))
        self.rules: tuple[CompiledRule, ...] = tuple(compiled)
        self._by_policy: tuple[_PolicyPrograms, ...] = tuple(
            _PolicyPrograms.build(env, p, tuple(c for c in compiled if c.policy is p)) for p in self.policies)
        self._leaves: tuple[str, ...] = tuple(sorted(
            {leaf for c in compiled for leaf in c.condition.leaves if not leaf.startswith("expect.")}))
        # route name -> uses_request's answer: asked on every proxied request, fixed for this set (routes are few;
        # filling it from several threads at once only repeats the same answer)
        self._uses_request: dict[str, bool] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"PolicySet({len(self.policies)} policies, {len(self.rules)} rules, digest={self.digest[:12]})"

    # -- evaluation ---------------------------------------------------------------------------------------
    def _outcomes(self, context: Mapping[str, Any], now: float, errors: list[str],
                  include_unmatched: bool = False) -> tuple[list[tuple[CompiledRule, bool]], dict[str, Any], list[RuleOutcome]]:
        flat = flatten(context, self._leaves, errors)
        has_request = context.get("request") is not None
        shared = None
        fired: list[tuple[CompiledRule, bool]] = []
        trace: list[RuleOutcome] = []
        for group in self._by_policy:
            policy = group.policy
            if not matches(policy.match, context):
                if include_unmatched:
                    trace.extend(RuleOutcome(c, "policy did not match") for c in group.rules)
                continue
            rules, program = (group.rules, group.all_program) if has_request else \
                (group.session_rules, group.session_program)
            if include_unmatched and not has_request:
                trace.extend(RuleOutcome(c, "skipped (no request)") for c in group.rules if c.reads_request)
            if not rules:
                continue
            if group.reads_expect:
                activation = self._env.Activation(data={**flat, **expect_values(policy, now)})
            else:
                if shared is None:
                    shared = self._env.Activation(data=flat)
                activation = shared
            values = program.eval(activation).plain_value() if program is not None else None
            if type(values) is list and len(values) == len(rules):  # noqa: E721
                fired.extend(zip(rules, values))
                if include_unmatched:
                    trace.extend(RuleOutcome(c, "fired" if v else "not fired") for c, v in zip(rules, values))
                continue
            # Some condition failed at run time (or there is no combined program): evaluate one by one to keep the
            # others and name the culprit.
            for compiled in rules:
                value = compiled.condition.program.eval(activation).plain_value()
                if type(value) is bool:  # noqa: E721
                    fired.append((compiled, value))
                    if include_unmatched:
                        trace.append(RuleOutcome(compiled, "fired" if value else "not fired"))
                else:
                    errors.append(f"{policy.id}/{compiled.rule.id}: {value}")
                    fired.append((compiled, False))
                    if include_unmatched:
                        trace.append(RuleOutcome(compiled, "error", str(value)))
        return fired, flat, trace

    def evaluate(self, context: Mapping[str, Any], *, now: float | None = None,
                 near_misses: bool = True) -> Decision:
        """The decision for `context` (shape: docs/architecture.md, "Policy context").

        Never raises for bad context values or CEL runtime errors: those rules do not fire and the problem is in
        `Decision.errors`. `near_misses=False` skips finding the rules that almost fired (an explanation aid that
        costs about as much as the decision itself): the gateway's per-event path does not need them.
        """
        now = time.time() if now is None else now
        errors: list[str] = []
        outcomes, flat, _ = self._outcomes(context, now, errors)
        return self._decide(outcomes, flat, context, errors, near_misses)

    def _decide(self, outcomes, flat, context, errors, with_near: bool = True) -> Decision:
        winner: CompiledRule | None = None
        restricts: list[CompiledRule] = []
        shadow: list[Decision] = []
        for compiled, value in outcomes:
            if not value:
                continue
            if compiled.rule.shadow:
                shadow.append(self._decision(compiled, flat, context, (), (), (), True))
                continue
            if compiled.rule.action is Action.RESTRICT:
                restricts.append(compiled)
            if winner is None or compiled.rule.action > winner.rule.action:
                winner = compiled
        severity = winner.rule.action if winner else Action.ALLOW
        near = tuple(self._near_misses(outcomes, flat, severity)) if with_near else ()
        if winner is None:
            return Decision.allow(shadow_decisions=tuple(shadow), near_misses=near, errors=tuple(errors),
                                  policy_digest=self.digest)
        params = winner.rule.params
        if severity is Action.RESTRICT and len(restricts) > 1:
            params = merge_restrictions([c.rule.params for c in restricts])
        return self._decision(winner, flat, context, tuple(shadow), near, tuple(errors), False, params)

    def _decision(self, compiled: CompiledRule, flat, context, shadow, near, errors, is_shadow: bool,
                  params: dict | None = None) -> Decision:
        rule, policy = compiled.rule, compiled.policy
        signals = {}
        for name in compiled.condition.signals:
            score = flat.get(f"signals.{name}.score")
            if score is None:
                # Not read by any rule, so not checked by flatten(): take only what is a usable reading.
                score = lookup(context, ("signals", name, "score"))
                score = score if type(score) in (int, float) and in_cel_range(score) else 0.0  # noqa: E721
            signals[name] = float(score)
        what = rule.description or "condition held"
        reason = f"{what} (policy {policy.id}, rule {rule.id}: {' '.join(rule.when.split())})"
        return Decision(rule.action, dict(params if params is not None else rule.params), policy.file, policy.id,
                        rule.id, reason, is_shadow, signals, shadow, near, errors, self.digest)

    def _near_misses(self, outcomes, flat, severity: Action):
        for compiled, value in outcomes:
            if value or compiled.rule.shadow or compiled.rule.action <= severity:
                continue
            result = near_miss(compiled, flat)
            if result is not None:
                yield result

    # -- what the gateway asks besides decisions ------------------------------------------------------------
    def expectations(self, context: Mapping[str, Any]) -> Expectations:
        site, rtt, hours, ids = "", None, None, []
        for policy in self.policies:
            if not matches(policy.match, context):
                continue
            expect = policy.expect
            if not (expect.site or expect.rtt_budget_ms is not None or expect.hours is not None):
                continue
            ids.append(policy.id)
            site = site or expect.site
            if expect.rtt_budget_ms is not None:
                rtt = expect.rtt_budget_ms if rtt is None else min(rtt, expect.rtt_budget_ms)
            hours = hours if hours is not None else expect.hours
        return Expectations(site, rtt, hours, tuple(ids))

    def uses_request(self, route: str) -> bool:
        answer = self._uses_request.get(route)
        if answer is None:
            answer = self._uses_request[route] = any(
                could_match_route(group.policy.match, route)
                and (group.policy.match.needs_request or any(c.reads_request for c in group.rules))
                for group in self._by_policy)
        return answer

    def trace(self, context: Mapping[str, Any], now: float | None = None):
        """Every rule's outcome, the decision, and the flattened values (for explain)."""
        now = time.time() if now is None else now
        errors: list[str] = []
        # Every leaf any rule reads, so explain can show values even for rules of unmatched policies.
        outcomes, flat, trace = self._outcomes(context, now, errors, include_unmatched=True)
        decision = self._decide(outcomes, flat, context, errors)
        return decision, flat, trace


def merge_restrictions(all_params: list[dict]) -> dict:
    """Union of lists, OR of flags, in rule order."""
    merged: dict = {"deny_methods": [], "deny_paths": [], "read_only": False, "block_clipboard": False,
                    "block_file_transfer": False, "hold_input": False}
    for params in all_params:
        for key in ("deny_methods", "deny_paths"):
            merged[key].extend(v for v in params.get(key, ()) if v not in merged[key])
        for key in ("read_only", "block_clipboard", "block_file_transfer", "hold_input"):
            merged[key] = merged[key] or bool(params.get(key))
    return merged


def comparison_readings(comparisons: tuple[Comparison, ...], flat) -> list[tuple[Comparison, float]]:
    readings = []
    for comparison in comparisons:
        value = reference_value(flat, comparison.reference)
        if type(value) is float or type(value) is int:  # noqa: E721 - bools are not readings
            readings.append((comparison, float(value)))
    return readings


def near_miss(compiled: CompiledRule, flat, tolerance: float = 0.2) -> NearMiss | None:
    readings = comparison_readings(compiled.condition.comparisons, flat)
    if not readings:
        return None
    near = False
    for comparison, value in readings:
        if comparison.holds(value):
            continue
        if not comparison.is_near(value, tolerance):
            return None
        near = True
    if not near:
        return None
    return NearMiss(compiled.policy.id, compiled.rule.id, compiled.rule.action,
                    tuple((c.text, v, c.holds(v)) for c, v in readings))
