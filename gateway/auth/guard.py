"""The small store interface the auth pieces need for one-time use and attempt counting.

The gateway's session stores (memory, Redis) implement `ReplayGuard`; `MemoryReplayGuard` here is the
single-process version used by tests and by the in-memory demo.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class ReplayGuard(Protocol):
    async def first_use(self, key: str, ttl_seconds: int) -> bool:
        """Atomically mark `key` used for `ttl_seconds`; True only for the first caller (Redis: SET NX EX)."""
        ...

    async def incr(self, key: str, ttl_seconds: int) -> int:
        """Atomically add one to the counter `key` and return the new value. The counter starts its ttl when it
        is created and is not extended by later increments (a fixed window; Redis: INCR, then EXPIRE NX)."""
        ...

    async def decr(self, key: str) -> None:
        """Take back one count of the counter `key` if it still exists and is above zero (an attempt that was
        counted before it was checked, and turned out to be a success). Never creates the counter."""
        ...


class MemoryReplayGuard:
    """In-process ReplayGuard (no awaits inside, so each call is atomic on one event loop)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._used: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}

    async def first_use(self, key: str, ttl_seconds: int) -> bool:
        now = self._clock()
        expires = self._used.get(key)
        if expires is not None and expires > now:
            return False
        self._sweep(now)
        self._used[key] = now + ttl_seconds
        return True

    async def incr(self, key: str, ttl_seconds: int) -> int:
        now = self._clock()
        count, expires = self._counters.get(key, (0, 0.0))
        if expires <= now:
            self._sweep(now)
            count, expires = 0, now + ttl_seconds
        self._counters[key] = (count + 1, expires)
        return count + 1

    async def decr(self, key: str) -> None:
        count, expires = self._counters.get(key, (0, 0.0))
        if count > 0 and expires > self._clock():
            self._counters[key] = (count - 1, expires)

    def _sweep(self, now: float) -> None:
        if len(self._used) + len(self._counters) < self._max_entries:
            return
        self._used = {k: v for k, v in self._used.items() if v > now}
        self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
