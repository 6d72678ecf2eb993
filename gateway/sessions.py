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

Writes never lose one another's changes, across processes: a record's `version` is compared and set by the store
(a write based on an older view is refused), and `modify()` then re-reads the record and applies its change again;
a terminated record is final. Activity (last_seen, client address) is not part of that: `touch()` writes it beside
the record, so that noting a request never writes an old view of the session back over a newer state.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
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
# writes of one change refused by the store's compare-and-set (another writer won each time) before giving up; after
# each refusal a writer waits a random moment, up to twice as long each time (at most _WRITE_BACKOFF_MAX), so that many
# writers at once do not keep colliding
_WRITE_ATTEMPTS = 32
_WRITE_BACKOFF_FIRST = 0.002
_WRITE_BACKOFF_MAX = 0.05
SIGNED_OUT = "signed out"  # the state_reason of a session its user ended (a termination, but not for cause)

Change = Callable[[SessionRecord], dict[str, Any] | None]


class SessionConflict(StoreUnavailable):
    """The session kept changing under a write: every compare-and-set attempt was refused. Handled as an outage of
    the store is (the change is in force in this process, and written back later where that applies)."""


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
        if entry is not None and _newer(entry.record, record):
            # this process's own change, not in the store yet (decided during an outage, written back on resync):
            # an older record must not undo it here. Not counted as fresh: the store is asked again next time.
            return entry.record
        self._remember(record)
        return record

    async def _view(self, sid: str) -> SessionRecord | None:
        """get() without the tombstone: the record as last known, to change it (a tombstone may be this process's
        own termination in progress, or one not yet written back)."""
        entry = self._cache.get(sid)
        if entry is not None and self.clock() - entry.fetched < self.store_cfg.cache_seconds and self._channel_live:
            return entry.record
        return await self.fetch(sid)

    async def list(self) -> list[SessionRecord]:
        records = await self.store.list_sessions()
        for r in records:
            if r.sid in self._cache and _newer(self._cache[r.sid].record, r):
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
        """Writes `record` as the next version of itself: a new session's (create), or one read from the store just
        now. Raises SessionConflict if the store holds that version or a newer one already, or a terminated record:
        changes to a live session go through modify(), which re-reads and re-applies them then."""
        if not await self._write(record, broadcast=broadcast, previous=self.cached(record.sid)):
            raise SessionConflict(f"session {record.sid} was changed by another writer")
        return record

    async def _write(self, record: SessionRecord, *, broadcast: bool, previous: SessionRecord | None) -> bool:
        """One compare-and-set write of `record` as the version after its own; False if the store refused it (it
        holds a newer version, or a terminated record). This process's view once the store took it (a termination
        is refused here from the start: tombstone), or once the store could not be reached (StoreUnavailable): the
        change is then in force here, and written back when the store returns. Never while the write is in flight:
        another change made here meanwhile would build on a record the store may refuse."""
        record.version += 1
        ttl = max(1, int(record.expires - self.clock())) if record.expires else self.cfg.max_lifetime
        if record.terminated:
            self._tombstones[record.sid] = record.expires or self.clock() + self.cfg.max_lifetime
        try:
            written = await self.store.put_session(record, ttl)
        except StoreUnavailable:
            self._remember(record)
            raise
        if not written:
            return False  # the caller re-reads: the store's record then becomes this process's view
        current = self.cached(record.sid)
        if current is None or not _newer(current, record):  # a later change's broadcast may have come meanwhile
            self._remember(record)
        if broadcast:
            try:
                await self.store.publish({"type": "session", "record": record.to_dict()})
            except StoreUnavailable:
                log.error("could not broadcast change of session %s; other processes see it within %.0f s",
                          record.sid, self.store_cfg.cache_seconds)
        # This process hears of its own change here, with the true previous view: the echo of the broadcast finds
        # the new record already cached, so to the echo a termination would look like no change at all.
        await self._notify(record, previous)
        return True

    async def modify(self, sid: str, change: Change) -> SessionRecord | None:
        """Applies `change` to the session as it is and writes the result as its next version. `change` gets the
        current record and returns the fields to change, or None to leave it as it is. When another process (or
        task) wrote first, the store refuses the write: the record is read again and `change` applied to it again,
        so no one's change is lost. A terminated session is final: nothing is written. Returns the record as
        written, or as found when nothing was written; None for an unknown session."""
        record, _ = await self._modify(sid, change)
        return record

    async def _modify(self, sid: str, change: Change, *, read: Callable[[str], Awaitable[SessionRecord | None]]
                      | None = None, broadcast: bool = True) -> tuple[SessionRecord | None, bool]:
        """modify(), also saying whether this call wrote. `read` gives the first view (default get(); every later
        one comes from the store)."""
        record = await (read or self.get)(sid)
        before = self.cached(sid)  # what this process's listeners last heard of it
        for attempt in range(_WRITE_ATTEMPTS):
            if record is None or record.terminated:
                return record, False
            changes = change(record)
            if changes is None:
                return record, False
            candidate = SessionRecord.from_dict({**record.to_dict(), **changes})
            if await self._write(candidate, broadcast=broadcast, previous=before):
                return candidate, True
            await asyncio.sleep(random.uniform(0, min(_WRITE_BACKOFF_MAX, _WRITE_BACKOFF_FIRST * 2 ** attempt)))
            try:
                record = before = await self._reread(sid, before)
            except StoreUnavailable:
                self._remember(candidate)  # the store went before saying what it holds: in force here meanwhile
                raise
        raise SessionConflict(f"session {sid} changed {_WRITE_ATTEMPTS} times during one update")

    async def _reread(self, sid: str, before: SessionRecord | None) -> SessionRecord | None:
        """After a refused write: the store's record, newer than this process's view, becomes the view. Listeners
        hear of it now, as of a change (its broadcast may not have arrived yet, and when it does, it will look like
        no change at all)."""
        record = await self.store.get_session(sid)
        if record is None:
            self._cache.pop(sid, None)
            return None
        if record.terminated:
            self._tombstones[sid] = record.expires or self.clock() + self.cfg.max_lifetime
        current = self.cached(sid)
        if current is None or not _newer(current, record):  # a later change's broadcast may have come meanwhile
            self._remember(record)
        if before is None or record.version > before.version or (record.terminated and not before.terminated):
            await self._notify(record, before)
        return record

    async def update(self, sid: str, **changes: Any) -> SessionRecord | None:
        return await self.modify(sid, lambda _current: changes)

    async def set_state(self, sid: str, state: SessionState, reason: str,
                        derive: Change | None = None, **changes: Any) -> SessionRecord | None:
        """Moves the session to `state` (never to a looser one than it is in: nothing is written then), with
        `changes`, and the fields `derive(current record)` returns: those computed from the record as it is when
        written (a step-up's counters, merged restrictions), not as some earlier view had it."""
        record, _ = await self.change_state(sid, state, reason, derive, **changes)
        return record

    async def change_state(self, sid: str, state: SessionState, reason: str, derive: Change | None = None, *,
                           read: Callable[[str], Awaitable[SessionRecord | None]] | None = None,
                           **changes: Any) -> tuple[SessionRecord | None, bool]:
        """set_state(), also saying whether this call wrote (False: the session was stricter already, or terminated,
        or unknown)."""
        def change(current: SessionRecord) -> dict[str, Any] | None:
            if STATE_RANK[SessionState(current.state)] > STATE_RANK[state]:
                return None  # a decision never loosens a session (this one was decided on an older view)
            derived = derive(current) if derive is not None else None
            return {**changes, **(derived or {}), "state": str(state), "state_reason": reason}

        try:
            return await self._modify(sid, change, read=read)
        except StoreUnavailable:
            changed = self.cached(sid)  # _write() remembered the change before the write failed: it is in force here
            if state != SessionState.TERMINATED and changed is not None and changed.state == state:
                self._unsynced[sid] = changed.to_dict()  # terminate() keeps its own, tombstone and all
            raise

    async def terminate(self, sid: str, reason: str, **changes: Any) -> SessionRecord | None:
        return (await self.terminate_once(sid, reason, **changes))[0]

    async def terminate_once(self, sid: str, reason: str, **changes: Any) -> tuple[SessionRecord | None, bool]:
        """Terminates the session: (the record, True) when this call ended it, (the record as it ended, False) when
        it had ended already (nothing is written: why and when it ended stay as they were). (None, False) for a
        session the store does not know."""
        # The tombstone goes in first: whatever happens to the store, this process refuses the session now.
        entry = self._cache.get(sid)
        self._tombstones[sid] = (entry.record.expires if entry else 0) or self.clock() + self.cfg.max_lifetime
        try:
            result, written = await self.change_state(sid, SessionState.TERMINATED, reason, read=self._view, **changes)
            if written:
                self._unsynced.pop(sid, None)
            return result, written
        except StoreUnavailable:
            self._unsynced[sid] = {**self._tombstone_record(sid).to_dict(), **changes,
                                   "state": str(SessionState.TERMINATED), "state_reason": reason}
            if entry is not None:
                await self._notify(self._tombstone_record(sid), entry.record)
            raise

    async def _stored(self, sid: str) -> SessionRecord | None:
        return await self.store.get_session(sid)

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
                        written = await self._write_back_termination(data)
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

    async def _write_back_termination(self, data: dict[str, Any]) -> bool:
        """A termination decided during the outage, onto the store's record as it is now (unless that has ended
        already: its own end stands). A session the store has lost is written as this process last knew it, so
        that the broadcast reaches the processes that still serve it from their views."""
        sid = data["sid"]
        if await self.store.get_session(sid) is None:
            if await self._write(SessionRecord.from_dict(data), broadcast=True, previous=self.cached(sid)):
                return True
        decided = {"decision": data["decision"]} if data.get("decision") else {}
        _, written = await self.change_state(sid, SessionState.TERMINATED, data.get("state_reason") or "revoked",
                                           read=self._stored, **decided)
        return written

    async def _write_back_state(self, data: dict[str, Any]) -> bool:
        """A step-up or restriction decided during the outage, onto the store's record as it is now, unless that is
        already as strict (False: the store's record is then this process's view again). A session the store has
        lost stays lost: signing in again is stricter still."""
        state = SessionState(data["state"])
        decided = {k: data[k] for k in ("state", "state_reason", "step_up", "restrictions", "decision") if k in data}

        def change(stored: SessionRecord) -> dict[str, Any] | None:
            if STATE_RANK[SessionState(stored.state)] >= STATE_RANK[state]:
                return None
            if stored.expires and stored.expires <= self.clock():
                return None
            return decided

        record, written = await self._modify(data["sid"], change, read=self._stored)
        if not written and record is not None:
            self._remember(record)  # this process's own, looser or older view goes
        return written

    def touch_due(self, record: SessionRecord, client_ip: str) -> bool:
        """Whether touch() would write (the proxy's per-request path skips its coroutine when not)."""
        return self.clock() - record.last_seen >= _TOUCH_EVERY or record.client_ip != client_ip

    async def touch(self, record: SessionRecord, client_ip: str) -> None:
        """Notes activity, without writing the store on every request. Only the activity is written (beside the
        record, see SessionStore.touch_session): `record` is this process's view, maybe older than the store's, and
        writing it back would undo what another process decided meanwhile."""
        if not self.touch_due(record, client_ip):
            return
        now = self.clock()
        record.last_seen = now
        record.client_ip = client_ip
        try:
            await self.store.touch_session(record.sid, now, client_ip)
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
            if previous is not None and _newer(previous, record):
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


def _newer(view: SessionRecord, record: SessionRecord) -> bool:
    """Whether this process's `view` of a session is newer than `record` (from the store or a broadcast), which must
    then not replace it. A termination always replaces it: it is final, whatever the version."""
    return view.version > record.version and not record.terminated


def _bound(views: dict, limit: int) -> None:
    """Drops the oldest tenth of `views` (insertion order) once it holds more than `limit`."""
    if len(views) > limit:
        for sid in list(views)[: len(views) // 10]:
            del views[sid]
