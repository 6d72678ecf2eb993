"""One delivery worker per sink: strictly in outbox order, at least once, never skipping.

A record that fails is retried with exponential backoff and jitter (up to the sink's max_backoff) until it is
delivered or the gateway stops; the cursor (last delivered position) is persisted so a restart resumes there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable

from .outbox import Outbox, Record
from .sinks.base import DeliveryError, Sink

log = logging.getLogger("ztgate.secevents")

LEASE_TTL = 15.0
PERSIST_EVERY = 0.2      # seconds: cursor writes are batched; a crash redelivers at most this much (same ids)
BACKLOG_EVERY = 1.0
READ_BATCH = 200
MAX_DOUBLINGS = 64       # backoff: past this many doublings of min_backoff, max_backoff has long been reached


def backoff_delay(attempt: int, min_backoff: float, max_backoff: float, rand: float, *,
                  retry_after: float | None = None, slow: bool = False) -> float:
    """Delay before retry number `attempt` (1-based): exponential, capped, with jitter in [50 %, 100 %]."""
    # the exponent is capped: 2 ** 1024 no longer fits a float, and a sink down for days reaches such attempts
    base = max_backoff if slow else min(max_backoff, min_backoff * 2.0 ** min(max(attempt - 1, 0), MAX_DOUBLINGS))
    delay = base * (0.5 + 0.5 * rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_backoff))
    return delay


@dataclass
class SinkStatus:
    name: str
    type: str
    state: str = "starting"         # starting | idle | delivering | retrying | standby | stopped
    cursor: str | None = None
    delivered: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    backlog: int = 0
    oldest_pending_ms: int | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_delivered_at: float | None = None
    last_latency_ms: float | None = None
    next_attempt_at: float | None = None

    def as_dict(self, now: float) -> dict:
        d = asdict(self)
        lag = 0.0
        if self.backlog > 0 and self.oldest_pending_ms is not None:
            lag = max(0.0, now - self.oldest_pending_ms / 1000)
        d["lag_seconds"] = round(lag, 3)
        d["next_attempt_in"] = round(max(0.0, self.next_attempt_at - now), 3) if self.next_attempt_at else None
        return d


class SinkWorker:
    def __init__(self, sink: Sink, outbox: Outbox, *, owner: str, min_backoff: float, max_backoff: float,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        self.sink = sink
        self.outbox = outbox
        self.owner = owner
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.clock = clock
        self.rng = rng or random.Random()
        self.status = SinkStatus(name=sink.name, type=sink.type)
        self._stop = asyncio.Event()
        self._dirty = False
        self._persisted_at = 0.0
        self._backlog_at = 0.0
        self._lease_at = 0.0     # monotonic time the lease was last taken or extended

    def stop(self) -> None:
        self._stop.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _state(self) -> dict:
        s = self.status
        return {"pos": s.cursor, "delivered": s.delivered, "failures": s.failures, "last_error": s.last_error,
                "last_error_at": s.last_error_at, "last_delivered_at": s.last_delivered_at, "updated": self.clock()}

    async def _persist(self, force: bool = False) -> None:
        if not self._dirty and not force:
            return
        now = time.monotonic()
        if not force and now - self._persisted_at < PERSIST_EVERY:
            return
        try:
            await self.outbox.save_state(self.sink.name, self._state())
            self._dirty = False
            self._persisted_at = now
        except Exception as err:  # the cursor stays in memory; redelivery after a crash is harmless
            log.warning("sink %s: could not persist cursor: %s", self.sink.name, err)

    async def _load(self) -> None:
        state = await self.outbox.load_state(self.sink.name) or {}
        s = self.status
        s.cursor = state.get("pos")
        s.delivered = int(state.get("delivered", 0))
        s.failures = int(state.get("failures", 0))
        s.last_delivered_at = state.get("last_delivered_at")

    async def _refresh_backlog(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._backlog_at < BACKLOG_EVERY:
            return
        self._backlog_at = now
        with contextlib.suppress(Exception):
            count, oldest = await self.outbox.backlog(self.status.cursor, cap=10_000)
            self.status.backlog, self.status.oldest_pending_ms = count, oldest

    async def _renew_lease(self) -> bool:
        """Extends this worker's lease before each delivery attempt: an attempt is only made while the lease is ours
        for another LEASE_TTL, so a slow sink cannot let it lapse mid-batch and a second replica deliver alongside."""
        if await self.outbox.renew_lease(self.sink.name, self.owner, LEASE_TTL):
            self._lease_at = time.monotonic()
            return True
        log.warning("sink %s: delivery lease lost (it lapsed, and another instance may hold it); stopping delivery "
                    "here and re-reading the cursor once the lease is ours again", self.sink.name)
        return False

    async def _backoff(self, delay: float) -> bool:
        """Waits out a retry delay while keeping the lease (False: lost). A backoff may be far longer than the lease;
        letting it lapse would hand the failing record to another replica for nothing, and reload the cursor."""
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            await self._sleep(min(left, LEASE_TTL / 3))
            if not self._stop.is_set() and not await self._renew_lease():
                return False
        return True

    async def _deliver(self, rec: Record) -> bool:
        """Deliver one record, retrying until it is delivered (True), the worker stops or the lease is lost (False)."""
        s = self.status
        s.oldest_pending_ms = rec.enqueued_ms
        attempt = 0
        while not self._stop.is_set():
            if not await self._renew_lease():
                return False
            try:
                await self.sink.deliver(rec)
            except DeliveryError as err:
                attempt += 1
                s.failures += 1
                s.consecutive_failures = attempt
                message = str(err)
                if message != s.last_error or attempt == 1:
                    log.warning("sink %s: delivery of event %s failed (attempt %d): %s",
                                self.sink.name, rec.id, attempt, message)
                s.last_error, s.last_error_at = message, self.clock()
                delay = backoff_delay(attempt, self.min_backoff, self.max_backoff, self.rng.random(),
                                      retry_after=err.retry_after, slow=err.slow)
                s.state = "retrying"
                s.next_attempt_at = self.clock() + delay
                self._dirty = True
                await self._persist()
                if not await self._backoff(delay):
                    return False
                continue
            except Exception as err:  # a bug in a sink must not kill delivery: treat it as a failure
                log.exception("sink %s: unexpected error delivering %s", self.sink.name, rec.id)
                attempt += 1
                s.failures += 1
                s.last_error, s.last_error_at = f"{type(err).__name__}: {err}", self.clock()
                if not await self._backoff(backoff_delay(attempt, self.min_backoff, self.max_backoff,
                                                         self.rng.random())):
                    return False
                continue
            if attempt:
                log.info("sink %s: delivered event %s after %d failed attempts", self.sink.name, rec.id, attempt)
            now = self.clock()
            s.cursor = rec.pos
            s.delivered += 1
            s.consecutive_failures = 0
            s.next_attempt_at = None
            s.last_delivered_at = now
            s.last_latency_ms = round(now * 1000 - rec.enqueued_ms, 1)
            s.backlog = max(0, s.backlog - 1)
            s.state = "delivering"
            self._dirty = True
            return True
        return False

    async def run(self) -> None:
        s = self.status
        try:
            while not self._stop.is_set():
                try:
                    if not await self.outbox.acquire_lease(self.sink.name, self.owner, LEASE_TTL):
                        s.state = "standby"  # another gateway instance delivers to this sink
                        await self._sleep(LEASE_TTL / 3)
                        continue
                    await self._load()
                    reader = self.outbox.reader(s.cursor)
                    await self._refresh_backlog(force=True)
                    self._lease_at = time.monotonic()
                    while not self._stop.is_set():
                        # keeps the lease while idle (deliveries renew it themselves)
                        if time.monotonic() - self._lease_at > LEASE_TTL / 3 and not await self._renew_lease():
                            break
                        records = await reader.read(READ_BATCH, timeout=1.0)
                        if not records:
                            await self._persist(force=self._dirty)
                            await self._refresh_backlog()
                            if s.backlog == 0:
                                s.state, s.oldest_pending_ms = "idle", None
                            continue
                        for rec in records:
                            if not await self._deliver(rec):
                                break
                            await self._persist()
                        else:
                            await self._refresh_backlog()
                            continue
                        break  # stopped, or lease lost: reload the cursor before going on
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # outbox unreachable (e.g. Redis restarting): wait and resume
                    s.state, s.last_error, s.last_error_at = "retrying", f"outbox: {type(err).__name__}: {err}", \
                        self.clock()
                    log.warning("sink %s: outbox read failed: %s", self.sink.name, err)
                    await self._sleep(min(self.max_backoff, 1.0))
        finally:
            s.state = "stopped"
            with contextlib.suppress(Exception):
                # only while the lease is still ours: a replica that lost it would move back the holder's cursor
                if await self.outbox.renew_lease(self.sink.name, self.owner, LEASE_TTL):
                    await self._persist(force=True)
            with contextlib.suppress(Exception):
                await self.outbox.release_lease(self.sink.name, self.owner)
