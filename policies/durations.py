"""Durations in policy files: integer seconds or strings like "90s", "15m", "1h30m", "2d"."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class DurationError(ValueError):
    pass


def parse_duration(value: object) -> int:
    """Seconds in `value`; raises DurationError with a readable message."""
    if isinstance(value, bool):
        raise DurationError(f"expected a duration, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise DurationError(f"duration must not be negative, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _DURATION.match(text)
        if text and match and any(match.groups()):
            days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
            return days * 86400 + hours * 3600 + minutes * 60 + seconds
        raise DurationError(f"invalid duration {value!r}")
    raise DurationError(f"expected a duration, got {type(value).__name__} {value!r}")


DURATION_HINT = 'write seconds as an integer or a duration like "90s", "15m", "1h30m", "2d"'
