"""Loaded policies: typed, validated, immutable."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Action(IntEnum):
    """Ordered by severity: the most severe enforced action wins."""

    ALLOW = 0
    RESTRICT = 1
    STEP_UP = 2
    TERMINATE = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, text: str) -> "Action":
        return cls[text.upper()]


STEP_UP_METHODS: tuple[str, ...] = ("totp", "webauthn", "oidc")
ACTION_PARAMS: dict[Action, tuple[str, ...]] = {
    Action.ALLOW: (),
    Action.STEP_UP: ("method", "max_age", "grace", "acr_values"),
    Action.RESTRICT: ("deny_methods", "deny_paths", "read_only", "block_clipboard", "block_file_transfer",
                      "hold_input"),
    Action.TERMINATE: ("lock_user_for",),
}


@dataclass(frozen=True, slots=True)
class Hours:
    days: tuple[int, ...]  # 0 = Monday
    start_minute: int  # minutes after local midnight
    end_minute: int  # exclusive; an end before the start spans midnight
    timezone: str


@dataclass(frozen=True, slots=True)
class Expect:
    site: str = ""
    rtt_budget_ms: float | None = None
    hours: Hours | None = None


@dataclass(frozen=True, slots=True)
class Match:
    routes: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # prefixes, or globs when they contain * ? [
    route_kinds: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @property
    def needs_request(self) -> bool:
        return bool(self.hosts or self.paths)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    when: str
    action: Action
    params: dict
    shadow: bool
    description: str
    line: int
    column: int
    when_line: int
    when_column: int


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    description: str
    match: Match
    expect: Expect
    shadow: bool
    rules: tuple[Rule, ...]
    file: str
    line: int
    column: int
    order: int = field(default=0)  # position in the whole set: file name order, then order in the file
