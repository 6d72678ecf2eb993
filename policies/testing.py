"""Policy tests kept beside the policies (like `opa test`): given a context, expect a decision.

Test files are `*_test.yaml` in the policy directory or its `tests/` folder:

    tests:
      - name: relay over 100 ms terminates
        given: {signals: {relay: {score: 0.97, sufficient: true, details: {added_latency_ci_low_ms: 120.0}}}}
        now: "2025-03-04T10:00:00+01:00"     # optional, for working hours
        then: {action: terminate, rule: relay/relay-confirmed, params: {lock_user_for: 900}}
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, SequenceNode

from .decision import Decision
from .diagnostics import Diagnostic, PolicyLoadError
from .loader import TEST_SUFFIXES, load_directory
from .model import Action
from .yamlnodes import compose, construct, position

CASE_FIELDS = ("name", "given", "now", "then")
GIVEN_FIELDS = ("signals", "risk", "session", "user", "request")
THEN_FIELDS = ("action", "rule", "params", "shadow_rules", "errors")

BASELINE: dict[str, Any] = {
    "signals": {},
    "risk": 0.0,
    "session": {"sid": "test", "state": "active", "route": "app", "route_kind": "http"},
    "user": {"name": "test-user", "email": "test-user@example.test", "groups": []},
}


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: str
    line: int
    name: str
    passed: bool
    message: str = ""
    decision: dict | None = None


@dataclass
class TestReport:
    __test__ = False  # not a pytest class
    cases: list[CaseResult] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)  # policy load errors and bad test files

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def failed(self) -> int:
        return sum(not c.passed for c in self.cases)

    @property
    def ok(self) -> bool:
        return not self.failed and not any(d.severity == "error" for d in self.diagnostics) and bool(self.cases)

    def to_text(self) -> str:
        lines = [str(d) for d in self.diagnostics]
        for case in self.cases:
            lines.append(f"{'PASS' if case.passed else 'FAIL'}: {case.file}:{case.line}: {case.name}")
            if not case.passed:
                lines.extend(f"    {m}" for m in case.message.splitlines())
        total = len(self.cases)
        lines.append("-" * 80)
        lines.append(f"PASS: {self.passed}/{total}")
        if self.failed:
            lines.append(f"FAIL: {self.failed}/{total}")
        if not self.cases:
            lines.append("no test cases found (*_test.yaml beside the policies or in tests/)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed, "failed": self.failed, "ok": self.ok,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "cases": [{"file": c.file, "line": c.line, "name": c.name, "passed": c.passed, "message": c.message}
                      for c in self.cases],
        }


def test_files(directory: Path) -> list[Path]:
    found = [p for p in directory.glob("*") if p.name.endswith(TEST_SUFFIXES)]
    if (directory / "tests").is_dir():
        found += [p for p in (directory / "tests").glob("*") if p.name.endswith(TEST_SUFFIXES)]
    return sorted(found)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_now(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).timestamp()
    raise ValueError(f"'now' must be an ISO 8601 time or epoch seconds, got {value!r}")


def _check_case(decision: Decision, then: dict) -> list[str]:
    problems = []
    want = then.get("action")
    if want is not None and decision.action.label != want:
        problems.append(f"want action {want}, got {decision.action.label} ({decision.reason})")
    rule = then.get("rule")
    if rule is not None:
        got = f"{decision.policy_id}/{decision.rule_id}" if decision.rule_id else "(no rule)"
        if ("/" in rule and got != rule) or ("/" not in rule and decision.rule_id != rule):
            problems.append(f"want rule {rule}, got {got}")
    for key, value in (then.get("params") or {}).items():
        if decision.params.get(key) != value:
            problems.append(f"want params.{key} = {value!r}, got {decision.params.get(key)!r}")
    if "shadow_rules" in then:
        got_shadow = sorted(f"{d.policy_id}/{d.rule_id}" for d in decision.shadow_decisions)
        if got_shadow != sorted(then["shadow_rules"] or []):
            problems.append(f"want shadow rules {sorted(then['shadow_rules'] or [])}, got {got_shadow}")
    if "errors" in then and bool(decision.errors) != bool(then["errors"]):
        problems.append(f"want errors: {bool(then['errors'])}, got {list(decision.errors)}")
    if not decision.errors or then.get("errors"):
        return problems
    return problems + [f"evaluation errors: {list(decision.errors)}"]


def _load_cases(file: Path, report: TestReport) -> list[tuple[int, dict]]:
    name = str(file)
    try:
        root = compose(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        report.diagnostics.append(Diagnostic(name, 1, 1, f"cannot read test file: {exc}"))
        return []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        report.diagnostics.append(Diagnostic(name, mark.line + 1 if mark else 1, mark.column + 1 if mark else 1,
                                             f"invalid YAML: {exc.problem}"))
        return []
    if not isinstance(root, MappingNode) or [construct(k) for k, _ in root.value] != ["tests"] \
            or not isinstance(root.value[0][1], SequenceNode):
        report.diagnostics.append(Diagnostic(name, 1, 1, "a test file holds one key, `tests:`, with a list of cases"))
        return []
    cases = []
    for node in root.value[0][1].value:
        p = position(node)
        # YAML keeps the last of duplicate keys: a second `action:` in a case would silently be the one tested
        problem = _duplicate_key(node)
        case = construct(node) if not problem else None
        problem = problem or _case_problem(case)
        if problem:
            report.diagnostics.append(Diagnostic(name, p.line, p.column, problem,
                                                 "a case has name, given {signals, risk, session, user, request}, "
                                                 "optional now, then {action, rule, params, shadow_rules, errors}"))
            continue
        cases.append((p.line, case))
    return cases


def _duplicate_key(node: Any) -> str:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, MappingNode):
            seen: set = set()
            for key, value in current.value:
                name = getattr(key, "value", None)
                if name in seen:
                    return f"duplicate key {name!r} in a test case (line {position(key).line})"
                seen.add(name)
                stack.append(value)
        elif isinstance(current, SequenceNode):
            stack.extend(current.value)
    return ""


def _case_problem(case: Any) -> str:
    if not isinstance(case, dict):
        return "a test case must be a mapping"
    unknown = set(case) - set(CASE_FIELDS)
    if unknown:
        return f"unknown field(s) in test case: {', '.join(sorted(map(str, unknown)))}"
    if not isinstance(case.get("name"), str):
        return "test case needs a 'name'"
    given, then = case.get("given") or {}, case.get("then")
    if not isinstance(given, dict) or set(given) - set(GIVEN_FIELDS):
        return f"'given' may only hold {', '.join(GIVEN_FIELDS)}"
    if not isinstance(then, dict) or not then or set(then) - set(THEN_FIELDS):
        return f"'then' must hold some of {', '.join(THEN_FIELDS)}"
    if "action" in then and then["action"] not in [a.label for a in Action]:
        return f"unknown action {then['action']!r} in 'then'"
    if "params" in then and not isinstance(then["params"], dict):  # a list here crashed the runner
        return "'then.params' must be a mapping of parameter names to values"
    try:
        _parse_now(case.get("now"))
    except ValueError as exc:
        return str(exc)
    return ""


def run_tests(path: str | Path) -> TestReport:
    directory = Path(path)
    report = TestReport()
    try:
        policy_set = load_directory(directory)
    except PolicyLoadError as exc:
        report.diagnostics.extend(exc.diagnostics)
        return report
    for file in test_files(directory):
        for line, case in _load_cases(file, report):
            context = _merge(BASELINE, case.get("given") or {})
            decision = policy_set.evaluate(context, now=_parse_now(case.get("now")))
            problems = _check_case(decision, case["then"])
            report.cases.append(CaseResult(str(file), line, case["name"], not problems, "\n".join(problems),
                                           decision.to_dict()))
    return report
