"""A directory of policy files -> PolicySet, all or nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .conditions import Condition, new_environment
from .diagnostics import Diagnostic, PolicyLoadError, sort_key
from .model import Action, Policy
from .parse import parse_file
from .policyset import PolicySet

POLICY_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = ("_test.yaml", "_test.yml")
ENGINE_TAG = b"ztgate-policies/1 cel-expr-python"


def policy_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.name.endswith(POLICY_SUFFIXES) and not p.name.endswith(TEST_SUFFIXES)
                  and not p.name.startswith("."))


def _load(path: str | Path) -> tuple[PolicySet | None, list[Diagnostic]]:
    directory = Path(path)
    if not directory.is_dir():
        return None, [Diagnostic(str(directory), 1, 1, "not a directory", "point policies.directory at a folder of *.yaml files")]
    files = policy_files(directory)
    if not files:
        return None, [Diagnostic(str(directory), 1, 1, "no policy files (*.yaml) in this directory",
                                 "an empty policy set would allow everything; ship at least one policy")]
    env = new_environment()
    diagnostics: list[Diagnostic] = []
    policies: list[Policy] = []
    conditions: dict[tuple[str, str], Condition] = {}
    digest = hashlib.sha256(ENGINE_TAG)
    for file in files:
        name = str(file)
        try:
            raw = file.read_bytes()
            source = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            diagnostics.append(Diagnostic(name, 1, 1, f"cannot read policy file: {exc}", "policy files are UTF-8 YAML"))
            continue
        digest.update(file.name.encode() + b"\0" + raw + b"\0")
        parsed = parse_file(name, source, env)
        diagnostics.extend(parsed.diagnostics)
        policies.extend(parsed.policies)
        conditions.update(parsed.conditions)
    diagnostics.extend(_duplicate_policy_ids(policies))
    for policy in policies:
        diagnostics.extend(lint_policy(policy, conditions))
    diagnostics.sort(key=sort_key)
    if any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    return PolicySet(env, policies, conditions, digest.hexdigest(), tuple(str(f) for f in files), tuple(diagnostics)), diagnostics


def load_directory(path: str | Path) -> PolicySet:
    """Every *.yaml file in `path` (not *_test.yaml, not subfolders), in file-name order.

    Raises PolicyLoadError with every diagnostic if any file has an error: a set is never partially loaded.
    Warnings do not stop loading; `PolicySet.warnings` keeps them.
    """
    policy_set, diagnostics = _load(path)
    if policy_set is None:
        raise PolicyLoadError(diagnostics)
    return policy_set


def check_directory(path: str | Path) -> list[Diagnostic]:
    """All diagnostics (errors and warnings) for the directory, without raising."""
    return _load(path)[1]


def _duplicate_policy_ids(policies: list[Policy]):
    first: dict[str, Policy] = {}
    for policy in policies:
        if policy.id in first:
            other = first[policy.id]
            yield Diagnostic(policy.file, policy.line, policy.column, f"duplicate policy id '{policy.id}'",
                             f"already defined at {other.file}:{other.line}; policy ids are unique across the directory")
        else:
            first[policy.id] = policy


def lint_policy(policy: Policy, conditions: dict[tuple[str, str], Condition]):
    """Sound checks only: rules that provably can never decide anything.

    Within one policy, rules with token-identical conditions always fire together, so of two enforced rules with
    the same condition only the more severe (or, at equal severity, the earlier) can ever be the decision.
    Restrict rules are exempt at equal severity because firing restrictions are merged.
    """
    by_condition: dict[str, list] = {}
    for rule in policy.rules:
        condition = conditions[(policy.id, rule.id)]
        if condition.constant is False:
            yield Diagnostic(policy.file, rule.when_line, rule.when_column,
                             f"rule '{rule.id}' can never fire: its condition is always false",
                             "remove the rule, or mark it shadow while you work on it", "warning")
        if rule.shadow:
            continue
        by_condition.setdefault(condition.normalized, []).append(rule)
    for rules in by_condition.values():
        if len(rules) < 2:
            continue
        strongest = max(rules, key=lambda r: r.action)  # max() keeps the first of equals: rule order
        for rule in rules:
            if rule is strongest:
                continue
            if rule.action is strongest.action is Action.RESTRICT:
                continue
            if rule.action is strongest.action:
                message = (f"rule '{rule.id}' can never decide: rule '{strongest.id}' (line {strongest.line}) has the "
                           f"same condition and the same action, and comes first")
                hint = "delete the duplicate"
            elif rule.action is Action.ALLOW:
                message = (f"contradictory rules: '{rule.id}' allows and '{strongest.id}' (line {strongest.line}) "
                           f"does {strongest.action.label} on the same condition")
                hint = f"{strongest.action.label} is more severe and always wins; narrow one of the conditions"
            else:
                message = (f"rule '{rule.id}' ({rule.action.label}) can never decide: rule '{strongest.id}' "
                           f"(line {strongest.line}) has the same condition and the more severe action "
                           f"{strongest.action.label}")
                hint = "the most severe firing rule wins; narrow one of the conditions or delete this rule"
            yield Diagnostic(policy.file, rule.line, rule.column, message, hint)
