"""Which policies apply to a context, and the per-policy `expect` values CEL sees."""

from __future__ import annotations

import datetime as dt
import fnmatch
import zoneinfo
from functools import lru_cache
from typing import Any, Mapping

from .model import Hours, Match, Policy

_GLOB_CHARS = frozenset("*?[")


def _get(context: Mapping[str, Any], root: str, key: str) -> Any:
    section = context.get(root)
    if isinstance(section, Mapping):
        return section.get(key)
    return getattr(section, key, None) if section is not None else None


def path_matches(pattern: str, path: str) -> bool:
    if _GLOB_CHARS & set(pattern):
        return fnmatch.fnmatchcase(path, pattern)
    return path.startswith(pattern)


def host_matches(pattern: str, host: str) -> bool:
    host = host.lower().rsplit(":", 1)[0] if host.count(":") == 1 else host.lower()
    return fnmatch.fnmatchcase(host, pattern.lower())


def matches(match: Match, context: Mapping[str, Any]) -> bool:
    if match.routes and _get(context, "session", "route") not in match.routes:
        return False
    if match.route_kinds and _get(context, "session", "route_kind") not in match.route_kinds:
        return False
    if match.users and not ({_get(context, "user", "name"), _get(context, "user", "email")} & set(match.users)):
        return False
    if match.groups and not (set(_get(context, "user", "groups") or ()) & set(match.groups)):
        return False
    if match.needs_request:
        if context.get("request") is None:
            return False
        if match.hosts and not any(host_matches(p, str(_get(context, "request", "host") or "")) for p in match.hosts):
            return False
        path = str(_get(context, "request", "path") or "").split("?", 1)[0]
        if match.paths and not any(path_matches(p, path) for p in match.paths):
            return False
    return True


def could_match_route(match: Match, route: str) -> bool:
    return not match.routes or route in match.routes


@lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def in_hours(hours: Hours, now: float) -> bool:
    local = dt.datetime.fromtimestamp(now, _zone(hours.timezone))
    minute = local.hour * 60 + local.minute
    if hours.start_minute <= hours.end_minute:
        return local.weekday() in hours.days and hours.start_minute <= minute < hours.end_minute
    # Spans midnight: the early-morning part belongs to the previous day's shift.
    if minute >= hours.start_minute:
        return local.weekday() in hours.days
    return minute < hours.end_minute and (local.weekday() - 1) % 7 in hours.days


def expect_values(policy: Policy, now: float) -> dict[str, Any]:
    expect = policy.expect
    return {
        "expect.site": expect.site,
        "expect.rtt_budget_ms": float(expect.rtt_budget_ms or 0.0),
        "expect.in_hours": True if expect.hours is None else in_hours(expect.hours, now),
    }
