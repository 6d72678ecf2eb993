"""One scorer per session, however many processes see its traffic: an owner lease in the store, and forwarding.

    input seen by any process --(this process owns the session)--> Monitor: sensor integrity + scorer -> policies
                              --(another one does)--> its direct channel --> the same Monitor code, on the owner

Processes sharing one Redis (`ztgate run` on several hosts, `ztgate run --workers N`) each see part of a session's
traffic: the kernel or a balancer spreads a browser's page loads, sensor WebSocket and form posts over them. Judged
in parts, a sensor heard by one process looked silent to another, and evidence thresholds were reached N times
later. So one process, the owner, keeps the session's scorer and sensor-integrity bookkeeping, decides, and writes
the session's assessment; the others forward to it what they observe of the session.

Lease: `owner:{sid}` = the owner's process id, with a TTL of LEASE_MS. The first process that needs to score the
session takes it (atomic claim: set if absent); the owner renews it every RENEW_EVERY seconds while it scores the
session, and with the renewal stores the scorer's state (`scorer:{sid}`, when it changed); it releases the lease
when the session ends or the process stops (leaving the state for the next owner). A non-owner remembers the owner
for RECHECK_EVERY seconds, then claims again: if the owner died its lease has lapsed, the claim takes it, and the
scorer is restored from the state last stored (evidence up to RENEW_EVERY seconds old); the integrity check restarts
conservatively (SensorIntegrity.rebase: nothing judged "silent" or "typed without keys" for lack of what the old
owner heard).

Forwarding: one pub/sub channel per process (`direct:{id}`), not the broadcast channel, which every process would
decode. Order matters (a sensor's batches, its pongs and the requests between them are timed), and pub/sub delivers
what one connection published in the order it was published: every forwarded observation of this process goes
through one queue and one sending task, one PUBLISH at a time. Observations are small and carry timing, counts and
key classes only (the sensor's event batches as EVENT_DTYPE bytes: no field can hold a character; a form post as its
number of non-empty text fields). What is sent while the owner is gone is lost, as is input while a lease lapses.

The memory store is one process: every session is its own, with no lease, no forwarding and no persisted state.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import numpy as np

from scoring.events import EVENT_DTYPE

from .store import StoreUnavailable

if TYPE_CHECKING:
    from .runtime import Gateway

log = logging.getLogger("ztgate.ownership")

LEASE_MS = 15_000  # an owner that stops renewing (died, hung) loses its sessions after this long
RENEW_EVERY = 5.0  # the owner's heartbeat: lease renewed, changed scorer states stored
RECHECK_EVERY = 5.0  # a non-owner claims again after this long (takes the session over if the lease lapsed)
_QUEUE_MAX = 20_000  # observations waiting to be forwarded; beyond this they are dropped and counted
_SEND_CHUNK = 256  # observations per message to one owner
_MAX_FORWARDED_EVENTS = 16_384  # events one forwarded observation may carry (the monitor's per-flush bound is lower)


class Ownership:
    """This process's leases and forwarding. The Monitor decides what to do with a session; this says where."""

    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        # unique per process: `--workers N` share the config's instance name
        self.me = f"{getattr(gw.config, 'instance', 'ztgate')}/{os.getpid()}-{secrets.token_hex(3)}"
        self._remote: dict[str, tuple[str, float]] = {}  # sid -> (owner, when this process last asked)
        self._queue: deque[tuple[str, dict]] = deque()
        self._wake: asyncio.Event | None = None
        self.subscribed = asyncio.Event()
        self.clock = time.monotonic

    @property
    def shared(self) -> bool:
        """Several processes may score this store's sessions (Redis): leases and forwarding are on."""
        store = getattr(self.gw, "store", None)
        return getattr(store, "kind", "") == "redis" and hasattr(store, "claim_owner")

    async def start(self, receive: Callable[[dict], Awaitable[None]], heartbeat: Callable[[], Awaitable[None]]) -> None:
        if not self.shared:
            return
        self._wake = asyncio.Event()

        async def inbox(message: dict) -> None:
            if message.get("type") == "subscribed":
                self.subscribed.set()
            elif isinstance(message.get("m"), list):
                await receive(message)

        self.gw.spawn(self.gw.store.listen_direct(self.me, inbox), name="ztgate-owner-inbox")
        self.gw.spawn(self._send_loop(), name="ztgate-owner-forward")
        self.gw.spawn(self._every(RENEW_EVERY, heartbeat), name="ztgate-owner-heartbeat")
        try:  # a claim names this process only once others can reach it
            await asyncio.wait_for(self.subscribed.wait(), 5.0)
        except TimeoutError:
            log.warning("the direct channel of %s is not confirmed yet: forwarded input may be lost until it is",
                        self.me)

    # ------------------------------------------------------------------ leases

    def remote_owner(self, sid: str) -> str | None:
        """The other process that scores `sid`, while what this process knows of it is fresh."""
        known = self._remote.get(sid)
        if known is None or self.clock() - known[1] >= RECHECK_EVERY:
            return None
        return known[0]

    async def claim(self, sid: str) -> tuple[bool, bytes | None]:
        """(True, the scorer state a previous owner stored, or None) if this process now scores `sid`; (False, None)
        if another one does (remembered for RECHECK_EVERY). Raises StoreUnavailable."""
        owner, state = await self.gw.store.claim_owner(sid, self.me, LEASE_MS)
        if owner == self.me:
            self._remote.pop(sid, None)
            return True, state
        if len(self._remote) > 200_000:
            self._remote.clear()
        self._remote[sid] = (owner, self.clock())
        return False, None

    def forget(self, sid: str) -> None:
        self._remote.pop(sid, None)

    async def renew(self, sids: list[str]) -> list[int]:
        return await self.gw.store.renew_owner(sids, self.me, LEASE_MS)

    async def release(self, sid: str, state: bytes | None) -> None:
        """Gives the lease up; `state` is kept for the next owner (None: the session is over, its state goes)."""
        try:
            await self.gw.store.release_owner(sid, self.me, state, self.gw.config.session.max_lifetime)
        except StoreUnavailable:
            pass  # the lease lapses on its own

    async def store_states(self, states: dict[str, bytes]) -> None:
        await self.gw.store.put_scorer_states(states, self.gw.config.session.max_lifetime)

    # ------------------------------------------------------------------ forwarding

    def forward(self, owner: str, observation: dict) -> None:
        """Queues one observation for the owner, after everything queued before it."""
        if self._wake is None:
            return
        if len(self._queue) >= _QUEUE_MAX:
            self.gw.telemetry.count("ztgate_forward_dropped_total", reason="queue_full")
            return
        self._queue.append((owner, wire(observation)))
        self._wake.set()

    async def _send_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                by_owner: dict[str, list[dict]] = {}
                for _ in range(min(len(self._queue), _SEND_CHUNK)):
                    owner, observation = self._queue.popleft()
                    by_owner.setdefault(owner, []).append(observation)
                for owner, observations in by_owner.items():
                    try:
                        await self.gw.store.send_direct(owner, {"from": self.me, "m": observations})
                        self.gw.telemetry.count("ztgate_forwarded_total", value=len(observations))
                    except StoreUnavailable:
                        self.gw.telemetry.count("ztgate_forward_dropped_total", value=len(observations),
                                                reason="store_unavailable")

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                log.exception("session ownership heartbeat failed")


# ---------------------------------------------------------------------- observations on the wire

def wire(observation: dict) -> dict:
    """JSON-able: an event batch (EVENT_DTYPE) as base64 of its bytes."""
    events = observation.get("events")
    if isinstance(events, np.ndarray):
        return {**observation, "events": base64.b64encode(events.tobytes()).decode("ascii")}
    return observation


def unwire(observation: Any) -> dict | None:
    """The observation as the monitor takes it, or None if it is malformed."""
    if not isinstance(observation, dict) or not isinstance(observation.get("sid"), str) \
            or not isinstance(observation.get("k"), str):
        return None
    try:
        observation["t"] = float(observation.get("t", time.time()))
        events = observation.get("events")
        if events is not None:
            raw = base64.b64decode(events, validate=True)
            if len(raw) % EVENT_DTYPE.itemsize or len(raw) // EVENT_DTYPE.itemsize > _MAX_FORWARDED_EVENTS:
                return None
            observation["events"] = np.frombuffer(raw, dtype=EVENT_DTYPE).copy()
    except (TypeError, ValueError):
        return None
    return observation
