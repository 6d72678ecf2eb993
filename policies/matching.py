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


_CACHED_LENGTH = 1024  # long paths are folded each time: cached, ever-new long paths would hold memory


def fold_path(path: str) -> str:
    """A path as `paths` patterns match it: without ;params in any segment (Tomcat ignores them), without a
    trailing slash, lower-case (IIS ignores case). The gateway decodes and removes dot segments before this
    (gateway/proxy/canonical.py); folding again is harmless, so a caller may pass either form."""
    return _fold_path_cached(path) if len(path) <= _CACHED_LENGTH else _fold_path(path)


@lru_cache(maxsize=4096)  # called per request and pattern; the paths of one application repeat
def _fold_path_cached(path: str) -> str:
    return _fold_path(path)


def _fold_path(path: str) -> str:
    if ";" in path:
        path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path.lower()


@lru_cache(maxsize=1024)
def _fold_pattern(pattern: str) -> str:
    # "/admin/" must also catch "/admin", which is what the upstream serves it as; patterns are matched
    # case-insensitively like the paths
    return fold_path(pattern) if not (_GLOB_CHARS & set(pattern)) else pattern.lower().rstrip("/") or "/"


def path_matches(pattern: str, path: str) -> bool:
    """Prefix (or glob) match of a folded pattern on a folded path: matching more is the safe side, since paths
    only ever restrict or step up."""
    pattern, path = _fold_pattern(pattern), fold_path(path)
    if _GLOB_CHARS & set(pattern):
        return fnmatch.fnmatchcase(path, pattern)
    return path.startswith(pattern)


def fold_host(host: str) -> str:
    """A host as `hosts` patterns match it: lower-case, without its port and one trailing dot; an IPv6 literal
    without its brackets (fnmatch would read "[::1]" as a character class)."""
    host = host.lower()
    if host.startswith("[") and "]" in host:
        return host[1:host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host[:-1] if host.endswith(".") else host


def host_matches(pattern: str, host: str) -> bool:
    return fnmatch.fnmatchcase(fold_host(host), fold_host(pattern))


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
