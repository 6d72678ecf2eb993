"""One policy file's YAML nodes -> validated Policy objects, or diagnostics that say where and why not."""

from __future__ import annotations

import difflib
import math
import re
import zoneinfo
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .conditions import Condition, compile_condition
from .diagnostics import Diagnostic
from .durations import DURATION_HINT, DurationError, parse_duration
from .model import ACTION_PARAMS, STEP_UP_METHODS, Action, Expect, Hours, Match, Policy, Rule
from .schema import ROUTE_KINDS
from .yamlnodes import NodeError, RefusedYAML, clip, compose, construct, node_kind, position, scalar_char_positions

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ID_HINT = "ids are 1-128 characters: letters, digits, '_', '.', '-'; starting with a letter or digit"
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_DURATION_S = 366 * 86400


def _day(text: str) -> int | None:
    text = text.strip()
    if text in _DAYS:
        return _DAYS.index(text)
    return _DAY_NAMES.index(text) if text in _DAY_NAMES else None
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

POLICY_FIELDS = ("id", "description", "match", "expect", "shadow", "rules")
RULE_FIELDS = ("id", "description", "when", "action", "params", "shadow")
MATCH_FIELDS = ("routes", "hosts", "paths", "route_kinds", "users", "groups")
EXPECT_FIELDS = ("site", "rtt_budget_ms", "hours")
HOURS_FIELDS = ("days", "start", "end", "timezone")


@dataclass
class ParsedFile:
    policies: list[Policy] = field(default_factory=list)
    conditions: dict[tuple[str, str], Condition] = field(default_factory=dict)  # (policy id, rule id)
    diagnostics: list[Diagnostic] = field(default_factory=list)


class _FileParser:
    def __init__(self, file: str, source: str, env):
        self.file = file
        self.source = source
        self.env = env
        self.out = ParsedFile()

    # -- diagnostics --------------------------------------------------------------------------------------
    def error(self, node: Node, message: str, hint: str = "", severity: str = "error") -> None:
        p = position(node)
        self.out.diagnostics.append(Diagnostic(self.file, p.line, p.column, message, hint, severity))

    def expect_kind(self, node: Node, kind: type, what: str) -> bool:
        if not isinstance(node, kind):
            want = {MappingNode: "a mapping", SequenceNode: "a list", ScalarNode: "a value"}[kind]
            self.error(node, f"{what} must be {want}, got {node_kind(node)}")
            return False
        return True

    def fields(self, node: MappingNode, allowed: tuple[str, ...], what: str) -> dict[str, tuple[Node, Node]]:
        """Keys of a mapping, with unknown and duplicate keys reported."""
        seen: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = construct(key_node)
            if not isinstance(key, str):
                self.error(key_node, f"{what} keys must be strings, got {node_kind(key_node)}")
                continue
            if key in seen:
                first = position(seen[key][0])
                self.error(key_node, f"duplicate key '{clip(key)}' in {what}", f"first given at line {first.line}")
                continue
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
                self.error(key_node, f"unknown field '{clip(key)}' in {what}", hint)
                continue
            seen[key] = (key_node, value_node)
        return seen

    # -- scalar readers -------------------------------------------------------------------------------------
    def string(self, node: Node, what: str) -> str | None:
        if isinstance(node, ScalarNode):
            value = construct(node)
            if isinstance(value, str):
                return value
        self.error(node, f"{what} must be a string, got {node_kind(node)}")
        return None

    def boolean(self, node: Node, what: str) -> bool | None:
        if isinstance(node, ScalarNode):
            value = construct(node)
            if isinstance(value, bool):
                return value
        self.error(node, f"{what} must be true or false, got {node_kind(node)}")
        return None

    def number(self, node: Node, what: str, positive: bool = True) -> float | None:
        if isinstance(node, ScalarNode):
            value = construct(node)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    self.error(node, f"{what} must be a finite number, got {value}")
                    return None
                if positive and value <= 0:
                    self.error(node, f"{what} must be greater than 0, got {value}")
                    return None
                return float(value)
        self.error(node, f"{what} must be a number, got {node_kind(node)}")
        return None

    def duration(self, node: Node, what: str) -> int | None:
        if isinstance(node, ScalarNode):
            try:
                seconds = parse_duration(construct(node))
            except DurationError as exc:
                self.error(node, f"{what}: {clip(exc, 120)}", DURATION_HINT)
            else:
                if seconds <= MAX_DURATION_S:
                    return seconds
                # a store refuses such expiries (Redis EX), and the lock or wait would then never apply
                self.error(node, f"{what}: at most 366 days, got {seconds} s", DURATION_HINT)
                return None
        self.error(node, f"{what} must be a duration, got {node_kind(node)}", DURATION_HINT)
        return None

    def strings(self, node: Node, what: str) -> tuple[tuple[str, Node], ...] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list of strings, got {node_kind(node)}",
                       f"write {what}: [a, b] even for one item")
            return None
        items = []
        for item in node.value:
            text = self.string(item, f"each item of {what}")
            if text is not None:
                items.append((text, item))
        return tuple(items) if len(items) == len(node.value) else None

    def ident(self, node: Node, what: str) -> str | None:
        text = self.string(node, what)
        if text is not None and not _ID.match(text):
            self.error(node, f"invalid {what} {clip(text)!r}", _ID_HINT)
            return None
        return text

    # -- the file -------------------------------------------------------------------------------------------
    def parse(self) -> ParsedFile:
        try:
            root = compose(self.source)
        except RefusedYAML as exc:
            mark = exc.problem_mark
            self.out.diagnostics.append(Diagnostic(self.file, mark.line + 1, mark.column + 1, exc.problem, exc.hint))
            return self.out
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = " ".join(p for p in (exc.context, exc.problem) if p)
            self.out.diagnostics.append(Diagnostic(self.file, line, column, f"invalid YAML: {problem}",
                                                   "check indentation, and quote strings containing ': ' or '#'"))
            return self.out
        except yaml.YAMLError as exc:
            self.out.diagnostics.append(Diagnostic(self.file, 1, 1, f"invalid YAML: {exc}", ""))
            return self.out
        if root is None:
            self.out.diagnostics.append(Diagnostic(self.file, 1, 1, "empty policy file",
                                                   "a policy file holds `policies:` with a list of policies"))
            return self.out
        try:
            self.document(root)
        except NodeError as exc:  # compose() refuses what does not construct; this is the backstop
            self.error(exc.node, str(exc), "quote it to make it a string")
        return self.out

    def document(self, root: Node) -> None:
        if not self.expect_kind(root, MappingNode, "a policy file"):
            return
        top = self.fields(root, ("policies",), "the policy file")
        if "policies" not in top:
            self.error(root, "missing 'policies' list", "a policy file holds `policies:` with a list of policies")
            return
        policies_node = top["policies"][1]
        if not self.expect_kind(policies_node, SequenceNode, "'policies'"):
            return
        if not policies_node.value:
            self.error(policies_node, "'policies' is empty")
        for node in policies_node.value:
            policy = self.policy(node)
            if policy is not None:
                self.out.policies.append(policy)

    def policy(self, node: Node) -> Policy | None:
        if not self.expect_kind(node, MappingNode, "a policy"):
            return None
        before = len(self.out.diagnostics)
        f = self.fields(node, POLICY_FIELDS, "a policy")
        policy_id = self.ident(f["id"][1], "policy id") if "id" in f else None
        if "id" not in f:
            self.error(node, "policy has no 'id'", "give every policy a unique id")
        description = self.string(f["description"][1], "description") if "description" in f else ""
        shadow = self.boolean(f["shadow"][1], "shadow") if "shadow" in f else False
        match = self.match(f["match"][1]) if "match" in f else Match()
        expect = self.expect(f["expect"][1]) if "expect" in f else Expect()
        rules: list[Rule] = []
        if "rules" not in f:
            self.error(node, f"policy '{policy_id}' has no 'rules'", "a policy needs at least one rule")
        elif self.expect_kind(f["rules"][1], SequenceNode, "'rules'"):
            if not f["rules"][1].value:
                self.error(f["rules"][1], f"policy '{policy_id}' has an empty 'rules' list")
            seen: dict[str, Node] = {}
            for rule_node in f["rules"][1].value:
                rule = self.rule(rule_node, policy_id or "?", bool(shadow))
                if rule is None:
                    continue
                id_node = next(v for k, v in rule_node.value if construct(k) == "id")
                if rule.id in seen:
                    self.error(id_node, f"duplicate rule id '{rule.id}' in policy '{policy_id}'",
                               f"first defined at line {position(seen[rule.id]).line}; rule ids are unique per policy")
                    continue
                seen[rule.id] = id_node
                rules.append(rule)
        if len(self.out.diagnostics) != before or policy_id is None or match is None or expect is None:
            return None
        p = position(node)
        return Policy(policy_id, description or "", match, expect, bool(shadow), tuple(rules), self.file, p.line,
                      p.column)

    def match(self, node: Node) -> Match | None:
        if not self.expect_kind(node, MappingNode, "'match'"):
            return None
        f = self.fields(node, MATCH_FIELDS, "'match'")
        values: dict[str, tuple[str, ...]] = {}
        ok = True
        for name, (_, value_node) in f.items():
            items = self.strings(value_node, f"match.{name}")
            if items is None:
                ok = False
                continue
            for text, item in items:
                if name == "route_kinds" and text not in ROUTE_KINDS:
                    self.error(item, f"unknown route kind '{clip(text)}'", "route kinds: " + ", ".join(ROUTE_KINDS))
                    ok = False
                if name == "paths" and not text.startswith("/"):
                    self.error(item, f"path pattern '{clip(text)}' must start with '/'",
                               "a prefix like /admin/ or a glob like /api/*/delete")
                    ok = False
            values[name] = tuple(t for t, _ in items)
        return Match(**values) if ok else None

    def expect(self, node: Node) -> Expect | None:
        if not self.expect_kind(node, MappingNode, "'expect'"):
            return None
        f = self.fields(node, EXPECT_FIELDS, "'expect'")
        site = self.string(f["site"][1], "expect.site") if "site" in f else ""
        rtt = self.number(f["rtt_budget_ms"][1], "expect.rtt_budget_ms") if "rtt_budget_ms" in f else None
        hours = self.hours(f["hours"][1]) if "hours" in f else None
        if site is None or ("rtt_budget_ms" in f and rtt is None) or ("hours" in f and hours is None):
            return None
        return Expect(site, rtt, hours)

    def hours(self, node: Node) -> Hours | None:
        if not self.expect_kind(node, MappingNode, "expect.hours"):
            return None
        f = self.fields(node, HOURS_FIELDS, "expect.hours")
        ok = True
        for required in ("start", "end", "timezone"):
            if required not in f:
                self.error(node, f"expect.hours needs '{required}'", 'e.g. {start: "08:00", end: "19:00", timezone: Europe/Paris}')
                ok = False
        minutes = []
        for name in ("start", "end"):
            if name in f:
                text = self.string(f[name][1], f"expect.hours.{name}")
                m = _CLOCK.match(text or "")
                if not m:
                    if text is not None:
                        self.error(f[name][1], f"expect.hours.{name} {clip(text)!r} is not a time", 'write "HH:MM", 24-hour, quoted')
                    ok = False
                else:
                    minutes.append(int(m.group(1)) * 60 + int(m.group(2)))
        timezone = ""
        if "timezone" in f:
            timezone = self.string(f["timezone"][1], "expect.hours.timezone") or ""
            try:
                zoneinfo.ZoneInfo(timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                self.error(f["timezone"][1], f"unknown timezone {clip(timezone)!r}", "use an IANA name like Europe/Paris or UTC")
                ok = False
        days = tuple(range(5))
        if "days" in f:
            items = self.strings(f["days"][1], "expect.hours.days")
            if items is None:
                ok = False
            else:
                parsed: list[int] = []
                for text, item in items:
                    first, dash, last = text.lower().partition("-")
                    a, b = _day(first), _day(last) if dash else _day(first)
                    if a is not None and b is not None:
                        parsed.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
                        continue
                    # "monkey" once read as Monday: only a day's name or its three-letter form is a day
                    self.error(item, f"unknown day {clip(text)!r}", "days: mon tue wed thu fri sat sun, or a range like mon-fri")
                    ok = False
                if not items and items is not None:
                    self.error(f["days"][1], "expect.hours.days is empty: no hour would ever be working hours",
                               "list the working days, or leave days out for mon-fri")
                    ok = False
                days = tuple(sorted(set(parsed)))
        if ok and minutes[0] == minutes[1]:
            self.error(f["end"][1], "expect.hours.start and end are the same time: no hour would be working hours",
                       "for round-the-clock work leave expect.hours out")
            ok = False
        if not ok:
            return None
        return Hours(days, minutes[0], minutes[1], timezone)

    def rule(self, node: Node, policy_id: str, policy_shadow: bool) -> Rule | None:
        if not self.expect_kind(node, MappingNode, "a rule"):
            return None
        before = len(self.out.diagnostics)
        f = self.fields(node, RULE_FIELDS, "a rule")
        rule_id = self.ident(f["id"][1], "rule id") if "id" in f else None
        if "id" not in f:
            self.error(node, "rule has no 'id'", "give every rule an id, unique within its policy")
        description = self.string(f["description"][1], "description") if "description" in f else ""
        shadow = self.boolean(f["shadow"][1], "shadow") if "shadow" in f else False
        action = None
        if "action" not in f:
            self.error(node, f"rule '{rule_id}' has no 'action'", "action: allow | restrict | step_up | terminate")
        else:
            text = self.string(f["action"][1], "action")
            if text is not None:
                try:
                    action = Action.parse(text)
                except KeyError:
                    close = difflib.get_close_matches(text, [a.label for a in Action], n=1)
                    hint = f"did you mean '{close[0]}'?" if close else "action: allow | restrict | step_up | terminate"
                    self.error(f["action"][1], f"unknown action '{clip(text)}'", hint)
        params = self.params(action, f.get("params", (None, None))[1], f["action"][1]) if action is not None else None
        condition = None
        when_node = None
        if "when" not in f:
            self.error(node, f"rule '{rule_id}' has no 'when'", 'write a CEL condition, e.g. when: "risk >= 0.8"')
        else:
            when_node = f["when"][1]
            condition = self.condition(when_node)
        if len(self.out.diagnostics) != before or None in (rule_id, action, params, condition, shadow):
            return None
        self.out.conditions[(policy_id, rule_id)] = condition
        p, w = position(node), position(when_node)
        return Rule(rule_id, condition.source, action, params, bool(shadow) or policy_shadow, description or "",
                    p.line, p.column, w.line, w.column)

    def condition(self, node: Node) -> Condition | None:
        if isinstance(node, ScalarNode) and isinstance(construct(node), bool):
            source = "true" if construct(node) else "false"
            positions = None
        elif isinstance(node, ScalarNode) and isinstance(construct(node), str):
            source = node.value
            positions = scalar_char_positions(self.source, node)
        else:
            self.error(node, f"'when' must be a CEL expression string, got {node_kind(node)}")
            return None
        condition, errors = compile_condition(self.env, source)
        for error in errors:
            line_starts = [0] + [i + 1 for i, ch in enumerate(source) if ch == "\n"]
            offset = line_starts[min(error.line, len(line_starts)) - 1] + error.column - 1
            if positions is None:
                p = position(node)
            else:
                p = positions[max(0, min(offset, len(positions) - 1))]
            self.out.diagnostics.append(Diagnostic(self.file, p.line, p.column, f"in 'when': {error.message}", error.hint))
        return condition

    def params(self, action: Action, node: Node | None, anchor: Node) -> dict | None:
        allowed = ACTION_PARAMS[action]
        if node is None:
            f: dict[str, tuple[Node, Node]] = {}
        elif not self.expect_kind(node, MappingNode, "'params'"):
            return None
        else:
            f = {}
            for key_node, value_node in node.value:
                key = construct(key_node)
                if key not in allowed:
                    hint = ("allowed: " + ", ".join(allowed)) if allowed else f"{action.label} takes no parameters"
                    self.error(key_node, f"unknown parameter '{clip(key)}' for action {action.label}", hint)
                    continue
                if key in f:
                    # YAML itself keeps the last of duplicate keys: a second lock_user_for: 0 would silently win.
                    first = position(f[key][0])
                    self.error(key_node, f"duplicate key '{key}' in 'params'", f"first given at line {first.line}")
                    continue
                f[key] = (key_node, value_node)
        before = len(self.out.diagnostics)
        if action is Action.STEP_UP:
            params = self.step_up_params(f)
        elif action is Action.RESTRICT:
            params = self.restrict_params(f, node if node is not None else anchor)
        elif action is Action.TERMINATE:
            lock = self.duration(f["lock_user_for"][1], "lock_user_for") if "lock_user_for" in f else 0
            params = {"lock_user_for": lock}
        else:
            params = {}
        return params if len(self.out.diagnostics) == before else None

    def step_up_params(self, f) -> dict:
        method = None
        if "method" in f:
            method = self.string(f["method"][1], "method")
            if method is not None and method not in STEP_UP_METHODS:
                self.error(f["method"][1], f"unknown step-up method '{clip(method)}'", "method: " + " | ".join(STEP_UP_METHODS))
        acr: tuple[str, ...] = ()
        if "acr_values" in f:
            value_node = f["acr_values"][1]
            if isinstance(value_node, ScalarNode) and isinstance(construct(value_node), str):
                acr = tuple(construct(value_node).split())
            else:
                items = self.strings(value_node, "acr_values")
                acr = tuple(t for t, _ in items or ())
        return {
            "method": method,
            "max_age": self.duration(f["max_age"][1], "max_age") if "max_age" in f else 0,
            "grace": self.duration(f["grace"][1], "grace") if "grace" in f else 0,
            "acr_values": list(acr),
        }

    def restrict_params(self, f, anchor: Node) -> dict:
        params: dict = {"deny_methods": [], "deny_paths": [], "read_only": False, "block_clipboard": False,
                        "block_file_transfer": False, "hold_input": False}
        if "deny_methods" in f:
            for text, item in self.strings(f["deny_methods"][1], "deny_methods") or ():
                if text.upper() not in _HTTP_METHODS:
                    self.error(item, f"unknown HTTP method '{clip(text)}'", "methods: " + ", ".join(_HTTP_METHODS))
                else:
                    params["deny_methods"].append(text.upper())
        if "deny_paths" in f:
            for text, item in self.strings(f["deny_paths"][1], "deny_paths") or ():
                if not text.startswith("/"):
                    self.error(item, f"path pattern '{clip(text)}' must start with '/'", "a prefix like /admin/ or a glob like /api/*")
                else:
                    params["deny_paths"].append(text)
        for flag in ("read_only", "block_clipboard", "block_file_transfer", "hold_input"):
            if flag in f:
                params[flag] = bool(self.boolean(f[flag][1], flag))
        if not any(params.values()):  # e.g. {read_only: false}: the session would be marked restricted for nothing
            self.error(anchor, "restrict without any restriction", "set at least one of: " + ", ".join(params))
        return params


def parse_file(file: str, source: str, env) -> ParsedFile:
    parser = _FileParser(file, source, env)
    return parser.parse()
