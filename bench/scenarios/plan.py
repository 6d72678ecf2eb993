"""Typing plans: what to press, when, and what the field should read afterwards.

A plan is a list of strokes (key down and key up offsets in ms from the plan's start). `timeline()` turns it into
the ordered key events a browser receives, with the Shift modifier state each event carries; `field_values()` runs
a small single-line editor model (insert, Backspace, Delete, caret moves) so a driver can tell what the field should
hold after each keydown without reading it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal

from .keymap import SHIFT, SHIFT_CODES, KeySpec

EventType = Literal["keyDown", "rawKeyDown", "keyUp"]


@dataclass(frozen=True, slots=True)
class PlannedStroke:
    down_ms: float
    up_ms: float
    key: KeySpec


@dataclass(frozen=True, slots=True)
class TypingPlan:
    strokes: tuple[PlannedStroke, ...]
    origin: str = "plan"  # loggable provenance ("aalto:1002/10319", "script:fixed-50ms", ...)

    def __post_init__(self) -> None:
        previous = float("-inf")
        for i, stroke in enumerate(self.strokes):
            if stroke.up_ms < stroke.down_ms:
                raise ValueError(f"stroke {i}: key up at {stroke.up_ms} ms precedes key down at {stroke.down_ms} ms")
            if stroke.down_ms < previous:
                raise ValueError(f"stroke {i}: key down at {stroke.down_ms} ms is before the previous key down")
            previous = stroke.down_ms

    @property
    def duration_ms(self) -> float:
        return max((s.up_ms for s in self.strokes), default=0.0)

    @property
    def expected_text(self) -> str:
        values = field_values(self)
        return values[-1] if values else ""

    def shifted(self, offset_ms: float) -> TypingPlan:
        return TypingPlan(
            tuple(replace(s, down_ms=s.down_ms + offset_ms, up_ms=s.up_ms + offset_ms) for s in self.strokes),
            self.origin,
        )

    def sliced(self, start: int, stop: int | None = None) -> TypingPlan:
        """Strokes [start:stop], re-anchored so the first key down is at 0."""
        part = self.strokes[start:stop]
        if not part:
            return TypingPlan((), self.origin)
        return TypingPlan(part, self.origin).shifted(-part[0].down_ms)


@dataclass(frozen=True, slots=True)
class KeyEvent:
    t_ms: float
    type: EventType
    key: KeySpec
    modifiers: int
    stroke: int  # index into plan.strokes

    def cdp_params(self, timestamp: float | None = None) -> dict[str, object]:
        """Parameters for CDP `Input.dispatchKeyEvent`; `timestamp` (seconds since the epoch) becomes the event's
        own time (`event.timeStamp` in the page), as a keyboard's events carry the time the OS took them in."""
        params: dict[str, object] = {
            "type": self.type,
            "modifiers": self.modifiers,
            "code": self.key.code,
            "key": self.key.key,
            "windowsVirtualKeyCode": self.key.vk,
            "nativeVirtualKeyCode": self.key.vk,
            "location": self.key.location,
        }
        if self.type == "keyDown" and self.key.text:
            params["text"] = self.key.text
            params["unmodifiedText"] = self.key.text
        if self.key.location == 3:
            params["isKeypad"] = True
        if timestamp is not None:
            params["timestamp"] = timestamp
        return params


def timeline(plan: TypingPlan) -> list[KeyEvent]:
    """The plan's key events in dispatch order, each with the Shift state a real keyboard would report.

    Ties: at equal times downs go before ups (a stroke with zero dwell still goes down first).
    """
    raw = []
    for i, s in enumerate(plan.strokes):
        raw.append((s.down_ms, 0, i, True))
        raw.append((s.up_ms, 1, i, False))
    raw.sort(key=lambda r: (r[0], r[1], r[2]))
    shift_down: set[int] = set()
    events = []
    for t, _, i, down in raw:
        spec = plan.strokes[i].key
        if spec.code in SHIFT_CODES:
            (shift_down.add if down else shift_down.discard)(i)
        modifiers = SHIFT if shift_down else 0
        kind: EventType = ("keyDown" if spec.text else "rawKeyDown") if down else "keyUp"
        events.append(KeyEvent(t, kind, spec, modifiers, i))
    return events


def field_values(plan: TypingPlan, initial: str = "") -> list[str]:
    """Value of a single-line text field after each stroke's key down (in stroke order)."""
    value, caret = initial, len(initial)
    values = []
    for s in plan.strokes:
        code = s.key.code
        if s.key.text:
            value = value[:caret] + s.key.text + value[caret:]
            caret += len(s.key.text)
        elif code == "Backspace" and caret > 0:
            value = value[: caret - 1] + value[caret:]
            caret -= 1
        elif code == "Delete":
            value = value[:caret] + value[caret + 1 :]
        elif code == "ArrowLeft":
            caret = max(0, caret - 1)
        elif code == "ArrowRight":
            caret = min(len(value), caret + 1)
        elif code in ("Home", "ArrowUp", "PageUp"):
            caret = 0
        elif code in ("End", "ArrowDown", "PageDown"):
            caret = len(value)
        values.append(value)
    return values


def jittered(plan: TypingPlan, sd_ms: float, seed: int) -> TypingPlan:
    """The same plan with independent normal noise on every press and release (order of presses kept)."""
    rng = random.Random(seed)
    strokes = []
    previous_down = 0.0
    for s in plan.strokes:
        down = max(previous_down, s.down_ms + rng.gauss(0.0, sd_ms))
        up = max(down + 1.0, s.up_ms + rng.gauss(0.0, sd_ms))
        strokes.append(PlannedStroke(down, up, s.key))
        previous_down = down
    return TypingPlan(tuple(strokes), f"{plan.origin}+noise{sd_ms:g}ms")


def intervals(down_up: list[tuple[float, float]]) -> dict[str, list[float]]:
    """Dwell (down->up of a stroke) and flight (down->down of consecutive strokes) times from (down, up) pairs."""
    dwell = [u - d for d, u in down_up]
    flight = [b[0] - a[0] for a, b in zip(down_up, down_up[1:])]
    return {"dwell": dwell, "flight": flight}


# keys that would leave a single-line field (Tab) or submit it early (Enter) in the middle of a recorded sentence
FIELD_LEAVING_CODES = frozenset({"Tab", "Enter", "NumpadEnter", "ArrowUp", "ArrowDown", "PageUp", "PageDown", "Escape"})


def without_codes(plan: TypingPlan, codes: frozenset[str] = FIELD_LEAVING_CODES) -> TypingPlan:
    """The plan minus strokes of the given key codes (everything else keeps its recorded time)."""
    kept = tuple(s for s in plan.strokes if s.key.code not in codes)
    return TypingPlan(kept, plan.origin)


# keys the demo web terminal does not edit a line with (it swallows caret moves): left out of plans typed there, so
# what the operator expects to see is what the shell shows
TERMINAL_SKIPPED_CODES = FIELD_LEAVING_CODES | {"ArrowLeft", "ArrowRight", "Home", "End", "Delete"}
SHELL_ENDERS = frozenset({"exit", "logout"})  # a command line starting with one would end the demo shell


def for_surface(plan: TypingPlan, surface: str) -> TypingPlan | None:
    """A recorded sentence made typeable where it goes: one line of the form, or one command line of the demo
    terminal (None when the terminal cannot take it)."""
    if surface == "form":
        return without_codes(plan)
    if surface != "terminal":
        raise ValueError(f"surface must be 'form' or 'terminal', got {surface!r}")
    line = without_codes(plan, TERMINAL_SKIPPED_CODES)
    if not line.strokes or line.expected_text.split(" ", 1)[0] in SHELL_ENDERS:
        return None
    return line
