"""Play key events at planned offsets from a monotonic start time, through any sender."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from .plan import KeyEvent


async def play(events: Iterable[KeyEvent], send: Callable[[KeyEvent], None], t0: float) -> list[float]:
    """Call `send(event)` at `t0 + event.t_ms` (t0 on `time.monotonic()`, seconds) for each event, in order.

    `send` must not block (fire and forget: queue a write, start a task). Returns each send's lateness in ms.
    asyncio's sleep wakes within about a millisecond, which is the resolution we need; no busy waiting on a
    shared CPU.
    """
    lateness = []
    for event in events:
        target = t0 + event.t_ms / 1000.0
        wait = target - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        lateness.append((time.monotonic() - target) * 1000.0)
        send(event)
    return lateness
