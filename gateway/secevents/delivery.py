"""One delivery worker per sink: strictly in outbox order, at least once, never losing a record.

A record that fails transiently (connection refused, timeout, 408, 425, 429, 5xx) is retried with exponential backoff
and jitter (up to the sink's max_backoff) until it is delivered or the gateway stops. A record the sink refuses
permanently (DeliveryError.permanent, e.g. HTTP 400) is retried `dead_letter_after` times, then moved to the sink's
dead letters (deadletters.py) and the worker goes on with the next record: one poison event must not hold back every
later one. The cursor (last position delivered or dead-lettered) is persisted so a restart resumes there.

Dead letters an operator put back (`ztgate events retry-dead-letters`) are redelivered by this sink's worker alone,
between reads of the outbox, under the same lease as every delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Callable

from .config import DEFAULT_DEAD_LETTER_AFTER
from .deadletters import DeadLetter, DeadLetterStore, dead_letters_of
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
    dead_letters: int = 0           # held in the sink's dead-letter store now (refreshed with the backlog)
    dead_lettered: int = 0          # moved there by this process since it started: a counter, for metrics

    def as_dict(self, now: float) -> dict:
        d = asdict(self)
        lag = 0.0
        if self.backlog > 0 and self.oldest_pending_ms is not None:
            lag = max(0.0, now - self.oldest_pending_ms / 1000)
        d["lag_seconds"] = round(lag, 3)
        d["next_attempt_in"] = round(max(0.0, self.next_attempt_at - now), 3) if self.next_attempt_at else None
        return d


class Outcome(Enum):
    DELIVERED = "delivered"
    REFUSED = "refused"      # permanently, dead_letter_after times: it goes to the dead letters
    STOPPED = "stopped"      # the worker stops, or lost its lease


@dataclass
class Tries:
    """The failed attempts at one record: what its dead letter tells the operator."""
    attempts: int = 0               # over every round, including those before an operator's retry
    permanent: int = 0              # permanent refusals in this round: what dead_letter_after counts
    first_at: float | None = None
    last_at: float | None = None
    status: int | None = None
    reason: str = ""

    @staticmethod
    def resumed(letter: DeadLetter) -> "Tries":
        """A dead letter put back: a fresh round of attempts, its history kept."""
        return Tries(attempts=letter.attempts, first_at=letter.first_attempt_at, last_at=letter.last_attempt_at,
                     status=letter.status, reason=letter.reason)

    def failed(self, now: float, reason: str, *, permanent: bool, status: int | None) -> None:
        self.attempts += 1
        self.permanent += int(permanent)
        self.first_at = self.first_at if self.first_at is not None else now
        self.last_at, self.status, self.reason = now, status, reason


class SinkWorker:
    def __init__(self, sink: Sink, outbox: Outbox, *, owner: str, min_backoff: float, max_backoff: float,
                 dead_letter_after: int = DEFAULT_DEAD_LETTER_AFTER, dead_letters: DeadLetterStore | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        self.sink = sink
        self.outbox = outbox
        self.dead_letter_after = dead_letter_after
        self.dead_letters = dead_letters if dead_letters is not None else dead_letters_of(outbox)
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
        with contextlib.suppress(Exception):
            self.status.dead_letters = await self.dead_letters.count(self.sink.name)

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

    async def _deliver(self, rec: Record, tries: Tries) -> Outcome:
        """Delivers one record, retrying transient failures until it is delivered, and permanent ones until
        dead_letter_after of them (REFUSED); STOPPED when the worker stops or the lease is lost."""
        s = self.status
        attempt = 0  # this round's, for the backoff: a dead letter put back starts again at min_backoff
        while not self._stop.is_set():
            if not await self._renew_lease():
                return Outcome.STOPPED
            try:
                await self.sink.deliver(rec)
            except DeliveryError as err:
                attempt += 1
                self._failed(rec, tries, attempt, str(err), permanent=err.permanent, status=err.status)
                if self._exhausted(tries):
                    return Outcome.REFUSED
                # retrying forever, a refusal is retried at the longest backoff: it will probably not heal by itself
                slow = err.permanent and not self.dead_letter_after
                delay = backoff_delay(attempt, self.min_backoff, self.max_backoff, self.rng.random(),
                                      retry_after=err.retry_after, slow=slow)
            except Exception as err:  # a bug in a sink must not kill delivery: a transient failure, so nothing is lost
                log.exception("sink %s: unexpected error delivering %s", self.sink.name, rec.id)
                attempt += 1
                self._failed(rec, tries, attempt, f"{type(err).__name__}: {err}", permanent=False, status=None)
                delay = backoff_delay(attempt, self.min_backoff, self.max_backoff, self.rng.random())
            else:
                if attempt:
                    log.info("sink %s: delivered event %s after %d failed attempts", self.sink.name, rec.id, attempt)
                return Outcome.DELIVERED
            s.state = "retrying"
            s.next_attempt_at = self.clock() + delay
            self._dirty = True
            await self._persist()
            if not await self._backoff(delay):
                return Outcome.STOPPED
        return Outcome.STOPPED

    def _failed(self, rec: Record, tries: Tries, attempt: int, message: str, *, permanent: bool,
                status: int | None) -> None:
        s = self.status
        s.failures += 1
        s.consecutive_failures = attempt
        if message != s.last_error or attempt == 1:
            log.warning("sink %s: delivery of event %s failed (attempt %d): %s",
                        self.sink.name, rec.id, attempt, message)
        s.last_error, s.last_error_at = message, self.clock()
        tries.failed(s.last_error_at, message, permanent=permanent, status=status)

    def _exhausted(self, tries: Tries) -> bool:
        return bool(self.dead_letter_after) and tries.permanent >= self.dead_letter_after

    async def _deliver_next(self, rec: Record) -> bool:
        """Delivers or dead-letters the next record of the outbox and moves the cursor past it (False: stopped)."""
        self.status.oldest_pending_ms = rec.enqueued_ms
        tries = Tries()
        outcome = await self._deliver(rec, tries)
        if outcome is Outcome.STOPPED:
            return False
        if outcome is Outcome.REFUSED:
            if not await self._dead_letter(rec, tries):
                return False
            self._advance(rec, delivered=False)
            await self._persist(force=True)  # the dead letter holds the event now: a restart need not refuse it again
            return True
        self._advance(rec, delivered=True)
        return True

    def _advance(self, rec: Record, *, delivered: bool) -> None:
        s = self.status
        s.cursor = rec.pos
        s.consecutive_failures = 0
        s.next_attempt_at = None
        s.backlog = max(0, s.backlog - 1)
        s.state = "delivering"
        if delivered:
            self._delivered(rec)
        self._dirty = True

    def _delivered(self, rec: Record) -> None:
        s = self.status
        now = self.clock()
        s.delivered += 1
        s.last_delivered_at = now
        s.last_latency_ms = round(now * 1000 - rec.enqueued_ms, 1)

    async def _dead_letter(self, rec: Record, tries: Tries) -> bool:
        """Stores the refused record as a dead letter, retrying while the store fails (the cursor must not pass a
        record that is nowhere); False when stopped, or when the lease was lost (the new holder will refuse it)."""
        letter = DeadLetter(sink=self.sink.name, uid=rec.id, pos=rec.pos, kind=rec.kind, sid=rec.sid,
                            enqueued_ms=rec.enqueued_ms, status=tries.status, reason=tries.reason,
                            attempts=tries.attempts, first_attempt_at=tries.first_at or self.clock(),
                            last_attempt_at=tries.last_at or self.clock(), dead_lettered_at=self.clock(),
                            event=rec.event)
        failures = 0
        while not self._stop.is_set():
            try:
                stored = await self.dead_letters.add(letter, self.owner)
            except Exception as err:
                failures += 1
                log.error("sink %s: could not store event %s as a dead letter: %s; retrying", self.sink.name, rec.id,
                          err)
                if not await self._backoff(backoff_delay(failures, self.min_backoff, self.max_backoff,
                                                         self.rng.random())):
                    return False
                continue
            if not stored:
                log.warning("sink %s: delivery lease lost before event %s was dead-lettered; the instance holding it "
                            "now takes over", self.sink.name, rec.id)
                return False
            self._announce_dead_letter(letter)
            return True
        return False

    def _announce_dead_letter(self, letter: DeadLetter) -> None:
        # loud, and without the event: uid, sink and the receiver's answer are what an operator needs to act
        s = self.status
        s.dead_lettered += 1
        s.dead_letters += 1
        log.error("sink %s: event %s refused permanently (status %s: %s) after %d attempts; moved to the dead letters, "
                  "delivery goes on with the next event. Inspect: `ztgate events dead-letters --sink %s`; once the "
                  "receiver is fixed: `ztgate events retry-dead-letters --sink %s`", self.sink.name, letter.uid,
                  letter.status if letter.status is not None else "-", letter.reason, letter.attempts, self.sink.name,
                  self.sink.name)

    async def _redeliver_requested(self) -> bool:
        """Redelivers the dead letters an operator put back for this sink (False: stopped, or lease lost)."""
        for letter in await self.dead_letters.retries(self.sink.name, READ_BATCH):
            if not await self._redeliver(letter):
                return False
        return True

    async def _redeliver(self, letter: DeadLetter) -> bool:
        log.info("sink %s: redelivering dead-lettered event %s", self.sink.name, letter.uid)
        rec, tries = letter.record(), Tries.resumed(letter)
        outcome = await self._deliver(rec, tries)
        if outcome is Outcome.STOPPED:
            return False
        if outcome is Outcome.REFUSED:
            return await self._dead_letter(rec, tries)  # back to the dead letters, its retry mark cleared
        if not await self.dead_letters.resolve(self.sink.name, letter.uid, self.owner):
            return False  # the lease lapsed: the holder may send it again, which receivers de-duplicate
        s = self.status
        self._delivered(rec)
        s.dead_letters = max(0, s.dead_letters - 1)
        s.consecutive_failures, s.next_attempt_at, s.state = 0, None, "delivering"
        self._dirty = True
        log.info("sink %s: dead-lettered event %s delivered", self.sink.name, letter.uid)
        return True

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
                        if not await self._redeliver_requested():
                            break
                        records = await reader.read(READ_BATCH, timeout=1.0)
                        if not records:
                            await self._persist(force=self._dirty)
                            await self._refresh_backlog()
                            if s.backlog == 0:
                                s.state, s.oldest_pending_ms = "idle", None
                            continue
                        for rec in records:
                            if not await self._deliver_next(rec):
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
