"""Sessions as every gateway process sees them: the store, a local cache kept fresh by broadcasts, and
tombstones for revoked sessions that survive a store outage.

Revocation is checked on every request against the local view; the view is updated by the store's broadcast
within milliseconds of a change on any process, and re-read from the store after `cache_seconds` or after the
broadcast channel was interrupted. What this process has once seen terminated stays terminated until the
session would have expired anyway, whatever the store says or fails to say.

When the store is unreachable at run time (measured in tests/gateway/test_redis_failure_e2e.py):
- a session whose cached view is younger than `store.cache_seconds` is served in both fail modes;
- after that, `fail_mode: closed` answers 503 (the view is stale and cannot be refreshed), `fail_mode: open`
  keeps serving the last view this process had; sessions this process never saw get 503 in both modes;
- a session this process has seen terminated stays refused (tombstones live in memory, not in the store);
- no new session can be created (sign-in answers 503), and /readyz reports the store (503 when closed);
- while the broadcast channel is down the cache is not trusted: each request reads the store first;
- when the store is back, nothing needs a restart: the broadcast channel reconnects (backoff up to 2 s) and
  resynchronises, terminations, step-ups and restrictions this process decided during the outage are written
  back (a step-up or restriction only where the store holds nothing stricter), and terminations it missed are
  found with one read of the store and cut its live connections.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .config import SessionConfig, StoreConfig
from .store import STATE_RANK, SessionRecord, SessionState, SessionStore, StoreUnavailable


def new_session_id() -> str:
    """144 random bits, URL-safe, never starting with '-' or '_'.

    Session ids are typed into CLIs (`ztgate sessions show SID`), where a leading '-'
    reads as an option; redrawing keeps the ids uniform over the remaining space.
    """
    while True:
        sid = secrets.token_urlsafe(18)
        if sid[0].isalnum():
            return sid

log = logging.getLogger("ztgate.sessions")

ChangeListener = Callable[[SessionRecord, SessionRecord | None], Awaitable[None] | None]

NOT_CACHED = object()  # Sessions.get_cached: only the store can answer
_TOUCH_EVERY = 30.0  # seconds between last_seen writes: the store is not a per-request write path


@dataclass
class _Cached:
    record: SessionRecord
    fetched: float


@dataclass
class Identity:
    """Who logged in, as the login method established it."""

    sub: str
    email: str = ""
    name: str = ""
    groups: list[str] = field(default_factory=list)
    site: str = ""
    country: str = ""
    idp: str = "directory"
    acr: str = "pwd"
    amr: list[str] = field(default_factory=lambda: ["pwd"])
    auth_time: float = 0.0


class Sessions:
    def __init__(self, store: SessionStore, cfg: SessionConfig, store_cfg: StoreConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.cfg, self.store_cfg, self.clock = store, cfg, store_cfg, clock
        self._cache: dict[str, _Cached] = {}
        self._tombstones: dict[str, float] = {}  # sid -> until when it must stay refused
        # state changes decided while the store was down: written and broadcast when it is back (on resync)
        self._unsynced: dict[str, dict[str, Any]] = {}  # sid -> the changed record as this process knows it
        self._listeners: list[ChangeListener] = []
        self.store_healthy = True
        # False between losing the broadcast channel and its resync: then a cached view may miss a termination,
        # so the store is asked first and the cache is only the fallback
        self._channel_live = True
        # views a resync forgot: trusted for nothing else, but fail_mode open still serves them while the store is
        # down (a store that flaps resyncs between failures, and that must not turn served sessions into 503s)
        self._last_views: dict[str, SessionRecord] = {}

    async def start(self) -> None:
        self.store.subscribe(self._on_broadcast)

    def on_change(self, listener: ChangeListener) -> None:
        """Called in every process for every session change, local or remote (record, previous or None)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ reads

    def cached(self, sid: str) -> SessionRecord | None:
        entry = self._cache.get(sid)
        return entry.record if entry else None

    def unsynced(self, sid: str) -> SessionRecord | None:
        """The record of a session whose last state change (termination, step-up, restriction) is in force here but
        not yet written to the store."""
        data = self._unsynced.get(sid)
        return SessionRecord.from_dict(data) if data is not None else None

    def is_revoked(self, sid: str) -> bool:
        until = self._tombstones.get(sid)
        return until is not None and until > self.clock()

    def get_cached(self, sid: str) -> SessionRecord | None | object:
        """What get() answers without asking the store (a revoked session's tombstone, a fresh cached view), or
        NOT_CACHED: the proxy's per-request path then awaits get(), and otherwise skips a coroutine."""
        now = self.clock()
        if self.is_revoked(sid):
            return self._tombstone_record(sid)
        entry = self._cache.get(sid)
        if entry is not None and now - entry.fetched < self.store_cfg.cache_seconds and self._channel_live:
            return entry.record
        return NOT_CACHED

    async def get(self, sid: str) -> SessionRecord | None:
        """The session, or None if unknown/expired. Raises StoreUnavailable only when the store is down and
        this process has no recent view of the session and fail_mode is closed."""
        cached = self.get_cached(sid)
        if cached is not NOT_CACHED:
            return cached  # type: ignore[return-value]
        return await self.fetch(sid)

    async def fetch(self, sid: str) -> SessionRecord | None:
        """get() once get_cached() has answered NOT_CACHED: asks the store, falling back as get() says."""
        now = self.clock()
        entry = self._cache.get(sid)
        fresh = entry is not None and now - entry.fetched < self.store_cfg.cache_seconds
        try:
            record = await self.store.get_session(sid)
            self.store_healthy = True
        except StoreUnavailable:
            self.store_healthy = False
            if entry is not None and (fresh or self.store_cfg.fail_mode == "open"):
                return entry.record
            last = self._last_views.get(sid) if self.store_cfg.fail_mode == "open" else None
            if last is not None and not (last.expires and last.expires <= now):
                return last
            raise
        if record is None:
            self._cache.pop(sid, None)
            self._last_views.pop(sid, None)
            return None
        if record.expires and record.expires <= now:
            return None
        self._remember(record)
        return record

    async def list(self) -> list[SessionRecord]:
        records = await self.store.list_sessions()
        for r in records:
            if r.sid in self._cache and self._cache[r.sid].record.version > r.version:
                continue
            self._remember(r)
        return sorted(records, key=lambda r: r.created)

    # ------------------------------------------------------------------ writes

    async def create(self, who: Identity, *, client_ip: str, user_agent: str, route: str) -> SessionRecord:
        now = self.clock()
        record = SessionRecord(
            sid=new_session_id(), sub=who.sub, email=who.email, name=who.name, groups=list(who.groups),
            site=who.site, country=who.country, idp=who.idp, acr=who.acr, amr=list(who.amr),
            auth_time=who.auth_time or now, created=now, last_seen=now, expires=now + self.cfg.max_lifetime,
            client_ip=client_ip, user_agent=user_agent[:512], route=route,
        )
        await self.save(record, broadcast=False)
        return record

    async def save(self, record: SessionRecord, *, broadcast: bool = True) -> SessionRecord:
        previous = self.cached(record.sid)
        record.version += 1
        ttl = max(1, int(record.expires - self.clock())) if record.expires else self.cfg.max_lifetime
        if record.terminated:
            self._tombstones[record.sid] = record.expires or self.clock() + self.cfg.max_lifetime
        self._remember(record)
        await self.store.put_session(record, ttl)
        if broadcast:
            try:
                await self.store.publish({"type": "session", "record": record.to_dict()})
            except StoreUnavailable:
                log.error("could not broadcast change of session %s; other processes see it within %.0f s",
                          record.sid, self.store_cfg.cache_seconds)
        # This process hears of its own change here, with the true previous view: the echo of the broadcast finds
        # the new record already cached, so to the echo a termination would look like no change at all.
        await self._notify(record, previous)
        return record

    async def update(self, sid: str, **changes: Any) -> SessionRecord | None:
        record = await self.get(sid)
        if record is None:
            return None
        record = SessionRecord.from_dict({**record.to_dict(), **changes})
        return await self.save(record)

    async def set_state(self, sid: str, state: SessionState, reason: str, **changes: Any) -> SessionRecord | None:
        record = await self.get(sid)
        if record is None or (record.terminated and state != SessionState.TERMINATED):
            return record
        try:
            return await self.update(sid, state=str(state), state_reason=reason, **changes)
        except StoreUnavailable:
            changed = self.cached(sid)  # save() remembered the change before the write failed: it is in force here
            if state != SessionState.TERMINATED and changed is not None and changed.state == state:
                self._unsynced[sid] = changed.to_dict()  # terminate() keeps its own, tombstone and all
            raise

    async def terminate(self, sid: str, reason: str, **changes: Any) -> SessionRecord | None:
        # The tombstone goes in first: whatever happens to the store, this process refuses the session now.
        entry = self._cache.get(sid)
        self._tombstones[sid] = (entry.record.expires if entry else 0) or self.clock() + self.cfg.max_lifetime
        try:
            result = await self.set_state(sid, SessionState.TERMINATED, reason, **changes)
            self._unsynced.pop(sid, None)
            return result
        except StoreUnavailable:
            self._unsynced[sid] = {**self._tombstone_record(sid).to_dict(), **changes,
                                   "state": str(SessionState.TERMINATED), "state_reason": reason}
            if entry is not None:
                await self._notify(self._tombstone_record(sid), entry.record)
            raise

    async def _flush_unsynced(self) -> None:
        """The store is back: state changes it missed are written and broadcast, so the other processes learn
        them too (until then they enforced them only if they had decided them themselves)."""
        for sid, data in list(self._unsynced.items()):
            terminated = data.get("state") == SessionState.TERMINATED
            if terminated and not self.is_revoked(sid):
                self._unsynced.pop(sid, None)  # expired meanwhile: nothing left to refuse
                continue
            for attempt in range(3):  # the first commands after a reconnect may still meet a dead connection
                try:
                    if terminated:
                        await self.save(SessionRecord.from_dict(data))
                        written = True
                    else:
                        written = await self._write_back_state(data)
                except StoreUnavailable:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                self._unsynced.pop(sid, None)
                log.info("session %s: %s decided during the store outage %s", sid, data.get("state"),
                         "written back" if written else "not written back: the store holds the session as strict or "
                         "stricter, or no longer holds it")
                break

    async def _write_back_state(self, data: dict[str, Any]) -> bool:
        """A step-up or restriction decided during the outage, onto the store's record as it is now, unless that
        is already as strict (False). A session the store has lost stays lost: signing in again is stricter still."""
        stored = await self.store.get_session(data["sid"])
        state = SessionState(data["state"])
        if stored is None or STATE_RANK[SessionState(stored.state)] >= STATE_RANK[state]:
            return False
        if stored.expires and stored.expires <= self.clock():
            return False
        decided = {k: data[k] for k in ("state", "state_reason", "step_up", "restrictions", "decision") if k in data}
        await self.save(SessionRecord.from_dict({**stored.to_dict(), **decided}))
        return True

    def touch_due(self, record: SessionRecord, client_ip: str) -> bool:
        """Whether touch() would write (the proxy's per-request path skips its coroutine when not)."""
        return self.clock() - record.last_seen >= _TOUCH_EVERY or record.client_ip != client_ip

    async def touch(self, record: SessionRecord, client_ip: str) -> None:
        """Notes activity, without writing the store on every request."""
        if not self.touch_due(record, client_ip):
            return
        now = self.clock()
        record.last_seen = now
        record.client_ip = client_ip
        try:
            await self.store.put_session(record, max(1, int(record.expires - now)))
        except StoreUnavailable:
            pass

    def idle_expired(self, record: SessionRecord) -> bool:
        return self.clock() - record.last_seen > self.cfg.idle_timeout

    # ------------------------------------------------------------------ broadcasts

    async def _on_broadcast(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "session":
            record = SessionRecord.from_dict(message["record"])
            previous = self.cached(record.sid)
            if previous is not None and previous.version > record.version:
                return
            if record.terminated:
                self._tombstones[record.sid] = record.expires or self.clock() + self.cfg.max_lifetime
            self._remember(record)
            await self._notify(record, previous)
        elif kind == "resync":
            # anything could have changed while we were not listening: forget cached views (not tombstones)
            previous = {sid: c.record for sid, c in self._cache.items()}
            self._cache.clear()
            self._last_views.update(previous)
            _bound(self._last_views, 200_000)
            self.store_healthy = True
            self._channel_live = True
            await self._flush_unsynced()
            await self._catch_up_terminations(previous)
        elif kind == "disconnected":
            self.store_healthy = False
            self._channel_live = False

    async def _catch_up_terminations(self, previous: dict[str, SessionRecord]) -> None:
        """After a gap in the broadcasts: terminations published meanwhile were missed here, and a live
        WebSocket or VNC connection makes no further request that would notice. One read of the store finds
        them; the listeners then cut those connections as if the broadcast had arrived."""
        try:
            records = await self.store.list_sessions()
        except StoreUnavailable:
            return
        for record in records:
            before = previous.get(record.sid)
            if record.terminated and before is not None and not before.terminated:
                self._tombstones[record.sid] = record.expires or self.clock() + self.cfg.max_lifetime
                self._remember(record)
                await self._notify(record, before)

    async def _notify(self, record: SessionRecord, previous: SessionRecord | None) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(record, previous)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("session change listener failed")

    def _remember(self, record: SessionRecord) -> None:
        self._cache[record.sid] = _Cached(record, self.clock())
        self._last_views.pop(record.sid, None)
        _bound(self._cache, 200_000)  # the oldest views go: the store has them
        now = self.clock()
        if len(self._tombstones) > 100_000:
            self._tombstones = {k: v for k, v in self._tombstones.items() if v > now}

    def _tombstone_record(self, sid: str) -> SessionRecord:
        entry = self._cache.get(sid)
        if entry is not None and entry.record.terminated:
            return entry.record
        base = entry.record.to_dict() if entry else {"sid": sid, "sub": ""}
        return SessionRecord.from_dict({**base, "state": str(SessionState.TERMINATED),
                                        "state_reason": base.get("state_reason") or "revoked"})


def _bound(views: dict, limit: int) -> None:
    """Drops the oldest tenth of `views` (insertion order) once it holds more than `limit`."""
    if len(views) > limit:
        for sid in list(views)[: len(views) // 10]:
            del views[sid]
