"""Automation injectors for the `script` scenario: input no human produced.

- `fixed_interval_plan`: one key every `interval_ms` with a constant dwell, like `xdotool type --delay` or a
  naive bot; Shift wraps upper-case characters the way an input library does it.
- `replayed_plan`: a recorded human sentence replayed with small independent noise on each event, the better
  bot: human rhythm, but no reaction to what happens on screen.
"""

from __future__ import annotations

from .aalto import Sentence, typing_plan
from .keymap import SHIFT_LEFT, spec_for_char
from .plan import PlannedStroke, TypingPlan, jittered

SHIFT_LEAD_MS = 5.0  # Shift goes down this long before the key and comes up this long after it


def fixed_interval_plan(text: str, *, interval_ms: float = 50.0, dwell_ms: float = 20.0) -> TypingPlan:
    """Type `text` with a key down every `interval_ms`, each held `dwell_ms` (Shift strokes wrap shifted chars)."""
    if interval_ms <= 0 or dwell_ms <= 0:
        raise ValueError(f"interval_ms and dwell_ms must be > 0, got {interval_ms}, {dwell_ms}")
    if dwell_ms + 2 * SHIFT_LEAD_MS >= interval_ms:
        raise ValueError(f"dwell_ms + 2*{SHIFT_LEAD_MS} must be < interval_ms so keys do not overlap")
    strokes = []
    for i, char in enumerate(text):
        t = SHIFT_LEAD_MS + i * interval_ms
        spec, needs_shift = spec_for_char(char)
        if needs_shift:
            strokes.append(PlannedStroke(t - SHIFT_LEAD_MS, t + dwell_ms + SHIFT_LEAD_MS, SHIFT_LEFT))
        strokes.append(PlannedStroke(t, t + dwell_ms, spec))
    return TypingPlan(tuple(strokes), origin=f"script:fixed-{interval_ms:g}ms")


def replayed_plan(sentence: Sentence, *, noise_sd_ms: float = 3.0, seed: int = 0, max_gap_ms: float = 1500.0) -> TypingPlan:
    """A recorded sentence replayed with independent normal noise (sd `noise_sd_ms`) on each press and release."""
    return jittered(typing_plan(sentence, max_gap_ms=max_gap_ms), noise_sd_ms, seed)
