"""The declared shape of what CEL conditions may read, and flattening a context into it.

Every leaf is declared to the CEL type checker as a qualified variable name ("signals.relay.score"), so a typo
or an unknown signal is a load error with a column, and each decision converts only the leaves the loaded rules
read. Objects as a whole (`signals.relay`, `session`) are therefore not values in CEL; their fields are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

SIGNAL_NAMES: tuple[str, ...] = ("cadence", "relay", "automation", "network", "sensor", "session")
ROOTS: tuple[str, ...] = ("signals", "risk", "session", "user", "request", "expect")
ROUTE_KINDS: tuple[str, ...] = ("http", "guacamole", "novnc", "terminal", "vnc")


@dataclass(frozen=True, slots=True)
class Leaf:
    name: str  # qualified CEL name, e.g. "signals.relay.details"
    cel_type: str  # "double" | "int" | "bool" | "string" | "list(string)" | "map(string,double)"
    path: tuple[str, ...]  # keys into the context dict
    default: Any


_SIGNAL_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("score", "double", 0.0),
    ("sufficient", "bool", False),
    ("details", "map(string,double)", {}),
    ("evidence.keystrokes", "int", 0),
    ("evidence.seconds", "double", 0.0),
    ("evidence.samples", "int", 0),
)

_SESSION_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("sid", "string", ""),
    ("state", "string", ""),
    ("age_seconds", "double", 0.0),
    ("idle_seconds", "double", 0.0),
    ("seconds_since_auth", "double", 0.0),
    ("acr", "string", ""),
    ("amr", "list(string)", []),
    ("route", "string", ""),
    ("route_kind", "string", ""),
    ("client_ip", "string", ""),
    ("user_agent", "string", ""),
    ("step_up_count", "int", 0),
    ("step_up_failures", "int", 0),
    ("evidence_keystrokes", "int", 0),
    ("evidence_seconds", "double", 0.0),
    ("opaque_streams", "int", 0),
    ("opaque_streams_oversized", "int", 0),
)

_USER_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("name", "string", ""),
    ("email", "string", ""),
    ("groups", "list(string)", []),
    ("site", "string", ""),
    ("country", "string", ""),
)

_REQUEST_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("method", "string", ""),
    ("path", "string", ""),
    ("host", "string", ""),
    ("scheme", "string", ""),
    ("content_type", "string", ""),
)

# `expect` is filled from the matching policy's `expect` block, not from the caller's context.
_EXPECT_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("site", "string", ""),
    ("rtt_budget_ms", "double", 0.0),
    ("in_hours", "bool", True),
)


def _leaves() -> dict[str, Leaf]:
    leaves: dict[str, Leaf] = {"risk": Leaf("risk", "double", ("risk",), 0.0)}
    for signal in SIGNAL_NAMES:
        for field, cel_type, default in _SIGNAL_FIELDS:
            name = f"signals.{signal}.{field}"
            leaves[name] = Leaf(name, cel_type, ("signals", signal, *field.split(".")), default)
    for root, fields in (("session", _SESSION_FIELDS), ("user", _USER_FIELDS), ("request", _REQUEST_FIELDS),
                         ("expect", _EXPECT_FIELDS)):
        for field, cel_type, default in fields:
            name = f"{root}.{field}"
            leaves[name] = Leaf(name, cel_type, (root, field), default)
    return leaves


LEAVES: dict[str, Leaf] = _leaves()


def describe_schema() -> str:
    """One line per declared name, for docs and `did you mean` hints."""
    return "\n".join(f"{leaf.name}: {leaf.cel_type}" for leaf in LEAVES.values())


_INT64 = (-(2**63), 2**63 - 1)  # CEL's int


def _shown(value: Any) -> str:
    """A context value for an error message: it may be arbitrarily large."""
    if isinstance(value, int) and abs(value) >= 10**30:  # str() of a huge int is slow, or refused past 4300 digits
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _finite(value: Any) -> float:
    # NaN would make every comparison false and infinity every threshold true, whatever the rule meant.
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{_shown(value)} is too large") from None
    if not math.isfinite(number):
        raise ValueError(f"{_shown(value)} is not a finite number")
    return number


def _as_float(value: Any) -> float:
    return _finite(value)


def _as_int(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{_shown(value)} is not an integer")
    number = int(value)
    if not _INT64[0] <= number <= _INT64[1]:
        raise ValueError(f"{_shown(value)} is out of range for a CEL int")
    return number


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{_shown(value)} is not a bool")
    return value


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{_shown(value)} is not a string")
    return value


def _as_str_list(value: Any) -> list[str]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"{_shown(value)} is not a list of strings")
    return [_as_str(v) for v in value]


def _as_float_map(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{_shown(value)} is not a map")
    return {_as_str(k): _finite(v) for k, v in value.items()}


COERCERS: dict[str, Callable[[Any], Any]] = {
    "double": _as_float,
    "int": _as_int,
    "bool": _as_bool,
    "string": _as_str,
    "list(string)": _as_str_list,
    "map(string,double)": _as_float_map,
}


def signal_view(signal: Any) -> Mapping[str, Any]:
    """A scoring.signals.Signal (or anything shaped like one) as the mapping CEL reads."""
    if isinstance(signal, Mapping):
        return signal
    evidence = getattr(signal, "evidence", None)
    return {
        "score": getattr(signal, "score", 0.0),
        "sufficient": getattr(signal, "sufficient", False),
        "details": dict(getattr(signal, "details", {}) or {}),
        "evidence": {
            "keystrokes": getattr(evidence, "keystrokes", 0),
            "seconds": getattr(evidence, "seconds", 0.0),
            "samples": getattr(evidence, "samples", 0),
        },
    }


def lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path`, or None if any step is missing."""
    node: Any = context
    for index, key in enumerate(path):
        if node is None:
            return None
        if type(node) is not dict:  # noqa: E721 - the common case must stay cheap
            if index == 2 and path[0] == "signals":
                node = signal_view(node)
            if not isinstance(node, Mapping):
                node = getattr(node, key, None)
                continue
        node = node.get(key)
    return node


def _step(node: Any, key: str, at_signal: bool) -> Any:
    """One step into something that is not a plain dict: a Mapping, a Signal, or any object with attributes."""
    if at_signal:
        node = signal_view(node)
    if isinstance(node, Mapping):
        return node.get(key)
    return getattr(node, key, None)


_EXACT: dict[str, type] = {"double": float, "int": int, "bool": bool, "string": str}


def flatten(context: Mapping[str, Any], names: tuple[str, ...], errors: list[str], strict: bool = False) -> dict[str, Any]:
    """The CEL activation for `names`: missing values get the declared default, wrong types are reported.

    Not strict: values whose Python type already is the declared one, and any list or dict, pass unchecked
    (CEL then reports a rule error if a list or map holds the wrong element type) - except numbers that are not
    finite or do not fit the CEL type: those are refused like wrong types (for a map, just those entries).
    """
    flat: dict[str, Any] = {}
    for name in names:
        leaf = LEAVES[name]
        node: Any = context
        for key in leaf.path:
            if type(node) is dict:  # noqa: E721 - the common case must stay cheap
                node = node.get(key)
            elif node is None:
                break
            else:
                node = _step(node, key, at_signal=leaf.path[0] == "signals" and key is leaf.path[2])
        value = node
        if value is None:
            flat[name] = leaf.default
            continue
        exact = _EXACT.get(leaf.cel_type)
        kind = type(value)
        if not strict and ((kind is exact and in_cel_range(value)) or (exact is None and kind is list)):
            flat[name] = value
            continue
        if not strict and exact is None and kind is dict:
            flat[name] = value if all(in_cel_range(v) for v in value.values()) else _without_bad_numbers(name, value, errors)
            continue
        try:
            flat[name] = COERCERS[leaf.cel_type](value)
        except Exception as exc:  # noqa: BLE001 - a caller's object may raise anything from __float__ or __iter__
            errors.append(f"context value {name} ignored ({exc}); using the default {leaf.default!r}")
            flat[name] = leaf.default
    return flat


def in_cel_range(value: Any) -> bool:
    """False for the numbers CEL would choke on (huge ints) or that would silently compare false (NaN)."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is int:
        return _INT64[0] <= value <= _INT64[1]
    return True


def _without_bad_numbers(name: str, value: dict, errors: list[str]) -> dict:
    kept = {}
    for key, item in value.items():
        if in_cel_range(item):
            kept[key] = item
        else:
            errors.append(f"context value {name}[{_shown(key)}] ignored ({_shown(item)} is not a finite number in range)")
    return kept


def build_context(*, assessment: Any = None, session: Mapping[str, Any] | None = None,
                  user: Mapping[str, Any] | None = None, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The policy context from a scoring.signals.Assessment (or None) and plain session/user/request mappings."""
    context: dict[str, Any] = {
        "signals": {},
        "risk": 0.0,
        "session": dict(session or {}),
        "user": dict(user or {}),
    }
    if assessment is not None:
        context["risk"] = float(getattr(assessment, "risk", 0.0))
        context["signals"] = {name: signal_view(s) for name, s in getattr(assessment, "signals", {}).items()}
    if request is not None:
        context["request"] = dict(request)
    return context
